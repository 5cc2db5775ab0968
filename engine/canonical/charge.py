"""Patient charges and supply usage (HL7 DFT^P03 FT1, point-of-use cabinets, OR systems).

One implant used in surgery becomes a ``SupplyUsage`` (inventory: decrement stock, trace the
lot and serial) and, when chargeable, a ``ChargeEvent`` (billing: post to the patient's
account). The usage starts with what the clinical system knows; the enrichment fields are
filled from the item master so that downstream systems and rules see one complete object.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum

from pydantic import Field

from engine.canonical.common import Amount, BusinessObject, Currency, ProcedureCode, Text, UnitCode
from engine.canonical.item import ItemIdentifier
from engine.canonical.patient import EncounterRef, PatientRef


class ChargeAction(StrEnum):
    """What the financial transaction does (HL7 FT1-6, table 0017: CG charge, CD credit)."""

    CHARGE = "charge"
    CREDIT = "credit"
    ADJUSTMENT = "adjustment"


class ChargeEvent(BusinessObject):
    """A charge posted to a patient account for a procedure or supply."""

    transaction_id: str | None = Field(None, description="Source transaction id (FT1-2), for deduplication.")
    action: ChargeAction = Field(ChargeAction.CHARGE, description="Charge, credit or adjustment.")
    encounter: EncounterRef = Field(description="Account or encounter the charge posts to.")
    patient: PatientRef | None = Field(None, description="Patient identifier, when the receiver needs it.")
    service_date: dt.date = Field(description="Date of service (FT1-4).")
    posted_at: dt.datetime | None = Field(None, description="When the charge was posted (FT1-5).")
    charge_code: Text = Field(description="Charge description master (CDM) code (FT1-7).")
    procedure: ProcedureCode | None = Field(None, description="CPT or HCPCS code billed (FT1-25).")
    revenue_code: str | None = Field(None, pattern=r"^\d{4}$", description="UB-04 revenue code, e.g. 0278 implants.")
    item: ItemIdentifier | None = Field(None, description="Supply item charged, when it is a supply charge.")
    description: str | None = Field(None, description="Charge description.")
    quantity: Amount = Field(description="Units charged (FT1-10), negative on credits from some systems.")
    uom: UnitCode | None = Field(None, description="Billing unit of measure.")
    unit_price: Amount | None = Field(None, description="Price per unit (FT1-12).")
    amount: Amount | None = Field(None, description="Extended amount (FT1-11).")
    currency: Currency = "USD"
    department: str | None = Field(None, description="Performing department (FT1-13).")
    cost_centre: str | None = Field(None, description="Cost centre of the department.")
    ordering_clinician_id: str | None = Field(None, description="Ordering clinician identifier (FT1-21).")
    performing_clinician_id: str | None = Field(None, description="Performing clinician identifier (FT1-20).")

    def problems(self) -> list[str]:
        """Whether amount equals quantity times unit price, when all three are given."""
        if self.amount is None or self.unit_price is None:
            return []
        expected = (self.quantity * self.unit_price).quantize(Decimal("0.01"))
        # No values in the text: a patient's charge is PHI.
        return [] if self.amount == expected else ["amount is not quantity x unit_price"]


class SupplyUsage(BusinessObject):
    """An item consumed for a patient: what, how many, where, by whom and when."""

    usage_id: str | None = Field(None, description="Source transaction id, for deduplication.")
    encounter: EncounterRef = Field(description="Encounter the item was used in.")
    patient: PatientRef | None = Field(None, description="Patient identifier, for implant recall tracing.")
    item: ItemIdentifier = Field(description="Item used, typed (usually buyer_item from the EHR).")
    quantity: Amount = Field(description="Quantity used in uom; negative for a return.")
    uom: UnitCode
    lot: str | None = Field(None, description="Lot number of the unit used.")
    serial: str | None = Field(None, description="Serial number of the unit used.")
    expiry_date: dt.date | None = Field(None, description="Expiry date of the unit used.")
    udi: str | None = Field(None, description="Full UDI as scanned.")
    location: Text = Field(description="Location the item was taken from or used in (FT1-13, PV1-3).")
    cost_centre: str | None = Field(None, description="Cost centre of the location (from the location table).")
    clinician_id: str | None = Field(None, description="Clinician who used the item.")
    case_id: str | None = Field(None, description="Surgical case, for implants.")
    procedure: ProcedureCode | None = Field(None, description="Procedure the item was used in.")
    used_at: dt.datetime = Field(description="When it was used; timezone-aware when the source gives an offset.")
    item_description: str | None = Field(None, description="Enrichment: item description from the item master.")
    unit_cost: Amount | None = Field(None, description="Enrichment: cost of one uom.")
    currency: Currency = "USD"
    high_cost: bool | None = Field(None, description="Enrichment: high-cost flag; None when not looked up.")
    chargeable: bool | None = Field(None, description="Enrichment: whether the usage is billable to the patient.")
    charge_code: str | None = Field(None, description="Enrichment: CDM code to bill.")
    hcpcs: str | None = Field(None, description="Enrichment: HCPCS code to bill.")
    contract_id: str | None = Field(None, description="Enrichment: contract the item was bought under.")

    def billing_problems(self) -> list[str]:
        """Why a high-cost usage cannot be billed or costed; empty otherwise (or when not enriched)."""
        if not self.high_cost:
            return []
        found = []
        if self.chargeable and not self.charge_code:
            found.append("high-cost chargeable item without charge_code")
        if not self.contract_id:
            found.append("high-cost item without contract_id")
        return found
