"""Built-in conversions of mapping values: numbers, booleans, HL7 and X12 dates and times.

Every parser raises ``ValueError`` with a message that describes the expected shape and
never quotes the input (it may be PHI); the runner adds the target field.

>>> parse_hl7_ts("202403131415-0500").isoformat()
'2024-03-13T14:15:00-05:00'
>>> parse_x12_date("20240313"), parse_x12_time("1415")
(datetime.date(2024, 3, 13), datetime.time(14, 15))
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

_HL7_TS = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6})\d*)?)?)?)?)?)?([+-]\d{4})?", re.ASCII
)
_HL7_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6})\d*)?)?)?([+-]\d{4})?", re.ASCII)
_X12_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})", re.ASCII)
_X12_TIME = re.compile(r"(\d{2})(\d{2})(?:(\d{2})(\d{1,2})?)?", re.ASCII)
_X12_DATETIME = re.compile(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(?:(\d{2})(\d{1,2})?)?)?", re.ASCII)

HL7_TS_SHAPE = "an HL7 date/time YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]"
_TRUE = frozenset({"1", "true", "t", "yes", "y"})
_FALSE = frozenset({"0", "false", "f", "no", "n"})


def _found(text: str) -> str:
    return f"found {len(text)} characters that do not fit"


def _offset(text: str | None) -> timezone | None:
    """+/-HHMM as a timezone; HL7 and ISO both allow offsets up to +/-14:00."""
    if not text:
        return None
    hours, minutes = int(text[1:3]), int(text[3:5])
    if hours > 14 or minutes > 59:
        raise ValueError("expected a UTC offset +/-HHMM within +/-1400")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)


def _micro(fraction: str | None) -> int:
    return int(fraction.ljust(6, "0")) if fraction else 0


def parse_hl7_ts(text: str) -> datetime:
    """HL7 v2 TS/DTM at any precision, with an optional offset (aware only when given).

    Missing parts default to the start of the period: ``2024`` is 2024-01-01T00:00.
    """
    match = _HL7_TS.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected {HL7_TS_SHAPE}; {_found(text)}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        return datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            _micro(fraction),
            tzinfo=_offset(offset),
        )
    except ValueError:
        raise ValueError(f"expected {HL7_TS_SHAPE} with parts in range (month 1-12, hour 0-23, ...)") from None


def parse_hl7_tm(text: str) -> time:
    """HL7 v2 TM: HH[MM[SS[.S]]][+/-ZZZZ]."""
    match = _HL7_TM.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected an HL7 time HH[MM[SS[.S]]][+/-ZZZZ]; {_found(text)}")
    hour, minute, second, fraction, offset = match.groups()
    try:
        return time(int(hour), int(minute or 0), int(second or 0), _micro(fraction), tzinfo=_offset(offset))
    except ValueError:
        raise ValueError("expected an HL7 time with parts in range (hour 0-23, minute 0-59)") from None


def parse_x12_date(text: str) -> date:
    """X12 DT: CCYYMMDD."""
    match = _X12_DATE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected an X12 date CCYYMMDD; {_found(text)}")
    try:
        return date(*(int(g) for g in match.groups()))
    except ValueError:
        raise ValueError("expected an X12 date CCYYMMDD with month 1-12 and a day in the month") from None


def parse_x12_time(text: str) -> time:
    """X12 TM: HHMM, HHMMSS, HHMMSSD or HHMMSSDD (tenths, hundredths)."""
    match = _X12_TIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected an X12 time HHMM[SS[D[D]]]; {_found(text)}")
    hour, minute, second, fraction = match.groups()
    try:
        return time(int(hour), int(minute), int(second or 0), _micro(fraction))
    except ValueError:
        raise ValueError("expected an X12 time with hour 0-23, minute and second 0-59") from None


def parse_x12_datetime(text: str) -> datetime:
    """X12 date and time written together, CCYYMMDD[HHMM[SS[D[D]]]] (e.g. concat of DTM02 and DTM03)."""
    match = _X12_DATETIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected an X12 date and time CCYYMMDD[HHMM[SS[D[D]]]]; {_found(text)}")
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        return datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), _micro(fraction)
        )
    except ValueError:
        raise ValueError("expected an X12 date and time with every part in range") from None


def to_decimal(value: Any) -> Decimal:
    """A finite decimal number (HL7 NM, X12 R)."""
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return Decimal(value)
    text = str(value).strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"expected a decimal number; {_found(text)}") from None
    if not number.is_finite() or "_" in text:
        raise ValueError(f"expected a decimal number; {_found(text)}")
    return number


def to_int(value: Any) -> int:
    """A whole number; ``2.0`` is accepted (HL7 NM often carries a decimal point)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        number = to_decimal(value)
    except ValueError:
        raise ValueError(f"expected a whole number; {_found(str(value))}") from None
    if number != number.to_integral_value():
        raise ValueError("expected a whole number; found a fraction")
    return int(number)


def to_bool(value: Any) -> bool:
    """true/false, yes/no, y/n, t/f, 1/0 in any case."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected a yes/no value (true, false, yes, no, y, n, t, f, 1, 0)")


def to_str(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _iso(kind: str) -> Callable[[str], Any]:
    parse = {"date": date.fromisoformat, "datetime": datetime.fromisoformat, "time": time.fromisoformat}[kind]

    def convert(text: str) -> Any:
        try:
            return parse(text.strip())
        except ValueError:
            raise ValueError(f"expected an ISO 8601 {kind}; {_found(text)}") from None

    return convert


def _pattern(kind: str, pattern: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            parsed = datetime.strptime(text.strip(), pattern)
        except ValueError:
            raise ValueError(f"expected a {kind} in the format {pattern}; {_found(text)}") from None
        return parsed.date() if kind == "date" else parsed.timetz() if kind == "time" else parsed

    return convert


def _as_date(parse: Callable[[str], datetime]) -> Callable[[str], date]:
    return lambda text: parse(text).date()


_NAMED: dict[tuple[str, str], Callable[[str], Any]] = {
    ("hl7", "datetime"): parse_hl7_ts,
    ("hl7", "date"): _as_date(parse_hl7_ts),
    ("hl7", "time"): parse_hl7_tm,
    ("x12date", "date"): parse_x12_date,
    ("x12date", "datetime"): parse_x12_datetime,
    ("x12time", "time"): parse_x12_time,
    ("x12datetime", "datetime"): parse_x12_datetime,
    ("x12datetime", "date"): _as_date(parse_x12_datetime),
}


def temporal(kind: str, fmt: str) -> Callable[[Any], Any]:
    """The converter of text to ``kind`` (date, datetime, time) in format ``fmt``."""
    parse = _NAMED.get((fmt, kind)) or (_iso(kind) if fmt == "iso" else _pattern(kind, fmt))
    python_type = {"date": date, "datetime": datetime, "time": time}[kind]

    def convert(value: Any) -> Any:
        if isinstance(value, python_type) and (kind != "date" or not isinstance(value, datetime)):
            return value
        return parse(to_str(value))

    return convert


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "bool": to_bool,
    "decimal": to_decimal,
    "int": to_int,
    "str": to_str,
}


_FHIR_REFERENCE = re.compile(
    r"(?:[a-z][a-z0-9+.-]*://[^\s]+/)?([A-Z][A-Za-z]{1,63})/([A-Za-z0-9.-]{1,64})(?:/_history/[A-Za-z0-9.-]{1,64})?",
    re.ASCII,
)


def fhir_reference_id(value: Any, kind: str, resolve: Callable[[str], Any] | None = None) -> str | None:
    """The id of the ``kind`` resource a FHIR R4 Reference points to, whatever its form.

    ``value`` is a Reference element (an object, or its compact JSON as a path reads it) or
    its ``reference`` text. Relative (``Patient/p1``), absolute
    (``https://host/fhir/Patient/p1``) and versioned (``Patient/p1/_history/3``) forms give
    ``p1``. ``urn:uuid:`` / ``urn:oid:`` and ``#`` references are looked up with ``resolve``
    (a Bundle's fullUrl, a contained resource; the resource found, or None). A form that
    cannot give the id (a logical reference by identifier only, an unresolvable urn, a
    reference to another type) raises ``ValueError``: a mapping must never take it for "no
    reference". A Reference with only a display gives None (there is no reference).

    >>> fhir_reference_id("https://h.example/fhir/Patient/p1/_history/3", "Patient")
    'p1'
    >>> fhir_reference_id('{"reference":"Patient/p1","display":"x"}', "Patient")
    'p1'
    >>> fhir_reference_id('{"identifier":{"value":"1"}}', "Patient")
    Traceback (most recent call last):
    ValueError: a logical reference (identifier only) cannot be resolved to a Patient id
    """
    data = value
    if isinstance(value, str) and value.startswith("{"):
        try:
            data = json.loads(value)
        except ValueError:
            raise ValueError(f"not a FHIR Reference to a {kind}") from None
    if isinstance(data, dict):
        reference = data.get("reference")
        if not isinstance(reference, str) or not reference:
            if data.get("identifier"):
                raise ValueError(f"a logical reference (identifier only) cannot be resolved to a {kind} id")
            return None
        data = reference
    if not isinstance(data, str):
        raise ValueError(f"not a FHIR Reference to a {kind}")
    text = data.strip()
    if text.startswith(("urn:uuid:", "urn:oid:", "#")):
        found = resolve(text) if resolve is not None else None
        if not isinstance(found, dict):
            where = "contained resource" if text.startswith("#") else "Bundle entry with that fullUrl"
            raise ValueError(f"the {kind} reference cannot be resolved: no {where} came with this resource")
        if found.get("resourceType") != kind:
            raise ValueError(f"the reference resolves to a resource that is not a {kind}")
        rid = found.get("id")
        if not isinstance(rid, str) or not rid:
            raise ValueError(f"the {kind} the reference resolves to has no id")
        return rid
    match = _FHIR_REFERENCE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a FHIR reference to a {kind} (Type/id, a URL ending in Type/id, urn:uuid)")
    if match.group(1) != kind:
        raise ValueError(f"the reference points to a {match.group(1)}, not a {kind}")
    return match.group(2)
