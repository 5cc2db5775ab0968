"""Runtime behaviour with real sockets and a real HTTP peer, engine in-process.

Keyed ordering across threads, ACK modes, storage modes, a held destination whose URL is
unset, and recovery of queued messages after a restart.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from engine.core.message import Status
from engine.core.store import MessageQuery
from engine.runtime import channel as channel_module
from engine.runtime.workers import GATHER_SECS
from engine.store import StoreError
from engine.testing.peers import EngineThread, HttpPeer, Received, mllp_exchange, msa

pytestmark = pytest.mark.integration


def dft(control_id: str, patient: str, *, bad_ft1: bool = False) -> bytes:
    ft1 = "FT1|1|||20261122|20261122|CG|SUP-1|||NOTANUMBER\r" if bad_ft1 else "FT1|1|||20261122|20261122|CG|SUP-1|||2\r"
    return (
        f"MSH|^~\\&|EHR|GH|JUNCTION|ERP|20261122101500||DFT^P03|{control_id}|P|2.5.1\r"
        f"PID|1||{patient}^^^GH^MR||TESTPATIENT^GAMMA\r" + ft1
    ).encode()


def send_all(port: int, payloads: list[bytes]) -> list[tuple[str, str]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return [msa(mllp_exchange(sock, p)) for p in payloads]


def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def control(request: Received) -> str:
    return request.body.split(b"|")[9].decode()


def test_threads_keep_order_per_key_and_do_not_block_other_keys(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    failures_left = {"P-SLOW": 5}
    lock = threading.Lock()

    def behaviour(request: Received) -> int:
        patient = request.body.split(b"PID|1||", 1)[1].split(b"^", 1)[0].decode()
        with lock:
            if failures_left.get(patient, 0) > 0:
                failures_left[patient] -= 1
                return 503
        return 200

    with HttpPeer(behaviour) as erp:
        monkeypatch.setenv("ERP_URL", erp.url)
        project: Path = make_project(
            {
                "keyed-in": """
            name: keyed-in
            source: {type: mllp, listen: "127.0.0.1:0"}
            pipeline: {datatype: hl7v2}
            destinations:
              - name: erp
                type: http
                url: ${ERP_URL}/charges
                threads: 4
                order_key: PID-3.1
                retry: {max_attempts: 0, backoff_secs: 0.1, max_backoff_secs: 0.2}
        """
            }
        )
        patients = ["P-SLOW", "P-A", "P-B", "P-C", "P-D", "P-E"]
        payloads = [dft(f"K{n:03d}", patients[n % len(patients)]) for n in range(60)]
        with EngineThread(project) as running:
            _, port = running.address("keyed-in")
            assert all(code == "AA" for code, _ in send_all(port, payloads))
            wait_until(lambda: len(erp.snapshot()) == 60)
        received = erp.snapshot()
    by_patient: dict[str, list[str]] = {}
    for request in received:
        by_patient.setdefault(request.body.split(b"PID|1||", 1)[1].split(b"^", 1)[0].decode(), []).append(
            control(request)
        )
    for patient, controls in by_patient.items():
        assert controls == sorted(controls), f"{patient} delivered out of order: {controls}"
    slow_done = max(r.at for r in received if b"P-SLOW" in r.body)
    others_done = [r.at for r in received if b"P-SLOW" not in r.body]
    assert sum(1 for at in others_done if at < slow_done) >= len(others_done) // 2, "other keys waited"


def test_after_processing_acks_reflect_the_outcome(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Path = make_project(
        {
            "ack-in": """
        name: ack-in
        source: {type: mllp, listen: "127.0.0.1:0", ack_mode: after_processing}
        pipeline:
          datatype: hl7v2
          filter: {field: MSH-9.1, in: [DFT, ADT]}
          transform: hl7-to-json
        destinations:
          - {name: archive, type: file, directory: var/out/ack}
    """
        }
    )
    with EngineThread(project) as running:
        _, port = running.address("ack-in")
        good, filtered, garbage = send_all(
            port,
            [
                dft("A1", "P1"),
                dft("A2", "P1").replace(b"DFT^P03", b"ORU^R01"),
                b"this is not HL7 at all",
            ],
        )
        detail = running.run(running.engine.store.search(MessageQuery(channel="ack-in", control_id="A1")))
    assert good == ("AA", "A1")
    assert filtered == ("AA", "A2")  # accepted, just not routed
    assert garbage[0] == "AR"
    assert detail[0].status == Status.TRANSFORMED


def test_strict_validation_answers_ae_with_the_reason(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Path = make_project(
        {
            "strict-in": """
        name: strict-in
        source: {type: mllp, listen: "127.0.0.1:0", ack_mode: after_processing}
        pipeline:
          datatype: {type: hl7v2, validate: strict}
    """
        }
    )
    bad_date = (
        b"MSH|^~\\&|EHR|GH|JUNCTION|ERP|20261122101500||ADT^A01^ADT_A01|V1|P|2.5\r"
        b"EVN|A01|NOT-A-DATE\rPID|1||X^^^GH^MR||TESTPATIENT^DELTA||19700101|F\rPV1|1|I\r"
    )
    with EngineThread(project) as running:
        _, port = running.address("strict-in")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            ack = mllp_exchange(sock, bad_date, timeout=30)
        stored = running.run(running.engine.store.search(MessageQuery(channel="strict-in")))
    code, acked = msa(ack)
    assert (code, acked) == ("AE", "V1")
    assert b"ERR" in ack
    assert stored[0].status == Status.ERROR
    assert stored[0].error.startswith("validation:")
    assert "NOT-A-DATE" not in stored[0].error  # describes the problem, never quotes the value


@pytest.mark.parametrize(
    ("mode", "kept"), [("raw", {"raw"}), ("metadata", set()), ("production", {"raw", "transformed"})]
)
def test_storage_modes(make_project, mode: str, kept: set[str]) -> None:  # type: ignore[no-untyped-def]
    project: Path = make_project(
        {
            "store-in": f"""
        name: store-in
        storage: {mode}
        source: {{type: mllp, listen: "127.0.0.1:0"}}
        pipeline: {{datatype: hl7v2}}
        destinations:
          - {{name: archive, type: file, directory: var/out/store}}
    """
        }
    )
    with EngineThread(project) as running:
        _, port = running.address("store-in")
        assert send_all(port, [dft("S1", "P1")]) == [("AA", "S1")]
        store = running.engine.store

        def sent() -> bool:
            found = running.run(store.search(MessageQuery(channel="store-in")))
            return bool(found) and found[0].destinations.get("archive") == Status.SENT

        wait_until(sent)
        time.sleep(0.2)
        (summary,) = running.run(store.search(MessageQuery(channel="store-in")))
        detail = running.run(store.get(summary.id))
    assert {stage for _run, stage in detail.contents} == kept


def test_unset_url_holds_the_queue_until_redeployed(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("LATER_ERP_URL", raising=False)
    project: Path = make_project(
        {
            "held-in": """
        name: held-in
        source: {type: mllp, listen: "127.0.0.1:0"}
        pipeline: {datatype: hl7v2}
        destinations:
          - {name: erp, type: http, url: "${LATER_ERP_URL:-}"}
    """
        }
    )
    with HttpPeer() as erp, EngineThread(project) as running:
        _, port = running.address("held-in")
        assert send_all(port, [dft("H1", "P1"), dft("H2", "P1")]) == [("AA", "H1"), ("AA", "H2")]
        status = running.run(running.engine.status("held-in"))
        assert "not configured" in status["destinations"][0]["problem"]
        time.sleep(0.3)
        assert erp.snapshot() == []
        monkeypatch.setenv("LATER_ERP_URL", erp.url)
        running.run(running.engine.act("held-in", "redeploy"))
        wait_until(lambda: len(erp.snapshot()) == 2)
    assert [control(r) for r in erp.snapshot()] == ["H1", "H2"]


def test_restart_resumes_queued_and_unprocessed_messages(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    down = [True]
    with HttpPeer(lambda _r: 503 if down[0] else 200) as erp:
        monkeypatch.setenv("ERP_URL", erp.url)
        project: Path = make_project(
            {
                "resume-in": """
            name: resume-in
            source: {type: mllp, listen: "127.0.0.1:0"}
            pipeline: {datatype: hl7v2}
            destinations:
              - name: erp
                type: http
                url: ${ERP_URL}/x
                retry: {max_attempts: 0, backoff_secs: 0.05, max_backoff_secs: 0.1}
        """
            }
        )
        with EngineThread(project) as running:
            _, port = running.address("resume-in")
            assert [c for c, _ in send_all(port, [dft(f"R{n}", "P1") for n in range(5)])] == ["AA"] * 5
            wait_until(lambda: len(erp.refused) >= 2)
        down[0] = False
        with EngineThread(project):
            wait_until(lambda: len(erp.snapshot()) == 5)
    assert [control(r) for r in erp.snapshot()] == [f"R{n}" for n in range(5)]


# One FIFO HTTP destination: the order the ERP receives is the order of processing.
ORDER_CHANNEL = """
    name: order-in
    source: {type: mllp, listen: "127.0.0.1:0"}
    pipeline: {datatype: hl7v2}
    destinations:
      - {name: erp, type: http, url: "${ERP_URL}/order"}
"""


def test_processing_on_intake_never_lets_a_message_overtake_earlier_ones(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # An idle started channel processes a new message before storing it (one commit); while
    # earlier messages still wait for processing (here: held by a pause, then recovered on
    # resume) new ones must take the queue behind them, or a FIFO destination sees them first.
    # The idle processor waits on its queue for long here, so the resume always finds it
    # there and the first new message reaches it before the recovery does.
    monkeypatch.setattr(channel_module, "IDLE_WAKE_SECS", 30.0)
    with HttpPeer() as erp:
        monkeypatch.setenv("ERP_URL", erp.url)
        project: Path = make_project({"order-in": ORDER_CHANNEL})
        with EngineThread(project) as running:
            _, port = running.address("order-in")
            runtime = running.engine.get("order-in")
            wait_until(lambda: runtime._process_on_intake(b"x"))  # start-up recovery is over
            assert send_all(port, [dft(f"O{n}", "P1") for n in range(3)]) == [("AA", f"O{n}") for n in range(3)]
            running.run(running.engine.act("order-in", "pause"))
            assert not runtime._process_on_intake(b"x")
            assert [c for c, _ in send_all(port, [dft(f"O{n}", "P1") for n in range(3, 40)])] == ["AA"] * 37
            running.run(running.engine.act("order-in", "resume"))
            assert not runtime._process_on_intake(b"x")  # the held messages come first
            assert [c for c, _ in send_all(port, [dft(f"O{n}", "P1") for n in range(40, 60)])] == ["AA"] * 20
            wait_until(lambda: len(erp.snapshot()) == 60)
            wait_until(lambda: runtime._process_on_intake(b"x"))
            assert send_all(port, [dft("O60", "P1")]) == [("AA", "O60")]
            wait_until(lambda: len(erp.snapshot()) == 61)
            counters = running.run(running.engine.store.counters("order-in"))
    assert [control(r) for r in erp.snapshot()] == [f"O{n}" for n in range(61)]
    assert (counters.get("TRANSFORMED"), counters.get("RECEIVED", 0), counters.get("dest:erp:SENT")) == (61, 0, 61)
    # the order the messages were processed in: their destination rows are numbered as inserted
    with closing(sqlite3.connect(project / "var" / "junction.db")) as db:
        processed = db.execute(
            "SELECT m.control_id FROM queue q JOIN messages m ON m.seq = q.message_seq ORDER BY q.id"
        ).fetchall()
    assert [c for (c,) in processed] == [f"O{n}" for n in range(61)]


def test_a_full_processing_queue_leaves_messages_to_the_store_in_order(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # While a recovery is busy (held here at its first result), new messages must not wait
    # for room in the processing queue (their ACKs would wait with them) nor be processed
    # after messages stored later (a pause stores without queueing). They stay in the store
    # and a recovery processes them at their place. Small queue and recovery pages make the
    # case reachable with a few messages.
    monkeypatch.setattr(channel_module, "QUEUE_MAX", 4)
    monkeypatch.setattr(channel_module, "RECOVERY_PAGE", 3)
    with HttpPeer() as erp:
        monkeypatch.setenv("ERP_URL", erp.url)
        project: Path = make_project({"order-in": ORDER_CHANNEL})
        with EngineThread(project) as running:
            _, port = running.address("order-in")
            runtime = running.engine.get("order-in")
            wait_until(lambda: runtime._process_on_intake(b"x"))  # start-up recovery is over
            store = running.engine.store
            real = store.record_results
            gate = threading.Event()
            entered = threading.Event()

            async def gated(*args):  # type: ignore[no-untyped-def]
                entered.set()
                while not gate.is_set():
                    await asyncio.sleep(0.01)
                return await real(*args)

            monkeypatch.setattr(store, "record_results", gated)
            try:
                running.run(running.engine.act("order-in", "pause"))
                assert [c for c, _ in send_all(port, [dft(f"O{n}", "P1") for n in range(3)])] == ["AA"] * 3
                running.run(running.engine.act("order-in", "resume"))
                assert entered.wait(10)  # the recovery holds O0-O2 at the gate
                acks: list[tuple[str, str]] = []
                sender = threading.Thread(
                    target=lambda: acks.extend(send_all(port, [dft(f"O{n}", "P1") for n in range(3, 8)]))
                )
                sender.start()
                sender.join(10)
                # more than the queue holds, all answered while processing is held
                assert not sender.is_alive() and [c for c, _ in acks] == ["AA"] * 5
                running.run(running.engine.act("order-in", "pause"))
                assert [c for c, _ in send_all(port, [dft(f"O{n}", "P1") for n in range(8, 10)])] == ["AA"] * 2
                running.run(running.engine.act("order-in", "resume"))
            finally:
                gate.set()
            wait_until(lambda: len(erp.snapshot()) == 10)
            counters = running.run(running.engine.store.counters("order-in"))
    assert [control(r) for r in erp.snapshot()] == [f"O{n}" for n in range(10)]
    assert (counters.get("TRANSFORMED"), counters.get("RECEIVED", 0)) == (10, 0)
    with closing(sqlite3.connect(project / "var" / "junction.db")) as db:
        processed = db.execute(
            "SELECT m.control_id FROM queue q JOIN messages m ON m.seq = q.message_seq ORDER BY q.id"
        ).fetchall()
    assert [c for (c,) in processed] == [f"O{n}" for n in range(10)]


def test_a_long_recovery_remembers_one_page_of_processed_messages_not_all(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A recovery notes which messages it processed; across a backlog of many pages that note
    # must not grow with the backlog (a million held messages would be about 100 MB).
    monkeypatch.setattr(channel_module, "RECOVERY_PAGE", 3)
    with HttpPeer() as erp:
        monkeypatch.setenv("ERP_URL", erp.url)
        project: Path = make_project({"order-in": ORDER_CHANNEL})
        with EngineThread(project) as running:
            _, port = running.address("order-in")
            runtime = running.engine.get("order-in")
            wait_until(lambda: runtime._process_on_intake(b"x"))
            store = running.engine.store
            real = store.record_results
            remembered: list[int] = []

            async def watched(*args):  # type: ignore[no-untyped-def]
                remembered.append(len(runtime._done_while_recovering or ()))
                return await real(*args)

            monkeypatch.setattr(store, "record_results", watched)
            running.run(running.engine.act("order-in", "pause"))
            assert [c for c, _ in send_all(port, [dft(f"O{n}", "P1") for n in range(12)])] == ["AA"] * 12
            running.run(running.engine.act("order-in", "resume"))
            wait_until(lambda: len(erp.snapshot()) == 12)
    assert [control(r) for r in erp.snapshot()] == [f"O{n}" for n in range(12)]
    assert len(remembered) >= 4  # one write per page of 3
    assert max(remembered) <= 3


def test_a_recovery_waits_for_a_message_whose_intake_has_not_handed_it_on(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A recovery can read a message committed a moment ago whose intake has not resumed yet
    # (it still counts as in flight). Nothing stored after it may be processed first: the
    # recovery stops there and reads on from it once the intake has let it go.
    monkeypatch.setattr(channel_module, "INTAKE_SETTLE_TRIES", 5000)  # ~10 s: never runs out here
    with HttpPeer() as erp:
        monkeypatch.setenv("ERP_URL", erp.url)
        project: Path = make_project({"order-in": ORDER_CHANNEL})
        with EngineThread(project) as running:
            _, port = running.address("order-in")
            runtime = running.engine.get("order-in")
            wait_until(lambda: runtime._process_on_intake(b"x"))
            running.run(running.engine.act("order-in", "pause"))
            assert [c for c, _ in send_all(port, [dft(f"O{n}", "P1") for n in range(5)])] == ["AA"] * 5
            found = running.run(running.engine.store.search(MessageQuery(channel="order-in", control_id="O2")))
            o2 = found[0].id

            async def in_flight(on: bool) -> None:
                (runtime._inflight.add if on else runtime._inflight.discard)(o2)

            running.run(in_flight(True))
            running.run(running.engine.act("order-in", "resume"))
            wait_until(lambda: len(erp.snapshot()) == 2)  # O0 and O1; O3 and O4 wait behind O2
            time.sleep(0.04)
            assert len(erp.snapshot()) == 2
            running.run(in_flight(False))  # as an intake that left it to the store
            wait_until(lambda: len(erp.snapshot()) == 5)
    assert [control(r) for r in erp.snapshot()] == [f"O{n}" for n in range(5)]


FAILING_CHANNEL = """
    name: fail-in
    source: {type: mllp, listen: "127.0.0.1:0", ack_mode: after_processing}
    pipeline: {datatype: hl7v2}
    destinations:
      - {name: erp, type: http, url: "${ERP_URL}/x"}
"""


def _fail_once(monkeypatch, store, method: str, *, after_commit: bool = False) -> list[tuple[object, ...]]:  # type: ignore[no-untyped-def]
    """Make the store's next call of ``method`` raise, before or after its write committed."""
    real = getattr(store, method)
    failed: list[tuple[object, ...]] = []

    async def failing(*args):  # type: ignore[no-untyped-def]
        if failed:
            return await real(*args)
        failed.append(args)
        if after_commit:
            await real(*args)
        raise StoreError("disk I/O error (injected)")

    monkeypatch.setattr(store, method, failing)
    return failed


@pytest.fixture
def failing_engine(make_project, monkeypatch):  # type: ignore[no-untyped-def]
    """(engine thread, MLLP port, ERP peer) for a channel whose store will fail once."""
    with HttpPeer() as erp:
        monkeypatch.setenv("ERP_URL", erp.url)
        with EngineThread(make_project({"fail-in": FAILING_CHANNEL})) as running:
            _, port = running.address("fail-in")
            yield running, port, erp


def test_a_failed_store_write_leaves_the_message_to_a_recovery(failing_engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    running, port, erp = failing_engine
    failed = _fail_once(monkeypatch, running.engine.store, "record_results")
    # the first result is not stored: the message stays RECEIVED, a recovery processes it,
    # and its sender (waiting for an after-processing ACK) gets its AA then
    assert send_all(port, [dft("F1", "P1"), dft("F2", "P1")]) == [("AA", "F1"), ("AA", "F2")]
    wait_until(lambda: len(erp.snapshot()) == 2)
    counters = running.run(running.engine.store.counters("fail-in"))
    assert [len(results) for (results,) in failed] == [1]  # type: ignore[arg-type]
    assert [control(r) for r in erp.snapshot()] == ["F1", "F2"]
    assert (counters.get("TRANSFORMED"), counters.get("RECEIVED", 0)) == (2, 0)


def test_a_store_failure_after_the_result_committed_answers_the_waiting_sender(failing_engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    running, port, erp = failing_engine
    _fail_once(monkeypatch, running.engine.store, "record_results", after_commit=True)
    # processed and stored, but the runtime never heard so: no recovery finds it, and the
    # sender gets no ACK (the connection closes) instead of waiting for ever
    with pytest.raises(ConnectionError):
        send_all(port, [dft("G1", "P1")])
    assert send_all(port, [dft("G2", "P1")]) == [("AA", "G2")]
    wait_until(lambda: len(erp.snapshot()) == 2)
    counters = running.run(running.engine.store.counters("fail-in"))
    assert [control(r) for r in erp.snapshot()] == ["G1", "G2"]
    assert (counters.get("TRANSFORMED"), counters.get("RECEIVED", 0)) == (2, 0)


def test_a_store_that_keeps_failing_shows_in_the_channel_status_until_it_heals(failing_engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    running, port, erp = failing_engine
    store = running.engine.store
    real = store.record_results
    broken = [True]

    async def record_results(results):  # type: ignore[no-untyped-def]
        if broken[0]:
            raise StoreError("database or disk is full (injected)")
        return await real(results)

    def problem() -> str | None:
        return running.run(running.engine.status("fail-in"))["processing"]["problem"]  # type: ignore[no-any-return]

    monkeypatch.setattr(store, "record_results", record_results)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x0b" + dft("H1", "P1") + b"\x1c\r")  # after_processing: its ACK waits
        wait_until(lambda: "failed 2 time(s)" in (problem() or ""))
        assert "database or disk is full" in (problem() or "")
        assert erp.snapshot() == []
        broken[0] = False  # room on the disk again: the next recovery processes H1
        answer = b""
        while b"\x1c" not in answer:
            chunk = sock.recv(65536)
            assert chunk, "connection closed before the ACK"
            answer += chunk
    assert msa(answer.strip(b"\x0b\x1c\r")) == ("AA", "H1")
    wait_until(lambda: len(erp.snapshot()) == 1)
    assert problem() is None


def test_a_destination_worker_outlives_a_failing_store_read(failing_engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    running, port, erp = failing_engine
    failed = _fail_once(monkeypatch, running.engine.store, "next_retry_at")
    wait_until(lambda: [args[1] for args in failed] == ["erp"])  # the idle worker asked, and failed
    assert send_all(port, [dft("I1", "P1")]) == [("AA", "I1")]
    wait_until(lambda: len(erp.snapshot()) == 1)
    assert [control(r) for r in erp.snapshot()] == ["I1"]


def test_a_worker_keeping_up_gathers_arrivals_into_rounds(make_project) -> None:  # type: ignore[no-untyped-def]
    # Messages processed on intake reach the queue one by one. A worker that is keeping up
    # waits a few ms before its next claim, so one round (two commits and a filesystem sync)
    # carries several messages instead of one claim per arrival.
    project: Path = make_project(
        {
            "rounds-in": """
            name: rounds-in
            source: {type: mllp, listen: "127.0.0.1:0"}
            pipeline: {datatype: hl7v2}
            destinations:
              - {name: files, type: file, directory: var/out/rounds}
        """
        }
    )
    with EngineThread(project) as running:
        _, port = running.address("rounds-in")
        runtime = running.engine.get("rounds-in")
        destination = runtime.destinations["files"]
        sizes: list[int] = []
        send_batch = destination.send_batch

        async def counting(items):  # type: ignore[no-untyped-def]
            sizes.append(len(items))
            return await send_batch(items)

        destination.send_batch = counting  # type: ignore[method-assign]
        wait_until(lambda: runtime._process_on_intake(b"x"))  # start-up recovery is over
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for n in range(150):  # one at a time, each waits for its ACK
                assert msa(mllp_exchange(sock, dft(f"G{n}", "P1"))) == ("AA", f"G{n}")
        elapsed = time.monotonic() - started
        wait_until(lambda: sum(sizes) == 150)
    assert len(list((project / "var" / "out" / "rounds").iterdir())) == 150
    # At most one round per gathering pause (plus the last ones); claiming per arrival makes
    # a round every few ms, several times more.
    assert len(sizes) <= elapsed / GATHER_SECS + 3, (len(sizes), round(elapsed, 3), sizes)


def test_send_first_delivers_before_the_ack(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with HttpPeer() as erp:
        monkeypatch.setenv("ERP_URL", erp.url)
        project: Path = make_project(
            {
                "first-in": """
            name: first-in
            source: {type: mllp, listen: "127.0.0.1:0", ack_mode: after_processing}
            pipeline: {datatype: hl7v2}
            destinations:
              - {name: erp, type: http, url: "${ERP_URL}/first", send_first: true}
        """
            }
        )
        with EngineThread(project) as running:
            _, port = running.address("first-in")
            for n in range(5):
                assert send_all(port, [dft(f"F{n}", "P1")]) == [("AA", f"F{n}")]
                assert [control(r) for r in erp.snapshot()][-1] == f"F{n}", "the ACK came before the delivery"


def test_mllp_sender_forwards_to_another_listener(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from engine.testing.peers import free_port

    port = free_port()
    monkeypatch.setenv("DOWNSTREAM_PORT", str(port))
    project: Path = make_project(
        {
            "route-in": """
            name: route-in
            source: {type: mllp, listen: "127.0.0.1:0"}
            pipeline: {datatype: hl7v2}
            destinations:
              - name: downstream
                type: mllp
                endpoint: 127.0.0.1:${DOWNSTREAM_PORT}
                ack_timeout_secs: 5
        """,
            "downstream-in": """
            name: downstream-in
            source: {type: mllp, listen: "127.0.0.1:${DOWNSTREAM_PORT}"}
            pipeline: {datatype: hl7v2}
        """,
        }
    )
    with EngineThread(project) as running:
        _, entry = running.address("route-in")
        assert [c for c, _ in send_all(entry, [dft(f"M{n}", "P1") for n in range(3)])] == ["AA"] * 3
        store = running.engine.store

        def forwarded() -> bool:
            return len(running.run(store.search(MessageQuery(channel="downstream-in")))) == 3

        wait_until(forwarded)
        sent = running.run(store.search(MessageQuery(channel="route-in")))
        detail = running.run(store.get(sent[0].id))
    assert {m.destinations["downstream"] for m in sent} == {Status.SENT}
    (response,) = [c for (_run, stage), c in detail.contents.items() if stage == "response:downstream"]
    assert b"MSA|AA|" + sent[0].control_id.encode() in response  # the downstream ACK is kept


def test_oversize_frame_gets_ar_is_stored_and_the_connection_goes_on(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Path = make_project(
        {
            "big-in": """
        name: big-in
        source: {type: mllp, listen: "127.0.0.1:0", max_frame_bytes: 4096}
        pipeline: {datatype: hl7v2}
    """
        }
    )
    huge = dft("BIG1", "P1") + b"NTE|1||" + b"X" * 20_000 + b"\r"
    with EngineThread(project) as running:
        _, port = running.address("big-in")
        answers = send_all(port, [huge, dft("OK1", "P1")])
        stored = running.run(running.engine.store.search(MessageQuery(channel="big-in")))
    assert answers == [("AR", "BIG1"), ("AA", "OK1")]
    refused = [m for m in stored if m.status == Status.ERROR]
    assert len(refused) == 1
    assert "max_frame_bytes" in refused[0].error
    assert refused[0].control_id == "BIG1"


def test_a_dedupe_key_stores_a_payload_once_also_for_batches(make_project) -> None:  # type: ignore[no-untyped-def]
    project: Path = make_project(
        {
            "files-in": """
        name: files-in
        source: {type: mllp, listen: "127.0.0.1:0"}
        pipeline: {datatype: hl7v2}
        destinations: []
    """
        }
    )
    batch = dft("B1", "P1") + b"\r" + dft("B2", "P2") + b"\r" + dft("B3", "P3")
    with EngineThread(project) as running:
        channel = running.engine.channels["files-in"]
        first = running.run(channel.submit(dft("D1", "P1"), {"file": "a.hl7"}, dedupe_key="a.hl7|10|1|ab"))
        again = running.run(channel.submit(dft("D1", "P1"), {"file": "a.hl7"}, dedupe_key="a.hl7|10|1|ab"))
        other = running.run(channel.submit(dft("D1", "P1"), {"file": "a.hl7"}, dedupe_key="a.hl7|10|2|ab"))
        whole = running.run(channel.submit(batch, {"file": "b.hl7"}, dedupe_key="b.hl7"))
        repeat = running.run(channel.submit(batch, {"file": "b.hl7"}, dedupe_key="b.hl7"))
        stored = running.run(running.engine.store.search(MessageQuery(channel="files-in")))
    assert (first.status, first.accepted) == (Status.RECEIVED, True)
    assert (again.status, again.message_id, again.accepted) == ("DUPLICATE", first.message_id, True)
    assert again.response is not None and msa(again.response) == ("AA", "D1")  # answered again, as the first time
    assert other.status == Status.RECEIVED and other.message_id != first.message_id
    assert whole.status == Status.RECEIVED and repeat.status == "DUPLICATE"
    assert repeat.message_id == whole.message_id
    assert sorted(m.control_id for m in stored) == ["B1", "B2", "B3", "D1", "D1"]


def test_sync_sources_get_the_transformed_content_and_send_first_replies(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def answer(request: Received) -> tuple[int, bytes, dict[str, str]]:
        return 200, b'{"price": "12.50"}', {"Content-Type": "application/json"}

    with HttpPeer(answer) as erp:
        monkeypatch.setenv("ERP_URL", erp.url)
        project: Path = make_project(
            {
                "lookup-in": """
            name: lookup-in
            source: {type: mllp, listen: "127.0.0.1:0", ack_mode: after_processing}
            pipeline: {datatype: hl7v2, transform: {type: hl7-to-json}}
            destinations:
              - {name: erp, type: http, url: "${ERP_URL}/price", send_first: true}
              - {name: down, type: http, url: "http://127.0.0.1:9/nothing", send_first: true,
                 retry: {max_attempts: 3, backoff_secs: 5}}
        """
            }
        )
        with EngineThread(project) as running:
            channel = running.engine.channels["lookup-in"]
            result = running.run(channel.submit(dft("S1", "P1"), {"peer": "127.0.0.1"}))
    assert result.accepted and result.content_type == "application/json"
    assert result.content is not None and b"DFT" in result.content
    erp_reply = result.replies["erp"]
    assert (erp_reply.ok, erp_reply.body, erp_reply.status_code) == (True, b'{"price": "12.50"}', 200)
    assert erp_reply.content_type.startswith("application/json")
    down = result.replies["down"]
    assert not down.ok and down.detail


def test_the_engine_process_freezes_its_heap_and_lets_a_redeployed_channel_go(make_project) -> None:  # type: ignore[no-untyped-def]
    """Full collections skip the long-lived heap (gc.freeze), and a redeploy still frees the
    previous runtime: the heap is unfrozen and collected before it is frozen again."""
    import asyncio
    import gc
    import weakref

    from engine.runtime.engine import Engine

    project: Path = make_project(
        {
            "heap-in": """
        name: heap-in
        source: {type: mllp, listen: "127.0.0.1:0"}
        pipeline: {datatype: hl7v2}
        destinations:
          - {name: files, type: file, directory: var/out/heap}
    """
        }
    )

    async def scenario() -> tuple[int, bool, bool, int]:
        assert gc.get_freeze_count() == 0  # nothing before: engines in other processes only
        engine = Engine(project, settle_heap=True)
        await engine.start()
        try:
            frozen = gc.get_freeze_count()
            first = weakref.ref(engine.get("heap-in"))
            await engine.deploy("heap-in")  # redeploy: a new runtime replaces the frozen one
            replaced = engine.get("heap-in") is not first()
            return frozen, replaced, first() is None, gc.get_freeze_count()
        finally:
            await engine.stop()

    try:
        frozen, replaced, freed, frozen_again = asyncio.run(scenario())
    finally:
        gc.unfreeze()  # give the test process its heap back
    assert frozen > 10_000  # modules, models, the channel: what a full collection no longer walks
    assert replaced and freed
    assert frozen_again > 10_000


def test_real_senders_quirks_over_mllp_get_answers_and_nothing_is_lost(make_project) -> None:  # type: ignore[no-untyped-def]
    # Three payloads real senders produce, each answered and stored: two messages in one
    # frame whose second is malformed (no AA for the frame: each message gets its ACK), a
    # NUL-padded MSH-18 (once an exception that closed the connection and stored nothing),
    # and unusable encoding characters (refused, but the AR names the control id).
    project: Path = make_project(
        {
            "adt-in": """
        name: adt-in
        source: {type: mllp, listen: "127.0.0.1:0"}
        pipeline: {datatype: hl7v2}
        destinations:
          - {name: out, type: file, directory: var/out}
    """
        }
    )
    good = b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101||ADT^A01|Q1|P|2.5\rPID|1||X\r"
    bad = b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101||ADT^A01|Q2|P|2.5\rP\x01D|1\r"
    nul = b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101||ADT^A01|Q3|P|2.5||||||8859/1\x00\rPID|1||X||M\xfcller\r"
    msh2 = b"MSH|^~&|LAB|HOSP|EHR|HOSP|20240101||ADT^A01|Q4|P|2.2\rPID|1\r"
    with EngineThread(project) as running:
        _, port = running.address("adt-in")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            both = mllp_exchange(sock, good + bad)
            answers = [msa(seg) for seg in both.split(b"MSH")[1:]]
            assert answers == [("AA", "Q1"), ("AR", "Q2")]
            assert msa(mllp_exchange(sock, nul)) == ("AA", "Q3")
            assert msa(mllp_exchange(sock, msh2)) == ("AR", "Q4")
        # on_receipt: the AA comes after the commit, the file destination may still be writing
        deadline = time.monotonic() + 10
        while True:
            stored = running.run(running.engine.store.search(MessageQuery(channel="adt-in")))
            if all(m.status != Status.RECEIVED for m in stored) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    by_control = {m.control_id: m.status for m in stored}
    assert by_control == {"Q1": Status.TRANSFORMED, "Q2": Status.ERROR, "Q3": Status.TRANSFORMED, "Q4": Status.ERROR}
