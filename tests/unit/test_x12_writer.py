"""The X12 writer: delimiters, fixed-width ISA, envelope counts, and parsing back."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.datatypes.x12 import X12Config, X12DataType
from engine.datatypes.x12.tokenizer import ISA_WIDTH, Delimiters, tokenize
from engine.datatypes.x12.writer import (
    FreeText,
    GroupSpec,
    InterchangeSpec,
    TransactionSet,
    WriteError,
    build_interchange,
    serialize,
)

WHEN = dt.datetime(2026, 3, 4, 5, 6, tzinfo=dt.UTC)
D4010 = Delimiters("*", ">", "~")
D5010 = Delimiters("*", ":", "~", "^")


def _interchange(version: str = "00401", control: int = 42, **kw: object) -> InterchangeSpec:
    return InterchangeSpec("ZZ", "MERCY", "01", "123456789", control, version, **kw)  # type: ignore[arg-type]


def _po(line: str = "1") -> TransactionSet:
    return TransactionSet("850", [["BEG", "00", "SA", "PO-1", "", "20260304"], ["PO1", line, "2", "EA"], ["CTT", "1"]])


def test_isa_is_fixed_width_with_padded_ids_and_zero_padded_control() -> None:
    raw = build_interchange(_interchange(), [GroupSpec("MERCY", "ACME", 7, "004010", [(1, _po())])], D4010, when=WHEN)
    text = raw.decode()
    isa = text[: text.index("~") + 1]
    assert len(isa) == ISA_WIDTH == 106
    elements = isa[:-1].split("*")
    assert elements[6] == "MERCY".ljust(15) and elements[8] == "123456789".ljust(15)
    assert elements[9:14] == ["260304", "0506", "U", "00401", "000000042"]
    assert elements[14:] == ["0", "P", ">"]


def test_counts_and_control_numbers_agree_and_parse_back_cleanly() -> None:
    groups = [
        GroupSpec("MERCY", "ACME", 7, "004010", [(11, _po("1")), (12, _po("2"))]),
        GroupSpec("MERCY", "ACME", 8, "004010", [(13, _po("3"))]),
    ]
    raw = build_interchange(_interchange(), groups, D4010, when=WHEN, line_break="\r\n")
    doc = X12DataType(X12Config(type="x12", strict_isa_width=True)).parse(raw)
    assert doc.warnings == []
    assert doc.get_all("SE01") == ["5", "5", "5"]
    assert doc.get_all("SE02") == ["0011", "0012", "0013"] == doc.get_all("ST02")
    assert doc.get_all("GE01") == ["2", "1"] and doc.get_all("GE02") == ["7", "8"]
    assert doc.get("IEA01") == "2" and doc.get("IEA02") == "000000042"
    assert doc.get("GS01") == "PO" and doc.get("GS08") == "004010" and doc.get("GS04") == "20260304"
    assert doc.get_all("PO1/PO101") == ["1", "2", "3"]
    assert b"~\r\nGS*" in raw


def test_5010_writes_the_repetition_separator_to_isa11() -> None:
    ts = TransactionSet("850", [["BEG", "00", "SA", "PO-1", "", "20260304"], ["REF", "ZZ", "A^B"]])
    # A value holding the repetition separator is refused; written as a repetition on purpose it splits.
    with pytest.raises(WriteError, match=r"segment 5 \(REF\), element 02"):
        build_interchange(_interchange("00501"), [GroupSpec("MERCY", "ACME", 1, "005010", [(1, ts)])], D5010, when=WHEN)
    ok = TransactionSet("850", [["BEG", "00", "SA", "PO-1", "", "20260304"], ["PO1", "1", "2", "EA"]])
    raw = build_interchange(
        _interchange("00501"), [GroupSpec("MERCY", "ACME", 1, "005010", [(1, ok)])], D5010, when=WHEN
    )
    interchange = tokenize(raw)[0][0]
    assert interchange.delimiters == D5010
    assert interchange.isa.elements[11] == "^" and interchange.isa.elements[12] == "00501"
    with pytest.raises(WriteError, match="repetition separator"):
        build_interchange(_interchange("00501"), [GroupSpec("M1", "A1", 1, "005010", [(1, ok)])], D4010, when=WHEN)


def test_free_text_loses_delimiters_but_identifiers_are_refused() -> None:
    assert (
        serialize([["PID", "F", "", "", "", FreeText("Screw*4.5mm~ti>x\nlong")]], D4010)
        == "PID*F****Screw 4.5mm ti x long~"
    )
    with pytest.raises(WriteError) as caught:
        serialize([["REF", "LT", "AB*12"]], D4010)
    assert "AB*12" not in str(caught.value) and "segment 1 (REF), element 02" in str(caught.value)


def test_trailing_empty_elements_are_dropped() -> None:
    assert serialize([["N1", "ST", "Dock", "", ""], ["N4", "", "", "", "US"]], D4010) == "N1*ST*Dock~N4****US~"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"control": 0}, "ISA13"),
        ({"control": 1_000_000_000}, "ISA13"),
        ({"usage": "X"}, "ISA15"),
        ({"sender_id": "X" * 16}, "ISA06"),
    ],
)
def test_invalid_envelope_values_are_refused(change: dict[str, object], message: str) -> None:
    values = {
        "sender_qualifier": "ZZ",
        "sender_id": "MERCY",
        "receiver_qualifier": "ZZ",
        "receiver_id": "ACME",
        "control": 1,
        "version": "00401",
    } | change
    spec = InterchangeSpec(**values)  # type: ignore[arg-type]
    with pytest.raises(WriteError, match=message):
        build_interchange(spec, [GroupSpec("MERCY", "ACME", 1, "004010", [(1, _po())])], D4010, when=WHEN)


def test_groups_need_sets_of_one_functional_id_and_distinct_delimiters() -> None:
    mixed = [(1, _po()), (2, TransactionSet("810", [["BIG", "20260304", "INV1"]]))]
    with pytest.raises(WriteError, match="GS01"):
        build_interchange(_interchange(), [GroupSpec("MERCY", "ACME", 1, "004010", mixed)], D4010, when=WHEN)
    with pytest.raises(WriteError, match="distinct"):
        build_interchange(
            _interchange(),
            [GroupSpec("MERCY", "ACME", 1, "004010", [(1, _po())])],
            Delimiters("*", "*", "~"),
            when=WHEN,
        )
    with pytest.raises(WriteError, match="no transaction sets"):
        build_interchange(_interchange(), [GroupSpec("MERCY", "ACME", 1, "004010", [])], D4010, when=WHEN)


_VALUE = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x17F, blacklist_characters="*:>~^"), max_size=12
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_VALUE, min_size=1, max_size=6), min_size=1, max_size=5))
def test_any_values_without_delimiters_read_back_unchanged(bodies: list[list[str]]) -> None:
    segments = [["REF", *values] for values in bodies]
    raw = build_interchange(
        _interchange("00501"),
        [GroupSpec("MERCY", "ACME", 3, "005010", [(9, TransactionSet("850", segments))])],
        D5010,
        when=WHEN,
    )
    interchange = tokenize(raw)[0][0]
    body = interchange.groups[0].transactions[0].segments[1:-1]
    # Trailing empty elements are not written; everything else comes back as it was.
    expected = []
    for values in segments:
        trimmed = list(values)
        while len(trimmed) > 1 and trimmed[-1] == "":
            trimmed.pop()
        expected.append(trimmed)
    assert [s.elements for s in body] == expected
