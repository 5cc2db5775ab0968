"""The x12 data type: delimiters, envelope checks, split, paths and loops."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.errors import ParseError
from engine.datatypes.x12 import X12, X12Config, X12DataType
from engine.datatypes.x12.document import parse_path
from engine.datatypes.x12.tokenizer import Delimiters, tokenize

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "x12"
X = X12DataType()


@pytest.fixture(scope="module")
def corpus() -> Path:
    folder = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "x12"
    if not folder.is_dir():
        pytest.skip("the shared X12 corpus (../shared/corpus/x12) is not present in this checkout")
    return folder


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def delimiters(raw: bytes) -> Delimiters:
    return tokenize(raw)[0][0].delimiters


# -- delimiters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("846_oopfactory_inventory_advice.edi", ("~", ">", "}")),  # '~' as element separator, BOM
        ("850_4000_oopfactory_pgwglass.edi", ("*", "~", "|")),
        ("856_4010_oopfactory_01.edi", ("~", "`", "*")),
        ("856_oopfactory_03.edi", ("*", ":", "\u2026")),  # a multi-byte UTF-8 terminator
        ("850_4010_edengine_ok.edi", ("*", ">", "\n")),  # the line break is the terminator
        ("832_4010_oopfactory_hibcc_catalog.edi", ("^", ">", "~")),
        ("837i_5010_oopfactory_spec311.edi", ("*", "^", "~")),
    ],
)
def test_delimiters_of_odd_corpus_files(corpus: Path, name: str, expected: tuple[str, str, str]) -> None:
    found = delimiters((corpus / name).read_bytes())
    assert (found.element, found.component, found.segment) == expected


def test_non_fixed_width_isa_is_accepted_with_a_warning_or_refused_when_strict(corpus: Path) -> None:
    raw = (corpus / "850_oopfactory_adobe_clp.edi").read_bytes()
    doc = X.parse(raw)
    assert doc.get("ST01") == "850"
    assert any("fixed width" in w for w in doc.warnings)
    with pytest.raises(ParseError) as caught:
        X12DataType(X12Config(type="x12", strict_isa_width=True)).parse(raw)
    assert "ISA" in caught.value.position


def test_repetition_separator_is_read_from_isa11_in_5010_only() -> None:
    assert delimiters(sample("855_5010_po_ack.edi")).repetition == "^"
    assert delimiters(sample("850_4010_purchase_order.edi")).repetition is None


# -- the whole corpus ------------------------------------------------------------------------


def test_every_corpus_file_splits_and_parses_or_raises_parse_error(corpus: Path) -> None:
    envelope_only = X12DataType(X12Config(type="x12", schema_validation=False))  # schemas: test_x12_corpus.py
    outcomes: dict[str, str] = {}
    for path in sorted(corpus.glob("*.edi")):
        raw = path.read_bytes()
        header = X.header(raw)  # never raises
        for part in X.split(raw):
            try:
                doc = envelope_only.parse(part)
            except ParseError as exc:
                outcomes[path.name] = "error" if exc.reason else "error without a reason"
            else:
                assert doc.get("ST01") and doc.get("SE01")
                outcomes.setdefault(path.name, "ok")
        assert isinstance(header.control_id, str)
    assert "error without a reason" not in outcomes.values()
    assert outcomes["malformed_badx12_bad_file.edi"] == "error"
    assert outcomes["850_4010_edengine_ok.edi"] == "ok"
    assert list(outcomes.values()).count("ok") >= 30


def test_split_gives_one_complete_interchange_per_transaction(corpus: Path) -> None:
    raw = (corpus / "mixed_edengine_multi_interchange_groups.edi").read_bytes()
    parts = X.split(raw)
    assert len(parts) == 6
    for part in parts:
        doc = X.parse(part)
        assert doc.get("GE01") == "1" and doc.get("IEA01") == "1"
        assert len(doc.get_all("ST")) == 1
    assert X.split(sample("850_4010_purchase_order.edi")) == [sample("850_4010_purchase_order.edi")]


def test_split_keeps_an_interchange_with_a_wrong_group_count_whole() -> None:
    raw = sample("855_5010_po_ack.edi")
    text = raw.decode()
    doubled = text.replace("GE*1*202", "ST*855*0002~BAK*00*AC*X*20260116~SE*3*0002~GE*3*202")
    parts = X.split(doubled.encode())
    assert parts == [doubled.encode()] or len(parts) == 1
    with pytest.raises(ParseError) as caught:
        X.parse(parts[0])
    assert "(GE)" in caught.value.position and caught.value.code == "AK9:5"


# -- samples and paths -----------------------------------------------------------------------


def test_850_paths() -> None:
    doc = X.parse(sample("850_4010_purchase_order.edi"))
    assert doc.get("ISA06") == "EXAMPLEBUYER"
    assert doc.get("GS02") == "EXAMPLEBUYER" and doc.get("ST01") == "850"
    assert doc.get("BEG03") == "PO-TEST-1001"
    assert doc.get_all("PO1/PO102") == ["10", "4", "1"]
    assert doc.get("PO1[2]/PO107") == "SKU-TEST-B"
    assert doc.get("REF[2]/REF02") == "TESTVENDOR7"
    assert doc.get("REF[REF01=VR]/REF02") == "TESTVENDOR7"
    assert doc.get("N1[N101=ST]/N104") == "SHIP02"
    assert doc.get("N1[N101=ST]/N3") == "N3*1 Sample Street"
    assert doc.get("N1[N101=BT]/N3") is None  # the bill-to loop has no N3
    assert doc.get("CTT01") == "3"
    lines = doc.iterate("PO1")
    assert [line.get("PO101") for line in lines] == ["1", "2", "3"]
    assert [line.get("PID05") for line in lines[:2]] == ["Synthetic gloves, medium", "Synthetic gauze pads"]
    # A loop without the segment reads what surrounds the loops, never a sibling line's.
    assert lines[2].get("PID05") is None
    assert [len(line.entries) for line in lines] == [2, 2, 1]
    assert lines[0].get("BEG03") == "PO-TEST-1001"  # falls back to the whole transaction


def test_855_components_and_repetitions() -> None:
    doc = X.parse(sample("855_5010_po_ack.edi"))
    assert doc.get("BAK03") == "PO-TEST-1001"
    assert doc.get_all("PO1[1]/PO107") == ["SKU-TEST-A", "SKU-ALT-A"]
    loops = doc.iterate("PO1")
    assert [loop.get_all("ACK01") for loop in loops] == [["IA"], ["IB", "IR"]]
    assert X.header(sample("855_5010_po_ack.edi")).message_type == "855"


def test_856_hl_loops() -> None:
    doc = X.parse(sample("856_4010_ship_notice.edi"))
    assert [hl.get("HL03") for hl in doc.iterate("HL")] == ["S", "O", "P", "I", "I"]
    items = doc.iterate("HL[HL03=I]")
    assert [(i.get("HL02"), i.get("LIN03"), i.get("SN102")) for i in items] == [
        ("3", "SKU-TEST-A", "10"),
        ("3", "SKU-TEST-B", "4"),
    ]
    assert doc.get("HL[HL03=O]/PRF01") == "PO-TEST-1001"
    assert doc.get("HL[HL03=S]/TD503") == "TESTCARRIER"
    assert doc.get("HL[HL03=S]/LIN03") is None  # loops stop at the next HL


def test_856_hl_views_follow_the_parent_links() -> None:
    # S/O/I/P with two orders: HL paths in an HL view reach the levels above and below it.
    body = [
        "BSN*00*ASN-1*20260301*1200", "DTM*011*20260301", "HL*1**S", "TD1*CTN*2",
        "HL*2*1*O", "PRF*PO-1", "HL*3*2*I", "LIN*1*VC*A-1", "HL*4*3*P", "MAN*GM*C-1",
        "HL*5*1*O", "PRF*PO-2", "HL*6*5*I", "LIN*1*VC*B-2", "REF*LT*L-2", "HL*7*5*I", "LIN*2*VC*C-3",
    ]  # fmt: skip
    raw = "~".join([
        f"ISA*00*{'':10}*00*{'':10}*ZZ*{'S':<15}*ZZ*{'R':<15}*260301*1200*U*00401*000000001*0*T*>",
        "GS*SH*S*R*20260301*1200*1*X*004010", "ST*856*0001", *body, f"SE*{len(body) + 2}*0001", "GE*1*1",
        "IEA*1*000000001",
    ]) + "~"  # fmt: skip
    doc = X.parse(raw.encode())
    orders = doc.iterate("HL[HL03=O]")
    assert [[i.get("LIN03") for i in o.iterate("HL[HL03=I]")] for o in orders] == [["A-1"], ["B-2", "C-3"]]
    assert [[p.get("MAN02") for p in o.iterate("HL[HL03=P]")] for o in orders] == [["C-1"], []]
    (pack,) = orders[0].iterate("HL[HL03=P]")
    assert [i.get("LIN03") for i in pack.iterate("HL[HL03=I]")] == ["A-1"]  # the item above the pack
    assert pack.get("HL[HL03=O]/PRF01") == "PO-1" and pack.get("HL[HL03=I]/HL01") == "3"
    first, second = orders[1].iterate("HL[HL03=I]")
    assert (first.get("REF02"), second.get("REF02")) == ("L-2", None)  # never a sibling's lot
    assert second.get("HL[HL03=P]/HL01") is None and second.get("DTM02") == "20260301"  # the heading is read
    assert second.get("HL[HL03=S]/TD102") == "2" and second.get("PRF01") is None  # no inheritance from levels
    assert doc.get("HL[HL03=S]/LIN03") is None  # outside an HL view, loops stay flat


def test_810_crlf_and_header() -> None:
    raw = sample("810_4010_invoice.edi")
    assert b"~\r\n" in raw
    doc = X.parse(raw)
    assert doc.get_all("IT1/IT104") == ["12.50", "80"]
    assert doc.get("TDS01") == "44500"
    header = X.header(raw)
    assert header.control_id == "0001"
    assert header.message_type == "810"
    assert header.business_key == "EXAMPLESUPPLIER|000000404|404|0001"
    assert header.fields["GS01"] == "IN"


def test_component_path_and_invalid_paths() -> None:
    assert parse_path("SLN01-2")[0].component == 2
    for bad in ("po1", "PO1/PO102/", "PO102/PO103", "PO1[0]", "PO1[X=1]", "PO1-2"):
        with pytest.raises(ValueError):
            X.check_path(bad)


def test_header_never_raises_on_garbage() -> None:
    assert X.header(b"not x12 at all").control_id == ""
    assert X.respond(b"not x12 at all", None) is None  # type: ignore[arg-type]
    assert X12.name == "x12"


# -- envelope errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "segment", "code"),
    [
        ("SE*16*0001", "SE*15*0001", "(SE)", "AK5:4"),
        ("SE*16*0001", "SE*16*0002", "(SE)", "AK5:3"),
        ("GE*1*101", "GE*2*101", "(GE)", "AK9:5"),
        ("GE*1*101", "GE*1*102", "(GE)", "AK9:4"),
        ("IEA*1*000000101", "IEA*1*000000999", "(IEA)", "TA1:001"),
        ("IEA*1*000000101", "IEA*2*000000101", "(IEA)", "TA1:021"),
        ("SE*16*0001~", "", "", "AK5:2"),
        ("CTT*3~", "CTT*3~GS*PO~", "(GS)", "AK9:3"),
    ],
)
def test_envelope_errors_name_the_segment(old: str, new: str, segment: str, code: str) -> None:
    text = sample("850_4010_purchase_order.edi").decode()
    assert old in text
    with pytest.raises(ParseError) as caught:
        X.parse(text.replace(old, new).encode())
    assert segment in caught.value.position
    assert caught.value.code == code
    assert "PO-TEST" not in str(caught.value)  # never quotes content


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_parse_error(raw: bytes) -> None:
    X.header(raw)
    for part in X.split(raw):
        try:
            X.parse(part)
        except ParseError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ISAGE*~:^>\n0123 ", max_size=300))
def test_isa_like_text_raises_only_parse_error(body: str) -> None:
    raw = ("ISA*" + body).encode()
    X.header(raw)
    for part in X.split(raw):
        try:
            X.parse(part)
        except ParseError:
            pass
