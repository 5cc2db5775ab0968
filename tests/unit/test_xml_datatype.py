"""The xml data type: XPath reads, namespaces, iterate, safe parsing, errors without content."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.errors import ParseError
from engine.datatypes.xml import Xml, XmlConfig

ORDER = b"""<?xml version="1.0" encoding="UTF-8"?>
<po:order xmlns:po="urn:example:po" type="stock">
  <po:number>PO-7</po:number>
  <po:line qty="2"><po:sku>SUP-1</po:sku></po:line>
  <po:line qty="1"><po:sku>SUP-2</po:sku></po:line>
</po:order>"""


def datatype() -> Xml:
    return Xml(XmlConfig(type="xml", namespaces={"po": "urn:example:po"}, control_id_path="/po:order/po:number"))


def test_xpath_reads_text_attributes_and_lists() -> None:
    doc = datatype().parse(ORDER)
    assert doc.get("/po:order/po:number") == "PO-7"
    assert doc.get("/po:order/@type") == "stock"
    assert doc.get_all("/po:order/po:line/po:sku") == ["SUP-1", "SUP-2"]
    assert doc.get("count(/po:order/po:line)") == "2"
    assert doc.get("/po:order/po:missing") is None


def test_iterate_reads_relative_paths_in_the_element_and_absolute_ones_in_the_document() -> None:
    lines = datatype().parse(ORDER).iterate("/po:order/po:line")
    assert [(line.get("po:sku"), line.get("@qty"), line.get("/po:order/po:number")) for line in lines] == [
        ("SUP-1", "2", "PO-7"),
        ("SUP-2", "1", "PO-7"),
    ]
    assert datatype().header(ORDER).control_id == "PO-7"


def test_entities_and_external_references_are_refused() -> None:
    laughs = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><r>&b;</r>'
    with pytest.raises(ParseError, match="entity"):
        datatype().parse(laughs)
    external = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    with pytest.raises(ParseError):
        datatype().parse(external)


def test_errors_give_the_position_not_the_content() -> None:
    with pytest.raises(ParseError) as caught:
        datatype().parse(b"<patient>SECRETNAME</patien>")
    assert caught.value.position.startswith("line 1")
    assert "SECRETNAME" not in str(caught.value)
    with pytest.raises(ValueError, match="invalid XPath"):
        datatype().check_path("/po:order[")


@settings(max_examples=150)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_parse_error(data: bytes) -> None:
    try:
        datatype().parse(data)
    except ParseError:
        pass
