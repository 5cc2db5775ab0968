"""A minimal HL7 v2 reader for what an MLLP sender must check: MSH-10 and MSA-1..3.

The connector moves bytes and does not depend on the hl7v2 data type; reading three
fields does not need a parser.

    >>> read_ack(b"MSH|^~\\\\&|LAB||ENGINE||202401011200||ACK|A1|P|2.5\\rMSA|AA|MSG1")
    Ack(code='AA', control_id='MSG1', text='')
    >>> control_id(b"MSH|^~\\\\&|EHR||LAB||202401011200||ADT^A01|MSG1|P|2.5\\rPID|1")
    'MSG1'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SEGMENT_BREAK = re.compile(rb"\r\n|\r|\n")
_LEADING = b"\xef\xbb\xbf \t"  # a UTF-8 BOM or blanks before MSH
MAX_TEXT_CHARS = 200


@dataclass(frozen=True)
class Ack:
    """MSA-1 (code), MSA-2 (the acknowledged control id) and MSA-3 (text, shortened)."""

    code: str
    control_id: str
    text: str


def _segments(message: bytes) -> list[bytes]:
    return [segment.lstrip(_LEADING) for segment in _SEGMENT_BREAK.split(message)]


def _field_separator(segments: list[bytes]) -> bytes:
    for segment in segments:
        if segment.startswith(b"MSH") and len(segment) > 3:
            return segment[3:4]
    return b"|"


def _field(fields: list[bytes], index: int) -> str:
    return fields[index].decode("latin-1").strip() if index < len(fields) else ""


def control_id(message: bytes) -> str:
    """MSH-10 of ``message``, or "" when it has no MSH segment or no MSH-10."""
    segments = _segments(message)
    separator = _field_separator(segments)
    for segment in segments:
        if segment.startswith(b"MSH" + separator):
            # MSH-1 is the separator itself, so MSH-n sits at index n - 1 after the split.
            return _field(segment.split(separator), 9)
    return ""


def read_ack(message: bytes) -> Ack | None:
    """The MSA fields of an acknowledgement, or None when there is no MSA segment."""
    segments = _segments(message)
    separator = _field_separator(segments)
    for segment in segments:
        if segment.startswith(b"MSA" + separator):
            fields = segment.split(separator)
            return Ack(_field(fields, 1).upper(), _field(fields, 2), _clean(_field(fields, 3)))
    return None


def _clean(text: str) -> str:
    """Printable text only, at most MAX_TEXT_CHARS, for error messages."""
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return printable[:MAX_TEXT_CHARS]
