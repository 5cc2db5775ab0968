"""The project's own checks, so the README's one test command runs all of them.

ruff (lint and format), import-linter (dependencies point inward: core imports nothing
else, plug-ins never import the runtime or each other) and mypy --strict on engine/core.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed; install the test extras: pip install -e '.[test]'")
    return found


def test_ruff_lint_is_clean() -> None:
    done = _run(_tool("ruff"), "check", "--output-format", "concise", "engine", "tests", "bench")
    assert done.returncode == 0, done.stdout[-4000:]


def test_ruff_format_is_clean() -> None:
    done = _run(_tool("ruff"), "format", "--check", "engine", "tests", "bench")
    assert done.returncode == 0, done.stdout[-4000:]


def test_import_layers_hold() -> None:
    done = _run(_tool("lint-imports"))
    assert done.returncode == 0, done.stdout[-4000:]


def test_core_is_mypy_strict() -> None:
    done = _run(sys.executable, "-m", "mypy", "engine/core")
    assert done.returncode == 0, done.stdout[-4000:]
