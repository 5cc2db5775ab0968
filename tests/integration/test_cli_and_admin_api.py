"""The CLI against a running engine: channel lifecycle, message search/show/reprocess, auth.

The engine runs as a real subprocess with its admin API; the CLI is run as a subprocess
too, exactly as an analyst would, and reads the token from the project's token file.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.testing.peers import EngineProcess, HttpPeer, free_port, mllp_exchange, msa

pytestmark = pytest.mark.integration

ADT = """
    name: adt-in
    storage: development
    source:
      type: mllp
      listen: 127.0.0.1:0
    pipeline:
      datatype: hl7v2
      filter: {field: MSH-9.1, in: [ADT]}
    destinations:
      - name: erp
        type: http
        url: ${ERP_URL}/adt
        transform: hl7-to-json
        retry: {max_attempts: 2, backoff_secs: 0.05}
      - name: archive
        type: file
        directory: var/out/adt
"""

PATIENT_NAME = "ZEBULONTESTNAME"


def adt(control_id: str, kind: str = "ADT^A01") -> bytes:
    return (
        f"MSH|^~\\&|EHR|GH|JUNCTION|ERP|20261122101500||{kind}|{control_id}|P|2.5.1\r"
        f"PID|1||MRN-{control_id}^^^GH^MR||{PATIENT_NAME}^ALPHA||19700101|F\r"
        "PV1|1|I|4N^401^1^GH\r"
    ).encode()


class Env:
    def __init__(self, project: Path, engine: EngineProcess, erp: HttpPeer) -> None:
        self.project = project
        self.engine = engine
        self.erp = erp

    def cli(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "JUNCTION_API_TOKEN"}
        env["JUNCTION_API"] = self.engine.api
        if token is not None:
            env["JUNCTION_API_TOKEN"] = token
        return subprocess.run(
            [sys.executable, "-m", "engine", "--project", str(self.project), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )

    def cli_json(self, *args: str) -> object:
        done = self.cli(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def send(self, payload: bytes, channel: str = "adt-in") -> tuple[str, str]:
        _, port = self.engine.address(channel)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            return msa(mllp_exchange(sock, payload))

    def wait_for(self, predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    project = tmp_path_factory.mktemp("cli")
    (project / "channels").mkdir()
    (project / "channels" / "adt-in.yaml").write_text(textwrap.dedent(ADT), encoding="utf-8")
    with HttpPeer() as erp:
        # No JUNCTION_API_TOKEN: the engine generates the token file the CLI then reads.
        engine = EngineProcess(project, {"ERP_URL": erp.url}, token=None).start()
        try:
            yield Env(project, engine, erp)
        finally:
            engine.stop()


def test_token_file_is_private_and_required(env: Env) -> None:
    token_file = env.project / "var" / "api-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    request = urllib.request.Request(env.engine.api + "/api/channels")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    refused.value.close()
    done = env.cli("channel", "list", token="wrong-token")
    assert done.returncode == 3
    assert "refused the token" in done.stderr


def test_bodies_that_are_not_a_json_object_get_a_400_not_a_500(env: Env) -> None:
    for path in ("/api/prune", "/api/messages/_reprocess"):
        for body in (b"{not json", b"[1, 2]", b"\xff\xfe"):
            request = urllib.request.Request(env.engine.api + path, data=body, method="POST")
            request.add_header("Authorization", f"Bearer {env.engine.token}")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 400, (path, body)
            assert "JSON object" in json.loads(refused.value.read())["detail"]
            refused.value.close()


def test_channel_list_reports_type_address_state_counters(env: Env) -> None:
    assert env.send(adt("LIST1")) == ("AA", "LIST1")
    (channel,) = env.cli_json("channel", "list")  # type: ignore[misc]
    assert channel["name"] == "adt-in"
    assert channel["state"] == "started"
    assert channel["source"]["type"] == "mllp"
    assert channel["source"]["address"].startswith("127.0.0.1:")
    assert channel["counters"]["TRANSFORMED"] + channel["counters"]["RECEIVED"] >= 1
    table = env.cli("channel", "list")
    assert table.returncode == 0
    assert "adt-in" in table.stdout
    assert "LISTENING" in table.stdout


def test_message_list_show_and_reprocess(env: Env) -> None:
    assert env.send(adt("SHOW1")) == ("AA", "SHOW1")
    env.wait_for(lambda: any(r.headers.get("X-Junction-Message-Id") for r in env.erp.snapshot()))
    found = env.cli_json("message", "list", "--control-id", "SHOW1")
    assert isinstance(found, list)
    assert len(found) == 1
    message_id = found[0]["id"]
    env.wait_for(lambda: env.cli_json("message", "show", message_id)["destinations"][0]["status"] == "SENT")  # type: ignore[index]
    detail = env.cli_json("message", "show", message_id)
    stages = {c["stage"] for c in detail["contents"]}  # type: ignore[index]
    assert {"raw", "parsed", "transformed"} <= stages, stages  # storage: development keeps every stage
    assert "content" not in detail["contents"][0]  # type: ignore[index]
    shown = env.cli("message", "show", message_id, "--content")
    assert PATIENT_NAME in shown.stdout  # only when asked for, and audited
    before = len([r for r in env.erp.snapshot() if r.headers["X-Junction-Message-Id"] == message_id])
    done = env.cli("message", "reprocess", message_id)
    assert done.returncode == 0, done.stderr
    assert "run 2" in done.stdout
    env.wait_for(
        lambda: len([r for r in env.erp.snapshot() if r.headers["X-Junction-Message-Id"] == message_id]) > before
    )
    detail = env.cli_json("message", "show", message_id)
    assert {d["run"] for d in detail["destinations"]} == {1, 2}  # type: ignore[index]
    assert detail["message"]["run"] == 2  # type: ignore[index]


def test_filtered_and_malformed_messages_are_searchable(env: Env) -> None:
    assert env.send(adt("FILT1", "ORU^R01")) == ("AA", "FILT1")
    code, _ = env.send(b"MSH|^~\\&|EHR|GH|||20261122||ADT^A01||P|2.5\rPID|1\r")  # no MSH-10
    assert code == "AR"
    env.wait_for(lambda: bool(env.cli_json("message", "list", "--control-id", "FILT1")))
    filtered = env.cli_json("message", "list", "--status", "filtered")
    assert "FILT1" in [m["control_id"] for m in filtered]  # type: ignore[union-attr]
    errors = env.cli_json("message", "list", "--status", "error", "--since", "10m")
    assert any("MSH-10" in m["error"] or "control" in m["error"] for m in errors)  # type: ignore[union-attr]
    send = env.cli(
        "send",
        "mllp",
        f"127.0.0.1:{env.engine.address('adt-in')[1]}",
        str(Path(__file__).resolve().parents[2] / "samples" / "hl7v2" / "malformed_broken_line.hl7"),
    )
    assert send.returncode == 1
    assert "AR" in send.stdout


def test_stop_start_pause_resume(env: Env) -> None:
    _, port = env.engine.address("adt-in")
    assert env.cli_json("channel", "stop", "adt-in")["state"] == "stopped"  # type: ignore[index]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert env.cli_json("channel", "start", "adt-in")["state"] == "started"  # type: ignore[index]
    assert env.cli_json("channel", "pause", "adt-in")["state"] == "paused"  # type: ignore[index]
    sent_before = len(env.erp.snapshot())
    assert env.send(adt("PAUSE1")) == ("AA", "PAUSE1")  # still listening and storing
    time.sleep(0.5)
    (held,) = env.cli_json("message", "list", "--control-id", "PAUSE1")  # type: ignore[misc]
    assert held["status"] == "RECEIVED"
    assert len(env.erp.snapshot()) == sent_before
    assert env.cli_json("channel", "resume", "adt-in")["state"] == "started"  # type: ignore[index]
    env.wait_for(lambda: env.cli_json("message", "list", "--control-id", "PAUSE1")[0]["status"] == "TRANSFORMED")  # type: ignore[index]


def test_deploy_redeploy_undeploy_from_yaml(env: Env) -> None:
    port = free_port()
    path = env.project / "channels" / "late-in.yaml"
    path.write_text(
        textwrap.dedent(f"""
        name: late-in
        source: {{type: mllp, listen: "127.0.0.1:{port}"}}
        pipeline: {{datatype: hl7v2}}
    """),
        encoding="utf-8",
    )
    deployed = env.cli_json("channel", "deploy", "late-in")
    assert deployed["state"] == "started"  # type: ignore[index]
    assert env.send(adt("LATE1"), "late-in") == ("AA", "LATE1")
    port2 = free_port()
    path.write_text(path.read_text(encoding="utf-8").replace(str(port), str(port2)), encoding="utf-8")
    redeployed = env.cli_json("channel", "redeploy", "late-in")
    assert redeployed["source"]["address"] == f"127.0.0.1:{port2}"  # type: ignore[index]
    path.write_text("name: late-in\nsource: {type: mlp}\n", encoding="utf-8")
    bad = env.cli("channel", "redeploy", "late-in")
    assert bad.returncode == 1
    assert "late-in.yaml:2:" in bad.stderr  # the YAML error, with its position
    assert env.send(adt("LATE2"), "late-in") == ("AA", "LATE2")  # the running version stays
    assert env.cli_json("channel", "undeploy", "late-in")["state"] == "undeployed"  # type: ignore[index]
    path.unlink()
    names = [c["name"] for c in env.cli_json("channel", "list")]  # type: ignore[union-attr]
    assert names == ["adt-in"]


def test_logs_carry_ids_but_never_message_content(env: Env) -> None:
    assert env.send(adt("LOG1")) == ("AA", "LOG1")
    env.send(b"MSH|^~\\&|EHR|GH|||20261122||ADT^A01|LOG2|P|2.5\r" + PATIENT_NAME.encode() + b"|garbage\r")
    time.sleep(0.5)
    log = env.engine.log_text()
    assert PATIENT_NAME not in log
    assert "MRN-LOG1" not in log
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    refused = [e for e in events if e["msg"] == "Message refused: it could not be parsed."]
    assert refused
    assert all(e["channel"] == "adt-in" and e["message_id"] for e in refused)


def test_plugins_and_schema_and_validate_offline(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    listed = env.cli("plugins", "list", "--format", "json")
    names = {(p["kind"], p["name"]) for p in json.loads(listed.stdout)}
    assert {("source", "mllp"), ("destination", "http"), ("destination", "file"), ("datatype", "hl7v2")} <= names
    schema = json.loads(env.cli("plugins", "schema").stdout)
    assert schema["title"] == "Junction channel"
    assert "mllp" in json.dumps(schema["properties"]["source"])
    monkeypatch.delenv("ERP_URL", raising=False)
    unset = env.cli("validate", str(env.project / "channels"))
    assert unset.returncode == 1
    assert "environment variable ERP_URL is not set" in unset.stdout
    monkeypatch.setenv("ERP_URL", "http://erp.example.org")
    assert env.cli("validate", str(env.project / "channels")).returncode == 0


def test_channel_status_names_a_source_that_cannot_work(tmp_path: Path) -> None:
    (tmp_path / "channels").mkdir()
    (tmp_path / "channels" / "orders-in.yaml").write_text(
        textwrap.dedent(
            """
            name: orders-in
            source: {type: http, listen: "127.0.0.1:0", auth: {bearer_env: ORDERS_TOKEN_FOR_THIS_TEST}}
            pipeline: {datatype: json}
            """
        ),
        encoding="utf-8",
    )
    engine = EngineProcess(tmp_path, {}).start()
    try:
        status = engine.cli("channel", "status", "orders-in")
        assert status.returncode == 0, status.stderr
        assert "source PROBLEM:" in status.stdout and "ORDERS_TOKEN_FOR_THIS_TEST" in status.stdout
        info = engine.call("GET", "/api/channels/orders-in")
        assert "ORDERS_TOKEN_FOR_THIS_TEST" in info["source"]["problem"]
    finally:
        engine.stop()


def test_channel_status_names_a_store_that_refuses_writes(tmp_path: Path) -> None:
    # Another process holds the SQLite write lock (a backup tool, an analyst's session): the
    # channel's processing fails after the busy timeout, its status says why, and once the
    # lock is gone the held message is processed without a restart.
    import sqlite3

    (tmp_path / "channels").mkdir()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "junction.yaml").write_text(
        "store:\n  type: sqlite\n  busy_timeout_ms: 300\napi:\n  listen: ${JUNCTION_API_LISTEN:-127.0.0.1:8780}\n",
        encoding="utf-8",
    )
    (tmp_path / "channels" / "locked-in.yaml").write_text(
        textwrap.dedent(
            """
            name: locked-in
            initial_state: paused
            source: {type: mllp, listen: "127.0.0.1:0"}
            pipeline: {datatype: hl7v2}
            """
        ),
        encoding="utf-8",
    )
    engine = EngineProcess(tmp_path, {}).start()
    try:
        _, port = engine.address("locked-in")
        message = b"MSH|^~\\&|EHR|GH|J|ERP|20261122101500||ADT^A01|L1|P|2.5.1\rPID|1||P1^^^GH^MR\r"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert msa(mllp_exchange(sock, message)) == ("AA", "L1")  # stored while paused
        lock = sqlite3.connect(tmp_path / "var" / "junction.db", isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            assert engine.cli("channel", "resume", "locked-in").returncode == 0
            deadline = time.monotonic() + 30
            status = engine.cli("channel", "status", "locked-in")
            while "processing PROBLEM:" not in status.stdout and time.monotonic() < deadline:
                time.sleep(0.1)
                status = engine.cli("channel", "status", "locked-in")
            assert "processing PROBLEM:" in status.stdout and "locked" in status.stdout, status.stdout
        finally:
            lock.rollback()
            lock.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = engine.call("GET", "/api/channels/locked-in")
            if info["counters"].get("TRANSFORMED") == 1 and info["processing"]["problem"] is None:
                break
            time.sleep(0.1)
        assert info["counters"].get("TRANSFORMED") == 1, info
        assert info["processing"]["problem"] is None
        assert "processing PROBLEM:" not in engine.cli("channel", "status", "locked-in").stdout
    finally:
        engine.stop()
