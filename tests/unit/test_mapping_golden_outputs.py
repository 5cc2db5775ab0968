"""Golden canonical JSON for every sample (and corpus message) each shipped mapping applies to.

Pairs live in ``tests/golden/mapped/<mapping>/<sample>.json``: the objects the mapping
produces (sorted keys, two-space indent), or the business rule that stops the message.
``pytest --update-golden`` rewrites them; review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.core import registry
from engine.core.errors import MappingError
from engine.datatypes.hl7v2 import Hl7v2
from engine.mapping import Tables, compile_mapping

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "mapped"
CORPUS = ROOT.parent / "shared" / "corpus" / "hl7v2"
MAPPINGS = {  # mapping -> the inputs it applies to (message types DFT)
    "dft-to-supply-usage": "dft_*.hl7",
    "dft-to-charge-event": "dft_*.hl7",
}


def cases() -> list[tuple[str, Path]]:
    found = []
    for mapping, pattern in MAPPINGS.items():
        found += [(mapping, p) for p in sorted((ROOT / "samples" / "hl7v2").glob(pattern))]
        if CORPUS.is_dir():
            found += [(mapping, p) for p in sorted(CORPUS.glob(pattern))]
    return found


def produce(mapping: str, sample: Path) -> object:
    datatype = Hl7v2()
    compiled = compile_mapping(
        ROOT / "mappings" / f"{mapping}.yaml", models=registry.models(), check_path=datatype.check_path
    )
    doc = datatype.parse(datatype.split(sample.read_bytes())[0])
    try:
        result = compiled.run(doc, Tables.from_dir(ROOT / "mappings" / "tables"))
    except MappingError as exc:
        return {"exception": {"rule": exc.rule, "field": exc.field, "message": str(exc)}}
    return [obj.model_dump(mode="json", exclude_none=True) for obj in result.objects]


@pytest.mark.parametrize(("mapping", "sample"), cases(), ids=[f"{m}:{p.name}" for m, p in cases()])
def test_mapping_output_matches_golden(mapping: str, sample: Path, request: pytest.FixtureRequest) -> None:
    actual = json.dumps(produce(mapping, sample), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    where = "corpus" if sample.is_relative_to(CORPUS) else "samples"
    golden = GOLDEN / mapping / where / (sample.stem + ".json")
    if request.config.getoption("--update-golden"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}; run pytest --update-golden and review it"
    assert actual == golden.read_text(encoding="utf-8")


def test_every_sample_dft_has_a_golden_pair() -> None:
    samples = {p.stem for p in (ROOT / "samples" / "hl7v2").glob("dft_*.hl7")}
    for mapping in MAPPINGS:
        assert samples <= {p.stem for p in (GOLDEN / mapping / "samples").glob("*.json")}
