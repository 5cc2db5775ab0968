"""The passthrough and hl7-to-json transforms, and the raw data type."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from engine.core import registry
from engine.core.contracts import Outcome
from engine.core.errors import MappingError
from engine.core.spec import Kind

HL7 = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||M1^^^H~M2||M\\T\\ller^Jos\xc3\xa9||19800101\rZPI|x&y\r"


def build(kind: Kind, name: str, datatype: Any = None, **config: Any) -> Any:
    spec = registry.get(kind, name)
    cfg = spec.config.model_validate({"type": name, **config})
    factory = spec.load_factory()
    return factory(cfg) if kind == "datatype" else factory(cfg, datatype)


@pytest.fixture
def hl7v2() -> Any:
    return build("datatype", "hl7v2")


@pytest.fixture
def raw_type() -> Any:
    return build("datatype", "raw")


def test_passthrough_returns_raw_with_the_datatype_content_type(hl7v2: Any, raw_type: Any) -> None:
    transform = build("transform", "passthrough", hl7v2)
    assert transform.apply(HL7, hl7v2.parse(HL7)) == (HL7, "x-application/hl7-v2+er7")
    transform = build("transform", "passthrough", raw_type)
    assert transform.apply(b"\x00\x01", raw_type.parse(b"\x00\x01")) == (b"\x00\x01", "application/octet-stream")


def test_hl7_to_json_compact(hl7v2: Any) -> None:
    content, content_type = build("transform", "hl7-to-json", hl7v2).apply(HL7, hl7v2.parse(HL7))
    assert content_type == "application/json"
    assert b"\n" not in content
    assert b": " not in content
    data = json.loads(content.decode("utf-8"))
    pid = data["segments"][1]
    assert pid["id"] == "PID"
    assert pid["fields"][2] == {"repetitions": [["M1", "", "", "H"], "M2"]}
    assert pid["fields"][4] == ["M&ller", "José"]
    assert data["segments"][2]["fields"] == [[["x", "y"]]]
    assert "José".encode() in content  # UTF-8, not \u escapes


def test_hl7_to_json_pretty(hl7v2: Any) -> None:
    content, _ = build("transform", "hl7-to-json", hl7v2, pretty=True).apply(HL7, hl7v2.parse(HL7))
    assert content.startswith(b'{\n  "charset"')
    assert json.loads(content)["segments"][0]["fields"][8] == ["ADT", "A01"]


def test_hl7_to_json_refuses_documents_without_structure(raw_type: Any) -> None:
    transform = build("transform", "hl7-to-json", raw_type)
    with pytest.raises(MappingError, match="structured document") as info:
        transform.apply(b"abc", raw_type.parse(b"abc"))
    assert info.value.rule == "hl7-to-json"


def test_hl7_to_json_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="indent"):
        registry.get("transform", "hl7-to-json").config.model_validate({"type": "hl7-to-json", "indent": 4})


def test_raw_datatype_behaviour(raw_type: Any) -> None:
    payload = b"anything \xff at all"
    assert raw_type.split(payload) == [payload]
    header = raw_type.header(payload)
    assert (header.control_id, header.business_key) == ("", "")
    assert raw_type.validate(payload) == []
    assert raw_type.respond(payload, Outcome("AE", "x")) is None
    assert raw_type.content_type == "application/octet-stream"
    doc = raw_type.parse(payload)
    assert doc.get("$") == "anything \xff at all"
    assert doc.get_all("$") == ["anything \xff at all"]
    assert raw_type.parse("héllo".encode()).get("$") == "héllo"
    assert raw_type.parse(b"").get("$") is None
    assert doc.to_data() is None
    with pytest.raises(ValueError, match=r"only knows \$"):
        doc.get("PID-3")


@pytest.mark.parametrize(
    ("kind", "name"),
    [("datatype", "raw"), ("datatype", "hl7v2"), ("transform", "passthrough"), ("transform", "hl7-to-json")],
)
def test_specs_examples_validate(kind: Kind, name: str) -> None:
    spec = registry.get(kind, name)
    assert spec.summary
    assert spec.examples
    for example in spec.examples:
        config = spec.config.model_validate(yaml.safe_load(example.yaml))
        assert config.model_dump()["type"] == name
