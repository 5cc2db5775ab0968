"""The json data type: dotted paths, arrays, iterate with fallback, errors without content."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from engine.core.errors import ParseError
from engine.datatypes.json import Json, JsonConfig, parse_path
from engine.mapping import compile_mapping

ORDER = b"""\xef\xbb\xbf{"order": {"number": "PO-7", "rush": true, "lines": [
  {"sku": "SUP-1", "qty": 2, "price": 10.50},
  {"sku": "SUP-2", "qty": 1, "price": null, "lots": ["L1", "L2"]}]}}"""


def test_paths_arrays_and_text_values() -> None:
    doc = Json().parse(ORDER)
    assert doc.get("order.number") == "PO-7"
    assert doc.get("order.rush") == "true"
    assert doc.get("order.lines[1].sku") == "SUP-2"
    assert doc.get("order.lines[0].price") == "10.50"  # decimals as written, no float noise
    assert doc.get("order.lines[1].price") is None
    assert doc.get_all("order.lines[*].sku") == ["SUP-1", "SUP-2"]
    assert doc.get_all("order.lines[1].lots[*]") == ["L1", "L2"]
    assert doc.get("order.missing") is None
    assert doc.get("order.lines[5].sku") is None


def test_iterate_reads_the_item_first_then_the_document() -> None:
    lines = Json().parse(ORDER).iterate("order.lines")
    assert [line.get("sku") for line in lines] == ["SUP-1", "SUP-2"]
    assert {line.get("order.number") for line in lines} == {"PO-7"}


def test_header_uses_the_configured_business_id() -> None:
    datatype = Json(JsonConfig(type="json", control_id_path="order.number"))
    assert datatype.header(ORDER).control_id == "PO-7"
    assert datatype.header(b"not json").control_id == ""
    assert datatype.respond(ORDER, None) is None  # type: ignore[arg-type]


def test_errors_give_the_position_never_the_content() -> None:
    with pytest.raises(ParseError) as caught:
        Json().parse(b'{"patient": "SECRETNAME", oops}')
    assert caught.value.position == "line 1, column 27"
    assert "SECRETNAME" not in str(caught.value)
    with pytest.raises(ValueError, match="invalid JSON path"):
        parse_path("order..lines")


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_parse_error(data: bytes) -> None:
    try:
        Json().parse(data)
    except ParseError:
        pass


class Line(BaseModel):
    model_config = ConfigDict(extra="forbid")
    po: str
    sku: str
    quantity: int


def test_a_mapping_reads_json_through_the_same_document_protocol() -> None:
    datatype = Json()
    mapping = compile_mapping(
        "source: json\ntarget: Line\nfor_each: order.lines\nfields:\n"
        "  po: order.number\n  sku: sku\n  quantity: {from: qty, as: int}\n",
        models={"Line": Line},
        check_path=datatype.check_path,
        datatype="json",
    )
    result = mapping.run(datatype.parse(ORDER))
    assert [o.model_dump() for o in result.objects] == [
        {"po": "PO-7", "sku": "SUP-1", "quantity": 2},
        {"po": "PO-7", "sku": "SUP-2", "quantity": 1},
    ]
