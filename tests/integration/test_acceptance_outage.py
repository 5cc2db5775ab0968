"""Acceptance: an HTTP destination answers 503 for a while, then recovers.

Every queued message arrives, in order for the FIFO destination, and a second healthy
destination on the same channel is not delayed by the outage.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from engine.testing.peers import EngineThread, HttpPeer, Received, mllp_exchange, msa

pytestmark = pytest.mark.integration

CHANNEL = """
    name: outage-in
    source:
      type: mllp
      listen: 127.0.0.1:0
    pipeline:
      datatype: hl7v2
    destinations:
      - name: flaky-erp
        type: http
        url: ${ERP_URL}/flaky
        retry: {max_attempts: 0, backoff_secs: 0.05, max_backoff_secs: 0.2}
      - name: healthy-rcm
        type: http
        url: ${ERP_URL}/healthy
"""

COUNT = 60
OUTAGE_SECS = 3.0


def message(n: int) -> bytes:
    return (
        f"MSH|^~\\&|EHR|GH|JUNCTION|ERP|20261122101500||DFT^P03|OUT{n:04d}|P|2.5.1\r"
        f"PID|1||MRN{n}^^^GH^MR||TESTPATIENT^BETA\r"
        f"FT1|1|||20261122|20261122|CG|SUP-{n}|||1\r"
    ).encode()


def test_outage_then_recovery_keeps_order_and_spares_other_destinations(
    make_project,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    down_until = [float("inf")]
    lock = threading.Lock()

    def behaviour(request: Received) -> int:
        with lock:
            if request.path == "/flaky" and time.time() < down_until[0]:
                return 503
        return 200

    with HttpPeer(behaviour) as erp:
        monkeypatch.setenv("ERP_URL", erp.url)
        project: Path = make_project({"outage-in": CHANNEL})
        with EngineThread(project) as running:
            with lock:
                down_until[0] = time.time() + OUTAGE_SECS
            _, port = running.address("outage-in")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                for n in range(COUNT):
                    assert msa(mllp_exchange(sock, message(n)))[0] == "AA"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                healthy = [r for r in erp.snapshot() if r.path == "/healthy"]
                if len(healthy) == COUNT:
                    break
                time.sleep(0.02)
            healthy_done = time.time()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                flaky = [r for r in erp.snapshot() if r.path == "/flaky"]
                if len(flaky) == COUNT:
                    break
                time.sleep(0.05)

    assert len(healthy) == COUNT
    assert healthy_done < down_until[0], "the healthy destination waited for the failing one"
    assert len(flaky) == COUNT, f"only {len(flaky)} of {COUNT} messages reached the recovered destination"
    assert len([r for r in erp.refused if r.path == "/flaky"]) >= 3, "the outage never happened"
    order = [r.body.split(b"|")[9].decode() for r in flaky]
    assert order == [f"OUT{n:04d}" for n in range(COUNT)], "the FIFO destination delivered out of order"
    assert all(r.at >= down_until[0] for r in flaky)
