"""JSON Schema for channel files, composed from every plug-in spec."""

from __future__ import annotations

from typing import Any

from engine.core import registry
from engine.core.channel import ChannelDef
from engine.core.spec import Kind


def _variants(kind: Kind, defs: dict[str, Any]) -> dict[str, Any]:
    options = []
    for name in registry.names(kind):
        spec = registry.get(kind, name)
        schema = spec.config.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        schema.setdefault("properties", {})["type"] = {"const": name, "description": spec.summary}
        schema["required"] = sorted({*schema.get("required", []), "type"})
        schema["title"] = f"{kind} {name}"
        options.append(schema)
    if kind in ("datatype", "transform"):
        options.append({"type": "string", "enum": registry.names(kind)})
    return {"oneOf": options}


def channel_schema() -> dict[str, Any]:
    """The schema editors and CI use to check ``channels/*.yaml``."""
    schema = ChannelDef.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    props = schema["properties"]
    props["source"] = _variants("source", defs)
    props["destinations"] = {"type": "array", "items": _variants("destination", defs)}
    pipeline = dict(defs["PipelineDef"])
    pipeline["properties"] = dict(pipeline["properties"])
    pipeline["properties"]["datatype"] = _variants("datatype", defs)
    pipeline["properties"]["transform"] = _variants("transform", defs)
    defs["PipelineDef"] = pipeline
    if "AlertsDef" in defs:
        alerts = dict(defs["AlertsDef"])
        alerts["properties"] = {**alerts["properties"], "webhook": _variants("destination", defs)}
        defs["AlertsDef"] = alerts
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Junction channel"
    return schema
