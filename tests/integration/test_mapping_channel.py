"""A channel with the ``mapping`` transform: DFT^P03 supply lines become SupplyUsage JSON,
and a high-cost item that cannot be billed is an EXCEPTION until the item master is fixed."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

from engine.core.message import Status
from engine.core.store import MessageQuery
from engine.testing.peers import EngineThread, HttpPeer, mllp_exchange, msa

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CHANNEL = """
    name: usage-in
    source: {type: mllp, listen: "127.0.0.1:0", ack_mode: after_processing}
    pipeline:
      datatype: hl7v2
      filter: {field: MSH-9.1, in: [DFT]}
      transform: {type: mapping, file: mappings/dft-to-supply-usage.yaml}
    destinations:
      - {name: erp-inventory, type: http, url: "${ERP_URL}/inventory/issues"}
    alerts:
      webhook: {type: http, url: "${ERP_URL}/alerts"}
"""


def dft(control_id: str, item: str) -> bytes:
    return (
        f"MSH|^~\\&|OR|GH|JUNCTION|ERP|20261122101500||DFT^P03|{control_id}|P|2.5\r"
        "PID|1||MRN77^^^GH^MR||TESTPATIENT^EPSILON\r"
        "PV1|1|I|OR^05^^GH||||||||||||||||ENC77\r"
        f"FT1|1|||20261122101000|20261122101500|CG|{item}|||1|||ORSURG\r"
    ).encode()


def test_mapped_usage_is_delivered_and_unbillable_high_cost_items_are_exceptions(
    make_project,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    project: Path = make_project({"usage-in": CHANNEL})
    shutil.copytree(ROOT / "mappings", project / "mappings")
    with HttpPeer() as erp:
        monkeypatch.setenv("ERP_URL", erp.url)
        with EngineThread(project) as running:
            _, port = running.address("usage-in")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                good = msa(mllp_exchange(sock, dft("U1", "SUP-100234")))
                bad = mllp_exchange(sock, dft("U2", "SUP-200311"))  # high cost, no charge code
            deadline = time.monotonic() + 10
            while len(erp.snapshot()) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            alerts = [json.loads(r.body) for r in erp.snapshot() if r.path == "/alerts"]
            store = running.engine.store
            (exception,) = running.run(store.search(MessageQuery(channel="usage-in", status=Status.EXCEPTION)))
            # Fix the reference data, redeploy (tables reload), reprocess: now it is delivered.
            table = project / "mappings" / "tables" / "item_master.csv"
            table.write_text(
                table.read_text(encoding="utf-8").replace(",,C1776", ",C-278-2002,C1776"), encoding="utf-8"
            )
            running.run(running.engine.act("usage-in", "redeploy"))
            running.run(running.engine.reprocess(exception.id))
            deadline = time.monotonic() + 10
            while len(erp.snapshot()) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
    assert good == ("AA", "U1")
    (alert,) = alerts
    assert alert["event"] == "exception"
    assert alert["rule"] == "high-cost-needs-charge-code"
    assert alert["message_id"] == exception.id
    assert "TESTPATIENT" not in json.dumps(alert)
    assert "MRN77" not in json.dumps(alert)
    assert msa(bad)[0] == "AE"
    assert b"high-cost-needs-charge-code" in bad
    assert "high-cost-needs-charge-code" in exception.error
    first, second = (json.loads(r.body) for r in erp.snapshot() if r.path == "/inventory/issues")
    assert first[0]["item"] == {"type": "buyer_item", "value": "SUP-100234"}
    assert first[0]["charge_code"] == "C-278-1001"
    assert first[0]["cost_centre"] == "CC-4410"
    assert "TESTPATIENT" not in json.dumps(first)  # supply objects carry no patient names
    assert second[0]["charge_code"] == "C-278-2002"
