"""The ``mapping`` transform: run a declarative mapping, send the canonical object(s) as JSON.

The mapping file is compiled once when the channel is deployed (errors point into the
mapping file); reference tables come from ``tables_dir``. A rule of severity ``error``
raises ``MappingError``, which the runtime records as EXCEPTION.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from engine.core import registry
from engine.core.channel import TransformConfig
from engine.core.contracts import DataType, Document
from engine.core.spec import Example, transform_spec
from engine.mapping.compiler import compile_mapping
from engine.mapping.tables import Tables
from engine.mapping.tableset import TableSet


class MappingTransformConfig(TransformConfig):
    """Settings of the ``mapping`` transform."""

    file: str = Field(min_length=1, description="Mapping YAML, relative to the project root.")
    tables_dir: str = Field("mappings/tables", description="Folder of reference tables (NAME.csv).")


class MappingTransform:
    """Maps each message to canonical objects: one object (no ``for_each``) is sent as a JSON object,
    per-repeat objects as a list, and nothing at all when the mapping produced no object."""

    content_type = "application/json"

    def __init__(
        self,
        config: MappingTransformConfig,
        datatype: DataType,
        *,
        base_dir: Path | None = None,
        shared: dict[str, Any] | None = None,
    ) -> None:
        root = base_dir or Path.cwd()
        check = getattr(datatype, "check_path", None)
        self.mapping = compile_mapping(root / config.file, models=registry.models(), check_path=check, name=config.file)
        tables_dir = root / config.tables_dir
        if shared is None:
            self.tables = Tables.from_dir(tables_dir) if tables_dir.is_dir() else Tables()
            return
        # One table set per folder in the engine's shared resources, so a reload reaches every
        # channel; a (re)deploy re-reads the folder too, as it did before tables were shared.
        existed = f"tables:{tables_dir.resolve()}" in shared
        table_set = TableSet.shared(shared, tables_dir)
        if existed and tables_dir.is_dir():
            table_set.reload()
        self.tables = table_set.tables

    def apply(self, raw: bytes, doc: Document) -> tuple[bytes | None, str]:
        """The objects as JSON, or ``None`` content when the mapping produced none (e.g. its ``when``
        kept no FT1 line): the runtime then files this destination (or the message) as FILTERED."""
        result = self.mapping.run(doc, self.tables)
        if not result.objects:
            return None, self.content_type
        data = [obj.model_dump(mode="json", exclude_none=True) for obj in result.objects]
        body = data[0] if len(data) == 1 and self.mapping.for_each is None else data
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), self.content_type


MAPPING_TRANSFORM = transform_spec(
    name="mapping",
    summary="Map the message to canonical objects with a declarative mapping file (JSON out).",
    config=MappingTransformConfig,
    factory="engine.mapping.transform:MappingTransform",
    status="beta",
    examples=(Example("DFT supply lines to SupplyUsage", "type: mapping\nfile: mappings/dft-to-supply-usage.yaml"),),
)
