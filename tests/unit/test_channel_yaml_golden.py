"""Bad channel YAML gives file:line:col errors with expected/found and did-you-mean hints.

Golden files: ``tests/golden/channels/NAME.yaml`` with ``NAME.expected``; run
``pytest --update-golden`` to rewrite the expected text, then review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core.errors import ConfigError
from engine.core.loader import load_channel

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "channels"
CASES = sorted(GOLDEN.glob("*.yaml"))


def _errors(path: Path) -> str:
    try:
        load_channel(path.relative_to(GOLDEN.parents[2]))
    except ConfigError as exc:
        return "\n".join(str(d) for d in exc.diagnostics) + "\n"
    return ""


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOLDEN.parents[2])
    for name in list(os.environ):
        if name.startswith("JUNCTION_TEST_SURELY_UNSET"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_channel_errors_match_golden(case: Path, request: pytest.FixtureRequest) -> None:
    actual = _errors(case)
    expected_file = case.with_suffix(".expected")
    if request.config.getoption("--update-golden"):
        expected_file.write_text(actual, encoding="utf-8")
    assert actual, f"{case.name} should be rejected"
    assert actual == expected_file.read_text(encoding="utf-8")


def test_every_error_line_has_the_compiler_shape() -> None:
    for case in CASES:
        for line in _errors(case).splitlines():
            location, _, rest = line.partition(": error: ")
            file, line_no, col = location.rsplit(":", 2)
            assert file.endswith(case.name) and int(line_no) >= 1 and int(col) >= 1, line
            assert rest, line


def test_secret_values_are_never_echoed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    channel = tmp_path / "leaky.yaml"
    channel.write_text(
        "name: leaky\nsource: {type: mllp, listen: '127.0.0.1:1'}\npipeline: {datatype: hl7v2}\n"
        "destinations:\n  - name: erp\n    type: http\n    url: https://x.example\n    timeout_secs: ${SECRET_T}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("SECRET_T", "hunter2-not-a-number")
    with pytest.raises(ConfigError) as caught:
        load_channel(channel)
    assert "hunter2" not in str(caught.value)
    assert "a value taken from the environment" in str(caught.value)


def test_validate_command_exits_1_and_reports_every_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine", "validate", *[str(c) for c in CASES]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=GOLDEN.parents[2],
    )
    assert done.returncode == 1
    for case in CASES:
        assert case.name in done.stdout


def test_validate_command_accepts_the_shipped_channels() -> None:
    root = GOLDEN.parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "engine", "validate", "channels"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=root,
    )
    assert done.returncode == 0, done.stdout + done.stderr
