"""Every plug-in spec is complete and its documented examples validate (Vector's habit)."""

from __future__ import annotations

import pytest
import yaml

from engine.core import registry
from engine.core.spec import PluginSpec

SPECS = registry.all_specs()


@pytest.mark.parametrize("spec", SPECS, ids=[f"{s.kind}:{s.name}" for s in SPECS])
def test_spec_is_documented_and_its_examples_validate(spec: PluginSpec) -> None:
    assert spec.summary.endswith(".")
    assert spec.examples, f"{spec.kind} {spec.name} has no example"
    for name, field in spec.config.model_fields.items():
        assert field.description or name == "type", f"{spec.name}.{name} has no description"
    for example in spec.examples:
        data = yaml.safe_load(example.yaml)
        if spec.kind == "destination":
            data.setdefault("name", "example")
        # Examples may reference secrets as ${VAR}: the spec only checks the shape here.
        spec.config.model_validate(data)


def test_every_builtin_type_name_resolves_to_its_spec() -> None:
    for kind, table in registry.BUILTIN.items():
        for name in table:
            spec = registry.get(kind, name)
            assert (spec.kind, spec.name) == (kind, name)
            assert callable(spec.load_factory())
