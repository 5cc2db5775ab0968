"""Configs and specs of the ``delimited`` and ``fixed-width`` data types (no parsing here)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Protocol, Self

from pydantic import Field, model_validator

from engine.core.channel import DataTypeConfig
from engine.core.contracts import Header
from engine.core.errors import ParseError
from engine.core.spec import Example, datatype_spec
from engine.datatypes.flat.document import SYNTAX, FlatPath, parse_path, parse_selector
from engine.datatypes.flat.layout import Encoding, FieldDef, RecordDef, TypeField, check_records


class _Named(Protocol):
    role: str
    names: dict[str, int]


class _Parses(Protocol):
    def parse(self, raw: bytes) -> Any: ...


LAYOUT_FILE = "A YAML file holding the layout keys (relative to the project); keys set here win."
PER_ROW = "One message per data record (rows before it and header/trailer kept) instead of one per file."
CONTROL = "Path of the value used as control id and duplicate key, e.g. H/batch_number."


class DelimitedConfig(DataTypeConfig):
    """Settings and layout of the ``delimited`` data type."""

    layout_file: str | None = Field(None, description=LAYOUT_FILE)
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator: , or | or a tab.")
    quote_char: str | None = Field(
        '"', min_length=1, max_length=1, description="Quote character; null when values are never quoted."
    )
    escape_char: str | None = Field(
        None, min_length=1, max_length=1, description="Escape character; default: a quote is escaped by doubling it."
    )
    encoding: Encoding = Field("utf-8", description="utf-8 (a BOM is dropped), utf-8-sig, latin-1 or cp1252.")
    skip_rows: int = Field(0, ge=0, le=1000, description="Rows before the column header or data, kept as preamble.")
    header: bool | None = Field(
        None, description="Whether a column header row comes after skip_rows (default: yes, unless records are used)."
    )
    columns: list[FieldDef] = Field(
        default_factory=list,
        description="Column types and checks (by header name), or the column names in order when there is no header.",
    )
    type_column: int | None = Field(None, ge=1, description="Column (from 1) holding the record type code (H/D/T).")
    records: dict[str, RecordDef] = Field(
        default_factory=dict, description="Record types by code, each with its role and fields in column order."
    )
    trim: bool = Field(True, description="Strip spaces around values.")
    per_row: bool = Field(False, description=PER_ROW)
    control_id_path: str | None = Field(None, description=CONTROL)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.quote_char is not None and self.quote_char == self.delimiter:
            raise ValueError("quote_char and delimiter must differ")
        if (self.type_column is None) != (not self.records):
            raise ValueError("give type_column and records together (files with H/D/T record types)")
        if self.records and (self.header or self.columns):
            raise ValueError("with records, name the fields per record type; header and columns do not apply")
        for column in self.columns:
            if column.start is not None:
                raise ValueError(f"column {column.name!r}: start/length apply to fixed width only")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("column names must be unique")
        check_records(self.records, fixed=False)
        return self


class FixedWidthConfig(DataTypeConfig):
    """Settings and layout of the ``fixed-width`` data type."""

    layout_file: str | None = Field(None, description=LAYOUT_FILE)
    encoding: Encoding = Field("utf-8", description="utf-8 (a BOM is dropped), utf-8-sig, latin-1 or cp1252.")
    skip_rows: int = Field(0, ge=0, le=1000, description="Lines before the records, kept as preamble.")
    fields: list[FieldDef] = Field(
        default_factory=list, description="The fields of every line (name, start, length, type), for one record type."
    )
    record_type: TypeField | None = Field(None, description="Where the record type code is: {start, length}.")
    records: dict[str, RecordDef] = Field(
        default_factory=dict, description="Record types by code, each with its role and positioned fields."
    )
    trim: bool = Field(True, description="Strip padding spaces around values.")
    per_row: bool = Field(False, description=PER_ROW)
    control_id_path: str | None = Field(None, description=CONTROL)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.record_type is None) != (not self.records):
            raise ValueError("give record_type and records together (files with H/D/T record types)")
        if self.records and self.fields:
            raise ValueError("give either fields (one record type) or records, not both")
        if self.layout_file is None and not self.records and not self.fields:
            raise ValueError("a fixed-width layout needs fields or records (or a layout_file)")
        for item in self.fields:
            if item.start is None:
                raise ValueError(f"field {item.name!r}: fixed-width fields need start and length")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError("field names must be unique")
        check_records(self.records, fixed=True)
        return self


def check_path_against(path: str, shapes: Mapping[str, _Named], closed: dict[str, set[str]] | None) -> FlatPath:
    """Check a path's syntax, its record type and (when the layout names every field) its field.

    ``closed`` maps record codes (``rows`` for a file without record types) to field names.
    """
    parsed = parse_path(path)
    codes = set(shapes) or {"rows"}
    if parsed.record is None and parsed.name is not None:
        try:
            code, _ = parse_selector(parsed.name)
        except ValueError:
            code = ""
        if code in codes or code in ("rows", "preamble"):
            return parsed  # a record selection, as for_each / iterate take it
    record = parsed.record
    if record is not None and record not in codes | {"rows", "preamble"}:
        known = ", ".join(sorted(codes | {"rows", "preamble"}))
        raise ValueError(f"unknown record type {record!r} in path {path!r} (known: {known})")
    if record == "preamble" and parsed.name is not None:
        raise ValueError(f"path {path!r}: preamble rows have no field names; use #n")
    if closed is None or parsed.name is None or record == "preamble":
        return parsed
    if record is None or record == "rows":
        allowed = set().union(*(names for code, names in closed.items() if _is_data(code, shapes)))
    else:
        allowed = closed.get(record, set())
    if parsed.name not in allowed:
        close = difflib.get_close_matches(parsed.name, sorted(allowed), n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        where = "the data records" if record in (None, "rows") else f"record {record}"
        raise ValueError(f"unknown field {parsed.name!r} of {where} in path {path!r}{hint}")
    return parsed


def _is_data(code: str, shapes: Mapping[str, _Named]) -> bool:
    shape = shapes.get(code)
    return shape is None or shape.role == "data"


def control_header(datatype: _Parses, raw: bytes, path: str | None) -> Header:
    """The control id read at ``path`` (empty when unset or unreadable; never raises)."""
    if not path:
        return Header()
    try:
        control = datatype.parse(raw).get(path) or ""
    except ParseError:
        return Header()
    return Header(control_id=control[:200], business_key=control[:200])


_CSV_EXAMPLE = """\
type: delimited
columns:
  - {name: Item Number, required: true}
  - {name: Unit Cost, type: decimal}"""

_CMS_EXAMPLE = """\
type: delimited
skip_rows: 2          # CMS price transparency: two metadata rows before the column header
columns:
  - {name: "standard_charge | gross", type: decimal}"""

_HDT_EXAMPLE = """\
type: delimited
delimiter: "|"
type_column: 1
records:
  H: {role: header, fields: [{name: type}, {name: gpo_name}, {name: file_date, type: date, format: "%Y%m%d"}]}
  D: {fields: [{name: type}, {name: contract}, {name: price, type: decimal, required: true}]}
  T: {role: trailer, count_field: count, fields: [{name: type}, {name: count, type: int}]}"""

_FIXED_EXAMPLE = """\
type: fixed-width
encoding: cp1252
record_type: {start: 1, length: 1}
records:
  H: {role: header, fields: [{name: gpo_name, start: 2, length: 30}]}
  D:
    fields:
      - {name: contract, start: 2, length: 20, required: true}
      - {name: price, start: 22, length: 11, type: decimal, implied_decimals: 2}
      - {name: start_date, start: 33, length: 8, type: date, format: "%Y%m%d"}
  T: {role: trailer, count_field: count, fields: [{name: count, start: 2, length: 7, type: int}]}"""

DELIMITED = datatype_spec(
    name="delimited",
    summary="Delimited text files (CSV, pipe, tab) with a declared layout: header rows, typed columns, H/D/T records.",
    config=DelimitedConfig,
    factory="engine.datatypes.flat.delimited:Delimited",
    capabilities=frozenset({"batches"}),
    path_syntax=SYNTAX,
    examples=(
        Example("A CSV with a header row, typed columns", _CSV_EXAMPLE),
        Example("A file with rows before its column header", _CMS_EXAMPLE),
        Example("Header, detail and trailer records, pipe separated", _HDT_EXAMPLE),
        Example(
            "The layout kept in its own file, one message per row",
            "type: delimited\nlayout_file: layouts/item-master.yaml\nper_row: true",
        ),
    ),
)

FIXED_WIDTH = datatype_spec(
    name="fixed-width",
    summary="Fixed-width text files with a declared layout: positioned, typed fields and H/D/T record types.",
    config=FixedWidthConfig,
    factory="engine.datatypes.flat.fixed:FixedWidth",
    capabilities=frozenset({"batches"}),
    path_syntax=SYNTAX,
    examples=(
        Example(
            "One record type",
            "type: fixed-width\nfields:\n  - {name: item, start: 1, length: 10}\n"
            "  - {name: qty, start: 11, length: 5, type: int}",
        ),
        Example("Header, detail and trailer records", _FIXED_EXAMPLE),
        Example("The layout kept in its own file", "type: fixed-width\nlayout_file: layouts/gpo-contract.yaml"),
    ),
)
