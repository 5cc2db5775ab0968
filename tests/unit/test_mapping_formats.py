"""Built-in conversions: HL7 TS/TM at every precision, X12 dates and times, numbers, booleans."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.errors import MappingError
from engine.mapping.functions import (
    parse_hl7_tm,
    parse_hl7_ts,
    parse_x12_date,
    parse_x12_datetime,
    parse_x12_time,
    temporal,
    to_bool,
    to_decimal,
    to_int,
)

MINUS5 = timezone(timedelta(hours=-5))
PLUS0530 = timezone(timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", datetime(2024, 1, 1)),
        ("202403", datetime(2024, 3, 1)),
        ("20240313", datetime(2024, 3, 13)),
        ("2024031314", datetime(2024, 3, 13, 14)),
        ("202403131415", datetime(2024, 3, 13, 14, 15)),
        ("20240313141530", datetime(2024, 3, 13, 14, 15, 30)),
        ("20240313141530.1", datetime(2024, 3, 13, 14, 15, 30, 100000)),
        ("20240313141530.1234", datetime(2024, 3, 13, 14, 15, 30, 123400)),
        ("20240313141530.12345678", datetime(2024, 3, 13, 14, 15, 30, 123456)),
        (" 20240313 ", datetime(2024, 3, 13)),
    ],
)
def test_hl7_ts_every_precision_without_offset_is_naive(text: str, expected: datetime) -> None:
    parsed = parse_hl7_ts(text)
    assert parsed == expected
    assert parsed.tzinfo is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-0500", datetime(2024, 1, 1, tzinfo=MINUS5)),
        ("20240313-0500", datetime(2024, 3, 13, tzinfo=MINUS5)),
        ("202403131415-0500", datetime(2024, 3, 13, 14, 15, tzinfo=MINUS5)),
        ("20240313141530+0530", datetime(2024, 3, 13, 14, 15, 30, tzinfo=PLUS0530)),
        ("20240313141530.25+0000", datetime(2024, 3, 13, 14, 15, 30, 250000, tzinfo=UTC)),
    ],
)
def test_hl7_ts_with_offsets_is_aware(text: str, expected: datetime) -> None:
    parsed = parse_hl7_ts(text)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "24",
        "20241",
        "20241301",
        "20240230",
        "2024031325",
        "20240313146000",
        "2024-05",
        "2024+2500",
        "MRN12345",
        "2024-13-01",
    ],
)
def test_hl7_ts_rejects_bad_values_without_quoting_them(text: str) -> None:
    with pytest.raises(ValueError, match="HL7 date/time") as caught:
        parse_hl7_ts(text)
    if text.strip():
        assert text not in str(caught.value)


def test_hl7_time() -> None:
    assert parse_hl7_tm("1415") == time(14, 15)
    assert parse_hl7_tm("14") == time(14)
    assert parse_hl7_tm("141530.5-0500") == time(14, 15, 30, 500000, tzinfo=MINUS5)
    with pytest.raises(ValueError, match="HL7 time"):
        parse_hl7_tm("2561")


def test_x12_formats() -> None:
    assert parse_x12_date("20240313") == date(2024, 3, 13)
    assert parse_x12_time("1415") == time(14, 15)
    assert parse_x12_time("141530") == time(14, 15, 30)
    assert parse_x12_time("1415307") == time(14, 15, 30, 700000)
    assert parse_x12_time("14153075") == time(14, 15, 30, 750000)
    assert parse_x12_datetime("202403131415") == datetime(2024, 3, 13, 14, 15)
    assert parse_x12_datetime("20240313") == datetime(2024, 3, 13)
    for bad, parse in [("240313", parse_x12_date), ("20241313", parse_x12_date), ("2460", parse_x12_time)]:
        with pytest.raises(ValueError, match="X12"):
            parse(bad)


def test_temporal_picks_the_named_or_strftime_format() -> None:
    assert temporal("date", "hl7")("202403131415-0500") == date(2024, 3, 13)
    assert temporal("datetime", "x12date")("20240313") == datetime(2024, 3, 13)
    assert temporal("datetime", "%d/%m/%Y %H:%M")("13/03/2024 14:15") == datetime(2024, 3, 13, 14, 15)
    assert temporal("date", "iso")("2024-03-13") == date(2024, 3, 13)
    assert temporal("time", "%H%M")("0905") == time(9, 5)
    with pytest.raises(ValueError, match="in the format %Y%m%d"):
        temporal("date", "%Y%m%d")("2024-03-13")


def test_numbers_and_booleans() -> None:
    assert to_decimal(" 4250.00 ") == Decimal("4250.00")
    assert to_int("2") == 2
    assert to_int("2.0") == 2
    assert to_bool("Y") is True
    assert to_bool("no") is False
    for bad in ("NaN", "Infinity", "1_000", "12abc", ""):
        with pytest.raises(ValueError, match="decimal"):
            to_decimal(bad)
    with pytest.raises(ValueError, match="fraction"):
        to_int("2.5")
    with pytest.raises(ValueError, match="yes/no"):
        to_bool("maybe")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30) | st.from_regex(r"\A[0-9]{4,16}(\.[0-9]{0,8})?([+-][0-9]{0,5})?\Z"))
def test_hl7_ts_parsing_raises_only_value_errors(text: str) -> None:
    try:
        parsed = parse_hl7_ts(text)
    except (ValueError, MappingError):
        return
    assert 1 <= parsed.year <= 9999
