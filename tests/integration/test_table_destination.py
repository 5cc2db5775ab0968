"""A channel keeps a reference table up to date: an item-master drop replaces item_master,
the mapping channel sees it at once (no redeploy), an invalid or truncated drop changes nothing."""

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

USAGE = """
    name: usage-in
    source: {type: mllp, listen: "127.0.0.1:0", ack_mode: after_processing}
    pipeline:
      datatype: hl7v2
      transform: {type: mapping, file: mappings/dft-to-supply-usage.yaml}
    destinations:
      - {name: erp-inventory, type: http, url: "${ERP_URL}/inventory/issues"}
"""
DROP = """
    name: item-master-drop
    source: {type: mllp, listen: "127.0.0.1:0"}
    pipeline: {datatype: raw}
    destinations:
      - {name: item-master, type: table, table: item_master, retry: {max_attempts: 1}}
"""


def dft(control_id: str, item: str) -> bytes:
    return (
        f"MSH|^~\\&|OR|GH|JUNCTION|ERP|20261122101500||DFT^P03|{control_id}|P|2.5\r"
        "PID|1||MRN88^^^GH^MR||TESTPATIENT^ZETA\r"
        "PV1|1|I|OR^05^^GH||||||||||||||||ENC88\r"
        f"FT1|1|||20261122101000|20261122101500|CG|{item}|||1|||ORSURG\r"
    ).encode()


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_an_item_master_drop_updates_the_table_used_by_the_mapping(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    project: Path = make_project({"usage-in": USAGE, "item-master-drop": DROP})
    shutil.copytree(ROOT / "mappings", project / "mappings")
    table_file = project / "mappings" / "tables" / "item_master.csv"
    original = table_file.read_text(encoding="utf-8")
    with HttpPeer() as erp:
        monkeypatch.setenv("ERP_URL", erp.url)
        with EngineThread(project) as running:
            engine = running.engine
            drop = engine.channels["item-master-drop"]

            def destination_status(message_id: str) -> str:
                detail = running.run(engine.store.get(message_id))
                return str(detail.destinations[0].status) if detail and detail.destinations else ""

            _, port = running.address("usage-in")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                assert msa(mllp_exchange(sock, dft("T1", "SUP-200311")))[0] == "AE"  # no charge code yet
            (held,) = running.run(engine.store.search(MessageQuery(channel="usage-in", status=Status.EXCEPTION)))
            before = running.run(engine.tables())
            version_before = {t["name"]: t["version"] for t in before}["item_master"]

            # an invalid drop (duplicate item) fails with the line and keeps the table in use
            bad = running.run(drop.submit(b"item,description\nSUP-1,a\nSUP-1,b\n", {"file": "bad.csv"}))
            wait_for(lambda: destination_status(bad.message_id) == "ERROR")
            assert table_file.read_text(encoding="utf-8") == original
            error = running.run(engine.store.get(bad.message_id)).destinations[0].last_error
            assert "line 3" in error and "kept" in error

            # a truncated drop (header only) is refused by min_rows
            empty = running.run(drop.submit(original.splitlines()[0].encode() + b"\n", {"file": "empty.csv"}))
            wait_for(lambda: destination_status(empty.message_id) == "ERROR")
            assert table_file.read_text(encoding="utf-8") == original

            # the fixed drop replaces the table; the held usage goes through on reprocess
            fixed = original.replace(",,C1776", ",C-278-2002,C1776").encode()
            good = running.run(drop.submit(fixed, {"file": "item_master.csv"}))
            wait_for(lambda: destination_status(good.message_id) == "SENT")
            after = {t["name"]: t for t in running.run(engine.tables())}["item_master"]
            assert after["version"] != version_before and after["recorded"]["how"] == "load"
            assert table_file.read_bytes() == fixed
            running.run(engine.reprocess(held.id))
            wait_for(lambda: bool(erp.snapshot()))
    (delivered,) = erp.snapshot()
    assert json.loads(delivered.body)[0]["charge_code"] == "C-278-2002"
