"""The behaviour every ``MessageStore`` engine must show (kombu-style shared suite).

Subclass ``StoreConformance`` in a test module and define a ``store_factory`` fixture: a
callable that returns an async context manager yielding an *opened* store and closing it
on exit. Every call within one test must open the same database, which is fresh for each
test (the suite closes and reopens stores to check durability)::

    @pytest.fixture
    def store_factory(tmp_path):
        @contextlib.asynccontextmanager
        async def factory():
            store = SqliteStore(SqliteStoreConfig(path="db/junction.db"), tmp_path)
            await store.open()
            try:
                yield store
            finally:
                await store.close()
        return factory

    class TestSqliteStore(StoreConformance):
        pass

Error contract checked here: a duplicate message id raises ``ValueError``; a write naming
an unknown message or destination row raises ``LookupError``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from engine.core.errors import DuplicateMessage
from engine.core.message import InboundMessage, Status
from engine.core.store import (
    DeliveryOutcome,
    DestinationRoute,
    MessageQuery,
    MessageStore,
    ProcessResult,
    QueueEntry,
)

StoreFactory = Callable[[], AbstractAsyncContextManager[MessageStore]]

CHANNEL = "conformance-in"
DEST = "out"
LEASE_SECS = 30.0
SCENARIO_TIMEOUT_SECS = 60.0


def run(scenario: Coroutine[Any, Any, None]) -> None:
    """Run one async scenario with a bound on its duration (no pytest-asyncio needed)."""
    asyncio.run(asyncio.wait_for(scenario, SCENARIO_TIMEOUT_SECS))


def message(n: int = 0, *, channel: str = CHANNEL, **fields: Any) -> InboundMessage:
    """A small synthetic HL7-looking message; ``n`` makes raw and control id distinct."""
    raw = f"MSH|^~\\&|SND|FAC|RCV|FAC|20240101||ADT^A01|CTRL{n}|P|2.5\rPID|1||{n}\r".encode()
    fields.setdefault("control_id", f"CTRL{n}")
    fields.setdefault("source", {"peer": "127.0.0.1:40000", "n": n})
    return InboundMessage(channel=channel, raw=raw, **fields)


def route(destination: str = DEST, *, partition: int = 0, status: Status = Status.QUEUED) -> DestinationRoute:
    return DestinationRoute(
        destination=destination, partition=partition, status=status, content=b"OUT", content_type="text/plain"
    )


async def accept(store: MessageStore, count: int, *, channel: str = CHANNEL, start: int = 0) -> list[InboundMessage]:
    """Add ``count`` messages one after another (so their seqs follow the list order)."""
    msgs = [message(start + i, channel=channel) for i in range(count)]
    for msg in msgs:
        msg.seq = await store.add_message(msg)
    return msgs


async def transform(store: MessageStore, msg: InboundMessage, *routes: DestinationRoute, run_no: int = 1) -> None:
    result = ProcessResult(
        message_id=msg.id,
        run=run_no,
        status=Status.TRANSFORMED,
        stages={"transformed": b"T" + msg.raw[:8]},
        routes=list(routes) or [route()],
    )
    await store.record_result(result)


async def queued(store: MessageStore, count: int, **route_kw: Any) -> list[InboundMessage]:
    msgs = await accept(store, count)
    for msg in msgs:
        await transform(store, msg, route(**route_kw))
    return msgs


async def claim(store: MessageStore, *, now: float, owner: str = "w1", limit: int = 100, **kw: Any) -> list[QueueEntry]:
    kw.setdefault("destination", DEST)
    kw.setdefault("partition", 0)
    return await store.claim(
        CHANNEL, kw["destination"], kw["partition"], owner, limit=limit, lease_secs=LEASE_SECS, now=now
    )


def outcome(entry: QueueEntry, status: Status, now: float, **fields: Any) -> DeliveryOutcome:
    return DeliveryOutcome(
        message_id=entry.message_id,
        run=entry.run,
        destination=entry.destination,
        status=status,
        started_at=now,
        finished_at=now + 0.01,
        **fields,
    )


class StoreConformance:
    """Shared behavioural tests; see the module docstring for the ``store_factory`` fixture."""

    # -- messages -----------------------------------------------------------------------------

    def test_add_and_get_round_trip(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                msg = message(1, business_key="CTRL1|FAC", correlation_id="corr-1")
                seq = await store.add_message(msg)
                later = await store.add_message(message(2))
                detail = await store.get(msg.id)
                assert await store.get("00000000000000000000000000") is None
            assert later > seq > 0
            assert detail is not None
            s = detail.summary
            assert (s.seq, s.id, s.channel, s.correlation_id) == (seq, msg.id, CHANNEL, "corr-1")
            assert (s.status, s.run, s.error, s.control_id) == (Status.RECEIVED, 1, "", "CTRL1")
            assert s.received_at == pytest.approx(msg.received_at, abs=1e-3)
            assert s.source == {"peer": "127.0.0.1:40000", "n": 1}
            assert detail.business_key == "CTRL1|FAC"
            assert detail.contents == {(0, "raw"): msg.raw}
            assert (detail.destinations, detail.attempts, s.destinations) == ([], [], {})

        run(scenario())

    def test_add_with_error_status(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                msg = message(1)
                await store.add_message(msg, status=Status.ERROR, error="parse: segment 1 (MSH): too short")
                detail = await store.get(msg.id)
                pending = await store.unprocessed(CHANNEL)
            assert detail is not None
            assert (detail.summary.status, detail.summary.error) == (Status.ERROR, "parse: segment 1 (MSH): too short")
            assert detail.contents == {(0, "raw"): msg.raw}
            assert pending == []

        run(scenario())

    def test_dedupe_key_is_kept_with_the_message_and_refuses_a_second(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                first, second, other_channel = message(1), message(2), message(3)
                other_channel.channel = "other"
                await store.add_message(first, dedupe_key="po.x12|120|1700000000|ab12")
                with pytest.raises(DuplicateMessage) as refused:
                    await store.add_message(second, dedupe_key="po.x12|120|1700000000|ab12")
                await store.add_message(other_channel, dedupe_key="po.x12|120|1700000000|ab12")
                found = await store.get(second.id)
            # the refused message left nothing behind; the key is per channel
            assert refused.value.message_id == first.id
            assert found is None

        run(scenario())

    def test_values_are_committed_with_the_message(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                first = message(1)
                await store.add_message(first, values={"business-key:c:K1": "first"})
                await store.add_message(message(2), dedupe_key="d", values={"x": "1"})
                with pytest.raises(DuplicateMessage):  # a refused add writes none of its values
                    await store.add_message(message(3), dedupe_key="d", values={"business-key:c:K1": "lost"})
                found = await store.get_values("business-key:")
                none = await store.get_values("x")
            assert found == {"business-key:c:K1": "first"}
            assert none == {"x": "1"}

        run(scenario())

    def test_dedupe_key_survives_reopen(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                first = message(1)
                await store.add_message(first, dedupe_key="k1")
            async with store_factory() as store:
                with pytest.raises(DuplicateMessage):
                    await store.add_message(message(2), dedupe_key="k1")
                await store.add_message(message(3), dedupe_key="k2")

        run(scenario())

    def test_concurrent_adds_are_durable(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            msgs = [message(i) for i in range(300)]
            async with store_factory() as store:
                seqs = await asyncio.gather(*(store.add_message(m) for m in msgs))
            assert len(set(seqs)) == len(msgs)
            async with store_factory() as store:  # a new store on the same database
                found = await store.search(MessageQuery(channel=CHANNEL, limit=1000))
                one = await store.get(msgs[150].id)
            assert {s.id for s in found} == {m.id for m in msgs}
            assert {s.seq for s in found} == set(seqs)
            assert one is not None
            assert one.contents[(0, "raw")] == msgs[150].raw

        run(scenario())

    def test_failing_write_does_not_lose_its_batch(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            first = message(0)
            others = [message(i) for i in range(1, 41)]
            async with store_factory() as store:
                await store.add_message(first)
                duplicate = message(99, id=first.id)
                unknown = ProcessResult(message_id="0" * 26, run=1, status=Status.FILTERED)
                writes: list[Coroutine[Any, Any, Any]] = [store.add_message(m) for m in others[:20]]
                writes += [store.add_message(duplicate), store.record_result(unknown)]
                writes += [store.add_message(m) for m in others[20:]]
                results = await asyncio.gather(*writes, return_exceptions=True)
            assert isinstance(results[20], ValueError)
            assert isinstance(results[21], LookupError)
            assert all(isinstance(r, int) for r in results[:20] + results[22:])
            async with store_factory() as store:
                found = await store.search(MessageQuery(channel=CHANNEL, limit=1000))
                kept = await store.get(first.id)
            assert {s.id for s in found} == {m.id for m in [first, *others]}
            assert kept is not None
            assert kept.contents[(0, "raw")] == first.raw

        run(scenario())

    def test_record_result_keeps_stages_routes_and_response(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                msg = (await accept(store, 1))[0]
                result = ProcessResult(
                    message_id=msg.id,
                    run=1,
                    status=Status.TRANSFORMED,
                    stages={"transformed": b"{}"},
                    routes=[route("out"), route("skip", status=Status.FILTERED)],
                    response=b"MSA|AA",
                )
                await store.record_result(result)
                detail = await store.get(msg.id)
                skipped = await claim(store, now=time.time(), destination="skip")
            assert detail is not None
            assert detail.summary.status == Status.TRANSFORMED
            assert detail.contents[(1, "transformed")] == b"{}"
            assert detail.contents[(1, "response")] == b"MSA|AA"
            assert detail.summary.destinations == {"out": Status.QUEUED, "skip": Status.FILTERED}
            states = {d.destination: d for d in detail.destinations}
            assert (states["out"].run, states["out"].attempts, states["out"].last_error) == (1, 0, "")
            assert states["skip"].status == Status.FILTERED
            assert skipped == []

        run(scenario())

    def test_add_with_its_first_result_equals_add_then_record(self, store_factory: StoreFactory) -> None:
        # A message processed before it is stored: one write must leave what add_message
        # followed by record_result leaves (status, stages, response, rows, counters, claims).
        def first_run(msg: InboundMessage) -> ProcessResult:
            return ProcessResult(
                message_id=msg.id,
                run=1,
                status=Status.TRANSFORMED,
                stages={"transformed": b"T" + msg.raw[:8]},
                routes=[route(), route("skip", status=Status.FILTERED)],
                response=b"MSA|AA",
            )

        async def scenario() -> None:
            async with store_factory() as store:
                one, two, three = message(1), message(2), message(3)
                one.seq = await store.add_message(one)
                await store.record_result(first_run(one))
                two.seq = await store.add_message(two, result=first_run(two))
                three.seq = await store.add_message(three, dedupe_key="f3", result=first_run(three))
                with pytest.raises(DuplicateMessage):  # the key still guards the combined write
                    await store.add_message(message(4), dedupe_key="f3", result=first_run(message(4)))
                with pytest.raises(ValueError, match="first run"):  # a result must be the message's own
                    await store.add_message(message(5), result=first_run(message(6)))
                details = [await store.get(m.id) for m in (one, two, three)]
                counters = await store.counters(CHANNEL)
                unprocessed = await store.unprocessed(CHANNEL)
                entries = await claim(store, now=time.time())
            assert None not in details
            seen = [
                (d.summary.status, d.contents, d.summary.destinations, [(x.run, x.attempts) for x in d.destinations])
                for d in details
                if d is not None
            ]
            assert seen[1][0] == seen[0][0] == Status.TRANSFORMED
            assert seen[1][1] == {
                (0, "raw"): two.raw,
                (1, "transformed"): b"T" + two.raw[:8],
                (1, "response"): b"MSA|AA",
            }
            assert [s[2:] for s in seen] == [seen[0][2:]] * 3
            assert counters[Status.TRANSFORMED] == 3 and counters.get(Status.RECEIVED, 0) == 0
            assert (counters[f"dest:{DEST}:QUEUED"], counters["dest:skip:FILTERED"]) == (3, 3)
            assert unprocessed == []  # nothing left for recovery to process again
            assert [e.message_id for e in entries] == [one.id, two.id, three.id]

        run(scenario())

    def test_record_result_for_unknown_message_fails(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                with pytest.raises(LookupError):
                    await store.record_result(ProcessResult(message_id="0" * 26, run=1, status=Status.FILTERED))

        run(scenario())

    # -- queue --------------------------------------------------------------------------------

    def test_claim_in_seq_order_with_message_fields(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                msgs = await accept(store, 5)
                for msg in reversed(msgs):  # processing order must not change delivery order
                    await transform(store, msg)
                entries = await claim(store, now=time.time())
            assert [e.message_id for e in entries] == [m.id for m in msgs]
            assert [e.seq for e in entries] == [m.seq for m in msgs]
            assert sorted({m.seq for m in msgs}) == [m.seq for m in msgs]  # distinct, ascending
            head, msg = entries[0], msgs[0]
            assert (head.channel, head.destination, head.partition, head.run, head.attempts) == (CHANNEL, DEST, 0, 1, 0)
            assert (head.content, head.content_type) == (b"OUT", "text/plain")
            assert (head.correlation_id, head.control_id, head.source) == (msg.correlation_id, "CTRL0", msg.source)

        run(scenario())

    def test_claim_respects_partitions_and_limit(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                msgs = await accept(store, 6)
                for i, msg in enumerate(msgs):
                    await transform(store, msg, route(partition=i % 2))
                odd = await claim(store, now=now, partition=1)
                first_two = await claim(store, now=now, limit=2)
                rest = await claim(store, now=now, owner="w2")
                none = await claim(store, now=now, partition=7)
            assert [e.message_id for e in odd] == [msgs[1].id, msgs[3].id, msgs[5].id]
            assert {e.partition for e in odd} == {1}
            assert [e.message_id for e in first_two] == [msgs[0].id, msgs[2].id]
            assert [e.message_id for e in rest] == [msgs[4].id]
            assert none == []

        run(scenario())

    def test_leases_block_a_second_claim_until_expiry(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                msgs = await queued(store, 3)
                first = await claim(store, now=now, owner="w1")
                second = await claim(store, now=now + LEASE_SECS - 1, owner="w2")
                expired = await claim(store, now=now + LEASE_SECS + 1, owner="w2")
            assert [e.message_id for e in first] == [m.id for m in msgs]
            assert second == []
            assert [e.message_id for e in expired] == [m.id for m in msgs]

        run(scenario())

    def test_fifo_claim_stops_at_a_retry_not_due(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                msgs = await queued(store, 3)
                entries = await claim(store, now=now)
                await store.finish([outcome(entries[0], Status.QUEUED, now, error="timeout", retry_at=now + 30)])
                await store.release(entries[1:])
                blocked = await claim(store, now=now + 1)
                due = await claim(store, now=now + 31)
            assert blocked == []
            assert [e.message_id for e in due] == [m.id for m in msgs]
            assert [e.attempts for e in due] == [1, 0, 0]

        run(scenario())

    def test_release_returns_rows_without_an_attempt(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                msgs = await queued(store, 3)
                entries = await claim(store, now=now)
                await store.release(entries[1:])
                again = await claim(store, now=now, owner="w2")
                detail = await store.get(msgs[1].id)
            assert [e.message_id for e in again] == [msgs[1].id, msgs[2].id]
            assert [e.attempts for e in again] == [0, 0]
            assert detail is not None
            assert detail.attempts == []

        run(scenario())

    def test_finish_updates_rows_and_logs_attempts(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                sent, retry, failed = await queued(store, 3)
                e1, e2, e3 = await claim(store, now=now)
                await store.finish(
                    [
                        outcome(e1, Status.SENT, now, status_code=200, response=b"OK"),
                        outcome(e2, Status.QUEUED, now, error="connection refused", retry_at=now + 60),
                        outcome(
                            e3,
                            Status.ERROR,
                            now,
                            error="HTTP 400",
                            status_code=400,
                            response=b"NO",
                            keep_response=False,
                        ),
                    ]
                )
                waiting = await claim(store, now=now + 1)
                (again,) = await claim(store, now=now + 61)
                await store.finish([outcome(again, Status.SENT, now + 61, status_code=201)])
                details = [await store.get(m.id) for m in (sent, retry, failed)]
            assert waiting == []
            assert again.message_id == retry.id
            assert again.attempts == 1
            d1, d2, d3 = details
            assert d1 is not None
            assert d2 is not None
            assert d3 is not None
            state1, state2, state3 = d1.destinations[0], d2.destinations[0], d3.destinations[0]
            assert (state1.status, state1.attempts, state1.status_code) == (Status.SENT, 1, 200)
            assert d1.contents[(1, f"response:{DEST}")] == b"OK"
            assert [(a.attempt, a.status, a.status_code) for a in d1.attempts] == [(1, Status.SENT, 200)]
            assert d1.attempts[0].started_at == pytest.approx(now, abs=1e-3)
            assert d1.attempts[0].destination == DEST
            assert (state2.status, state2.attempts, state2.next_attempt_at) == (Status.SENT, 2, None)
            assert [(a.attempt, a.status, a.error) for a in d2.attempts] == [
                (1, Status.QUEUED, "connection refused"),
                (2, Status.SENT, ""),
            ]
            assert (state3.status, state3.attempts, state3.last_error, state3.status_code) == (
                Status.ERROR,
                1,
                "HTTP 400",
                400,
            )
            assert (1, f"response:{DEST}") not in d3.contents
            assert d1.summary.destinations == {DEST: Status.SENT}

        run(scenario())

    def test_finish_remembers_the_retry_time(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                (msg,) = await queued(store, 1)
                (entry,) = await claim(store, now=now)
                await store.finish([outcome(entry, Status.QUEUED, now, error="503", status_code=503, retry_at=now + 5)])
                detail = await store.get(msg.id)
            assert detail is not None
            state = detail.destinations[0]
            assert (state.status, state.attempts, state.last_error, state.status_code) == (Status.QUEUED, 1, "503", 503)
            assert state.next_attempt_at == pytest.approx(now + 5, abs=1e-3)

        run(scenario())

    def test_finish_for_unknown_row_fails(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                (msg,) = await accept(store, 1)
                ghost = DeliveryOutcome(msg.id, 1, "nowhere", Status.SENT, started_at=1.0, finished_at=2.0)
                with pytest.raises(LookupError):
                    await store.finish([ghost])

        run(scenario())

    def test_a_failing_write_changes_nothing(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                msg, other = await accept(store, 2)
                twice = ProcessResult(msg.id, 1, Status.TRANSFORMED, stages={"t": b"x"}, routes=[route(), route()])
                with pytest.raises(ValueError):  # noqa: PT011 - one row per message, run and destination
                    await store.record_result(twice)
                untouched = await store.get(msg.id)
                await transform(store, other)
                (entry,) = await claim(store, now=now)
                ghost = DeliveryOutcome(msg.id, 1, DEST, Status.SENT, started_at=now, finished_at=now)
                with pytest.raises(LookupError):
                    await store.finish([outcome(entry, Status.SENT, now), ghost])
                still_claimed = await store.get(other.id)
            assert untouched is not None
            assert (untouched.summary.status, untouched.destinations) == (Status.RECEIVED, [])
            assert untouched.contents == {(0, "raw"): msg.raw}
            assert still_claimed is not None
            assert [(d.status, d.attempts) for d in still_claimed.destinations] == [(Status.QUEUED, 0)]
            assert still_claimed.attempts == []

        run(scenario())

    def test_next_retry_at_follows_the_head_of_the_partition(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                empty = await store.next_retry_at(CHANNEL, DEST, 0)
                await queued(store, 1)
                before = time.time()
                ready = await store.next_retry_at(CHANNEL, DEST, 0)
                (entry,) = await claim(store, now=before)
                await store.finish([outcome(entry, Status.QUEUED, before, retry_at=before + 50)])
                await queued(store, 1)  # behind the head: cannot overtake it, so not "now"
                waiting = await store.next_retry_at(CHANNEL, DEST, 0)
                entries = await claim(store, now=before + 51)
                await store.finish([outcome(e, Status.SENT, before + 51) for e in entries])
                done = await store.next_retry_at(CHANNEL, DEST, 0)
            assert empty is None
            assert ready is not None
            assert ready <= time.time()
            assert waiting == pytest.approx(before + 50, abs=1e-3)
            assert len(entries) == 2
            assert done is None

        run(scenario())

    def test_oldest_queued_is_the_longest_waiting_row_of_the_destination(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                empty = await store.oldest_queued(CHANNEL, DEST)
                first, second = await accept(store, 2)
                await accept(store, 1, channel="other-in", start=10)
                await transform(store, first, route(partition=1))
                await asyncio.sleep(0.02)  # distinct queue times
                await transform(store, second, route(partition=0), route("elsewhere"))
                created = {}
                for msg in (first, second):
                    detail = await store.get(msg.id)
                    assert detail is not None
                    created[msg.id] = next(d.created_at for d in detail.destinations if d.destination == DEST)
                oldest = await store.oldest_queued(CHANNEL, DEST)
                now = time.time()
                leased = await claim(store, now=now, partition=1)
                while_leased = await store.oldest_queued(CHANNEL, DEST)
                await store.finish([outcome(e, Status.SENT, now) for e in leased])
                after_sent = await store.oldest_queued(CHANNEL, DEST)
                (head,) = await claim(store, now=now, partition=0)
                await store.finish([outcome(head, Status.QUEUED, now, retry_at=now + 60)])
                retrying = await store.oldest_queued(CHANNEL, DEST)
                (head,) = await claim(store, now=now + 61, partition=0)
                await store.finish([outcome(head, Status.ERROR, now + 61, error="gave up")])
                gone = await store.oldest_queued(CHANNEL, DEST)
                elsewhere = await store.oldest_queued(CHANNEL, "elsewhere")
                other_channel = await store.oldest_queued("other-in", DEST)
            assert empty is None
            assert created[first.id] < created[second.id]
            assert oldest == pytest.approx(created[first.id], abs=1e-3)  # across partitions
            assert while_leased == pytest.approx(created[first.id], abs=1e-3)  # a claim is still waiting
            assert after_sent == pytest.approx(created[second.id], abs=1e-3)
            assert retrying == pytest.approx(created[second.id], abs=1e-3)  # a retry keeps its queue time
            assert gone is None  # ERROR no longer waits
            assert elsewhere == pytest.approx(created[second.id], abs=1e-3)
            assert other_channel is None

        run(scenario())

    def test_reset_leases(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                await queued(store, 3)
                first = await claim(store, now=now)
                released = await store.reset_leases()
                again = await claim(store, now=now, owner="w2")
                held_again = await store.reset_leases()
                nothing_held = await store.reset_leases()
            assert len(first) == 3
            assert released == 3
            assert [e.message_id for e in again] == [e.message_id for e in first]
            assert (held_again, nothing_held) == (3, 0)

        run(scenario())

    # -- recovery and reprocessing ------------------------------------------------------------

    def test_unprocessed_after_restart(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                msgs = await accept(store, 4)
                await accept(store, 1, channel="other-in", start=10)
                await transform(store, msgs[1])
            async with store_factory() as store:  # as after a crash: nothing was processed
                pending = await store.unprocessed(CHANNEL)
                page = await store.unprocessed(CHANNEL, limit=2)
                rest = await store.unprocessed(CHANNEL, after_seq=page[-1].seq)
            expected = [msgs[0], msgs[2], msgs[3]]
            assert [m.id for m in pending] == [m.id for m in expected]
            assert [(m.raw, m.run, m.seq, m.source) for m in pending] == [(m.raw, 1, m.seq, m.source) for m in expected]
            assert [m.channel for m in pending] == [CHANNEL] * 3
            assert pending[0].correlation_id == msgs[0].correlation_id
            assert [m.id for m in page] == [msgs[0].id, msgs[2].id]
            assert [m.id for m in rest] == [msgs[3].id]

        run(scenario())

    def test_begin_reprocess_starts_a_new_run_and_keeps_history(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                (msg,) = await queued(store, 1)
                (entry,) = await claim(store, now=now)
                await store.finish([outcome(entry, Status.SENT, now, status_code=200)])
                again = await store.begin_reprocess(msg.id)
                reopened = await store.get(msg.id)
                pending = await store.unprocessed(CHANNEL)
                await transform(store, msg, route(), run_no=2)
                (second,) = await claim(store, now=now + 1)
                detail = await store.get(msg.id)
                unknown = await store.begin_reprocess("0" * 26)
                sent = await store.search(MessageQuery(channel=CHANNEL, status=Status.SENT))
            assert again is not None
            assert (again.id, again.run, again.raw, again.seq, again.channel) == (msg.id, 2, msg.raw, msg.seq, CHANNEL)
            assert reopened is not None
            assert (reopened.summary.status, reopened.summary.run, reopened.summary.error) == (Status.RECEIVED, 2, "")
            assert [(m.id, m.run) for m in pending] == [(msg.id, 2)]
            assert second.run == 2
            assert second.attempts == 0
            assert detail is not None
            assert {(1, "transformed"), (2, "transformed"), (0, "raw")} <= set(detail.contents)
            assert [(d.run, d.status) for d in detail.destinations] == [(1, Status.SENT), (2, Status.QUEUED)]
            assert [(a.run, a.status) for a in detail.attempts] == [(1, Status.SENT)]
            assert detail.summary.destinations == {DEST: Status.QUEUED}
            assert unknown is None
            assert sent == []  # only the latest run's destination statuses match a search

        run(scenario())

    # -- search and counters ------------------------------------------------------------------

    def test_search_filters_and_paging(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                msgs = [message(i, received_at=1000.0 * (i + 1), correlation_id=f"c{i % 2}") for i in range(5)]
                for msg in msgs:
                    await store.add_message(msg)
                await store.add_message(message(9, channel="other-in"))
                await transform(store, msgs[1])
                await transform(store, msgs[2])
                (entry, _) = await claim(store, now=now)
                await store.finish([outcome(entry, Status.ERROR, now, error="HTTP 400")])

                async def ids(**kw: Any) -> list[str]:
                    return [s.id for s in await store.search(MessageQuery(**kw))]

                newest_first = await ids(channel=CHANNEL)
                everything = await ids()
                page1 = await store.search(MessageQuery(channel=CHANNEL, limit=2))
                page2 = await ids(channel=CHANNEL, limit=2, before_seq=page1[-1].seq)
                window = await ids(channel=CHANNEL, since=2000.0, until=4000.0)
                by_control = await ids(control_id="CTRL3")
                by_correlation = await ids(channel=CHANNEL, correlation_id="c1")
                received = await ids(channel=CHANNEL, status=Status.RECEIVED)
                failed = await ids(status=Status.ERROR)
                queued_ = await ids(status=Status.QUEUED)
                summaries = await store.search(MessageQuery(channel=CHANNEL, control_id="CTRL1"))
            m = [x.id for x in msgs]
            assert newest_first == m[::-1]
            assert len(everything) == 6
            assert [s.id for s in page1] == [m[4], m[3]]
            assert page2 == [m[2], m[1]]
            assert window == [m[2], m[1]]
            assert by_control == [m[3]]
            assert by_correlation == [m[3], m[1]]
            assert received == [m[4], m[3], m[0]]
            assert failed == [m[1]]  # the message is TRANSFORMED; its destination row is ERROR
            assert queued_ == [m[2]]
            assert summaries[0].destinations == {DEST: Status.ERROR}
            assert summaries[0].status == Status.TRANSFORMED

        run(scenario())

    def test_counters_by_status_and_destination(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                msgs = await accept(store, 4)
                await accept(store, 2, channel="other-in", start=10)
                for msg in msgs[:3]:
                    await transform(store, msg, route(), route("audit", status=Status.FILTERED))
                e1, _e2, _e3 = await claim(store, now=now)
                await store.finish([outcome(e1, Status.SENT, now)])
                before = await store.counters(CHANNEL)
                other = await store.counters("other-in")
                await store.begin_reprocess(msgs[0].id)
                reprocessing = await store.counters(CHANNEL)
                await transform(store, msgs[0], route(), run_no=2)
                after = await store.counters(CHANNEL)
            assert (before[Status.RECEIVED], before[Status.TRANSFORMED], before[Status.ERROR]) == (1, 3, 0)
            assert before[f"dest:{DEST}:QUEUED"] == 2
            assert before[f"dest:{DEST}:SENT"] == 1
            assert before["dest:audit:FILTERED"] == 3
            assert other[Status.RECEIVED] == 2
            assert other.get(f"dest:{DEST}:QUEUED", 0) == 0
            assert (reprocessing[Status.RECEIVED], reprocessing[Status.TRANSFORMED]) == (2, 2)
            assert reprocessing.get(f"dest:{DEST}:SENT", 0) == 0  # run 1's rows are history now
            assert reprocessing["dest:audit:FILTERED"] == 2
            assert after[f"dest:{DEST}:QUEUED"] == 3
            assert after[Status.TRANSFORMED] == 3

        run(scenario())

    def test_prune_content_keeps_metadata(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                (msg,) = await queued(store, 1)
                await store.prune_content(msg.id)
                detail = await store.get(msg.id)
                (entry,) = await claim(store, now=now)
            assert detail is not None
            assert detail.contents == {}
            assert detail.summary.status == Status.TRANSFORMED
            assert [d.status for d in detail.destinations] == [Status.QUEUED]
            assert entry.content == b""

        run(scenario())

    def test_record_results_in_one_write_spares_the_others(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                msgs = await accept(store, 3)
                results = [
                    ProcessResult(m.id, 1, Status.TRANSFORMED, stages={"transformed": b"T"}, routes=[route()])
                    for m in msgs
                ]
                results.insert(1, ProcessResult("no-such-message", 1, Status.TRANSFORMED, routes=[route()]))
                failures = await store.record_results(results)
                entries = await claim(store, now=time.time())
            assert [f is None for f in failures] == [True, False, True, True]
            assert isinstance(failures[1], LookupError)
            assert [e.message_id for e in entries] == [m.id for m in msgs]

        run(scenario())

    def test_prune_only_if_finished_keeps_what_may_be_reprocessed(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                sent, failed, waiting = await queued(store, 3)
                entries = {e.message_id: e for e in await claim(store, now=now)}
                await store.finish(
                    [outcome(entries[sent.id], Status.SENT, now), outcome(entries[failed.id], Status.ERROR, now)]
                )
                await store.release([entries[waiting.id]])
                dropped = [await store.prune_content(m.id, only_if_finished=True) for m in (sent, failed, waiting)]
                details = [await store.get(m.id) for m in (sent, failed, waiting)]
            assert dropped == [True, False, False]
            assert [bool(d and d.contents) for d in details] == [False, True, True]

        run(scenario())

    def test_reprocess_supersedes_deliveries_still_waiting(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            now = time.time()
            async with store_factory() as store:
                (msg,) = await queued(store, 1)
                again = await store.begin_reprocess(msg.id)
                assert again is not None
                await transform(store, again, route(), run_no=2)
                entries = await claim(store, now=now)
                detail = await store.get(msg.id)
                counters = await store.counters(CHANNEL)
            assert [(e.message_id, e.run) for e in entries] == [(msg.id, 2)]
            assert detail is not None
            old = [d for d in detail.destinations if d.run == 1]
            assert [d.status for d in old] == [Status.ERROR]
            assert "superseded" in old[0].last_error
            assert counters[f"dest:{DEST}:QUEUED"] == 1
            assert counters.get(f"dest:{DEST}:ERROR", 0) == 0  # counters follow the latest run

        run(scenario())

    def test_values_survive_a_restart_and_are_found_by_prefix(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                await store.put_value("table:item_master", '{"version": "a1"}')
                await store.put_value("table:location", '{"version": "b2"}')
                await store.put_value("control:ACME:ISA13", "41")
                await store.put_value("table:item_master", '{"version": "a2"}')
            async with store_factory() as store:
                tables = await store.get_values("table:")
                control = await store.get_values("control:")
            assert tables == {"table:item_master": '{"version": "a2"}', "table:location": '{"version": "b2"}'}
            assert control == {"control:ACME:ISA13": "41"}

        run(scenario())

    # -- retention ------------------------------------------------------------------------------

    async def _lifecycle(self, store: MessageStore) -> dict[str, InboundMessage]:
        """One message in each state retention tells apart (all received now)."""
        now = time.time()
        msgs = dict(
            zip(
                ["sent", "filtered", "waiting", "received", "error", "dest_error", "new"],
                await accept(store, 6),
                strict=False,
            )
        )
        new = message(99, received_at=now + 3600)  # received after the cut-off
        new.seq = await store.add_message(new)
        msgs["new"] = new
        await transform(store, msgs["sent"])
        await transform(store, msgs["waiting"])
        await transform(store, msgs["dest_error"])
        await transform(store, new)
        await store.record_result(ProcessResult(msgs["filtered"].id, 1, Status.FILTERED))
        await store.record_result(ProcessResult(msgs["error"].id, 1, Status.ERROR, error="parse: bad"))
        by_id = {e.message_id: e for e in await claim(store, now=now)}
        await store.finish(
            [
                outcome(by_id[msgs["sent"].id], Status.SENT, now),
                outcome(by_id[msgs["dest_error"].id], Status.ERROR, now, error="gave up"),
                outcome(by_id[new.id], Status.SENT, now),
            ]
        )
        await store.release([by_id[msgs["waiting"].id]])
        return msgs

    async def _prune_all(self, store: MessageStore, before: float, *, keep_errors: bool, content_only: bool) -> int:
        page = await store.prunable(CHANNEL, before=before, keep_errors=keep_errors, with_content=content_only)
        return await store.prune(
            CHANNEL, [seq for _, seq in page], before=before, keep_errors=keep_errors, content_only=content_only
        )

    def test_prune_removes_finished_messages_only(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                msgs = await self._lifecycle(store)
                other = message(7, channel="other-in")
                await store.add_message(other)
                await store.record_result(ProcessResult(other.id, 1, Status.FILTERED))
                before = time.time() + 60  # everything but "new" is old enough
                removed = await self._prune_all(store, before, keep_errors=True, content_only=False)
                left = {s.id for s in await store.search(MessageQuery(channel=CHANNEL))}
                counters = await store.counters(CHANNEL)
                gone = await store.get(msgs["sent"].id)
                other_left = await store.search(MessageQuery(channel="other-in"))
            assert removed == 2
            assert gone is None
            names = {m.id: name for name, m in msgs.items()}
            assert sorted(names[i] for i in left) == ["dest_error", "error", "new", "received", "waiting"]
            assert [s.id for s in other_left] == [other.id]  # another channel is not touched
            # the counters follow the rows that are left (a count may stay behind at zero)
            assert {key: n for key, n in counters.items() if n} == {
                "RECEIVED": 1,
                "TRANSFORMED": 3,
                "ERROR": 1,
                f"dest:{DEST}:QUEUED": 1,
                f"dest:{DEST}:ERROR": 1,
                f"dest:{DEST}:SENT": 1,
            }

        run(scenario())

    def test_prune_without_keep_errors_also_removes_errors_but_never_waiting_work(
        self, store_factory: StoreFactory
    ) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                msgs = await self._lifecycle(store)
                removed = await self._prune_all(store, time.time() + 60, keep_errors=False, content_only=False)
                left = {s.id for s in await store.search(MessageQuery(channel=CHANNEL))}
            names = {m.id: name for name, m in msgs.items()}
            assert removed == 4
            assert sorted(names[i] for i in left) == ["new", "received", "waiting"]

        run(scenario())

    def test_prune_content_only_keeps_searchable_metadata(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                msgs = await self._lifecycle(store)
                before = time.time() + 60
                removed = await self._prune_all(store, before, keep_errors=True, content_only=True)
                again = await store.prunable(CHANNEL, before=before, keep_errors=True, with_content=True)
                detail = await store.get(msgs["sent"].id)
                kept = await store.get(msgs["waiting"].id)
                with pytest.raises(ValueError, match="pruned"):
                    await store.begin_reprocess(msgs["sent"].id)
            assert removed == 2
            assert again == []  # nothing left to drop
            assert detail is not None and detail.contents == {}
            assert [(d.status, d.attempts) for d in detail.destinations] == [(Status.SENT, 1)]
            assert len(detail.attempts) == 1
            assert kept is not None and (0, "raw") in kept.contents

        run(scenario())

    def test_prune_checks_again_in_the_write(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                msgs = await self._lifecycle(store)
                before = time.time() + 60
                page = await store.prunable(CHANNEL, before=before, keep_errors=True, with_content=False)
                # reprocessed after the read: a new run, RECEIVED again
                await store.begin_reprocess(msgs["sent"].id)
                removed = await store.prune(
                    CHANNEL, [seq for _, seq in page], before=before, keep_errors=True, content_only=False
                )
                kept = await store.get(msgs["sent"].id)
            assert sorted(seq for _, seq in page) == sorted([msgs["sent"].seq, msgs["filtered"].seq])
            assert removed == 1
            assert kept is not None and kept.summary.status == Status.RECEIVED

        run(scenario())

    def test_prunable_pages_in_receipt_order(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                msgs = [message(i, received_at=1000.0 + i % 3) for i in range(7)]
                for msg in msgs:
                    msg.seq = await store.add_message(msg)
                    await store.record_result(ProcessResult(msg.id, 1, Status.FILTERED))
                seen: list[tuple[float, int]] = []
                after = (0.0, 0)
                while page := await store.prunable(
                    CHANNEL, before=time.time() + 60, keep_errors=True, with_content=False, after=after, limit=3
                ):
                    seen.extend(page)
                    after = page[-1]
            assert seen == sorted((m.received_at, m.seq) for m in msgs)

        run(scenario())

    def test_values_page_finds_orphans_and_delete_values_spares_newer_ones(self, store_factory: StoreFactory) -> None:
        async def scenario() -> None:
            async with store_factory() as store:
                alive, gone = message(1), message(2)
                await store.add_message(alive, dedupe_key="file-a")
                await store.add_message(gone, dedupe_key="file-b")
                await store.record_result(ProcessResult(gone.id, 1, Status.FILTERED))
                await self._prune_all(store, time.time() + 60, keep_errors=True, content_only=False)
                prefix = f"dedupe:{CHANNEL}:"
                everything = await store.values_page(prefix)
                orphans = await store.values_page(prefix, orphaned=True)
                await store.put_value("business-key:x:1", "new")
                stale = await store.delete_values([("business-key:x:1", "old")])
                dropped = await store.delete_values(orphans)
                left = await store.get_values(prefix)
                business = await store.get_values("business-key:")
            assert sorted(everything) == [(prefix + "file-a", alive.id), (prefix + "file-b", gone.id)]
            assert orphans == [(prefix + "file-b", gone.id)]
            assert (stale, dropped) == (0, 1)
            assert left == {prefix + "file-a": alive.id}
            assert business == {"business-key:x:1": "new"}

        run(scenario())
