"""The EDI flows end to end in one engine: the ERP's purchase order goes out as an 850 on the
partner's route; the partner's 997 (generated here by Junction itself acting as the
supplier) comes back through a watched folder and reconciles the sent group; an 850 nobody
acknowledges raises the overdue alert once; the distributor's 855 reaches a real HTTP server
as a PurchaseOrderAck and a 997 is written back for it; a resent interchange is refused as a
duplicate with a TA1."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from engine.core.contracts import Outcome
from engine.datatypes.x12 import X12DataType
from engine.edi.reconcile import sent_groups
from engine.testing.peers import EngineThread, HttpPeer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "samples" / "json" / "purchase_order_bill_only_stent.json"

PO_OUT = """
    name: po-out
    source: {type: http, listen: "127.0.0.1:0"}
    pipeline: {datatype: json}
    destinations:
      - {name: acme-850, type: x12, partner: acme-medical, transaction: "850"}
"""
EDI_IN = """
    name: edi-in
    duplicates: {window_hours: 720}
    source:
      type: folder
      path: inbox
      glob: "*.edi"
      stable_secs: 0.1
      polling: true
      rescan_secs: 0.2
      response_dir: acks-out
      response_name: "{stem}.997"
    pipeline: {datatype: x12}
    destinations:
      - name: erp-po-acks
        type: http
        url: ${ERP_URL}/purchasing/acknowledgements
        transform: {type: mapping, file: mappings/x12-855-to-purchase-order-ack.yaml}
      - {name: reconcile-acks, type: x12-acks, filter: {field: ST01, in: ["997", "999"]}}
"""


def wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_po_out_ack_in_reconciled_overdue_alerted_and_855_in(make_project, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    project: Path = make_project({"po-out": PO_OUT, "edi-in": EDI_IN})
    shutil.copytree(ROOT / "mappings", project / "mappings")
    partners = project / "config" / "partners"
    partners.mkdir(parents=True)
    partner = (ROOT / "config" / "partners" / "acme-medical.yaml").read_text(encoding="utf-8")
    (partners / "acme-medical.yaml").write_text(partner, encoding="utf-8")
    outbox = project / "var" / "edi" / "out" / "acme-medical"
    inbox = project / "inbox"
    inbox.mkdir()
    caplog.set_level(logging.WARNING)
    with HttpPeer() as erp:
        monkeypatch.setenv("ERP_URL", erp.url)
        with EngineThread(project) as running:
            engine = running.engine
            po_out = engine.channels["po-out"]
            order = json.loads(PO.read_text(encoding="utf-8"))
            running.run(po_out.submit(json.dumps(order).encode(), {"peer": "127.0.0.1"}))
            second = {**order, "po_number": "PO-26-004418"}
            running.run(po_out.submit(json.dumps(second).encode(), {"peer": "127.0.0.1"}))
            sent = wait_for(lambda: sorted(outbox.glob("*")) if len(list(outbox.glob("*"))) >= 2 else None)
            first_850 = sent[0].read_bytes()
            po_doc = X12DataType().parse(first_850)
            assert po_doc.get("BEG03") in ("PO-26-004417", "PO-26-004418") and po_doc.get("ISA06") == "MERCYGENERAL"

            # The partner acknowledges the first 850 only (Junction plays the supplier here).
            ack = X12DataType().respond(first_850, Outcome("AA"))
            assert ack is not None and b"ST*997" in ack
            (inbox / "from-acme-1.edi").write_bytes(ack)
            store = engine.store

            def statuses() -> list[str]:
                return sorted(g.status for g in running.run(sent_groups(store, "acme-medical")))

            assert wait_for(lambda: statuses() == ["accepted", "pending"])

            # The other group is overdue once the partner's ack_timeout_minutes (240) have passed.
            x12_destination = po_out.destinations["acme-850"]
            later = time.time() + 241 * 60
            raised = running.run(x12_destination.check_overdue(now=later))
            again = running.run(x12_destination.check_overdue(now=later))
            assert len(raised) == 1 and again == []
            alerts = [r for r in caplog.records if r.getMessage() == "X12 group not acknowledged in time."]
            assert len(alerts) == 1

            # The distributor's 855 reaches the ERP as a PurchaseOrderAck, and a 997 goes back.
            po_ack = (ROOT / "samples" / "x12" / "855_5010_mixed_line_status.edi").read_bytes()
            # as Acme Medical sends it (ISA ids padded to 15, the ISA stays 106 wide)
            po_ack = po_ack.replace(b"MEDDISTCO      ", b"ACMEMEDICAL    ").replace(
                b"STMARYSHOSP    ", b"MERCYGENERAL   "
            )
            (inbox / "po-ack-1.edi").write_bytes(po_ack)
            delivered = wait_for(lambda: erp.snapshot())
            assert json.loads(delivered[0].body)["schema_version"] == "1.0"
            acks_out = project / "inbox" / "acks-out"
            answer = wait_for(lambda: (acks_out / "po-ack-1.997").is_file() and (acks_out / "po-ack-1.997"))
            ack_doc = X12DataType().parse(answer.read_bytes())
            assert ack_doc.get("AK901") == "A"
            # the 997 takes its ISA13 from the partner's counter: never one of the 850s' numbers
            sent_numbers = {X12DataType().parse(f.read_bytes()).get("ISA13") for f in sent}
            assert len(sent_numbers) == 2 and ack_doc.get("ISA13") not in sent_numbers
            assert 1 <= int(ack_doc.get("ISA13") or 0) <= 200  # from the block reserved at deploy

            # The same interchange sent again is refused as a duplicate: stored, answered with a TA1.
            (inbox / "po-ack-1-resent.edi").write_bytes(po_ack)
            resent = wait_for(lambda: (acks_out / "po-ack-1-resent.997").is_file() and acks_out / "po-ack-1-resent.997")
            ta1 = X12DataType().parse(resent.read_bytes())
            assert (ta1.get("TA104"), ta1.get("TA105")) == ("R", "025")
            time.sleep(0.3)
            assert len(erp.snapshot()) == 1, "the duplicate must not be processed again"
