"""Shared fixtures: the third-party corpus (skipped with a reason when absent) and projects."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
SAMPLES = ROOT / "samples"


@pytest.fixture
def corpus() -> Path:
    """The shared corpus beside the clone; a user's fresh clone has none, so skip clearly."""
    if not CORPUS.is_dir():
        pytest.skip(f"third-party corpus not found at {CORPUS} (it lives beside the clone in CI only)")
    return CORPUS


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[[dict[str, str]], Path]:
    """Create a project folder with the given channel files (name -> YAML text)."""

    def make(channels: dict[str, str]) -> Path:
        (tmp_path / "channels").mkdir(exist_ok=True)
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "config" / "junction.yaml").write_text(
            (ROOT / "config" / "junction.yaml").read_text(encoding="utf-8"), encoding="utf-8"
        )
        for name, text in channels.items():
            (tmp_path / "channels" / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
        return tmp_path

    return make


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite golden files from actual output.")
