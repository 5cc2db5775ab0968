"""Mappings over real HL7 v2 documents: for_each per FT1, rules, python hooks, model errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from engine.core.errors import ConfigError, MappingError
from engine.datatypes.hl7v2 import Hl7v2
from engine.datatypes.hl7v2.paths import parse_path
from engine.mapping import CompiledMapping, RuleErrors, Tables, compile_mapping

ROOT = Path(__file__).resolve().parents[2]
DFT = (ROOT / "samples" / "hl7v2" / "dft_p03_supply_two_ft1.hl7").read_bytes()


class ItemRef(BaseModel):
    number: str
    description: str | None = None


class SupplyUsage(BaseModel):
    encounter: str
    item: ItemRef
    quantity: Decimal = Field(gt=0)
    unit_price: Decimal | None = None
    used_at: datetime
    department: str | None = None
    cost_centre: str | None = None
    charge_code: str | None = None


class UsageLine(BaseModel):
    item: str
    quantity: int


class UsageBatch(BaseModel):
    encounter: str
    message_id: str
    lines: list[UsageLine]


MODELS: dict[str, type[BaseModel]] = {"SupplyUsage": SupplyUsage, "UsageBatch": UsageBatch}

PER_LINE = """\
source: hl7v2
target: canonical.SupplyUsage
for_each: FT1
tables: [item_master, location]
fields:
  encounter: PV1-19.1
  item.number: FT1-7.1
  item.description: {from: FT1-7.1, lookup: {table: item_master, column: description}}
  quantity: {from: FT1-10, as: decimal, required: true}
  unit_price: {from: FT1-11.1, as: decimal}
  used_at: {from: FT1-4, as: datetime, format: hl7}
  department: FT1-13.1
  cost_centre: {from: FT1-13.1, lookup: {table: location, column: cost_centre}}
  charge_code: {from: FT1-7.1, lookup: {table: item_master, column: charge_code}}
  _high_cost: {from: FT1-7.1, lookup: {table: item_master, column: high_cost}}
rules:
  - name: high-cost-needs-charge-code
    when: {field: _high_cost, equals: "Y"}
    check: {field: charge_code, exists: true}
    message: high-cost item has no charge code
  - name: known-department
    check: {field: FT1-13.1, in: [ORSURG, CATH]}
    message: department is not in the location table
    severity: warn
"""


def tables(*, stem_charge_code: str = "C-1001") -> Tables:
    t = Tables()
    t.add(
        "item_master",
        [
            {"item": "SUP-100234", "description": "Femoral stem", "charge_code": stem_charge_code, "high_cost": "Y"},
            {"item": "SUP-100877", "description": "Bone cement", "charge_code": "", "high_cost": "N"},
        ],
    )
    t.add("location", [{"department": "ORSURG", "cost_centre": "CC-4410"}])
    return t


def compiled(text: str = PER_LINE) -> CompiledMapping:
    return compile_mapping(text, models=MODELS, datatype="hl7v2", check_path=parse_path)


def test_top_level_for_each_gives_one_object_per_ft1() -> None:
    doc = Hl7v2().parse(DFT)
    result = compiled().run(doc, tables())
    assert result.warnings == []
    first, second = result.objects
    assert isinstance(first, SupplyUsage) and isinstance(second, SupplyUsage)
    assert first.model_dump() == {
        "encounter": "ENC900003",
        "item": {"number": "SUP-100234", "description": "Femoral stem"},
        "quantity": Decimal("1"),
        "unit_price": Decimal("4250.00"),
        "used_at": datetime(2024, 3, 13, 14, 15),
        "department": "ORSURG",
        "cost_centre": "CC-4410",
        "charge_code": "C-1001",
    }
    assert second.item.number == "SUP-100877" and second.quantity == Decimal(2)
    assert second.charge_code is None and second.used_at == datetime(2024, 3, 13, 14, 17)


def test_compiled_mapping_runs_many_times_and_reports_its_names() -> None:
    mapping = compiled()
    assert (mapping.source, mapping.target, mapping.model) == ("hl7v2", "SupplyUsage", SupplyUsage)
    runs = [mapping.run(Hl7v2().parse(DFT), tables()).objects for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


def test_error_rule_raises_with_rule_field_and_repeat() -> None:
    with pytest.raises(MappingError) as caught:
        compiled().run(Hl7v2().parse(DFT), tables(stem_charge_code=""))
    error = caught.value
    assert isinstance(error, RuleErrors)
    assert (error.rule, error.field, error.severity) == ("high-cost-needs-charge-code", "charge_code", "error")
    assert str(error) == "FT1 repeat 1: high-cost item has no charge code"
    assert len(error.failures) == 1


def test_warn_rule_annotates_and_the_objects_still_come_out() -> None:
    raw = DFT.replace(b"ORSURG^Orthopaedic surgery|||||||DOC300^TESTSURGEON^HOTEL^^^DR\rPR1", b"WARD9|||||||X\rPR1")
    result = compiled().run(Hl7v2().parse(raw), tables())
    assert len(result.objects) == 2
    assert result.warnings == [
        "FT1 repeat 2: known-department: department is not in the location table (field FT1-13.1)"
    ]


def test_model_validation_failure_is_a_mapping_error_naming_the_field() -> None:
    raw = DFT.replace(b"CG|SUP-100877^Bone cement, 40 g^SYNTH_ITEM|||2|", b"CG|SUP-100877^Bone cement|||0|")
    with pytest.raises(MappingError) as caught:
        compiled().run(Hl7v2().parse(raw), tables())
    assert (caught.value.field, caught.value.rule, caught.value.severity) == ("quantity", "model", "error")
    assert str(caught.value).startswith("FT1 repeat 2: SupplyUsage.quantity: ")


def test_required_field_missing_names_it_without_values() -> None:
    raw = DFT.replace(b"CG|SUP-100877^Bone cement, 40 g^SYNTH_ITEM|||2|", b"CG|SUP-100877^Bone cement|||||")
    with pytest.raises(MappingError) as caught:
        compiled().run(Hl7v2().parse(raw), tables())
    assert (caught.value.field, caught.value.rule) == ("quantity", "required")
    assert "SUP-100877" not in str(caught.value) and "ENC900003" not in str(caught.value)


BATCH = """\
source: hl7v2
target: UsageBatch
fields:
  encounter: PV1-19.1
  message_id: MSH-10
  lines:
    for_each: FT1
    fields:
      item: FT1-7.1
      quantity: {from: FT1-10, as: int}
rules:
  - name: has-lines
    check: {field: "lines[0].item", exists: true}
    message: no supply lines
"""


def test_field_level_for_each_over_ft1_makes_the_line_list() -> None:
    result = compiled(BATCH).run(Hl7v2().parse(DFT))
    (batch,) = result.objects
    assert batch.model_dump() == {
        "encounter": "ENC900003",
        "message_id": "DFT0000000201",
        "lines": [{"item": "SUP-100234", "quantity": 1}, {"item": "SUP-100877", "quantity": 2}],
    }


def test_inline_message_with_no_ft1_fails_the_rule_on_target_list() -> None:
    raw = b"MSH|^~\\&|A|B|C|D|20240101||DFT^P03|77|P|2.5\rPV1|1|I|||||||||||||||||ENC1\r"
    with pytest.raises(MappingError) as caught:
        compiled(BATCH).run(Hl7v2().parse(raw))
    assert (caught.value.rule, caught.value.field) == ("has-lines", "lines[0].item")


def test_inline_message_with_offsets_and_repetitions() -> None:
    text = """\
source: hl7v2
target: SupplyUsage
fields:
  encounter: {concat: ["PID-3[2].1", PV1-19.1], sep: "/"}
  item.number: {from: "PID-3[*].1", all: true, python: "tests_hook:join"}
  quantity: {value: "1", as: decimal}
  used_at: {from: EVN-2, as: datetime}
"""
    raw = (
        b"MSH|^~\\&|A|B|C|D|20240101||DFT^P03|77|P|2.5\r"
        b"EVN|P03|20240313141530.25-0500\rPID|1||M1^^^H~M2^^^H\rPV1|1|I|||||||||||||||||ENC1\r"
    )
    text = text.replace("tests_hook:join", f"{__name__}:join_values")
    (usage,) = compiled(text).run(Hl7v2().parse(raw)).objects
    assert usage.encounter == "M2/ENC1" and usage.item.number == "M1+M2"
    assert usage.used_at == datetime(2024, 3, 13, 14, 15, 30, 250000, tzinfo=timezone(timedelta(hours=-5)))


def join_values(doc: Any, value: Any, context: Any) -> Any:
    return "+".join(value or [])


def enrich(doc: Any, data: dict[str, Any]) -> dict[str, Any]:
    data["department"] = (doc.get("PV1-3.1") or "") + "-" + str(data.get("quantity"))
    return data


def not_a_dict(doc: Any, data: dict[str, Any]) -> Any:
    return None


HOOKED = """\
source: hl7v2
target: SupplyUsage
for_each: FT1
python: HOOK
fields:
  encounter: PV1-19.1
  item.number: FT1-7.1
  quantity: {from: FT1-10, as: decimal}
  used_at: FT1-4
rules:
  - name: hook-ran-first
    check: {field: department, equals: OR-2}
    message: department was not set by the hook
"""


def test_mapping_level_python_runs_per_object_before_rules() -> None:
    mapping = compiled(HOOKED.replace("HOOK", f"{__name__}:enrich"))
    with pytest.raises(MappingError) as caught:
        mapping.run(Hl7v2().parse(DFT))  # the first FT1 has quantity 1: the hook writes OR-1
    assert caught.value.rule == "hook-ran-first" and str(caught.value).startswith("FT1 repeat 1:")
    only_second = DFT.replace(b"FT1|1|", b"ZZZ|1|")
    (usage,) = mapping.run(Hl7v2().parse(only_second)).objects
    assert usage.department == "OR-2"


def test_mapping_level_python_must_return_a_dict() -> None:
    text = BATCH.replace("fields:", f"python: {__name__}:not_a_dict\nfields:", 1)
    with pytest.raises(MappingError, match="must return a dict"):
        compiled(text).run(Hl7v2().parse(DFT))


def test_datatype_mismatch_and_bad_path_are_compile_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        compile_mapping(PER_LINE.replace("FT1-10,", "FT1-10.x,"), models=MODELS, datatype="x12", check_path=parse_path)
    text = str(caught.value)
    assert '<mapping>:1:9: error: source: expected "x12"' in text
    assert "fields.quantity.from: invalid HL7 v2 path" in text
