"""Runtime contracts between the engine and its plug-ins (kept small on purpose)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from engine.core.errors import ParseError
from engine.core.message import Outbound, SendResult

AckCode = Literal["AA", "AE", "AR"]


@dataclass
class Header:
    """What a data type reads cheaply from raw bytes, before any full parse (hot path)."""

    control_id: str = ""
    message_type: str = ""
    business_key: str = ""  # e.g. MSH-10 + sending facility; used for duplicate detection
    fields: dict[str, str] = field(default_factory=dict)  # data-type specific (MSH-3..6, -12, -15, -16 ...)


@dataclass
class Outcome:
    """How a message fared, for the data type to answer the sender (ACK, 997, ...)."""

    code: AckCode
    reason: str = ""  # no PHI: describe the shape of the problem, not the values
    position: str = ""  # e.g. "segment 4 (FT1), field 10"
    error_code: str = ""  # e.g. HL7 table 0357 code "207"
    duplicate: bool = False  # refused as a duplicate (X12 answers with a TA1 025)


class Document(Protocol):
    """A parsed message, navigable by the data type's path syntax."""

    def get(self, path: str) -> str | None:
        """The first value at ``path``, unescaped, or None when absent."""

    def get_all(self, path: str) -> list[str]:
        """Every value at ``path`` (all repetitions / repeats)."""

    def iterate(self, path: str) -> list[Document]:
        """One sub-document per repeat at ``path`` (HL7 segment occurrences, X12 loops, JSON
        array items); inside one, paths address that repeat first, then the whole document."""

    def to_data(self) -> Any:
        """A JSON-serialisable representation (for the hl7-to-json transform and debugging)."""


class DataType(Protocol):
    """Parses bytes into documents and answers senders."""

    content_type: str
    validates: bool  # validate() does real, slow work: the runtime runs it off the event loop
    # Optional class attribute ``parse_is_slow = True``: ``split`` and ``parse`` run in a worker
    # thread for every message (they always do for payloads over 256 KB).
    # Optional class attribute ``responds_to_whole = True``: for a payload that ``split`` cut
    # into several messages, ``respond`` is called once with the whole payload (X12: one
    # 997/999 per functional group) instead of answering with the first part's response.
    # Optional method ``header_of(doc) -> Header | None``: the header of a document ``parse``
    # just returned, so that the hot path reads it once; None falls back to ``header(raw)``.
    # Optional method ``respond_parsed(doc, outcome)``: ``respond`` for a document ``parse``
    # returned, giving the same answer as ``respond(raw, outcome)`` without reading raw again.

    def split(self, raw: bytes) -> list[bytes]:
        """Split a batch or multi-message payload into single messages (default: [raw])."""

    def header(self, raw: bytes) -> Header:
        """Read the control id and routing fields cheaply; must not raise on garbage."""

    def parse(self, raw: bytes) -> Document:
        """Fully parse; raise ``ParseError`` (without quoting content) on bad input."""

    def validate(self, raw: bytes) -> list[str]:
        """Optional deeper validation off the ACK path; returns problems (empty when fine)."""

    def respond(self, raw: bytes, outcome: Outcome) -> bytes | None:
        """Build the response to the sender (ACK/NACK) for ``raw``; None if the type has none."""


class Transform(Protocol):
    """Turns a parsed document into the content sent to destinations."""

    def apply(self, raw: bytes, doc: Document) -> tuple[bytes | None, str]:
        """Return (content, content_type); content None means nothing to send (FILTERED)."""


@dataclass
class Reply:
    """A ``send_first`` destination's first delivery attempt, for sources that answer with it."""

    ok: bool
    body: bytes | None = None
    content_type: str = ""
    status_code: int | None = None
    detail: str = ""  # the error when not ok (no content)


@dataclass
class SubmitResult:
    """What ``SourceContext.submit`` returns to a source once the message is committed.

    ``status`` is the stored status, or ``DUPLICATE`` when a ``dedupe_key`` showed that the
    payload was committed before (nothing stored again). ``reason`` says why a message was
    not accepted (no content). With ``ack_mode: after_processing``, ``content`` is the
    channel transform's output and ``replies`` holds each ``send_first`` destination's answer.
    """

    message_id: str
    accepted: bool  # False: the message was stored as ERROR (bad input) or refused
    response: bytes | None = None  # the data type's answer to send back, if any
    status: str = ""
    reason: str = ""
    content: bytes | None = None
    content_type: str = ""
    replies: dict[str, Reply] = field(default_factory=dict)


class SourceContext(Protocol):
    """What the runtime gives a source."""

    name: str  # the channel's name
    base_dir: Path  # project root: relative paths in configs resolve against it
    log: logging.LoggerAdapter[logging.Logger]
    debug: bool  # the channel allows message content in logs

    async def submit(
        self, raw: bytes, source: dict[str, Any], *, dedupe_key: str = "", correlation_id: str = ""
    ) -> SubmitResult:
        """Durably store ``raw`` (group commit), then process it per the channel's ACK mode.

        Returns after the commit (``on_receipt``) or after processing (``after_processing``),
        with the response to send back. Never raises for bad content: that is stored and
        answered with a negative response. A non-empty ``dedupe_key`` that an earlier
        committed submit of this channel used stores nothing and returns status
        ``DUPLICATE`` (exactly-once intake of files across crashes). ``correlation_id`` ties
        messages cut from one request together (e.g. the entries of a FHIR transaction).
        """

    async def check(self, raw: bytes) -> ParseError | None:
        """The data type's parse of ``raw`` (the check ``submit`` makes first), nothing stored."""

    async def reject(
        self, raw: bytes, source: dict[str, Any], reason: str, *, store: bool = True, dedupe_key: str = ""
    ) -> SubmitResult:
        """Store (when ``store``) a message the source itself refused (e.g. oversize frame) and
        return a negative response (AR) for it; ``dedupe_key`` as for ``submit``."""


class Source(Protocol):
    """A listener or poller. ``start`` returns once it is listening."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def address(self) -> str | None:
        """Where it listens (host:port) or what it polls, for status output."""


class Destination(Protocol):
    """Sends one message; raises ``RetryableError`` or ``PermanentError`` on failure.

    Built as ``factory(config, channel=NAME, base_dir=PATH, log=BoundLogger)``. ``problem``
    is a human sentence when the destination cannot work as configured (e.g. its URL
    variable is unset); the runtime then holds its queue and reports the problem.

    A destination may also define ``async def flush()``: the runtime calls it after a run
    of successful sends and before recording them SENT, so a destination can make a whole
    batch durable at once (one filesystem sync instead of one per message). If ``flush``
    raises, those sends are retried.
    """

    problem: str | None

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, item: Outbound) -> SendResult: ...


class EngineServices(Protocol):
    """Engine operations a destination may use (declare a ``services`` keyword in its factory)."""

    async def load_table(self, name: str, data: bytes) -> dict[str, Any]:
        """Replace reference table ``name`` with CSV ``data`` and reload every user of it; an
        invalid file changes nothing and raises ``ConfigError``. Returns name and version."""


class ReferenceTables(Protocol):
    """Reference tables a transform shares through the engine (``shared["tables:<dir>"]``).

    The engine reloads them without a restart and records their versions in the store.
    """

    directory: Path

    def reload(self) -> dict[str, str]:
        """Re-read every table of ``directory`` at once; raise ``ConfigError`` and keep the
        tables in use when a file is invalid. Returns the version (content hash) per table."""

    def versions(self) -> dict[str, str]: ...

    def rows(self, name: str) -> tuple[list[str], list[dict[str, str]]]:
        """The columns and rows of one table (``LookupError`` when unknown)."""
