"""The x12 destination against a real SQLite store and a real file route in a temp folder."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from engine.core import registry
from engine.core.errors import PermanentError, RetryableError
from engine.core.logs import bind
from engine.core.message import Outbound
from engine.datatypes.x12 import X12Config, X12DataType
from engine.edi.reconcile import sent_groups
from engine.edi.x12out import X12Destination, X12DestinationConfig
from engine.store.sqlite import SqliteStore, SqliteStoreConfig
from engine.testing.peers import EngineThread

pytestmark = pytest.mark.integration

STRICT = X12DataType(X12Config(type="x12", strict_isa_width=True))
LOG = bind(logging.getLogger("junction.test.x12out"), channel="po-out")

PARTNER = """\
name: acme
us: {isa_qualifier: ZZ, isa_id: MERCY, gs_id: MERCYGEN}
them: {isa_qualifier: "01", isa_id: "987654321", gs_id: ACMEMED}
version: "005010"
usage: T
delimiters: {element: "|", component: ">", repetition: "^", segment: "~", line_break: crlf}
acks: {expect: "999", ta1: true, ack_timeout_minutes: 30}
route:
  type: file
  directory: out/acme
  filename: "{control_id}-{message_id}.{ext}"
"""


def order(po: str, lines: int = 1) -> dict[str, Any]:
    return {
        "po_number": po,
        "order_type": "stock",
        "order_date": "2026-03-01",
        "buyer": {"name": "Mercy", "ids": [{"type": "gln", "value": "0614141000012"}]},
        "supplier": {"name": "Acme"},
        "ship_to": {"name": "Dock", "ids": [{"type": "gln", "value": "0614141000029"}]},
        "lines": [
            {
                "line_number": str(n),
                "item": {"identifiers": [{"type": "vendor_part", "value": f"AC-{n}"}]},
                "quantity": n,
                "uom": "EA",
            }
            for n in range(1, lines + 1)
        ],
    }


def outbound(message_id: str, content: Any, attempt: int = 1) -> Outbound:
    return Outbound(
        message_id=message_id,
        channel="po-out",
        destination="acme-po",
        correlation_id=message_id,
        content=json.dumps(content).encode() if not isinstance(content, bytes) else content,
        content_type="application/json",
        attempt=attempt,
    )


def project(tmp_path: Path) -> Path:
    folder = tmp_path / "config" / "partners"
    folder.mkdir(parents=True)
    (folder / "acme.yaml").write_text(textwrap.dedent(PARTNER), encoding="utf-8")
    return tmp_path


async def with_destination(root: Path, body: Any, **config: Any) -> Any:
    store = SqliteStore(SqliteStoreConfig(path="db/junction.db"), root)
    await store.open()
    settings = X12DestinationConfig(type="x12", name="acme-po", partner="acme", transaction="850", **config)
    factory = registry.get("destination", "x12").load_factory()
    dest = factory(settings, channel="po-out", base_dir=root, log=LOG, store=store)
    await dest.open()
    try:
        assert dest.problem is None, dest.problem
        return await body(dest, store)
    finally:
        await dest.close()
        await store.close()


def files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "out" / "acme").glob("*.x12"))}


def test_delivers_enveloped_interchanges_and_a_retry_is_identical(tmp_path: Path) -> None:
    root = project(tmp_path)

    async def body(dest: X12Destination, store: SqliteStore) -> None:
        first = await dest.send(outbound("m1", order("PO-1")))
        await dest.flush()
        assert first.detail.startswith("ISA13 000000001 GS06 1 to acme; out/acme/000000001-m1.x12")
        before = files(root)
        retry = await dest.send(outbound("m1", order("PO-1"), attempt=2))
        await dest.flush()
        assert retry.detail == first.detail and files(root) == before  # same name, same bytes
        # A list becomes several transaction sets in one group; new numbers for a new message.
        await dest.send(outbound("m2", [order("PO-2", lines=2), order("PO-3")]))
        await dest.flush()
        groups = await sent_groups(store, "acme")
        assert [(g.isa13, g.gs06, g.st02, g.message_id, g.status) for g in groups] == [
            (1, 1, [1], "m1", "pending"),
            (2, 2, [2, 3], "m2", "pending"),
        ]

    asyncio.run(with_destination(root, body))
    written = files(root)
    assert list(written) == ["000000001-m1.x12", "000000002-m2.x12"]
    doc = STRICT.parse(written["000000002-m2.x12"])
    assert doc.warnings == []
    assert (
        doc.get("ISA05") == "ZZ"
        and doc.get("ISA07") == "01"
        and doc.get("ISA06") == "MERCY"
        and doc.get("ISA08") == "987654321"
    )
    assert doc.get("ISA11") == "^" and doc.get("ISA12") == "00501" and doc.get("ISA14") == "1"
    assert doc.get("ISA15") == "T" and doc.get("ISA13") == "000000002"
    assert doc.get("GS02") == "MERCYGEN" and doc.get("GS03") == "ACMEMED" and doc.get("GS06") == "2"
    assert doc.get_all("ST02") == ["0002", "0003"] and doc.get_all("BEG03") == ["PO-2", "PO-3"]
    assert doc.get_all("PO1/PO107") == ["AC-1", "AC-2", "AC-1"]
    text = written["000000002-m2.x12"].decode()
    assert "~\r\nGS|" in text and text.count("\r\n") == text.count("~")

    # After a restart the numbers continue, and the first message still retries identically.
    async def later(dest: X12Destination, store: SqliteStore) -> None:
        again = await dest.send(outbound("m1", order("PO-1"), attempt=3))
        assert again.detail.startswith("ISA13 000000001 ")
        fresh = await dest.send(outbound("m3", order("PO-4")))
        assert fresh.detail.startswith("ISA13 000000003 GS06 3 ")

    asyncio.run(with_destination(root, later))
    assert files(root)["000000001-m1.x12"] == written["000000001-m1.x12"]


def test_reprocessed_message_with_new_content_gets_new_numbers(tmp_path: Path) -> None:
    root = project(tmp_path)

    async def body(dest: X12Destination, store: SqliteStore) -> tuple[str, str]:
        one = await dest.send(outbound("m1", order("PO-1")))
        two = await dest.send(outbound("m1", order("PO-1", lines=2)))
        return one.detail, two.detail

    one, two = asyncio.run(with_destination(root, body))
    assert one.startswith("ISA13 000000001 ") and two.startswith("ISA13 000000002 ")


def test_bad_content_is_permanent_and_uses_no_numbers(tmp_path: Path) -> None:
    root = project(tmp_path)

    async def body(dest: X12Destination, store: SqliteStore) -> None:
        with pytest.raises(PermanentError, match="not JSON"):
            await dest.send(outbound("m1", b"PID|1||SECRET-MRN"))
        with pytest.raises(PermanentError) as caught:
            await dest.send(outbound("m2", [order("PO-1"), {"po_number": "SECRET-PO"}]))
        assert "object 2: not a valid PurchaseOrder" in str(caught.value) and "SECRET" not in str(caught.value)
        bad_id = order("PO|1")  # the partner's element separator inside an identifier
        with pytest.raises(PermanentError, match=r"segment 4 \(BEG\), element 03 holds a delimiter"):
            await dest.send(outbound("m3", bad_id))
        with pytest.raises(PermanentError, match="empty list"):
            await dest.send(outbound("m4", []))
        assert await store.get_values("edi:control:") == {}
        ok = await dest.send(outbound("m5", order("PO-5")))
        assert ok.detail.startswith("ISA13 000000001 ")

    asyncio.run(with_destination(root, body))


def test_problems_hold_the_queue_instead_of_crashing(tmp_path: Path) -> None:
    root = project(tmp_path)
    settings = X12DestinationConfig.model_validate(
        {"type": "x12", "name": "acme-po", "partner": "nobody", "transaction": "850"}
    )
    missing = X12Destination(settings, channel="po-out", base_dir=root, log=LOG, store=None)
    assert missing.problem == "partner file nobody.yaml not found in config/partners"
    with pytest.raises(RetryableError, match="not found"):
        asyncio.run(missing.send(outbound("m1", order("PO-1"))))
    no_store = X12Destination(settings.model_copy(update={"partner": "acme"}), channel="c", base_dir=root, log=LOG)
    assert no_store.problem is not None and "message store" in no_store.problem
    (root / "config" / "partners" / "broken.yaml").write_text("name: broken\nusage: T\n", encoding="utf-8")
    broken = X12Destination(settings.model_copy(update={"partner": "broken"}), channel="c", base_dir=root, log=LOG)
    assert broken.problem is not None and "broken.yaml:" in broken.problem and "required field" in broken.problem


CHANNEL = """\
name: po-out
source:
  type: folder
  path: inbox
  glob: "*.json"
  stable_secs: 0.1
  polling: true
  rescan_secs: 0.2
pipeline:
  datatype: json
  transform: passthrough
destinations:
  - type: x12
    name: acme-po
    partner: acme
    transaction: "850"
    retry: {max_attempts: 3, backoff_secs: 0.1}
"""


def test_a_channel_turns_canonical_orders_into_850_files(make_project: Any) -> None:
    root = make_project({"po-out": CHANNEL})
    (root / "config" / "partners").mkdir(parents=True)
    (root / "config" / "partners" / "acme.yaml").write_text(textwrap.dedent(PARTNER), encoding="utf-8")
    inbox = root / "inbox"
    inbox.mkdir()
    (inbox / "po-1.json").write_text(json.dumps(order("PO-E2E", lines=3)), encoding="utf-8")
    with EngineThread(root):
        deadline = time.monotonic() + 20
        while not files(root) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the output folder, bounded by the deadline
        written = files(root)
    assert len(written) == 1, "no interchange was written within 20 s"
    doc = STRICT.parse(next(iter(written.values())))
    assert doc.get("BEG03") == "PO-E2E" and doc.get_all("PO1/PO102") == ["1", "2", "3"]
    assert doc.get("ISA13") == "000000001" and doc.get("CTT01") == "3"
