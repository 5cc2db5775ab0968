"""The cheap MSH reader behind ``header`` (hot path: no full decode, no segment split)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.contracts import Header
from engine.core.errors import ParseError
from engine.datatypes.hl7v2 import charsets
from engine.datatypes.hl7v2.charsets import BOM
from engine.datatypes.hl7v2.encoding import DEFAULT, Encoding, from_msh

HEADER_FIELDS = (3, 4, 5, 6, 9, 10, 11, 12, 15, 16, 18)
_BATCH_HEADERS = (b"FHS", b"BHS")  # a batch header before the first MSH is not the message header


@dataclass(frozen=True)
class Msh:
    """An MSH segment split into fields: ``fields[n]`` is MSH-n (``fields[1]`` the separator)."""

    encoding: Encoding
    fields: list[str]
    rough: bool = False  # MSH-2 unusable: split on the field separator alone (``rough_msh``)

    def field(self, number: int) -> str:
        return self.fields[number] if number < len(self.fields) else ""

    def component(self, number: int, component: int) -> str:
        parts = self.field(number).split(self.encoding.component)
        return parts[component - 1] if component <= len(parts) else ""


def split_msh(segment: str) -> Msh | None:
    """Split an MSH segment; None when it is not one or its delimiters are unusable."""
    if not segment.startswith("MSH"):
        return None
    try:
        enc = from_msh(segment)
    except ParseError:
        return None
    fields = segment.split(enc.field)
    fields.insert(1, enc.field)
    return Msh(enc, fields)


def rough_msh(segment: str) -> Msh | None:
    """An MSH whose encoding characters (MSH-2) are unusable, split on its field separator
    alone (with the default component separator), so that the AR refusing it can still
    mirror MSH-3 to MSH-6, MSH-10 and MSH-12, and the store keeps its control id. None when
    not even the field separator is usable."""
    if not segment.startswith("MSH") or len(segment) < 5:
        return None
    fs = segment[3]
    if fs.isalnum() or fs.isspace():
        return None
    fields = segment.split(fs)
    fields.insert(1, fs)
    fields[2] = ""  # the unusable encoding characters are not mirrored
    return Msh(Encoding(field=fs) if fs != "|" else DEFAULT, fields, rough=True)


def msh_line(raw: bytes) -> bytes | None:
    """The bytes of the first MSH segment (after a BOM, blank lines and FHS/BHS), or None."""
    pos = len(BOM) if raw.startswith(BOM) else 0
    size = len(raw)
    while pos < size:
        end = _line_end(raw, pos)
        line = raw[pos:end].strip()
        pos = end + 1
        if not line or line.startswith(_BATCH_HEADERS):
            continue
        return line if line.startswith(b"MSH") else None
    return None


def _line_end(raw: bytes, start: int) -> int:
    ends = [pos for pos in (raw.find(b"\r", start), raw.find(b"\n", start)) if pos >= 0]
    return min(ends) if ends else len(raw)


def read_msh(raw: bytes, charset: str = "auto") -> Msh | None:
    """Decode and split only the first MSH segment of ``raw``. Never raises."""
    line = msh_line(raw)
    if line is None:
        return None
    if charset == "auto" and raw.startswith(BOM):
        charset = "utf-8"
    try:
        text, _ = charsets.decode(line, charset)
    except ParseError:
        text = line.decode("latin-1")  # the configured charset does not fit; the structure is ASCII
    return split_msh(text) or rough_msh(text)


def header(raw: bytes, charset: str = "auto") -> Header:
    """Control id, message type, business key and routing fields read from MSH; empty on garbage.

    The business key is empty when MSH-10 is, so that messages without a control id are
    never taken for duplicates of each other.
    """
    msh = read_msh(raw, charset)
    if msh is None:
        return Header()
    return header_of(msh)


def header_of(msh: Msh) -> Header:
    """The ``Header`` of an MSH segment already split (by ``read_msh`` or by the parser)."""
    control_id = msh.field(10)
    key = f"{control_id}|{msh.field(4)}|{msh.field(3)}" if control_id else ""
    message_type = msh.field(9)
    return Header(
        control_id=control_id,
        message_type="^".join(message_type.split(msh.encoding.component)) if message_type else "",
        business_key=key,
        fields={f"MSH-{n}": msh.field(n) for n in HEADER_FIELDS},
    )
