"""A parsed flat file (records of named fields) and its path syntax.

Paths name a field, optionally inside a record selection: ``Item Number``, ``#3`` (the
third field, counted from 1), ``H/batch_date`` (a field of the header record type ``H``),
``D[2]/price`` (the second ``D`` record), ``preamble[2]/#1`` (a row before the header).
Only the first ``/`` separates the record from the field, so ``rows/Cost/Unit`` reads the
column ``Cost/Unit``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from engine.core.contracts import Document

SYNTAX = """\
[RECORD/]FIELD, where FIELD is a column or field name or #n (the n-th, counted from 1):
  Item Number        the column "Item Number" (data rows; in a row view, that row)
  #3                 the third column
  H/batch_date       field batch_date of the header record type H
  T/record_count     the trailer's count
  D[2]/price         the second D record only (occurrences count from 1)
  preamble[2]/#1     a row skipped before the column header (skip_rows)
  rows/Cost/Unit     the column "Cost/Unit": only the first / separates a record
iterate("rows") gives one view per data record (iterate("D") per record of type D); in
a view, a path without a record reads that record, and H/..., T/... read the file.
Typed fields (int, decimal, date) read back normalised: 12.50, 2024-03-01."""

_PATH = re.compile(r"^(?:(?P<record>[A-Za-z0-9_-]{1,10})(?:\[(?P<occ>[1-9]\d*)\])?/)?(?P<field>.+)$", re.S)
_SELECTOR = re.compile(r"^(?P<record>[A-Za-z0-9_-]{1,10})(?:\[(?P<occ>[1-9]\d*)\])?$")
_INDEX = re.compile(r"^#([1-9]\d*)$")


@dataclass(frozen=True, slots=True)
class FlatPath:
    """A parsed path: an optional record selection, then a field by name or 1-based index."""

    record: str | None
    occurrence: int  # 1-based; 0 = every record of the selection
    name: str | None
    index: int  # 1-based; 0 = by name


@lru_cache(maxsize=1024)
def parse_path(path: str) -> FlatPath:
    """Parse a flat-file path; ``ValueError`` with the syntax when invalid.

    >>> parse_path("H/batch_date")
    FlatPath(record='H', occurrence=0, name='batch_date', index=0)
    >>> parse_path("D[2]/#3")
    FlatPath(record='D', occurrence=2, name=None, index=3)
    """
    text = path.strip()
    if text.endswith("/"):
        raise ValueError(f"invalid flat-file path {path!r}: the field name after / is empty")
    match = _PATH.match(text) if text else None
    if match is None:
        raise ValueError(f"invalid flat-file path {path!r}: expected FIELD, #n or RECORD/FIELD (e.g. H/batch_date)")
    field = match.group("field").strip()
    if not field:
        raise ValueError(f"invalid flat-file path {path!r}: the field name after / is empty")
    record, occurrence = match.group("record"), int(match.group("occ") or 0)
    index = _INDEX.match(field)
    if index is not None:
        return FlatPath(record, occurrence, None, int(index.group(1)))
    if field.startswith("#"):
        raise ValueError(f"invalid flat-file path {path!r}: #n needs a field number counted from 1")
    return FlatPath(record, occurrence, field, 0)


def parse_selector(path: str) -> tuple[str, int]:
    """Parse an ``iterate`` selection: ``rows``, a record type code, optionally with ``[n]``.

    >>> parse_selector("D")
    ('D', 0)
    """
    match = _SELECTOR.match(path.strip())
    if match is None:
        raise ValueError(f"invalid record selection {path!r}: expected rows, preamble or a record type code such as D")
    return match.group("record"), int(match.group("occ") or 0)


class Record:
    """One record of the file: its type code, role, row number and field values."""

    __slots__ = ("cells", "code", "names", "number", "role")

    def __init__(self, code: str, role: str, number: int, cells: list[str], names: dict[str, int]) -> None:
        self.code = code  # record type code; "rows" for a file without record types
        self.role = role  # header, data, trailer or preamble
        self.number = number  # row (line) number in the file, counted from 1
        self.cells = cells
        self.names = names  # field name -> 0-based position, shared by records of a layout

    def value(self, path: FlatPath) -> str | None:
        """The field's text ('' when empty), or None when the record has no such field."""
        position = path.index - 1 if path.index else self.names.get(path.name or "", -1)
        if position < 0:
            return None
        return self.cells[position] if position < len(self.cells) else ""

    def to_data(self) -> dict[str, Any]:
        by_position = {i: n for n, i in self.names.items()}
        fields = {by_position.get(i, f"#{i + 1}"): v for i, v in enumerate(self.cells)}
        return {"type": self.code, "row": self.number, "fields": fields}


class FlatDocument:
    """A parsed flat file (Document protocol): preamble rows, then header, data and trailer records."""

    __slots__ = ("by_code", "data", "preamble", "records")

    def __init__(self, records: list[Record], preamble: list[Record]) -> None:
        self.records = records
        self.preamble = preamble
        self.data = [r for r in records if r.role == "data"]
        self.by_code: dict[str, list[Record]] = {}
        for record in records:
            self.by_code.setdefault(record.code, []).append(record)

    def select(self, code: str | None, occurrence: int = 0) -> list[Record]:
        """Records of a selection: data records (None or ``rows``), ``preamble`` or one type."""
        if code is None or code == "rows":
            chosen = self.data
        elif code == "preamble":
            chosen = self.preamble
        else:
            chosen = self.by_code.get(code, [])
        if occurrence:
            return chosen[occurrence - 1 : occurrence]
        return chosen

    def _values(self, path: FlatPath) -> list[str]:
        values = []
        for record in self.select(path.record, path.occurrence):
            value = record.value(path)
            if value is not None:
                values.append(value)
        return values

    def get(self, path: str) -> str | None:
        return next((v for v in self._values(parse_path(path)) if v), None)

    def get_all(self, path: str) -> list[str]:
        return self._values(parse_path(path))

    def iterate(self, path: str) -> list[Document]:
        code, occurrence = parse_selector(path)
        return [RecordView(record, self) for record in self.select(code, occurrence)]

    def to_data(self) -> Any:
        return {
            "preamble": [r.cells for r in self.preamble],
            "records": [r.to_data() for r in self.records],
        }


class RecordView:
    """One record seen by a mapping's ``for_each`` (Document protocol)."""

    __slots__ = ("doc", "record")

    def __init__(self, record: Record, doc: FlatDocument) -> None:
        self.record = record
        self.doc = doc

    def _own(self, path: FlatPath) -> bool:
        if path.record is None:
            return True
        if path.occurrence:
            return False
        return path.record == self.record.code or (path.record == "rows" and self.record.role == "data")

    def get(self, path: str) -> str | None:
        parsed = parse_path(path)
        if self._own(parsed):
            return self.record.value(parsed) or None
        return self.doc.get(path)

    def get_all(self, path: str) -> list[str]:
        parsed = parse_path(path)
        if self._own(parsed):
            value = self.record.value(parsed)
            return [] if value is None else [value]
        return self.doc.get_all(path)

    def iterate(self, path: str) -> list[Document]:
        return self.doc.iterate(path)

    def to_data(self) -> Any:
        return self.record.to_data()
