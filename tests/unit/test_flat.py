"""The delimited and fixed-width data types: layouts, typing, records, paths, split, errors."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import registry
from engine.core.contracts import Outcome
from engine.core.errors import ConfigError, ParseError
from engine.datatypes.flat import DelimitedConfig, FixedWidthConfig
from engine.datatypes.flat.delimited import Delimited
from engine.datatypes.flat.document import FlatPath, parse_path, parse_selector
from engine.datatypes.flat.fixed import FixedWidth

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "flat"


def delimited(**keys: Any) -> Delimited:
    return Delimited(DelimitedConfig.model_validate({"type": "delimited", **keys}), base_dir=ROOT)


def fixed(**keys: Any) -> FixedWidth:
    return FixedWidth(FixedWidthConfig.model_validate({"type": "fixed-width", **keys}), base_dir=ROOT)


def parse_error(datatype: Delimited | FixedWidth, raw: bytes) -> str:
    with pytest.raises(ParseError) as caught:
        datatype.parse(raw)
    return str(caught.value)


HDT_RECORDS: dict[str, Any] = {
    "H": {"role": "header", "fields": [{"name": "type"}, {"name": "gpo"}, {"name": "day", "type": "date"}]},
    "D": {"fields": [{"name": "type"}, {"name": "item", "required": True}, {"name": "price", "type": "decimal"}]},
    "T": {"role": "trailer", "count_field": "n", "fields": [{"name": "type"}, {"name": "n", "type": "int"}]},
}
HDT: dict[str, Any] = {"delimiter": "|", "type_column": 1, "records": HDT_RECORDS}
HDT_FILE = b"H|Vizient|2024-03-01\nD|A-1|10.50\nD|A-2|3\nT|2\n"


# -- delimited: header rows, names, indexes, typing -----------------------------------------------


def test_header_row_names_columns_and_index_paths_count_from_one() -> None:
    doc = delimited().parse(b'Item Number,Description,Unit Cost\r\nSUP-1,"Gloves, sterile",38.00\r\nSUP-2,Gauze,2\r\n')
    assert doc.get("Item Number") == "SUP-1"
    assert doc.get_all("Item Number") == ["SUP-1", "SUP-2"]
    assert doc.get("#2") == "Gloves, sterile"
    assert doc.get_all("#3") == ["38.00", "2"]
    assert doc.get("Missing") is None and doc.get_all("Missing") == []
    assert doc.get("#9") is None


def test_typed_columns_are_normalised() -> None:
    datatype = delimited(
        columns=[
            {"name": "qty", "type": "int"},
            {"name": "cost", "type": "decimal"},
            {"name": "day", "type": "date", "format": "%m/%d/%Y"},
        ]
    )
    doc = datatype.parse(b"qty,cost,day\n0012,0012.50,3/1/2024\n-3,-.5,12/31/2024\n")
    assert doc.get_all("qty") == ["12", "-3"]
    assert doc.get_all("cost") == ["12.50", "-0.5"]
    assert doc.get_all("day") == ["2024-03-01", "2024-12-31"]


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ({"name": "cost", "type": "decimal"}, "12,50", "expected a decimal number"),
        ({"name": "cost", "type": "int"}, "1.5", "expected a whole number"),
        ({"name": "cost", "type": "date", "format": "%Y%m%d"}, "2024-13-01", "expected a date in the format %Y%m%d"),
        ({"name": "cost", "required": True}, "", "a required value is missing"),
    ],
)
def test_bad_values_name_line_and_column_never_the_value(column: dict[str, Any], value: str, reason: str) -> None:
    raw = f'id,cost\nA,1\nB,1\nC,"{value}"\n'.encode()
    if column.get("type") in ("int", "date"):
        raw = raw.replace(b"A,1\nB,1", b"A,\nB,")
    message = parse_error(delimited(columns=[column]), raw)
    assert message == f"line 4, column 'cost': {reason}"
    assert not value or value not in message


def test_required_column_missing_from_the_header_is_named() -> None:
    message = parse_error(delimited(columns=[{"name": "Unit Cost", "required": True}]), b"Item,Cost\nA,1\n")
    assert message == "line 1: the column header has no column 'Unit Cost'"


def test_optional_declared_column_absent_from_the_header_is_fine() -> None:
    doc = delimited(columns=[{"name": "Unit Cost", "type": "decimal"}]).parse(b"Item\nA\n")
    assert doc.get("Item") == "A" and doc.get("Unit Cost") is None


def test_a_row_with_more_fields_than_the_header_is_refused_but_empty_extras_pass() -> None:
    assert delimited().parse(b"a,b\n1,2,,\n").get("b") == "2"
    assert parse_error(delimited(), b"a,b\n1,2\n1,2,3\n") == "line 3: 3 fields, the layout has 2"


def test_short_rows_read_missing_cells_as_empty() -> None:
    doc = delimited().parse(b"a,b,c\n1\n")
    assert doc.get_all("c") == [""] and doc.get("c") is None


def test_blank_lines_are_skipped_and_an_empty_file_has_no_header() -> None:
    assert len(delimited().parse(b"a,b\n\n1,2\n\n").data) == 1
    assert parse_error(delimited(), b"") == "line 1: the file has no column header row"
    assert parse_error(delimited(skip_rows=2), b"x\ny\n") == "line 3: the file has no column header row"


def test_trim_strips_spaces_unless_switched_off() -> None:
    assert delimited().parse(b"a , b\n 1 , 2 \n").get("b") == "2"
    assert delimited(trim=False).parse(b"a,b\n1, 2 \n").get("b") == " 2 "


def test_no_header_with_column_names_in_order() -> None:
    datatype = delimited(header=False, columns=[{"name": "item"}, {"name": "qty", "type": "int"}])
    doc = datatype.parse(b"A,01\nB,2\n")
    assert doc.get_all("qty") == ["1", "2"] and doc.get("item") == "A"
    assert parse_error(datatype, b"A,1,extra\n") == "line 1: 3 fields, the layout has 2"


def test_no_header_and_no_columns_reads_by_index() -> None:
    doc = delimited(header=False).parse(b"A,1\nB,2,3\n")
    assert doc.get_all("#2") == ["1", "2"] and doc.get_all("#3") == ["", "3"]


# -- quoting and encodings -------------------------------------------------------------------------


def test_quotes_doubled_quotes_delimiters_and_newlines_inside_values() -> None:
    raw = b'id,text\n1,"say ""hi"", then\nleave"\n2,plain\n'
    doc = delimited().parse(raw)
    assert doc.get_all("text") == ['say "hi", then\nleave', "plain"]
    assert doc.data[1].number == 4  # the line the row ends on


def test_escape_char_and_no_quoting() -> None:
    assert delimited(escape_char="\\").parse(b'a,b\n"x\\"y",2\n').get("a") == 'x"y'
    doc = delimited(delimiter="\t", quote_char=None).parse(b'a\tb\n"x"\t2\n')
    assert doc.get("a") == '"x"'


def test_malformed_quoting_is_a_parse_error_with_the_line() -> None:
    message = parse_error(delimited(), b'a,b\n1,2\n"x"y,2\n')
    assert message.startswith("line 3: malformed delimited text")


@pytest.mark.parametrize(
    ("encoding", "raw", "expected"),
    [
        ("utf-8", b"\xef\xbb\xbfname\nCaf\xc3\xa9\n", "Café"),
        ("utf-8-sig", b"name\nCaf\xc3\xa9\n", "Café"),
        ("latin-1", b"name\nCaf\xe9\n", "Café"),
        ("cp1252", b"name\n\x93Caf\xe9\x94\n", "\u201cCafé\u201d"),
    ],
)
def test_encodings(encoding: str, raw: bytes, expected: str) -> None:
    assert delimited(encoding=encoding).parse(raw).get("name") == expected


def test_text_that_does_not_decode_names_line_and_byte() -> None:
    assert parse_error(delimited(), b"name\nok\nbad \xff\n") == "line 3, byte 13: the file is not utf-8 text"
    assert parse_error(delimited(encoding="cp1252"), b"a\n\x81\n") == "line 2, byte 3: the file is not cp1252 text"


CELL = st.text(alphabet=st.sampled_from(list('ab ,;"|\n\r\t\u00e9\u2014x1')), max_size=8)


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 4),
    data=st.data(),
    delimiter=st.sampled_from([",", ";", "|", "\t"]),
)
def test_whatever_the_csv_writer_writes_reads_back_unchanged(width: int, data: st.DataObject, delimiter: str) -> None:
    row = st.lists(CELL, min_size=width, max_size=width).filter(lambda cells: cells[0] != "")
    rows = data.draw(st.lists(row, max_size=5))
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow([f"c{i}" for i in range(1, width + 1)])
    writer.writerows(rows)
    doc = delimited(delimiter=delimiter, trim=False).parse(out.getvalue().encode())
    assert [record.cells for record in doc.data] == rows
    split = delimited(delimiter=delimiter, trim=False, per_row=True).split(out.getvalue().encode())
    if len(rows) > 1:
        assert [delimited(delimiter=delimiter, trim=False).parse(part).data[0].cells for part in split] == rows


# -- preamble rows and the CMS price transparency corpus --------------------------------------------


def test_skipped_rows_are_kept_as_preamble() -> None:
    doc = delimited(skip_rows=2).parse(b"name,version\nWest,3.0\nitem,price\nA,1\n")
    assert doc.get("preamble[2]/#1") == "West"
    assert doc.get_all("preamble/#2") == ["version", "3.0"]
    assert doc.get_all("item") == ["A"]
    assert doc.to_data()["preamble"] == [["name", "version"], ["West", "3.0"]]


CMS_LAYOUT = {
    "skip_rows": 2,
    "columns": [
        {"name": "description", "required": True},
        {"name": "standard_charge | gross", "type": "decimal"},
        {"name": "standard_charge | negotiated_dollar", "type": "decimal"},
        {"name": "standard_charge | min", "type": "decimal"},
        {"name": "count"},  # CMS writes ranges such as "1 through 10" here
    ],
}


def test_corpus_cms_tall_file(corpus: Path) -> None:
    doc = delimited(**CMS_LAYOUT).parse((corpus / "flat" / "hpt_v3_tall_example_cms.csv").read_bytes())
    assert len(doc.data) == 45
    assert doc.get("preamble[1]/#1") == "hospital_name"
    assert doc.get("preamble[2]/#1") == "West Mercy Hospital"
    first = doc.iterate("rows")[0]
    assert first.get("code | 1") == "611" and first.get("code | 2 | type") == "CPT"
    assert first.get("standard_charge | gross") == "1200"
    assert first.get("standard_charge | negotiated_dollar") == "400"
    assert doc.get_all("payer_name")[:2] == ["Platform Health Insurance", "Region Health Insurance"]
    assert doc.data[-1].number == 48
    assert doc.get("count") == "1 through 10" or "1 through 10" in doc.get_all("count")
    assert doc.get_all("standard_charge | min")[0] == "250"


def test_corpus_cms_wide_file_with_bom(corpus: Path) -> None:
    layout = {"skip_rows": 2, "columns": [{"name": "standard_charge|gross", "type": "decimal"}]}
    doc = delimited(**layout).parse((corpus / "flat" / "hpt_v3_wide_example_cms.csv").read_bytes())
    assert len(doc.data) == 26
    assert doc.get("preamble[1]/#1") == "hospital_name"  # the BOM is gone
    assert doc.get("standard_charge|Platform Health Insurance|PPO|negotiated_dollar") == "400"
    assert doc.get_all("standard_charge|gross")[:4] == ["1200", "", "", "5000"]


def test_corpus_cms_template_has_no_data_rows(corpus: Path) -> None:
    doc = delimited(skip_rows=2).parse((corpus / "flat" / "hpt_v3_tall_template_cms.csv").read_bytes())
    assert doc.data == [] and doc.iterate("rows") == []


# -- header / data / trailer records ----------------------------------------------------------------


def test_record_types_are_addressed_by_code() -> None:
    doc = delimited(**HDT).parse(HDT_FILE)
    assert doc.get("H/gpo") == "Vizient" and doc.get("H/day") == "2024-03-01"
    assert doc.get_all("price") == ["10.50", "3"]
    assert doc.get_all("D/item") == ["A-1", "A-2"] and doc.get("D[2]/item") == "A-2"
    assert doc.get("T/n") == "2"
    assert [view.get("item") for view in doc.iterate("D")] == ["A-1", "A-2"]
    assert [view.get("item") for view in doc.iterate("rows")] == ["A-1", "A-2"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            b"H|V|2024-03-01\nD|A|1\nD|B|2\nT|3\n",
            "line 4, record T, field 'n': the trailer counts 3 data records, the file has 2",
        ),
        (b"H|V|2024-03-01\nD|A|1\n", "the file has no trailer record (T): it may be truncated"),
        (b"D|A|1\nT|1\n", "the file has no header record (H)"),
        (b"H|V|2024-03-01\nD|A|1\nH|V|2024-03-01\nT|1\n", "line 3: a header record (H) may only come first"),
        (b"H|V|2024-03-01\nD|A|1\nT|1\nD|B|2\n", "line 4: a record follows the trailer (T)"),
        (b"H|V|2024-03-01\nX|A|1\nT|1\n", "line 2: unknown record type (expected one of H, D, T)"),
        (b"H|V|2024-03-01\nD||1\nT|1\n", "line 2, record D, field 'item': a required value is missing"),
        (b"H|V|2024-03-01\nD|A|1|9\nT|1\n", "line 2: 4 fields, record D has 3"),
        (b"", "the file has no header record (H)"),
    ],
)
def test_record_structure_errors(raw: bytes, message: str) -> None:
    assert parse_error(delimited(**HDT), raw).endswith(message)


def test_trailer_may_count_every_record() -> None:
    trailer = {
        "role": "trailer",
        "count_field": "n",
        "counts": "all",
        "fields": [{"name": "type"}, {"name": "n", "type": "int"}],
    }
    layout = {**HDT, "records": {**HDT_RECORDS, "T": trailer}}
    assert delimited(**layout).parse(HDT_FILE.replace(b"T|2", b"T|4")).get("T/n") == "4"
    assert "the trailer counts 2 records, the file has 4" in parse_error(delimited(**layout), HDT_FILE)


def test_to_data_lists_records_with_their_fields() -> None:
    data = delimited(**HDT).parse(HDT_FILE).to_data()
    assert data["records"][1] == {"type": "D", "row": 2, "fields": {"type": "D", "item": "A-1", "price": "10.50"}}


# -- fixed width -------------------------------------------------------------------------------------

FIXED_LAYOUT = {
    "encoding": "cp1252",
    "record_type": {"start": 1, "length": 1},
    "records": {
        "H": {"role": "header", "fields": [{"name": "gpo", "start": 2, "length": 10}]},
        "D": {
            "fields": [
                {"name": "item", "start": 2, "length": 6, "required": True},
                {"name": "price", "start": 8, "length": 7, "type": "decimal", "implied_decimals": 2},
                {"name": "day", "start": 15, "length": 8, "type": "date", "format": "%Y%m%d"},
            ]
        },
        "T": {"role": "trailer", "count_field": "n", "fields": [{"name": "n", "start": 2, "length": 5, "type": "int"}]},
    },
}
FIXED_FILE = (
    b"HVizient \xe9  \r\n"
    b"DA-1   000125020240301\r\n"
    b"DB-2   0000099\r\n"  # a short line: the date is missing
    b"DC-3   000010-20240301\r\n"  # trailing minus sign
    b"T00003\r\n"
)


def test_fixed_width_fields_by_position_with_implied_decimals() -> None:
    doc = fixed(**FIXED_LAYOUT).parse(FIXED_FILE)
    assert doc.get("H/gpo") == "Vizient é"
    assert doc.get_all("price") == ["12.50", "0.99", "-0.10"]
    assert doc.get_all("day") == ["2024-03-01", "", "2024-03-01"]
    assert doc.get_all("#1") == ["A-1", "B-2", "C-3"]  # #n is the n-th field of the record
    assert doc.get("T/n") == "3"


def test_fixed_width_errors_name_line_and_field() -> None:
    bad = FIXED_FILE.replace(b"000125020240301", b"0001.5020240301")
    message = parse_error(fixed(**FIXED_LAYOUT), bad)
    assert message == "line 2, record D, field 'price': expected digits only (the layout implies 2 decimals)"
    assert "the trailer counts 4" in parse_error(fixed(**FIXED_LAYOUT), FIXED_FILE.replace(b"T00003", b"T00004"))
    assert "unknown record type" in parse_error(fixed(**FIXED_LAYOUT), FIXED_FILE.replace(b"DB-2", b"XB-2"))


def test_fixed_width_single_record_type_and_skip_rows() -> None:
    datatype = fixed(
        skip_rows=1,
        fields=[{"name": "item", "start": 1, "length": 4}, {"name": "qty", "start": 5, "length": 3, "type": "int"}],
    )
    doc = datatype.parse(b"ITEM QTY\nA1  007\n\nB2  010\n")
    assert doc.get_all("qty") == ["7", "10"] and doc.get("preamble/#1") == "ITEM QTY"
    assert parse_error(datatype, b"head\nA1  x\n") == "line 2, column 'qty': expected a whole number"


def test_fixed_width_sample_reads_like_the_csv_sample() -> None:
    csv_doc = delimited(layout_file="mappings/layouts/gpo-contract-csv.yaml").parse(
        (SAMPLES / "gpo_contract_prices.csv").read_bytes()
    )
    fixed_doc = fixed(layout_file="mappings/layouts/gpo-contract-fixed.yaml").parse(
        (SAMPLES / "gpo_contract_prices.txt").read_bytes()
    )
    for path in (
        "H/gpo_name",
        "H/file_date",
        "contract_number",
        "tier",
        "mfr_part",
        "gtin",
        "uom",
        "price",
        "start_date",
        "end_date",
        "T/record_count",
    ):
        assert csv_doc.get_all(path) == fixed_doc.get_all(path), path
    assert len(fixed_doc.data) == 6


# -- paths and views ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("Item Number", FlatPath(None, 0, "Item Number", 0)),
        ("#12", FlatPath(None, 0, None, 12)),
        ("H/batch_date", FlatPath("H", 0, "batch_date", 0)),
        ("D[2]/#1", FlatPath("D", 2, None, 1)),
        ("rows/Cost/Unit", FlatPath("rows", 0, "Cost/Unit", 0)),
        ("code|[i]|type", FlatPath(None, 0, "code|[i]|type", 0)),
    ],
)
def test_parse_path(path: str, expected: FlatPath) -> None:
    assert parse_path(path) == expected


@pytest.mark.parametrize("path", ["", "  ", "#0", "#x", "H/", "H/  "])
def test_invalid_paths_explain_the_syntax(path: str) -> None:
    with pytest.raises(ValueError, match="flat-file path"):
        parse_path(path)
    with pytest.raises(ValueError, match="record selection"):
        parse_selector("D/x")


def test_check_path_knows_record_types_and_closed_field_lists() -> None:
    datatype = delimited(**HDT)
    for good in ("D", "rows", "H", "D[1]", "H/gpo", "item", "T/n", "#2", "preamble/#1"):
        datatype.check_path(good)
    for bad, words in [
        ("X/item", "unknown record type 'X'"),
        ("H/gp", "unknown field 'gp' of record H in path 'H/gp' (did you mean \"gpo\"?)"),
        ("pirce", "unknown field 'pirce' of the data records in path 'pirce' (did you mean \"price\"?)"),
        ("preamble/name", "preamble rows have no field names; use #n"),
    ]:
        with pytest.raises(ValueError) as caught:
            datatype.check_path(bad)
        assert words in str(caught.value)


def test_check_path_with_a_header_row_accepts_any_column_name() -> None:
    datatype = delimited(columns=[{"name": "Unit Cost", "type": "decimal"}])
    datatype.check_path("Anything the header may hold")
    with pytest.raises(ValueError, match="unknown record type 'H'"):
        datatype.check_path("H/x")


def test_check_path_on_fixed_width_fields() -> None:
    datatype = fixed(fields=[{"name": "item", "start": 1, "length": 4}])
    datatype.check_path("item")
    with pytest.raises(ValueError, match='did you mean "item"'):
        datatype.check_path("itme")


def test_a_view_reads_its_record_first_and_the_file_for_other_records() -> None:
    doc = delimited(**HDT).parse(HDT_FILE)
    second = doc.iterate("D")[1]
    assert second.get("item") == "A-2" and second.get("D/item") == "A-2" and second.get("rows/item") == "A-2"
    assert second.get("H/gpo") == "Vizient" and second.get("T/n") == "2"
    assert second.get("D[1]/item") == "A-1"  # an occurrence always reads the file
    assert second.get_all("item") == ["A-2"] and second.get_all("missing") == []
    assert second.get_all("H/gpo") == ["Vizient"]
    assert [v.get("item") for v in second.iterate("D")] == ["A-1", "A-2"]
    assert second.to_data()["fields"]["item"] == "A-2"


# -- split, header, respond ----------------------------------------------------------------------------


def test_per_row_split_keeps_header_context_and_sets_the_trailer_count() -> None:
    datatype = delimited(**HDT, per_row=True)
    parts = datatype.split(HDT_FILE)
    assert parts == [b"H|Vizient|2024-03-01\r\nD|A-1|10.50\r\nT|1\r\n", b"H|Vizient|2024-03-01\r\nD|A-2|3\r\nT|1\r\n"]
    assert [datatype.parse(p).get("item") for p in parts] == ["A-1", "A-2"]
    assert delimited(**HDT).split(HDT_FILE) == [HDT_FILE]


def test_per_row_split_of_a_csv_with_preamble_and_quoting() -> None:
    datatype = delimited(skip_rows=1, per_row=True)
    parts = datatype.split(b'title\nid,text\n1,"a, b"\n2,c\n')
    assert parts == [b'title\r\nid,text\r\n1,"a, b"\r\n', b"title\r\nid,text\r\n2,c\r\n"]


def test_per_row_split_returns_a_bad_file_whole_for_parse_to_reject() -> None:
    datatype = delimited(**HDT, per_row=True)
    bad = HDT_FILE.replace(b"T|2", b"T|5")
    assert datatype.split(bad) == [bad]
    assert datatype.split(b"\xff\xfe") == [b"\xff\xfe"]
    one = b"H|V|2024-03-01\nD|A|1\nT|1\n"
    assert datatype.split(one) == [one]


def test_per_row_split_of_fixed_width_rewrites_the_count_in_place() -> None:
    datatype = fixed(**FIXED_LAYOUT, per_row=True)
    parts = datatype.split(FIXED_FILE)
    assert len(parts) == 3
    assert parts[1] == b"HVizient \xe9  \r\nDB-2   0000099\r\nT00001\r\n"
    assert [datatype.parse(p).get("item") for p in parts] == ["A-1", "B-2", "C-3"]


def test_header_reads_the_control_id_and_never_raises() -> None:
    datatype = delimited(**HDT, control_id_path="H/gpo")
    assert datatype.header(HDT_FILE).control_id == "Vizient"
    assert datatype.header(b"garbage").control_id == ""
    assert delimited(**HDT).header(HDT_FILE).control_id == ""


def test_no_response_and_no_slow_validation() -> None:
    for datatype in (delimited(), fixed(fields=[{"name": "a", "start": 1, "length": 1}])):
        assert datatype.respond(b"a\n1\n", Outcome("AA")) is None
        assert datatype.validates is False and datatype.validate(b"") == []


# -- configuration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "keys", "words"),
    [
        ("delimited", {"type_column": 1}, "give type_column and records together"),
        ("delimited", {"quote_char": ","}, "quote_char and delimiter must differ"),
        ("delimited", {"columns": [{"name": "a", "start": 1, "length": 2}]}, "fixed width only"),
        ("delimited", {"columns": [{"name": "a"}, {"name": "a"}]}, "column names must be unique"),
        ("delimited", {"columns": [{"name": "a", "format": "%Y"}]}, "format applies to type date only"),
        ("delimited", {"columns": [{"name": "a", "implied_decimals": 2}]}, "implied_decimals applies to type decimal"),
        ("delimited", {**HDT, "header": True}, "header and columns do not apply"),
        ("delimited", {"type_column": 1, "records": {"rows": {"fields": [{"name": "a"}]}}}, "not rows or preamble"),
        ("delimited", {"type_column": 1, "records": {"H": {"role": "header", "fields": [{"name": "a"}]}}}, "role data"),
        ("delimited", {"type_column": 1, "records": {"D": {"count_field": "a", "fields": [{"name": "a"}]}}}, "trailer"),
        ("fixed-width", {}, "needs fields or records"),
        ("fixed-width", {"fields": [{"name": "a"}]}, "need start and length"),
        ("fixed-width", {"fields": [{"name": "a", "start": 1}]}, "give both start and length"),
        ("fixed-width", {"records": {"D": {"fields": [{"name": "a", "start": 1, "length": 1}]}}}, "record_type"),
    ],
)
def test_invalid_layouts_are_explained(kind: str, keys: dict[str, Any], words: str) -> None:
    model = DelimitedConfig if kind == "delimited" else FixedWidthConfig
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        model.model_validate({"type": kind, **keys})


def test_layout_file_is_merged_and_inline_keys_win(tmp_path: Path) -> None:
    (tmp_path / "layout.yaml").write_text("delimiter: '|'\ncolumns:\n  - {name: qty, type: int}\n", encoding="utf-8")
    datatype = Delimited(
        DelimitedConfig.model_validate({"type": "delimited", "layout_file": "layout.yaml"}), base_dir=tmp_path
    )
    assert datatype.parse(b"item|qty\nA|007\n").get("qty") == "7"
    inline = {"type": "delimited", "layout_file": str(tmp_path / "layout.yaml"), "delimiter": ";"}
    assert Delimited(DelimitedConfig.model_validate(inline)).parse(b"item;qty\nA;01\n").get("qty") == "1"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (None, "layout.yaml: error: layout_file: cannot read the layout file (No such file or directory)"),
        ("columns: [unclosed\n", "layout.yaml:2:1: error: invalid YAML"),
        ("- a\n", "layout.yaml:1:1: error: the layout file must be a mapping of layout keys"),
        (
            "trim: true\ntype: fixed-width\n",
            "layout.yaml:2:1: error: type: a layout file may not set type or layout_file",
        ),
        ("delimiter: ';;'\n", "layout.yaml:1:12: error: delimiter: expected text to have at most 1 character"),
        ("skip_rows: 2\ndelimter: ';'\n", 'layout.yaml:2:1: error: delimter: unknown key (did you mean "delimiter"?)'),
    ],
)
def test_layout_file_problems_are_config_errors_naming_the_file(tmp_path: Path, text: str | None, words: str) -> None:
    if text is not None:
        (tmp_path / "layout.yaml").write_text(text, encoding="utf-8")
    config = DelimitedConfig.model_validate({"type": "delimited", "layout_file": "layout.yaml"})
    with pytest.raises(ConfigError) as caught:
        Delimited(config, base_dir=tmp_path)
    assert str(caught.value).startswith("layout.yaml")
    assert words in str(caught.value)


def test_shipped_layouts_load() -> None:
    for name in ("item-master", "gpo-contract-csv"):
        delimited(layout_file=f"mappings/layouts/{name}.yaml")
    fixed(layout_file="mappings/layouts/gpo-contract-fixed.yaml")


def test_registry_builds_both_types_from_their_specs() -> None:
    for kind, extra in (("delimited", {}), ("fixed-width", {"fields": [{"name": "a", "start": 1, "length": 2}]})):
        spec = registry.get("datatype", kind)
        datatype = spec.load_factory()(spec.config.model_validate({"type": kind, **extra}))
        assert datatype.parse(b"ab\ncd\n").get_all("#1")[-1] == "cd"
        assert "RECORD/" in spec.path_syntax


# -- volume (speed lives in bench/formats.py) ---------------------------------------------------------


def test_fifty_thousand_typed_rows_parse_completely() -> None:
    lines = [
        f'SUP-{i:06d},"Item {i}, sterile",{i % 997}.{i % 100:02d},{i % 50},2024-03-{i % 28 + 1:02d}'
        for i in range(50_000)
    ]
    raw = ("id,description,cost,qty,day\r\n" + "\r\n".join(lines) + "\r\n").encode()
    columns = [{"name": "cost", "type": "decimal"}, {"name": "qty", "type": "int"}, {"name": "day", "type": "date"}]
    datatype = delimited(columns=[{"name": "id", "required": True}, *columns])
    doc = datatype.parse(raw)
    assert len(doc.data) == 50_000 and doc.get("#1") == "SUP-000000" and doc.data[-1].cells[4] == "2024-03-20"
    assert doc.data[12_345].cells[1] == "Item 12345, sterile"
