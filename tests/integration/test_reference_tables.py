"""Reference tables: listed, shown, loaded and reloaded without a restart, versions kept
in the store; an invalid table changes nothing; a fixed table lets an EXCEPTION through."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

from engine.testing.peers import EngineProcess, HttpPeer, mllp_exchange, msa

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CHANNEL = """
    name: usage-in
    source: {type: mllp, listen: "127.0.0.1:0", ack_mode: after_processing}
    pipeline:
      datatype: hl7v2
      transform: {type: mapping, file: mappings/dft-to-supply-usage.yaml}
    destinations:
      - {name: erp-inventory, type: http, url: "${ERP_URL}/inventory/issues"}
"""


def dft(control_id: str, item: str) -> bytes:
    return (
        f"MSH|^~\\&|OR|GH|JUNCTION|ERP|20261122101500||DFT^P03|{control_id}|P|2.5\r"
        "PID|1||MRN88^^^GH^MR||TESTPATIENT^ZETA\r"
        "PV1|1|I|OR^05^^GH||||||||||||||||ENC88\r"
        f"FT1|1|||20261122101000|20261122101500|CG|{item}|||1|||ORSURG\r"
    ).encode()


def test_tables_load_and_reload_without_restart(make_project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project: Path = make_project({"usage-in": CHANNEL})
    shutil.copytree(ROOT / "mappings", project / "mappings")
    with HttpPeer() as erp:
        engine = EngineProcess(project, {"ERP_URL": erp.url}).start()
        try:
            cli = engine.cli

            listed = {t["name"]: t for t in json.loads(cli("table", "list", "--json").stdout)}
            csv_lines = (project / "mappings" / "tables" / "item_master.csv").read_text(encoding="utf-8").splitlines()
            assert listed["item_master"]["rows"] == len([line for line in csv_lines if line.startswith("SUP-")])
            before = listed["item_master"]["version"]

            _, port = engine.address("usage-in")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                assert msa(mllp_exchange(sock, dft("T1", "SUP-200311")))[0] == "AE"  # no charge code yet
            (held,) = engine.call("GET", "/api/messages?channel=usage-in&status=EXCEPTION")

            bad = tmp_path / "bad.csv"
            bad.write_text("item,description\nSUP-1,a\nSUP-1,b\n", encoding="utf-8")
            refused = cli("table", "load", "item_master", str(bad))
            assert refused.returncode == 1
            assert "item_master.csv:3:1" in refused.stderr  # the problem, with its line
            assert json.loads(cli("table", "show", "item_master", "--json").stdout)["version"] == before
            assert "SUP-200311" in (project / "mappings" / "tables" / "item_master.csv").read_text()

            fixed = tmp_path / "fixed.csv"
            original = (project / "mappings" / "tables" / "item_master.csv").read_text(encoding="utf-8")
            fixed.write_text(original.replace(",,C1776", ",C-278-2002,C1776"), encoding="utf-8")
            loaded = cli("table", "load", "item_master", str(fixed))
            assert loaded.returncode == 0, loaded.stderr
            assert "in use" in loaded.stdout
            after = {t["name"]: t for t in json.loads(cli("table", "list", "--json").stdout)}["item_master"]
            assert after["version"] != before
            assert after["recorded"]["version"] == after["version"]  # kept in the store

            assert cli("message", "reprocess", held["id"]).returncode == 0  # no redeploy, no restart
            deadline = time.monotonic() + 10
            while not erp.snapshot() and time.monotonic() < deadline:
                time.sleep(0.05)
            (delivered,) = erp.snapshot()
            assert json.loads(delivered.body)[0]["charge_code"] == "C-278-2002"
            reloaded = cli("table", "reload")
            assert reloaded.returncode == 0
            assert "item_master: version" in reloaded.stdout
        finally:
            engine.stop()
