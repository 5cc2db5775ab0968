"""Running a compiled mapping: build target data, apply rules, validate into models.

Everything here was prepared by the compiler, so a run does no parsing and no look-ups by
name beyond the reference tables themselves.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.core.contracts import Document
from engine.core.errors import MappingError
from engine.mapping.tables import Tables

Key = tuple[str | int, ...]
ListKey = tuple[str | int | None, ...]  # None: every item of a list ([*])


@dataclass(slots=True)
class Run:
    """State of one run: the tables, warnings so far and the current object's label."""

    tables: Tables
    target: str
    warnings: list[str] = field(default_factory=list)
    label: str = ""  # "FT1 repeat 2: " under a top-level for_each, so errors say which line
    memo: dict[str, str | None] = field(default_factory=dict)  # paths read twice in the current object


@dataclass(frozen=True, slots=True)
class FieldContext:
    """What a field-level ``python`` function receives besides the document and value."""

    field: str
    target: str
    tables: Tables
    label: str


Reader = Callable[[Document, Run], Any]
Predicate = Callable[[Any], bool]


class RuleErrors(MappingError):
    """One or more ``error`` rules failed; the first one names ``rule`` and ``field``.

    ``failures`` holds every failed rule of the object, for dry runs that list them all.
    """

    def __init__(self, failures: Sequence[MappingError]) -> None:
        first = failures[0]
        super().__init__(str(first), rule=first.rule, field=first.field, severity="error")
        self.failures = list(failures)


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """One target field: an optional condition over ``(doc, data so far)``, a reader and where to put the value."""

    name: str
    key: Key
    when: Predicate | None
    read: Reader
    flat: str | None = None  # the key when it is one plain name (the common, fast case)


@dataclass(frozen=True, slots=True)
class ObjectPlan:
    """The fields of one object, evaluated in file order."""

    fields: tuple[FieldPlan, ...]
    memo: bool = False  # some path is read by several fields: remember its value per object

    def build(self, doc: Document, run: Run, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """The object's data; into ``data`` when given (the rest of an object begun by another plan)."""
        outer = run.memo
        if self.memo:
            run.memo = {}
        if data is None:
            data = {}
        for plan in self.fields:
            if plan.when is not None and not plan.when((doc, data)):
                continue
            value = plan.read(doc, run)
            if value is not None:
                if plan.flat is not None:
                    data[plan.flat] = value
                else:
                    put_path(data, plan.key, value)
        run.memo = outer
        return data


def put_path(data: dict[str, Any], key: Key, value: Any) -> None:
    """Set ``data`` at ``key`` (names and list indexes), creating dicts and lists on the way."""
    current: Any = data
    for part, following in itertools.pairwise(key):
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(part, int):
            current.extend([None] * (part + 1 - len(current)))
            if current[part] is None:
                current[part] = empty
            current = current[part]
        else:
            current = current.setdefault(part, empty)
    last = key[-1]
    if isinstance(last, int):
        current.extend([None] * (last + 1 - len(current)))
    current[last] = value


def get_path(data: Any, key: Key) -> Any:
    """The value at ``key`` in produced data, or None when any step is absent."""
    for part in key:
        if isinstance(part, int):
            data = data[part] if isinstance(data, list) and part < len(data) else None
        else:
            data = data.get(part) if isinstance(data, dict) else None
        if data is None:
            return None
    return data


def as_text(value: Any) -> str | None:
    """Produced values compared as they read in JSON: true/false, ISO dates, plain numbers."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date | datetime | time):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True, slots=True)
class RulePlan:
    """A compiled validation rule; predicates take ``(doc, data)`` (``(doc, item)`` with ``for_each``)."""

    name: str
    message: str
    severity: str
    field: str
    when: Predicate | None
    check: Predicate
    for_each: ListKey | None = None  # a produced list path; None segments ([*]) fan out


def items_at(data: Any, key: ListKey, where: str = "") -> list[tuple[str, Any]]:
    """(position, item) for every item a list path reaches; ``None`` in ``key`` is ``[*]``.

    >>> items_at({"orders": [{"items": [1, 2]}, {"items": [3]}]}, ("orders", None, "items", None))
    [('orders[0].items[0]', 1), ('orders[0].items[1]', 2), ('orders[1].items[0]', 3)]
    """
    if not key:
        return [(where, data)]
    part, rest = key[0], key[1:]
    if part is None:
        if not isinstance(data, list):
            return []
        return [found for i, item in enumerate(data) for found in items_at(item, rest, f"{where}[{i}]")]
    if isinstance(part, int):
        inside = data[part] if isinstance(data, list) and part < len(data) else None
        return [] if inside is None else items_at(inside, rest, f"{where}[{part}]")
    inside = data.get(part) if isinstance(data, dict) else None
    return [] if inside is None else items_at(inside, rest, f"{where}.{part}" if where else part)


@dataclass
class MappingResult:
    """What a run produced: validated target objects, the warnings of ``warn`` rules and how many
    repeats (or the message) the mapping's ``when`` skipped."""

    objects: list[BaseModel]
    warnings: list[str] = field(default_factory=list)
    skipped: int = 0  # messages or repeats the mapping's top-level when left out


def apply_rules(rules: Sequence[RulePlan], doc: Document, data: dict[str, Any], run: Run) -> None:
    """Record warnings; raise ``RuleErrors`` listing every failed ``error`` rule."""
    failures: list[MappingError] = []
    for rule in rules:
        if rule.for_each is None:
            subjects = [("", (doc, data))]
        else:
            # the list as the object has it: list items a `when` skipped leave no gap
            subjects = [(where, (doc, item)) for where, item in items_at(_compact(data), rule.for_each)]
        for where, subject in subjects:
            if rule.when is not None and not rule.when(subject):
                continue
            if rule.check(subject):
                continue
            field = f"{where}.{rule.field}" if where and rule.field else where or rule.field
            label = f"{run.label}{where}: " if where else run.label
            if rule.severity == "warn":
                shown = f" (field {field})" if field else ""
                run.warnings.append(f"{label}{rule.name}: {rule.message}{shown}")
            else:
                failures.append(MappingError(f"{label}{rule.message}", rule=rule.name, field=field))
    if failures:
        raise RuleErrors(failures)


def validation_error(exc: ValidationError, run: Run) -> MappingError:
    """Turn pydantic's complaint about produced data into a MappingError naming the field.

    pydantic's ``msg`` describes the expected type; the input itself is never quoted.
    """
    first = exc.errors(include_url=False, include_input=False)[0]
    name = ".".join(str(p) for p in first["loc"])
    message = f"{run.label}{run.target}.{name}: {first['msg']}"
    if len(exc.errors()) > 1:
        message += f" (and {len(exc.errors()) - 1} more)"
    return MappingError(message, rule="model", field=name)


class CompiledMapping:
    """A mapping compiled once (by ``compile_mapping``); ``run`` it for every message::

    mapping = compile_mapping("mappings/dft-to-supply-usage.yaml", models=MODELS)
    result = mapping.run(doc, tables)  # result.objects[0].quantity, result.warnings
    """

    def __init__(
        self,
        *,
        name: str,
        source: str,
        target: str,
        model: type[BaseModel],
        for_each: str | None,
        plan: ObjectPlan,
        rules: Sequence[RulePlan],
        hook: Callable[[Document, dict[str, Any]], Any] | None,
        description: str = "",
        gate: ObjectPlan | None = None,
        when: Predicate | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.target = target
        self.model = model
        self.for_each = for_each
        self.description = description
        self._plan = plan
        self._rules = tuple(rules)
        self._hook = hook
        self._gate = gate  # the fields the top-level when reads (and those before them), built first
        self._when = when

    def __repr__(self) -> str:
        return f"CompiledMapping({self.name!r}, source={self.source!r}, target={self.target!r})"

    def run(self, doc: Document, tables: Tables | None = None) -> MappingResult:
        """Map ``doc`` into target objects (one, or one per repeat of the top ``for_each``).

        Raises ``MappingError`` (severity error) for a missing required field, a value that
        cannot be converted, a failed ``error`` rule or data the target model rejects.
        """
        run = Run(tables if tables is not None else Tables(), self.target)
        if self.for_each is None:
            one = self._one(doc, run)
            return MappingResult([] if one is None else [one], run.warnings, skipped=int(one is None))
        objects = []
        skipped = 0
        for number, item in enumerate(doc.iterate(self.for_each), 1):
            run.label = f"{self.for_each} repeat {number}: "
            obj = self._one(item, run)
            if obj is None:
                skipped += 1
            else:
                objects.append(obj)
        return MappingResult(objects, run.warnings, skipped=skipped)

    def _one(self, doc: Document, run: Run) -> BaseModel | None:
        """One object, or None when the mapping's ``when`` does not hold for this message or repeat."""
        if self._gate is not None and self._when is not None:
            data = self._gate.build(doc, run)
            if not self._when((doc, data)):
                return None  # skipped before rules and validation: not an error, just not wanted
            self._plan.build(doc, run, data)
        else:
            data = self._plan.build(doc, run)
        if self._hook is not None:
            data = self._hook(doc, data)
            if not isinstance(data, dict):
                raise MappingError(f"{run.label}the mapping's python function must return a dict", rule="python")
        if self._rules:
            apply_rules(self._rules, doc, data, run)
        for name in [k for k in data if k.startswith("_")]:
            del data[name]  # scratch values: usable by rules, not part of the target
        data = _compact(data)  # list entries skipped by their `when` leave no holes
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc, run) from None


def _compact(value: Any) -> Any:
    """``value`` without the ``None`` slots that skipped list entries leave, at any depth.

    >>> _compact({"ids": [{"v": 1}, None, {"v": 3}], "n": None})
    {'ids': [{'v': 1}, {'v': 3}], 'n': None}
    """
    if isinstance(value, list):
        return [_compact(item) for item in value if item is not None]
    if isinstance(value, dict):
        return {key: _compact(item) for key, item in value.items()}
    return value
