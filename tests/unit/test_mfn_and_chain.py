"""item-to-mfn renders canonical Items as MFN^M16; chain runs a mapping and then a renderer."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest

from engine.core import registry
from engine.core.errors import MappingError
from engine.datatypes.hl7v2 import Hl7v2
from engine.datatypes.json import Json
from engine.transforms.chain import Chain, ChainConfig
from engine.transforms.mfn import ItemToMfn, ItemToMfnConfig

HIP_STEM = {
    "schema_version": "1.0",
    "identifiers": [
        {"type": "buyer_item", "value": "SUP-100234"},
        {"type": "manufacturer_part", "value": "FS-12|A"},
        {"type": "gtin", "value": "00812345678906", "packaging_uom": "EA"},
    ],
    "description": "Hip implant, femoral stem & neck, size 12",
    "manufacturer": {"name": "Ortho Devices Inc", "ids": [{"type": "gln", "value": "0812345000009"}]},
    "base_uom": "EA",
    "pack_levels": [{"uom": "BX", "base_quantity": "5"}],
    "purchase_uom": "BX",
    "issue_uom": "EA",
    "billing_uom": "EA",
    "implant": True,
    "lot_controlled": True,
    "chargeable": True,
    "high_cost": True,
    "charge_code": "C-278-1001",
    "hcpcs": "C1776",
    "unit_cost": "4250.00",
}


def render(items: list[dict[str, object]], **config: object) -> str:
    transform = ItemToMfn(ItemToMfnConfig.model_validate({"type": "item-to-mfn", **config}), Json())
    moment = dt.datetime(2026, 11, 29, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    return transform.render(items, now=moment, control_id="MFN0001")


def test_mfn_m16_segments_fields_and_escaping() -> None:
    retired = {**HIP_STEM, "identifiers": [{"type": "buyer_item", "value": "SUP-9"}], "active": False}
    text = render([HIP_STEM, retired], receiving_application="EHR", receiving_facility="GH", assigning_authority="ERP")
    doc = Hl7v2().parse(text.encode())
    assert doc.get("MSH-9.1") == "MFN" and doc.get("MSH-9.2") == "M16" and doc.get("MSH-12") == "2.6"
    assert (doc.get("MSH-5"), doc.get("MSH-10"), doc.get("MSH-7")) == ("EHR", "MFN0001", "20261129103000-0500")
    assert doc.get("MFI-1.1") == "INV" and doc.get("MFI-3") == "UPD" and doc.get("MFI-6") == "AL"
    assert doc.get_all("MFE-1") == ["MUP", "MDC"]
    assert doc.get_all("ITM-1.1") == ["SUP-100234", "SUP-9"]
    assert doc.get_all("ITM-3") == ["A", "I"]
    # escaped on the wire, unescaped by the parser: the ampersand and the bar survive
    assert doc.get("ITM-2") == "Hip implant, femoral stem & neck, size 12"
    assert doc.get("ITM-9") == "FS-12|A"
    assert (doc.get("ITM-11"), doc.get("ITM-12"), doc.get("ITM-13.1.1"), doc.get("ITM-27.1")) == (
        "Y",
        "C-278-1001",
        "4250.00",
        "C1776",
    )
    assert doc.get("ITM-8") == "Ortho Devices Inc" and doc.get("ITM-7") == "0812345000009"
    stem_pkgs = [line for line in text.split("\r") if line.startswith("PKG")][:2]
    assert stem_pkgs == ["PKG|1|EA|N|1", "PKG|2|BX|Y|5"]


def test_mfn_rejects_items_without_identifiers() -> None:
    with pytest.raises(MappingError) as failed:
        render([{"description": "x", "identifiers": [{"type": "other", "value": "1"}]}])
    assert failed.value.field == "identifiers"


def test_chain_maps_json_to_items_then_renders_mfn(tmp_path: Path) -> None:
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "erp-item.yaml").write_text(
        textwrap.dedent(
            """
            source: json
            target: canonical.Item
            for_each: products
            fields:
              identifiers[0].type: {value: buyer_item}
              identifiers[0].value: {from: code, required: true}
              description: {from: name, required: true}
              base_uom: {value: EA}
              purchase_uom: {value: EA}
              issue_uom: {value: EA}
              billing_uom: {value: EA}
              chargeable: {from: billable, as: bool}
            """
        ),
        encoding="utf-8",
    )
    config = ChainConfig.model_validate(
        {
            "type": "chain",
            "steps": [
                {"type": "mapping", "file": "mappings/erp-item.yaml"},
                {"type": "item-to-mfn", "receiving_application": "EHR"},
            ],
        }
    )
    json_type = Json()
    chain = Chain(config, json_type, base_dir=tmp_path, shared={})
    raw = json.dumps({"products": [{"code": "SUP-1", "name": "Gauze 4x4", "billable": "false"}]}).encode()
    content, content_type = chain.apply(raw, json_type.parse(raw))
    assert content is not None and content_type == "x-application/hl7-v2+er7"
    doc = Hl7v2().parse(content)
    assert (doc.get("ITM-1"), doc.get("ITM-2"), doc.get("ITM-11")) == ("SUP-1", "Gauze 4x4", "N")
    # nothing mapped: the chain stops with nothing to send
    empty = json.dumps({"products": []}).encode()
    assert chain.apply(empty, json_type.parse(empty))[0] is None


def test_chain_config_errors_name_the_step() -> None:
    with pytest.raises(ValueError, match=r"step 2 \(item-to-mfn\): event"):
        ChainConfig.model_validate({"type": "chain", "steps": ["passthrough", {"type": "item-to-mfn", "event": "X"}]})
    with pytest.raises(ValueError, match='unknown transform "mapings"'):
        ChainConfig.model_validate({"type": "chain", "steps": ["passthrough", {"type": "mapings"}]})
    assert registry.get("transform", "chain").config is ChainConfig
