"""Threshold alerts on a running engine: errors within a window and destination queue depth
and age raise one alert each (log event, webhook JSON, channel status, /metrics) and one
cleared event once the condition is gone.

The engine is a real subprocess checking its thresholds every 0.2 s (``alerts.check_secs``);
the webhook and the destinations are real HTTP peers on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import socket
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.testing.peers import EngineProcess, HttpPeer, Received, mllp_exchange, msa

pytestmark = pytest.mark.integration

# errors: 4 within 9 s (0.15 min); the erp destination answers 400 to /refuse (gives up at once)
ERRORS = """
    name: errors-in
    source: {type: mllp, listen: 127.0.0.1:0}
    pipeline: {datatype: hl7v2}
    destinations:
      - {name: erp, type: http, url: "${ERP_URL}/refuse"}
    alerts:
      webhook: {type: http, url: "${HOOK_URL}/alerts", retry: {backoff_secs: 0.05}}
      errors: {count: 4, minutes: 0.15}
"""
# queue: 5 waiting, or the oldest waiting 1.2 s (0.02 min); erp answers 503 while it is down
QUEUE = """
    name: queue-in
    source: {type: mllp, listen: 127.0.0.1:0}
    pipeline: {datatype: hl7v2}
    destinations:
      - name: erp
        type: http
        url: "${ERP_URL}/adt"
        retry: {max_attempts: 0, backoff_secs: 0.05, max_backoff_secs: 0.2, jitter: 0}
    alerts:
      webhook: {type: http, url: "${HOOK_URL}/alerts", retry: {backoff_secs: 0.05}}
      queue: {depth: 5, age_minutes: 0.02}
"""
PATIENT_NAME = "QUIGLEYTESTNAME"


def adt(control_id: str) -> bytes:
    return (
        f"MSH|^~\\&|EHR|GH|JUNCTION|ERP|20261122101500||ADT^A01|{control_id}|P|2.5.1\r"
        f"PID|1||MRN-{control_id}^^^GH^MR||{PATIENT_NAME}^ALPHA||19700101|F\r"
    ).encode()


class Env:
    def __init__(self, engine: EngineProcess, hook: HttpPeer, erp_up: dict[str, bool]) -> None:
        self.engine = engine
        self.hook = hook
        self.erp_up = erp_up

    def send(self, channel: str, payloads: list[bytes]) -> list[str]:
        with socket.create_connection(self.engine.address(channel), timeout=10) as sock:
            return [msa(mllp_exchange(sock, payload))[0] for payload in payloads]

    def alerts(self, channel: str) -> list[dict[str, Any]]:
        bodies = [json.loads(r.body) for r in self.hook.snapshot() if r.path == "/alerts"]
        return [b for b in bodies if b["channel"] == channel]

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"{what}: not in time; alerts {self.hook.snapshot()!r}"
            time.sleep(0.05)

    def metrics(self) -> str:
        request = urllib.request.Request(self.engine.api + "/metrics")
        request.add_header("Authorization", "Basic " + base64.b64encode(f"p:{self.engine.token}".encode()).decode())
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()


def _erp(up: dict[str, bool]) -> Callable[[Received], int]:
    def behaviour(request: Received) -> int:
        if request.path == "/refuse":
            return 400
        return 200 if up["up"] else 503

    return behaviour


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    project: Path = tmp_path_factory.mktemp("alerts")
    (project / "channels").mkdir()
    (project / "config").mkdir()
    for name, text in (("errors-in", ERRORS), ("queue-in", QUEUE)):
        (project / "channels" / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    (project / "config" / "junction.yaml").write_text(
        "store: {type: sqlite}\napi: {listen: '${JUNCTION_API_LISTEN:-127.0.0.1:8780}'}\n"
        "log: {format: json}\nalerts: {check_secs: 0.2}\n",
        encoding="utf-8",
    )
    up = {"up": False}
    with HttpPeer() as hook, HttpPeer(_erp(up)) as erp:
        with EngineProcess(project, {"ERP_URL": erp.url, "HOOK_URL": hook.url}) as engine:
            yield Env(engine, hook, up)


def _no_phi(text: str, controls: list[str]) -> None:
    assert PATIENT_NAME not in text
    for control in controls:
        assert control not in text


def test_errors_within_the_window_raise_one_alert_then_clear(env: Env) -> None:
    assert env.engine.call("GET", "/api/channels/errors-in")["alerts"] == []
    # two frames that are not HL7 (stored as ERROR), two deliveries refused with a 400
    assert env.send("errors-in", [b"not hl7", b"not hl7 either"]) == ["AR", "AR"]
    time.sleep(0.6)  # three checks: two errors stay under the threshold
    assert env.alerts("errors-in") == []
    assert env.send("errors-in", [adt("ERRC1"), adt("ERRC2")]) == ["AA", "AA"]
    env.wait_for("errors alert", lambda: env.alerts("errors-in"))
    status = env.engine.call("GET", "/api/channels/errors-in")
    printed = env.engine.cli("channel", "status", "errors-in")
    env.wait_for("errors cleared", lambda: len(env.alerts("errors-in")) == 2, timeout=12)
    after = env.engine.call("GET", "/api/channels/errors-in")

    raised, cleared = env.alerts("errors-in")
    assert {k: raised[k] for k in ("event", "channel", "destination", "value", "threshold", "window_minutes")} == {
        "event": "errors",
        "channel": "errors-in",
        "destination": None,
        "value": 4,
        "threshold": 4,
        "window_minutes": 0.15,
    }
    assert raised["at"] >= raised["since"] > time.time() - 60
    assert (cleared["event"], cleared["since"], cleared["threshold"]) == ("errors-cleared", raised["since"], 4)
    assert cleared["value"] < 4  # the first errors left the window
    (listed,) = status["alerts"]
    assert (listed["event"], listed["value"], listed["threshold"]) == ("errors", 4, 4)
    assert printed.returncode == 0, printed.stderr
    assert "ALERT errors: 4 errors in 0.15 min (threshold 4) since " in printed.stdout
    assert after["alerts"] == []
    log = env.engine.log_text()
    lines = [line for line in log.splitlines() if '"Alert raised."' in line or '"Alert cleared."' in line]
    assert [json.loads(line)["event"] for line in lines if "errors-in" in line] == ["errors", "errors-cleared"]
    _no_phi("\n".join(lines) + json.dumps(env.alerts("errors-in")), ["ERRC1", "ERRC2"])


def test_queue_depth_and_age_raise_alerts_and_clear_when_the_destination_recovers(env: Env) -> None:
    controls = [f"QUEUE{i}" for i in range(5)]
    assert env.send("queue-in", [adt(c) for c in controls[:4]]) == ["AA"] * 4
    env.wait_for("age alert", lambda: [a["event"] for a in env.alerts("queue-in")] == ["queue-age"])
    assert env.send("queue-in", [adt(controls[4])]) == ["AA"]
    env.wait_for("depth alert", lambda: len(env.alerts("queue-in")) == 2)
    status = env.engine.call("GET", "/api/channels/queue-in")
    printed = env.engine.cli("channel", "status", "queue-in")
    metrics = env.metrics()
    redeployed = env.engine.call("POST", "/api/channels/queue-in/redeploy")
    time.sleep(0.6)  # three more checks: still raised, nothing new, the redeploy included
    assert len(env.alerts("queue-in")) == 2
    assert [a["event"] for a in redeployed["alerts"]] == ["queue-age", "queue-depth"]

    env.erp_up["up"] = True
    env.wait_for("cleared events", lambda: len(env.alerts("queue-in")) == 4)
    after = env.engine.call("GET", "/api/channels/queue-in")
    metrics_after = env.metrics()

    age, depth, *cleared = env.alerts("queue-in")
    assert (age["event"], age["destination"], age["threshold"]) == ("queue-age", "erp", 0.02)
    assert age["value"] >= 0.02
    assert (depth["event"], depth["destination"], depth["value"], depth["threshold"]) == ("queue-depth", "erp", 5, 5)
    assert sorted((c["event"], c["destination"], c["value"]) for c in cleared) == [
        ("queue-age-cleared", "erp", 0.0),
        ("queue-depth-cleared", "erp", 0),
    ]
    assert [(a["event"], a["destination"], a["value"]) for a in status["alerts"]][1] == ("queue-depth", "erp", 5)
    assert printed.returncode == 0, printed.stderr
    assert "ALERT queue-depth -> erp: 5 queued (threshold 5) since " in printed.stdout
    assert "ALERT queue-age -> erp: oldest queued " in printed.stdout
    assert 'junction_alert{channel="queue-in",event="queue-depth",destination="erp"} 1' in metrics
    assert 'junction_alert{channel="queue-in",event="queue-age",destination="erp"} 1' in metrics
    assert after["alerts"] == []
    assert 'junction_alert{channel="queue-in"' not in metrics_after
    assert after["counters"]["dest:erp:SENT"] == 5
    _no_phi(json.dumps(env.alerts("queue-in")) + printed.stdout + metrics, controls)
