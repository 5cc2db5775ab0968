"""The built-in transforms: ``passthrough`` and ``hl7-to-json``."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from engine.core.channel import TransformConfig
from engine.core.contracts import DataType, Document
from engine.core.errors import MappingError
from engine.core.spec import Example, transform_spec


class PassthroughConfig(TransformConfig):
    """``passthrough`` has no settings."""


class Hl7ToJsonConfig(TransformConfig):
    """Settings of ``hl7-to-json``."""

    pretty: bool = Field(default=False, description="Indent the JSON by two spaces (bigger, easier to read).")


class Passthrough:
    """Send the raw bytes as received, with the data type's content type."""

    def __init__(self, config: PassthroughConfig, datatype: DataType, **_context: Any) -> None:
        self.config = config
        self.content_type = datatype.content_type

    def apply(self, raw: bytes, doc: Document) -> tuple[bytes, str]:
        return raw, self.content_type


class Hl7ToJson:
    """Send the document's ``to_data()`` structure as UTF-8 JSON."""

    def __init__(self, config: Hl7ToJsonConfig, datatype: DataType, **_context: Any) -> None:
        self.config = config

    def apply(self, raw: bytes, doc: Document) -> tuple[bytes, str]:
        data: Any = doc.to_data() if hasattr(doc, "to_data") else None
        if data is None:
            raise MappingError(
                "hl7-to-json needs a structured document; this data type gives none (use hl7v2)", rule="hl7-to-json"
            )
        if self.config.pretty:
            text = json.dumps(data, ensure_ascii=False, indent=2)
        else:
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8"), "application/json"


PASSTHROUGH = transform_spec(
    name="passthrough",
    summary="Send the message exactly as received.",
    config=PassthroughConfig,
    factory="engine.transforms.basic:Passthrough",
    examples=(Example("Forward the original bytes", "type: passthrough"),),
)

HL7_TO_JSON = transform_spec(
    name="hl7-to-json",
    summary="Send an HL7 v2 message as JSON: segments, fields, repetitions and components, unescaped.",
    config=Hl7ToJsonConfig,
    factory="engine.transforms.basic:Hl7ToJson",
    examples=(
        Example("Compact JSON", "type: hl7-to-json"),
        Example("Indented JSON for people", "type: hl7-to-json\npretty: true"),
    ),
)
