"""The message model: ids, statuses and what a source hands to the runtime."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


_random = random.Random(int.from_bytes(os.urandom(16), "big"))  # noqa: S311 - uniqueness, not secrecy


def new_id() -> str:
    """Return a 26-character, time-sortable unique id (ULID layout, Crockford base 32).

    Ids of different milliseconds sort by time; within one millisecond the order is random.

    >>> len(new_id()), new_id()[:10] <= new_id()[:10]
    (26, True)
    """
    # Reseeded per process from os.urandom; getrandbits avoids a system call per id.
    value = (time.time_ns() // 1_000_000) << 80 | _random.getrandbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


class Status(StrEnum):
    """Message and destination statuses (the lifecycle in ARCHITECTURE.md)."""

    RECEIVED = "RECEIVED"
    FILTERED = "FILTERED"
    TRANSFORMED = "TRANSFORMED"
    QUEUED = "QUEUED"
    SENT = "SENT"
    ERROR = "ERROR"
    EXCEPTION = "EXCEPTION"


class StorageMode(StrEnum):
    """Which content is kept per message (Mirth's storage modes)."""

    DEVELOPMENT = "development"  # every stage
    PRODUCTION = "production"  # raw, final (transformed) and responses
    RAW = "raw"  # raw only
    METADATA = "metadata"  # raw only until the message is finished, then metadata only


@dataclass
class InboundMessage:
    """A message as accepted from a source, before processing.

    ``source`` holds transport details (peer address, file name, TLS subject); it never
    holds message content.
    """

    channel: str
    raw: bytes
    id: str = field(default_factory=new_id)
    correlation_id: str = ""
    received_at: float = field(default_factory=time.time)
    source: dict[str, Any] = field(default_factory=dict)
    control_id: str = ""
    business_key: str = ""
    run: int = 1
    seq: int = 0  # the store's sequence number, once stored

    def __post_init__(self) -> None:
        if not self.correlation_id:
            self.correlation_id = self.id


@dataclass
class Outbound:
    """What a destination is asked to send: one message, one destination, one attempt."""

    message_id: str
    channel: str
    destination: str
    correlation_id: str
    content: bytes
    content_type: str
    control_id: str = ""
    attempt: int = 1
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and restarts: message id plus destination name."""
        return f"{self.message_id}:{self.destination}"


@dataclass
class SendResult:
    """What a destination reports after a successful send."""

    response: bytes | None = None
    status_code: int | None = None
    detail: str = ""
    content_type: str = ""  # of ``response``, when known (HTTP Content-Type)
