"""997 / 999 / TA1 generation: structure, codes, envelopes, round trip through the parser."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.contracts import Outcome
from engine.datatypes.x12 import X12Config, X12DataType
from engine.datatypes.x12.acks import ControlNumbers, acknowledge
from engine.datatypes.x12.tokenizer import tokenize

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "x12"
NOON = dt.datetime(2026, 1, 16, 12, 5, tzinfo=dt.UTC)


def numbers() -> ControlNumbers:
    return ControlNumbers(clock=lambda: 12345.6)  # base 123456: ISA13 123456, then GS06 123457 ...


def ack(raw: bytes | str) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    out = acknowledge(data, numbers(), lambda: NOON)
    assert out is not None
    return out.decode()


def segments(text: str, sid: str | None = None) -> list[str]:
    """Segment texts (without the terminator), optionally only those with the id ``sid``."""
    found = [s.strip() for s in text.replace("\r\n", "").replace("\n", "").split("~") if s.strip()]
    return [s for s in found if sid is None or s.split("*")[0] == sid]


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_997_for_a_valid_4010_purchase_order() -> None:
    text = ack(sample("850_4010_purchase_order.edi"))
    isa = segments(text, "ISA")[0].split("*")
    assert isa[5:9] == ["ZZ", "EXAMPLESUPPLIER", "ZZ", "EXAMPLEBUYER   "]  # sender and receiver swapped
    assert isa[9:14] == ["260116", "1205", "U", "00401", "000123456"]
    assert isa[14] == "0" and isa[15] == "T" and isa[16] == ">"
    assert segments(text)[1:] == [
        "GS*FA*EXAMPLESUPPLIER*EXAMPLEBUYER*20260116*1205*123457*X*004010",
        "ST*997*0001",
        "AK1*PO*101",
        "AK2*850*0001",
        "AK5*A",
        "AK9*A*1*1*1",
        "SE*6*0001",
        "GE*1*123457",
        "IEA*1*000123456",
    ]
    assert "\r\n" not in text and text.endswith("~\n")  # the inbound line breaks are reused


def test_999_for_a_valid_5010_acknowledgment() -> None:
    text = ack(sample("855_5010_po_ack.edi"))
    isa = segments(text, "ISA")[0].split("*")
    assert isa[11:13] == ["^", "00501"]
    assert segments(text)[1:8] == [
        "GS*FA*EXAMPLEBUYER*EXAMPLESUPPLIER*20260116*1205*123457*X*005010X231A1",
        "ST*999*0001*005010X231A1",
        "AK1*PR*202*005010",
        "AK2*855*0001",
        "IK5*A",
        "AK9*A*1*1*1",
        "SE*6*0001",
    ]


def test_997_names_the_failing_segment_and_element() -> None:
    raw = sample("850_4010_purchase_order.edi").replace("BEG*00*SA*", "BEG*99*SA*").replace("PO1*2*4*", "PO1*2*4X*")
    text = ack(raw)
    assert segments(text)[4:12] == [
        "AK2*850*0001",
        "AK3*BEG*2**8",
        "AK4*1**7*99",
        "AK3*PO1*12*PO1*8",
        "AK4*2**6*4X",
        "AK5*R*5",
        "AK9*R*1*1*0",
        "SE*10*0001",
    ]


def test_999_with_ik3_ik4_and_a_missing_segment() -> None:
    raw = sample("855_5010_po_ack.edi").replace("BAK*00*AC*PO-TEST-1001*20260116~\n", "")
    raw = raw.replace("SE*11*0001", "SE*10*0001").replace("ACK*IR*2*CA", "ACK*ZZ*2*CA")
    text = ack(raw)
    assert segments(text)[4:10] == [
        "AK2*855*0001",
        "IK3*BAK*2**3",
        "IK3*ACK*8*ACK*8",
        "IK4*1**7*ZZ",
        "IK5*R*5",
        "AK9*R*1*1*0",
    ]


def test_envelope_codes_in_ak5_and_ak9() -> None:
    base = sample("850_4010_purchase_order.edi")
    assert segments(ack(base.replace("SE*16*0001", "SE*15*0001")), "AK5") == ["AK5*R*4"]
    assert segments(ack(base.replace("SE*16*0001", "SE*16*0002")), "AK5") == ["AK5*R*3"]
    assert segments(ack(base.replace("GE*1*101", "GE*2*101")), "AK9") == ["AK9*R*2*1*1*5"]
    assert segments(ack(base.replace("GE*1*101", "GE*1*102")), "AK9") == ["AK9*R*1*1*1*4"]


def test_a_group_with_one_bad_transaction_is_partially_accepted() -> None:
    text = sample("850_4010_purchase_order.edi")
    st_to_se = text[text.index("ST*850") : text.index("GE*")]
    second = st_to_se.replace("*0001~", "*0002~").replace("BEG*00*SA*", "BEG*99*SA*")
    raw = text.replace("GE*1*101", second + "GE*2*101")
    answer = ack(raw)
    assert segments(answer, "AK2") == ["AK2*850*0001", "AK2*850*0002"]
    assert segments(answer, "AK5") == ["AK5*A", "AK5*R*5"]
    assert segments(answer, "AK9") == ["AK9*P*2*2*1"]


def test_every_group_of_every_interchange_gets_its_own_acknowledgement() -> None:
    po = sample("850_4010_purchase_order.edi")
    asn = sample("856_4010_ship_notice.edi")
    po_ack = sample("855_5010_po_ack.edi")
    text = ack(po + asn + po_ack)
    assert len(segments(text, "ISA")) == 3
    assert [s.split("*")[1] for s in segments(text, "ST")] == ["997", "997", "999"]
    assert segments(text, "AK1") == ["AK1*PO*101", "AK1*SH*303", "AK1*PR*202*005010"]


def test_generated_acknowledgements_parse_back_with_clean_envelopes() -> None:
    x = X12DataType()
    bad = sample("850_4010_purchase_order.edi").replace("BEG*00*SA*", "BEG*99*SA*")
    for raw in (bad, sample("855_5010_po_ack.edi"), sample("856_4010_ship_notice.edi")):
        answer = x.respond(raw.encode(), Outcome("AA"))
        assert answer is not None
        doc = x.parse(answer)  # envelope checks and the 997/999 schemas
        assert doc.get("ST01") in ("997", "999")
        assert doc.get("GE02") == doc.get("GS06") and doc.get("IEA02") == doc.get("ISA13")


def test_acknowledgements_are_not_acknowledged() -> None:
    x = X12DataType()
    answer = x.respond(sample("850_4010_purchase_order.edi").encode(), Outcome("AA"))
    assert answer is not None
    assert x.respond(answer, Outcome("AA")) is None


def test_content_comes_from_validation_not_from_the_outcome() -> None:
    x = X12DataType()
    raw = sample("850_4010_purchase_order.edi").encode()
    assert x.respond(raw, Outcome("AE", reason="mapping failed")) is not None
    assert b"AK5*A" in (x.respond(raw, Outcome("AE", reason="mapping failed")) or b"")


def test_ta1_when_requested_and_for_interchange_errors() -> None:
    base = sample("850_4010_purchase_order.edi")
    requested = ack(base.replace("*000000101*0*T*>", "*000000101*1*T*>"))
    assert segments(requested)[:3] == [segments(requested)[0], "TA1*000000101*260115*1030*A*000", "IEA*0*000123456"]
    assert len(segments(requested, "ST")) == 1  # the 997 follows in its own interchange
    assert X12DataType().parse(requested.encode()).get("TA104") == "A"  # a TA1 interchange parses back
    wrong_control = ack(base.replace("IEA*1*000000101", "IEA*1*000000999"))
    assert segments(wrong_control, "TA1") == ["TA1*000000101*260115*1030*R*001"]
    assert segments(wrong_control, "ST") == []
    wrong_count = ack(base.replace("IEA*1*000000101", "IEA*2*000000101"))
    assert segments(wrong_count, "TA1") == ["TA1*000000101*260115*1030*R*021"]
    assert segments(wrong_count, "AK9") == []  # parse refuses it too: nothing is processed
    truncated = ack(base[: base.index("GE*")])
    assert segments(truncated, "TA1") == ["TA1*000000101*260115*1030*R*023"]
    assert acknowledge(b"garbage that is not X12") is None


def test_control_numbers_are_nine_digits_increasing_and_injectable() -> None:
    allocate = ControlNumbers(clock=lambda: 1_790_000_000.0)
    drawn = [allocate() for _ in range(5)]
    assert drawn == sorted(set(drawn)) and all(0 < n < 10**9 for n in drawn)
    wrapping = ControlNumbers(clock=lambda: 99_999_999.95)  # base 999999999: wraps, never 0
    assert [wrapping() for _ in range(3)] == [999999999, 1, 2]
    assert ControlNumbers(clock=lambda: 12345.6)() == 123456
    x = X12DataType()
    x.control_numbers = lambda: 42
    x.clock = lambda: NOON
    answer = (x.respond(sample("850_4010_purchase_order.edi").encode(), Outcome("AA")) or b"").decode()
    assert "*000000042*0*T*>" in answer and "GS*FA*EXAMPLESUPPLIER*EXAMPLEBUYER*20260116*1205*42*X*004010" in answer


@pytest.mark.parametrize("terminator", ["~", "\u2026"])
def test_delimiters_of_the_inbound_are_reused(terminator: str) -> None:
    raw = sample("810_4010_invoice.edi").replace("*", "^").replace("~", terminator).replace("^U^", "^U^", 1)
    interchanges, _ = tokenize(raw.encode())
    assert interchanges[0].delimiters.element == "^"
    answer = ack(raw)
    assert answer.startswith("ISA^00^") and f"AK5^A{terminator}" in answer


def test_acknowledgement_kind_can_be_forced_or_turned_off() -> None:
    po = sample("850_4010_purchase_order.edi").encode()
    po_ack = sample("855_5010_po_ack.edi").encode()
    forced_997 = acknowledge(po_ack, numbers(), lambda: NOON, "997")
    assert forced_997 is not None and "ST*997*0001~" in forced_997.decode()
    assert "AK1*PR*202~" in forced_997.decode() and "*00401*" in forced_997.decode()
    forced_999 = acknowledge(po, numbers(), lambda: NOON, "999")
    assert forced_999 is not None and "ST*999*0001*005010X231A1~" in forced_999.decode()
    assert X12DataType().parse(forced_999).get("AK103") == "004010"
    as_number = X12Config.model_validate({"type": "x12", "acknowledgement": 997})  # YAML: acknowledgement: 997
    assert as_number.acknowledgement == "997"
    silent = X12DataType(X12Config(type="x12", acknowledgement="off"))
    assert silent.respond(po, Outcome("AA")) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 600), st.sampled_from(list("*~>^:U0A\n \x00"))), max_size=6))
def test_respond_never_raises_on_damaged_interchanges(edits: list[tuple[int, str]]) -> None:
    text = list(sample("855_5010_po_ack.edi"))
    for index, char in edits:
        text[index % len(text)] = char
    answer = acknowledge("".join(text).encode(), numbers(), lambda: NOON)
    if answer is not None:
        tokenize(answer)  # whatever we send back is well-formed X12
