"""Turning rows of text cells into checked, typed records (shared by both flat data types)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.core.errors import ParseError
from engine.datatypes.flat.document import FlatDocument, Record
from engine.datatypes.flat.layout import Converter, FieldDef, RecordDef, converter


@dataclass(frozen=True, slots=True)
class Check:
    """A field that needs work at parse: a conversion and/or a required value."""

    position: int
    name: str
    convert: Converter | None
    required: bool


class Shape:
    """The fields of one record type: names by position and the checks to run per record."""

    __slots__ = ("checks", "code", "count_position", "counts", "names", "role", "width")

    def __init__(
        self, code: str, role: str, fields: Sequence[FieldDef], positions: Sequence[int] | None = None
    ) -> None:
        self.code = code
        self.role = role
        where = list(positions) if positions is not None else list(range(len(fields)))
        self.names: dict[str, int] = {}
        for field, position in zip(fields, where, strict=True):
            self.names.setdefault(field.name, position)
        self.checks = tuple(
            Check(position, field.name, converter(field), field.required)
            for field, position in zip(fields, where, strict=True)
            if field.required or field.type != "str"
        )
        self.width = len(fields)
        self.count_position = -1
        self.counts = "data"

    @classmethod
    def of_record(cls, code: str, record: RecordDef) -> Shape:
        shape = cls(code, record.role, record.fields)
        if record.count_field is not None:
            shape.count_position = shape.names[record.count_field]
            shape.counts = record.counts
        return shape

    def with_names(self, names: dict[str, int]) -> Shape:
        """The same checks, addressed by a header row's names (extra header columns included)."""
        clone = Shape(self.code, self.role, ())
        clone.names = names
        clone.checks = self.checks
        clone.width = self.width
        return clone

    def build(self, number: int, cells: list[str]) -> Record:
        """A record from one row's cells; ``ParseError`` naming the line and field (never the value)."""
        for check in self.checks:
            position = check.position
            text = cells[position] if position < len(cells) else ""
            if not text:
                if check.required:
                    raise ParseError("a required value is missing", f"line {number}, {self._label(check)}")
                continue
            if check.convert is not None:
                try:
                    cells[position] = check.convert(text)
                except ValueError as exc:
                    raise ParseError(str(exc), f"line {number}, {self._label(check)}") from None
        return Record(self.code, self.role, number, cells, self.names)

    def _label(self, check: Check) -> str:
        kind = "column" if self.code == "rows" else f"record {self.code}, field"
        return f"{kind} '{check.name}'"


def assemble(records: Iterable[Record], preamble: list[Record], shapes: dict[str, Shape]) -> FlatDocument:
    """Check the order of header/data/trailer records and the trailer's count; build the document."""
    ordered = list(records)
    header = next((s for s in shapes.values() if s.role == "header"), None)
    trailer = next((s for s in shapes.values() if s.role == "trailer"), None)
    seen_data = False
    for index, record in enumerate(ordered):
        if record.role == "header" and (seen_data or index > 0):
            raise ParseError(f"a header record ({record.code}) may only come first", f"line {record.number}")
        if record.role == "trailer" and index != len(ordered) - 1:
            later = ordered[index + 1]
            raise ParseError(f"a record follows the trailer ({record.code})", f"line {later.number}")
        seen_data = seen_data or record.role == "data"
    if header is not None and (not ordered or ordered[0].role != "header"):
        raise ParseError(f"the file has no header record ({header.code})", "line 1" if not ordered else "")
    if trailer is not None:
        if not ordered or ordered[-1].role != "trailer":
            raise ParseError(f"the file has no trailer record ({trailer.code}): it may be truncated")
        _check_count(ordered, trailer)
    return FlatDocument(ordered, preamble)


def _check_count(ordered: list[Record], trailer: Shape) -> None:
    if trailer.count_position < 0:
        return
    last = ordered[-1]
    stated_text = last.cells[trailer.count_position] if trailer.count_position < len(last.cells) else ""
    actual = len(ordered) if trailer.counts == "all" else sum(1 for r in ordered if r.role == "data")
    what = "records" if trailer.counts == "all" else "data records"
    name = next(n for n, p in trailer.names.items() if p == trailer.count_position)
    where = f"line {last.number}, record {trailer.code}, field '{name}'"
    if not stated_text:
        raise ParseError("the trailer's record count is empty", where)
    if int(stated_text) != actual:
        raise ParseError(f"the trailer counts {int(stated_text)} {what}, the file has {actual}", where)


def decode(raw: bytes, encoding: str) -> str:
    """Bytes to text; a UTF-8 byte order mark is dropped. ``ParseError`` names the line."""
    codec = "utf-8-sig" if encoding in ("utf-8", "utf-8-sig") else encoding
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ParseError(f"the file is not {encoding} text", f"line {line}, byte {exc.start + 1}") from None
