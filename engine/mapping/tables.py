"""Reference tables (crosswalks, item master, charge master) for mapping lookups.

A table is a CSV file ``mappings/tables/NAME.csv``: UTF-8 with or without a BOM, a header
row, and the first column as the key unless a lookup names another ``key_column``. Each
table carries a content hash (``version``) so the store can record which version a message
was mapped with; ``Tables.generation`` counts reloads.

>>> tables = Tables()
>>> _ = tables.add("uom", [{"unit": "BX", "factor": "10"}])
>>> tables.lookup("uom", "BX", column="factor"), tables.lookup("uom", "bx", column="factor", ignore_case=True)
('10', '10')
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from engine.core.errors import ConfigError, Diagnostic, Location

Row = dict[str, str]


class UnknownTable(LookupError):
    """A lookup named a table that is not loaded."""


class UnknownColumn(LookupError):
    """A lookup named a column the table does not have."""


class Table:
    """One immutable table with per-key-column indexes built on first use."""

    __slots__ = ("_indexes", "columns", "name", "rows", "source", "version")

    def __init__(self, name: str, columns: Iterable[str], rows: Iterable[Row], source: str = "") -> None:
        self.name = name
        self.columns = tuple(columns)
        self.rows = tuple(rows)
        self.source = source
        self.version = _content_hash(self.columns, self.rows)
        self._indexes: dict[tuple[str, bool], dict[str, Row]] = {}
        if self.columns:
            self._index(self.columns[0], False)  # the common case, built before first use

    def __len__(self) -> int:
        return len(self.rows)

    def find(self, key: str, key_column: str | None = None, *, ignore_case: bool = False) -> Row | None:
        """The first row whose ``key_column`` (default: the first column) equals ``key``."""
        column = key_column or (self.columns[0] if self.columns else "")
        index = self._indexes.get((column, ignore_case))
        if index is None:
            index = self._index(column, ignore_case)
        return index.get(key.casefold() if ignore_case else key)

    def _index(self, column: str, ignore_case: bool) -> dict[str, Row]:
        if column not in self.columns:
            raise UnknownColumn(f"table {self.name} has no column {column}")
        index: dict[str, Row] = {}
        for row in self.rows:
            key = row.get(column, "")
            index.setdefault(key.casefold() if ignore_case else key, row)
        # Assigning a finished dict is atomic, so concurrent readers never see half an index.
        self._indexes[(column, ignore_case)] = index
        return index


def _content_hash(columns: tuple[str, ...], rows: tuple[Row, ...]) -> str:
    body = json.dumps([columns, [[row.get(c, "") for c in columns] for row in rows]], ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]


def read_csv(path: str | Path, name: str | None = None) -> Table:
    """Read one CSV table; raise ``ConfigError`` (file:line) for structural problems.

    Problems are described without quoting cells: reference data can hold identifiers.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Diagnostic(Location(str(file)), "", f"cannot read table: {exc}")]) from None
    return parse_csv(text, name or file.stem, str(file))


def parse_csv(text: str, name: str, source: str = "") -> Table:
    """Parse CSV text (header row first) into a ``Table``."""
    where = source or f"<table {name}>"
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header = next(reader, None)
    if not header or any(not column.strip() for column in header):
        raise ConfigError([Diagnostic(Location(where, 1, 1), "", "expected a header row naming every column")])
    columns = [column.strip() for column in header]
    problems: list[Diagnostic] = []
    if len(set(columns)) != len(columns):
        problems.append(Diagnostic(Location(where, 1, 1), "", "column names must be unique"))
    rows: list[Row] = []
    first_seen: dict[str, int] = {}
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(columns):
            message = f"expected {len(columns)} cells like the header; found {len(cells)}"
            problems.append(Diagnostic(Location(where, line, 1), "", message))
            continue
        key = cells[0]
        if key in first_seen:
            message = f"duplicate key in column {columns[0]} (first on line {first_seen[key]})"
            problems.append(Diagnostic(Location(where, line, 1), "", message))
            continue
        first_seen[key] = line
        rows.append(dict(zip(columns, cells, strict=True)))
    if problems:
        raise ConfigError(problems)
    return Table(name, columns, rows, source)


class Tables:
    """Named reference tables; reloading swaps the whole set at once."""

    def __init__(self, tables: Mapping[str, Table] | None = None) -> None:
        self._tables: dict[str, Table] = dict(tables or {})
        self.generation = 0

    @classmethod
    def from_dir(cls, path: str | Path) -> Tables:
        """A new set loaded from ``path/*.csv``."""
        tables = cls()
        tables.load_dir(path)
        return tables

    def load_dir(self, path: str | Path) -> None:
        """Replace every table by the ``*.csv`` files of ``path`` (atomically).

        All files are read first; if any is invalid, ``ConfigError`` lists every problem
        and the tables in use stay as they were.
        """
        loaded: dict[str, Table] = {}
        problems: list[Diagnostic] = []
        for file in sorted(Path(path).glob("*.csv")):
            try:
                loaded[file.stem] = read_csv(file)
            except ConfigError as exc:
                problems.extend(exc.diagnostics)
        if problems:
            raise ConfigError(problems)
        self._swap(loaded)

    def add(self, name: str, rows: Iterable[Mapping[str, Any]], columns: Iterable[str] | None = None) -> Table:
        """Add or replace one table from rows (dicts); values are kept as text."""
        materialised = [{str(k): "" if v is None else str(v) for k, v in row.items()} for row in rows]
        names = list(columns) if columns is not None else list(dict.fromkeys(k for r in materialised for k in r))
        table = Table(name, names, materialised)
        self._swap({**self._tables, name: table})
        return table

    def put(self, table: Table) -> None:
        """Add or replace one table (e.g. one read with ``read_csv`` from a channel's drop)."""
        self._swap({**self._tables, table.name: table})

    def _swap(self, tables: dict[str, Table]) -> None:
        self._tables = tables
        self.generation += 1

    def get(self, name: str) -> Table:
        table = self._tables.get(name)
        if table is None:
            raise UnknownTable(f"table {name} is not loaded")
        return table

    def __contains__(self, name: object) -> bool:
        return name in self._tables

    def names(self) -> list[str]:
        return sorted(self._tables)

    def versions(self) -> dict[str, str]:
        """Content hash per table, for recording with a mapped message."""
        return {name: table.version for name, table in sorted(self._tables.items())}

    def lookup(
        self,
        name: str,
        key: str,
        *,
        key_column: str | None = None,
        column: str | None = None,
        ignore_case: bool = False,
    ) -> Any:
        """The ``column`` of the matching row, the row itself when no column is given, or None."""
        table = self.get(name)
        row = table.find(key, key_column, ignore_case=ignore_case)
        if row is None:
            return None
        if column is None:
            return dict(row)  # a copy: callers may change it, the table must not change
        if column not in row:
            raise UnknownColumn(f"table {name} has no column {column}")
        return row[column]
