"""Compile a mapping file once: YAML with positions -> checks -> a plan of closures.

Errors read exactly like channel errors (``file:line:col: error: path: message (hint)``)
and every problem in the file is reported at once, in a ``ConfigError``.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.core.channel import FilterRule
from engine.core.errors import ConfigError, Diagnostic
from engine.core.loader import Loc, YamlDoc, load_yaml, pydantic_diagnostics
from engine.mapping.runner import CompiledMapping, RulePlan
from engine.mapping.steps import (
    Options,
    balance_check,
    build_object,
    compile_condition,
    count_check,
    first_field,
    item_leaf,
    parse_key,
    parse_list_key,
    produced_leaf,
)
from engine.mapping.syntax import FieldSpec, MappingFile, Rule, import_python

PathCheck = Callable[[str], object]
PREFIX = "canonical."


def compile_mapping(
    source: str | Path,
    *,
    models: Mapping[str, type[BaseModel]],
    datatype: str | None = None,
    check_path: PathCheck | None = None,
    name: str = "<mapping>",
) -> CompiledMapping:
    """Compile a mapping file (a path, or YAML text when the string has a line break).

    ``models`` maps target names to pydantic models; ``datatype`` (the channel's) must equal
    the file's ``source``; ``check_path`` (the data type's path parser, raising ValueError)
    lets bad source paths fail here rather than read nothing at run time. ``name`` labels
    errors for text input. Raises ``ConfigError`` listing every problem with its position.

    >>> from pydantic import BaseModel
    >>> class Usage(BaseModel):
    ...     item: str
    >>> mapping = compile_mapping("source: hl7v2\\ntarget: Usage\\nfields: {item: FT1-7.1}\\n", models={"Usage": Usage})
    >>> mapping.target, mapping.source
    ('Usage', 'hl7v2')
    """
    if isinstance(source, str) and "\n" in source:
        doc = load_yaml(name, text=source)
    else:
        doc = load_yaml(source)
    compiled = None
    if not doc.problems:
        compiled = _compile(doc, models, datatype, check_path)
    if doc.problems or compiled is None:
        raise ConfigError(sorted(doc.problems, key=lambda d: (d.location.line, d.location.column)))
    return compiled


def mapping_schema() -> dict[str, Any]:
    """JSON Schema of ``mappings/*.yaml`` for editors and CI."""
    schema = MappingFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Junction mapping"
    return schema


def _compile(
    doc: YamlDoc, models: Mapping[str, type[BaseModel]], datatype: str | None, check_path: PathCheck | None
) -> CompiledMapping | None:
    if not isinstance(doc.data, dict):
        doc.error((), "expected a mapping with source, target and fields")
        return None
    mapping = _validate(doc)
    model = Checker(doc, models, datatype, check_path).check(doc.data)
    if mapping is None or model is None or doc.problems:
        return None
    target = mapping.target.removeprefix(PREFIX)
    options = Options(target=target, date_format="hl7" if mapping.source == "hl7v2" else "iso")
    names = _target_names(model, mapping.fields)
    gate, when, plan = None, None, build_object(mapping.fields, options)
    if mapping.when is not None:
        first, rest = _split_gate(mapping.fields, mapping.when, names)
        gate = build_object(first, options)
        plan = build_object(rest, options, earlier=frozenset(_top(k) for k in first))
        when = compile_condition(mapping.when, produced_leaf(names))
    return CompiledMapping(
        name=doc.file,
        source=mapping.source,
        target=target,
        model=model,
        for_each=mapping.for_each,
        plan=plan,
        rules=[_rule(rule, names) for rule in mapping.rules],
        hook=import_python(mapping.python) if mapping.python else None,
        description=mapping.description,
        gate=gate,
        when=when,
    )


def _split_gate(
    fields: Mapping[str, FieldSpec], when: FilterRule, names: frozenset[str]
) -> tuple[dict[str, FieldSpec], dict[str, FieldSpec]]:
    """Fields up to the last one the top-level ``when`` reads, and the rest.

    Computing that prefix first decides whether the object is wanted before the other fields
    (whose required values or conversions could fail on an unwanted repeat) are read; a
    prefix, because a field's own ``when`` may test any earlier field.
    """
    wanted = {_top(f) for f in _condition_fields(when) if is_target_field(f, names)}
    order = list(fields)
    last = max((i for i, name in enumerate(order) if _top(name) in wanted), default=-1)
    return {k: fields[k] for k in order[: last + 1]}, {k: fields[k] for k in order[last + 1 :]}


def _top(field: str) -> str:
    """The top-level target field a field key starts with (``item`` of ``item.identifiers[0].value``)."""
    return field.split(".")[0].split("[")[0]


def _condition_fields(rule: FilterRule) -> list[str]:
    children = [*(rule.all or ()), *(rule.any or ()), *([rule.not_] if rule.not_ else [])]
    return [*([rule.field] if rule.field else []), *(f for child in children for f in _condition_fields(child))]


def _validate(doc: YamlDoc) -> MappingFile | None:
    try:
        return MappingFile.model_validate(doc.data)
    except ValidationError as exc:
        before = len(doc.problems)
        pydantic_diagnostics(exc, MappingFile, doc)
        _better_hints(doc, exc, before)
        return None


def _better_hints(doc: YamlDoc, exc: ValidationError, before: int) -> None:
    """Unknown keys nested under ``fields.NAME`` get a did-you-mean too.

    The core loader walks models by field name and stops at dict keys (the target field
    names), so its hint is empty there; this walker knows dict keys are free text.
    """
    for i, err in enumerate(exc.errors(include_url=False), start=before):
        if err["type"] != "extra_forbidden" or i >= len(doc.problems):
            continue
        holder = _holder(MappingFile, tuple(err["loc"][:-1]))
        if holder is None:
            continue
        names = [f.alias or n for n, f in holder.model_fields.items()]
        close = difflib.get_close_matches(str(err["loc"][-1]), names, n=1)
        hint = f'did you mean "{close[0]}"?' if close else "valid keys: " + ", ".join(names)
        old = doc.problems[i]
        doc.problems[i] = Diagnostic(old.location, old.path, old.message, hint, old.severity)


def _strip(annotation: Any) -> Any:
    """Remove Annotated and Optional wrappers, keeping the interesting member of a union."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            rich = [a for a in members if typing.get_origin(a) in (list, dict) or _is_model(a)]
            annotation = (rich or members)[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _field(model: type[BaseModel], name: str) -> Any:
    info = model.model_fields.get(name) or next((f for f in model.model_fields.values() if f.alias == name), None)
    return None if info is None else info.annotation


def _holder(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model that holds the last key of ``loc`` (skipping dict keys and list indexes)."""
    current: Any = model
    for part in loc:
        current = _strip(current)
        origin = typing.get_origin(current)
        if origin is list or origin is dict:
            current = typing.get_args(current)[-1]
        elif _is_model(current) and isinstance(part, str):
            current = _field(current, part)
        else:
            return None
    current = _strip(current)
    if typing.get_origin(current) in (list, dict):
        current = _strip(typing.get_args(current)[-1])
    return current if _is_model(current) else None


def sub_model(model: type[BaseModel] | None, key: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model at ``key`` under ``model`` (through lists), or None when not a model."""
    current: Any = model
    for part in key:
        current = _strip(current)
        if typing.get_origin(current) is list:
            current = _strip(typing.get_args(current)[0])
        if isinstance(part, int):
            continue
        if not _is_model(current):
            return None
        current = _field(current, part)
    current = _strip(current)
    if typing.get_origin(current) is list:
        current = _strip(typing.get_args(current)[0])
    return current if _is_model(current) else None


def _target_names(model: type[BaseModel] | None, fields: Mapping[str, Any]) -> frozenset[str]:
    keys = {str(k.split(".")[0].split("[")[0]) for k in fields}
    if model is None:
        return frozenset(keys)
    return frozenset({*model.model_fields, *(f.alias for f in model.model_fields.values() if f.alias), *keys})


def is_target_field(field: str, names: frozenset[str]) -> bool:
    """In rules, a field names the produced object when its first part is a target field."""
    key = parse_key(field)
    return key is not None and key[0] in names


def _rule(rule: Rule, names: frozenset[str]) -> RulePlan:
    leaf = item_leaf if rule.for_each is not None else produced_leaf(names)
    when = compile_condition(rule.when, leaf) if rule.when is not None else None
    if rule.balance is not None:
        b = rule.balance
        return RulePlan(
            rule.name, rule.message, rule.severity, b.total, when, balance_check(b.total, b.sum, b.minus, b.tolerance)
        )
    if rule.count is not None:
        c = rule.count
        return RulePlan(rule.name, rule.message, rule.severity, c.items[0], when, count_check(c.source, c.items))
    assert rule.check is not None
    for_each = parse_list_key(rule.for_each) if rule.for_each is not None else None
    if for_each is not None and isinstance(for_each[-1], str):
        for_each = (*for_each, None)  # `lines` means every item of lines
    check = compile_condition(rule.check, leaf)
    return RulePlan(rule.name, rule.message, rule.severity, first_field(rule.check), when, check, for_each)


class Checker:
    """Checks that need context (models, declared tables, path syntax), on the raw data.

    Working on the raw data rather than the validated model lets these problems be reported
    together with pydantic's, even when the file has structural errors too.
    """

    def __init__(
        self,
        doc: YamlDoc,
        models: Mapping[str, type[BaseModel]],
        datatype: str | None,
        check_path: PathCheck | None,
    ) -> None:
        self.doc = doc
        self.models = {k.removeprefix(PREFIX): v for k, v in models.items()}
        self.datatype = datatype
        self.check_path = check_path
        self.tables: list[str] | None = None
        self.names: frozenset[str] = frozenset()

    def check(self, data: dict[str, Any]) -> type[BaseModel] | None:
        """Report every context problem; return the target model when it is known."""
        self._source(data.get("source"))
        model = self._target(data.get("target"))
        tables = data.get("tables")
        self.tables = [t for t in tables if isinstance(t, str)] if isinstance(tables, list) else None
        self._path(data.get("for_each"), ("for_each",))
        fields = data.get("fields")
        if isinstance(fields, dict):
            self.names = _target_names(model, fields)
            self._fields(fields, ("fields",), model, top=True, hooked=isinstance(data.get("python"), str))
        self._condition(data.get("when"), ("when",), self.names)
        for i, rule in enumerate(data.get("rules") or []):
            if not isinstance(rule, dict):
                continue
            for_each = rule.get("for_each")
            if isinstance(for_each, str):
                # item rules read the produced items only: their fields are not source paths
                key = parse_list_key(for_each)
                if key is None or not isinstance(key[0], str) or key[0] not in self.names:
                    hint = "a produced list such as lines or orders[*].packs[*].items[*]"
                    self.doc.error(("rules", i, "for_each"), f'"{for_each}" is not a list the mapping produces', hint)
                continue
            self._condition(rule.get("when"), ("rules", i, "when"), self.names)
            self._condition(rule.get("check"), ("rules", i, "check"), self.names)
            count = rule.get("count")
            if isinstance(count, dict):
                self._path(count.get("source"), ("rules", i, "count", "source"))
                for j, items in enumerate(count.get("items") or []):
                    key = parse_list_key(items) if isinstance(items, str) else None
                    if key is None or not isinstance(key[0], str) or key[0] not in self.names:
                        hint = "a produced list such as lines or orders[*].packs[*].items[*]"
                        loc = ("rules", i, "count", "items", j)
                        self.doc.error(loc, f'"{items}" is not a list the mapping produces', hint)
        return model

    def _source(self, source: Any) -> None:
        if self.datatype is not None and isinstance(source, str) and source != self.datatype:
            message = f'expected "{self.datatype}" (the data type of the channel); found "{source}"'
            self.doc.error(("source",), message)

    def _target(self, target: Any) -> type[BaseModel] | None:
        if not isinstance(target, str):
            return None
        model = self.models.get(target.removeprefix(PREFIX))
        if model is None:
            close = difflib.get_close_matches(target.removeprefix(PREFIX), list(self.models), n=1)
            hint = f'did you mean "{close[0]}"?' if close else "known models: " + ", ".join(sorted(self.models))
            self.doc.error(("target",), f'unknown target model "{target}"', hint)
        return model

    def _path(self, path: Any, loc: Loc) -> None:
        if self.check_path is None or not isinstance(path, str):
            return
        try:
            self.check_path(path)
        except ValueError as exc:
            self.doc.error(loc, str(exc))

    def _fields(
        self, fields: dict[str, Any], loc: Loc, model: type[BaseModel] | None, *, top: bool, hooked: bool
    ) -> None:
        covered: set[str] = set()
        for name, spec in fields.items():
            key = parse_key(name)
            here = (*loc, name)
            if key is None:
                message = "expected a target field name such as quantity, item.number or identifiers[0].value"
                self.doc.error(here, message, key=True)
                continue
            scratch = top and name.startswith("_")
            if model is not None and not scratch:
                self._field_name(model, key, here)
            # covered so far: the earlier fields a field's when may test instead of a source path
            self._spec(spec, here, None if scratch else sub_model(model, key) if model else None, frozenset(covered))
            covered.add(str(key[0]))
        if model is not None and not hooked:
            self._coverage(model, covered, loc)

    def _field_name(self, model: type[BaseModel], key: tuple[str | int, ...], loc: Loc) -> None:
        holder: type[BaseModel] | None = model
        for depth, part in enumerate(key):
            if isinstance(part, int) or holder is None:
                continue
            if holder.model_config.get("extra") == "allow":
                return  # the model takes any field
            if _field(holder, part) is None:
                names = [f.alias or n for n, f in holder.model_fields.items()]
                close = difflib.get_close_matches(part, names, n=1)
                hint = f'did you mean "{close[0]}"?' if close else "fields: " + ", ".join(names)
                self.doc.error(loc, f"unknown field {part} of {holder.__name__}", hint, key=True)
                return
            holder = sub_model(holder, key[depth : depth + 1])

    def _coverage(self, model: type[BaseModel], covered: set[str], loc: Loc) -> None:
        missing = [
            info.alias or name
            for name, info in model.model_fields.items()
            if info.is_required() and name not in covered and (info.alias or name) not in covered
        ]
        if missing:
            message = f"required fields of {model.__name__} are not mapped: {', '.join(missing)}"
            self.doc.error(loc, message, key=True)

    def _spec(self, spec: Any, loc: Loc, model: type[BaseModel] | None, earlier: frozenset[str]) -> None:
        if isinstance(spec, str):
            self._path(spec, loc)
            return
        if not isinstance(spec, dict):
            return
        self._path(spec.get("from"), (*loc, "from"))
        self._path(spec.get("for_each"), (*loc, "for_each"))
        for i, part in enumerate(spec.get("concat") or []):
            self._path(
                part if isinstance(part, str) else part.get("from") if isinstance(part, dict) else None,
                (*loc, "concat", i),
            )
        self._condition(spec.get("when"), (*loc, "when"), earlier)
        self._condition(spec.get("where"), (*loc, "where"), frozenset())
        self._lookup(spec.get("lookup"), (*loc, "lookup"))
        uom = spec.get("uom")
        if isinstance(uom, dict):
            self._path(uom.get("from"), (*loc, "uom", "from"))
            self._table(uom.get("factors_table"), (*loc, "uom", "factors_table"))
        nested = spec.get("fields")
        if isinstance(nested, dict):
            self._fields(nested, (*loc, "fields"), model, top=False, hooked=isinstance(spec.get("python"), str))

    def _lookup(self, lookup: Any, loc: Loc) -> None:
        if isinstance(lookup, str):
            self._table(lookup, loc)
        elif isinstance(lookup, dict):
            self._table(lookup.get("table"), (*loc, "table"))

    def _table(self, name: Any, loc: Loc) -> None:
        if self.tables is None or not isinstance(name, str) or name in self.tables:
            return
        close = difflib.get_close_matches(name, self.tables, n=1)
        hint = f'did you mean "{close[0]}"?' if close else "declare it under tables"
        self.doc.error(loc, f'unknown table "{name}"', hint)

    def _condition(self, rule: Any, loc: Loc, names: frozenset[str]) -> None:
        """Check the source paths of a condition; fields whose first part is in ``names`` are produced values."""
        if not isinstance(rule, dict):
            return
        field = rule.get("field")
        if isinstance(field, str) and not is_target_field(field, names):
            self._path(field, (*loc, "field"))
        for combinator in ("all", "any"):
            for i, child in enumerate(rule.get(combinator) or []):
                self._condition(child, (*loc, combinator, i), names)
        self._condition(rule.get("not"), (*loc, "not"), names)
