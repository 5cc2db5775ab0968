"""The README's two set-up commands work from a clean clone.

Command 1 (install and run the engine with the sample channels) runs here for real, in a
fresh virtual environment on a ``git clone`` of this repository; a sample is sent with the
CLI and found in the store. Command 2 (install and run the tests) is what ``.ci/run``
executes, so this test checks that CI calls it verbatim.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engine.testing.peers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n\s*(.+?)\n\s*```", quick)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_second() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert commands[0].endswith("junction run")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()


def test_first_command_runs_the_sample_channels_from_a_clean_clone(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    venv = tmp_path / "venv"
    # System site packages stand in for a warm pip cache; pip still builds and installs the project.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "JUNCTION_API_LISTEN": f"127.0.0.1:{free_port()}",
        "EHR_ADT_LISTEN": f"127.0.0.1:{free_port()}",
        "OR_USAGE_LISTEN": f"127.0.0.1:{free_port()}",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("JUNCTION_API_TOKEN", None)
    env.pop("ERP_BASE_URL", None)
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        ["sh", "-c", readme_commands()[0]],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        api = "http://" + env["JUNCTION_API_LISTEN"]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "run.log").read_text(errors="replace")[-3000:]
            try:
                with urllib.request.urlopen(api + "/healthz", timeout=2):
                    break
            except OSError:
                time.sleep(0.25)
        else:
            raise AssertionError("the engine did not come up: " + (tmp_path / "run.log").read_text()[-3000:])
        junction = str(venv / "bin" / "junction")
        sample = str(clone / "samples" / "hl7v2" / "adt_a01_admit.hl7")
        sent = subprocess.run(
            [junction, "send", "mllp", env["EHR_ADT_LISTEN"], sample],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert ": AA" in sent.stdout
        listed = subprocess.run(
            [junction, "message", "list", "--json"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        (stored,) = json.loads(listed.stdout)
        assert stored["channel"] == "ehr-adt-in"
        status = subprocess.run(
            [junction, "channel", "status", "ehr-adt-in"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "url is not configured" in status.stdout  # ERP_BASE_URL unset: reported, not crashed on
        deadline = time.monotonic() + 20
        while not list((clone / "var" / "out" / "ehr-adt-in").glob("*.hl7")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list((clone / "var" / "out" / "ehr-adt-in").glob("*.hl7"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
