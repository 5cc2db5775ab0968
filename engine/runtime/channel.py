"""One deployed channel: its source, pipeline, processor and destination workers.

States: stopped, started, paused (the source listens and stores, processing and delivery
hold). ``undeployed`` is the engine's business: a ChannelRuntime exists only deployed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core import registry
from engine.core.channel import ChannelDef
from engine.core.contracts import Destination, Document, EngineServices, Outcome, Reply, Source, SubmitResult
from engine.core.errors import ConfigError, DuplicateMessage, ParseError, PermanentError
from engine.core.logs import BoundLogger, bind
from engine.core.message import InboundMessage, Outbound, Status, StorageMode, new_id
from engine.core.store import DeliveryOutcome, MessageStore, ProcessResult
from engine.runtime.alerts import ALERT_CHECK_SECS, AlertChange, QueueFigures, ThresholdAlerts
from engine.runtime.metrics import Metrics
from engine.runtime.pipeline import Pipeline, outcome_of
from engine.runtime.workers import DestinationWorker
from engine.store import StoreError

log = logging.getLogger("junction.channel")

QUEUE_MAX = 10_000
BATCH_MAX = 256
RECOVERY_PAGE = 500
GATHER_SECS = 0.01
# A recovery that meets a message whose intake has not yet handed it on waits for that
# intake this long per try, this many times, before it leaves the message to the next one.
INTAKE_SETTLE_SECS = 0.002
INTAKE_SETTLE_TRIES = 50
WAKE = None  # put in the processing queue to wake an idle processor for a recovery
IDLE_WAKE_SECS = 0.5  # an idle processor looks at its queue, its state and recovery this often
PROCESS_RETRY_SECS = 0.5  # after a failed processing step (the store did not answer), doubling
PROCESS_RETRY_MAX_SECS = 30.0
OFF_LOOP_BYTES = 256 * 1024  # parse/split bigger payloads in a thread (a 5 MB X12 file takes ~0.5 s)
DUPLICATE = "DUPLICATE"  # SubmitResult.status when a dedupe key was committed before


@dataclass
class Item:
    msg: InboundMessage
    doc: Document | None = None


@dataclass
class Stats:
    received: int = 0
    errors: int = 0
    processed: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=2048))


class ChannelRuntime:
    """Runs one channel. Built by the engine at deploy; ``start``/``stop``/``pause``/``resume``."""

    def __init__(
        self,
        channel: ChannelDef,
        store: MessageStore,
        base_dir: Path,
        owner: str,
        shared: dict[str, Any] | None = None,
        services: EngineServices | None = None,
        metrics: Metrics | None = None,
        *,
        alert_check_secs: float = ALERT_CHECK_SECS,
    ) -> None:
        """``alert_check_secs``: how often the thresholds of ``alerts.errors`` and
        ``alerts.queue`` are checked (the engine setting ``alerts.check_secs``)."""
        self.channel = channel
        self.services = services
        self.name = channel.name
        self.store = store
        self.base_dir = base_dir
        self.owner = owner
        self.debug = channel.debug
        self.log: BoundLogger = bind(log, channel=channel.name)
        self.state = "stopped"
        self.pipeline = Pipeline(channel, base_dir, shared)
        self._slow_parse = bool(getattr(self.pipeline.datatype, "parse_is_slow", False))
        self.ack_mode: str = getattr(channel.source, "ack_mode", "on_receipt")
        self.destinations: dict[str, Destination] = {}
        self.workers: dict[str, list[DestinationWorker]] = {}
        self.source: Source | None = None
        self.stats = Stats()
        self.metrics = metrics or Metrics()
        self._intake_seconds = self.metrics.intake.labels(channel=channel.name)
        self._delivery_seconds = {
            d.name: self.metrics.delivery.labels(channel=channel.name, destination=d.name) for d in channel.destinations
        }
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue(QUEUE_MAX)
        self._processor: asyncio.Task[None] | None = None
        self._running = asyncio.Event()
        self._waiters: dict[str, asyncio.Future[ProcessResult]] = {}
        self._first_sends: dict[tuple[str, str], asyncio.Future[DeliveryOutcome]] = {}
        self._replies: dict[str, dict[str, Reply]] = {}  # message id -> send_first destination -> answer
        self._inflight: set[str] = set()
        self._done_while_recovering: set[str] | None = None
        self._recover = True
        self._processing = False  # the processor holds messages taken from its queue
        self._held: list[Item] = []  # taken from the queue while a recovery was due
        self._unsettled: set[str] = set()  # awaited messages of a batch whose processing failed
        self.processing_problem: str | None = None  # why processing is failing, while it is
        self.alert_destination: Destination | None = None
        self._alerts: set[asyncio.Task[None]] = set()
        alerts = channel.alerts
        watched = alerts is not None and (alerts.errors is not None or alerts.queue is not None)
        self.thresholds = ThresholdAlerts(alerts) if alerts is not None and watched else None
        self.alert_check_secs = alert_check_secs
        self._monitor: asyncio.Task[None] | None = None
        self._alert_order = asyncio.Lock()  # raised and cleared reach the webhook in order

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Build destinations and the source (not started)."""
        for config in self.channel.destinations:
            dest = build_destination(
                config,
                channel=self.name,
                base_dir=self.base_dir,
                log=self.log,
                store=self.store,
                services=self.services,
            )
            await dest.open()
            self.destinations[config.name] = dest
            if dest.problem:
                self.log.warning(
                    "Destination is not usable; its queue is held.",
                    extra={"destination": config.name, "problem": dest.problem},
                )
        webhook = self.channel.alerts.webhook if self.channel.alerts else None
        if webhook is not None:
            self.alert_destination = build_destination(
                webhook, channel=self.name, base_dir=self.base_dir, log=self.log, store=self.store
            )
            await self.alert_destination.open()
        await self._partner_numbers()
        spec = registry.get("source", self.channel.source.type)
        self.source = spec.load_factory()(self.channel.source, self)

    async def _partner_numbers(self) -> None:
        """X12 acknowledgements to a known partner take ISA13/GS06 from that partner's counter."""
        datatype = self.pipeline.datatype
        folder = self.base_dir / "config" / "partners"
        if not hasattr(datatype, "control_numbers_for") or not folder.is_dir():
            return
        from engine.edi.control import ReservedNumbers
        from engine.edi.partners import load_partners

        try:
            partners = load_partners(folder)
        except ConfigError as exc:
            first = exc.diagnostics[0] if exc.diagnostics else None
            self.log.warning(
                "Partner files are invalid; acknowledgements use clock-based numbers.", extra={"problem": str(first)}
            )
            return
        if partners:
            reserved = ReservedNumbers(self.store, partners)
            await reserved.reserve()
            datatype.control_numbers_for = reserved.for_sender

    async def close(self) -> None:
        await self.stop()
        for task in list(self._alerts):
            task.cancel()
        await asyncio.gather(*self._alerts, return_exceptions=True)
        for dest in [*self.destinations.values(), *([self.alert_destination] if self.alert_destination else [])]:
            await dest.close()
        self.destinations.clear()

    async def start(self) -> None:
        if self.state == "started":
            return
        if self.state == "paused":
            await self.resume()
            return
        await self._launch(processing=True)
        self.state = "started"
        assert self.source is not None
        self.log.info("Channel started.", extra={"address": self.source.address})

    async def pause(self) -> None:
        if self.state == "stopped":
            await self._launch(processing=False)
        self._running.clear()
        for worker in self._all_workers():
            worker.pause()
        self.state = "paused"
        self.log.info("Channel paused.")

    async def _launch(self, *, processing: bool) -> None:
        """Start workers, the processor (recovering stored messages first) and the source."""
        self._start_workers()
        if processing:
            self._running.set()
        else:
            self._running.clear()
        self._recover = True
        self._processor = asyncio.create_task(self._process_loop(), name=f"processor:{self.name}")
        if self.thresholds is not None:
            self._monitor = asyncio.create_task(self._monitor_loop(), name=f"alerts:{self.name}")
        assert self.source is not None
        try:
            await self.source.start()
        except BaseException:
            await self._teardown()
            raise

    async def resume(self) -> None:
        if self.state != "paused":
            return
        self._recover = True  # pick up what was stored while paused
        self._running.set()
        for worker in self._all_workers():
            worker.resume()
        self.state = "started"
        self.log.info("Channel resumed.")

    async def stop(self) -> None:
        if self.state == "stopped":
            return
        await self._teardown()
        self.log.info("Channel stopped.")

    async def _teardown(self) -> None:
        if self.source is not None:
            await self.source.stop()
        self._running.set()
        if self._processor is not None:
            self._processor.cancel()
            await asyncio.gather(self._processor, return_exceptions=True)
            self._processor = None
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
            self._monitor = None
        for worker in self._all_workers():
            await worker.stop()
        self.workers.clear()
        # Whatever was in memory is RECEIVED in the store: the next start recovers it.
        self._queue = asyncio.Queue(QUEUE_MAX)
        self._held.clear()
        self._unsettled.clear()
        self.processing_problem = None
        self._processing = False
        self._inflight.clear()
        for fut in self._waiters.values():
            if not fut.done():
                fut.cancel()
        self._waiters.clear()
        self.state = "stopped"

    def _start_workers(self) -> None:
        keep = self.channel.storage in (StorageMode.DEVELOPMENT, StorageMode.PRODUCTION)
        for config in self.channel.destinations:
            dest = self.destinations[config.name]
            if dest.problem:
                continue  # held: messages stay QUEUED until the channel is redeployed
            workers = [
                DestinationWorker(
                    channel=self.name,
                    config=config,
                    destination=dest,
                    partition=p,
                    store=self.store,
                    owner=self.owner,
                    log=self.log,
                    keep_responses=keep,
                    on_finished=self._after_delivery,
                )
                for p in range(config.threads)
            ]
            for worker in workers:
                worker.start()
            self.workers[config.name] = workers

    def _all_workers(self) -> list[DestinationWorker]:
        return [w for ws in self.workers.values() for w in ws]

    # -- SourceContext ---------------------------------------------------------------------

    async def submit(
        self, raw: bytes, source: dict[str, Any], *, dedupe_key: str = "", correlation_id: str = ""
    ) -> SubmitResult:
        if raw and self._off_loop(raw):
            parts = await asyncio.to_thread(self.pipeline.datatype.split, raw)
        else:
            parts = self.pipeline.datatype.split(raw) if raw else []
        if len(parts) > 1:
            return await self._submit_batch(raw, parts, source, dedupe_key)
        # One message (an envelope such as FHS/BHS around it is dropped), or nothing usable.
        return await self._submit_one(parts[0] if parts else raw, source, correlation_id, dedupe_key=dedupe_key)

    async def check(self, raw: bytes) -> ParseError | None:
        """The data type's parse of ``raw`` with nothing stored: a source that must refuse a
        whole request when one of its parts is bad (a FHIR transaction) checks every part
        first, with the same check a part submitted alone gets."""
        if self._off_loop(raw):
            _, _, error = await asyncio.to_thread(self.pipeline.precheck, raw)
        else:
            _, _, error = self.pipeline.precheck(raw)
        return error

    def _off_loop(self, raw: bytes) -> bool:
        """Parse and split in a worker thread: for data types that say parsing is slow (FHIR
        validates while parsing) and for big payloads, so other connections are not held up."""
        return self._slow_parse or len(raw) > OFF_LOOP_BYTES

    async def _submit_one(
        self,
        raw: bytes,
        source: dict[str, Any],
        correlation_id: str = "",
        *,
        dedupe_key: str = "",
        respond: bool = True,
    ) -> SubmitResult:
        started = time.perf_counter()
        if self._off_loop(raw):
            header, doc, error = await asyncio.to_thread(self.pipeline.precheck, raw)
        else:
            header, doc, error = self.pipeline.precheck(raw)
        msg = InboundMessage(
            self.name,
            raw,
            source=source,
            control_id=header.control_id[:200],
            business_key=header.business_key[:400],
            correlation_id=correlation_id,
        )
        if error is not None:
            try:
                await self.store.add_message(msg, status=Status.ERROR, error=f"parse: {error}", dedupe_key=dedupe_key)
            except DuplicateMessage as dup:
                return await self._duplicate(raw, dup.message_id, respond)
            self.stats.received += 1
            self._count_errors()
            self.log.warning(
                "Message refused: it could not be parsed.",
                extra={"message_id": msg.id, "position": error.position, "reason": error.reason},
            )
            outcome = Outcome(
                "AR", reason=error.reason[:200], position=error.position, error_code=_hl7_code(error.code)
            )
            response = self.pipeline.respond(raw, outcome) if respond else None
            self._answered(started)
            return SubmitResult(msg.id, False, response, Status.ERROR, reason=f"parse: {error}"[:500])
        seen = await self._seen_before(msg) if self.channel.duplicates and msg.business_key else None
        if seen is not None:
            return await self._refuse_duplicate(msg, raw, seen, dedupe_key, respond)
        self._inflight.add(msg.id)
        # the business key a duplicate window checks is committed with the message itself
        values = None
        if self.channel.duplicates and msg.business_key:
            values = {self._business_key(msg): json.dumps({"id": msg.id, "at": msg.received_at})}
        # Nothing waits to be processed ahead of it: process now and store the message with
        # its result in one transaction (one commit instead of two, same answer).
        early = self.pipeline.run(msg, doc) if self._process_on_intake(raw) else None
        try:
            await self.store.add_message(msg, dedupe_key=dedupe_key, values=values, result=early)
        except DuplicateMessage as dup:
            self._inflight.discard(msg.id)
            return await self._duplicate(raw, dup.message_id, respond)
        except BaseException:
            self._inflight.discard(msg.id)
            raise
        self.stats.received += 1
        if early is not None:
            self._inflight.discard(msg.id)
            self._settle([Item(msg, doc)], [early])
            self._answered(started)
            response = self.pipeline.respond(raw, Outcome("AA"), doc) if respond else None
            return SubmitResult(msg.id, True, response, Status.RECEIVED)
        waiter: asyncio.Future[ProcessResult] | None = None
        if self.ack_mode == "after_processing":
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[msg.id] = waiter
        self._enqueue(Item(msg, doc))
        if waiter is None:
            self._answered(started)
            response = self.pipeline.respond(raw, Outcome("AA"), doc) if respond else None
            return SubmitResult(msg.id, True, response, Status.RECEIVED)
        try:
            result = await waiter
        finally:
            replies = self._replies.pop(msg.id, {})
        self._answered(started)
        outcome = outcome_of(result)
        return SubmitResult(
            msg.id,
            outcome.code == "AA",
            self.pipeline.respond(raw, outcome, doc) if respond else None,
            result.status,
            reason=result.error[:500],
            content=result.content,
            content_type=result.content_type,
            replies=replies,
        )

    def _process_on_intake(self, raw: bytes) -> bool:
        """Whether a new message may be processed before it is stored (``on_receipt`` only).

        Only when nothing received earlier still waits for processing (queue empty, processor
        idle, no recovery), so destination rows keep arriving in message order; and only for
        quick pipelines on small payloads, which would run on the loop anyway.
        """
        return (
            self.ack_mode != "after_processing"
            and self.state == "started"
            and self._running.is_set()
            and not self._processing
            and not self._recover
            and self._done_while_recovering is None
            and not self._held
            and self._queue.empty()
            and not self.pipeline.slow
            and self.channel.storage != StorageMode.METADATA
            and len(raw) <= OFF_LOOP_BYTES
        )

    def _business_key(self, msg: InboundMessage) -> str:
        return f"business-key:{self.name}:{msg.business_key}"

    async def _seen_before(self, msg: InboundMessage) -> tuple[str, float] | None:
        """(message id, time) of an earlier message with the same business key within the window."""
        assert self.channel.duplicates is not None
        found = await self.store.get_values(self._business_key(msg))
        record = found.get(self._business_key(msg))
        if record is None:
            return None
        earlier = json.loads(record)
        if msg.received_at - float(earlier["at"]) > self.channel.duplicates.window_hours * 3600:
            return None  # outside the window: a partner that wrapped its numbers
        return str(earlier["id"]), float(earlier["at"])

    async def _refuse_duplicate(
        self, msg: InboundMessage, raw: bytes, seen: tuple[str, float], dedupe_key: str, respond: bool
    ) -> SubmitResult:
        reason = f"duplicate: the business key was received before (message {seen[0]})"
        try:
            await self.store.add_message(msg, status=Status.ERROR, error=reason, dedupe_key=dedupe_key)
        except DuplicateMessage as dup:
            return await self._duplicate(raw, dup.message_id, respond)
        self.stats.received += 1
        self._count_errors()
        self.log.warning("Duplicate refused.", extra={"message_id": msg.id, "first_message_id": seen[0]})
        outcome = Outcome("AR", reason="duplicate message", error_code="205", duplicate=True)
        response = self.pipeline.respond(raw, outcome) if respond else None
        return SubmitResult(msg.id, False, response, Status.ERROR, reason=reason)

    async def _duplicate(self, raw: bytes, message_id: str, respond: bool) -> SubmitResult:
        """The answer for a payload committed before (a file re-read after a crash): the first
        message's fate, so a source files it the same way (accepted, or refused with its reason)."""
        detail = await self.store.get(message_id)
        error = detail.summary.error if detail is not None else ""
        refused = error.startswith(("parse:", "refused:"))
        outcome = Outcome("AR", reason=error[:200], error_code="100") if refused else Outcome("AA")
        response = self.pipeline.respond(raw, outcome) if respond else None
        return SubmitResult(message_id, not refused, response, DUPLICATE, reason=error[:500] if refused else "")

    async def _submit_batch(
        self, raw: bytes, parts: list[bytes], source: dict[str, Any], dedupe_key: str = ""
    ) -> SubmitResult:
        """A batch (FHS/BHS, several MSH, several X12 transaction sets): one message each, one answer.

        With a ``dedupe_key``, each part gets ``KEY#index``, so a batch cut short by a crash
        is completed on the next submit without storing its first parts twice.
        """
        whole = getattr(self.pipeline.datatype, "responds_to_whole", False)
        first: SubmitResult | None = None
        correlation = ""
        all_accepted = True
        reasons: list[str] = []
        responses: list[bytes] = []
        for index, part in enumerate(parts):
            result = await self._submit_one(
                part,
                {**source, "batch_index": index, "batch_size": len(parts)},
                correlation,
                dedupe_key=f"{dedupe_key}#{index}" if dedupe_key else "",
                respond=not whole,
            )
            all_accepted = all_accepted and result.accepted
            if result.response is not None:
                responses.append(result.response)
            if result.reason:
                reasons.append(f"part {index + 1}: {result.reason}")
            if first is None:
                first = result
                correlation = result.message_id
        assert first is not None
        if whole:
            first.response = self.pipeline.respond(raw, Outcome("AA" if all_accepted else "AE"))
        elif len(parts) > 1:
            # every message is answered, not only the first (which could say AA for a batch
            # whose later messages were refused)
            first.response = self.pipeline.respond_batch(raw, responses)
        if not all_accepted:
            first.accepted = False
            first.reason = "; ".join(reasons)[:1000]
        return first

    async def reject(
        self, raw: bytes, source: dict[str, Any], reason: str, *, store: bool = True, dedupe_key: str = ""
    ) -> SubmitResult:
        msg = InboundMessage(self.name, raw, source={**source, "refused": reason})
        header = self.pipeline.datatype.header(raw)
        msg.control_id = header.control_id[:200]
        if store:
            try:
                await self.store.add_message(
                    msg, status=Status.ERROR, error=f"refused: {reason}", dedupe_key=dedupe_key
                )
            except DuplicateMessage as dup:
                return SubmitResult(dup.message_id, False, None, DUPLICATE, reason=f"refused: {reason}"[:500])
        self.stats.received += 1
        self._count_errors()
        self.log.warning("Message refused by the source.", extra={"message_id": msg.id, "reason": reason})
        response = self.pipeline.respond(raw, Outcome("AR", reason=reason[:200], error_code="100"))
        return SubmitResult(msg.id, False, response, Status.ERROR, reason=f"refused: {reason}"[:500])

    # -- processing ------------------------------------------------------------------------

    async def enqueue_existing(self, msg: InboundMessage) -> None:
        """Queue a stored RECEIVED message (reprocess) for processing when the channel runs."""
        if self.state == "started":
            self._inflight.add(msg.id)
            self._enqueue(Item(msg))

    def _enqueue(self, item: Item) -> None:
        """Hand a stored message to the processor, or leave it to the store.

        The in-memory queue only carries messages while it has room and no recovery is due
        or running. Otherwise the message stays RECEIVED in the store (where it already is)
        and a recovery processes it at its place in store order: intake never waits for
        processing, the queue and what a recovery holds stay bounded, and nothing queued
        later can be processed ahead of it.
        """
        running = self.state == "started" or self._running.is_set()
        if running and not self._recover and self._done_while_recovering is None and not self._queue.full():
            self._queue.put_nowait(item)
            return
        self._inflight.discard(item.msg.id)
        if running:
            self._recover = True  # paused: the resume recovers it
            if self._queue.empty():
                self._queue.put_nowait(WAKE)  # an idle processor waits on the queue

    async def _process_loop(self) -> None:
        failures = 0
        while True:
            await self._running.wait()
            try:
                await self._step()
            except Exception as exc:  # noqa: BLE001 - the processor must outlive a failing store
                # The messages are RECEIVED in the store (or their results are): a recovery
                # takes them up again once the store answers, in order, as after a restart.
                failures += 1
                delay = min(PROCESS_RETRY_SECS * 2 ** (failures - 1), PROCESS_RETRY_MAX_SECS)
                error = f"{type(exc).__name__}: {exc}"[:300]
                self.log.error(
                    "Processing failed; the stored messages are processed again shortly.",
                    extra={"error": error, "retry_in_secs": delay},
                )
                self.processing_problem = f"processing failed {failures} time(s) in a row ({error}); retrying"
                self._recover = True
                await asyncio.sleep(delay)
            else:
                failures = 0
                self.processing_problem = None

    async def _step(self) -> None:
        """One recovery, one batch from the queue, or an idle wait on the queue."""
        if self._recover:
            self._recover = False
            await self._recover_stored()
            return
        try:
            first = await asyncio.wait_for(self._take_next(), timeout=IDLE_WAKE_SECS)
        except TimeoutError:
            return
        if first is None:  # WAKE: a recovery is due
            self._processing = False
            return
        if self._recover:
            # A resume came while this loop waited on the queue: what the pause held was
            # received earlier and goes first; recovery takes this one in store order.
            self._held.append(first)
            self._processing = False
            return
        batch = [first]
        try:
            if self.ack_mode != "after_processing" and self._queue.qsize() < BATCH_MAX:
                # Nobody waits on processing: gather a few ms of arrivals so that their
                # results share one commit instead of each costing the listeners an fsync.
                await asyncio.sleep(GATHER_SECS)
            while len(batch) < BATCH_MAX and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    batch.append(item)
            await self._process(batch)
        except Exception:
            self._release(batch)
            raise
        finally:
            self._processing = False

    def _release(self, items: Iterable[Item]) -> None:
        """Hand messages whose processing failed back to the store's care (the next recovery)."""
        for item in items:
            self._inflight.discard(item.msg.id)
            if item.msg.id in self._waiters:
                self._unsettled.add(item.msg.id)

    async def _take_next(self) -> Item | None:
        """The next queued message, marking the processor busy in the same step.

        ``wait_for`` runs this as its own task, so the loop resumes one event-loop turn after
        the item left the queue; a message arriving in that turn must not see an empty queue
        and an idle processor, or it would be processed on intake ahead of this one.
        """
        item = await self._queue.get()
        self._processing = True
        return item

    def _take_queued(self) -> dict[str, Item]:
        """Everything waiting in the processing queue (and held by the loop), by message id."""
        held = {item.msg.id: item for item in self._held}
        self._held.clear()
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                held[item.msg.id] = item
        return held

    async def _recover_stored(self) -> None:
        """Process every stored unprocessed message in store order, queued ones included.

        Messages queued in memory may be older than those a pause left in the store (they
        were queued before it), so recovery takes them out of the queue and processes them
        at their place in the store's order; anything left over follows in queue order.
        """
        self._done_while_recovering = set()
        total = 0
        after = 0
        waits = 0
        held: dict[str, Item] = {}
        items: list[Item] = []
        try:
            while True:
                page = await self.store.unprocessed(self.name, limit=RECOVERY_PAGE, after_seq=after)
                held.update(self._take_queued())
                if not page:
                    break
                items = []
                barrier = None
                for m in page:
                    if m.id in self._done_while_recovering:
                        continue
                    queued = held.pop(m.id, None)
                    if queued is not None:
                        items.append(queued)
                    elif m.id not in self._inflight:
                        self._inflight.add(m.id)
                        items.append(Item(m))
                    elif waits < INTAKE_SETTLE_TRIES:
                        # Committed, but its intake has not yet handed it on (it resumes on the
                        # next loop turns): nothing after it may go first, so stop here and
                        # read the page again from this message once the intake settled.
                        barrier = m.seq
                        break
                if items:
                    total += len(items)
                    await self._process(items)
                    # Their results are stored: no later page (read after them) can hold them
                    # again, so the set stays one page small however long the recovery.
                    self._done_while_recovering.clear()
                if barrier is not None:
                    waits += 1
                    after = barrier - 1
                    await asyncio.sleep(INTAKE_SETTLE_SECS)
                    continue
                waits = 0
                after = max(m.seq for m in page)
                if len(page) < RECOVERY_PAGE:
                    break
            held.update(self._take_queued())
            items = [item for item in held.values() if item.msg.id not in self._done_while_recovering]
            held.clear()
            for start in range(0, len(items), BATCH_MAX):
                await self._process(items[start : start + BATCH_MAX])
        except Exception:
            self._release([*items, *held.values()])  # those already processed are settled
            raise
        finally:
            self._done_while_recovering = None
        # Those of a failed batch that someone waits on and that no recovery found unprocessed
        # (their results were stored before the failure): their senders get no answer and
        # send again, rather than wait for ever.
        for message_id in self._unsettled:
            waiter = self._waiters.pop(message_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(StoreError("processing failed after the result was stored; send again"))
        self._unsettled.clear()
        if total:
            self.log.info("Recovered stored messages.", extra={"count": total})

    async def _process(self, batch: list[Item]) -> None:
        if self.pipeline.slow:
            results = [await asyncio.to_thread(self.pipeline.run, item.msg, item.doc) for item in batch]
        else:
            results = [self.pipeline.run(item.msg, item.doc) for item in batch]
        send_first = [d.name for d in self.channel.destinations if d.send_first and d.name in self.workers]
        failures = await self.store.record_results(results)
        for result, failure in zip(results, failures, strict=True):
            if failure is not None:  # stays RECEIVED in the store: the next recovery retries it
                self.log.error(
                    "Could not store a processing result.",
                    extra={"message_id": result.message_id, "error": str(failure)[:300]},
                )
        if self.channel.storage == StorageMode.METADATA:
            for result in results:
                if not any(r.status == Status.QUEUED for r in result.routes):
                    await self.store.prune_content(result.message_id, only_if_finished=True)
        self._settle(batch, results)
        await self._await_send_first(batch, results, send_first)
        for item, result in zip(batch, results, strict=True):
            waiter = self._waiters.pop(item.msg.id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(result)

    def _settle(self, batch: list[Item], results: list[ProcessResult]) -> None:
        """After processing results are stored: counters, alerts, logs, wake the workers."""
        woken: set[str] = set()
        for item, result in zip(batch, results, strict=True):
            self._inflight.discard(item.msg.id)
            if self._done_while_recovering is not None:
                self._done_while_recovering.add(item.msg.id)
            self.stats.processed += 1
            if result.status == Status.EXCEPTION:
                self._raise_alert(item.msg, result)
            if result.status in (Status.ERROR, Status.EXCEPTION):
                self._count_errors()
                self.log.warning(
                    "Message processing failed.",
                    extra={"message_id": item.msg.id, "status": str(result.status), "error": result.error[:300]},
                )
            woken.update(r.destination for r in result.routes if r.status == Status.QUEUED)
        for name in woken:
            for worker in self.workers.get(name, []):
                worker.wake.set()

    async def _await_send_first(self, batch: list[Item], results: list[ProcessResult], names: list[str]) -> None:
        """send_first destinations: the sender's answer waits for the first delivery attempt."""
        if not names or self.ack_mode != "after_processing":
            return
        loop = asyncio.get_running_loop()
        keys = []
        for item, result in zip(batch, results, strict=True):
            if item.msg.id not in self._waiters:
                continue
            for route in result.routes:
                if route.destination in names and route.status == Status.QUEUED:
                    self._first_sends[(item.msg.id, route.destination)] = loop.create_future()
                    keys.append((item.msg.id, route.destination))
        if keys:
            futures = {k: self._first_sends[k] for k in keys}
            await asyncio.wait(futures.values(), timeout=30)
            for key, fut in futures.items():
                self._first_sends.pop(key, None)  # a destination that never answered must not leave it behind
                if fut.done() and not fut.cancelled():
                    self._replies.setdefault(key[0], {})[key[1]] = _reply(fut.result())

    def _raise_alert(self, msg: InboundMessage, result: ProcessResult) -> None:
        """An EXCEPTION is a business alert: a log event, and the channel's webhook if it has one."""
        fields = {"message_id": msg.id, "control_id": msg.control_id, "rule": result.rule, "field": result.field}
        self.log.warning("Message sent to the exception queue.", extra=fields)
        alert = {
            "event": "exception",
            "channel": self.name,
            "correlation_id": msg.correlation_id,
            "run": msg.run,
            "reason": result.error[:500],
            "at": time.time(),
            **fields,
        }
        self._post_alert(alert, msg.id, correlation_id=msg.correlation_id, control_id=msg.control_id)

    def adopt_alerts(self, previous: ChannelRuntime) -> None:
        """On redeploy (after ``open``): carry the previous deployment's raised threshold
        alerts and error count over, so that nothing is raised twice and each raised alert
        still gets its cleared event; with no thresholds left, they are cleared now."""
        if previous.thresholds is None:
            return
        if self.thresholds is not None:
            self.thresholds.carry_over(previous.thresholds)
            return
        for alert in previous.thresholds.raised():
            self._announce(AlertChange(alert, cleared=True))

    def _count_errors(self, count: int = 1) -> None:
        """A message refused or in ERROR/EXCEPTION, or a delivery that gave up."""
        self.stats.errors += count
        if self.thresholds is not None:
            self.thresholds.record_errors(count)

    async def _monitor_loop(self) -> None:
        """Check the thresholds of ``alerts.errors`` and ``alerts.queue`` every ``alert_check_secs``."""
        assert self.thresholds is not None
        failing = False
        while True:
            await asyncio.sleep(self.alert_check_secs)
            queues: dict[str, QueueFigures] | None = None
            if self.thresholds.watches_queues:
                try:
                    queues = await self._queue_figures()
                except Exception as exc:  # noqa: BLE001 - the monitor must outlive a failing store
                    if not failing:
                        self.log.warning(
                            "Queue alerts could not be checked; trying again.", extra={"error": str(exc)[:300]}
                        )
                    failing = True
                else:
                    failing = False
            for change in self.thresholds.check(queues):
                self._announce(change)

    async def _queue_figures(self) -> dict[str, QueueFigures]:
        """Every destination's QUEUED count (store counters) and, for age alerts, how long its
        oldest QUEUED row has waited (only read when something waits)."""
        assert self.thresholds is not None
        counters = await self.store.counters(self.name)
        figures: dict[str, QueueFigures] = {}
        for config in self.channel.destinations:
            depth = counters.get(f"dest:{config.name}:QUEUED", 0)
            age = None
            if depth > 0 and self.thresholds.watches_age:
                oldest = await self.store.oldest_queued(self.name, config.name)
                age = max(0.0, time.time() - oldest) if oldest is not None else None
            figures[config.name] = QueueFigures(depth, age)
        return figures

    def _announce(self, change: AlertChange) -> None:
        """A threshold alert raised or cleared: a log event and the webhook, figures only (no
        message ids, control ids or content)."""
        alert = change.alert
        fields: dict[str, Any] = {"event": change.event, "value": alert.value, "threshold": alert.threshold}
        if alert.destination is not None:
            fields["destination"] = alert.destination
        if alert.window_minutes is not None:
            fields["window_minutes"] = alert.window_minutes
        self.log.warning("Alert cleared." if change.cleared else "Alert raised.", extra=fields)
        body = {
            "event": change.event,
            "channel": self.name,
            "destination": alert.destination,
            "value": alert.value,
            "threshold": alert.threshold,
            **({"window_minutes": alert.window_minutes} if alert.window_minutes is not None else {}),
            "since": alert.since,
            "at": time.time(),
        }
        alert_id = new_id()  # an alert is about no message: an id of its own for the webhook
        self._post_alert(body, alert_id, correlation_id=alert_id, ordered=True)

    def _post_alert(
        self, alert: dict[str, Any], item_id: str, *, correlation_id: str, control_id: str = "", ordered: bool = False
    ) -> None:
        """Send an alert to the webhook in the background, if the channel has a usable one.
        ``ordered``: after the earlier ordered alerts (a cleared event never overtakes its raise)."""
        if self.alert_destination is None or self.alert_destination.problem:
            return
        body = json.dumps(alert).encode()
        item = Outbound(item_id, self.name, "alerts", correlation_id, body, "application/json", control_id)
        task = asyncio.create_task(self._send_alert(item, str(alert["event"]), ordered))
        self._alerts.add(task)
        task.add_done_callback(self._alerts.discard)

    async def _send_alert(self, item: Outbound, event: str, ordered: bool) -> None:
        """Best effort with the webhook's retry policy (at most 5 tries): an exception is stored
        and searchable, and a threshold shows in the channel status, whatever happens to the alert."""
        assert self.alert_destination is not None and self.channel.alerts and self.channel.alerts.webhook
        policy = self.channel.alerts.webhook.retry
        async with self._alert_order if ordered else contextlib.nullcontext():
            for attempt in range(1, 6):
                item.attempt = attempt
                try:
                    await self.alert_destination.send(item)
                    return
                except Exception as exc:  # noqa: BLE001 - alerts never break processing
                    if attempt == 5 or policy.gives_up(attempt) or isinstance(exc, PermanentError):
                        self.log.error(
                            "Alert could not be delivered.",
                            extra={"event": event, "message_id": item.message_id, "error": str(exc)[:300]},
                        )
                        return
                    await asyncio.sleep(policy.delay(attempt))

    def _answered(self, started: float) -> None:
        elapsed = time.perf_counter() - started
        self.stats.latencies.append(elapsed)
        self._intake_seconds.observe(elapsed)

    async def _after_delivery(self, outcomes: list[DeliveryOutcome]) -> None:
        now = time.time()
        for outcome in outcomes:
            if outcome.status == Status.SENT and outcome.received_at:
                histogram = self._delivery_seconds.get(outcome.destination)
                if histogram is not None:
                    histogram.observe(max(now - outcome.received_at, 0.0))
        gave_up = sum(1 for outcome in outcomes if outcome.status == Status.ERROR)
        if gave_up and self.thresholds is not None:
            self.thresholds.record_errors(gave_up)
        if self.channel.storage == StorageMode.METADATA:
            for outcome in outcomes:
                if outcome.status == Status.SENT:
                    await self.store.prune_content(outcome.message_id, only_if_finished=True)
        for outcome in outcomes:
            fut = self._first_sends.pop((outcome.message_id, outcome.destination), None)
            if fut is not None and not fut.done():
                fut.set_result(outcome)

    # -- status ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        source_address = self.source.address if self.source is not None else None
        lat = sorted(self.stats.latencies)
        return {
            "name": self.name,
            "state": self.state,
            "source": {
                "type": self.channel.source.type,
                "address": source_address,
                "ack_mode": self.ack_mode,
                "problem": getattr(self.source, "problem", None),
            },
            "processing": {"problem": self.processing_problem},
            "alerts": [alert.as_dict() for alert in self.thresholds.raised()] if self.thresholds else [],
            "destinations": [
                {
                    "name": d.name,
                    "type": d.type,
                    "threads": d.threads,
                    "problem": self.destinations[d.name].problem if d.name in self.destinations else None,
                }
                for d in self.channel.destinations
            ],
            "since_start": {
                "received": self.stats.received,
                "processed": self.stats.processed,
                "errors": self.stats.errors,
                "ack_p50_ms": round(lat[len(lat) // 2] * 1000, 3) if lat else None,
                "ack_p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 3) if lat else None,
            },
        }


def _reply(outcome: DeliveryOutcome) -> Reply:
    ok = outcome.status == Status.SENT
    return Reply(ok, outcome.response, outcome.response_type, outcome.status_code, "" if ok else outcome.error[:500])


def build_destination(
    config: Any,
    *,
    channel: str,
    base_dir: Path,
    log: Any,
    store: MessageStore,
    services: EngineServices | None = None,
) -> Destination:
    """Build a destination from its config; ``store`` and ``services`` go to factories that declare them."""
    factory = registry.get("destination", config.type).load_factory()
    kwargs: dict[str, Any] = {"channel": channel, "base_dir": base_dir, "log": log}
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins or C callables without a signature
        parameters = {}  # type: ignore[assignment]
    if "store" in parameters:
        kwargs["store"] = store
    if "services" in parameters and services is not None:
        kwargs["services"] = services
    return factory(config, **kwargs)  # type: ignore[no-any-return]


def _hl7_code(code: str) -> str:
    """An HL7 table 0357 error code for a ParseError code (data types may give the number)."""
    if code.isdigit():
        return code
    return {"required": "101", "datatype": "102", "table": "103", "length": "206", "type": "200", "version": "203"}.get(
        code, "100"
    )
