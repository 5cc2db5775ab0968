"""Bad mapping YAML gives file:line:col errors like channel errors (golden expected text).

Cases: ``tests/golden/mappings/NAME.yaml`` with ``NAME.expected``; ``pytest --update-golden``
rewrites the expected text, then review the diff.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel

from engine.core.errors import ConfigError
from engine.datatypes.hl7v2.paths import parse_path
from engine.mapping import compile_mapping, mapping_schema

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "mappings"
CASES = sorted(GOLDEN.glob("*.yaml"))


class Item(BaseModel):
    number: str


class Line(BaseModel):
    quantity: Decimal


class SupplyUsage(BaseModel):
    encounter: str
    item: str
    quantity: Decimal
    used_at: datetime
    description: str | None = None
    cost_centre: str | None = None


class Order(BaseModel):
    encounter: str
    item: Item
    lines: list[Line]
    used_at: datetime


MODELS: dict[str, type[BaseModel]] = {"SupplyUsage": SupplyUsage, "Order": Order}


def _errors(path: Path) -> str:
    try:
        compile_mapping(path.relative_to(ROOT), models=MODELS, datatype="hl7v2", check_path=parse_path)
    except ConfigError as exc:
        return "\n".join(str(d) for d in exc.diagnostics) + "\n"
    return ""


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_mapping_errors_match_golden(case: Path, request: pytest.FixtureRequest) -> None:
    actual = _errors(case)
    expected_file = case.with_suffix(".expected")
    if request.config.getoption("--update-golden"):
        expected_file.write_text(actual, encoding="utf-8")
    assert actual, f"{case.name} should be rejected"
    assert actual == expected_file.read_text(encoding="utf-8")


def test_every_error_line_has_the_compiler_shape() -> None:
    assert len(CASES) >= 6
    for case in CASES:
        for line in _errors(case).splitlines():
            location, _, rest = line.partition(": error: ")
            file, line_no, col = location.rsplit(":", 2)
            assert file.endswith(case.name) and int(line_no) >= 1 and int(col) >= 1, line
            assert rest, line


def test_errors_come_in_file_order_all_at_once() -> None:
    lines = _errors(GOLDEN / "typos.yaml").splitlines()
    positions = [tuple(int(n) for n in line.split(":")[1:3]) for line in lines]
    assert positions == sorted(positions) and len(lines) >= 5


def test_text_input_uses_the_given_name_and_yaml_errors_have_positions() -> None:
    with pytest.raises(ConfigError) as caught:
        compile_mapping("source: hl7v2\ntarget: [\n", models=MODELS, name="mappings/x.yaml")
    assert str(caught.value).startswith("mappings/x.yaml:3:1: error: invalid YAML")
    with pytest.raises(ConfigError, match="cannot read file"):
        compile_mapping(ROOT / "mappings" / "does-not-exist.yaml", models=MODELS)
    with pytest.raises(ConfigError, match="expected a mapping with source, target and fields"):
        compile_mapping("- a\n- b\n", models=MODELS)


def test_missing_required_keys_and_empty_file() -> None:
    with pytest.raises(ConfigError) as caught:
        compile_mapping("description: nothing else\n", models=MODELS)
    text = str(caught.value)
    assert "source: required field is missing" in text and "fields: required field is missing" in text


def test_json_schema_describes_short_and_long_forms() -> None:
    schema = mapping_schema()
    assert schema["title"] == "Junction mapping"
    assert set(schema["required"]) == {"source", "target", "fields"}
    field_spec = schema["$defs"]["FieldSpec"]
    assert "as" in field_spec["properties"] and "from" in field_spec["properties"]
    assert {"type": "string"} in schema["properties"]["fields"]["additionalProperties"]["anyOf"]
