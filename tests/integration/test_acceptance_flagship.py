"""Acceptance (issue 3): the flagship flow with an independent client and real servers.

python-hl7's ``mllp_send`` sends the DFT samples to the shipped ``or-implant-usage``
channel; two real HTTP servers stand in for the ERP and the RCM system. The high-cost item
without a charge code is an EXCEPTION with its rule name and raises an alert; after the
missing crosswalk row is loaded with ``junction table load``, ``junction message reprocess``
delivers it exactly once to each destination.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.testing.peers import EngineProcess, HttpPeer, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "hl7v2"


def mllp_send(port: int, sample: Path, work: Path) -> str:
    framed = work / (sample.name + ".mllp")
    framed.write_bytes(b"\x0b" + sample.read_bytes() + b"\x1c\r")
    script = shutil.which("mllp_send") or str(Path(sys.executable).with_name("mllp_send"))
    done = subprocess.run(
        ["timeout", "20", script, "-p", str(port), "-f", str(framed), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait(condition, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition(), "timed out"


def test_flagship_with_mllp_send_real_servers_alert_and_table_fix(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(ROOT / "mappings", project / "mappings")
    (project / "channels").mkdir()
    channel = (ROOT / "channels" / "or-implant-usage.yaml").read_text(encoding="utf-8")
    channel += 'alerts:\n  webhook: {type: http, url: "${ALERT_URL}"}\n'
    (project / "channels" / "or-implant-usage.yaml").write_text(channel, encoding="utf-8")
    port = free_port()
    with HttpPeer() as erp, HttpPeer() as rcm:
        env = {
            "OR_USAGE_LISTEN": f"127.0.0.1:{port}",
            "ERP_INVENTORY_URL": erp.url + "/inventory/issues",
            "RCM_CHARGES_URL": rcm.url + "/charges",
            "ALERT_URL": erp.url + "/alerts",
        }
        engine = EngineProcess(project, env).start()
        try:
            engine.address("or-implant-usage")
            cli = engine.cli

            mixed = mllp_send(port, SAMPLES / "dft_p03_or_implant_mixed.hl7", tmp_path)
            unbillable = mllp_send(port, SAMPLES / "dft_p03_or_implant_no_charge_code.hl7", tmp_path)
            assert "MSA|AA|" in mixed
            assert "MSA|AE|" in unbillable
            wait(
                lambda: (
                    any(r.path == "/inventory/issues" for r in erp.snapshot())
                    and rcm.snapshot()
                    and any(r.path == "/alerts" for r in erp.snapshot())
                )
            )
            usage = [json.loads(r.body) for r in erp.snapshot() if r.path == "/inventory/issues"]
            charges = [json.loads(r.body) for r in rcm.snapshot()]
            (alert,) = [json.loads(r.body) for r in erp.snapshot() if r.path == "/alerts"]
            assert len(usage) == 1
            assert len(charges) == 1
            expected_usage = json.loads(
                (
                    ROOT
                    / "tests"
                    / "golden"
                    / "mapped"
                    / "dft-to-supply-usage"
                    / "samples"
                    / "dft_p03_or_implant_mixed.json"
                ).read_text(encoding="utf-8")
            )
            expected_charges = json.loads(
                (
                    ROOT
                    / "tests"
                    / "golden"
                    / "mapped"
                    / "dft-to-charge-event"
                    / "samples"
                    / "dft_p03_or_implant_mixed.json"
                ).read_text(encoding="utf-8")
            )
            assert usage[0] == expected_usage
            assert charges[0] == expected_charges
            assert alert["rule"] in ("high-cost-needs-charge-code", "chargeable-needs-charge-code")

            (held,) = json.loads(cli("message", "list", "--status", "exception", "--json").stdout)
            assert alert["message_id"] == held["id"]
            assert alert["rule"] in held["error"]

            # Load the missing crosswalk row, then reprocess: once to each destination.
            table = project / "mappings" / "tables" / "item_master.csv"
            with table.open(encoding="utf-8", newline="") as handle:
                rows = list(csv.DictReader(handle))
            for row in rows:
                if row["item"] == "SUP-200311":
                    row["charge_code"] = "C-278-2002"
            fixed = tmp_path / "item_master.csv"
            with fixed.open("w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            loaded = cli("table", "load", "item_master", str(fixed))
            assert loaded.returncode == 0, loaded.stderr
            assert cli("message", "reprocess", held["id"]).returncode == 0
            wait(
                lambda: (
                    len([r for r in erp.snapshot() if r.path == "/inventory/issues"]) == 2 and len(rcm.snapshot()) == 2
                )
            )
            time.sleep(0.5)  # nothing more may arrive
            ids = [r.headers["X-Junction-Message-Id"] for r in erp.snapshot() if r.path == "/inventory/issues"]
            assert ids.count(held["id"]) == 1
            assert [r.headers["X-Junction-Message-Id"] for r in rcm.snapshot()].count(held["id"]) == 1
            erp_request = next(
                r
                for r in erp.snapshot()
                if r.headers.get("X-Junction-Message-Id") == held["id"] and r.path == "/inventory/issues"
            )
            rcm_request = next(r for r in rcm.snapshot() if r.headers["X-Junction-Message-Id"] == held["id"])
            assert erp_request.headers["X-Junction-Correlation-Id"] == rcm_request.headers["X-Junction-Correlation-Id"]
        finally:
            engine.stop()
