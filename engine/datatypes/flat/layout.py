"""Declarative layouts of flat files: fields, record types, typing and their conversion.

A layout is written inline in the channel's data type config or in a YAML file that the
config names (``layout_file``); both use the same keys. Field values are converted at parse
time: ``int`` and ``decimal`` are checked and written plainly (``00012`` -> ``12``, implied
decimals ``001250`` -> ``12.50``), ``date`` is read with ``format`` and written as ISO 8601,
so mappings read typed values with ``as: decimal`` or ``as: date`` without formats.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from engine.core.channel import Strict
from engine.core.errors import ConfigError, Diagnostic, Location
from engine.core.loader import load_yaml, validate_model

FieldType = Literal["str", "int", "decimal", "date"]
Encoding = Literal["utf-8", "utf-8-sig", "latin-1", "cp1252"]
RESERVED = frozenset({"rows", "preamble"})
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,10}$")
_INT = re.compile(r"^([+-]?)(\d+)([+-]?)$")
_SIMPLE_DECIMAL = re.compile(r"^(?:[1-9]\d*|0)(?:\.\d+)?$")
_DECIMAL = re.compile(r"^([+-]?)(\d*)(?:\.(\d*))?([+-]?)$")


class FieldDef(Strict):
    """One field (column) of a record: its name, position (fixed width), type and checks."""

    name: str = Field(min_length=1, description="Field name used in paths (for CSV with a header: the header text).")
    start: int | None = Field(None, ge=1, description="Fixed width only: first character, counted from 1.")
    length: int | None = Field(None, ge=1, description="Fixed width only: width in characters.")
    type: FieldType = Field("str", description="str, int, decimal or date; checked and normalised at parse.")
    format: str | None = Field(
        None, description="date: a strptime pattern such as %Y%m%d or %m/%d/%Y (default ISO %Y-%m-%d)."
    )
    implied_decimals: int = Field(
        0, ge=0, le=9, description="decimal: digits after an implied point, e.g. 2 reads 0012550 as 125.50."
    )
    required: bool = Field(False, description="An empty value fails the file; a missing header column too.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.format is not None and self.type != "date":
            raise ValueError(f"field {self.name!r}: format applies to type date only")
        if self.implied_decimals and self.type != "decimal":
            raise ValueError(f"field {self.name!r}: implied_decimals applies to type decimal only")
        if (self.start is None) != (self.length is None):
            raise ValueError(f"field {self.name!r}: give both start and length, or neither")
        return self


class RecordDef(Strict):
    """One record type of a file with header/data/trailer records (H/D/T)."""

    role: Literal["header", "data", "trailer"] = Field("data", description="header, data or trailer.")
    fields: list[FieldDef] = Field(min_length=1, description="The record's fields, in order.")
    count_field: str | None = Field(
        None, description="Trailer only: an int field holding how many records the file has (checked)."
    )
    counts: Literal["data", "all"] = Field(
        "data", description="What count_field counts: data records, or all records incl. header and trailer."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError("field names must be unique within a record")
        if self.count_field is not None:
            if self.role != "trailer":
                raise ValueError("count_field belongs on a trailer record")
            kinds = {f.name: f.type for f in self.fields}
            if kinds.get(self.count_field) != "int":
                raise ValueError(f"count_field {self.count_field!r} must name an int field of the record")
        return self


class TypeField(Strict):
    """Where a fixed-width record keeps its record type code."""

    start: int = Field(ge=1, description="First character of the code, counted from 1.")
    length: int = Field(1, ge=1, le=10, description="Width of the code.")


def check_records(records: dict[str, RecordDef], fixed: bool) -> None:
    """Shared checks of a ``records`` table (raises ValueError)."""
    for code, record in records.items():
        if not _CODE.match(code) or code in RESERVED:
            raise ValueError(f"record type {code!r}: use 1-10 letters, digits, _ or - (not rows or preamble)")
        for item in record.fields:
            if fixed and item.start is None:
                raise ValueError(f"record {code}, field {item.name!r}: fixed-width fields need start and length")
            if not fixed and item.start is not None:
                raise ValueError(f"record {code}, field {item.name!r}: start/length apply to fixed width only")
    roles = [r.role for r in records.values()]
    if records and "data" not in roles:
        raise ValueError("records: declare at least one record type with role data")
    for role in ("header", "trailer"):
        if roles.count(role) > 1:
            raise ValueError(f"records: at most one record type may have role {role}")


def load_layout(model: type[Strict], config: Strict, base_dir: Path | None) -> Any:
    """Merge ``config.layout_file`` (keys set inline win) and validate the result.

    Raises ``ConfigError`` pointing into the file (line and column) when it is missing or
    invalid, like the channel loader does for channel files.
    """
    name = getattr(config, "layout_file", None)
    if not name:
        return config
    path = Path(name)
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        problem = Diagnostic(Location(name), "layout_file", f"cannot read the layout file ({reason})")
        raise ConfigError([problem]) from None
    doc = load_yaml(name, text=text)
    if doc.problems:
        raise ConfigError(doc.problems)
    if not isinstance(doc.data, dict):
        raise ConfigError([Diagnostic(doc.where(()), "", "the layout file must be a mapping of layout keys")])
    for key in ("type", "layout_file"):
        if key in doc.data:
            doc.error((key,), "a layout file may not set type or layout_file", key=True)
    inline = config.model_dump(include=config.model_fields_set - {"layout_file"}, by_alias=True)
    merged = validate_model(model, doc, {**doc.data, **inline})
    if doc.problems or merged is None:
        raise ConfigError(doc.problems)
    return merged


# --- conversion ---------------------------------------------------------------------------

Converter = Callable[[str], str]


def converter(field: FieldDef) -> Converter | None:
    """The function normalising one field's text, or None for plain text.

    It raises ``ValueError`` with a description of what was expected (never the value).

    >>> converter(FieldDef(name="p", type="decimal", implied_decimals=2))("0012550")
    '125.50'
    >>> converter(FieldDef(name="d", type="date", format="%m/%d/%Y"))("3/1/2024")
    '2024-03-01'
    """
    if field.type == "int":
        return _to_int
    if field.type == "decimal":
        places = field.implied_decimals
        if places:
            return lambda text: _to_decimal(text, places)
        return _plain_decimal
    if field.type == "date":
        pattern = field.format or "%Y-%m-%d"
        # Files repeat the same few dates on every row: remember recent conversions.
        return lru_cache(maxsize=1024)(lambda text: _to_date(text, pattern))
    return None


def _plain_decimal(text: str) -> str:
    if _SIMPLE_DECIMAL.match(text):
        return text  # already plain (the common case): no Decimal round trip
    return _to_decimal(text, 0)


def _sign(lead: str, trail: str) -> str:
    if lead and trail:
        raise ValueError("expected one sign at most")
    return "-" if "-" in (lead, trail) else ""


def _to_int(text: str) -> str:
    if text.isascii() and text.isdigit():
        return str(int(text))
    match = _INT.match(text)
    if match is None:
        raise ValueError("expected a whole number")
    digits = match.group(2).lstrip("0") or "0"
    sign = _sign(match.group(1), match.group(3))
    return sign + digits if digits != "0" else "0"


def _to_decimal(text: str, places: int) -> str:
    match = _DECIMAL.match(text)
    if match is None or not (match.group(2) or match.group(3)):
        raise ValueError("expected a decimal number")
    whole, fraction = match.group(2), match.group(3)
    if places and fraction is not None:
        raise ValueError(f"expected digits only (the layout implies {places} decimals)")
    try:
        number = Decimal(f"{whole or '0'}.{fraction}" if fraction else whole or "0")
    except InvalidOperation:
        raise ValueError("expected a decimal number") from None
    if places:
        number = number.scaleb(-places)
    if _sign(match.group(1), match.group(4)) and number:
        number = -number
    return str(number)


def _to_date(text: str, pattern: str) -> str:
    try:
        return datetime.strptime(text, pattern).date().isoformat()
    except ValueError:
        raise ValueError(f"expected a date in the format {pattern}") from None
