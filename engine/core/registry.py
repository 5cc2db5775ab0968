"""Type name -> plug-in spec, loaded lazily (kombu-style) plus entry points.

The built-in table names modules, not objects, so that listing and validating do not
import paramiko, lxml or psycopg. Third-party packages register specs in the entry-point
group ``junction.plugins`` (value ``module:SPEC``).
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points

from pydantic import BaseModel

from engine.core.spec import KINDS, Kind, PluginSpec

BUILTIN: dict[Kind, dict[str, str]] = {
    "source": {
        "mllp": "engine.connectors.mllp:MLLP_SOURCE",
        "folder": "engine.connectors.folder:FOLDER_SOURCE",
        "sftp": "engine.connectors.sftp:SFTP_SOURCE",
        "http": "engine.connectors.web:HTTP_SOURCE",
        "fhir": "engine.connectors.web:FHIR_SOURCE",
        "tryton": "engine.connectors.tryton:TRYTON_SOURCE",
    },
    "destination": {
        "http": "engine.connectors.http:HTTP_DESTINATION",
        "soap": "engine.connectors.soap:SOAP_DESTINATION",
        "table": "engine.connectors.table:TABLE_DESTINATION",
        "fhir": "engine.connectors.fhirout:FHIR_DESTINATION",
        "tryton": "engine.connectors.tryton:TRYTON_DESTINATION",
        "file": "engine.connectors.file:FILE_DESTINATION",
        "mllp": "engine.connectors.mllp:MLLP_DESTINATION",
        "sftp": "engine.connectors.sftp:SFTP_DESTINATION",
        "database": "engine.connectors.database:DATABASE_DESTINATION",
        "nats": "engine.connectors.nats:NATS_DESTINATION",
        "x12": "engine.edi.x12out:X12_DESTINATION",
        "x12-acks": "engine.edi.acks_in:X12_ACKS_DESTINATION",
    },
    "datatype": {
        "hl7v2": "engine.datatypes.hl7v2:HL7V2",
        "raw": "engine.datatypes.raw:RAW",
        "json": "engine.datatypes.json:JSON",
        "xml": "engine.datatypes.xml:XML",
        "x12": "engine.datatypes.x12:X12",
        "fhir": "engine.datatypes.fhir:FHIR",
        "delimited": "engine.datatypes.flat:DELIMITED",
        "fixed-width": "engine.datatypes.flat:FIXED_WIDTH",
    },
    "transform": {
        "passthrough": "engine.transforms.basic:PASSTHROUGH",
        "hl7-to-json": "engine.transforms.basic:HL7_TO_JSON",
        "mapping": "engine.mapping.transform:MAPPING_TRANSFORM",
        "chain": "engine.transforms.chain:CHAIN",
        "item-to-mfn": "engine.transforms.mfn:ITEM_TO_MFN",
    },
    "store": {
        "sqlite": "engine.store.sqlite:SQLITE_STORE",
    },
}

_cache: dict[tuple[Kind, str], PluginSpec] = {}


class UnknownPlugin(LookupError):
    def __init__(self, kind: Kind, name: str, suggestion: str | None) -> None:
        self.kind = kind
        self.name = name
        self.suggestion = suggestion
        super().__init__(f"unknown {kind} {name!r}")


def _table(kind: Kind) -> dict[str, str]:
    table = dict(BUILTIN[kind])
    for ep in entry_points(group="junction.plugins"):
        kind_name, _, type_name = ep.name.partition(".")
        if kind_name == kind and type_name:
            table.setdefault(type_name, ep.value)
    return table


def names(kind: Kind) -> list[str]:
    return sorted(_table(kind))


def get(kind: Kind, name: str) -> PluginSpec:
    """Return the spec registered as ``name`` for ``kind`` or raise ``UnknownPlugin``."""
    key = (kind, name)
    if key in _cache:
        return _cache[key]
    table = _table(kind)
    target = table.get(name)
    if target is None:
        close = difflib.get_close_matches(name, list(table), n=1)
        raise UnknownPlugin(kind, name, close[0] if close else None)
    module_name, _, attr = target.partition(":")
    spec = getattr(importlib.import_module(module_name), attr)
    if not isinstance(spec, PluginSpec) or spec.kind != kind or spec.name != name:
        raise TypeError(f"{target} is not the {kind} spec {name!r}")
    _cache[key] = spec
    return spec


def all_specs() -> list[PluginSpec]:
    return [get(kind, name) for kind in KINDS for name in names(kind)]


# Target models of mappings, by name (``SupplyUsage``): a dict attribute of a module,
# imported on first use so that core stays free of the canonical package.
MODEL_TABLES: tuple[str, ...] = ("engine.canonical:MODELS", "engine.canonical.fhir:FHIR_TARGETS")


def models() -> dict[str, type[BaseModel]]:
    """Every registered target model by class name (the canonical objects and entry points)."""
    found: dict[str, type[BaseModel]] = {}
    targets = list(MODEL_TABLES) + [ep.value for ep in entry_points(group="junction.models")]
    for target in targets:
        module_name, _, attr = target.partition(":")
        found.update(getattr(importlib.import_module(module_name), attr))
    return found
