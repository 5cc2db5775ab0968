"""Canonical business objects: realistic construction, strictness, JSON round trips, schemas."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from engine.canonical import (
    MODELS,
    ChargeEvent,
    ContractPrice,
    Invoice,
    Item,
    LineStatus,
    Location,
    PurchaseOrder,
    PurchaseOrderAck,
    Quantity,
    Remittance,
    ShipNotice,
    Supplier,
    SupplyUsage,
    export_schemas,
    gs1_check_digit_ok,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas" / "canonical"

HOSPITAL = {
    "name": "St. Example Medical Center",
    "ids": [{"type": "gln", "value": "0614141000012", "qualifier": "UL"}, {"type": "hin", "value": "123456789"}],
    "address": {
        "lines": ["100 Main St"],
        "city": "Springfield",
        "region": "IL",
        "postal_code": "62701",
        "country": "US",
    },
}
SUPPLIER = {"name": "Acme Orthopedics", "ids": [{"type": "gln", "value": "0614141999996"}]}
KNEE = {
    "identifiers": [
        {"type": "buyer_item", "value": "100234"},
        {"type": "manufacturer_part", "value": "TK-4410-L"},
        {"type": "gtin", "value": "00614141123452", "packaging_uom": "EA", "quantity_per_pack": "1"},
    ],
    "description": "Tibial tray, cemented, size 4",
}


def _item() -> Item:
    return Item.model_validate(
        {
            "identifiers": [
                {"type": "buyer_item", "value": "200871"},
                {"type": "gtin", "value": "10614141000019", "packaging_uom": "CA", "quantity_per_pack": "20"},
                {"type": "gtin", "value": "20614141000016", "packaging_uom": "BX", "quantity_per_pack": "5"},
                {"type": "gtin", "value": "00614141000012", "packaging_uom": "EA", "quantity_per_pack": "1"},
                {"type": "vendor_part", "value": "ML-2210", "issuer": "Medline"},
            ],
            "description": "Suture, absorbable, 3-0",
            "base_uom": "EA",
            "pack_levels": [{"uom": "CA", "base_quantity": "20"}, {"uom": "BX", "base_quantity": "5"}],
            "purchase_uom": "CA",
            "issue_uom": "BX",
            "billing_uom": "EA",
            "unspsc": "42312201",
            "chargeable": True,
            "charge_code": "27800123",
            "unit_cost": "4.85",
        }
    )


def test_unit_conversion_one_case_is_four_boxes_is_twenty_each() -> None:
    item = _item()
    one_case = Quantity(value=Decimal(1), uom="CA")
    assert item.convert(one_case, "BX") == Quantity(value=Decimal(4), uom="BX")
    assert item.convert(one_case, "EA") == Quantity(value=Decimal(20), uom="EA")
    assert item.convert(Quantity(value=Decimal(20), uom="EA"), "CA").value == 1
    assert item.convert(Quantity(value=Decimal(3), uom="EA"), "BX").value == Decimal("0.6")
    with pytest.raises(ValueError, match="no packaging level 'PK'"):
        item.convert(one_case, "PK")


def test_item_units_must_be_packaging_levels() -> None:
    data = _item().model_dump()
    data["billing_uom"] = "DZ"
    with pytest.raises(ValidationError, match="billing_uom must be the base_uom"):
        Item.model_validate(data)


def test_master_data_supplier_location_contract_price() -> None:
    supplier = Supplier(supplier_id="V1002", name="Acme Orthopedics", roles=["manufacturer", "vendor"], ids=[])
    location = Location(
        location_id="OR-3", kind="operating_room", cost_centre="7010", parent_id="SURG", facility="SEMC"
    )
    price = ContractPrice.model_validate(
        {
            "item": KNEE,
            "supplier": SUPPLIER,
            "gpo": {"name": "Vizient", "id": "VZ"},
            "contract_id": "MS-10442",
            "tier": "C02",
            "uom": "EA",
            "price": "2150.00",
            "effective_from": "2024-01-01",
            "effective_to": "2025-12-31",
        }
    )
    assert supplier.roles[0] == "manufacturer" and location.cost_centre == "7010"
    assert price.applies_on(dt.date(2024, 6, 1)) and not price.applies_on(dt.date(2026, 1, 1))
    with pytest.raises(ValidationError, match="effective_to is before effective_from"):
        ContractPrice.model_validate({**price.model_dump(), "effective_to": "2023-01-01"})


def _bill_only_po(**line_changes: object) -> PurchaseOrder:
    line = {
        "line_number": "1",
        "item": KNEE,
        "quantity": "1",
        "uom": "EA",
        "unit_price": "2150.00",
        "contract": {"contract_id": "MS-10442", "tier": "C02", "gpo": "Vizient"},
        "bill_only": {
            "case_id": "OR-2024-001873",
            "procedure": {"code": "27447", "system": "cpt"},
            "procedure_date": "2024-03-14",
            "surgeon_id": "1234567893",
            "patient": {"id": "MRN00417", "assigning_authority": "SEMC", "id_type": "MR"},
            "encounter": {"encounter_id": "V88812", "account_number": "A5521"},
            "lot": "L23K117",
            "serial": "SN-0048812",
            "implant_date": "2024-03-14",
        },
        **line_changes,
    }
    return PurchaseOrder.model_validate(
        {
            "po_number": "PO-558120",
            "order_type": "bill_only",
            "order_date": "2024-03-15",
            "buyer": HOSPITAL,
            "supplier": SUPPLIER,
            "ship_to": {**HOSPITAL, "department": "Surgical Services"},
            "lines": [line],
        }
    )


def test_bill_only_implant_po_line_carries_case_patient_lot_serial() -> None:
    order = _bill_only_po()
    detail = order.lines[0].bill_only
    assert detail is not None and detail.patient is not None
    assert (detail.case_id, detail.patient.id, detail.lot, detail.serial) == (
        "OR-2024-001873",
        "MRN00417",
        "L23K117",
        "SN-0048812",
    )
    assert detail.implant_date == dt.date(2024, 3, 14)
    assert order.buyer.id_of("gln") == "0614141000012"
    assert order.problems() == []


def test_bill_only_line_without_clinical_context_is_reported_not_rejected() -> None:
    order = _bill_only_po(bill_only=None)
    assert order.problems() == ["line 1: bill-only line without case, patient, lot or serial"]


def test_purchase_order_ack_line_statuses() -> None:
    ack = PurchaseOrderAck.model_validate(
        {
            "po_number": "PO-558121",
            "ack_date": "2024-03-16",
            "status": "AC",
            "lines": [
                {"line_number": "1", "acks": [{"status": "IA", "quantity": "10", "uom": "CA"}]},
                {
                    "line_number": "2",
                    "acks": [
                        {"status": "IA", "quantity": "6", "uom": "BX"},
                        {"status": "IB", "quantity": "4", "uom": "BX", "scheduled_date": "2024-03-29"},
                    ],
                },
                {"line_number": "3", "acks": [{"status": "IS", "substitute": KNEE}]},
            ],
        }
    )
    statuses = [ack.status for line in ack.lines for ack in line.acks]
    assert statuses == [LineStatus.IA, LineStatus.IA, LineStatus.IB, LineStatus.IS]
    assert LineStatus.IQ.description == "Item accepted - quantity changed"
    assert [status.bucket for status in statuses] == ["accepted", "accepted", "backordered", "accepted_with_changes"]
    assert ack.status.description.startswith("Acknowledge - with detail and change")
    with pytest.raises(ValidationError):
        PurchaseOrderAck.model_validate({**ack.model_dump(), "status": "XX"})


def _ship_notice(first_sscc: str = "006141411234567890") -> ShipNotice:
    def pack(sscc: str, serial: str) -> dict[str, object]:
        item = {
            "line_number": "1",
            "item": KNEE,
            "gtin": "00614141123452",
            "quantity": "1",
            "uom": "EA",
            "lot": "L23K117",
            "expiry_date": "2028-10-31",
            "serial_numbers": [serial],
            "udi": f"(01)00614141123452(17)281031(10)L23K117(21){serial}",
        }
        return {"sscc": sscc, "items": [item]}

    return ShipNotice.model_validate(
        {
            "shipment_id": "SH-99120",
            "notice_date": "2024-03-20",
            "shipped_at": "2024-03-20T16:05:00-05:00",
            "supplier": SUPPLIER,
            "ship_to": HOSPITAL,
            "carrier": {"scac": "UPSN"},
            "tracking_number": "1Z999AA10123456784",
            "orders": [
                {
                    "po_number": "PO-558119",
                    "packs": [pack(first_sscc, "SN-1"), pack("006141411234567883", "SN-2")],
                }
            ],
        }
    )


def test_ship_notice_hierarchy_with_two_packs() -> None:
    notice = _ship_notice()
    packs = notice.orders[0].packs
    assert [pack.sscc for pack in packs] == ["006141411234567890", "006141411234567883"]
    assert [item.serial_numbers for item in notice.items()] == [["SN-1"], ["SN-2"]]
    assert notice.shipped_at is not None and notice.shipped_at.utcoffset() == dt.timedelta(hours=-5)
    assert notice.problems() == []
    bad = _ship_notice(first_sscc="006141411234567891")
    assert bad.problems() == ["orders[0].packs[0].sscc: check digit does not verify"]
    with pytest.raises(ValidationError):
        _ship_notice(first_sscc="12345")


def test_gs1_check_digit() -> None:
    assert gs1_check_digit_ok("0614141000012")  # a GLN
    assert not gs1_check_digit_ok("0614141000013")
    assert not gs1_check_digit_ok("06141410000x2")


def _invoice(total: str) -> Invoice:
    return Invoice.model_validate(
        {
            "invoice_number": "INV-77120",
            "invoice_date": "2024-03-21",
            "po_number": "PO-558119",
            "supplier": SUPPLIER,
            "bill_to": HOSPITAL,
            "terms": {"discount_percent": "2", "discount_days": 10, "net_days": 30},
            "lines": [
                {"line_number": "1", "item": KNEE, "quantity": "2", "uom": "EA", "unit_price": "2150.00"},
                {
                    "line_number": "2",
                    "item": KNEE,
                    "quantity": "3",
                    "uom": "BX",
                    "unit_price": "41.333",
                    "amount": "124.00",
                    "allowances_charges": [{"indicator": "allowance", "code": "C310", "amount": "4.00"}],
                },
            ],
            "allowances_charges": [{"indicator": "charge", "code": "D240", "amount": "25.50"}],
            "tax_amount": "0",
            "total_amount": total,
        }
    )


def test_invoice_that_balances() -> None:
    invoice = _invoice("4445.50")
    assert invoice.computed_total() == Decimal("4445.50")
    assert invoice.problems() == []


def test_invoice_that_does_not_balance_is_still_captured() -> None:
    invoice = _invoice("4470.50")
    assert invoice.total_amount == Decimal("4470.50")
    assert invoice.problems() == [
        "total_amount 4470.50 differs from lines, allowances/charges and tax 4445.50",
    ]
    assert invoice.problems(tolerance=Decimal("25")) == []


def _supply_usage(**changes: object) -> SupplyUsage:
    data = {
        "encounter": {"encounter_id": "V88812", "account_number": "A5521", "assigning_authority": "SEMC"},
        "patient": {"id": "MRN00417", "assigning_authority": "SEMC", "id_type": "MR"},
        "item": {"type": "buyer_item", "value": "100234"},
        "quantity": "1",
        "uom": "EA",
        "lot": "L23K117",
        "serial": "SN-0048812",
        "location": "OR-3",
        "clinician_id": "1234567893",
        "used_at": "2024-03-14T09:42:00-05:00",
        "high_cost": True,
        "chargeable": True,
        "charge_code": "27800991",
        "hcpcs": "C1776",
        "contract_id": "MS-10442",
        **changes,
    }
    return SupplyUsage.model_validate(data)


def test_supply_usage_and_charge_event() -> None:
    usage = _supply_usage()
    assert usage.billing_problems() == []
    assert _supply_usage(charge_code=None, contract_id=None).billing_problems() == [
        "high-cost chargeable item without charge_code",
        "high-cost item without contract_id",
    ]
    charge = ChargeEvent.model_validate(
        {
            "encounter": {"account_number": "A5521"},
            "service_date": "2024-03-14",
            "charge_code": "27800991",
            "procedure": {"code": "C1776", "system": "hcpcs"},
            "revenue_code": "0278",
            "item": {"type": "buyer_item", "value": "100234"},
            "quantity": "1",
            "unit_price": "6450.00",
            "amount": "6450.00",
            "department": "OR",
            "cost_centre": "7010",
        }
    )
    assert charge.problems() == []
    assert ChargeEvent.model_validate({**charge.model_dump(), "amount": "6000"}).problems() == [
        "amount is not quantity x unit_price"
    ]
    with pytest.raises(ValidationError, match="encounter_id or account_number"):
        ChargeEvent.model_validate({**charge.model_dump(), "encounter": {"facility": "SEMC"}})


def _remittance(payment: str) -> Remittance:
    claim = {
        "claim_id": "PCN-0001",
        "status": "1",
        "charge_amount": "1000.00",
        "paid_amount": "700.00",
        "patient_responsibility": "100.00",
        "patient": {"id": "W123456789", "id_type": "MI"},
        "service_lines": [
            {
                "procedure": {"code": "99213", "system": "cpt"},
                "charge_amount": "1000.00",
                "paid_amount": "700.00",
                "adjustments": [
                    {"group": "CO", "reason_code": "45", "amount": "200.00"},
                    {"group": "PR", "reason_code": "2", "amount": "100.00"},
                ],
            }
        ],
    }
    denied = {"claim_id": "PCN-0002", "status": "4", "charge_amount": "250", "paid_amount": "0"}
    denied["adjustments"] = [{"group": "CO", "reason_code": "197", "amount": "250"}]
    return Remittance.model_validate(
        {
            "payer": {"name": "Example Health Plan", "ids": [{"type": "payer_id", "value": "87726"}]},
            "payee": {"name": "St. Example Medical Center", "ids": [{"type": "npi", "value": "1234567893"}]},
            "payment": {"method": "ach", "amount": payment, "date": "2024-04-02", "trace_number": "EFT0001"},
            "claims": [claim, denied],
            "provider_adjustments": [{"reason_code": "WO", "reference": "OVERPAY-1", "amount": "50.00"}],
        }
    )


def test_remittance_that_balances() -> None:
    remittance = _remittance("650.00")
    assert remittance.claims[0].service_lines[0].adjustments[0].group.description == "Contractual obligations"
    assert remittance.balance_problems() == []


def test_remittance_that_does_not_balance() -> None:
    remittance = _remittance("700.00")
    assert remittance.balance_problems() == [
        "payment amount 700.00 is not claim payments less provider adjustments 650.00"
    ]
    broken = remittance.model_dump()
    broken["claims"][0]["service_lines"][0]["paid_amount"] = "690.00"
    problems = Remittance.model_validate(broken).balance_problems()
    assert "claims[0].service_lines[0]: paid_amount is not charge_amount less adjustments" in problems
    assert not any("PCN" in problem for problem in problems)  # positions, not claim numbers


def test_unknown_keys_are_rejected() -> None:
    data = _supply_usage().model_dump()
    with pytest.raises(ValidationError, match="sku"):
        SupplyUsage.model_validate({**data, "sku": "100234"})
    data["encounter"]["patient_name"] = "DOE^JANE"
    with pytest.raises(ValidationError, match="patient_name"):
        SupplyUsage.model_validate(data)


@pytest.mark.parametrize("junk", ["1,234.00", "12.5.3", "NaN", "Infinity", "", "12 EA", 12.5])
def test_decimal_fields_refuse_junk_and_floats(junk: object) -> None:
    with pytest.raises(ValidationError, match="quantity"):
        _supply_usage(quantity=junk)


def test_decimals_stay_exact_and_strings_are_stripped() -> None:
    usage = _supply_usage(quantity=" 0.10 ", lot="  L23K117 ")
    assert usage.quantity == Decimal("0.10") and usage.lot == "L23K117"
    assert SupplyUsage.model_validate_json(usage.model_dump_json().replace('"0.10"', "0.1")).quantity == Decimal("0.1")


def test_objects_are_frozen() -> None:
    usage = _supply_usage()
    with pytest.raises(ValidationError):
        usage.quantity = Decimal(2)  # type: ignore[misc]


def _examples() -> list[BaseModel]:
    return [
        _item(),
        _bill_only_po(),
        _ship_notice(),
        _invoice("4445.50"),
        _supply_usage(),
        _remittance("650.00"),
        Location(location_id="OR-3", kind="operating_room", cost_centre="7010"),
    ]


@pytest.mark.parametrize("obj", _examples(), ids=lambda obj: type(obj).__name__)
def test_json_round_trip(obj: BaseModel) -> None:
    text = obj.model_dump_json()
    assert type(obj).model_validate_json(text) == obj
    assert '"schema_version":"1.0"' in text


def test_models_are_business_objects_with_schema_version() -> None:
    assert set(MODELS) == {
        "Item",
        "Supplier",
        "Location",
        "ContractPrice",
        "PurchaseOrder",
        "PurchaseOrderAck",
        "ShipNotice",
        "Invoice",
        "ChargeEvent",
        "SupplyUsage",
        "Remittance",
        "PatientRef",
    }
    for name, model in MODELS.items():
        assert model.model_fields["schema_version"].default == "1.0", name


def _all_fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> list[tuple[str, str | None]]:
    found = []
    seen.add(model)
    for name, field in model.model_fields.items():
        found.append((f"{model.__name__}.{name}", field.description))
        for arg in _model_args(field.annotation):
            if arg not in seen:
                found.extend(_all_fields(arg, seen))
    return found


def _model_args(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in getattr(annotation, "__args__", ()) for model in _model_args(arg)]


def test_every_field_has_a_description() -> None:
    seen: set[type[BaseModel]] = set()
    missing = [name for model in MODELS.values() for name, text in _all_fields(model, seen) if not text]
    assert missing == []


def test_committed_schemas_match_a_fresh_export(tmp_path: Path) -> None:
    # Regenerate: python -c "from pathlib import Path; from engine.canonical import export_schemas; export_schemas(Path('docs/schemas/canonical'))"
    fresh = export_schemas(tmp_path)
    assert [path.name for path in fresh] == sorted(f"{name}.schema.json" for name in MODELS)
    committed = sorted(path.name for path in SCHEMAS.glob("*.schema.json"))
    assert committed == [path.name for path in fresh], "stale or missing schema files; see docs/canonical.md"
    for path in fresh:
        assert (SCHEMAS / path.name).read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), path.name
    assert path.read_text(encoding="utf-8").endswith("}\n")
