"""Generated 850/855/856/810 parse back through Junction with clean envelopes and the values
read back by X12 paths; 997/999 reconciliation of what was sent."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from engine.canonical.common import PartyIdType
from engine.canonical.invoice import Invoice
from engine.canonical.item import ItemIdType
from engine.canonical.purchasing import PurchaseOrder, PurchaseOrderAck
from engine.canonical.shipping import ShipNotice
from engine.core.errors import ParseError
from engine.core.registry import models
from engine.datatypes.x12 import X12Config, X12DataType
from engine.datatypes.x12.document import X12Document, parse_path
from engine.datatypes.x12.tokenizer import Delimiters
from engine.datatypes.x12.writer import GroupSpec, InterchangeSpec, TransactionSet, build_interchange
from engine.edi.generate import GenerateError, generate
from engine.edi.partners import Partner
from engine.edi.reconcile import SentGroup, overdue, reconcile, record_sent, sent_groups
from engine.mapping import compile_mapping
from engine.mapping.tables import Tables
from engine.store.sqlite import SqliteStore, SqliteStoreConfig

WHEN = dt.datetime(2026, 3, 4, 9, 30, tzinfo=dt.UTC)
STRICT = X12DataType(X12Config(type="x12", strict_isa_width=True))

SHIP_TO: dict[str, Any] = {
    "name": "Mercy General * Dock 3",
    "ids": [{"type": "gln", "value": "0614141000012"}, {"type": "hin", "value": "123456789"}],
    "address": {
        "lines": ["1 Main St", "Bldg B", "Receiving"],
        "city": "Springfield",
        "region": "IL",
        "postal_code": "62701",
        "country": "US",
    },
    "department": "OR",
}
SUPPLIER: dict[str, Any] = {"name": "Acme Medical", "ids": [{"type": "duns", "value": "987654321"}]}
BUYER: dict[str, Any] = {"name": "Mercy Health", "ids": [{"type": "hin", "value": "555000111"}]}


def purchase_order(**change: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "po_number": "PO-1001",
        "order_type": "bill_only",
        "order_date": "2026-03-01",
        "buyer": BUYER,
        "supplier": SUPPLIER,
        "ship_to": SHIP_TO,
        "mark_for": {"name": "Cath Lab"},
        "contract": {"contract_id": "GPO-778"},
        "references": [{"qualifier": "DP", "value": "CATH"}],
        "lines": [
            {
                "line_number": "1",
                "item": {
                    "identifiers": [
                        {"type": "vendor_part", "value": "AC-100"},
                        {"type": "manufacturer_part", "value": "MF-9"},
                        {"type": "gtin", "value": "00614141123452"},
                        {"type": "hibc", "value": "+H123AC1001"},
                        {"type": "buyer_item", "value": "IM-55"},
                    ],
                    "description": "Stent, coronary 3.0 x 18mm",
                },
                "quantity": "1",
                "uom": "EA",
                "unit_price": "1250.00",
                "bill_only": {
                    "case_id": "CASE-77",
                    "patient": {"id": "MRN-1"},
                    "lot": "LOT-A1",
                    "serial": "SN-991",
                    "expiry_date": "2028-01-31",
                    "udi": "(01)00614141123452(17)280131(10)LOT-A1",
                },
            },
            {
                "line_number": "2",
                "item": {"identifiers": [{"type": "ndc", "value": "12345-6789-01"}]},
                "quantity": 2.5,
                "uom": "BX",
                "requested_delivery_date": "2026-03-10",
            },
        ],
    }
    return order | change


ACK: dict[str, Any] = {
    "po_number": "PO-1001",
    "ack_date": "2026-03-02",
    "status": "AC",
    "supplier": SUPPLIER,
    "buyer": BUYER,
    "supplier_order_number": "SO-55",
    "lines": [
        {
            "line_number": "1",
            "item": {"identifiers": [{"type": "vendor_part", "value": "AC-100"}]},
            "ordered_quantity": "10",
            "uom": "EA",
            "unit_price": "12.5",
            "acks": [
                {"status": "IA", "quantity": "6", "uom": "EA", "scheduled_date": "2026-03-05"},
                {"status": "IB", "quantity": "4", "uom": "EA", "scheduled_date": "2026-03-20", "date_qualifier": "067"},
            ],
        },
        {
            "line_number": "2",
            "ordered_quantity": "1",
            "uom": "CA",
            "acks": [
                {
                    "status": "IS",
                    "quantity": "1",
                    "uom": "CA",
                    "substitute": {"identifiers": [{"type": "vendor_part", "value": "AC-200"}]},
                },
            ],
        },
        {"line_number": "3", "ordered_quantity": "3", "uom": "BX", "acks": [{"status": "IR"}]},
    ],
}

NOTICE: dict[str, Any] = {
    "shipment_id": "SH-9",
    "notice_date": "2026-03-03",
    "shipped_at": "2026-03-03T14:05:00",
    "expected_delivery": "2026-03-04",
    "supplier": SUPPLIER,
    "ship_from": {"name": "Acme DC", "ids": [{"type": "gln", "value": "0614141999996"}]},
    "ship_to": SHIP_TO,
    "carrier": {"scac": "UPSN", "name": "UPS"},
    "tracking_number": "1Z999",
    "bill_of_lading": "BOL-1",
    "package_count": 2,
    "gross_weight": {"value": "12.5", "uom": "LB"},
    "orders": [
        {
            "po_number": "PO-1001",
            "po_date": "2026-03-01",
            "packs": [
                {"sscc": "106141411234567897", "kind": "pallet"},
                {
                    "sscc": "006141411234567890",
                    "parent_sscc": "106141411234567897",
                    "weight": {"value": "5", "uom": "LB"},
                    "items": [
                        {
                            "line_number": "1",
                            "item": {"identifiers": [{"type": "vendor_part", "value": "AC-100"}]},
                            "gtin": "00614141123452",
                            "quantity": "2",
                            "uom": "EA",
                            "lot": "LOT-A1",
                            "expiry_date": "2028-01-31",
                            "serial_numbers": ["SN-1", "SN-2"],
                            "udi": "(01)00614141123452(10)LOT-A1",
                        }
                    ],
                },
            ],
            "items": [
                {
                    "line_number": "2",
                    "item": {"identifiers": [{"type": "ndc", "value": "12345-6789-01"}]},
                    "quantity": "3",
                    "uom": "BX",
                }
            ],
        },
        {
            "po_number": "PO-1002",
            "items": [
                {"item": {"identifiers": [{"type": "gtin", "value": "00614141123452"}]}, "quantity": "1", "uom": "EA"}
            ],
        },
    ],
}

INVOICE: dict[str, Any] = {
    "invoice_number": "INV-42",
    "invoice_date": "2026-03-05",
    "po_number": "PO-1001",
    "supplier": SUPPLIER,
    "bill_to": BUYER,
    "ship_to": SHIP_TO,
    "remit_to": {"name": "Acme Lockbox", "ids": [{"type": "duns", "value": "111222333"}]},
    "terms": {"discount_percent": "2", "discount_days": 10, "net_days": 30},
    "lines": [
        {
            "line_number": "1",
            "item": {"identifiers": [{"type": "vendor_part", "value": "AC-100"}], "description": "Stent"},
            "quantity": "2",
            "uom": "EA",
            "unit_price": "100.10",
            "allowances_charges": [{"indicator": "allowance", "code": "C310", "amount": "5.00"}],
            "bill_only": {"case_id": "CASE-77", "lot": "LOT-A1"},
        },
        {
            "line_number": "2",
            "item": {"identifiers": [{"type": "ndc", "value": "12345-6789-01"}]},
            "quantity": "1",
            "uom": "BX",
            "unit_price": "9.99",
        },
    ],
    "allowances_charges": [{"indicator": "charge", "code": "D240", "amount": "15.5", "description": "Freight*ground"}],
    "tax_amount": "1.25",
}


def envelope(sets: list[TransactionSet], version: str = "004010") -> X12Document:
    """Wrap, then parse back strictly: a clean envelope or the test fails."""
    delims = Delimiters("*", ">", "~", "^" if version == "005010" else None)
    spec = InterchangeSpec("ZZ", "MERCY", "ZZ", "ACMEMEDICAL", 9, version[:5])
    numbered = [(n, ts) for n, ts in enumerate(sets, start=1)]
    raw = build_interchange(
        spec, [GroupSpec("MERCY", "ACME", 5, version, numbered)], delims, when=WHEN, line_break="\n"
    )
    doc = STRICT.parse(raw)
    assert doc.warnings == []
    return doc


# -- 850 --------------------------------------------------------------------------------


def test_850_round_trip() -> None:
    doc = envelope([generate("850", purchase_order())])
    assert doc.get("GS01") == "PO" and doc.get("ST01") == "850"
    assert doc.get_all("BEG") == ["BEG*00*BO*PO-1001**20260301"]
    assert doc.get("CUR02") == "USD"
    assert doc.get_all("REF[REF01=CT]/REF02")[0] == "GPO-778"
    assert doc.get("N1[N101=ST]/N104") == "0614141000012" and doc.get("N1[N101=ST]/N103") == "UL"
    assert doc.get("N1[N101=ST]/N102") == "Mercy General Dock 3"  # the '*' of the name became a space
    assert doc.get_all("N1[N101=ST]/N301") == ["1 Main St", "Receiving"]
    assert doc.get("N1[N101=ST]/N4") == "N4*Springfield*IL*62701*US"
    assert doc.get("N1[N101=ST]/REF[REF01=DP]/REF02") == "OR"
    assert doc.get("N1[N101=BY]/N103") == "21" and doc.get("N1[N101=SU]/N103") == "1"
    assert doc.get("N1[N101=Z7]/N102") == "Cath Lab"
    assert doc.get_all("PO1/PO101") == ["1", "2"]
    assert doc.get_all("PO1/PO102") == ["1", "2.5"]
    assert doc.get_all("PO1/PO103") == ["EA", "BX"]
    assert doc.get("PO1[1]") == "PO1*1*1*EA*1250**VC*AC-100*MG*MF-9*UK*00614141123452*HI*+H123AC1001*IN*IM-55"
    assert doc.get("PO1[2]/PO106") == "N4" and doc.get("PO1[2]/PO107") == "12345-6789-01"
    assert doc.get("PO1[2]/DTM[DTM01=002]/DTM02") == "20260310"
    line = doc.iterate("PO1")[0]
    assert line.get("PID05") == "Stent, coronary 3.0 x 18mm"
    assert line.get("REF[REF01=LT]/REF02") == "LOT-A1" and line.get("REF[REF01=SE]/REF02") == "SN-991"
    assert line.get("REF[REF01=EA]/REF02") == "MRN-1"
    assert line.get("REF[REF03=CASE]/REF02") == "CASE-77"
    assert line.get("DTM[DTM01=036]/DTM02") == "20280131"
    assert doc.get("CTT") == "CTT*2*3.5"


@pytest.mark.parametrize(
    ("order_type", "code"), [("stock", "SA"), ("non_stock", "OS"), ("drop_ship", "DS"), ("consignment", "CN")]
)
def test_850_order_type_codes_and_partner_override(order_type: str, code: str) -> None:
    assert generate("850", purchase_order(order_type=order_type)).segments[0][2] == code
    override = generate("850", purchase_order(order_type=order_type), order_type_code=lambda _: "KN")
    assert override.segments[0][2] == "KN"


def test_850_from_the_pydantic_model_and_5010() -> None:
    order = PurchaseOrder.model_validate_json(json.dumps(purchase_order()))
    doc = envelope([generate("850", order), generate("850", purchase_order(po_number="PO-1002"))], "005010")
    assert doc.get("GS08") == "005010" and doc.get("ISA12") == "00501"
    assert doc.get_all("BEG03") == ["PO-1001", "PO-1002"] and doc.get_all("SE02") == ["0001", "0002"]


def test_bad_content_names_fields_not_values() -> None:
    bad = purchase_order(order_type="bogus-type-XYZ", lines=[])
    with pytest.raises(GenerateError) as caught:
        generate("850", bad)
    text = str(caught.value)
    assert "order_type" in text and "lines" in text and "bogus-type-XYZ" not in text
    line = purchase_order()["lines"][1] | {"item": {"identifiers": [{"type": "other", "value": "X"}]}}
    with pytest.raises(GenerateError, match="no identifier X12 can carry"):
        generate("850", purchase_order(lines=[line]))
    with pytest.raises(GenerateError, match="unknown transaction set"):
        generate("940", {})


# -- 855 --------------------------------------------------------------------------------


def test_855_round_trip() -> None:
    doc = envelope([generate("855", ACK)])
    assert doc.get("GS01") == "PR" and doc.get("ST01") == "855"
    assert doc.get("BAK") == "BAK*00*AC*PO-1001*20260302****SO-55*20260302"
    assert doc.get_all("PO1/PO101") == ["1", "2", "3"]
    first = doc.iterate("PO1")[0]
    assert first.get_all("ACK01") == ["IA", "IB"] and first.get_all("ACK02") == ["6", "4"]
    assert first.get_all("ACK04") == ["068", "067"] and first.get_all("ACK05") == ["20260305", "20260320"]
    assert doc.get("PO1[2]/ACK") == "ACK*IS*1*CA****VC*AC-200"
    assert doc.get("PO1[3]/ACK") == "ACK*IR"
    assert doc.get("CTT") == "CTT*3*14"


# -- 856 --------------------------------------------------------------------------------


def test_856_round_trip() -> None:
    doc = envelope([generate("856", NOTICE)])
    assert doc.get("GS01") == "SH"
    assert doc.get("BSN") == "BSN*00*SH-9*20260303*1405*0001"
    assert doc.get_all("HL") == [
        "HL*1**S*1",
        "HL*2*1*O*1",
        "HL*3*2*I*0",  # the loose item of order 1
        "HL*4*2*T*1",  # the pallet
        "HL*5*4*P*1",  # the carton on the pallet
        "HL*6*5*I*0",
        "HL*7*1*O*1",
        "HL*8*7*I*0",
    ]
    shipment = doc.iterate("HL[HL03=S]")[0]
    assert shipment.get("TD1") == "TD1*CTN25*2****G*12.5*LB"
    assert shipment.get("TD5") == "TD5**2*UPSN**UPS"
    assert shipment.get("REF[REF01=BM]/REF02") == "BOL-1" and shipment.get("REF[REF01=CN]/REF02") == "1Z999"
    assert shipment.get("DTM[DTM01=011]/DTM02") == "20260303" and shipment.get("DTM[DTM01=017]/DTM02") == "20260304"
    assert shipment.get("N1[N101=SF]/N104") == "0614141999996"
    assert doc.get_all("HL[HL03=O]/PRF01") == ["PO-1001", "PO-1002"]
    assert doc.get("HL[HL03=O]/PRF04") == "20260301"
    assert doc.get("HL[HL03=T]/MAN") == "MAN*GM*106141411234567897"
    assert doc.get("HL[HL03=P]/MAN02") == "006141411234567890"
    items = doc.iterate("HL[HL03=I]")
    assert len(items) == 3
    packed = items[1]
    assert packed.get("LIN") == "LIN*1*UK*00614141123452*VC*AC-100"
    assert packed.get("SN1") == "SN1**2*EA"
    assert packed.get("REF[REF01=LT]/REF02") == "LOT-A1"
    assert packed.get_all("REF[REF01=SN]/REF02") == ["SN-1", "SN-2"]
    assert packed.get("REF[REF03=UDI]/REF02") == "(01)00614141123452(10)LOT-A1"
    assert packed.get("DTM[DTM01=036]/DTM02") == "20280131"
    assert items[0].get("LIN") == "LIN*2*N4*12345-6789-01"
    assert doc.get("CTT") == "CTT*8*6"


def test_856_without_packs_uses_structure_0004() -> None:
    notice = NOTICE | {"orders": [NOTICE["orders"][1]], "carrier": None, "shipped_at": None}
    doc = envelope([generate("856", notice)])
    assert doc.get("BSN") == "BSN*00*SH-9*20260303*0000*0004"
    assert doc.get_all("HL03") == ["S", "O", "I"]


# -- 810 --------------------------------------------------------------------------------


def test_810_round_trip_with_totals_in_cents() -> None:
    invoice = Invoice.model_validate_json(json.dumps(INVOICE))
    assert invoice.computed_total() == Decimal("221.94")
    doc = envelope([generate("810", INVOICE)])
    assert doc.get("GS01") == "IN" and doc.get("ST01") == "810"
    assert doc.get("BIG") == "BIG*20260305*INV-42**PO-1001***DI"
    assert doc.get("N1[N101=SE]/N104") == "987654321" and doc.get("N1[N101=RE]/N102") == "Acme Lockbox"
    assert doc.get("ITD") == "ITD*01*3*2**10**30"
    assert doc.get_all("IT1/IT102") == ["2", "1"] and doc.get_all("IT1/IT104") == ["100.1", "9.99"]
    first = doc.iterate("IT1")[0]
    assert first.get("SAC") == "SAC*A*C310***500"
    assert first.get("REF[REF01=LT]/REF02") == "LOT-A1" and first.get("PID05") == "Stent"
    assert doc.get("TDS01") == "22194"
    assert doc.get("TXI") == "TXI*TX*1.25"
    assert doc.get_all("SAC")[-1] == "SAC*C*D240***1550**********Freight ground"
    assert doc.get("CTT01") == "2"
    credit = envelope([generate("810", INVOICE | {"kind": "credit", "total_amount": "-10.005"})])
    assert credit.get("BIG07") == "CR" and credit.get("TDS01") == "-1001"


# -- reconciliation --------------------------------------------------------------------

PARTNER = Partner.model_validate(
    {
        "name": "acme",
        "us": {"isa_qualifier": "ZZ", "isa_id": "MERCY", "gs_id": "MERCY"},
        "them": {"isa_qualifier": "ZZ", "isa_id": "ACMEMEDICAL", "gs_id": "ACME"},
        "usage": "T",
        "acks": {"expect": "997", "ack_timeout_minutes": 60},
        "route": {"type": "file", "name": "route"},
    }
)


def ack_interchange(
    code: str, groups: list[tuple[int, str, list[tuple[int, str]]]], sender: str = "ACMEMEDICAL"
) -> bytes:
    """A 997 or 999 from the partner: one set per acknowledged group (GS06, AK901, [(ST02, AK501/IK501)])."""
    sets_out: list[tuple[int, TransactionSet]] = []
    implementation = "005010X231A1" if code == "999" else ""
    for number, (gs06, status, sets) in enumerate(groups, start=1):
        segments: list[list[str]] = [["AK1", "PO", str(gs06)] + (["005010"] if code == "999" else [])]
        for st02, set_status in sets:
            segments.append(["AK2", "850", f"{st02:04d}"])
            segments.append(["AK5" if code == "997" else "IK5", set_status])
        accepted = str(sum(s == "A" for _, s in sets))
        segments.append(["AK9", status, str(len(sets)), str(len(sets)), accepted])
        sets_out.append((number, TransactionSet(code, segments, implementation)))
    version = "00401" if code == "997" else "00501"
    delims = Delimiters("*", ">", "~", "^" if code == "999" else None)
    spec = InterchangeSpec("ZZ", sender, "ZZ", "MERCY", 77, version)
    group = GroupSpec("ACME", "MERCY", 3, implementation or "004010", sets_out)
    return build_interchange(spec, [group], delims, when=WHEN)


async def _scenario(tmp_path: Path, body):  # type: ignore[no-untyped-def]
    store = SqliteStore(SqliteStoreConfig(path="db/junction.db"), tmp_path)
    await store.open()
    try:
        return await body(store)
    finally:
        await store.close()


def test_997_and_999_reconcile_sent_groups_and_overdue_lists_the_rest(tmp_path: Path) -> None:
    sent_at = 1_000_000.0

    async def body(store: SqliteStore) -> None:
        for gs06, sets in ((10, [1, 2]), (11, [3]), (12, [4]), (13, [5, 6])):
            await record_sent(store, SentGroup("acme", gs06 + 100, gs06, "850", sets, sent_at, f"m{gs06}"))
        await record_sent(store, SentGroup("acme-two", 1, 10, "850", [1], sent_at))  # another partner, same GS06
        result = await reconcile(
            store, PARTNER, ack_interchange("997", [(10, "A", []), (99, "A", [])]), now=sent_at + 5
        )
        assert result.functional_id == "997" and result.unknown_groups == [99]
        assert [(g.gs06, g.status, g.sets) for g in result.updated] == [
            (10, "accepted", {"0001": "accepted", "0002": "accepted"})
        ]
        result = await reconcile(store, PARTNER, ack_interchange("999", [(13, "P", [(5, "A"), (6, "R")])]))
        assert result.updated[0].status == "partially_accepted"
        assert result.updated[0].sets == {"0005": "accepted", "0006": "rejected"}
        await reconcile(store, PARTNER, ack_interchange("997", [(11, "R", [(3, "R")])]))
        groups = {g.gs06: g for g in await sent_groups(store, "acme")}
        assert {n: g.status for n, g in groups.items()} == {
            10: "accepted",
            11: "rejected",
            12: "pending",
            13: "partially_accepted",
        }
        assert groups[10].acked_at == sent_at + 5
        # Only the unacknowledged group, and only once the timeout (60 min) has passed.
        assert await overdue(store, PARTNER, now=sent_at + 59 * 60) == []
        late = await overdue(store, PARTNER, now=sent_at + 61 * 60)
        assert [(g.gs06, g.isa13, g.message_id) for g in late] == [(12, 112, "m12")]
        quiet = PARTNER.model_copy(update={"acks": PARTNER.acks.model_copy(update={"expect": "none"})})
        assert await overdue(store, quiet, now=sent_at + 10**6) == []
        assert [g.status for g in await sent_groups(store, "acme-two")] == ["pending"]

    asyncio.run(_scenario(tmp_path, body))


def test_reconcile_refuses_other_senders_and_non_acknowledgements(tmp_path: Path) -> None:
    async def body(store: SqliteStore) -> None:
        with pytest.raises(ValueError, match="not partner acme"):
            await reconcile(store, PARTNER, ack_interchange("997", [(10, "A", [])], sender="SOMEONEELSE"))
        spec = InterchangeSpec("ZZ", "ACMEMEDICAL", "ZZ", "MERCY", 1, "00401")
        po = build_interchange(
            spec,
            [GroupSpec("ACME", "MERCY", 1, "004010", [(1, generate("850", purchase_order()))])],
            Delimiters("*", ">", "~"),
            when=WHEN,
        )
        with pytest.raises(ParseError, match="other than 997/999"):
            await reconcile(store, PARTNER, po)
        with pytest.raises(ParseError):
            await reconcile(store, PARTNER, b"ISA*garbage")

    asyncio.run(_scenario(tmp_path, body))


# -- round trip through the project's inbound mappings --------------------------------

ROOT = Path(__file__).resolve().parents[2]


def inbound(mapping: str, doc: X12Document) -> Any:
    """Run mappings/<mapping>.yaml (as an inbound channel would) and return its one object."""
    compiled = compile_mapping(
        ROOT / "mappings" / f"{mapping}.yaml", models=models(), datatype="x12", check_path=parse_path
    )
    result = compiled.run(cast(Any, doc), Tables.from_dir(ROOT / "mappings" / "tables"))  # list invariance
    assert len(result.objects) == 1
    return result.objects[0]


def test_850_round_trips_through_the_inbound_mapping() -> None:
    first = purchase_order()["lines"][0]
    # Every line carries its own values: a PO1 loop without a segment reads the whole document.
    first = first | {"bill_only": first["bill_only"] | {"procedure_date": "2026-02-27"}}
    second = first | {
        "line_number": "2",
        "item": {"identifiers": [{"type": "ndc", "value": "12345-6789-01"}], "description": "Saline"},
        "quantity": "2.5",
        "uom": "BX",
        "unit_price": "3.10",
        "bill_only": first["bill_only"] | {"lot": "LOT-B2", "serial": "SN-2", "procedure_date": "2026-02-28"},
        "requested_delivery_date": "2026-03-10",
    }
    sent = PurchaseOrder.model_validate_json(
        json.dumps(purchase_order(lines=[first | {"requested_delivery_date": "2026-03-09"}, second]))
    )
    got = inbound("x12-850-to-purchase-order", envelope([generate("850", sent)]))
    assert isinstance(got, PurchaseOrder)
    assert (got.po_number, got.order_type, got.order_date, got.purpose) == (
        sent.po_number,
        sent.order_type,
        sent.order_date,
        sent.purpose,
    )
    assert (
        got.contract is not None and sent.contract is not None and got.contract.contract_id == sent.contract.contract_id
    )
    assert got.ship_to.id_of(PartyIdType.GLN) == "0614141000012" and got.buyer.id_of(PartyIdType.HIN) == "555000111"
    for a, b in zip(sent.lines, got.lines, strict=True):
        assert (b.line_number, b.quantity, b.uom, b.unit_price) == (a.line_number, a.quantity, a.uom, a.unit_price)
        # The inbound mapping reads every id pair of a PO1.
        assert [(i.type, i.value) for i in b.item.identifiers] == [(i.type, i.value) for i in a.item.identifiers]
        assert b.item.description == a.item.description and b.requested_delivery_date == a.requested_delivery_date
        assert a.bill_only is not None and b.bill_only is not None
        for name in ("lot", "serial", "case_id", "expiry_date", "procedure_date"):
            assert getattr(b.bill_only, name) == getattr(a.bill_only, name), name
        assert b.bill_only.patient is not None and b.bill_only.patient.id == "MRN-1"


def test_855_round_trips_through_the_inbound_mapping() -> None:
    sent = PurchaseOrderAck.model_validate_json(json.dumps(ACK))
    got = inbound("x12-855-to-purchase-order-ack", envelope([generate("855", sent)]))
    assert (got.po_number, got.status, got.ack_date, got.supplier_order_number) == (
        "PO-1001",
        "AC",
        sent.ack_date,
        "SO-55",
    )
    assert [(line.line_number, line.ordered_quantity, line.uom) for line in got.lines] == [
        (line.line_number, line.ordered_quantity, line.uom) for line in sent.lines
    ]
    statuses = [[(ack.status, ack.quantity, ack.scheduled_date) for ack in line.acks] for line in got.lines]
    assert statuses == [[(ack.status, ack.quantity, ack.scheduled_date) for ack in line.acks] for line in sent.lines]
    substitute = got.lines[1].acks[0].substitute
    assert substitute is not None and substitute.id_of(ItemIdType.VENDOR_PART) == "AC-200"


def test_856_round_trips_through_the_inbound_mapping() -> None:
    carton = NOTICE["orders"][0]["packs"][1] | {"parent_sscc": None}
    notice = NOTICE | {"orders": [{"po_number": "PO-1001", "po_date": "2026-03-01", "packs": [carton]}]}
    sent = ShipNotice.model_validate_json(json.dumps(notice))
    got = inbound("x12-856-to-ship-notice", envelope([generate("856", sent)]))
    assert (got.shipment_id, got.notice_date, got.expected_delivery) == (
        "SH-9",
        sent.notice_date,
        sent.expected_delivery,
    )
    assert (got.tracking_number, got.bill_of_lading, got.shipped_at) == ("1Z999", "BOL-1", sent.shipped_at)
    assert got.ship_to.id_of(PartyIdType.GLN) == "0614141000012"
    order = got.orders[0]
    assert (order.po_number, order.po_date) == ("PO-1001", sent.orders[0].po_date)
    assert [pack.sscc for pack in order.packs] == ["006141411234567890"]
    item = order.packs[0].items[0]
    assert (item.line_number, item.gtin, item.quantity, item.uom) == ("1", "00614141123452", Decimal(2), "EA")
    assert (item.lot, item.expiry_date, item.serial_numbers) == ("LOT-A1", dt.date(2028, 1, 31), ["SN-1", "SN-2"])
    assert got.problems() == []


def test_810_round_trips_through_the_inbound_mapping() -> None:
    sent = Invoice.model_validate_json(json.dumps(INVOICE))
    got = inbound("x12-810-to-invoice", envelope([generate("810", sent)]))
    assert (got.invoice_number, got.invoice_date, got.kind, got.po_number) == (
        "INV-42",
        sent.invoice_date,
        sent.kind,
        "PO-1001",
    )
    assert got.total_amount == sent.computed_total() == Decimal("221.94")
    assert [(line.quantity, line.uom, line.unit_price) for line in got.lines] == [
        (line.quantity, line.uom, line.unit_price) for line in sent.lines
    ]
    assert got.supplier.id_of(PartyIdType.DUNS) == "987654321" and got.remit_to is not None
    assert got.remit_to.name == "Acme Lockbox" and got.bill_to.id_of(PartyIdType.HIN) == "555000111"
