"""The structure of a mapping file as pydantic models: validation and JSON Schema for free.

Checks that need nothing but the file itself live here (one source per field, regular
expressions compile, formats suit their type, python references import); checks that need
context (target models, declared tables, the data type's path syntax) live in the compiler.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from engine.core.channel import FilterRule

As = Literal["bool", "date", "datetime", "decimal", "int", "str", "time"]
NAMED_FORMATS: dict[str, frozenset[str]] = {
    "hl7": frozenset({"date", "datetime", "time"}),
    "iso": frozenset({"date", "datetime", "time"}),
    "x12date": frozenset({"date", "datetime"}),
    "x12time": frozenset({"time"}),
    "x12datetime": frozenset({"date", "datetime"}),
}
_TEMPORAL = frozenset({"date", "datetime", "time"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def import_python(reference: str) -> Callable[..., Any]:
    """Import ``package.module:function``; raise ``ValueError`` saying why it cannot be used."""
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError("expected package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and module_name.startswith(exc.name or "\0"):
            raise ValueError(f"no module named {module_name}") from None
        raise ValueError(f"importing module {module_name} failed: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"module {module_name} has no attribute {attr}")
    if not callable(target):
        raise ValueError(f"{reference} is not callable")
    return target  # type: ignore[no-any-return]


def _check_python(value: str | None) -> str | None:
    if value is not None:
        import_python(value)
    return value


def _check_regex(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        compiled = re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    if compiled.groups > 1:
        raise ValueError("a regex extracts group 1: use (?:...) for the other groups")
    return value


class Part(Strict):
    """One piece of a ``concat``: a source path (``from``) or a constant (``value``)."""

    from_: str | None = Field(None, alias="from", description="Source path to read.")
    value: str | None = Field(None, description="Constant text.")

    @model_validator(mode="after")
    def _one(self) -> Part:
        if (self.from_ is None) == (self.value is None):
            raise ValueError("give exactly one of from, value")
        return self


def _path_short_form(value: Any) -> Any:
    return {"from": value} if isinstance(value, str) else value


def _table_short_form(value: Any) -> Any:
    return {"table": value} if isinstance(value, str) else value


PartRule = Annotated[Part, BeforeValidator(_path_short_form, json_schema_input_type=str | Part)]


class Lookup(Strict):
    """Find the row of a reference table whose key equals the value."""

    table: str = Field(description="Table name (mappings/tables/NAME.csv).")
    key_column: str | None = Field(None, description="Column to match; default: the table's first column.")
    column: str | None = Field(None, description="Column to return; omitted: the whole row (for object fields).")
    ignore_case: bool = Field(False, description="Match keys case-insensitively.")


LookupRule = Annotated[Lookup, BeforeValidator(_table_short_form, json_schema_input_type=str | Lookup)]


class Uom(Strict):
    """Convert a quantity to one unit: value x factor of the source unit."""

    from_: str | None = Field(None, alias="from", description="Source path of the quantity's unit.")
    unit: str | None = Field(None, description="The quantity's unit when it is fixed (instead of from).")
    to: str = Field(description="Unit of the result; a value already in it is left alone.")
    factors: dict[str, float | int | str] | None = Field(
        None, description="How many `to` units one source unit holds, e.g. {BX: 10, CS: 100}."
    )
    factors_table: str | None = Field(None, description="Table keyed by unit with a `factor` column.")

    @model_validator(mode="after")
    def _complete(self) -> Uom:
        if (self.from_ is None) == (self.unit is None):
            raise ValueError("give exactly one of from (a path to the unit) or unit (a fixed unit)")
        if self.factors is None and self.factors_table is None:
            raise ValueError("give factors, factors_table or both")
        return self


class FieldSpec(Strict):
    """How one target field is produced (long form; a plain string is short for ``from``)."""

    from_: str | None = Field(None, alias="from", description="Source path; the first value is used.")
    value: Any = Field(None, description="A constant instead of a source value.")
    concat: list[PartRule] | None = Field(None, description="Join these paths and constants; missing ones skipped.")
    sep: str = Field("", description="Separator for concat.")
    all: bool = Field(False, description="Read every value at the path (get_all) and produce a list.")
    fields: dict[str, FieldRule] | None = Field(None, description="A nested object, or one per repeat with for_each.")
    for_each: str | None = Field(None, description="Repeat path (e.g. PO1): produce a list, one item per repeat.")
    where: FilterRule | None = Field(
        None, description="With for_each: keep only the repeats where this holds (source paths read in the repeat)."
    )
    when: FilterRule | None = Field(
        None, description="Map the field only when this holds (on the source, or on an earlier field of the object)."
    )
    reference: str | None = Field(
        None,
        pattern=r"^[A-Z][A-Za-z]{1,63}$",
        description="FHIR: the value is a Reference (or its reference text) to this resource type; "
        "give that resource's id, whatever the reference form (a form without one is an error).",
    )
    trim: bool = Field(False, description="Strip surrounding whitespace.")
    regex: str | None = Field(None, description="Keep group 1 (or the whole match) of the first match.")
    upper: bool = Field(False, description="Convert to upper case.")
    lower: bool = Field(False, description="Convert to lower case.")
    map: dict[str, Any] | None = Field(None, description="Replace codes: {source code: target value}.")
    lookup: LookupRule | None = Field(None, description="Replace the value by a reference-table column or row.")
    as_: As | None = Field(None, alias="as", description="Convert to this type.")
    format: str | None = Field(
        None, description="Date/time format: hl7, iso, x12date, x12time, x12datetime or %-codes."
    )
    uom: Uom | None = Field(None, description="Unit-of-measure conversion of a numeric value.")
    python: str | None = Field(None, description="package.module:function(doc, value, context) -> value.")
    default: Any = Field(None, description="Used when the value is missing (taken as is).")
    required: bool = Field(False, description="A missing value is a mapping error naming the field.")

    _python = field_validator("python")(_check_python)
    _regex = field_validator("regex")(_check_regex)

    @field_validator("format")
    @classmethod
    def _format_fits(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("as_")
        if value is None:
            return None
        if kind not in _TEMPORAL:
            raise ValueError("format applies to as: date, datetime or time")
        allowed = NAMED_FORMATS.get(value)
        if allowed is not None and kind not in allowed:
            raise ValueError(f"format {value} reads {' or '.join(sorted(allowed))}, not {kind}")
        if allowed is None and "%" not in value:
            raise ValueError(f"expected one of {', '.join(NAMED_FORMATS)} or a %-code pattern such as %Y%m%d")
        return value

    @field_validator("uom")
    @classmethod
    def _uom_numeric(cls, value: Uom | None, info: ValidationInfo) -> Uom | None:
        if value is not None and info.data.get("as_") not in (None, "decimal", "int"):
            raise ValueError("uom converts numbers: use as: decimal or as: int")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        sources = [k for k, v in (("from", self.from_), ("concat", self.concat), ("fields", self.fields)) if v]
        if self.value is not None:
            sources.append("value")
        if len(sources) > 1:
            raise ValueError(f"give only one of from, value, concat, fields (found {', '.join(sources)})")
        if self.for_each is not None and self.fields is None:
            raise ValueError("for_each needs fields: the target fields of each item")
        if self.where is not None and self.for_each is None:
            raise ValueError("where keeps some repeats of a for_each; give for_each (or use when)")
        if self.fields is not None:
            self._check_object()
        if self.all and self.from_ is None:
            raise ValueError("all: true reads every value of a from path; give from")
        if self.upper and self.lower:
            raise ValueError("give upper or lower, not both")
        return self

    def _check_object(self) -> None:
        used = [k for k in _VALUE_KEYS if getattr(self, k) != FieldSpec.model_fields[k].default]
        if used:
            names = ", ".join(sorted(FieldSpec.model_fields[k].alias or k for k in used))
            raise ValueError(
                f"an object field (fields) takes only for_each, where, when, python, default, required; found {names}"
            )


_VALUE_KEYS = ("sep", "all", "reference", "trim", "regex", "upper", "lower", "map", "lookup", "as_", "format", "uom")
FieldRule = Annotated[FieldSpec, BeforeValidator(_path_short_form, json_schema_input_type=str | FieldSpec)]


class Balance(Strict):
    """An arithmetic check over produced amounts: ``total`` = sum of ``sum`` - sum of ``minus``."""

    total: str = Field(min_length=1, description="The produced amount that must balance, e.g. payment.amount.")
    sum: list[str] = Field(min_length=1, description="Produced amounts added up; [*] for every list item.")
    minus: list[str] = Field(default_factory=list, description="Produced amounts subtracted; [*] for every list item.")
    tolerance: Decimal = Field(Decimal(0), ge=0, description="Largest difference still counted as balanced.")


class Count(Strict):
    """A completeness check: the produced ``items`` are as many as the ``source`` repeats."""

    source: str = Field(min_length=1, description="A repeat path of the source, e.g. HL[HL03=I].")
    items: list[str] = Field(min_length=1, description="Produced lists counted together; [*] for every list item.")


class Rule(Strict):
    """A validation rule over the produced object (or the source), or over each item of a list."""

    name: str = Field(min_length=1, description="Rule name, reported with failures (e.g. high-cost-needs-charge).")
    for_each: str | None = Field(
        None,
        description="Check every item of a produced list (lines, or orders[*].packs[*].items[*]); "
        "fields in when and check then name the item's fields.",
    )
    when: FilterRule | None = Field(None, description="Apply the rule only when this condition holds.")
    check: FilterRule | None = Field(
        None, description="The condition that must hold; field names a target field or source path."
    )
    balance: Balance | None = Field(None, description="Instead of check: amounts that must add up.")
    count: Count | None = Field(None, description="Instead of check: every source repeat produced one list item.")
    message: str = Field(min_length=1, description="What is wrong, for the exception queue (no PHI).")
    severity: Literal["error", "warn"] = Field("error", description="error: the message fails; warn: annotate it.")

    @model_validator(mode="after")
    def _one_test(self) -> Rule:
        if [self.check, self.balance, self.count].count(None) != 2:
            raise ValueError("give a rule exactly one of check, balance or count")
        if (self.balance is not None or self.count is not None) and self.for_each is not None:
            raise ValueError("balance and count rules read the whole object; for_each applies to check rules")
        return self


class MappingFile(Strict):
    """A mapping: one source data type into one target model."""

    source: str = Field(description="Data type of the input, e.g. hl7v2.")
    target: str = Field(description="Target model name, e.g. SupplyUsage (a canonical. prefix is allowed).")
    description: str = Field("", description="What the mapping is for.")
    for_each: str | None = Field(None, description="Repeat path (e.g. FT1): one target object per repeat.")
    when: FilterRule | None = Field(
        None,
        description="Produce an object (per repeat with for_each) only when this holds; fields named in it "
        "are target or scratch fields, computed first, otherwise source paths.",
    )
    tables: list[str] | None = Field(None, description="Reference tables the lookups use; checked when given.")
    fields: dict[str, FieldRule] = Field(description="Target field -> source path or long-form rule.")
    rules: list[Rule] = Field(default_factory=list, description="Validation rules run on each produced object.")
    python: str | None = Field(None, description="package.module:function(doc, data) -> data, run after fields.")

    _python = field_validator("python")(_check_python)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"rule names must be unique: {rule.name} appears twice")
            seen.add(rule.name)
        return rules


FieldSpec.model_rebuild()
MappingFile.model_rebuild()
