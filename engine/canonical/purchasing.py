"""Purchase orders (X12 850, HL7 OMS/OMN) and their acknowledgements (X12 855).

Hospital orders are not all stock replenishment: implants used from consignment or trunk
stock are ordered *after* the surgery ("bill-only") so the supplier can invoice them, and
those lines carry the case, the patient reference, lot and serial for recall tracing.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from pydantic import Field

from engine.canonical.common import (
    Amount,
    BusinessObject,
    CanonicalModel,
    CodedEnum,
    Currency,
    Party,
    ProcedureCode,
    Reference,
    Text,
    UnitCode,
)
from engine.canonical.item import ContractRef, ItemRef
from engine.canonical.patient import EncounterRef, PatientRef


class OrderType(StrEnum):
    """Why the order is placed (GS1 US order-to-cash guide, appendix A)."""

    STOCK = "stock"  # replenishment of stocked items
    NON_STOCK = "non_stock"  # special order for a department
    DROP_SHIP = "drop_ship"  # supplier ships straight to the point of use
    CONSIGNMENT = "consignment"  # replenishment of supplier-owned stock on site
    BILL_ONLY = "bill_only"  # already used from consignment/trunk stock: no shipment, invoice only
    BILL_AND_REPLACE = "bill_and_replace"  # used from consignment and to be replenished (needs a receipt)


class OrderPurpose(StrEnum):
    """What the document does to the order (X12 BEG01 / 860 BCH01)."""

    ORIGINAL = "original"
    CHANGE = "change"
    CANCEL = "cancel"
    REPLACE = "replace"


class BillOnlyDetail(CanonicalModel):
    """Clinical context of a bill-only line: which case used which implant, for billing and recalls."""

    case_id: str | None = Field(None, description="Surgical case or procedure log number.")
    procedure: ProcedureCode | None = Field(None, description="Procedure the item was used in.")
    procedure_date: dt.date | None = Field(None, description="Date of the procedure.")
    surgeon_id: str | None = Field(None, description="Surgeon identifier (NPI or local id).")
    patient: PatientRef | None = Field(None, description="Patient the item was implanted in.")
    encounter: EncounterRef | None = Field(None, description="Encounter of the procedure.")
    lot: str | None = Field(None, description="Lot number used (X12 REF LT).")
    serial: str | None = Field(None, description="Serial number used (X12 REF SE/SN).")
    expiry_date: dt.date | None = Field(None, description="Expiry date of the unit used.")
    implant_date: dt.date | None = Field(None, description="Date the device was implanted.")
    udi: str | None = Field(None, description="Full UDI as scanned (device identifier plus production identifiers).")


class PurchaseOrderLine(CanonicalModel):
    """One ordered item (X12 PO1 with its PID, REF and SCH)."""

    line_number: Text = Field(description="Line number assigned by the buyer (PO101).")
    item: ItemRef = Field(description="The item ordered.")
    quantity: Amount = Field(gt=0, description="Quantity ordered, in uom.")
    uom: UnitCode
    unit_price: Amount | None = Field(None, description="Expected price per uom.")
    contract: ContractRef | None = Field(None, description="Contract and tier the price comes from.")
    requested_delivery_date: dt.date | None = Field(None, description="When the buyer wants it.")
    cost_centre: str | None = Field(None, description="Cost centre charged, for non-stock orders.")
    bill_only: BillOnlyDetail | None = Field(None, description="Case, patient, lot and serial of a bill-only line.")


class PurchaseOrder(BusinessObject):
    """A purchase order with its parties and lines."""

    po_number: Text = Field(description="Purchase order number (BEG03).")
    revision: str | None = Field(None, description="Change order sequence (860), when this is a revision.")
    purpose: OrderPurpose = Field(OrderPurpose.ORIGINAL, description="New order, change or cancellation.")
    order_type: OrderType = Field(description="Stock, non-stock, drop-ship, consignment or bill-only.")
    order_date: dt.date = Field(description="Date of the order (BEG05).")
    buyer: Party = Field(description="Ordering organisation (N1 BY).")
    supplier: Party = Field(description="Supplier the order is sent to (N1 SU/VN).")
    ship_to: Party = Field(description="Delivery location (N1 ST), with its GLN or HIN.")
    bill_to: Party | None = Field(None, description="Invoice recipient (N1 BT).")
    mark_for: Party | None = Field(None, description="Department to deliver to inside ship-to (N1 Z7).")
    currency: Currency = "USD"
    contract: ContractRef | None = Field(None, description="Contract for all lines, unless a line says otherwise.")
    references: list[Reference] = Field(default_factory=list, description="Other references (department, ...).")
    lines: list[PurchaseOrderLine] = Field(min_length=1, description="Ordered items.")

    def problems(self) -> list[str]:
        """Bill-only lines missing what billing and recall tracing need; empty when complete.

        A list rather than a validation error: partners omit these fields and the order must
        still be captured and routed to a person.
        """
        if self.order_type not in (OrderType.BILL_ONLY, OrderType.BILL_AND_REPLACE):
            return []
        found = []
        for line in self.lines:
            missing = _bill_only_gaps(line.bill_only)
            if missing:
                found.append(f"line {line.line_number}: bill-only line without {', '.join(missing)}")
        return found


def _bill_only_gaps(detail: BillOnlyDetail | None) -> list[str]:
    if detail is None:
        return ["case", "patient", "lot or serial"]
    gaps = []
    if not (detail.case_id or detail.procedure):
        gaps.append("case")
    if detail.patient is None:
        gaps.append("patient")
    if not (detail.lot or detail.serial):
        gaps.append("lot or serial")
    return gaps


class AckStatus(CodedEnum):
    """Acknowledgement of the whole order (X12 BAK02, element 587), the code as sent.

    Hospital suppliers mostly send AD, AC, RD and RJ; every code of the X12 list is kept
    as is, and ``bucket`` rolls them up into accepted, accepted_with_changes, on_hold,
    rejected or other.
    """

    AD = "AD", "Acknowledge - with detail, no change"
    AC = "AC", "Acknowledge - with detail and change"
    AE = "AE", "Acknowledge - with exception detail only"
    AH = "AH", "Acknowledge - hold status"
    AK = "AK", "Acknowledge - no detail or change"
    AP = "AP", "Acknowledge - product replenishment"
    AT = "AT", "Accepted"
    NA = "NA", "No acknowledgment needed"
    RD = "RD", "Reject with detail"
    RF = "RF", "Reject with exception detail only"
    RJ = "RJ", "Rejected - no detail"
    RN = "RN", "Rejected - not as agreed"
    RO = "RO", "Rejected with counter offer"
    RV = "RV", "Rejected - violates industry practices"
    ZZ = "ZZ", "Mutually defined"

    @property
    def bucket(self) -> str:
        """Roll-up of the header status: accepted, accepted_with_changes, on_hold, rejected or other."""
        return _ACK_BUCKETS.get(self.value, "other")


_ACK_BUCKETS = {
    "AD": "accepted",
    "AK": "accepted",
    "AP": "accepted",
    "AT": "accepted",
    "AC": "accepted_with_changes",
    "AE": "accepted_with_changes",
    "AH": "on_hold",
    "RD": "rejected",
    "RF": "rejected",
    "RJ": "rejected",
    "RN": "rejected",
    "RO": "rejected",
    "RV": "rejected",
}


class LineStatus(CodedEnum):
    """Line item status (X12 ACK01, element 668), the codes hospital suppliers send."""

    AC = "AC", "Item accepted and shipped"
    AR = "AR", "Item accepted and released for shipment"
    BP = "BP", "Item accepted - partial shipment, balance backordered"
    DR = "DR", "Item accepted - date rescheduled"
    IA = "IA", "Item accepted"
    IB = "IB", "Item backordered"
    IC = "IC", "Item accepted - changes made"
    ID = "ID", "Item deleted"
    IE = "IE", "Item accepted, price pending"
    IF = "IF", "Item on hold, incomplete description"
    IH = "IH", "Item on hold"
    IP = "IP", "Item accepted - price changed"
    IQ = "IQ", "Item accepted - quantity changed"
    IR = "IR", "Item rejected"
    IS = "IS", "Item accepted - substitution made"
    IW = "IW", "Item on hold - waiver required"
    R1 = "R1", "Item rejected, not a contract item"
    R2 = "R2", "Item rejected, invalid item product number"
    R3 = "R3", "Item rejected, invalid unit of issue"
    R4 = "R4", "Item rejected, contract item not available"
    SP = "SP", "Item accepted - schedule date pending"

    @property
    def bucket(self) -> str:
        """GHX-style roll-up: accepted, accepted_with_changes, backordered, on_hold, rejected, deleted."""
        return _BUCKETS.get(self.value, "accepted_with_changes")


_BUCKETS = {
    "AC": "accepted",
    "AR": "accepted",
    "IA": "accepted",
    "IB": "backordered",
    "BP": "backordered",
    "IF": "on_hold",
    "IH": "on_hold",
    "IW": "on_hold",
    "IR": "rejected",
    "R1": "rejected",
    "R2": "rejected",
    "R3": "rejected",
    "R4": "rejected",
    "ID": "deleted",
}


class LineAck(CanonicalModel):
    """One status for (part of) a line; a line can have several, e.g. 6 accepted and 4 backordered."""

    status: LineStatus = Field(description="Line status code (ACK01).")
    quantity: Amount | None = Field(None, description="Quantity this status applies to (ACK02).")
    uom: UnitCode | None = Field(None, description="Unit of that quantity (ACK03); a change here is a UOM change.")
    scheduled_date: dt.date | None = Field(None, description="Promised ship or delivery date (ACK05).")
    date_qualifier: str | None = Field(None, description="What the date means (ACK04, e.g. 067, 068).")
    substitute: ItemRef | None = Field(None, description="Item shipped instead (ACK07 onwards), for IS.")


class PurchaseOrderAckLine(CanonicalModel):
    """The supplier's answer for one ordered line (PO1 + ACK loop)."""

    line_number: Text = Field(description="Buyer's line number being acknowledged.")
    item: ItemRef | None = Field(None, description="Item as the supplier understands it.")
    ordered_quantity: Amount | None = Field(None, description="Quantity as ordered, echoed back.")
    uom: UnitCode | None = Field(None, description="Unit of the ordered quantity.")
    unit_price: Amount | None = Field(None, description="Price the supplier will invoice.")
    acks: list[LineAck] = Field(min_length=1, description="Statuses for the line.")


class PurchaseOrderAck(BusinessObject):
    """A purchase order acknowledgement."""

    po_number: Text = Field(description="Order acknowledged (BAK03).")
    ack_date: dt.date = Field(description="Date of the acknowledgement (BAK04 or BAK09).")
    status: AckStatus = Field(description="Header status (BAK02).")
    supplier: Party | None = Field(None, description="Acknowledging supplier.")
    buyer: Party | None = Field(None, description="Buyer of the order.")
    supplier_order_number: str | None = Field(None, description="Supplier's sales order number (BAK08).")
    currency: Currency = "USD"
    lines: list[PurchaseOrderAckLine] = Field(default_factory=list, description="Line statuses (none for RJ).")
