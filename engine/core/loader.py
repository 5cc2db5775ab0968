"""YAML with positions -> pydantic -> ``ConfigError`` carrying file:line:column.

Every problem in a file is collected and reported at once, in the shape

    channels/x.yaml:6:13: error: source.ack_mode: expected one of on_receipt, after_processing;
    found "on_recept" (did you mean "on_receipt"?)
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from engine.core import registry
from engine.core.channel import (
    ChannelDef,
    DataTypeConfig,
    DestinationConfig,
    SourceConfig,
    TransformConfig,
)
from engine.core.errors import ConfigError, Diagnostic, Location
from engine.core.spec import Kind

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class YamlDoc:
    """Plain data loaded from YAML plus where each value and key came from."""

    file: str
    data: Any
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    from_env: set[Loc] = field(default_factory=set)
    problems: list[Diagnostic] = field(default_factory=list)

    def where(self, loc: Loc, *, key: bool = False) -> Location:
        """The best position for ``loc``: the key or value itself, else its nearest parent."""
        table = self.keys if key else self.values
        probe = tuple(loc)
        while probe:
            if probe in table:
                line, col = table[probe]
                return Location(self.file, line, col)
            if probe in self.values:
                line, col = self.values[probe]
                return Location(self.file, line, col)
            probe = probe[:-1]
        line, col = self.values.get((), (1, 1))
        return Location(self.file, line, col)

    def error(self, loc: Loc, message: str, hint: str = "", *, key: bool = False) -> None:
        self.problems.append(Diagnostic(self.where(loc, key=key), dotted(loc), message, hint))


def dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _substitute(text: str, env: Mapping[str, str], doc: YamlDoc, loc: Loc) -> str:
    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            doc.from_env.add(loc)
            return env[name]
        if default is not None:
            return default
        doc.error(loc, f"environment variable {name} is not set", "set it, or write ${" + name + ":-default}")
        return ""

    return _VAR.sub(repl, text)


def _build(node: yaml.Node, loc: Loc, doc: YamlDoc, env: Mapping[str, str]) -> Any:
    doc.values[loc] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                doc.problems.append(
                    Diagnostic(Location(doc.file, *_mark(key_node)), dotted(loc), "keys must be plain strings")
                )
                continue
            key = str(key_node.value)
            child = (*loc, key)
            if key in out:
                doc.keys[child] = _mark(key_node)
                doc.error(child, "duplicate key", "each key may appear once", key=True)
                continue
            doc.keys[child] = _mark(key_node)
            out[key] = _build(value_node, child, doc, env)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*loc, i), doc, env) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    if node.tag == "tag:yaml.org,2002:str":
        text = str(node.value)
        return _substitute(text, env, doc, loc) if "$" in text else text
    value = _SCALARS.construct_object(node, deep=True)
    _SCALARS.constructed_objects.clear()
    return value


class _ScalarLoader(yaml.SafeLoader):
    def __init__(self) -> None:
        super().__init__("")


_SCALARS = _ScalarLoader()


def load_yaml(path: str | Path, env: Mapping[str, str] | None = None, *, text: str | None = None) -> YamlDoc:
    """Parse a YAML file into plain data with positions, substituting ``${VAR}``."""
    file = str(path)
    doc = YamlDoc(file, None)
    try:
        source = text if text is not None else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        doc.problems.append(Diagnostic(Location(file), "", f"cannot read file: {exc}"))
        return doc
    try:
        node = yaml.compose(source, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        doc.problems.append(Diagnostic(Location(file, line, col), "", f"invalid YAML: {exc.problem or exc}"))
        return doc
    except yaml.YAMLError as exc:
        doc.problems.append(Diagnostic(Location(file), "", f"invalid YAML: {exc}"))
        return doc
    if node is None:
        doc.problems.append(Diagnostic(Location(file, 1, 1), "", "the file is empty"))
        return doc
    doc.data = _build(node, (), doc, os.environ if env is None else env)
    return doc


# --- pydantic errors -> diagnostics ------------------------------------------------------


def _found(value: Any, secret: bool) -> str:
    if secret:
        return "a value taken from the environment"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return '"' + shown.replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _unwrap(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (list, tuple, set, frozenset, dict):
        args = typing.get_args(annotation)
        return _unwrap(args[-1]) if args else []
    return [annotation]


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """Walk ``loc`` through the model's field annotations to the model holding the last key."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        field_info = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None
        )
        if field_info is None:
            return None
        models = [t for t in _unwrap(field_info.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
        current = models[0] if models else None
    return current


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _expected(err: Mapping[str, Any]) -> tuple[str, list[str]]:
    """Return (text, choices) for an error; choices feed the did-you-mean hint."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind in ("literal_error", "enum"):
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return "expected one of " + ", ".join(choices), choices
    simple = {
        "int_parsing": "expected an integer",
        "int_type": "expected an integer",
        "int_from_float": "expected a whole number",
        "float_parsing": "expected a number",
        "float_type": "expected a number",
        "bool_parsing": "expected true or false",
        "bool_type": "expected true or false",
        "string_type": "expected a string",
        "list_type": "expected a list",
        "dict_type": "expected a mapping",
        "model_type": "expected a mapping",
        "model_attributes_type": "expected a mapping",
    }
    if kind in simple:
        return simple[kind], []
    bounds = {
        "greater_than": ("gt", "greater than"),
        "greater_than_equal": ("ge", "at least"),
        "less_than": ("lt", "less than"),
        "less_than_equal": ("le", "at most"),
    }
    if kind in bounds:
        key, words = bounds[kind]
        return f"expected a number {words} {ctx.get(key)}", []
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        if "a-z0-9" in pattern:
            return "expected a kebab-case name (lower-case letters, digits and single hyphens)", []
        return f"expected text matching {pattern}", []
    if kind in ("string_too_short", "string_too_long"):
        return str(err["msg"]).replace("String should", "expected text to"), []
    if kind == "value_error":
        return str(ctx.get("error", err["msg"])), []
    return str(err["msg"]).lower(), []


def pydantic_diagnostics(exc: ValidationError, model: type[BaseModel], doc: YamlDoc, prefix: Loc = ()) -> None:
    """Append one diagnostic per pydantic error, positioned through ``doc``."""
    for err in exc.errors(include_url=False):
        loc: Loc = (*prefix, *(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
        kind = err["type"]
        if kind == "missing":
            doc.error(loc, "required field is missing")
            continue
        if kind == "extra_forbidden":
            holder = _model_at(model, tuple(err["loc"][:-1]))
            names = _field_names(holder) if holder else []
            close = difflib.get_close_matches(str(loc[-1]), names, n=1)
            hint = f'did you mean "{close[0]}"?' if close else ("valid keys: " + ", ".join(names) if names else "")
            doc.error(loc, "unknown key", hint, key=True)
            continue
        text, choices = _expected(err)
        value = err.get("input")
        if kind == "value_error" or kind.startswith("assertion"):
            doc.error(loc, text)
            continue
        message = f"{text}; found {_found(value, loc in doc.from_env)}"
        close = difflib.get_close_matches(str(value), choices, n=1) if isinstance(value, str) else []
        doc.error(loc, message, f'did you mean "{close[0]}"?' if close else "")


def validate_model(model: type[M], doc: YamlDoc, data: Any, prefix: Loc = ()) -> M | None:
    """Validate ``data`` (found at ``prefix`` in ``doc``) against ``model``; record problems."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        pydantic_diagnostics(exc, model, doc, prefix)
        return None


# --- plug-in resolution -------------------------------------------------------------------

_BASES: dict[Kind, type[BaseModel]] = {
    "source": SourceConfig,
    "destination": DestinationConfig,
    "datatype": DataTypeConfig,
    "transform": TransformConfig,
}


def resolve_plugin(doc: YamlDoc, kind: Kind, data: Any, loc: Loc) -> BaseModel | None:
    """Validate a ``type:``-selected plug-in config; None (with diagnostics) when invalid."""
    if isinstance(data, str) and kind in ("datatype", "transform"):
        data = {"type": data}
        doc.values.setdefault((*loc, "type"), doc.values.get(loc, (0, 0)))
    if not isinstance(data, dict):
        doc.error(loc, f"expected a mapping with a type key; found {_found(data, False)}")
        return None
    type_name = data.get("type")
    if not isinstance(type_name, str) or not type_name:
        doc.error((*loc, "type"), f"required field is missing (the {kind} type, see `junction plugins list`)")
        return None
    try:
        spec = registry.get(kind, type_name)
    except registry.UnknownPlugin as exc:
        hint = f'did you mean "{exc.suggestion}"? see `junction plugins list`' if exc.suggestion else ""
        doc.error((*loc, "type"), f'unknown {kind} "{type_name}"', hint or "see `junction plugins list`")
        return None
    return validate_model(spec.config, doc, data, loc)


class _SharedDestinationKeys(DestinationConfig):
    model_config = ConfigDict(extra="ignore", frozen=True)


def _placeholder(kind: Kind, data: Any) -> BaseModel:
    base = _BASES[kind]
    return base.model_construct(type=str(data.get("type", "")) if isinstance(data, dict) else str(data))


def _resolve_into(doc: YamlDoc, kind: Kind, holder: dict[str, Any], key: str, loc: Loc) -> None:
    if key not in holder or holder[key] is None:
        return
    resolved = resolve_plugin(doc, kind, holder[key], (*loc, key))
    holder[key] = resolved if resolved is not None else _placeholder(kind, holder[key])


def _resolve_destination(doc: YamlDoc, data: Any, loc: Loc) -> Any:
    if not isinstance(data, dict):
        return data
    data = dict(data)
    _resolve_into(doc, "transform", data, "transform", loc)
    transform = data.pop("transform", None)
    before = len(doc.problems)
    resolved = resolve_plugin(doc, "destination", data, loc)
    if resolved is None:
        if not any(d.path.startswith(dotted(loc)) and d.path != dotted((*loc, "type")) for d in doc.problems[before:]):
            # The type is unknown: still check the keys every destination shares.
            validate_model(_SharedDestinationKeys, doc, data, loc)
        return DestinationConfig.model_construct(type=str(data.get("type", "")), name=str(data.get("name", "")))
    if transform is not None:
        resolved = resolved.model_copy(update={"transform": transform})
    return resolved


def load_channel(path: str | Path, env: Mapping[str, str] | None = None, *, text: str | None = None) -> ChannelDef:
    """Load and validate one channel file; raise ``ConfigError`` listing every problem."""
    doc = load_yaml(path, env, text=text)
    channel = None
    if doc.data is not None and not isinstance(doc.data, dict):
        doc.error((), f"expected a mapping of channel keys; found {_found(doc.data, False)}")
    elif isinstance(doc.data, dict):
        data = dict(doc.data)
        _resolve_into(doc, "source", data, "source", ())
        pipeline = data.get("pipeline")
        if isinstance(pipeline, dict):
            pipeline = dict(pipeline)
            _resolve_into(doc, "datatype", pipeline, "datatype", ("pipeline",))
            _resolve_into(doc, "transform", pipeline, "transform", ("pipeline",))
            data["pipeline"] = pipeline
        destinations = data.get("destinations")
        if isinstance(destinations, list):
            data["destinations"] = [
                _resolve_destination(doc, d, ("destinations", i)) for i, d in enumerate(destinations)
            ]
        alerts = data.get("alerts")
        if isinstance(alerts, dict) and isinstance(alerts.get("webhook"), dict):
            alerts = dict(alerts)
            alerts["webhook"] = _resolve_destination(
                doc, {"name": "alerts", **alerts["webhook"]}, ("alerts", "webhook")
            )
            data["alerts"] = alerts
        before = len(doc.problems)
        channel = validate_model(ChannelDef, doc, data)
        if channel is None and len(doc.problems) == before:  # pragma: no cover - defensive
            doc.error((), "invalid channel")
        stem = Path(path).stem
        name = data.get("name")
        if isinstance(name, str) and name != stem and text is None:
            doc.error(("name",), f'expected the file stem "{stem}"; found "{name}"', "rename the file or the channel")
    if doc.problems:
        raise ConfigError(_tidy(doc.problems))
    assert channel is not None
    return channel


def _tidy(problems: list[Diagnostic]) -> list[Diagnostic]:
    """Sort by position; an unset variable hides the follow-on errors about its empty value."""
    unset = {d.path for d in problems if d.message.startswith("environment variable ")}
    kept = [d for d in problems if d.path not in unset or d.message.startswith("environment variable ")]
    return sorted(kept, key=lambda d: (d.location.line, d.location.column))


def channel_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories into their ``*.yaml``/``*.yml`` files, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        else:
            out.append(p)
    return out


def load_channels(
    directory: str | Path, env: Mapping[str, str] | None = None
) -> tuple[dict[str, ChannelDef], list[Diagnostic]]:
    """Load every channel of a folder; invalid files are reported, valid ones returned."""
    channels: dict[str, ChannelDef] = {}
    problems: list[Diagnostic] = []
    for file in channel_files([directory]):
        try:
            channel = load_channel(file, env)
        except ConfigError as exc:
            problems.extend(exc.diagnostics)
            continue
        channels[channel.name] = channel
    return channels, problems


def load_model(path: str | Path, model: type[M], env: Mapping[str, str] | None = None) -> M:
    """Load a YAML file into a plain pydantic model (engine settings and the like)."""
    doc = load_yaml(path, env)
    result = validate_model(model, doc, doc.data if doc.data is not None else {}) if not doc.problems else None
    if doc.problems or result is None:
        raise ConfigError(doc.problems or [Diagnostic(Location(str(path)), "", "invalid file")])
    return result
