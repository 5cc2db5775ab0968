"""Declarative mappings: message documents -> target models (see docs/mapping.md).

Compile once at load, run for every message::

    mapping = compile_mapping("mappings/dft-to-supply-usage.yaml", models=MODELS, datatype="hl7v2")
    result = mapping.run(doc, tables)  # result.objects, result.warnings

This package reads documents only through ``engine.core.contracts.Document`` and finds
target models by name, so it imports neither the data types nor the canonical models.
"""

from __future__ import annotations

from engine.mapping.compiler import compile_mapping, mapping_schema
from engine.mapping.runner import CompiledMapping, FieldContext, MappingResult, RuleErrors
from engine.mapping.tables import Table, Tables, UnknownColumn, UnknownTable, parse_csv, read_csv

__all__ = [
    "CompiledMapping",
    "FieldContext",
    "MappingResult",
    "RuleErrors",
    "Table",
    "Tables",
    "UnknownColumn",
    "UnknownTable",
    "compile_mapping",
    "mapping_schema",
    "parse_csv",
    "read_csv",
]
