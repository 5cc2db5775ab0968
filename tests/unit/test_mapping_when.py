"""The mapping-level ``when`` (which messages or repeats produce an object), fields' ``when`` on
earlier produced fields, and the shipped or-implant-usage mappings over their samples."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from engine.core import registry
from engine.core.errors import ConfigError, MappingError
from engine.datatypes.hl7v2 import Hl7v2
from engine.datatypes.hl7v2.paths import parse_path
from engine.mapping import CompiledMapping, RuleErrors, Tables, compile_mapping

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "hl7v2"


class FakeDoc:
    """A dict-backed Document: path -> value; repeats are lists of dicts merged over the values."""

    def __init__(self, values: dict[str, str], repeats: dict[str, list[dict[str, str]]] | None = None) -> None:
        self.values = values
        self.repeats = repeats or {}

    def get(self, path: str) -> str | None:
        return self.values.get(path) or None

    def get_all(self, path: str) -> list[str]:
        value = self.values.get(path)
        return [] if value is None else [value]

    def iterate(self, path: str) -> list[FakeDoc]:
        return [FakeDoc({**self.values, **item}) for item in self.repeats.get(path, [])]

    def to_data(self) -> Any:
        return self.values


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


def mapping(text: str, **kwargs: Any) -> CompiledMapping:
    return compile_mapping(textwrap.dedent(text), models={"Loose": Loose}, **kwargs)


def items() -> Tables:
    tables = Tables()
    tables.add(
        "items",
        [
            {"item": "IMPLANT", "chargeable": "Y", "charge_code": "C-1", "hcpcs": "C1776"},
            {"item": "CEMENT", "chargeable": "Y", "charge_code": "C-2", "hcpcs": ""},
            {"item": "GLOVES", "chargeable": "N", "charge_code": "", "hcpcs": ""},
        ],
    )
    return tables


def lines(*rows: dict[str, str]) -> FakeDoc:
    return FakeDoc({"ACCOUNT": "A1"}, {"LINE": list(rows)})


PER_CHARGEABLE_LINE = """\
    source: fake
    target: Loose
    for_each: LINE
    when: {field: _chargeable, equals: "true"}
    fields:
      _chargeable: {from: ITEM, lookup: {table: items, column: chargeable}, as: bool}
      item: ITEM
      account: ACCOUNT
      quantity: {from: QTY, as: int, required: true}
      charge_code: {from: ITEM, lookup: {table: items, column: charge_code}}
    rules:
      - {name: needs-charge-code, check: {field: charge_code, exists: true}, message: no charge code}
"""


def test_when_on_a_looked_up_scratch_field_keeps_only_matching_repeats() -> None:
    doc = lines({"ITEM": "IMPLANT", "QTY": "1"}, {"ITEM": "GLOVES", "QTY": "4"}, {"ITEM": "CEMENT", "QTY": "2"})
    result = mapping(PER_CHARGEABLE_LINE).run(doc, items())
    assert [o.model_dump() for o in result.objects] == [
        {"item": "IMPLANT", "account": "A1", "quantity": 1, "charge_code": "C-1"},
        {"item": "CEMENT", "account": "A1", "quantity": 2, "charge_code": "C-2"},
    ]
    assert result.skipped == 1


def test_skipped_repeats_are_not_read_further_nor_checked_by_rules() -> None:
    # The glove line has no quantity and no charge code: both would fail if it were mapped.
    doc = lines({"ITEM": "GLOVES"}, {"ITEM": "IMPLANT", "QTY": "1"}, {"ITEM": "UNKNOWN"})
    result = mapping(PER_CHARGEABLE_LINE).run(doc, items())
    assert [o.model_dump()["item"] for o in result.objects] == ["IMPLANT"]
    assert result.skipped == 2


def test_wanted_repeats_still_fail_with_their_original_repeat_number() -> None:
    doc = lines({"ITEM": "GLOVES"}, {"ITEM": "CEMENT"})
    with pytest.raises(MappingError, match=r"^LINE repeat 2: quantity: a required value is missing$"):
        mapping(PER_CHARGEABLE_LINE).run(doc, items())
    tables = items()
    tables.add("items", [{"item": "CEMENT", "chargeable": "Y", "charge_code": "", "hcpcs": ""}])
    with pytest.raises(RuleErrors) as caught:
        mapping(PER_CHARGEABLE_LINE).run(lines({"ITEM": "CEMENT", "QTY": "1"}), tables)
    assert caught.value.rule == "needs-charge-code" and str(caught.value) == "LINE repeat 1: no charge code"


def test_no_match_at_all_gives_no_objects_and_a_message_level_when_works_too() -> None:
    assert mapping(PER_CHARGEABLE_LINE).run(lines({"ITEM": "GLOVES", "QTY": "1"}), items()).objects == []
    whole = mapping(
        """\
        source: fake
        target: Loose
        when: {any: [{field: TYPE, equals: CG}, {field: kind, equals: credit}]}
        fields:
          kind: {from: TYPE, map: {CD: credit}}
          account: ACCOUNT
        """
    )
    charge, credit, other = (FakeDoc({"TYPE": t, "ACCOUNT": "A1"}) for t in ("CG", "CD", "AJ"))
    assert [o.model_dump() for o in whole.run(charge).objects] == [{"account": "A1"}]
    assert [o.model_dump() for o in whole.run(credit).objects] == [{"kind": "credit", "account": "A1"}]
    skipped = whole.run(other)
    assert skipped.objects == [] and skipped.skipped == 1


def test_field_when_can_test_an_earlier_produced_field() -> None:
    text = """\
        source: fake
        target: Loose
        for_each: LINE
        fields:
          procedure.code: {from: ITEM, lookup: {table: items, column: hcpcs}}
          procedure.system: {value: hcpcs, when: {field: procedure.code, exists: true}}
          billed: {value: true, when: {all: [{field: procedure, exists: true}, {field: ITEM, matches: "^IMP"}]}}
        """
    result = mapping(text).run(lines({"ITEM": "IMPLANT"}, {"ITEM": "CEMENT"}), items())
    assert [o.model_dump() for o in result.objects] == [
        {"procedure": {"code": "C1776", "system": "hcpcs"}, "billed": True},
        {},
    ]


def test_conditions_name_fields_or_valid_source_paths_at_compile_time() -> None:
    text = """\
        source: hl7v2
        target: Loose
        for_each: FT1
        when: {field: _chargable, equals: "true"}
        fields:
          _chargeable: {from: FT1-7.1, as: bool}
          system: {value: hcpcs, when: {field: code, exists: true}}
          code: FT1-7.1
        """
    with pytest.raises(ConfigError) as caught:
        mapping(text, name="m.yaml", datatype="hl7v2", check_path=parse_path)
    problems = [str(d) for d in caught.value.diagnostics]
    assert len(problems) == 2, problems
    assert problems[0].startswith("m.yaml:4:") and "when.field" in problems[0]
    # code comes later in the file, so the system field's when reads it as a source path
    assert problems[1].startswith("m.yaml:7:") and "fields.system.when.field" in problems[1]


# --- the shipped flagship mappings ----------------------------------------------------------


def shipped(name: str) -> CompiledMapping:
    check = parse_path
    return compile_mapping(ROOT / "mappings" / name, models=registry.models(), datatype="hl7v2", check_path=check)


def run(name: str, sample: bytes) -> Any:
    return shipped(name).run(Hl7v2().parse(sample), Tables.from_dir(ROOT / "mappings" / "tables"))


def test_charge_events_only_for_chargeable_lines_of_the_mixed_sample() -> None:
    raw = (SAMPLES / "dft_p03_or_implant_mixed.hl7").read_bytes()
    charges = [o.model_dump(mode="json", exclude_none=True) for o in run("dft-to-charge-event.yaml", raw).objects]
    assert [(c["transaction_id"], c["charge_code"], c.get("revenue_code")) for c in charges] == [
        ("DFT0000000311-1", "C-278-1001", "0278"),
        ("DFT0000000311-2", "C-272-0044", "0272"),
    ]
    first = charges[0]
    assert first["encounter"] == {
        "encounter_id": "ENC900011",
        "account_number": "ACCT700011",
        "assigning_authority": "SYNTH_HOSP",
    }
    assert first["service_date"] == "2024-04-18" and first["procedure"]["code"] == "C1776"
    assert first["cost_centre"] == "CC-4410" and first["performing_clinician_id"] == "DOC310"
    assert "procedure" not in charges[1]
    assert usage_count("dft_p03_or_implant_mixed.hl7") == 4


def usage_count(sample: str) -> int:
    return len(run("dft-to-supply-usage.yaml", (SAMPLES / sample).read_bytes()).objects)


def test_no_chargeable_line_means_no_charge_but_all_usage() -> None:
    raw = (SAMPLES / "dft_p03_or_supplies_not_chargeable.hl7").read_bytes()
    result = run("dft-to-charge-event.yaml", raw)
    assert result.objects == [] and result.skipped == 3
    assert usage_count("dft_p03_or_supplies_not_chargeable.hl7") == 3


def test_unbillable_high_cost_items_fail_both_rules_by_name() -> None:
    raw = (SAMPLES / "dft_p03_or_implant_no_charge_code.hl7").read_bytes()
    with pytest.raises(RuleErrors) as usage:
        run("dft-to-supply-usage.yaml", raw)
    assert usage.value.rule == "high-cost-needs-charge-code" and usage.value.field == "charge_code"
    with pytest.raises(RuleErrors) as charge:
        run("dft-to-charge-event.yaml", raw)
    assert charge.value.rule == "chargeable-needs-charge-code"
    screw = raw.replace(b"SUP-200311", b"SUP-600742")  # high cost with a charge code, no contract
    with pytest.raises(RuleErrors) as contract:
        run("dft-to-supply-usage.yaml", screw)
    assert contract.value.rule == "high-cost-needs-contract" and "ACCT" not in str(contract.value)
    assert len(run("dft-to-charge-event.yaml", screw).objects) == 2  # billing itself has what it needs
