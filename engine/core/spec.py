"""One declaration per plug-in: the spec drives validation, schema, docs and listing."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

Kind = Literal["source", "destination", "datatype", "transform", "store"]
KINDS: tuple[Kind, ...] = ("source", "destination", "datatype", "transform", "store")


@dataclass(frozen=True)
class Example:
    """A titled YAML snippet that must validate against its spec (checked by a unit test)."""

    title: str
    yaml: str


@dataclass(frozen=True)
class PluginSpec:
    """What Junction knows about a plug-in without importing its heavy libraries."""

    kind: Kind
    name: str
    summary: str
    config: type[BaseModel]
    factory: str  # "package.module:Attribute", imported only when the plug-in is used
    status: Literal["stable", "beta", "experimental"] = "stable"
    since: str = "0.1"
    examples: tuple[Example, ...] = ()
    capabilities: frozenset[str] = field(default_factory=frozenset)
    path_syntax: str = ""  # data types: how mapping paths address a document

    def load_factory(self) -> Any:
        module_name, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module_name), attr)


def source_spec(**kwargs: Any) -> PluginSpec:
    return PluginSpec(kind="source", **kwargs)


def destination_spec(**kwargs: Any) -> PluginSpec:
    return PluginSpec(kind="destination", **kwargs)


def datatype_spec(**kwargs: Any) -> PluginSpec:
    return PluginSpec(kind="datatype", **kwargs)


def transform_spec(**kwargs: Any) -> PluginSpec:
    return PluginSpec(kind="transform", **kwargs)


def store_spec(**kwargs: Any) -> PluginSpec:
    return PluginSpec(kind="store", **kwargs)
