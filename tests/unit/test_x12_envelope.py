"""Envelope checks and 997/999/TA1 answers for damaged or unusual interchanges.

Every interchange here is written by the test (no third-party files): ``interchange``
builds a 4010 or 5010 envelope with correct counts around transaction sets given as
segment lists, and the tests change one thing at a time.
"""

from __future__ import annotations

import datetime as dt

import pytest

from engine.core.errors import ParseError
from engine.datatypes.x12 import X12DataType
from engine.datatypes.x12.acks import ControlNumbers, acknowledge
from engine.datatypes.x12.validate import version_of

NOON = dt.datetime(2026, 1, 16, 12, 5, tzinfo=dt.UTC)


def po(control: str, *extra: str) -> list[str]:
    """An 850 with SE (correct count); ``extra`` segments go after BEG."""
    body = [
        f"ST*850*{control}",
        "BEG*00*SA*PO1**20260101",
        *extra,
        "N1*ST*HOSPITAL*92*0042",
        "PO1*1*2*EA*10.00**VC*A1",
        "CTT*1",
    ]
    return [*body, f"SE*{len(body) + 1}*{control}"]


def isa(
    control: str = "000000001",
    *,
    version: str = "00401",
    repetition: str = "U",
    date: str = "260101",
    time: str = "1200",
    ack: str = "0",
    usage: str = "T",
) -> str:
    return "*".join(
        [
            "ISA",
            "00",
            " " * 10,
            "00",
            " " * 10,
            "ZZ",
            "SENDER".ljust(15),
            "ZZ",
            "RECEIVER".ljust(15),
            date,
            time,
            repetition,
            version,
            control,
            ack,
            usage,
            ">",
        ]
    )


def interchange(
    *sets: list[str], control: str = "000000001", gs06: str = "1", gs08: str = "004010", **isa_fields: str
) -> str:
    """One interchange with one group holding ``sets``; counts and control numbers correct."""
    lines = [isa(control, **isa_fields), f"GS*PO*SENDER*RECEIVER*20260101*1200*{gs06}*X*{gs08}"]
    for s in sets:
        lines.extend(s)
    lines += [f"GE*{len(sets)}*{gs06}", f"IEA*1*{control}"]
    return "~\n".join(lines) + "~\n"


def ack(raw: str | bytes) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    out = acknowledge(data, ControlNumbers(clock=lambda: 12345.6), lambda: NOON)
    assert out is not None
    return out.decode()


def segments(text: str, sid: str) -> list[str]:
    found = [s.strip() for s in text.replace("\r", "").replace("\n", "").split("~") if s.strip()]
    return [s for s in found if s.split("*")[0] == sid]


def parses_back(answer: str) -> None:
    """Every generated answer passes Junction's own envelope checks and 997/999 schemas."""
    X12DataType().parse(answer.encode())


# -- versions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gs08", "version"),
    [
        ("004010", "004010"),
        ("4010", "004010"),
        ("005010X222A1", "005010"),
        ("5010", "005010"),
        ("004010VICS", "004010"),
        ("", ""),
        ("X", ""),
    ],
)
def test_gs08_versions_are_normalised_to_six_digits(gs08: str, version: str) -> None:
    assert version_of(gs08) == version


def test_gs08_without_leading_zeros_is_answered_as_4010() -> None:
    answer = ack(interchange(po("0001"), gs08="4010"))
    assert segments(answer, "ST") == ["ST*997*0001"]  # "4010" >= "005010" as text made this a 999
    assert segments(answer, "AK9") == ["AK9*A*1*1*1"]
    X12DataType().parse(interchange(po("0001"), gs08="4010").encode())


# -- file padding --------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", [b"\x1a", b"\x00" * 16, b"\r\n\x1a", b"\x1a\x00\x00"])
def test_dos_end_of_file_and_nul_padding_after_the_last_iea_are_ignored(padding: bytes) -> None:
    raw = interchange(po("0001")).encode() + padding
    assert X12DataType().parse(raw).get("ST01") == "850"
    answer = ack(raw)
    assert segments(answer, "TA1") == [] and segments(answer, "AK9") == ["AK9*A*1*1*1"]
    assert len(X12DataType().split(raw + interchange(po("0002"), control="000000002").encode() + padding)) == 2


# -- duplicate ST02 ------------------------------------------------------------------------------


def test_a_repeated_st02_in_a_group_is_rejected_with_code_23() -> None:
    raw = interchange(po("0001"), po("0002"), po("0001"))
    answer = ack(raw)
    assert segments(answer, "AK2") == ["AK2*850*0001", "AK2*850*0002", "AK2*850*0001"]
    assert segments(answer, "AK5") == ["AK5*A", "AK5*A", "AK5*R*23"]
    assert segments(answer, "AK9") == ["AK9*P*3*3*2"]
    parses_back(answer)
    five010 = ack(interchange(po("0001"), po("00001"), gs08="005010X220A1", version="00501", repetition="^"))
    assert segments(five010, "IK5") == ["IK5*A", "IK5*R*23"]  # 00001 and 0001 are the same number
    parses_back(five010)


def test_a_repeated_st02_is_not_accepted_by_parse_or_split() -> None:
    x = X12DataType()
    raw = interchange(po("0001"), po("0001")).encode()
    with pytest.raises(ParseError) as caught:
        x.parse(raw)
    assert caught.value.code == "AK5:23"
    first, second = x.split(raw)
    assert x.parse(first).get("ST02") == "0001"  # the first set with the number goes through
    with pytest.raises(ParseError) as caught:
        x.parse(second)  # the repeat travels with the set it repeats and is refused
    assert caught.value.code == "AK5:23"


# -- TA1 references ------------------------------------------------------------------------------


def wrapped(text: str, at: int) -> str:
    """``text`` without line breaks, with one CR LF at ``at``: where an 80-column file breaks
    its first line when the ISA fields are not where the fixed width puts them."""
    flat = text.replace("\n", "")
    return flat[:at] + "\r\n" + flat[at:]


@pytest.mark.parametrize("first", [72, 79, 86, 92])  # inside ISA09, ISA10, ISA12 and ISA13
def test_a_ta1_never_copies_line_breaks_from_a_wrapped_isa(first: int) -> None:
    answer = ack(wrapped(interchange(po("0001"), control="000000042", ack="1"), first))
    assert segments(answer, "TA1") == ["TA1*000000042*260101*1200*A*000"]
    assert "\r" not in answer and "\n" not in answer
    assert segments(answer, "AK5") == ["AK5*A"]
    parses_back(answer)


def test_a_file_wrapped_at_80_columns_reads_as_the_unwrapped_one() -> None:
    # VANs and mainframes deliver interchanges cut into 80-character lines, the breaks
    # falling inside segments and elements; a break is never X12 data, so it is dropped.
    flat = interchange(po("0001"), po("0002")).replace("\n", "")
    lines = "\r\n".join(flat[i : i + 80] for i in range(0, len(flat), 80))
    x = X12DataType()
    whole, cut = x.split(flat.encode()), x.split(lines.encode())
    assert len(cut) == len(whole) == 2
    for a, b in zip(whole, cut, strict=True):
        assert x.parse(b).get("N1[N101=ST]/N102") == x.parse(a).get("N1[N101=ST]/N102") == "HOSPITAL"
    answer = ack(lines)
    assert segments(answer, "AK5") == ["AK5*A", "AK5*A"] and segments(answer, "TA1") == []
    # one segment per line is no wrapping: its breaks stay (the tokenizer skips them)
    assert segments(ack(interchange(po("0001"))), "AK5") == ["AK5*A"]


def test_a_ta1_replaces_unusable_isa_date_and_time_with_its_own() -> None:
    raw = interchange(po("0001"), ack="1", date="26\x0013", time="99\x0199")
    answer = ack(raw)
    assert segments(answer, "TA1")[0].split("*")[1:4] == ["000000001", "260116", "1205"]
    parses_back(answer)


# -- invalid segment ids and several interchanges ------------------------------------------------


@pytest.mark.parametrize(("bad", "answered"), [("ref*DP*038", "AK3*ref*3**1"), ("R3F*DP*038", "AK3*R3F*3**1")])
def test_an_invalid_segment_id_rejects_only_its_transaction_set(bad: str, answered: str) -> None:
    raw = interchange(po("0001", bad), po("0002"))
    answer = ack(raw)
    assert segments(answer, "TA1") == []
    assert segments(answer, "AK3") == [answered]
    assert segments(answer, "AK5") == ["AK5*R*5", "AK5*A"]
    assert segments(answer, "AK9") == ["AK9*P*2*2*1"]
    parses_back(answer)
    x = X12DataType()
    first, second = x.split(raw.encode())
    with pytest.raises(ParseError) as caught:
        x.parse(first)
    assert caught.value.code == "AK5:5" and "ref" not in str(caught.value)
    assert x.parse(second).get("ST02") == "0002"


def test_an_invalid_segment_id_in_a_5010_set_gets_ik3_and_ik5() -> None:
    raw = interchange(po("0001", "ref*DP*038"), po("0002"), gs08="005010", version="00501", repetition="^")
    answer = ack(raw)
    assert segments(answer, "IK3") == ["IK3*ref*3**1"]
    assert segments(answer, "IK5") == ["IK5*R*5", "IK5*A"]
    assert segments(answer, "AK9") == ["AK9*P*2*2*1"]
    parses_back(answer)


def test_an_invalid_segment_id_in_a_set_without_schema_is_still_rejected() -> None:
    warehouse = ["ST*940*0001", "W05*N*ORDER1", "lx*1", "W01*1*EA", "SE*5*0001"]
    answer = ack(interchange(warehouse))
    assert segments(answer, "AK3") == ["AK3*lx*3**1"]
    assert segments(answer, "AK5") == ["AK5*R*5"]
    with pytest.raises(ParseError):
        X12DataType().parse(interchange(warehouse).encode())


def test_each_interchange_of_a_file_gets_its_own_answer_and_a_ta1_names_its_own_isa13() -> None:
    good = interchange(po("0001"), control="000000011")
    broken = interchange(po("0001"), control="000000022").replace("GS*PO", "gs*PO")  # no readable group
    answer = ack(good + broken + interchange(po("0001"), control="000000033"))
    assert segments(answer, "TA1") == ["TA1*000000022*260101*1200*R*024"]
    assert segments(answer, "AK9") == ["AK9*A*1*1*1", "AK9*A*1*1*1"]
    assert len(segments(answer, "ISA")) == 3
    parses_back(answer)
    parts = X12DataType().split((good + broken).encode())
    assert len(parts) == 2 and X12DataType().parse(parts[0]).get("ISA13") == "000000011"
    with pytest.raises(ParseError):
        X12DataType().parse(parts[1])


# -- ISA values and GS06/GS08 --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "note"),
    [
        ({"control": "ABCDEFGHI"}, "018"),
        ({"usage": "X"}, "020"),
        ({"version": "99999"}, "017"),
        ({"version": "4010"}, "017"),
        ({"date": "261340"}, "014"),
        ({"time": "2460"}, "015"),
        ({"ack": "7"}, "019"),
    ],
)
def test_invalid_isa_values_are_refused_with_their_ta1_note_code(fields: dict[str, str], note: str) -> None:
    raw = interchange(po("0001"), **fields)
    answer = ack(raw)
    (ta1,) = segments(answer, "TA1")
    assert ta1.split("*")[4:] == ["R", note]
    assert segments(answer, "ST") == []  # refused: no 997 accepting what is not processed
    parses_back(answer)
    with pytest.raises(ParseError) as caught:
        X12DataType().parse(raw.encode())
    assert caught.value.code == f"TA1:{note}"


def test_usage_indicator_i_is_accepted() -> None:
    assert segments(ack(interchange(po("0001"), usage="I")), "AK9") == ["AK9*A*1*1*1"]


def test_an_empty_or_non_numeric_gs06_is_refused_with_a_ta1_not_an_invalid_997() -> None:
    for gs06 in ("", "AB"):
        raw = interchange(po("0001"), gs06=gs06)
        answer = ack(raw)
        assert segments(answer, "TA1") == ["TA1*000000001*260101*1200*R*024"]
        assert segments(answer, "AK1") == []
        parses_back(answer)
        with pytest.raises(ParseError) as caught:
            X12DataType().parse(raw.encode())
        assert caught.value.code == "TA1:024"


def test_an_empty_gs08_rejects_the_group_in_a_valid_997() -> None:
    raw = interchange(po("0001"), gs08="")
    answer = ack(raw)
    assert segments(answer, "AK1") == ["AK1*PO*1"]
    assert segments(answer, "AK9")[0].startswith("AK9*R*") and segments(answer, "AK9")[0].endswith("*2")
    parses_back(answer)
    with pytest.raises(ParseError) as caught:
        X12DataType().parse(raw.encode())
    assert caught.value.code == "AK9:2"


# -- a group with wrong counts next to a clean one -----------------------------------------------


def test_a_group_with_wrong_counts_is_refused_alone_and_the_clean_group_is_processed() -> None:
    clean = ["GS*PO*SENDER*RECEIVER*20260101*1200*1*X*004010", *po("0001"), "GE*1*1"]
    wrong = ["GS*PO*SENDER*RECEIVER*20260101*1200*2*X*004010", *po("0001"), *po("0002"), "GE*5*2"]
    raw = "~\n".join([isa(), *clean, *wrong, "IEA*2*000000001"]) + "~\n"
    answer = ack(raw)
    assert segments(answer, "AK9") == ["AK9*A*1*1*1", "AK9*R*5*2*2*5"]
    x = X12DataType()
    parts = x.split(raw.encode())
    assert len(parts) == 2  # the clean group's set, and the wrong group as a unit
    assert x.parse(parts[0]).get("GS06") == "1"  # processed, as its AK9*A says
    with pytest.raises(ParseError) as caught:
        x.parse(parts[1])  # refused, as its AK9*R says
    assert caught.value.code == "AK9:5"


def test_a_wrong_iea01_refuses_the_interchange_in_the_answer_as_in_processing() -> None:
    raw = interchange(po("0001"), po("0002")).replace("IEA*1*", "IEA*2*")
    answer = ack(raw)
    assert segments(answer, "TA1") == ["TA1*000000001*260101*1200*R*021"]  # not E: nothing is processed
    assert segments(answer, "ST") == []
    (whole,) = X12DataType().split(raw.encode())
    with pytest.raises(ParseError) as caught:
        X12DataType().parse(whole)
    assert caught.value.code == "TA1:021"
