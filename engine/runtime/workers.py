"""Destination queue workers: claim in order, send, classify, retry with backoff.

One worker per (destination, partition). A partition is FIFO: when the head message
fails with a retryable error, the worker gives back the rest of its claim and waits,
so nothing overtakes it. Different destinations never wait for each other.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from engine.core.channel import DestinationConfig
from engine.core.contracts import Destination
from engine.core.errors import PermanentError, RetryableError
from engine.core.logs import BoundLogger
from engine.core.message import Outbound, SendResult, Status
from engine.core.store import DeliveryOutcome, MessageStore, QueueEntry

CLAIM_LIMIT = 64
IDLE_POLL_SECS = 5.0
GATHER_SECS = 0.01


class DestinationWorker:
    def __init__(
        self,
        *,
        channel: str,
        config: DestinationConfig,
        destination: Destination,
        partition: int,
        store: MessageStore,
        owner: str,
        log: BoundLogger,
        keep_responses: bool,
        on_finished: Callable[[list[DeliveryOutcome]], Awaitable[None]] | None = None,
    ) -> None:
        self.channel = channel
        self.config = config
        self.destination = destination
        self.partition = partition
        self.store = store
        self.owner = owner
        self.log = log.bind(destination=config.name, partition=partition)
        self.keep_responses = keep_responses
        self.on_finished = on_finished
        self.wake = asyncio.Event()
        self.running = asyncio.Event()
        self.running.set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._claimed = 0  # rows the current round claimed
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(
            self._loop(), name=f"worker:{self.channel}:{self.config.name}:{self.partition}"
        )

    async def stop(self) -> None:
        self._stopping = True
        self.wake.set()
        self.running.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def pause(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()
        self.wake.set()

    async def _loop(self) -> None:
        while not self._stopping:
            await self.running.wait()
            if self._stopping:
                break
            self.wake.clear()
            self._claimed = 0
            try:
                worked = await self._round()
            except Exception:
                self.log.exception("Destination worker round failed; retrying shortly.")
                worked = False
                await asyncio.sleep(1.0)
            if not worked:
                await self._idle()
            elif self._claimed < CLAIM_LIMIT and not self._stopping:
                # Keeping up: let the next round gather a few ms of arrivals rather than claim
                # each message as it comes (a round costs two commits and a filesystem sync
                # however few messages it carries). Behind a backlog, claim again at once.
                await asyncio.sleep(GATHER_SECS)

    async def _idle(self) -> None:
        try:
            due = await self.store.next_retry_at(self.channel, self.config.name, self.partition)
        except Exception:  # a read failure must not end the worker; poll again later
            self.log.exception("Destination worker could not read its next retry time; polling.")
            due = None
        wait = IDLE_POLL_SECS if due is None else min(IDLE_POLL_SECS, max(due - time.time(), 0.005))
        try:
            await asyncio.wait_for(self.wake.wait(), timeout=wait)
        except TimeoutError:
            return
        # Woken by new work: let a few ms of it gather so one claim and one finish cover it.
        await asyncio.sleep(GATHER_SECS)

    async def _round(self) -> bool:
        entries = await self.store.claim(
            self.channel,
            self.config.name,
            self.partition,
            self.owner,
            limit=CLAIM_LIMIT,
            lease_secs=self.config.lease_secs,
            now=time.time(),
        )
        self._claimed = len(entries)
        if not entries:
            return False
        if hasattr(self.destination, "send_batch") and self.running.is_set() and not self._stopping:
            outcomes = await self._attempt_batch(entries)
            if (outcomes and outcomes[-1].status == Status.QUEUED) or len(outcomes) < len(entries):
                await self.store.release(entries[len(outcomes) :])
            return await self._record(outcomes)
        outcomes: list[DeliveryOutcome] = []
        for index, entry in enumerate(entries):
            if self._stopping or not self.running.is_set():
                await self.store.release(entries[index:])
                break
            outcome = await self.attempt(entry)
            outcomes.append(outcome)
            if outcome.status == Status.QUEUED:  # FIFO: the head waits, nobody overtakes it
                await self.store.release(entries[index + 1 :])
                break
        return await self._record(outcomes)

    async def _record(self, outcomes: list[DeliveryOutcome]) -> bool:
        outcomes = await self._flush(outcomes)
        await self.store.finish(outcomes)
        if self.on_finished is not None:
            await self.on_finished(outcomes)
        return not any(o.status == Status.QUEUED for o in outcomes)

    async def _flush(self, outcomes: list[DeliveryOutcome]) -> list[DeliveryOutcome]:
        """Let the destination make its sends durable; if it cannot, they are retried."""
        flush = getattr(self.destination, "flush", None)
        if flush is None or not any(o.status == Status.SENT for o in outcomes):
            return outcomes
        try:
            await flush()
        except Exception as exc:  # noqa: BLE001 - unflushed sends are not SENT; retry them
            self.log.warning(
                "Destination could not make its deliveries durable; retrying them.", extra={"error": str(exc)[:300]}
            )
            retry_at = time.time() + self.config.retry.backoff_secs
            for outcome in outcomes:
                if outcome.status == Status.SENT:
                    outcome.status, outcome.retry_at, outcome.error = Status.QUEUED, retry_at, f"flush: {exc}"[:2000]
        return outcomes

    def _outbound(self, entry: QueueEntry) -> Outbound:
        return Outbound(
            message_id=entry.message_id,
            channel=self.channel,
            destination=self.config.name,
            correlation_id=entry.correlation_id,
            content=entry.content,
            content_type=entry.content_type,
            control_id=entry.control_id,
            attempt=entry.attempts + 1,
            source=entry.source,
        )

    async def attempt(self, entry: QueueEntry) -> DeliveryOutcome:
        """Try one delivery and classify the result (no store writes here)."""
        started = time.time()
        try:
            result: SendResult | Exception = await self.destination.send(self._outbound(entry))
        except Exception as exc:  # noqa: BLE001 - classified below; an unexpected bug is retried, not lost
            result = exc
        return self._classify(entry, started, result)

    async def _attempt_batch(self, entries: list[QueueEntry]) -> list[DeliveryOutcome]:
        """Destinations with ``send_batch`` take a whole claim in one call (one thread hop).

        The destination stops at the first failure and returns one result per item tried.
        """
        started = time.time()
        results = await self.destination.send_batch([self._outbound(e) for e in entries])  # type: ignore[attr-defined]
        return [self._classify(entry, started, result) for entry, result in zip(entries, results, strict=False)]

    def _classify(self, entry: QueueEntry, started: float, result: SendResult | Exception) -> DeliveryOutcome:
        base = {
            "message_id": entry.message_id,
            "run": entry.run,
            "destination": self.config.name,
            "received_at": entry.received_at,
        }
        attempt_no = entry.attempts + 1
        if isinstance(result, SendResult):
            self.sent += 1
            return DeliveryOutcome(
                **base,  # type: ignore[arg-type]
                status=Status.SENT,
                started_at=started,
                finished_at=time.time(),
                status_code=result.status_code,
                response=result.response,
                keep_response=self.keep_responses,
                response_type=result.content_type,
            )
        if isinstance(result, PermanentError):
            self.failed += 1
            self.log.warning(
                "Delivery failed permanently.", extra={"message_id": entry.message_id, "error": str(result)[:300]}
            )
            return DeliveryOutcome(
                **base,  # type: ignore[arg-type]
                status=Status.ERROR,
                started_at=started,
                finished_at=time.time(),
                error=str(result)[:2000],
                status_code=result.status_code,
                response=result.response,
                keep_response=self.keep_responses,
            )
        if not isinstance(result, RetryableError):
            result = RetryableError(f"unexpected {type(result).__name__}: {result}")
        return self._retry_or_give_up(entry, attempt_no, started, result, base)

    def _retry_or_give_up(
        self, entry: QueueEntry, attempt_no: int, started: float, exc: RetryableError, base: dict[str, object]
    ) -> DeliveryOutcome:
        policy = self.config.retry
        finished = time.time()
        if policy.gives_up(attempt_no):
            self.failed += 1
            self.log.warning(
                "Delivery gave up after the last attempt.",
                extra={"message_id": entry.message_id, "attempts": attempt_no, "error": str(exc)[:300]},
            )
            return DeliveryOutcome(
                **base,
                status=Status.ERROR,
                started_at=started,
                finished_at=finished,  # type: ignore[arg-type]
                error=str(exc)[:2000],
                status_code=exc.status_code,
                keep_response=self.keep_responses,
            )
        delay = max(policy.delay(attempt_no, self._rng), exc.retry_after_secs or 0.0)
        self.log.info(
            "Delivery failed; will retry.",
            extra={
                "message_id": entry.message_id,
                "attempts": attempt_no,
                "retry_in_secs": round(delay, 3),
                "error": str(exc)[:300],
            },
        )
        return DeliveryOutcome(
            **base,
            status=Status.QUEUED,
            started_at=started,
            finished_at=finished,  # type: ignore[arg-type]
            error=str(exc)[:2000],
            status_code=exc.status_code,
            retry_at=finished + delay,
            keep_response=self.keep_responses,
        )
