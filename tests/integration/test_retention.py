"""Retention: the pruner removes old finished messages (or their contents) from a running
engine, keeps errors and waiting work, drops the keys that went with them, and runs on its
schedule; `junction prune` runs it now and reports."""

from __future__ import annotations

import json
import re
import socket
import textwrap
import time
from pathlib import Path

import pytest

from engine.testing.peers import EngineProcess, mllp_exchange, msa

pytestmark = pytest.mark.integration

# 0.00006 days = 5.2 s: old enough after a short wait, young enough for new messages
GONE = """
    name: gone-in
    source: {type: mllp, listen: 127.0.0.1:0}
    pipeline: {datatype: hl7v2}
    retention: {message_days: 0.00006}
    destinations:
      - {name: archive, type: file, directory: var/out/gone}
"""
SLIM = """
    name: slim-in
    source: {type: mllp, listen: 127.0.0.1:0}
    pipeline: {datatype: hl7v2}
    retention: {content_days: 0.00006}
    destinations:
      - {name: archive, type: file, directory: var/out/slim}
"""
AGE_SECS = 0.00006 * 86400


def adt(control_id: str) -> bytes:
    return (
        f"MSH|^~\\&|EHR|GH|JUNCTION|ERP|20261130101500||ADT^A01|{control_id}|P|2.5.1\r"
        f"PID|1||MRN-{control_id}^^^GH^MR||TESTPATIENT^ALPHA||19700101|F\r"
    ).encode()


def project(tmp_path: Path, pruning: str, *channels: str) -> Path:
    (tmp_path / "channels").mkdir()
    (tmp_path / "config").mkdir()
    for text in channels:
        name = text.split("name:", 1)[1].split()[0]
        (tmp_path / "channels" / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    (tmp_path / "config" / "junction.yaml").write_text(
        "store: {type: sqlite}\napi: {listen: '${JUNCTION_API_LISTEN:-127.0.0.1:8780}'}\n" + pruning, encoding="utf-8"
    )
    return tmp_path


def send(engine: EngineProcess, channel: str, payloads: list[bytes]) -> list[str]:
    with socket.create_connection(engine.address(channel), timeout=10) as sock:
        return [msa(mllp_exchange(sock, payload))[0] for payload in payloads]


def sent(engine: EngineProcess, channel: str) -> int:
    return int(engine.call("GET", f"/api/channels/{channel}")["counters"].get("dest:archive:SENT", 0))


def wait_sent(engine: EngineProcess, channel: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while sent(engine, channel) < count:
        assert time.monotonic() < deadline, f"{channel}: only {sent(engine, channel)} of {count} delivered"
        time.sleep(0.05)


def listed(engine: EngineProcess, channel: str) -> list[dict[str, object]]:
    done = engine.cli("message", "list", "--channel", channel, "--limit", "1000", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_junction_prune_removes_old_finished_messages_and_contents(tmp_path: Path) -> None:
    root = project(tmp_path, "pruning: {interval_minutes: 0, batch: 7}\n", GONE, SLIM)
    with EngineProcess(root) as engine:
        old = [adt(f"OLD{i}") for i in range(20)]
        assert send(engine, "gone-in", [*old, b"this is not HL7"]) == ["AA"] * 20 + ["AR"]
        assert send(engine, "slim-in", old) == ["AA"] * 20
        wait_sent(engine, "gone-in", 20)
        wait_sent(engine, "slim-in", 20)
        time.sleep(AGE_SECS + 0.5)
        new = [adt(f"NEW{i}") for i in range(5)]
        assert send(engine, "gone-in", new) == ["AA"] * 5
        assert send(engine, "slim-in", new) == ["AA"] * 5
        wait_sent(engine, "gone-in", 25)
        wait_sent(engine, "slim-in", 25)

        done = engine.cli("prune", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)["channels"]
        assert report["gone-in"] == {"messages": 20, "contents": 0, "keys": 0, "error": ""}
        assert report["slim-in"] == {"messages": 0, "contents": 20, "keys": 0, "error": ""}
        again = json.loads(engine.cli("prune", "gone-in", "--json").stdout)["channels"]
        assert again == {"gone-in": {"messages": 0, "contents": 0, "keys": 0, "error": ""}}

        gone = listed(engine, "gone-in")
        # the new ones stay, and so does the refused one (errors are kept by default)
        assert sorted(str(m["control_id"]) for m in gone) == ["", "NEW0", "NEW1", "NEW2", "NEW3", "NEW4"]
        assert [m["status"] for m in gone if not m["control_id"]] == ["ERROR"]
        slim = listed(engine, "slim-in")
        assert len(slim) == 25  # metadata stays searchable
        first = next(m for m in slim if m["control_id"] == "OLD0")
        shown = engine.cli("message", "show", str(first["id"]), "--json")
        assert shown.returncode == 0, shown.stderr
        detail = json.loads(shown.stdout)
        assert detail["contents"] == []
        assert [d["status"] for d in detail["destinations"]] == ["SENT"]
        refused = engine.cli("message", "reprocess", str(first["id"]))
        assert refused.returncode != 0
        assert "pruned" in refused.stderr
        assert "Internal" not in refused.stderr
        by_filter = engine.cli("message", "reprocess", "--channel", "slim-in", "--limit", "1000")
        assert by_filter.returncode == 1  # the pruned ones are reported, the others reprocessed
        assert by_filter.stdout.count("not reprocessed") == 20
        assert "5 message(s) reprocessed" in by_filter.stderr
        newest = next(m for m in slim if m["control_id"] == "NEW0")
        kept = json.loads(engine.cli("message", "show", str(newest["id"]), "--json").stdout)
        assert [c["stage"] for c in kept["contents"] if c["run"] == 0] == ["raw"]

        assert sent(engine, "gone-in") == 5  # counters follow the store
        table = engine.cli("prune", "--status")
        assert table.returncode == 0, table.stderr
        assert "schedule: off" in table.stdout
        assert "gone-in" in table.stdout
        unknown = engine.cli("prune", "no-such-channel")
        assert unknown.returncode != 0
        assert "not deployed" in unknown.stderr
        # no message content or identifiers in what the pruner logs
        assert "Pruned." in engine.log_text()
        assert "MRN-OLD" not in engine.log_text()


def test_the_pruner_runs_on_its_schedule(tmp_path: Path) -> None:
    root = project(tmp_path, "pruning: {interval_minutes: 0.02}\n", GONE)  # every 1.2 s
    with EngineProcess(root) as engine:
        assert send(engine, "gone-in", [adt(f"S{i}") for i in range(10)]) == ["AA"] * 10
        wait_sent(engine, "gone-in", 10)
        status = engine.call("GET", "/api/prune")
        assert status["interval_minutes"] == 0.02
        deadline = time.monotonic() + AGE_SECS + 15
        while listed(engine, "gone-in"):
            assert time.monotonic() < deadline, "the scheduled pruner did not remove the old messages"
            time.sleep(0.5)
        last = engine.call("GET", "/api/prune")["last"]
        assert last is not None
        assert last["channels"]["gone-in"]["error"] == ""
        assert sent(engine, "gone-in") == 0
        pruned = re.findall(r"Pruned\. channel=gone-in messages=(\d+)", engine.log_text())
        assert sum(map(int, pruned)) == 10
