"""Advance ship notices (X12 856): shipment, orders, packs, items.

The 856 is a hierarchy (HL loops): shipment (S) > order (O) > pack (P, an SSCC-labelled
carton or pallet) > item (I) with lot, expiry, serial and UDI, which hospitals need to
receive implants and drugs against the order and to trace recalls. Some suppliers skip the
pack level, so an order may hold items directly.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from pydantic import Field

from engine.canonical.common import (
    Amount,
    BusinessObject,
    CanonicalModel,
    Party,
    Quantity,
    Reference,
    Text,
    UnitCode,
    gs1_check_digit_ok,
)
from engine.canonical.item import ItemRef

SSCC_PATTERN = r"^\d{18}$"
GTIN_PATTERN = r"^\d{14}$"


class ShippedItem(CanonicalModel):
    """An item line in a pack, with the production identifiers printed on the label."""

    line_number: str | None = Field(None, description="Purchase order line it fulfils (LIN01).")
    item: ItemRef = Field(description="The item shipped.")
    gtin: str | None = Field(None, pattern=GTIN_PATTERN, description="GTIN-14 of the packaging level shipped.")
    quantity: Amount = Field(gt=0, description="Quantity shipped (SN102).")
    uom: UnitCode
    lot: str | None = Field(None, description="Lot or batch number (REF LT).")
    expiry_date: dt.date | None = Field(None, description="Expiry date (DTM 036).")
    serial_numbers: list[Text] = Field(default_factory=list, description="Serial numbers of the units (REF SE/SN).")
    udi: str | None = Field(None, description="Full UDI (device identifier plus production identifiers).")


class PackLevelKind(StrEnum):
    """The physical level of a pack (HL03 P or T)."""

    CARTON = "carton"
    PALLET = "pallet"
    TOTE = "tote"


class Pack(CanonicalModel):
    """A labelled shipping unit (HL P) and what it contains."""

    sscc: str | None = Field(None, pattern=SSCC_PATTERN, description="SSCC-18 on the label (MAN GM).")
    kind: PackLevelKind = Field(PackLevelKind.CARTON, description="Carton, pallet or tote.")
    parent_sscc: str | None = Field(
        None, pattern=SSCC_PATTERN, description="SSCC of the pallet it sits on (S/O/T/P/I)."
    )
    weight: Quantity | None = Field(None, description="Gross weight with its unit (LB, KG).")
    items: list[ShippedItem] = Field(default_factory=list, description="Items in the pack.")


class ShippedOrder(CanonicalModel):
    """An order level (HL O): which purchase order the packs below fulfil."""

    po_number: Text = Field(description="Purchase order number (PRF01).")
    po_date: dt.date | None = Field(None, description="Order date (PRF04).")
    mark_for: Party | None = Field(None, description="Department to deliver to inside ship-to.")
    packs: list[Pack] = Field(default_factory=list, description="Packs of this order.")
    items: list[ShippedItem] = Field(default_factory=list, description="Items not packed in a labelled pack.")


class Carrier(CanonicalModel):
    """Who moves the shipment (TD5)."""

    scac: str | None = Field(None, description="Standard Carrier Alpha Code.")
    name: str | None = Field(None, description="Carrier name.")
    service_level: str | None = Field(None, description="Service, e.g. next day.")


class ShipNotice(BusinessObject):
    """An advance ship notice: one shipment, its orders, packs and items."""

    shipment_id: Text = Field(description="Supplier's shipment identification (BSN02).")
    notice_date: dt.date = Field(description="Date the notice was created (BSN03).")
    shipped_at: dt.datetime | None = Field(None, description="When the shipment left (DTM 011).")
    expected_delivery: dt.date | None = Field(None, description="Estimated delivery date (DTM 017).")
    supplier: Party = Field(description="Shipping supplier.")
    ship_from: Party | None = Field(None, description="Origin (N1 SF).")
    ship_to: Party = Field(description="Destination (N1 ST), with GLN or HIN.")
    carrier: Carrier | None = Field(None, description="Carrier and service.")
    tracking_number: str | None = Field(None, description="Carrier tracking number (REF CN).")
    bill_of_lading: str | None = Field(None, description="Bill of lading number (REF BM).")
    package_count: int | None = Field(None, ge=0, description="Number of packages (TD101).")
    gross_weight: Quantity | None = Field(None, description="Total weight (TD106/TD107).")
    references: list[Reference] = Field(default_factory=list, description="Other shipment references.")
    orders: list[ShippedOrder] = Field(min_length=1, description="Orders in the shipment.")

    def items(self) -> list[ShippedItem]:
        """Every shipped item, packed or not, in document order."""
        found: list[ShippedItem] = []
        for order in self.orders:
            found.extend(order.items)
            for pack in order.packs:
                found.extend(pack.items)
        return found

    def problems(self) -> list[str]:
        """GS1 check digits that do not verify; empty when all SSCCs and GTINs are well formed."""
        found = []
        for order_index, order in enumerate(self.orders):
            for pack_index, pack in enumerate(order.packs):
                if pack.sscc and not gs1_check_digit_ok(pack.sscc):
                    found.append(f"orders[{order_index}].packs[{pack_index}].sscc: check digit does not verify")
        for index, item in enumerate(self.items()):
            if item.gtin and not gs1_check_digit_ok(item.gtin):
                found.append(f"item {index + 1}: gtin check digit does not verify")
        return found
