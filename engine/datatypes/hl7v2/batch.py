"""Batch files (FHS/BHS ... BTS/FTS) and multi-message files, split into single messages.

Works on bytes: CR and LF never occur inside a multi-byte character of the supported
(ASCII-compatible) charsets, so no decoding is needed to find segment boundaries.
"""

from __future__ import annotations

import re

from engine.datatypes.hl7v2.charsets import BOM

_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")
# A batch or file trailer at the start of a line: a single message followed by BTS/FTS.
_TRAILER = re.compile(rb"[\r\n][ \t]*(?:BTS|FTS)")
_TRAILER_SPAN = 1024  # BTS and FTS with their counts and comments fit in the last KiB
# A bare LF that starts a segment: a segment id, then a non-alphanumeric separator or the
# line's end (as ``message.split_segments`` decides, without knowing the field separator).
_SEGMENT_LF = re.compile(rb"\n(?=[ \t]*[A-Z0-9]{3}(?:[^A-Za-z0-9 \t]|$))")


def split(raw: bytes) -> list[bytes]:
    """Split ``raw`` into messages, each with its segments joined (and ended) by CR.

    Envelope segments (FHS, BHS, BTS, FTS) are dropped, trailers are optional, also after
    a single message. Segments found before the first MSH that are not envelope segments
    are kept as one item of their own, so that they fail parsing alone instead of being
    lost. A payload holding a single message and no envelope comes back unchanged as
    ``[raw]``.

    >>> split(b"MSH|^~\\\\&|A\\nPID|1\\nMSH|^~\\\\&|B\\n")
    [b'MSH|^~\\\\&|A\\rPID|1\\r', b'MSH|^~\\\\&|B\\r']
    """
    body = raw[len(BOM) :] if raw.startswith(BOM) else raw
    if body.lstrip()[:3] not in _ENVELOPE and body.count(b"MSH") <= 1 and not _has_trailer(body):
        return [raw]  # the common case: one message, nothing to do
    if b"\r" in body:  # CR-ended segments: a bare LF is a line break inside a field unless a segment follows
        lines = _SEGMENT_LF.sub(b"\r", body.replace(b"\r\n", b"\r")).split(b"\r")
    else:
        lines = body.split(b"\n")
    messages: list[list[bytes]] = []
    current: list[bytes] | None = None
    enveloped = False
    for line in lines:
        segment = line[len(BOM) :] if line.startswith(BOM) else line  # files concatenated with their BOMs
        if not segment.strip():
            continue
        head = segment.lstrip()[:3]
        if head in _ENVELOPE:
            current = None
            enveloped = True
            continue
        if head == b"MSH" or current is None:
            current = []
            messages.append(current)
        current.append(segment.lstrip() if head == b"MSH" else segment)
    if len(messages) <= 1 and not enveloped:
        return [raw]
    return [b"\r".join(segments) + b"\r" for segments in messages]


def _has_trailer(body: bytes) -> bool:
    """Whether BTS/FTS trailers follow the message: they close the payload, so only its end
    is searched (the hot path must not scan every message twice)."""
    start = max(0, len(body) - _TRAILER_SPAN)
    return body.find(b"TS", start) >= 0 and _TRAILER.search(body, start) is not None
