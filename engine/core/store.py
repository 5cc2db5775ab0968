"""The MessageStore protocol: the contract between the runtime and every store engine.

Write methods return only after their changes are durably committed. Implementations
batch concurrent writes into one transaction (group commit), so callers may issue many
writes at once without paying one fsync each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.core.message import InboundMessage, Status


@dataclass
class DestinationRoute:
    """A destination row created when a message is transformed."""

    destination: str
    partition: int = 0
    status: Status = Status.QUEUED  # or FILTERED when a destination filter said no
    content: bytes | None = None  # the encoded content to send (kept in the queue row)
    content_type: str = "application/octet-stream"


@dataclass
class ProcessResult:
    """The outcome of running the pipeline once on one message (one run)."""

    message_id: str
    run: int
    status: Status  # FILTERED, ERROR, EXCEPTION or TRANSFORMED
    error: str = ""
    stages: dict[str, bytes] = field(default_factory=dict)  # stage name -> content to keep
    routes: list[DestinationRoute] = field(default_factory=list)
    response: bytes | None = None  # what was answered to the source (ACK), if kept
    rule: str = ""  # EXCEPTION: the business rule that failed
    field: str = ""  # EXCEPTION: the target field it concerns (a name, never a value)
    content: bytes | None = None  # the channel transform's output (not stored by itself; for sync sources)
    content_type: str = ""


@dataclass
class QueueEntry:
    """A claimed destination queue row."""

    message_id: str
    run: int
    channel: str
    destination: str
    partition: int
    seq: int
    attempts: int
    content: bytes
    content_type: str
    correlation_id: str
    control_id: str
    source: dict[str, Any] = field(default_factory=dict)
    received_at: float = 0.0  # when the message was received (for latency metrics)


@dataclass
class DeliveryOutcome:
    """The result of one delivery attempt, recorded by ``finish``."""

    message_id: str
    run: int
    destination: str
    status: Status  # SENT, QUEUED (will retry) or ERROR (gave up / permanent)
    started_at: float
    finished_at: float
    error: str = ""
    status_code: int | None = None
    response: bytes | None = None
    retry_at: float | None = None  # when QUEUED: do not claim before this time
    keep_response: bool = True
    response_type: str = ""  # the content type of ``response`` when the destination knows it
    received_at: float = 0.0  # when the message was received (latency metrics; not stored)


@dataclass
class MessageQuery:
    """Filters for ``search``; every field is optional and they combine with AND."""

    channel: str | None = None
    status: Status | None = None  # matches the message status or any destination status
    since: float | None = None
    until: float | None = None
    control_id: str | None = None
    correlation_id: str | None = None
    limit: int = 100
    before_seq: int | None = None  # paging: rows older than this sequence number


@dataclass
class DestinationState:
    destination: str
    run: int
    status: Status
    attempts: int
    last_error: str
    created_at: float
    updated_at: float
    next_attempt_at: float | None
    status_code: int | None = None


@dataclass
class AttemptRecord:
    destination: str
    run: int
    attempt: int
    started_at: float
    finished_at: float
    status: Status
    error: str
    status_code: int | None


@dataclass
class MessageSummary:
    seq: int
    id: str
    channel: str
    correlation_id: str
    received_at: float
    control_id: str
    status: Status
    run: int
    error: str
    source: dict[str, Any]
    destinations: dict[str, Status] = field(default_factory=dict)  # latest run only


@dataclass
class MessageDetail:
    summary: MessageSummary
    business_key: str
    contents: dict[tuple[int, str], bytes]  # (run, stage) -> content; stage "raw" has run 0
    destinations: list[DestinationState]
    attempts: list[AttemptRecord]


class MessageStore(Protocol):
    """Durable storage of messages, their stages and the destination queues."""

    async def open(self) -> None:
        """Create or migrate the schema, start the writer."""

    async def close(self) -> None:
        """Flush pending writes and release resources."""

    async def add_message(
        self,
        msg: InboundMessage,
        *,
        status: Status = Status.RECEIVED,
        error: str = "",
        dedupe_key: str = "",
        values: dict[str, str] | None = None,
        result: ProcessResult | None = None,
    ) -> int:
        """Store a newly received message and its raw content; return its sequence number.

        With ``dedupe_key``, the key is committed in the same transaction as the message, and
        a key an earlier message of the channel holds raises ``DuplicateMessage`` (nothing is
        stored): sources use it for exactly-once intake across crashes (a file's name, size,
        mtime and hash). ``values`` are small named values (as ``put_value``) committed in the
        same transaction, e.g. the business key a duplicate window checks.

        With ``result`` (the message's first pipeline run, computed before storing), the
        run is stored in the same transaction as ``record_result`` would store it: a channel
        whose processing is quick pays one commit for intake and processing, not two.
        """

    async def record_result(self, result: ProcessResult) -> None:
        """Store one pipeline run: message status, kept stages and destination queue rows."""

    async def record_results(self, results: list[ProcessResult]) -> list[Exception | None]:
        """``record_result`` for many runs in one write; one result failing spares the others.

        Returns, per result, None or the exception that kept it from being stored.
        """

    async def claim(
        self, channel: str, destination: str, partition: int, owner: str, *, limit: int, lease_secs: float, now: float
    ) -> list[QueueEntry]:
        """Lease the oldest QUEUED rows of one destination partition, in sequence order.

        Stops at the first row whose retry time lies in the future, so that a FIFO
        destination never overtakes a message that is waiting to be retried.
        """

    async def finish(self, outcomes: list[DeliveryOutcome]) -> None:
        """Record delivery attempts, update destination rows and release their leases."""

    async def release(self, entries: list[QueueEntry]) -> None:
        """Give back claimed rows without counting an attempt (a FIFO worker stopping early)."""

    async def next_retry_at(self, channel: str, destination: str, partition: int) -> float | None:
        """Return the earliest retry time of the partition's QUEUED rows, or None if none wait."""

    async def oldest_queued(self, channel: str, destination: str) -> float | None:
        """When the oldest row still QUEUED for the destination (any partition, leased or
        not, waiting for a retry or not) was queued, as epoch seconds; None when none waits.
        A read, for queue-age alerts."""

    async def reset_leases(self) -> int:
        """Release every lease (single-node recovery at start-up); return how many."""

    async def unprocessed(self, channel: str, *, limit: int = 1000, after_seq: int = 0) -> list[InboundMessage]:
        """Messages of a channel still RECEIVED (accepted but not yet processed), oldest first."""

    async def begin_reprocess(self, message_id: str) -> InboundMessage | None:
        """Start a new run of a stored message from its raw content (status back to RECEIVED).

        Destination rows of earlier runs still QUEUED become ERROR ("superseded"), so a
        reprocessed message is not delivered twice from two runs.
        """

    async def search(self, query: MessageQuery) -> list[MessageSummary]:
        """Find messages, newest first."""

    async def get(self, message_id: str) -> MessageDetail | None:
        """Return one message with its contents, destination states and attempts."""

    async def counters(self, channel: str) -> dict[str, int]:
        """Message counts by status for a channel, plus destination counts as ``dest:NAME:STATUS``."""

    async def put_value(self, key: str, value: str) -> None:
        """Store a small named value (control numbers, reference-table versions)."""

    async def get_values(self, prefix: str) -> dict[str, str]:
        """Every stored value whose key starts with ``prefix``."""

    async def prune_content(self, message_id: str, *, only_if_finished: bool = False) -> bool:
        """Drop stored content of a message (storage mode ``metadata``); True if dropped.

        With ``only_if_finished``, only when its latest run is FILTERED, or TRANSFORMED with
        every destination SENT or FILTERED; a message in ERROR keeps its raw to be reprocessed.
        """

    async def prunable(
        self,
        channel: str,
        *,
        before: float,
        keep_errors: bool,
        with_content: bool,
        after: tuple[float, int] = (0.0, 0),
        limit: int = 500,
    ) -> list[tuple[float, int]]:
        """(received_at, seq) of a channel's messages that retention may remove, in receipt order.

        Prunable: received and last processed before ``before``, and finished: FILTERED, or
        TRANSFORMED with every destination of the latest run SENT or FILTERED (with
        ``keep_errors`` false, ERROR, EXCEPTION and destinations in ERROR too); never a
        message with a row still QUEUED. With ``with_content``, only messages that still hold
        content. ``after`` is the position to continue from (paging). A read: it never holds
        up intake.
        """

    async def prune(
        self, channel: str, seqs: list[int], *, before: float, keep_errors: bool, content_only: bool
    ) -> int:
        """Delete those of ``seqs`` that are still prunable (checked again in the write), or
        only their contents with ``content_only``; return how many."""

    async def values_page(
        self, prefix: str, *, after: str = "", orphaned: bool = False, limit: int = 500
    ) -> list[tuple[str, str]]:
        """A page of stored values whose key starts with ``prefix``, in key order after
        ``after``; with ``orphaned``, only values naming a message that is no longer stored."""

    async def delete_values(self, pairs: list[tuple[str, str]]) -> int:
        """Delete the named values that still hold exactly the given value; return how many."""
