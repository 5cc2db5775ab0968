"""Control numbers per partner (ISA13, GS06, ST02) and inbound duplicate-interchange detection.

Numbers live in the message store as small values (``put_value``), one counter per partner
and kind, under ``edi:control:<partner>:<kind>``. A number is written to the store *before*
it is handed out, so a crash can skip a number but never reuse one. After 999999999 the
counter wraps to 1 (the ISA13 field is 9 digits; partners keep far fewer than a billion
interchanges in their duplicate windows).

A per-partner ``asyncio.Lock``, shared by every ``ControlNumbers`` on the same store,
serialises allocation inside one engine process; Junction runs one engine per store, so
that is enough. Several processes sharing a store would need
an atomic increment in the store itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Literal

from engine.core.store import MessageStore
from engine.datatypes.x12.acks import next_control_number
from engine.edi.partners import Partner, find_partner

log = logging.getLogger("junction.edi")

__all__ = ["MAX_CONTROL", "ControlKind", "ControlNumbers", "DuplicateInterchanges", "ReservedNumbers"]

MAX_CONTROL = 999_999_999
ControlKind = Literal["interchange", "group", "transaction"]
KINDS: tuple[ControlKind, ...] = ("interchange", "group", "transaction")
PREFIX = "edi:control:"
SEEN_PREFIX = "edi:isa-seen:"


def _key(partner: str, kind: str) -> str:
    return f"{PREFIX}{partner}:{kind}"


# One lock per (event loop, store, name), shared by every ControlNumbers on that store: two
# channels sending to the same partner must not read the same counter value.
_LOCKS: dict[tuple[int, int, str], asyncio.Lock] = {}


def _shared_lock(store: object, name: str) -> asyncio.Lock:
    key = (id(asyncio.get_running_loop()), id(store), name)
    lock = _LOCKS.get(key)
    if lock is None:
        lock = _LOCKS[key] = asyncio.Lock()
    return lock


class ControlNumbers:
    """Hands out never-reused control numbers per partner, persisted before use.

    numbers = ControlNumbers(store)
    isa13 = await numbers.next("acme-medical", "interchange")
    """

    def __init__(self, store: MessageStore) -> None:
        self.store = store

    def _lock(self, partner: str) -> asyncio.Lock:
        return _shared_lock(self.store, f"control:{partner}")

    async def current(self, partner: str, kind: ControlKind) -> int:
        """The last number handed out (0 when none yet)."""
        key = _key(partner, kind)
        value = (await self.store.get_values(key)).get(key, "0")
        return int(value) if value.isdigit() else 0

    async def next(self, partner: str, kind: ControlKind) -> int:
        """The next number of ``kind`` for ``partner``, stored durably before it is returned."""
        return (await self.take(partner, kind, 1))[0]

    async def take(self, partner: str, kind: ControlKind, count: int) -> list[int]:
        """``count`` consecutive numbers (wrapping after 999999999 to 1), stored in one write."""
        if kind not in KINDS:
            raise ValueError(f"unknown control number kind {kind!r}; expected one of " + ", ".join(KINDS))
        if count < 1:
            raise ValueError("count must be at least 1")
        async with self._lock(partner):
            last = await self.current(partner, kind)
            numbers = []
            for _ in range(count):
                last = 1 if last >= MAX_CONTROL else last + 1
                numbers.append(last)
            await self.store.put_value(_key(partner, kind), str(last))
            return numbers

    async def set(self, partner: str, kind: ControlKind, value: int) -> None:
        """Move a counter (e.g. to continue a partner's sequence after a migration)."""
        if not 0 <= value <= MAX_CONTROL:
            raise ValueError("a control number is between 0 and 999999999")
        async with self._lock(partner):
            await self.store.put_value(_key(partner, kind), str(value))


class DuplicateInterchanges:
    """Detects an inbound interchange seen before: same sender and ISA13 within a window.

    The first sighting is recorded under ``edi:isa-seen:<sender>:<isa13>`` with its time;
    a later sighting within ``window`` is a duplicate. A sighting after the window has
    passed counts as new (partners wrap their numbers) and restarts the window.
    """

    def __init__(self, store: MessageStore) -> None:
        self.store = store

    async def seen(self, sender: str, isa13: str, window: dt.timedelta, *, now: float | None = None) -> bool:
        """True when ``sender`` sent ``isa13`` within ``window`` before; records it otherwise.

        ``sender`` is the ISA05 qualifier and ISA06 id (e.g. ``"ZZ:ACMEMED"``) or a partner
        name; both values are stripped of ISA padding.
        """
        stamp = time.time() if now is None else now
        number = isa13.strip().lstrip("0") or "0"
        key = f"{SEEN_PREFIX}{sender.strip()}:{number}"
        async with _shared_lock(self.store, "isa-seen"):
            previous = (await self.store.get_values(key)).get(key)
            if previous is not None:
                try:
                    if stamp - float(previous) < window.total_seconds():
                        return True
                except ValueError:
                    pass  # an unreadable record is replaced below
            await self.store.put_value(key, repr(stamp))
            return False


class ReservedNumbers:
    """Control numbers for the acknowledgements an inbound X12 channel sends back (997/999/TA1).

    ``X12DataType.respond`` is synchronous, so numbers are reserved ahead from the partner's
    interchange counter (the same counter the ``x12`` destination uses, so an ack never
    repeats the ISA13 of an 850 sent to the same partner) and refilled in the background when
    half a block is used. Reserved numbers a restart leaves unused are skipped, never reused.
    """

    def __init__(self, store: MessageStore, partners: Mapping[str, Partner], *, block: int = 200) -> None:
        self.numbers = ControlNumbers(store)
        self.partners = partners
        self.block = block
        self._free: dict[str, deque[int]] = {}
        self._refilling: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def reserve(self) -> None:
        """Reserve a block for every partner (call on the engine's loop before answering)."""
        self._loop = asyncio.get_running_loop()
        for name in self.partners:
            self._free[name] = deque(await self.numbers.take(name, "interchange", self.block))

    def for_sender(self, qualifier: str, sender: str) -> Callable[[], int] | None:
        """The allocator for acknowledgements to the partner with this ISA05/ISA06, or None."""
        partner = find_partner(self.partners, qualifier, sender)
        if partner is None or partner.name not in self._free:
            return None
        return lambda: self._next(partner.name)

    def _next(self, name: str) -> int:
        free = self._free[name]
        if len(free) <= self.block // 2:
            self._refill(name)
        if free:
            return free.popleft()
        log.warning("Reserved control numbers ran out; using a clock-based number.", extra={"partner": name})
        return next_control_number()

    def _refill(self, name: str) -> None:
        if name in self._refilling or self._loop is None:
            return
        self._refilling.add(name)

        async def refill() -> None:
            try:
                self._free[name].extend(await self.numbers.take(name, "interchange", self.block))
            except Exception as exc:  # noqa: BLE001 - the clock-based fallback covers a store hiccup
                log.warning("Could not reserve control numbers.", extra={"partner": name, "error": str(exc)[:200]})
            finally:
                self._refilling.discard(name)

        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(refill()) if self._loop else None)
