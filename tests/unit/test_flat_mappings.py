"""The flat-file mappings: item master CSV -> Item, GPO contract price file -> ContractPrice.

Golden canonical JSON lives in ``tests/golden/mapped/flat/<mapping>/<sample file>.json``:
the objects produced (sorted keys, two-space indent) and the warnings of ``warn`` rules.
``pytest --update-golden`` rewrites them; review the diff.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.canonical import ContractPrice, Item, ItemIdType, Quantity
from engine.core import registry
from engine.core.errors import ConfigError, MappingError
from engine.core.loader import load_channel
from engine.core.message import InboundMessage, Status
from engine.datatypes.flat import DelimitedConfig, FixedWidthConfig
from engine.datatypes.flat.delimited import Delimited
from engine.datatypes.flat.fixed import FixedWidth
from engine.mapping import CompiledMapping, Tables, compile_mapping
from engine.mapping.transform import MappingTransform, MappingTransformConfig
from engine.runtime.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "flat"
GOLDEN = ROOT / "tests" / "golden" / "mapped" / "flat"
ITEMS = "item-master-csv-to-item"
PRICES = "gpo-contract-to-contract-price"
CASES = [  # mapping, data type, layout, sample
    (ITEMS, "delimited", "item-master", "item_master_export.csv"),
    (PRICES, "delimited", "gpo-contract-csv", "gpo_contract_prices.csv"),
    (PRICES, "fixed-width", "gpo-contract-fixed", "gpo_contract_prices.txt"),
]


def datatype(kind: str, layout: str, **settings: Any) -> Delimited | FixedWidth:
    data = {"type": kind, "layout_file": f"mappings/layouts/{layout}.yaml", **settings}
    if kind == "delimited":
        return Delimited(DelimitedConfig.model_validate(data), base_dir=ROOT)
    return FixedWidth(FixedWidthConfig.model_validate(data), base_dir=ROOT)


def compiled(mapping: str, parser: Delimited | FixedWidth) -> CompiledMapping:
    return compile_mapping(
        ROOT / "mappings" / f"{mapping}.yaml", models=registry.models(), check_path=parser.check_path
    )


def run(mapping: str, kind: str, layout: str, raw: bytes) -> tuple[list[Any], list[str]]:
    parser = datatype(kind, layout)
    result = compiled(mapping, parser).run(parser.parse(raw), Tables.from_dir(ROOT / "mappings" / "tables"))
    return result.objects, result.warnings


@pytest.mark.parametrize(("mapping", "kind", "layout", "sample"), CASES, ids=[f"{c[0]}:{c[3]}" for c in CASES])
def test_mapping_output_matches_golden(
    mapping: str, kind: str, layout: str, sample: str, request: pytest.FixtureRequest
) -> None:
    objects, warnings = run(mapping, kind, layout, (SAMPLES / sample).read_bytes())
    produced = {"objects": [o.model_dump(mode="json", exclude_none=True) for o in objects], "warnings": warnings}
    actual = json.dumps(produced, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    golden = GOLDEN / mapping / f"{sample}.json"
    if request.config.getoption("--update-golden"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}; run pytest --update-golden and review it"
    assert actual == golden.read_text(encoding="utf-8")


def test_every_flat_sample_has_a_golden_pair() -> None:
    mapped = {sample for _, _, _, sample in CASES}
    assert {p.name for p in SAMPLES.iterdir() if p.is_file()} == mapped
    assert {p.name for p in GOLDEN.glob("*/*.json")} == {f"{s}.json" for s in mapped}


def test_items_carry_typed_identifiers_units_and_flags() -> None:
    objects, warnings = run(ITEMS, "delimited", "item-master", (SAMPLES / "item_master_export.csv").read_bytes())
    items: dict[str, Item] = {}
    for obj in objects:
        assert isinstance(obj, Item)
        number = next(i.value for i in obj.identifiers if i.type == ItemIdType.BUYER_ITEM)
        items[number] = obj
    assert len(items) == 9
    cement = items["SUP-100877"]
    gtins = [(i.packaging_uom, i.quantity_per_pack) for i in cement.identifiers if i.type == ItemIdType.GTIN]
    assert gtins == [("EA", Decimal(1)), ("BX", Decimal(10)), ("CA", Decimal(40))]
    assert cement.purchase_uom == "CA" and cement.issue_uom == "EA"

    assert cement.convert(Quantity(value=Decimal(2), uom="CA"), "BX").value == 8
    gloves = items["SUP-500118"]  # no GTIN for the pair: the box and case GTINs close up
    assert [i.packaging_uom for i in gloves.identifiers if i.type == ItemIdType.GTIN] == ["BX", "CA"]
    assert gloves.manufacturer is not None and gloves.manufacturer.ids == []
    assert items["SUP-700015"].active is False and items["SUP-700015"].base_uom == "RL"
    assert items["SUP-100234"].implant and items["SUP-100234"].serial_controlled
    assert items["SUP-100234"].manufacturer is not None and items["SUP-100234"].manufacturer.ids[0].value
    assert warnings == [
        "rows repeat 3: high-cost-needs-charge-code: high-cost item has no charge code, "
        "so its use would go unbilled (field charge_code)"
    ]


def test_the_item_master_agrees_with_the_reference_table_the_hl7_mappings_use() -> None:
    objects, _ = run(ITEMS, "delimited", "item-master", (SAMPLES / "item_master_export.csv").read_bytes())
    by_number = {next(i.value for i in o.identifiers if i.type == ItemIdType.BUYER_ITEM): o for o in objects}
    text = (ROOT / "mappings" / "tables" / "item_master.csv").read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows
    for row in rows:
        item = by_number[row["item"]]
        assert item.description == row["description"]
        assert item.issue_uom == row["issue_uom"]
        assert item.unit_cost == Decimal(row["unit_cost"])
        assert item.high_cost is (row["high_cost"] == "Y") and item.chargeable is (row["chargeable"] == "Y")
        assert (item.charge_code or "") == row["charge_code"] and (item.hcpcs or "") == row["hcpcs"]


def test_the_fixed_width_file_maps_exactly_like_the_csv() -> None:
    from_csv, _ = run(PRICES, "delimited", "gpo-contract-csv", (SAMPLES / "gpo_contract_prices.csv").read_bytes())
    from_fixed, _ = run(PRICES, "fixed-width", "gpo-contract-fixed", (SAMPLES / "gpo_contract_prices.txt").read_bytes())
    assert from_csv == from_fixed and len(from_csv) == 6
    price = from_csv[3]
    assert isinstance(price, ContractPrice)
    assert (price.contract_id, price.tier, price.uom, price.price) == (
        "GPO-ORTHO-2024-17",
        "C01",
        "BX",
        Decimal("1855.00"),
    )
    assert price.gpo is not None and price.gpo.name == "Vizient"
    assert from_csv[4].effective_to is None  # an empty end date: open-ended
    assert from_csv[5].item.id_of(ItemIdType.GTIN) is None


def test_per_row_messages_map_to_the_same_prices_as_the_whole_file() -> None:
    raw = (SAMPLES / "gpo_contract_prices.csv").read_bytes()
    parser = datatype("delimited", "gpo-contract-csv", per_row=True)
    mapping = compiled(PRICES, parser)
    parts = parser.split(raw)
    assert len(parts) == 6
    one_by_one = [obj for part in parts for obj in mapping.run(parser.parse(part)).objects]
    assert one_by_one == mapping.run(parser.parse(raw)).objects


def test_a_business_problem_fails_the_message_with_the_model_rule() -> None:
    raw = (SAMPLES / "gpo_contract_prices.csv").read_bytes().replace(b"20240315,20250314", b"20240315,20230314")
    with pytest.raises(MappingError) as caught:
        run(PRICES, "delimited", "gpo-contract-csv", raw)
    assert caught.value.rule == "model"
    assert str(caught.value).startswith("D repeat 6: ContractPrice")
    assert "effective_to is before effective_from" in str(caught.value)


def test_a_misspelt_field_is_a_load_error_with_a_hint(tmp_path: Path) -> None:
    text = (ROOT / "mappings" / f"{PRICES}.yaml").read_text(encoding="utf-8").replace("from: price,", "from: pirce,")
    (tmp_path / "bad.yaml").write_text(text, encoding="utf-8")
    parser = datatype("delimited", "gpo-contract-csv")
    with pytest.raises(ConfigError) as caught:
        compile_mapping(tmp_path / "bad.yaml", models=registry.models(), check_path=parser.check_path)
    assert "unknown field 'pirce' of the data records" in str(caught.value)
    assert 'did you mean "price"?' in str(caught.value)


def test_the_mapping_transform_sends_the_items_as_json() -> None:
    parser = datatype("delimited", "item-master")
    config = MappingTransformConfig.model_validate({"type": "mapping", "file": f"mappings/{ITEMS}.yaml"})
    transform = MappingTransform(config, parser, base_dir=ROOT)
    raw = (SAMPLES / "item_master_export.csv").read_bytes()
    body, content_type = transform.apply(raw, parser.parse(raw))
    assert content_type == "application/json" and body is not None
    data = json.loads(body)
    assert [d["identifiers"][0]["value"] for d in data][:2] == ["SUP-100234", "SUP-100877"]


CHANNEL = """\
name: gpo-prices
source: {{type: mllp, listen: "127.0.0.1:0"}}
pipeline:
  datatype: {{type: fixed-width, layout_file: "{layout}", per_row: {per_row}}}
  transform: {{type: mapping, file: mappings/{mapping}.yaml}}
destinations:
  - {{name: erp, type: http, url: "http://127.0.0.1:9/prices"}}
"""


@pytest.mark.parametrize("per_row", [False, True])
def test_a_channel_pipeline_maps_the_fixed_width_file(per_row: bool) -> None:
    layout = "mappings/layouts/gpo-contract-fixed.yaml"  # relative to the project root (the pipeline's base_dir)
    text = CHANNEL.format(layout=layout, mapping=PRICES, per_row=str(per_row).lower())
    pipeline = Pipeline(load_channel("gpo-prices.yaml", env={}, text=text), ROOT)
    raw = (SAMPLES / "gpo_contract_prices.txt").read_bytes()
    results = [pipeline.run(InboundMessage("gpo-prices", part)) for part in pipeline.datatype.split(raw)]
    assert len(results) == (6 if per_row else 1)
    prices = [p for r in results for p in json.loads(r.routes[0].content or b"")]
    assert all(r.status == Status.TRANSFORMED for r in results)
    assert [p["price"] for p in prices] == ["4250.00", "4110.00", "7420.00", "1855.00", "3980.00", "1120.00"]
    broken = pipeline.run(InboundMessage("gpo-prices", raw.replace(b"T0000006", b"T0000007")))
    assert broken.status == Status.ERROR
    assert (
        broken.error
        == "parse: line 8, record T, field 'record_count': the trailer counts 7 data records, the file has 6"
    )
