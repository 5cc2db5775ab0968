"""Acceptance: SIGKILL while 8 connections send 5,000 messages loses no ACKed message.

After a restart every ACKed message is in the store and reaches a real HTTP server at
least once; a re-delivery carries the same Idempotency-Key as the first delivery.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from engine.testing.peers import EngineProcess, HttpPeer, mllp_exchange, msa

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHANNEL = """
    name: crash-in
    source:
      type: mllp
      listen: 127.0.0.1:${CRASH_PORT}
    pipeline:
      datatype: hl7v2
    destinations:
      - name: erp
        type: http
        url: ${ERP_URL}/issues
        retry: {max_attempts: 0, backoff_secs: 0.2, max_backoff_secs: 1}
"""

CONNECTIONS = 8
PER_CONNECTION = 625  # 8 x 625 = 5,000 messages
KILL_AFTER_ACKS = 1500


def message(control_id: str) -> bytes:
    return (
        "MSH|^~\\&|EHR|GENERAL HOSP|JUNCTION|ERP|20261122101500||ADT^A01^ADT_A01|"
        f"{control_id}|P|2.5.1\r"
        "EVN|A01|20261122101500\r"
        f"PID|1||MRN{control_id}^^^GH^MR||TESTPATIENT^ALPHA||19700101|F\r"
        "PV1|1|I|4N^401^1^GH\r"
    ).encode()


def control_id_of(body: bytes) -> str:
    return body.split(b"\r", 1)[0].split(b"|")[9].decode()


def test_sigkill_during_load_loses_no_acked_message(make_project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from engine.testing.peers import free_port

    project = make_project({"crash-in": CHANNEL})
    acked: list[str] = []
    lock = threading.Lock()
    with HttpPeer() as erp:
        env = {"ERP_URL": erp.url, "CRASH_PORT": str(free_port())}
        engine = EngineProcess(project, env).start()
        _, port = engine.address("crash-in")

        def sender(index: int) -> None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    for i in range(PER_CONNECTION):
                        cid = f"K{index}-{i}"
                        ack = mllp_exchange(sock, message(cid), timeout=10)
                        code, acked_id = msa(ack)
                        assert acked_id == cid
                        if code == "AA":
                            with lock:
                                acked.append(cid)
            except OSError:
                return  # the engine was killed under us: expected

        threads = [threading.Thread(target=sender, args=(n,), daemon=True) for n in range(CONNECTIONS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with lock:
                if len(acked) >= KILL_AFTER_ACKS:
                    break
            time.sleep(0.005)
        engine.kill()
        for t in threads:
            t.join(timeout=30)
        with lock:
            acked_now = set(acked)
        assert len(acked_now) >= KILL_AFTER_ACKS, engine.log_text()[-3000:]
        assert len(acked_now) < CONNECTIONS * PER_CONNECTION, "the kill came too late to test anything"

        restarted = EngineProcess(project, env).start()
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                delivered = {control_id_of(r.body) for r in erp.snapshot()}
                if acked_now <= delivered:
                    break
                time.sleep(0.2)
            stored = restarted.call("GET", "/api/messages?channel=crash-in&limit=10000")
        finally:
            restarted.stop()

    deliveries = erp.snapshot()
    print(
        f"acked before the kill: {len(acked_now)}; stored after restart: {len(stored)}; "
        f"deliveries: {len(deliveries)} for {len({control_id_of(r.body) for r in deliveries})} control ids"
    )
    missing = acked_now - delivered
    assert not missing, f"{len(missing)} ACKed messages never reached the ERP, e.g. {sorted(missing)[:5]}"
    stored_ids = {m["control_id"] for m in stored}
    assert acked_now <= stored_ids, f"{len(acked_now - stored_ids)} ACKed messages are not in the store"
    keys: dict[str, set[str]] = defaultdict(set)
    for request in erp.snapshot():
        keys[control_id_of(request.body)].add(request.headers["Idempotency-Key"])
    by_control = {m["control_id"]: m["id"] for m in stored}
    for cid, seen in keys.items():
        assert len(seen) == 1, f"{cid} was delivered with different idempotency keys {seen}"
        assert seen == {f"{by_control[cid]}:erp"}


def _children(pid: int) -> set[int]:
    tasks = Path(f"/proc/{pid}/task")
    return {int(c) for task in tasks.iterdir() for c in (task / "children").read_text().split()}


def test_a_killed_store_writer_process_costs_no_acked_message_and_no_restart(make_project) -> None:  # type: ignore[no-untyped-def]
    # The SQLite writes run in a child process (writer: process). Killed under load, the
    # writes in flight fail (their senders get no ACK and send again), a new child takes
    # over, and the engine goes on: every ACKed message is delivered without a restart and
    # none stays unprocessed.
    from engine.testing.peers import free_port

    project = make_project({"crash-in": CHANNEL})
    acked: set[str] = set()
    lock = threading.Lock()
    connections, per_connection, kill_after = 4, 250, 300
    with HttpPeer() as erp:
        env = {"ERP_URL": erp.url, "CRASH_PORT": str(free_port())}
        engine = EngineProcess(project, env).start()
        try:
            _, port = engine.address("crash-in")
            assert engine.proc is not None
            writers = _children(engine.proc.pid)
            assert len(writers) == 1, writers

            def sender(index: int) -> None:
                i = 0
                deadline = time.monotonic() + 120
                while i < per_connection and time.monotonic() < deadline:
                    try:
                        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                            while i < per_connection:
                                cid = f"W{index}-{i}"
                                code, acked_id = msa(mllp_exchange(sock, message(cid), timeout=10))
                                assert (code, acked_id) == ("AA", cid)
                                with lock:
                                    acked.add(cid)
                                i += 1
                    except OSError:
                        time.sleep(0.05)  # no ACK: send the same message again, as senders do

            threads = [threading.Thread(target=sender, args=(n,), daemon=True) for n in range(connections)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(acked) < kill_after:
                time.sleep(0.005)
            os.kill(writers.pop(), signal.SIGKILL)
            for t in threads:
                t.join(timeout=150)
            with lock:
                acked_now = set(acked)
            assert len(acked_now) == connections * per_connection, engine.log_text()[-3000:]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                delivered = {control_id_of(r.body) for r in erp.snapshot()}
                counters = engine.call("GET", "/api/channels/crash-in")["counters"]
                if acked_now <= delivered and not counters.get("RECEIVED"):
                    break
                time.sleep(0.1)
            assert len(_children(engine.proc.pid)) == 1  # a new writer took over
        finally:
            engine.stop()
    assert not acked_now - delivered, f"{len(acked_now - delivered)} ACKed messages never reached the ERP"
    assert not counters.get("RECEIVED"), f"{counters.get('RECEIVED')} messages were left unprocessed"
