"""The examples of docs/mapping.md compile and produce the JSON shown after them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from engine.datatypes.hl7v2 import Hl7v2
from engine.datatypes.hl7v2.paths import parse_path
from engine.mapping import Tables, compile_mapping, parse_csv

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "mapping.md").read_text(encoding="utf-8")
SAMPLE = ROOT / "samples" / "hl7v2" / "dft_p03_supply_two_ft1.hl7"
BLOCK = re.compile(r"^```(\w+)[ ]?(\S*)\n(.*?)^```", re.M | re.S)


class Open(BaseModel):
    """Stands in for the canonical models: keeps exactly what the mapping produced."""

    model_config = ConfigDict(extra="allow")


def examples() -> list[tuple[str, str, list[Any]]]:
    """(mapping name, YAML, expected objects) for each mapping followed by a JSON block."""
    found: list[tuple[str, str, list[Any]]] = []
    pending: tuple[str, str] | None = None
    for lang, _info, body in BLOCK.findall(DOC):
        if lang == "yaml" and body.startswith("# mappings/"):
            pending = (body.split()[1], body)
        elif lang == "json" and pending is not None:
            found.append((*pending, json.loads(body)))
            pending = None
    return found


def doc_tables() -> Tables:
    tables = Tables()
    for lang, info, body in BLOCK.findall(DOC):
        if lang == "csv":
            tables.put(parse_csv(body, info))
    return tables


def test_the_page_has_runnable_examples() -> None:
    assert len(examples()) >= 3
    assert doc_tables().names() == ["item_master", "location"]


@pytest.mark.parametrize(("name", "text", "expected"), examples(), ids=[e[0] for e in examples()])
def test_documented_example_produces_the_documented_json(name: str, text: str, expected: list[Any]) -> None:
    models = {"SupplyUsage": Open, "UsageBatch": Open, "ChargeEvent": Open}
    mapping = compile_mapping(text, models=models, datatype="hl7v2", check_path=parse_path, name=name)
    result = mapping.run(Hl7v2().parse(SAMPLE.read_bytes()), doc_tables())
    assert [o.model_dump(mode="json") for o in result.objects] == expected
    assert result.warnings == []
