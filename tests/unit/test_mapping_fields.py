"""Every field feature of the mapping language, on a data-type-neutral fake document."""

from __future__ import annotations

import textwrap
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from engine.core.errors import ConfigError, MappingError
from engine.mapping import FieldContext, Tables, compile_mapping


class FakeDoc:
    """A dict-backed Document: path -> value (or list of values); repeats are dicts too."""

    def __init__(self, values: dict[str, Any], repeats: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.values = values
        self.repeats = repeats or {}

    def get(self, path: str) -> str | None:
        value = self.values.get(path)
        if isinstance(value, list):
            return next((v for v in value if v), None)
        return value or None

    def get_all(self, path: str) -> list[str]:
        value = self.values.get(path)
        return value if isinstance(value, list) else ([] if value is None else [value])

    def iterate(self, path: str) -> list[FakeDoc]:
        return [FakeDoc({**self.values, **item}, self.repeats) for item in self.repeats.get(path, [])]

    def to_data(self) -> Any:
        return self.values


class Loose(BaseModel):
    """Accepts any field, so each test looks at exactly what the mapping produced."""

    model_config = ConfigDict(extra="allow")


MODELS: dict[str, type[BaseModel]] = {"Loose": Loose}


def produce(fields: str, doc: FakeDoc, *, tables: Tables | None = None, source: str = "fake") -> dict[str, Any]:
    text = f"source: {source}\ntarget: Loose\nfields:\n" + textwrap.indent(textwrap.dedent(fields), "  ")
    result = compile_mapping(text, models=MODELS).run(doc, tables)
    assert len(result.objects) == 1
    return result.objects[0].model_dump()


def test_short_form_reads_the_path_and_skips_missing_values() -> None:
    out = produce("a: A\nb: B\nc: C\n", FakeDoc({"A": "1", "C": ""}))
    assert out == {"a": "1"}


def test_constant_and_concat_with_separator_skipping_missing_parts() -> None:
    doc = FakeDoc({"FAMILY": "Doe", "GIVEN": "Jane"})
    out = produce(
        """
        kind: {value: usage}
        count: {value: 3}
        name: {concat: [FAMILY, MIDDLE, GIVEN], sep: ", "}
        key: {concat: [{value: "H-"}, FAMILY], upper: true}
        none: {concat: [MIDDLE, OTHER]}
        """,
        doc,
    )
    assert out == {"kind": "usage", "count": 3, "name": "Doe, Jane", "key": "H-DOE"}


def test_string_steps_trim_regex_upper_lower_map() -> None:
    doc = FakeDoc({"T": "  sup-100234 ", "CODE": "cg", "NUM": "LOT: AB12/x"})
    out = produce(
        """
        trimmed: {from: T, trim: true}
        item: {from: T, regex: "(\\\\d+)"}
        whole: {from: NUM, regex: "[A-Z]{2}\\\\d+"}
        nomatch: {from: NUM, regex: "ZZ(\\\\d)"}
        upper: {from: T, trim: true, upper: true}
        lower: {from: NUM, lower: true}
        kind: {from: CODE, upper: true, map: {CG: charge, CD: credit}}
        unmapped: {from: NUM, map: {X: y}}
        """,
        doc,
    )
    assert out == {
        "trimmed": "sup-100234",
        "item": "100234",
        "whole": "AB12",
        "upper": "SUP-100234",
        "lower": "lot: ab12/x",
        "kind": "charge",
    }


def test_as_conversions() -> None:
    doc = FakeDoc({"Q": "2", "P": "185.50", "F": "Y", "D": "20240313", "DT": "202403131415-0500", "ISO": "2024-03-13"})
    out = produce(
        """
        q: {from: Q, as: int}
        p: {from: P, as: decimal}
        f: {from: F, as: bool}
        d: {from: D, as: date, format: hl7}
        dt: {from: DT, as: datetime, format: hl7}
        iso: {from: ISO, as: date}
        s: {from: Q, as: str}
        """,
        doc,
    )
    assert out["q"] == 2 and out["p"] == Decimal("185.50") and out["f"] is True
    assert out["d"] == date(2024, 3, 13)
    assert out["dt"].isoformat() == "2024-03-13T14:15:00-05:00"
    assert out["iso"] == date(2024, 3, 13) and out["s"] == "2"


def test_hl7v2_source_makes_hl7_the_default_date_format() -> None:
    out = produce("d: {from: D, as: datetime}\n", FakeDoc({"D": "202403131415"}), source="hl7v2")
    assert out == {"d": datetime(2024, 3, 13, 14, 15)}


def test_x12_formats_and_concat_of_date_and_time() -> None:
    doc = FakeDoc({"DTM02": "20240313", "DTM03": "1415"})
    out = produce(
        """
        day: {from: DTM02, as: date, format: x12date}
        at: {from: DTM03, as: time, format: x12time}
        stamp: {concat: [DTM02, DTM03], as: datetime, format: x12datetime}
        """,
        doc,
    )
    assert out["day"] == date(2024, 3, 13)
    assert out["at"].isoformat() == "14:15:00"
    assert out["stamp"] == datetime(2024, 3, 13, 14, 15)


def test_conversion_failure_names_the_field_and_never_the_value() -> None:
    with pytest.raises(MappingError) as caught:
        produce("quantity: {from: Q, as: decimal}\n", FakeDoc({"Q": "MRN-4711"}))
    assert caught.value.field == "quantity" and caught.value.rule == "as" and caught.value.severity == "error"
    assert "quantity" in str(caught.value) and "MRN-4711" not in str(caught.value)


def test_default_and_required() -> None:
    out = produce("unit: {from: U, default: EA}\nq: {from: Q, required: true}\n", FakeDoc({"Q": "1"}))
    assert out == {"unit": "EA", "q": "1"}
    with pytest.raises(MappingError) as caught:
        produce("q: {from: Q, required: true}\n", FakeDoc({}))
    assert caught.value.field == "q" and caught.value.rule == "required"


def test_when_conditions_same_shape_as_filters() -> None:
    doc = FakeDoc({"TYPE": "CG", "Q": "2", "CODE": "X1"})
    out = produce(
        """
        charge: {from: Q, when: {field: TYPE, in: [CG]}}
        credit: {from: Q, when: {field: TYPE, equals: CD}}
        coded: {from: CODE, when: {all: [{field: CODE, matches: "^X"}, {not: {field: NOPE, exists: true}}]}}
        either: {from: Q, when: {any: [{field: TYPE, not_in: [CG]}, {field: CODE, exists: true}]}}
        defaulted: {from: Q, default: "0", when: {field: TYPE, equals: CD}}
        """,
        doc,
    )
    assert out == {"charge": "2", "coded": "X1", "either": "2"}


def test_lookup_hit_miss_default_row_and_ignore_case() -> None:
    tables = Tables()
    tables.add("items", [{"item": "SUP-1", "description": "Stem", "cost": "4250.00", "alt": "A1"}])
    doc = FakeDoc({"ITEM": "SUP-1", "LOWER": "sup-1", "ALT": "A1", "UNKNOWN": "SUP-9"})
    out = produce(
        """
        description: {from: ITEM, lookup: {table: items, column: description}}
        cost: {from: ITEM, lookup: {table: items, column: cost}, as: decimal}
        by_alt: {from: ALT, lookup: {table: items, key_column: alt, column: item}}
        folded: {from: LOWER, lookup: {table: items, column: item, ignore_case: true}}
        exact: {from: LOWER, lookup: {table: items, column: item}}
        missing: {from: UNKNOWN, lookup: {table: items, column: description}, default: unknown item}
        row: {from: ITEM, lookup: items}
        """,
        doc,
        tables=tables,
    )
    assert out["description"] == "Stem" and out["cost"] == Decimal("4250.00")
    assert out["by_alt"] == "SUP-1" and out["folded"] == "SUP-1" and "exact" not in out
    assert out["missing"] == "unknown item"
    assert out["row"] == {"item": "SUP-1", "description": "Stem", "cost": "4250.00", "alt": "A1"}


def test_lookup_in_a_table_that_is_not_loaded_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="table items is not loaded") as caught:
        produce("d: {from: ITEM, lookup: {table: items, column: d}}\n", FakeDoc({"ITEM": "1"}))
    assert caught.value.rule == "lookup"
    tables = Tables()
    tables.add("items", [{"item": "1", "d": "x"}])
    with pytest.raises(MappingError, match="no column nope"):
        produce("d: {from: ITEM, lookup: {table: items, column: nope}}\n", FakeDoc({"ITEM": "1"}), tables=tables)


def test_uom_conversion_with_factors_and_a_factors_table() -> None:
    tables = Tables()
    tables.add("uom_factors", [{"unit": "CS", "factor": "144"}])
    doc = FakeDoc({"Q": "2", "U": "BX", "U2": "CS", "U3": "EA", "U4": "PL"})
    out = produce(
        """
        boxes: {from: Q, as: int, uom: {from: U, to: EA, factors: {BX: 12}}}
        cases: {from: Q, as: decimal, uom: {from: U2, to: EA, factors: {BX: 12}, factors_table: uom_factors}}
        each: {from: Q, as: int, uom: {from: U3, to: EA, factors: {BX: 12}}}
        no_unit: {from: Q, uom: {from: NONE, to: EA, factors: {BX: 12}}}
        fixed: {from: Q, uom: {unit: BX, to: EA, factors: {BX: "0.5"}}}
        """,
        doc,
        tables=tables,
    )
    assert out == {"boxes": 24, "cases": Decimal(288), "each": 2, "no_unit": Decimal(2), "fixed": Decimal("1.0")}
    with pytest.raises(MappingError, match="no conversion factor") as caught:
        produce("q: {from: Q, uom: {from: U4, to: EA, factors: {BX: 12}}}\n", doc)
    assert caught.value.rule == "uom" and caught.value.field == "q" and "PL" not in str(caught.value)


def test_all_reads_every_value_into_a_list() -> None:
    doc = FakeDoc({"IDS": ["a1", "", "b2"], "NONE": []})
    out = produce("ids: {from: IDS, all: true, upper: true}\nnone: {from: NONE, all: true}\n", doc)
    assert out == {"ids": ["A1", "B2"]}


def test_nested_objects_by_dotted_keys_indexes_and_fields() -> None:
    doc = FakeDoc({"ITEM": "SUP-1", "GTIN": "0123", "MFR": "M-9", "DEPT": "OR"})
    out = produce(
        """
        item.number: ITEM
        item.identifiers[0].value: GTIN
        item.identifiers[0].type: {value: gtin}
        item.identifiers[1]: {fields: {value: MFR, type: {value: manufacturer}}}
        location:
          fields:
            department: DEPT
            cost_centre: {from: DEPT, map: {OR: CC-100}}
        empty: {fields: {x: NOPE}}
        """,
        doc,
    )
    assert out == {
        "item": {
            "number": "SUP-1",
            "identifiers": [{"value": "0123", "type": "gtin"}, {"value": "M-9", "type": "manufacturer"}],
        },
        "location": {"department": "OR", "cost_centre": "CC-100"},
    }


def test_field_level_for_each_makes_a_list() -> None:
    doc = FakeDoc({"PO": "4500012"}, {"PO1": [{"PO102": "2", "PO107": "A"}, {"PO102": "5", "PO107": "B"}]})
    out = produce(
        """
        order: PO
        lines:
          for_each: PO1
          fields:
            quantity: {from: PO102, as: int}
            item: PO107
            order: PO
        none: {for_each: NOTHING, fields: {a: A}}
        """,
        doc,
    )
    assert out == {
        "order": "4500012",
        "lines": [{"quantity": 2, "item": "A", "order": "4500012"}, {"quantity": 5, "item": "B", "order": "4500012"}],
        "none": [],
    }


def hook_initials(doc: Any, value: Any, context: FieldContext) -> Any:
    assert context.field == "initials" and context.target == "Loose"
    return "".join(part[0] for part in (value or doc.get("FALLBACK") or "").split()) or None


def test_field_python_escape_hatch_gets_doc_value_and_context() -> None:
    ref = f"{__name__}:hook_initials"
    out = produce(f"initials: {{from: NAME, python: '{ref}'}}\n", FakeDoc({"NAME": "Jane Q Doe"}))
    assert out == {"initials": "JQD"}
    out = produce(f"initials: {{from: NAME, python: '{ref}'}}\n", FakeDoc({"FALLBACK": "Ann Lee"}))
    assert out == {"initials": "AL"}


def test_bad_field_options_are_compile_errors() -> None:
    bad = {
        "q: {from: Q, value: 1}": "only one of from, value",
        "q: {for_each: X}": "for_each needs fields",
        "q: {from: Q, format: hl7}": "format applies to as",
        "q: {from: Q, as: time, format: x12date}": "format x12date reads",
        "q: {from: Q, as: date, uom: {unit: BX, to: EA, factors: {BX: 2}}}": "uom converts numbers",
        "q: {from: Q, uom: {to: EA, factors: {BX: 2}}}": "exactly one of from",
        "q: {from: Q, regex: '(a)(b)'}": "group 1",
        "q: {fields: {a: A}, as: int}": "object field",
        "q: {value: 1, all: true}": "all: true",
        "q: {concat: [{from: A, value: b}]}": "exactly one of from, value",
    }
    for line, expected in bad.items():
        with pytest.raises(ConfigError, match=expected):
            produce(line + "\n", FakeDoc({}))
