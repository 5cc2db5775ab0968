"""Rules over every item of a produced list (for_each) and arithmetic balance rules."""

from __future__ import annotations

import json
import textwrap
from decimal import Decimal

import pytest
from pydantic import BaseModel

from engine.core.errors import ConfigError, MappingError
from engine.datatypes.json import Json
from engine.mapping import Tables, compile_mapping


class Line(BaseModel):
    item: str
    lot: str | None = None
    bill_only: bool = False
    amount: Decimal


class Pack(BaseModel):
    items: list[Line] = []


class Order(BaseModel):
    number: str
    total: Decimal
    lines: list[Line] = []
    packs: list[Pack] = []
    fees: list[Decimal] = []


MAPPING = """
source: json
target: Order
fields:
  number: number
  total: {from: total, as: decimal}
  lines[0].item: lines[0].item
  lines[0].lot: lines[0].lot
  lines[0].bill_only: {from: "lines[0].bill_only", as: bool, default: "false"}
  lines[0].amount: {from: "lines[0].amount", as: decimal}
  lines[1].item: lines[1].item
  lines[1].lot: lines[1].lot
  lines[1].bill_only: {from: "lines[1].bill_only", as: bool, default: "false"}
  lines[1].amount: {from: "lines[1].amount", as: decimal}
  packs[0].items[0].item: {value: GAUZE}
  packs[0].items[0].amount: {value: "1"}
  fees[0]: {from: fee, as: decimal}
rules:
  - name: bill-only-line-has-lot
    for_each: lines
    when: {field: bill_only, equals: "true"}
    check: {field: lot, exists: true}
    message: a bill-only line has no lot
  - name: packed-item-has-lot
    for_each: "packs[*].items[*]"
    check: {field: lot, exists: true}
    message: a packed item has no lot
    severity: warn
  - name: total-balances
    balance: {total: total, sum: ["lines[*].amount"], minus: ["fees[*]"], tolerance: "0.01"}
    message: the total is not the lines less the fees
"""


def run(data: dict[str, object]):  # type: ignore[no-untyped-def]
    mapping = compile_mapping(MAPPING, models={"Order": Order}, check_path=Json().check_path)
    return mapping.run(Json().parse(json.dumps(data).encode()), Tables())


def order(**change: object) -> dict[str, object]:
    base: dict[str, object] = {
        "number": "PO-1",
        "total": "140.00",
        "fee": "10.00",
        "lines": [
            {"item": "STENT", "lot": "L1", "bill_only": "true", "amount": "100.00"},
            {"item": "GAUZE", "amount": "50.00"},
        ],
    }
    return base | change


def test_item_rules_check_every_item_and_name_its_position() -> None:
    result = run(order())
    assert [w.split(":")[0] for w in result.warnings] == ["packs[0].items[0]"]
    assert "packed-item-has-lot" in result.warnings[0] and "packs[0].items[0].lot" in result.warnings[0]
    lines = order()["lines"]
    assert isinstance(lines, list)
    with pytest.raises(MappingError) as failed:
        run(order(lines=[{**lines[1]}, {**lines[0], "lot": None}]))
    assert failed.value.rule == "bill-only-line-has-lot"
    assert failed.value.field == "lines[1].lot" and str(failed.value).startswith("lines[1]: ")


def test_balance_rule_adds_and_subtracts_within_tolerance() -> None:
    assert run(order(total="140.01")).objects  # within 0.01
    with pytest.raises(MappingError) as failed:
        run(order(total="150.00"))
    assert (failed.value.rule, failed.value.field) == ("total-balances", "total")
    assert "150" not in str(failed.value)  # amounts are not quoted


def test_item_rule_list_must_be_produced() -> None:
    bad = MAPPING.replace("for_each: lines", "for_each: lanes")
    with pytest.raises(ConfigError) as failed:
        compile_mapping(bad, models={"Order": Order}, check_path=Json().check_path)
    assert any("lanes" in d.message and d.path.endswith("for_each") for d in failed.value.diagnostics)
    both = MAPPING.replace(
        "    message: the total is not the lines less the fees",
        "    check: {field: total, exists: true}\n    message: the total is not the lines less the fees",
    )
    with pytest.raises(ConfigError) as twice:
        compile_mapping(textwrap.dedent(both), models={"Order": Order})
    assert any("exactly one of check, balance or count" in d.message for d in twice.value.diagnostics)


SHIPMENT = """
source: json
target: Order
fields:
  number: number
  total: {value: "0"}
  lines:
    for_each: items
    where: {field: box, exists: false}
    fields: {item: item, amount: {value: "1"}}
  packs[0].items:
    for_each: items
    where: {all: [{field: box, exists: true}, {field: box, not_in: [LOST]}]}
    fields: {item: item, amount: {value: "1"}}
rules:
  - name: every-item-placed
    count: {source: items, items: ["lines[*]", "packs[*].items[*]"]}
    message: an item is neither a line nor in a pack
"""


def shipment(items: list[dict[str, str]]):  # type: ignore[no-untyped-def]
    mapping = compile_mapping(SHIPMENT, models={"Order": Order}, check_path=Json().check_path)
    return mapping.run(Json().parse(json.dumps({"number": "S-1", "items": items}).encode()), Tables())


def test_where_keeps_some_repeats_and_count_reports_the_others() -> None:
    result = shipment([{"item": "STENT"}, {"item": "GAUZE", "box": "B1"}, {"item": "SCREW"}])
    got = result.objects[0]
    assert isinstance(got, Order)
    assert [line.item for line in got.lines] == ["STENT", "SCREW"]
    assert [line.item for line in got.packs[0].items] == ["GAUZE"]
    with pytest.raises(MappingError) as failed:
        shipment([{"item": "STENT"}, {"item": "GAUZE", "box": "LOST"}])  # kept by neither where
    assert (failed.value.rule, failed.value.field) == ("every-item-placed", "lines[*]")


def test_where_needs_for_each_and_count_needs_produced_lists() -> None:
    with pytest.raises(ConfigError) as failed:
        compile_mapping(SHIPMENT.replace("    for_each: items\n    where", "    where", 1), models={"Order": Order})
    assert any("where keeps some repeats of a for_each" in d.message for d in failed.value.diagnostics)
    with pytest.raises(ConfigError) as failed:
        compile_mapping(SHIPMENT.replace('"lines[*]"', '"lanes[*]"'), models={"Order": Order})
    assert any("lanes" in d.message and "count" in d.path for d in failed.value.diagnostics)
