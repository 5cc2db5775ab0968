"""Acceptance: python-hl7's ``mllp_send`` (a client nobody here wrote) against a running engine.

Every file gets a well-formed ACK (AA for valid messages, AR/AE with a reason for malformed
ones) and every message is stored and found with ``junction message list --json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.testing.peers import EngineProcess

pytestmark = pytest.mark.integration

CHANNEL = """
    name: corpus-in
    source:
      type: mllp
      listen: 127.0.0.1:0
    pipeline:
      datatype: hl7v2
    destinations:
      - name: archive
        type: file
        directory: var/out/corpus
"""

MALFORMED = {"malformed_missing_msh9_cdc.hl7", "malformed_broken_line.hl7"}


def _mllp_send_path() -> str:
    found = shutil.which("mllp_send") or str(Path(sys.executable).with_name("mllp_send"))
    assert Path(found).exists(), "python-hl7's mllp_send script is not installed"
    return found


def _send_file(path: Path, port: int, work: Path) -> str:
    """Frame the whole file as one MLLP message (batches are split by the engine) and send it."""
    framed = work / (path.name + ".mllp")
    framed.write_bytes(b"\x0b" + path.read_bytes() + b"\x1c\r")
    done = subprocess.run(
        ["timeout", "20", _mllp_send_path(), "-p", str(port), "-f", str(framed), "127.0.0.1"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"mllp_send failed for {path.name}: {done.stderr.decode(errors='replace')[-500:]}"
    return done.stdout.decode("utf-8", errors="replace")


def _check_ack(name: str, output: str) -> str:
    segments = re.split(r"[\r\n]+", output.strip("\x0b\x1c\r\n "))
    msh = next((s for s in segments if "MSH" in s), "")
    msa = next((s for s in segments if s.startswith("MSA") or "MSA|" in s), "")
    assert msh and msa, f"{name}: the response is not an HL7 ACK: {output[:200]!r}"
    fields = msa[msa.index("MSA") :].split("|")
    code = fields[1]
    if name in MALFORMED:
        assert code in ("AR", "AE"), f"{name}: expected a negative ACK, got {code}"
        assert len(fields) > 3 and fields[3], f"{name}: a negative ACK must carry a reason in MSA-3"
        assert any(s.startswith("ERR") for s in segments), f"{name}: a negative ACK must carry an ERR segment"
    else:
        assert code == "AA", f"{name}: expected AA, got {code} ({'|'.join(fields[2:4])})"
    return code


def _run(files: list[Path], make_project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = make_project({"corpus-in": CHANNEL})
    with EngineProcess(project) as engine:
        _, port = engine.address("corpus-in")
        codes = {f.name: _check_ack(f.name, _send_file(f, port, tmp_path)) for f in files}
        listing = subprocess.run(
            [
                sys.executable,
                "-m",
                "engine",
                "--project",
                str(project),
                "message",
                "list",
                "--channel",
                "corpus-in",
                "--limit",
                "10000",
                "--json",
            ],
            capture_output=True,
            timeout=60,
            check=True,
            env={**os.environ, "JUNCTION_API": engine.api, "JUNCTION_API_TOKEN": engine.token},
        )
        stored = json.loads(listing.stdout)
    # One stored message per MSH segment in every file (batch files hold several).
    expected = sum(max(1, _count_msh(f)) for f in files)
    assert len(stored) == expected, f"stored {len(stored)} messages for {expected} sent"
    errors = [m for m in stored if m["status"] == "ERROR"]
    assert len(errors) == sum(1 for name in codes if name in MALFORMED), [m["error"] for m in errors]
    assert all(m["error"] for m in errors), "a refused message must keep its reason"
    assert all(m["source"].get("peer", "").startswith("127.0.0.1:") for m in stored)


def _count_msh(path: Path) -> int:
    text = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return sum(1 for line in text.split(b"\n") if line.lstrip(b"\xef\xbb\xbf").startswith(b"MSH"))


def test_corpus_files_get_acks_and_are_stored(corpus: Path, make_project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _run(sorted((corpus / "hl7v2").glob("*.hl7")), make_project, tmp_path)


def test_sample_files_get_acks_and_are_stored(make_project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    samples = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
    _run(sorted(samples.glob("*.hl7")), make_project, tmp_path)
