"""X12 transaction schemas as data and the loop-aware validator (every AK3/AK4 code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.errors import ParseError
from engine.datatypes.x12 import X12Config, X12DataType
from engine.datatypes.x12.schema import ElementSpec, SegmentSpec, available, dictionary, transaction
from engine.datatypes.x12.tokenizer import Delimiters, tokenize
from engine.datatypes.x12.validate import ElementError, SegmentError, _Walker, validate_transaction

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "x12"
X = X12DataType()

PO_BODY = [
    "BEG*00*SA*PO-1**20260115",
    "REF*DP*042",
    "N1*ST*Dock B*92*SHIP02",
    "N3*1 Sample Street",
    "N4*Testville*MA*01000",
    "PO1*1*10*BX*12.50**VP*SKU-A",
    "PID*F****Gloves",
    "CTT*1",
]


def interchange(body: list[str], kind: str = "850", version: str = "004010", st03: str = "") -> bytes:
    """One interchange with one transaction set around ``body`` (counts computed)."""
    five = version >= "005010"
    isa = (
        f"ISA*00*          *00*          *ZZ*BUYER          *ZZ*SUPPLIER       *260115*1030*"
        f"{'^' if five else 'U'}*{'00501' if five else '00401'}*000000101*0*T*>"
    )
    group = {"850": "PO", "855": "PR", "856": "SH", "810": "IN", "997": "FA", "999": "FA"}.get(kind, "PO")
    st = f"ST*{kind}*0001" + (f"*{st03}" if st03 else "")
    lines = [isa, f"GS*{group}*BUYER*SUPPLIER*20260115*1030*101*X*{version}", st, *body]
    lines += [f"SE*{len(body) + 2}*0001", "GE*1*101", "IEA*1*000000101"]
    return ("~\n".join(lines) + "~\n").encode()


def errors_of(raw: bytes) -> list[SegmentError]:
    ics, _ = tokenize(raw)
    group = ics[0].groups[0]
    version = group.gs.elements[8][:6]
    return validate_transaction(group.transactions[0].segments, ics[0].delimiters, version)


def codes(errors: list[SegmentError]) -> list[tuple[str, int, str, list[tuple[int, int, str]]]]:
    return [(e.segment_id, e.position, e.code, [(x.position, x.component, x.code) for x in e.elements]) for e in errors]


def replace(body: list[str], old: str, new: str) -> list[str]:
    return [new if line == old else line for line in body]


# -- the schema files ----------------------------------------------------------------------------


def test_every_schema_loads_and_names_only_dictionary_segments() -> None:
    assert {"810", "835", "837", "850", "855", "856", "997", "999"} <= set(available())
    known = dictionary()
    for set_id in available():
        schema = transaction(set_id)
        assert schema is not None and schema.id == set_id
        if not schema.ids_only:
            assert schema.structure[0].id == "ST" and schema.structure[-1].id == "SE"
            assert schema.segment_ids <= set(known)
    assert transaction("123") is None and transaction("../x") is None
    assert transaction("850") is transaction("850")  # loaded once, cached
    beg = known["BEG"]
    assert beg.elements[0].codes is not None and "00" in beg.elements[0].codes  # codes stay text
    assert known["ST"].for_version("004010").elements[-1].position == 2
    assert known["ST"].for_version("005010").elements[-1].position == 3


def test_schema_files_ship_inside_the_package() -> None:
    folder = Path(__file__).resolve().parents[2] / "engine" / "datatypes" / "x12" / "schemas"
    assert (folder / "segments.yaml").is_file() and (folder / "850.yaml").is_file()


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.edi")))
def test_the_project_samples_are_valid(name: str) -> None:
    assert errors_of((SAMPLES / name).read_bytes()) == []


# -- segment errors (AK304 / IK304) ----------------------------------------------------------------


def test_valid_synthetic_purchase_order() -> None:
    assert errors_of(interchange(PO_BODY)) == []


def test_1_unrecognized_segment_id() -> None:
    body = [*PO_BODY[:2], "ZZQ*1", *PO_BODY[2:]]
    assert codes(errors_of(interchange(body))) == [("ZZQ", 4, "1", [])]


def test_2_unexpected_segment_of_the_set() -> None:
    body = [*PO_BODY, "BEG*00*SA*PO-2**20260115"]  # BEG again after the summary
    assert codes(errors_of(interchange(body))) == [("BEG", 10, "2", [])]


def test_3_mandatory_segment_and_loop_missing() -> None:
    assert codes(errors_of(interchange(PO_BODY[1:]))) == [("BEG", 2, "3", [])]
    no_lines = [line for line in PO_BODY if not line.startswith(("PO1", "PID"))]
    assert codes(errors_of(interchange(no_lines))) == [("PO1", 7, "3", [])]  # found missing at CTT


def test_4_loop_occurs_over_maximum() -> None:
    errors = errors_of(interchange([*PO_BODY, "CTT*1"]))  # the CTT loop may occur once
    assert codes(errors) == [("CTT", 10, "4", [])]
    assert errors[0].loop_id == "CTT"


def test_5_segment_exceeds_maximum_use() -> None:
    body = [PO_BODY[0], "CUR*BY*USD", "CUR*BY*EUR", *PO_BODY[1:]]
    assert codes(errors_of(interchange(body))) == [("CUR", 4, "5", [])]


def test_6_segment_not_in_the_transaction_set() -> None:
    body = [*PO_BODY[:2], "BIG*20260115*INV-1", *PO_BODY[2:]]  # an 810 segment
    assert codes(errors_of(interchange(body))) == [("BIG", 4, "6", [])]


def test_loops_nest_and_close() -> None:
    body = [
        *PO_BODY[:5],
        "N1*BT*Hospital*92*BILL01",  # second N1 loop of the header
        "PO1*1*10*BX*12.50**VP*SKU-A",
        "N1*ST*Dock C*92*SHIP03",  # N1 loop inside the PO1 loop
        "N3*2 Sample Street",
        "PO1*2*1*EA*5**VP*SKU-B",  # closes the inner N1 loop, repeats PO1
        "CTT*2",
        "AMT*TT*130",  # in the CTT loop
    ]
    assert errors_of(interchange(body)) == []
    misplaced = errors_of(interchange([*body[:-1], "REF*DP*1", "AMT*TT*130"]))
    assert codes(misplaced) == [("REF", 13, "2", [])]


# -- element errors (AK403 / IK403) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("BEG*00*SA*PO-1**20260115", "BEG*00*SA***20260115", ("BEG", 2, [(3, 0, "1")])),
        ("N1*ST*Dock B*92*SHIP02", "N1*ST*Dock B*92", ("N1", 4, [(4, 0, "2")])),
        ("N3*1 Sample Street", "N3*1 Sample Street*Suite 2*Extra", ("N3", 5, [(3, 0, "3")])),
        ("BEG*00*SA*PO-1**20260115", "BEG*0*SA*PO-1**20260115", ("BEG", 2, [(1, 0, "4")])),
        ("BEG*00*SA*PO-1**20260115", "BEG*00*SA*" + "P" * 23 + "**20260115", ("BEG", 2, [(3, 0, "5")])),
        ("PO1*1*10*BX*12.50**VP*SKU-A", "PO1*1*1O*BX*12.50**VP*SKU-A", ("PO1", 7, [(2, 0, "6")])),
        ("BEG*00*SA*PO-1**20260115", "BEG*99*SA*PO-1**20260115", ("BEG", 2, [(1, 0, "7")])),
        ("BEG*00*SA*PO-1**20260115", "BEG*00*SA*PO-1**20260231", ("BEG", 2, [(5, 0, "8")])),
        ("REF*DP*042", "DTM*002*20260122*2460", ("DTM", 3, [(3, 0, "9")])),
        ("PID*F****Gloves", "PID*Q****Gloves", ("PID", 8, [(1, 0, "7")])),
    ],
)
def test_element_error_codes(old: str, new: str, expected: tuple[str, int, list[tuple[int, int, str]]]) -> None:
    errors = errors_of(interchange(replace(PO_BODY, old, new)))
    assert codes(errors) == [(expected[0], expected[1], "8", expected[2])]


def test_syntax_rules_paired_required_exclusion_conditional_list() -> None:
    spec = SegmentSpec(
        "ZZ1",
        "test",
        tuple(ElementSpec(n, "X", "AN", 1, 5) for n in range(1, 7)),
        parsed_rules=(("E", (1, 2)), ("C", (3, 4)), ("L", (5, 6, 1))),
    )
    schema = transaction("850")
    assert schema is not None
    walker = _Walker(schema, Delimiters("*", ">", "~"), "004010")

    def check(values: list[str]) -> list[tuple[int, str]]:
        found: list[ElementError] = []
        walker.check_rules(spec, ["ZZ1", *values], found)
        return [(e.position, e.code) for e in found]

    assert check(["a", "b", "", "", "", ""]) == [(2, "10")]
    assert check(["a", "", "c", "", "", ""]) == [(4, "2")]
    assert check(["", "", "", "", "e", ""]) == [(6, "2")]
    assert check(["a", "", "c", "d", "e", "f"]) == []
    paired = errors_of(interchange(replace(PO_BODY, "REF*DP*042", "PER*IC*Pat**555")))
    assert codes(paired) == [("PER", 3, "8", [(3, 0, "2")])]
    required = errors_of(interchange(replace(PO_BODY, "REF*DP*042", "REF*DP")))
    assert codes(required) == [("REF", 3, "8", [(2, 0, "2")])]


def test_composites_numbers_and_times() -> None:
    ack = [
        "AK1*PO*101*005010",
        "AK2*850*0001*005010",
        "IK3*BEG*2**8",
        "IK4*1>X**7*99",  # component 2 of IK401 is numeric
        "IK5*R*5",
        "AK9*R*1*1*0",
    ]
    errors = errors_of(interchange(ack, "999", "005010X231A1", "005010X231A1"))
    assert codes(errors) == [("IK4", 5, "8", [(1, 2, "6")])]
    good = replace(ack, "IK4*1>X**7*99", "IK4*1**7*99")
    assert errors_of(interchange(good, "999", "005010X231A1", "005010X231A1")) == []
    signed = replace(PO_BODY, "PO1*1*10*BX*12.50**VP*SKU-A", "PO1*1*-10*BX*.5**VP*SKU-A")
    assert errors_of(interchange(signed)) == []
    timed = replace(PO_BODY, "REF*DP*042", "DTM*002*20260122*235959")
    assert errors_of(interchange(timed)) == []


def test_versions_gate_elements_and_date_width() -> None:
    assert codes(errors_of(interchange(PO_BODY, st03="X"))) == [("ST", 1, "8", [(3, 0, "3")])]
    assert errors_of(interchange(PO_BODY, version="005010", st03="005010")) == []
    short_date = replace(PO_BODY, "BEG*00*SA*PO-1**20260115", "BEG*00*SA*PO-1**260115")
    assert errors_of(interchange(short_date, version="003010")) == []
    assert codes(errors_of(interchange(short_date))) == [("BEG", 2, "8", [(5, 0, "8")])]


def test_5010_n9_loops_carry_mtx_and_4010_keeps_msg() -> None:
    # 005010 replaced MSG with MTX in the N9 loops of the 850, 855 and 810.
    po_note = [*PO_BODY[:2], "N9*L1*NOTES", "MTX**Deliver to dock 4", *PO_BODY[2:]]
    assert errors_of(interchange(po_note, version="005010")) == []
    assert codes(errors_of(interchange(po_note))) == [("MTX", 5, "2", [])]  # not in 4010
    with_msg = [*PO_BODY[:2], "N9*L1*NOTES", "MSG*Deliver to dock 4", *PO_BODY[2:]]
    assert errors_of(interchange(with_msg)) == []
    line_note = [*PO_BODY[:7], "N9*L1*LINE NOTE", "MTX**Sterile", *PO_BODY[7:]]
    assert errors_of(interchange(line_note, version="005010")) == []
    ack = ["BAK*00*AC*PO-1*20260115", "N9*L1*NOTES", "MTX**Partial", "PO1*1*3*EA*4.50**VC*ABC", "ACK*IA*3*EA"]
    assert errors_of(interchange([*ack, "CTT*1"], "855", "005010")) == []
    invoice = ["BIG*20260115*INV-1*20260110*PO-1", "N9*L1*NOTES", "{}", "IT1*1*2*EA*10**VC*ABC", "TDS*2000"]
    assert errors_of(interchange([x.format("MTX**Thank you") for x in invoice], "810", "005010")) == []
    assert errors_of(interchange([x.format("MSG*Thank you") for x in invoice], "810")) == []
    no_text = [x for x in invoice if x != "{}"]
    assert [(e.segment_id, e.code) for e in errors_of(interchange(no_text, "810"))] == [("MSG", "3")]  # 4010


def test_855_ack_precedes_the_schedule_loop() -> None:
    # ACK (position 270) comes before the SCH loop; an ACK sent after its SCH is still accepted.
    head = ["BAK*00*AC*PO-1*20260115", "PO1*1*3*EA*4.50**VC*ABC"]
    standard = [*head, "ACK*IA*3*EA", "SCH*3*EA***002*20260120", "CTT*1"]
    assert errors_of(interchange(standard, "855")) == []
    assert errors_of(interchange(standard, "855", "005010")) == []
    assert errors_of(interchange([*head, "SCH*3*EA***002*20260120", "ACK*IA*3*EA", "CTT*1"], "855")) == []


def test_856_hierarchy_levels_and_parents() -> None:
    raw = (SAMPLES / "856_4010_ship_notice.edi").read_text()
    assert errors_of(raw.replace("HL*4*3*I", "HL*4*3*X").encode())[0].elements[0].code == "7"
    orphan = errors_of(raw.replace("HL*4*3*I", "HL*4*9*I").encode())
    assert codes(orphan) == [("HL", 12, "8", [(2, 0, "7")])]
    twice = errors_of(raw.replace("HL*4*3*I", "HL*3*3*I").encode())
    assert codes(twice) == [("HL", 12, "8", [(1, 0, "7")])]


def test_hipaa_sets_are_checked_for_segment_ids_only() -> None:
    body = ["BHT*0019*00*1*20260115*1030*CH", "NM1*41*2*Sender", "XYZ*1", "BIG*20260115*1"]
    assert codes(errors_of(interchange(body, "837", "005010X222A1"))) == [("XYZ", 4, "1", []), ("BIG", 5, "6", [])]


def test_sets_without_schema_are_not_checked() -> None:
    assert errors_of(interchange(["W05*N*1", "ZZZ*1"], "940")) == []


# -- the data type ---------------------------------------------------------------------------------


def test_parse_raises_with_position_and_code_but_no_content() -> None:
    secret = "SECRETPO12345678901234567"
    raw = interchange(replace(PO_BODY, "BEG*00*SA*PO-1**20260115", f"BEG*00*SA*{secret}**20260115"))
    with pytest.raises(ParseError) as caught:
        X.parse(raw)
    assert caught.value.position == "segment 4 (BEG), element 03"
    assert caught.value.code == "AK5:5"
    assert "too long" in caught.value.reason and "code 5" in caught.value.reason
    assert secret not in str(caught.value) and secret not in repr(errors_of(raw))
    five = interchange(replace(PO_BODY, "PID*F****Gloves", "PID*Q****Gloves"), version="005010")
    with pytest.raises(ParseError) as caught5:
        X.parse(five)
    assert caught5.value.code == "IK5:5" and caught5.value.position == "segment 10 (PID), element 01"
    assert X12DataType(X12Config(type="x12", schema_validation=False)).parse(raw).get("BEG03") == secret


def test_parse_reports_missing_segments_where_they_were_expected() -> None:
    with pytest.raises(ParseError) as caught:
        X.parse(interchange(PO_BODY[1:]))
    assert caught.value.position == "segment 4 (REF)"
    assert "BEG" in caught.value.reason and "mandatory segment missing" in caught.value.reason
    many = interchange(["BEG*99*SA*PO-1**20260199", *PO_BODY[1:], "ZZQ"])
    with pytest.raises(ParseError) as caught_many:
        X.parse(many)
    assert "1 more problem(s)" in caught_many.value.reason


def test_paths_follow_the_schema_loops() -> None:
    raw = (SAMPLES / "850_4010_purchase_order.edi").read_text()
    raw = raw.replace("PID*F****Synthetic gloves, medium~", "PID*F****Synthetic gloves, medium~\nREF*ZZ*LINE-REF~")
    raw = raw.replace("SE*16*", "SE*17*")
    doc = X.parse(raw.encode())
    assert doc.get("N1[N101=ST]/REF02") is None  # the header N1 loop ends where the detail begins
    assert doc.get("N1[N101=ST]/N4") == "N4*Testville*MA*01000"
    assert doc.get("PO1[1]/REF02") == "LINE-REF"
    assert [line.get("PO102") for line in doc.iterate("PO1")] == ["10", "4", "1"]
    envelope_only = X12DataType(X12Config(type="x12", schema_validation=False)).parse(raw.encode())
    assert envelope_only.get("N1[N101=ST]/REF02") == "LINE-REF"  # without a schema: up to CTT
