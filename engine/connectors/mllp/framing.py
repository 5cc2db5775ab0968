"""Sans-IO MLLP framing: bytes in, frames out, robust to broken senders.

A frame is ``0x0B payload 0x1C 0x0D``. The framer never raises and never keeps more
than ``max_frame_bytes`` of one frame, whatever arrives:

    >>> framer = MllpFramer()
    >>> framer.feed(b"\\r\\x0bMSH|a\\x1c") + framer.feed(b"\\r\\x0bMSH|b\\x0bMSH|c\\x1c\\r")
    [Frame(payload=b'MSH|a'), Frame(payload=b'MSH|b'), Frame(payload=b'MSH|c')]
"""

from __future__ import annotations

from dataclasses import dataclass

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\r"
END_BYTE = b"\x1c"
_START = 0x0B
_END = 0x1C
_CR = 0x0D
_BLANKS = (b"\r", b"\n")  # tolerated between frames without a report (senders often add CR LF)


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete frame's payload (without the block characters)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Oversize:
    """A frame longer than the limit: its first bytes and its total payload size."""

    prefix: bytes
    size: int


@dataclass(frozen=True, slots=True)
class Garbage:
    """How many bytes outside any frame were discarded (never the bytes themselves)."""

    count: int


@dataclass(frozen=True, slots=True)
class Incomplete:
    """A frame still open when the stream ended; ``size`` payload bytes were discarded."""

    size: int


Event = Frame | Oversize | Garbage | Incomplete


def frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in MLLP block characters.

    >>> frame(b"MSH|")
    b'\\x0bMSH|\\x1c\\r'
    """
    return START_BLOCK + payload + END_BLOCK


class MllpFramer:
    """Turns a byte stream into MLLP events; one instance per connection.

    Tolerated deviations (all seen from real senders): bytes between frames are dropped
    and counted (bare CR and LF silently); a start block inside an open frame ends that
    frame (the end block was omitted); ``0x1C`` alone ends a frame (the CR is optional);
    empty frames are ignored. A frame over ``max_frame_bytes`` keeps only its first
    ``prefix_bytes`` (enough for the MSH segment, so a NACK can be built) and is reported
    once, as ``Oversize``, when it ends.
    """

    def __init__(self, max_frame_bytes: int = 10 * 1024 * 1024, prefix_bytes: int = 4096) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes
        self._prefix = min(prefix_bytes, max_frame_bytes)
        self._buf = bytearray()
        self._size = 0  # payload bytes of the open frame; exceeds len(_buf) once oversize
        self._in_frame = False
        self._after_end = False  # just saw 0x1C: a CR right after it is part of the end block
        self._garbage = 0
        self._next_end = -1

    @property
    def pending_bytes(self) -> int:
        """Payload bytes of the frame currently open (0 between frames)."""
        return self._size if self._in_frame else 0

    def feed(self, data: bytes) -> list[Event]:
        """Consume ``data`` and return the events it completes, in stream order."""
        events: list[Event] = []
        pos, end = 0, len(data)
        self._next_end = -1  # position of the next 0x1C in ``data`` (len(data): none)
        while pos < end:
            if self._after_end:
                self._after_end = False
                if data[pos] == _CR:
                    pos += 1
                    continue
            if self._in_frame:
                pos = self._scan_frame(data, pos, events)
            else:
                pos = self._scan_outside(data, pos, events)
        return events

    def close(self) -> list[Event]:
        """End of stream: report what is discarded (an open frame, pending garbage) and reset."""
        events: list[Event] = []
        if self._in_frame and self._size:
            events.append(Incomplete(self._size))
        if self._garbage:
            events.append(Garbage(self._garbage))
        self._reset_frame()
        self._in_frame = self._after_end = False
        self._garbage = 0
        return events

    def _scan_outside(self, data: bytes, pos: int, events: list[Event]) -> int:
        start = data.find(START_BLOCK, pos)
        stop = len(data) if start < 0 else start
        if stop > pos:
            self._count_garbage(data[pos:stop])
        if start < 0:
            return stop
        self._open(events)
        return start + 1

    def _scan_frame(self, data: bytes, pos: int, events: list[Event]) -> int:
        # bytes.find (memchr) is far faster than a regex; the next 0x1C is remembered so
        # that many start blocks before it do not rescan the chunk (linear time always).
        if self._next_end < pos:
            found = data.find(END_BYTE, pos)
            self._next_end = len(data) if found < 0 else found
        start = data.find(START_BLOCK, pos, self._next_end)
        stop = self._next_end if start < 0 else start
        self._append(data, pos, stop)
        if stop == len(data):
            return stop
        self._finish(events)
        if data[stop] == _END:
            self._after_end = True
        else:  # a start block inside a frame: the sender left out the end block
            self._open(events)
        return stop + 1

    def _count_garbage(self, chunk: bytes) -> None:
        self._garbage += len(chunk) - sum(chunk.count(blank) for blank in _BLANKS)

    def _open(self, events: list[Event]) -> None:
        if self._garbage:
            events.append(Garbage(self._garbage))
            self._garbage = 0
        self._reset_frame()
        self._in_frame = True

    def _append(self, data: bytes, pos: int, stop: int) -> None:
        if stop <= pos:
            return
        self._size += stop - pos
        if self._size <= self.max_frame_bytes:
            self._buf += memoryview(data)[pos:stop]
            return
        # Oversize: keep only the prefix so memory stays bounded, count the rest.
        room = self._prefix - len(self._buf)
        if room < 0:
            del self._buf[self._prefix :]
        elif room > 0:
            self._buf += memoryview(data)[pos : min(stop, pos + room)]

    def _finish(self, events: list[Event]) -> None:
        if self._size > self.max_frame_bytes:
            events.append(Oversize(bytes(self._buf), self._size))
        elif self._size:
            events.append(Frame(bytes(self._buf)))
        self._reset_frame()
        self._in_frame = False

    def _reset_frame(self) -> None:
        self._buf = bytearray()
        self._size = 0
