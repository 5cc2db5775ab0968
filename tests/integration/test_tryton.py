"""The ``tryton`` destination and source against a real Tryton 8.2 server.

One Tryton database (purchase, stock, stock_lot, account_invoice, with a company, chart of
accounts and fiscal year) is built per session by ``engine.testing.tryton.TrytonServer``
and served on a free port; every result is read back from Tryton over its own JSON-RPC API,
not from Junction. Each test uses its own product codes, so tests do not depend on order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.connectors.tryton import TrytonDestinationConfig
from engine.connectors.tryton.destination import TrytonDestination
from engine.connectors.tryton.source import TrytonSource
from engine.core.errors import PermanentError, RetryableError
from engine.core.logs import bind
from engine.core.message import Outbound, new_id
from engine.testing.peers import EngineThread, MllpPeer
from engine.testing.tryton import TrytonServer, tryton_available

pytestmark = pytest.mark.integration

TODAY = dt.date.today()


@pytest.fixture(scope="module")
def tryton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytonServer]:
    reason = tryton_available()
    if reason:
        pytest.skip(reason)
    server = TrytonServer(tmp_path_factory.mktemp("tryton"))
    with server:
        yield server


# -- test data, written through Tryton's API ---------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8].upper()}"


def first_id(tryton: TrytonServer, model: str, domain: list[Any]) -> int:
    (found,) = tryton.model(model, "search", domain, 0, 1, None)
    return int(found)


def unit_id(tryton: TrytonServer) -> int:
    return first_id(tryton, "product.uom", [["symbol", "=", "u"]])


def make_product(tryton: TrytonServer, code: str, name: str) -> int:
    category = first_id(tryton, "product.category", [["name", "=", "Medical supplies"]])
    unit = unit_id(tryton)
    tryton.model(
        "product.template",
        "create",
        [
            {
                "name": name,
                "code": code,
                "type": "goods",
                "default_uom": unit,
                "purchase_uom": unit,
                "purchasable": True,
                "account_category": category,
                "products": [["create", [{}]]],
            }
        ],
    )
    return first_id(tryton, "product.product", [["code", "=", code]])


def make_storage(tryton: TrytonServer, code: str) -> int:
    parent = first_id(tryton, "stock.location", [["code", "=", "STO"]])
    (location,) = tryton.model(
        "stock.location", "create", [{"name": f"OR storage {code}", "code": code, "type": "storage", "parent": parent}]
    )
    return int(location)


def stock_in(tryton: TrytonServer, location: int, product: int, quantity: int) -> None:
    """Put stock on hand with a confirmed inventory (no moves without origin)."""
    (inventory,) = tryton.model(
        "stock.inventory",
        "create",
        [{"location": location, "lines": [["create", [{"product": product, "quantity": quantity}]]]}],
    )
    tryton.model("stock.inventory", "confirm", [inventory])


def on_hand(tryton: TrytonServer, product: int, location: int) -> float:
    (row,) = tryton.model(
        "product.product", "read", [product], ["quantity"], context={"locations": [location], "stock_date_end": TODAY}
    )
    return float(row["quantity"])


# -- the destination, driven directly ------------------------------------------------------------


def destination(tryton: TrytonServer, flow: str, **settings: Any) -> TrytonDestination:
    data: dict[str, Any] = {
        "type": "tryton",
        "name": "erp",
        "url": tryton.url,
        "database": tryton.database,
        "username": settings.pop("username", tryton.username),
        "password": settings.pop("password", tryton.password),
        "flow": flow,
        **settings,
    }
    config = TrytonDestinationConfig.model_validate(data)
    return TrytonDestination(config, channel="tryton-test", base_dir=Path("."), log=bind(logging.getLogger("test")))


def send(dest: TrytonDestination, content: Any, message_id: str | None = None, attempt: int = 1) -> Any:
    outbound = Outbound(
        message_id=message_id or new_id(),
        channel="tryton-test",
        destination="erp",
        correlation_id="c",
        content=json.dumps(content).encode(),
        content_type="application/json",
        attempt=attempt,
    )

    async def run() -> Any:
        await dest.open()
        try:
            return await dest.send(outbound)
        finally:
            await dest.close()

    return asyncio.run(run())


def usage(code: str, quantity: str, lot: str | None = "LOT-A1") -> dict[str, Any]:
    return {
        "usage_id": "U1",
        "encounter": {"encounter_id": "ENC1"},
        "item": {"type": "buyer_item", "value": code},
        "quantity": quantity,
        "uom": "EA",
        "lot": lot,
        "location": "OR-05",
        "used_at": f"{TODAY.isoformat()}T10:15:00+00:00",
    }


def test_stock_usage_is_a_done_move_with_lot_that_lowers_on_hand_and_a_retry_adds_nothing(
    tryton: TrytonServer,
) -> None:
    code, storage_code = unique("IMPL"), unique("OR")
    product = make_product(tryton, code, "Hip stem")
    storage = make_storage(tryton, storage_code)
    stock_in(tryton, storage, product, 10)
    assert on_hand(tryton, product, storage) == 10
    dest = destination(tryton, "stock-usage", stock_usage={"from_location": storage_code, "lot": "create"})
    message_id = new_id()

    first = send(dest, usage(code, "2"), message_id)
    again = send(dest, usage(code, "2"), message_id, attempt=2)  # a retry after a lost answer

    record = json.loads(first.response)
    assert json.loads(again.response)["id"] == record["id"]
    assert on_hand(tryton, product, storage) == 8
    moves = tryton.model(
        "stock.move",
        "search_read",
        [["product", "=", product], ["from_location", "=", storage]],
        0,
        None,
        None,
        ["state", "quantity", "lot.number", "to_location.type"],
    )
    assert len(moves) == 1
    (move,) = moves
    assert move["state"] == "done"
    assert move["quantity"] == 2
    assert move["lot."]["number"] == "LOT-A1"
    assert move["to_location."]["type"] == "lost_found"
    shipments = tryton.model(
        "stock.shipment.internal", "search", [["reference", "=", f"{message_id}:erp"]], 0, None, None
    )
    assert shipments == [record["id"]]


def test_a_shipment_left_in_draft_by_a_crash_is_finished_not_duplicated(tryton: TrytonServer) -> None:
    code, storage_code = unique("IMPL"), unique("OR")
    product = make_product(tryton, code, "Bone screw")
    storage = make_storage(tryton, storage_code)
    stock_in(tryton, storage, product, 5)
    lost = first_id(tryton, "stock.location", [["type", "=", "lost_found"]])
    message_id = new_id()
    # What a crash right after the create call leaves behind: the shipment, still draft.
    move = {"product": product, "unit": unit_id(tryton), "quantity": 1.0, "from_location": storage, "to_location": lost}
    (draft,) = tryton.model(
        "stock.shipment.internal",
        "create",
        [
            {
                "reference": f"{message_id}:erp",
                "from_location": storage,
                "to_location": lost,
                "moves": [["create", [move]]],
            }
        ],
    )
    dest = destination(tryton, "stock-usage", stock_usage={"from_location": storage_code})

    result = send(dest, usage(code, "1", lot=None), message_id, attempt=2)

    assert json.loads(result.response)["id"] == draft
    (row,) = tryton.model("stock.shipment.internal", "read", [draft], ["state"])
    assert row["state"] == "done"
    assert on_hand(tryton, product, storage) == 4


def test_a_list_of_usages_with_a_return_moves_stock_both_ways_once(tryton: TrytonServer) -> None:
    code, other, storage_code = unique("IMPL"), unique("IMPL"), unique("OR")
    product = make_product(tryton, code, "Cortical screw")
    second = make_product(tryton, other, "Plate")
    storage = make_storage(tryton, storage_code)
    stock_in(tryton, storage, product, 10)
    stock_in(tryton, storage, second, 4)
    dest = destination(tryton, "stock-usage", stock_usage={"from_location": storage_code})
    message_id = new_id()
    content = [usage(code, "3"), usage(other, "1", lot="LOT-P"), usage(code, "-1", lot=None)]

    record = json.loads(send(dest, content, message_id).response)
    send(dest, content, message_id, attempt=2)

    assert (on_hand(tryton, product, storage), on_hand(tryton, second, storage)) == (8, 3)
    assert len(record["moves"]) == 2
    returned = tryton.model(
        "stock.shipment.internal", "search_read", [["reference", "=", f"{message_id}:erp/return"]], 0, None, None,
        ["state", "to_location"],
    )  # fmt: skip
    assert [(r["id"], r["state"], r["to_location"]) for r in returned] == [(record["return_shipment"], "done", storage)]


def test_unknown_product_code_fails_permanently_with_trytons_reason(tryton: TrytonServer) -> None:
    storage_code = unique("OR")
    make_storage(tryton, storage_code)
    dest = destination(tryton, "stock-usage", stock_usage={"from_location": storage_code})
    with pytest.raises(PermanentError, match="no active product with code 'NO-SUCH-ITEM'"):
        send(dest, usage("NO-SUCH-ITEM", "1"))
    with pytest.raises(PermanentError, match=r"item\.value: Field required"):
        send(dest, {**usage("X", "1"), "item": {"type": "buyer_item"}})


def test_lot_policy_require_refuses_an_unknown_lot(tryton: TrytonServer) -> None:
    code, storage_code = unique("IMPL"), unique("OR")
    product = make_product(tryton, code, "Knee insert")
    storage = make_storage(tryton, storage_code)
    stock_in(tryton, storage, product, 3)
    dest = destination(tryton, "stock-usage", stock_usage={"from_location": storage_code, "lot": "require"})
    with pytest.raises(PermanentError, match="no lot with this number"):
        send(dest, usage(code, "1", lot="UNKNOWN-LOT"))
    assert on_hand(tryton, product, storage) == 3


def test_wrong_password_is_retryable_with_a_clear_reason(tryton: TrytonServer) -> None:
    dest = destination(
        tryton,
        "stock-usage",
        username="junction-nobody",  # not admin: failed logins slow down that login only
        password="wrong-password",
        stock_usage={"from_location": "OR"},
    )
    with pytest.raises(RetryableError, match=r"refused the credentials \(HTTP 401\)") as caught:
        send(dest, usage("ANY", "1"))
    assert "wrong-password" not in str(caught.value)


def test_unreachable_tryton_is_retryable() -> None:
    from engine.testing.peers import free_port

    config = TrytonDestinationConfig.model_validate(
        {
            "type": "tryton",
            "name": "erp",
            "url": f"http://127.0.0.1:{free_port()}",
            "database": "db",
            "username": "u",
            "password": "p",
            "flow": "stock-usage",
            "stock_usage": {"from_location": "OR"},
        }
    )
    dest = TrytonDestination(config, channel="t", base_dir=Path("."), log=bind(logging.getLogger("test")))
    with pytest.raises(RetryableError, match="could not connect"):
        send(dest, usage("ANY", "1"))


def test_config_needs_flow_settings_and_reports_unset_variables_without_secrets() -> None:
    base = {"type": "tryton", "name": "erp", "database": "db", "flow": "stock-usage"}
    with pytest.raises(ValueError, match="needs a stock_usage block"):
        TrytonDestinationConfig.model_validate(base)
    with pytest.raises(ValueError, match="url must start with http"):
        TrytonDestinationConfig.model_validate({**base, "url": "ftp://x", "stock_usage": {"from_location": "OR"}})
    config = TrytonDestinationConfig.model_validate(
        {**base, "url": "http://127.0.0.1:1", "username": "junction", "stock_usage": {"from_location": "OR"}}
    )
    dest = TrytonDestination(config, channel="t", base_dir=Path("."), log=bind(logging.getLogger("test")))
    assert dest.problem is not None and dest.problem.startswith("password is empty")
    with pytest.raises(RetryableError, match="password is empty"):
        send(dest, usage("ANY", "1"))


# -- supplier invoices ---------------------------------------------------------------------------


def make_purchase(tryton: TrytonServer, supplier_code: str, lines: list[tuple[int, int, str]]) -> tuple[str, int]:
    """A confirmed purchase (invoice method manual: Tryton itself creates no invoice)."""
    (party,) = tryton.model(
        "party.party",
        "create",
        [{"name": f"MedSupply {supplier_code}", "code": supplier_code, "addresses": [["create", [{"city": "Town"}]]]}],
    )
    (address,) = tryton.model("party.address", "search", [["party", "=", party]], 0, 1, None)
    warehouse = first_id(tryton, "stock.location", [["type", "=", "warehouse"]])
    currency = first_id(tryton, "currency.currency", [["code", "=", "USD"]])
    unit = unit_id(tryton)
    purchase_lines = [
        {"type": "line", "product": product, "quantity": float(qty), "unit": unit, "unit_price": Decimal(price)}
        for product, qty, price in lines
    ]
    (purchase,) = tryton.model(
        "purchase.purchase",
        "create",
        [
            {
                "party": party,
                "invoice_address": address,
                "currency": currency,
                "warehouse": warehouse,
                "invoice_method": "manual",
                "purchase_date": TODAY,
                "lines": [["create", purchase_lines]],
            }
        ],
    )
    tryton.model("purchase.purchase", "quote", [purchase])
    tryton.model("purchase.purchase", "confirm", [purchase])
    (row,) = tryton.model("purchase.purchase", "read", [purchase], ["number", "state"])
    assert row["state"] in ("confirmed", "processing")
    return str(row["number"]), int(purchase)


def invoice_json(number: str, po_number: str, supplier_code: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "invoice_number": number,
        "invoice_date": TODAY.isoformat(),
        "po_number": po_number,
        "supplier": {"name": "Somebody Else Ltd", "ids": [{"type": "buyer_assigned", "value": supplier_code}]},
        "bill_to": {"name": "General Hospital"},
        "lines": lines,
    }


def test_supplier_invoice_is_a_draft_matched_to_its_purchase_once(tryton: TrytonServer) -> None:
    stem, screw = unique("HIP"), unique("SCR")
    stem_id = make_product(tryton, stem, "Hip stem")
    screw_id = make_product(tryton, screw, "Bone screw")
    supplier = unique("V")
    po_number, purchase = make_purchase(tryton, supplier, [(stem_id, 2, "1250.00"), (screw_id, 10, "45.50")])
    invoice_number = unique("INV")
    content = invoice_json(
        invoice_number,
        po_number,
        supplier,
        [
            {"line_number": "1", "item": {"identifiers": [{"type": "buyer_item", "value": screw}]},
             "quantity": "10", "uom": "EA", "unit_price": "45.50"},
            {"line_number": "2", "item": {"identifiers": [{"type": "vendor_part", "value": "X9"},
                                                          {"type": "buyer_item", "value": stem}]},
             "quantity": "2", "uom": "EA", "unit_price": "1240.00"},
        ],
    )  # fmt: skip
    dest = destination(tryton, "supplier-invoice")

    first = json.loads(send(dest, content).response)
    second = json.loads(send(dest, content).response)  # the same 810 sent twice

    assert second["id"] == first["id"]
    invoices = tryton.model("account.invoice", "search", [["reference", "=", invoice_number]], 0, None, None)
    assert invoices == [first["id"]]
    (invoice,) = tryton.model("account.invoice", "read", [first["id"]], ["type", "state", "party.code", "lines"])
    assert (invoice["type"], invoice["state"], invoice["party."]["code"]) == ("in", "draft", supplier)
    purchase_lines = {
        row["product"]: row["id"]
        for row in tryton.model(
            "purchase.line", "search_read", [["purchase", "=", purchase]], 0, None, None, ["product"]
        )
    }
    lines = tryton.model(
        "account.invoice.line", "read", invoice["lines"], ["origin", "product", "quantity", "unit_price"]
    )
    got = {(row["origin"], row["quantity"], row["unit_price"]) for row in lines}
    assert got == {
        (f"purchase.line,{purchase_lines[screw_id]}", 10.0, Decimal("45.50")),
        (f"purchase.line,{purchase_lines[stem_id]}", 2.0, Decimal("1240.00")),
    }


def test_invoice_for_an_unknown_purchase_fails_permanently(tryton: TrytonServer) -> None:
    stem = unique("HIP")
    stem_id = make_product(tryton, stem, "Hip stem")
    supplier = unique("V")
    make_purchase(tryton, supplier, [(stem_id, 1, "10.00")])
    content = invoice_json(
        unique("INV"),
        "PO-DOES-NOT-EXIST",
        supplier,
        [{"line_number": "1", "item": {"identifiers": [{"type": "buyer_item", "value": stem}]},
          "quantity": "1", "uom": "EA", "unit_price": "10.00"}],
    )  # fmt: skip
    with pytest.raises(PermanentError, match="no confirmed purchase"):
        send(destination(tryton, "supplier-invoice"), content)


# -- products polled -> item-to-mfn -> MLLP --------------------------------------------------------


def wait_for(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met within the deadline")


CHANNEL = """
    name: tryton-items
    source:
      type: tryton
      url: ${TRYTON_URL}
      database: ${TRYTON_DB}
      username: admin
      password: ${TRYTON_PASSWORD}
      poll_secs: 0.3
    pipeline:
      datatype: json
      transform: {type: item-to-mfn, receiving_application: EHR}
    destinations:
      - {name: ehr, type: mllp, endpoint: "127.0.0.1:${EHR_PORT}"}
"""


def itm_segments(messages: list[str], code: str) -> list[str]:
    return [seg for msg in messages for seg in msg.split("\r") if seg.startswith(f"ITM|{code}|")]


def test_polled_products_reach_the_ehr_as_mfn_m16_once_per_version(
    tryton: TrytonServer,
    make_project: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = unique("CATH")
    product = make_product(tryton, code, "Central line catheter")
    project: Path = make_project({"tryton-items": CHANNEL})
    peer = MllpPeer()
    serving = threading.Thread(target=peer.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    serving.start()
    monkeypatch.setenv("TRYTON_URL", tryton.url)
    monkeypatch.setenv("TRYTON_DB", tryton.database)
    monkeypatch.setenv("TRYTON_PASSWORD", tryton.password)
    monkeypatch.setenv("EHR_PORT", str(peer.server_address[1]))
    try:
        with EngineThread(project) as running:
            first = wait_for(lambda: itm_segments(peer.snapshot(), code))
            source = running.engine.channels["tryton-items"].source
            assert isinstance(source, TrytonSource)
            polls = source.polls
            wait_for(lambda: source.polls >= polls + 3)  # re-polls of the same version: no new message
            assert len(itm_segments(peer.snapshot(), code)) == 1
            template = tryton.model("product.product", "read", [product], ["template"])[0]["template"]
            tryton.model("product.template", "write", [template], {"name": "Central line catheter 7Fr"})
            wait_for(lambda: len(itm_segments(peer.snapshot(), code)) == 2)
    finally:
        peer.shutdown()
        peer.server_close()
    messages = peer.snapshot()
    mfn = next(m for m in messages if f"ITM|{code}|" in m)
    assert "|MFN^M16^MFN_M16|" in mfn.split("\r", 1)[0]
    assert first[0].startswith(f"ITM|{code}|Central line catheter|A")
    assert any("MFE|MUP|" in seg and f"|{code}|CWE" in seg for seg in mfn.split("\r"))
    assert any(seg.startswith("PKG|1|EA|Y|1") for seg in mfn.split("\r"))
    assert itm_segments(messages, code)[1].startswith(f"ITM|{code}|Central line catheter 7Fr|A")


def test_a_source_with_a_wrong_password_reports_why_and_keeps_running(
    tryton: TrytonServer,
    make_project: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project: Path = make_project({"tryton-items": CHANNEL.replace("username: admin", "username: poller-nobody")})
    monkeypatch.setenv("TRYTON_URL", tryton.url)
    monkeypatch.setenv("TRYTON_DB", tryton.database)
    monkeypatch.setenv("TRYTON_PASSWORD", "not-the-password")
    monkeypatch.setenv("EHR_PORT", "9")  # never reached: nothing is polled
    with EngineThread(project) as running:
        source = running.engine.channels["tryton-items"].source
        assert isinstance(source, TrytonSource)
        reason = wait_for(lambda: source.last_error)
        assert source.running
    assert "refused the credentials (HTTP 401)" in reason
    assert "not-the-password" not in reason
    assert source.submitted == 0
