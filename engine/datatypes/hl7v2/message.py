"""The hot-path parser and the parsed message (a ``Document``).

Segments are split once at parse time; fields, repetitions and components are split
only when a path asks for them, and each segment's fields are cached.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from engine.core.errors import ParseError
from engine.datatypes.hl7v2 import charsets
from engine.datatypes.hl7v2.encoding import Encoding, from_msh, unescape
from engine.datatypes.hl7v2.paths import ALL, Path, parse_path

# In these segments field 1 is the field separator itself, so numbering is shifted by one.
HEADER_SEGMENTS = frozenset({"MSH", "FHS", "BHS"})

_REQUIRED_MSH = ((9, "message type"), (10, "message control id"), (12, "version id"))


def split_segments(text: str) -> list[str]:
    """Split on CR, LF or CRLF (mixed too); drop blank and whitespace-only segments.

    In a message that ends its segments with CR (or CRLF), a bare LF ends a segment only
    where a segment id and the field separator follow it: senders put line breaks inside
    note and report fields (where HL7 wants ``\\.br\\``), and those stay in the field.
    """
    separator = "\r"
    if "\n" in text:  # single-character tests are cheap; most MLLP traffic is CR only
        if "\r" in text:
            text = text.replace("\r\n", "\r")
            if "\n" in text:
                text = _segment_lf(text[3:4] if text.startswith(("MSH", "FHS", "BHS")) else "|").sub("\r", text)
        else:
            separator = "\n"
    lines = text.split(separator)
    return [line for line in lines if line and not line.isspace()]


@lru_cache(maxsize=16)
def _segment_lf(fs: str) -> re.Pattern[str]:
    """A bare LF followed by a segment id and the field separator (or the end of a line)."""
    return re.compile(r"\n(?=[A-Z0-9]{3}(?:" + re.escape(fs) + r"|[\r\n]|$))")


def parse(raw: bytes, charset: str = "auto") -> Hl7Message:
    """Parse one message; raise ``ParseError`` (never quoting content) when it is not HL7 v2."""
    if not raw.strip():
        raise ParseError("message is empty", "", "100")
    text, codec = charsets.decode(raw, charset)
    segments = split_segments(text.lstrip())
    if not segments:
        raise ParseError("message is empty", "", "100")
    if not segments[0].startswith("MSH"):
        raise ParseError("message does not start with MSH", "segment 1", "100")
    enc = from_msh(segments[0])
    _check_segment_ids(segments, enc.field)
    msh = _check_msh(segments[0], enc)
    return Hl7Message(segments, enc, codec, msh_fields=msh)


def _check_segment_ids(segments: list[str], fs: str) -> None:
    for number, segment in enumerate(segments, 1):
        sid = segment[:3]
        valid = len(sid) == 3 and sid.isascii() and sid.isalnum() and (sid.isupper() or sid.isdigit())
        if not valid or (len(segment) > 3 and segment[3] != fs):
            raise ParseError("segment id must be 3 upper-case letters or digits", f"segment {number}", "100")


def _check_msh(msh: str, enc: Encoding) -> list[str]:
    """Check MSH-9, -10 and -12; return the fields numbered as the standard does (MSH-1 = separator)."""
    fields = msh.split(enc.field)  # fields[n - 1] is MSH-n for n >= 2 until the insert below
    for number, name in _REQUIRED_MSH:
        position = f"segment 1 (MSH), field {number}"
        if len(fields) < number:
            raise ParseError(f"MSH segment is too short: it ends before field {number} ({name})", position, "101")
        if not fields[number - 1].strip():
            raise ParseError(f"MSH-{number} ({name}) is empty", position, "101")
    if not fields[8].split(enc.component)[0].strip():
        raise ParseError("MSH-9.1 (message code) is empty", "segment 1 (MSH), field 9", "101")
    fields.insert(1, enc.field)
    return fields


class Hl7Message:
    """A parsed HL7 v2 message, read by path (see ``paths.SYNTAX``).

    >>> msg = parse(b"MSH|^~\\\\&|APP|FAC|||20240101||ADT^A01|42|P|2.5\\rPID|1||123^^^MRN~456")
    >>> msg.get("MSH-9.2"), msg.get("PID-3[2]"), msg.get_all("PID-3[*].1")
    ('A01', '456', ['123', '456'])
    """

    __slots__ = ("_fields", "_index", "charset", "encoding", "segments")

    def __init__(
        self, segments: list[str], encoding: Encoding, charset: str, *, msh_fields: list[str] | None = None
    ) -> None:
        self.segments = segments
        self.encoding = encoding
        self.charset = charset  # the codec the bytes were decoded with
        self._index: dict[str, list[int]] | None = None
        self._fields: list[list[str] | None] = [None] * len(segments)
        self._fields[0] = msh_fields  # already split while checking MSH

    @property
    def msh_fields(self) -> list[str] | None:
        """MSH split into fields as the parser checked it (``[n]`` is MSH-n), if split yet."""
        return self._fields[0] if self.segments[0].startswith("MSH") else None

    # -- Document protocol -------------------------------------------------------------
    def get(self, path: str) -> str | None:
        """The first non-empty value at ``path``, unescaped, or None."""
        p = parse_path(path)
        if p.occurrence == ALL or p.repetition == ALL:
            return next((value for value in self._values(p, expand=False) if value), None)
        # The common case, kept free of generators: one segment, one repetition.
        indices = self._segment_index().get(p.segment)
        number = p.occurrence or 1
        if not indices or number > len(indices):
            return None
        i = indices[number - 1]
        if p.field is None:
            return self.segments[i]
        return self._single(self._fields_of(i), p) or None

    def get_all(self, path: str) -> list[str]:
        """One value per segment occurrence (and per repetition with ``[*]``); "" where empty."""
        return self._values(parse_path(path), expand=True)

    def iterate(self, path: str) -> list[Hl7Scope]:
        """One view per occurrence of a segment (``FT1``): inside a view, paths to that
        segment without an explicit ``[n]`` read its occurrence; other paths read the message.

        >>> msg = parse(b"MSH|^~\\\\&|A|B|||1||DFT^P03|7|P|2.5\\rFT1|1||X\\rFT1|2||Y")
        >>> [line.get("FT1-3") for line in msg.iterate("FT1")], msg.iterate("FT1")[1].get("MSH-10")
        (['X', 'Y'], '7')
        """
        p = parse_path(path)
        if p.field is not None or p.occurrence is not None:
            raise ValueError(f"iterate takes a segment id such as FT1, not {path!r}")
        count = len(self._segment_index().get(p.segment, ()))
        return [Hl7Scope(self, p.segment, n) for n in range(1, count + 1)]

    def to_data(self) -> dict[str, Any]:
        """A lossless JSON-friendly structure (see docs/datatypes/hl7v2.md)."""
        segments = []
        for i, segment in enumerate(self.segments):
            fields = self._fields_of(i)
            header = fields[0] in HEADER_SEGMENTS
            data = [f if header and n <= 2 else self._field_data(f) for n, f in enumerate(fields[1:], 1)]
            segments.append({"id": segment[:3], "fields": data})
        return {"charset": self.charset, "encoding": self.encoding.as_dict(), "segments": segments}

    # -- convenience ---------------------------------------------------------------------
    @property
    def message_type(self) -> str:
        """MSH-9 with its components joined by ``^`` (e.g. ``ADT^A01^ADT_A01``)."""
        return "^".join(self._fields_of(0)[9].split(self.encoding.component))

    @property
    def control_id(self) -> str:
        return self._fields_of(0)[10]

    @property
    def version(self) -> str:
        return self._fields_of(0)[12].split(self.encoding.component)[0]

    @property
    def text(self) -> str:
        """The message as written, with segments joined by CR."""
        return "\r".join(self.segments) + "\r"

    # -- internals -----------------------------------------------------------------------
    def _segment_index(self) -> dict[str, list[int]]:
        if self._index is None:
            index: dict[str, list[int]] = {}
            for i, segment in enumerate(self.segments):
                index.setdefault(segment[:3], []).append(i)
            self._index = index
        return self._index

    def _fields_of(self, i: int) -> list[str]:
        fields = self._fields[i]
        if fields is None:
            fields = self.segments[i].split(self.encoding.field)
            if fields[0] in HEADER_SEGMENTS:
                fields.insert(1, self.encoding.field)
            self._fields[i] = fields
        return fields

    def _values(self, path: Path, *, expand: bool) -> list[str]:
        indices = self._segment_index().get(path.segment, [])
        occurrence = path.occurrence
        if occurrence is None:
            chosen = indices if expand else indices[:1]
        elif occurrence == ALL:
            chosen = indices
        else:
            chosen = indices[occurrence - 1 : occurrence]
        values: list[str] = []
        for i in chosen:
            if path.field is None:
                values.append(self.segments[i])
            elif path.repetition == ALL and not self._is_delimiter_field(i, path.field):
                fields = self._fields_of(i)
                value = fields[path.field] if path.field < len(fields) else ""
                sep = self.encoding.repetition
                values.extend(self._leaf(text, path) for text in (value.split(sep) if value else []))
            else:
                values.append(self._single(self._fields_of(i), path))
        return values

    def _is_delimiter_field(self, i: int, number: int) -> bool:
        return number <= 2 and self.segments[i][:3] in HEADER_SEGMENTS

    def _single(self, fields: list[str], path: Path) -> str:
        """The value of one repetition (default the first) of one field; "" when absent."""
        number = path.field or 0
        if number >= len(fields):
            return ""
        value = fields[number]
        if number <= 2 and fields[0] in HEADER_SEGMENTS:
            # MSH-1 and MSH-2 hold the delimiters themselves: never split or unescape them.
            whole = (path.component or 1) == 1 and (path.subcomponent or 1) == 1 and path.repetition in (None, 1, ALL)
            return value if whole else ""
        sep = self.encoding.repetition
        rep = path.repetition or 1
        if sep in value:
            parts = value.split(sep)
            value = parts[rep - 1] if rep <= len(parts) else ""
        elif rep != 1:
            return ""
        return self._leaf(value, path)

    def _leaf(self, text: str, path: Path) -> str:
        enc = self.encoding
        if path.component is None:
            # A composite addressed as a whole is returned as written: unescaping it would
            # make escaped delimiters indistinguishable from real ones.
            if enc.component in text or enc.subcomponent in text:
                return text
            return unescape(text, enc, self.charset)
        components = text.split(enc.component)
        component = components[path.component - 1] if path.component <= len(components) else ""
        if path.subcomponent is None:
            if enc.subcomponent in component:
                return component
            return unescape(component, enc, self.charset)
        subs = component.split(enc.subcomponent)
        return unescape(subs[path.subcomponent - 1], enc, self.charset) if path.subcomponent <= len(subs) else ""

    def _field_data(self, value: str) -> Any:
        repetitions = value.split(self.encoding.repetition)
        if len(repetitions) > 1:
            return {"repetitions": [self._repetition_data(r) for r in repetitions]}
        return self._repetition_data(value)

    def _repetition_data(self, text: str) -> Any:
        enc = self.encoding
        if enc.component not in text and enc.subcomponent not in text:
            return unescape(text, enc, self.charset)
        return [self._component_data(c) for c in text.split(enc.component)]

    def _component_data(self, text: str) -> Any:
        enc = self.encoding
        if enc.subcomponent not in text:
            return unescape(text, enc, self.charset)
        return [unescape(s, enc, self.charset) for s in text.split(enc.subcomponent)]


class Hl7Scope:
    """A view of one segment occurrence, as ``Hl7Message.iterate`` returns (Document protocol)."""

    __slots__ = ("message", "occurrence", "segment")

    def __init__(self, message: Hl7Message, segment: str, occurrence: int) -> None:
        self.message = message
        self.segment = segment
        self.occurrence = occurrence

    def _scoped(self, path: str) -> str:
        text = path.strip()
        if text[:3] == self.segment and text[3:4] != "[":
            return f"{self.segment}[{self.occurrence}]{text[3:]}"
        return text

    def get(self, path: str) -> str | None:
        return self.message.get(self._scoped(path))

    def get_all(self, path: str) -> list[str]:
        return self.message.get_all(self._scoped(path))

    def iterate(self, path: str) -> list[Hl7Scope]:
        return self.message.iterate(path)

    def to_data(self) -> dict[str, Any]:
        return {"segment": self.segment, "occurrence": self.occurrence, "text": self.get(self.segment)}
