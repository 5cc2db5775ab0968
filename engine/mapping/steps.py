"""Turning validated field rules into closures (readers and value steps), once per mapping.

A field's value goes through, in this order: read (from / value / concat / fields), empty
text counts as missing, trim, regex, upper/lower, map, lookup, as (+format), uom, python,
default, required. A step is skipped once the value is missing, except python, which is
always called.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from engine.core.channel import FilterRule
from engine.core.contracts import Document
from engine.core.errors import MappingError
from engine.mapping.functions import CONVERTERS, fhir_reference_id, temporal, to_decimal, to_int
from engine.mapping.runner import (
    FieldContext,
    FieldPlan,
    Key,
    ObjectPlan,
    Predicate,
    Reader,
    Run,
    as_text,
    get_path,
    items_at,
)
from engine.mapping.syntax import FieldSpec, Lookup, Part, Uom, import_python

Step = Callable[[Any, Document, Run], Any]
_KEY_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class Options:
    """Compile-time settings shared by every field of a mapping."""

    target: str
    date_format: str  # the format of as: date/datetime/time when a field gives none
    shared: frozenset[str] = frozenset()  # paths several fields of the current object read


def parse_key(text: str) -> Key | None:
    """``item.identifiers[0].value`` -> ("item", "identifiers", 0, "value"); None if malformed."""
    key: list[str | int] = []
    for piece in text.split("."):
        match = _KEY_PART.fullmatch(piece)
        if match is None:
            return None
        key.append(match.group(1))
        key.extend(int(i) for i in _INDEX.findall(match.group(2)))
    return tuple(key)


def parse_list_key(text: str) -> tuple[str | int | None, ...] | None:
    """Like ``parse_key`` with ``[*]`` for every item (None in the key); None if malformed.

    >>> parse_list_key("orders[*].packs[0].items[*]")
    ('orders', None, 'packs', 0, 'items', None)
    """
    key: list[str | int | None] = []
    for piece in text.split("."):
        match = _LIST_KEY_PART.fullmatch(piece)
        if match is None:
            return None
        key.append(match.group(1))
        key.extend(None if i == "*" else int(i) for i in _LIST_INDEX.findall(match.group(2)))
    return tuple(key)


_LIST_KEY_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[(?:\d+|\*)\])*)")
_LIST_INDEX = re.compile(r"\[(\d+|\*)\]")


def item_leaf(field: str) -> Callable[[Any], str | None]:
    """Condition leaves of item rules (``for_each``): every field names a field of the item."""
    key = parse_key(field)
    if key is None:
        return lambda _subject: None
    return lambda subject: as_text(get_path(subject[1], key))


def balance_check(total: str, added: list[str], subtracted: list[str], tolerance: Decimal) -> Predicate:
    """A predicate over ``(doc, data)``: the amount at ``total`` equals the sum at ``added`` less
    the sum at ``subtracted`` (``[*]`` reaches every list item) within ``tolerance``.

    >>> check = balance_check("paid", ["claims[*].amount"], ["fees[*]"], Decimal(0))
    >>> check((None, {"paid": "90.00", "claims": [{"amount": "60"}, {"amount": "40"}], "fees": ["10"]}))
    True
    >>> check((None, {"paid": "95.00", "claims": [{"amount": "60"}, {"amount": "40"}], "fees": ["10"]}))
    False
    """
    total_key = parse_list_key(total)
    plus = [parse_list_key(p) for p in added]
    minus = [parse_list_key(p) for p in subtracted]

    def amounts(data: Any, keys: list[tuple[str | int | None, ...] | None]) -> Decimal | None:
        found = Decimal(0)
        for key in keys:
            if key is None:
                return None
            for _where, value in items_at(data, key):
                try:
                    found += Decimal(str(value))
                except (ArithmeticError, ValueError):
                    return None
        return found

    def check(subject: Any) -> bool:
        data = subject[1]
        stated = amounts(data, [total_key])
        expected_plus, expected_minus = amounts(data, plus), amounts(data, minus)
        if stated is None or expected_plus is None or expected_minus is None:
            return False
        if total_key is not None and not items_at(data, total_key):
            return False  # nothing to balance against: the rule fails rather than passes silently
        return abs(stated - (expected_plus - expected_minus)) <= tolerance

    return check


def count_check(source: str, items: list[str]) -> Predicate:
    """A predicate over ``(doc, data)``: the produced list items at ``items`` (``[*]`` reaches
    every item) are exactly as many as the repeats of ``source`` in the document, so a repeat
    that the fields could not place is reported instead of lost.

    >>> class Doc:
    ...     def iterate(self, path): return ["I1", "I2"]
    >>> check = count_check("HL[HL03=I]", ["orders[*].items[*]", "orders[*].packs[*].items[*]"])
    >>> check((Doc(), {"orders": [{"items": [1], "packs": [{"items": [2]}]}]}))
    True
    >>> check((Doc(), {"orders": [{"items": [1]}]}))
    False
    """
    keys = [parse_list_key(p) for p in items]

    def check(subject: Any) -> bool:
        doc, data = subject
        produced = sum(len(items_at(data, key)) for key in keys if key is not None)
        return produced == len(doc.iterate(source))

    return check


# --- conditions ----------------------------------------------------------------------------


def compile_condition(rule: FilterRule, leaf: Callable[[str], Callable[[Any], str | None]]) -> Predicate:
    """A predicate from a filter-shaped rule; ``leaf(field)`` returns the getter of a value."""
    if rule.all is not None:
        parts = [compile_condition(r, leaf) for r in rule.all]
        return lambda subject: all(p(subject) for p in parts)
    if rule.any is not None:
        parts = [compile_condition(r, leaf) for r in rule.any]
        return lambda subject: any(p(subject) for p in parts)
    if rule.not_ is not None:
        inner = compile_condition(rule.not_, leaf)
        return lambda subject: not inner(subject)
    get = leaf(rule.field or "")
    if rule.in_ is not None:
        allowed = frozenset(rule.in_)
        return lambda subject: get(subject) in allowed
    if rule.not_in is not None:
        refused = frozenset(rule.not_in)
        return lambda subject: get(subject) not in refused
    if rule.equals is not None:
        wanted = rule.equals
        return lambda subject: get(subject) == wanted
    if rule.matches is not None:
        regex = re.compile(rule.matches)
        return lambda subject: regex.search(get(subject) or "") is not None
    present = bool(rule.exists)
    return lambda subject: (get(subject) not in (None, "")) is present


def first_field(rule: FilterRule) -> str:
    """The first field a condition reads (to name in a rule failure)."""
    if rule.field:
        return rule.field
    children = [*(rule.all or ()), *(rule.any or ()), *([rule.not_] if rule.not_ else [])]
    return next((name for name in map(first_field, children) if name), "")


def source_leaf(path: str) -> Callable[[Document], str | None]:
    return lambda doc: doc.get(path)


# --- readers -------------------------------------------------------------------------------


def _part_reader(part: Part) -> Callable[[Document], str | None]:
    if part.value is not None:
        constant = part.value
        return lambda _doc: constant
    path = part.from_ or ""
    return lambda doc: doc.get(path)


def _memo_reader(path: str) -> Reader:
    def read(doc: Document, run: Run) -> str | None:
        memo = run.memo
        if path in memo:
            return memo[path]
        value = memo[path] = doc.get(path) or None
        return value

    return read


def _source(spec: FieldSpec, options: Options) -> Reader:
    if spec.from_ is not None:
        path = spec.from_
        if path in options.shared:
            return _memo_reader(path)
        return lambda doc, _run: doc.get(path) or None
    if spec.concat is not None:
        parts = [_part_reader(p) for p in spec.concat]
        sep = spec.sep
        return lambda doc, _run: sep.join(v for v in (p(doc) for p in parts) if v) or None
    if spec.fields is not None:
        return _object_reader(spec, options)
    constant = spec.value
    return lambda _doc, _run: constant


def _object_reader(spec: FieldSpec, options: Options) -> Reader:
    plan = build_object(spec.fields or {}, options)
    if spec.for_each is None:
        return lambda doc, run: plan.build(doc, run) or None
    path = spec.for_each
    if spec.where is not None:
        # A condition on each repeat: its fields are source paths read in the repeat.
        keep = compile_condition(spec.where, lambda field: lambda subject: subject[0].get(field))
        return lambda doc, run: [plan.build(item, run) for item in doc.iterate(path) if keep((item, None))]
    return lambda doc, run: [plan.build(item, run) for item in doc.iterate(path)]


# --- value steps ---------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _regex_step(pattern: str) -> Step:
    regex = re.compile(pattern)

    def extract(value: Any, _doc: Document, _run: Run) -> Any:
        match = regex.search(_text(value))
        if match is None:
            return None
        return match.group(1) if regex.groups else match.group(0)

    return extract


def _reference_step(kind: str) -> Step:
    """A FHIR Reference to its ``kind`` id; urn:uuid and ``#`` references are resolved by the
    document (a Bundle's fullUrl, a contained resource) when it can."""

    def resolve(value: Any, doc: Document, _run: Run) -> Any:
        return fhir_reference_id(value, kind, getattr(doc, "resolve", None))

    return resolve


def _map_step(codes: Mapping[str, Any]) -> Step:
    table = dict(codes)
    return lambda value, _doc, _run: table.get(_text(value))


def _lookup_step(lookup: Lookup) -> Step:
    name, key_column, column, ignore_case = lookup.table, lookup.key_column, lookup.column, lookup.ignore_case

    def find(value: Any, _doc: Document, run: Run) -> Any:
        try:
            return run.tables.lookup(name, _text(value), key_column=key_column, column=column, ignore_case=ignore_case)
        except LookupError as exc:
            raise ValueError(str(exc).strip("'\"")) from None

    return find


def _as_step(spec: FieldSpec, options: Options) -> Step:
    kind = spec.as_ or "str"
    if kind in CONVERTERS:
        convert = CONVERTERS[kind]
    else:
        convert = temporal(kind, spec.format or options.date_format)
    return lambda value, _doc, _run: convert(value)


def _uom_step(uom: Uom, integer: bool) -> Step:
    path, fixed, to = uom.from_, uom.unit, uom.to
    factors = {unit: to_decimal(f) for unit, f in (uom.factors or {}).items()}
    table = uom.factors_table

    def convert(value: Any, doc: Document, run: Run) -> Any:
        unit = doc.get(path) if path is not None else fixed
        number = to_decimal(value)
        if unit and unit != to:
            factor = factors.get(unit)
            if factor is None and table is not None:
                found = run.tables.lookup(table, unit, column="factor") if table in run.tables else None
                factor = to_decimal(found) if found else None
            if factor is None:
                raise ValueError(f"no conversion factor from the source unit to {to}")
            number *= factor
        return to_int(number) if integer else number

    return convert


def _steps(spec: FieldSpec, options: Options) -> list[tuple[str, Step]]:
    steps: list[tuple[str, Step]] = []
    if spec.reference is not None:
        steps.append(("reference", _reference_step(spec.reference)))
    if spec.trim:
        steps.append(("trim", lambda v, _d, _r: _text(v).strip() or None))
    if spec.regex is not None:
        steps.append(("regex", _regex_step(spec.regex)))
    if spec.upper:
        steps.append(("upper", lambda v, _d, _r: _text(v).upper()))
    if spec.lower:
        steps.append(("lower", lambda v, _d, _r: _text(v).lower()))
    if spec.map is not None:
        steps.append(("map", _map_step(spec.map)))
    if spec.lookup is not None:
        steps.append(("lookup", _lookup_step(spec.lookup)))
    if spec.as_ is not None:
        steps.append(("as", _as_step(spec, options)))
    if spec.uom is not None:
        steps.append(("uom", _uom_step(spec.uom, integer=spec.as_ == "int")))
    return steps


# --- one field -----------------------------------------------------------------------------


def _fail(run: Run, name: str, rule: str, text: str) -> MappingError:
    return MappingError(f"{run.label}{name}: {text}", rule=rule, field=name)


def _scalar(name: str, steps: list[tuple[str, Step]]) -> Callable[[Any, Document, Run], Any]:
    def apply(value: Any, doc: Document, run: Run) -> Any:
        for rule, step in steps:
            if value is None or value == "":
                return None
            try:
                value = step(value, doc, run)
            except ValueError as exc:
                raise _fail(run, name, rule, str(exc)) from None
        return None if value == "" else value

    return apply


def _pipeline(name: str, source: Reader, steps: list[tuple[str, Step]]) -> Reader:
    """Source and steps in one closure: one call per field on the hot path."""

    def read(doc: Document, run: Run) -> Any:
        value = source(doc, run)
        for rule, step in steps:
            if value is None or value == "":
                return None
            try:
                value = step(value, doc, run)
            except ValueError as exc:
                raise _fail(run, name, rule, str(exc)) from None
        return None if value == "" else value

    return read


def build_reader(name: str, spec: FieldSpec, options: Options) -> Reader:
    """The reader of one field: its source, steps, python function, default and required."""
    steps = _steps(spec, options)
    if spec.all and spec.from_ is not None:
        source = _all_reader(spec.from_, _scalar(name, steps))
    else:
        source = _source(spec, options)
        if steps:
            source = _pipeline(name, source, steps)
    hook = import_python(spec.python) if spec.python else None
    default, required = spec.default, spec.required
    if hook is None and default is None and not required:
        return source
    target = options.target

    def read(doc: Document, run: Run) -> Any:
        value = source(doc, run)
        if value == "":
            value = None
        if hook is not None:
            value = hook(doc, value, FieldContext(name, target, run.tables, run.label))
        if value is None:
            value = default
        if value is None and required:
            raise _fail(run, name, "required", "a required value is missing")
        return value

    return read


def _all_reader(path: str, apply: Callable[[Any, Document, Run], Any]) -> Reader:
    def read(doc: Document, run: Run) -> Any:
        values = [apply(v, doc, run) for v in doc.get_all(path)]
        return [v for v in values if v is not None] or None

    return read


# --- objects -------------------------------------------------------------------------------


def build_object(
    fields: Mapping[str, FieldSpec], options: Options, earlier: frozenset[str] = frozenset()
) -> ObjectPlan:
    """The plan of one object (top level, nested ``fields`` or one ``for_each`` item).

    ``earlier`` names fields of the same object computed before these (by another plan
    filling the same dict), which a field's ``when`` may test like its own earlier fields.
    """
    froms = [spec.from_ for spec in fields.values() if spec.from_ is not None and not spec.all]
    shared = frozenset(path for path in froms if froms.count(path) > 1)
    options = replace(options, shared=shared)
    plans = []
    seen = set(earlier)
    for name, spec in fields.items():
        key = parse_key(name)
        assert key is not None, name  # the compiler reported malformed keys already
        when = compile_condition(spec.when, produced_leaf(frozenset(seen))) if spec.when is not None else None
        flat = name if len(key) == 1 else None
        plans.append(FieldPlan(name, key, when, build_reader(name, spec, options), flat))
        seen.add(str(key[0]))
    return ObjectPlan(tuple(plans), memo=bool(shared))


def produced_leaf(names: frozenset[str]) -> Callable[[str], Callable[[Any], str | None]]:
    """Condition leaves over ``(doc, data)``: a field whose first part is in ``names`` reads the
    produced data (as JSON would show it), any other field is a source path."""

    def leaf(field: str) -> Callable[[Any], str | None]:
        key = parse_key(field)
        if key is not None and key[0] in names:
            return lambda subject: as_text(get_path(subject[1], key))
        return lambda subject: subject[0].get(field)

    return leaf
