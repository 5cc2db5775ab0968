"""Batch files (FHS/BHS ... BTS/FTS) and multi-message files, split into single messages.

Works on bytes: CR and LF never occur inside a multi-byte character of the supported
(ASCII-compatible) charsets, so no decoding is needed to find segment boundaries.
"""

from __future__ import annotations

from engine.datatypes.hl7v2.charsets import BOM

_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")


def split(raw: bytes) -> list[bytes]:
    """Split ``raw`` into messages, each with its segments joined (and ended) by CR.

    Envelope segments (FHS, BHS, BTS, FTS) are dropped, trailers are optional. Segments
    found before the first MSH that are not envelope segments are kept as one item of
    their own, so that they fail parsing alone instead of being lost. A payload holding a
    single message comes back unchanged as ``[raw]``.

    >>> split(b"MSH|^~\\\\&|A\\nPID|1\\nMSH|^~\\\\&|B\\n")
    [b'MSH|^~\\\\&|A\\rPID|1\\r', b'MSH|^~\\\\&|B\\r']
    """
    body = raw[len(BOM) :] if raw.startswith(BOM) else raw
    if body.lstrip()[:3] not in _ENVELOPE and body.count(b"MSH") <= 1:
        return [raw]  # the common case: one message, nothing to do
    lines = body.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    messages: list[list[bytes]] = []
    current: list[bytes] | None = None
    for line in lines:
        segment = line[len(BOM) :] if line.startswith(BOM) else line  # files concatenated with their BOMs
        if not segment.strip():
            continue
        head = segment.lstrip()[:3]
        if head in _ENVELOPE:
            current = None
            continue
        if head == b"MSH" or current is None:
            current = []
            messages.append(current)
        current.append(segment.lstrip() if head == b"MSH" else segment)
    if len(messages) <= 1 and body.lstrip()[:3] not in _ENVELOPE:
        return [raw]
    return [b"\r".join(segments) + b"\r" for segments in messages]
