"""Master data: items, suppliers, locations and contract prices.

Hospitals never know an item by one "sku": the same implant is a GTIN per packaging level
to the manufacturer, a catalogue number to the distributor and an item master number to the
hospital. Items are bought in cases, issued in boxes and billed per each, so an item carries
its packaging levels and converts quantities between them.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from engine.canonical.common import (
    Address,
    Amount,
    BusinessObject,
    CanonicalModel,
    Currency,
    Party,
    PartyId,
    PositiveAmount,
    Quantity,
    Text,
    UnitCode,
)


class ItemIdType(StrEnum):
    """Kinds of item identifiers (X12 235 qualifiers in comments)."""

    GTIN = "gtin"  # UK: GTIN-14, one per packaging level
    NDC = "ndc"  # N4: National Drug Code 5-4-2
    HIBC = "hibc"  # HI/HC: HIBC Labeler Identification Code based number
    MANUFACTURER_PART = "manufacturer_part"  # MG
    VENDOR_PART = "vendor_part"  # VC/VN/VP: the distributor's or vendor's catalogue number
    BUYER_ITEM = "buyer_item"  # IN/BP: the hospital item master number
    UPN = "upn"  # UP/EN: Universal Product Number
    UDI_DI = "udi_di"  # FDA UDI device identifier (a GTIN or HIBC DI)
    OTHER = "other"


class ItemIdentifier(CanonicalModel):
    """One typed identifier of an item, optionally tied to a packaging level."""

    type: ItemIdType = Field(description="What kind of identifier this is.")
    value: Text = Field(description="The identifier as printed or transmitted.")
    packaging_uom: UnitCode | None = Field(None, description="Packaging level it identifies (a GTIN per CA/BX/EA).")
    quantity_per_pack: PositiveAmount | None = Field(
        None, description="Base units in one pack of that level, e.g. 20 (EA in a CA)."
    )
    issuer: str | None = Field(None, description="Who assigned it (vendor name or GLN), for vendor/buyer numbers.")
    qualifier: str | None = Field(
        None, description="The source qualifier as received (e.g. X12 235 code BL, UI), kept when the type is other."
    )


class ItemRef(CanonicalModel):
    """An item as named in a transaction line: its identifiers and, sometimes, a description."""

    identifiers: list[ItemIdentifier] = Field(min_length=1, description="Typed identifiers sent on the line.")
    description: str | None = Field(None, description="Item description as sent.")

    def id_of(self, kind: ItemIdType) -> str | None:
        """The first identifier of one kind, or None."""
        return next((item_id.value for item_id in self.identifiers if item_id.type == kind), None)


class PackLevel(CanonicalModel):
    """A packaging level of an item and how many base units it holds."""

    uom: UnitCode
    base_quantity: PositiveAmount = Field(description="Base units in one of this level, e.g. CA = 20 (EA).")


class Item(BusinessObject):
    """An item master record: identifiers, packaging and units, classification, billing flags."""

    identifiers: list[ItemIdentifier] = Field(min_length=1, description="All known identifiers of the item.")
    description: Text = Field(description="Item description.")
    manufacturer: Party | None = Field(None, description="Manufacturer (X12 N1 MF, HL7 ITM manufacturer).")
    base_uom: UnitCode = Field(description="Smallest unit, in which pack levels are counted (usually EA).")
    pack_levels: list[PackLevel] = Field(default_factory=list, description="Larger packaging levels.")
    purchase_uom: UnitCode = Field(description="Unit the item is ordered in from the supplier.")
    issue_uom: UnitCode = Field(description="Unit the storeroom issues to departments.")
    billing_uom: UnitCode = Field(description="Unit the patient is charged in.")
    unspsc: str | None = Field(None, description="UNSPSC classification code.")
    gmdn: str | None = Field(None, description="GMDN device term code.")
    implant: bool = Field(False, description="Whether it is an implantable device (tracked by lot and serial).")
    lot_controlled: bool = Field(False, description="Whether usage must record a lot number.")
    serial_controlled: bool = Field(False, description="Whether usage must record a serial number.")
    chargeable: bool = Field(False, description="Whether using it creates a patient charge.")
    high_cost: bool = Field(False, description="Whether it is a high-cost item that must never go unbilled.")
    charge_code: str | None = Field(None, description="Charge description master (CDM) code billed for it.")
    hcpcs: str | None = Field(None, description="HCPCS code billed for it, e.g. a C-code for a device.")
    unit_cost: Amount | None = Field(None, description="Cost of one issue unit.")
    currency: Currency = "USD"
    active: bool = Field(True, description="Whether the item may be ordered and used.")

    @model_validator(mode="after")
    def _units_are_known(self) -> Self:
        for field in ("purchase_uom", "issue_uom", "billing_uom"):
            if getattr(self, field) not in self._factors():
                raise ValueError(f"{field} must be the base_uom or one of the pack_levels")
        return self

    def _factors(self) -> dict[str, Decimal]:
        factors = {level.uom: level.base_quantity for level in self.pack_levels}
        factors[self.base_uom] = Decimal(1)
        return factors

    def convert(self, quantity: Quantity, to_uom: str) -> Quantity:
        """Express a quantity of this item in another of its units.

        With pack levels CA = 20 and BX = 5 (base EA), ``convert(Quantity(value=2, uom="BX"), "EA")``
        gives 10 EA and ``convert(Quantity(value=3, uom="EA"), "BX")`` gives 0.6 BX.
        Raises ``ValueError`` when either unit is not a packaging level of the item.
        """
        factors = self._factors()
        for unit in (quantity.uom, to_uom):
            if unit not in factors:
                raise ValueError(f"item has no packaging level {unit!r}")
        return Quantity(value=quantity.value * factors[quantity.uom] / factors[to_uom], uom=to_uom)


class SupplierRole(StrEnum):
    """The roles one company can play (X12 N101 MF, DS, VN, SU)."""

    MANUFACTURER = "manufacturer"
    DISTRIBUTOR = "distributor"
    VENDOR = "vendor"


class Supplier(BusinessObject):
    """A supplier: manufacturer, distributor or vendor, with its typed identifiers."""

    supplier_id: Text = Field(description="The hospital's vendor number in the ERP.")
    name: Text = Field(description="Legal or trading name.")
    roles: list[SupplierRole] = Field(min_length=1, description="Roles it plays towards the hospital.")
    ids: list[PartyId] = Field(default_factory=list, description="GLN, HIN, DUNS, tax id, ...")
    address: Address | None = Field(None, description="Main address.")
    remit_to: Party | None = Field(None, description="Where payments go, when it differs.")
    active: bool = Field(True, description="Whether orders may be placed.")


class LocationKind(StrEnum):
    """What a location is, from the whole hospital down to a supply cabinet."""

    FACILITY = "facility"
    DEPARTMENT = "department"
    STOREROOM = "storeroom"
    PAR_LOCATION = "par_location"
    OPERATING_ROOM = "operating_room"
    CABINET = "cabinet"
    DOCK = "dock"
    OTHER = "other"


class Location(BusinessObject):
    """A place that receives, stocks or consumes supplies, and the cost centre it charges."""

    location_id: Text = Field(description="Location code used by the EHR and ERP (e.g. FT1-13, PV1-3).")
    name: str | None = Field(None, description="Display name.")
    kind: LocationKind = Field(description="What kind of place this is.")
    cost_centre: Text = Field(description="General-ledger cost centre that consumption is charged to.")
    facility: str | None = Field(None, description="Facility code the location belongs to.")
    parent_id: str | None = Field(None, description="location_id of the enclosing location (IDN > facility > dept).")
    ids: list[PartyId] = Field(default_factory=list, description="GLN or other identifiers of the place.")
    address: Address | None = Field(None, description="Postal address, for ship-to locations.")


class Gpo(CanonicalModel):
    """A group purchasing organisation (X12 N1 BG), e.g. Vizient, Premier, HealthTrust."""

    name: Text = Field(description="GPO name.")
    id: str | None = Field(None, description="GPO identifier as assigned by the supplier or the hospital.")


class ContractRef(CanonicalModel):
    """The contract and tier a transaction line is priced under."""

    contract_id: Text = Field(description="Contract number (X12 REF BC).")
    tier: str | None = Field(None, description="Price tier, e.g. C01 (X12 CTP BG tiers) or a GPO tier name.")
    gpo: str | None = Field(None, description="GPO name or id.")


class ContractPrice(BusinessObject):
    """A contract price: item, packaging unit, GPO, tier, contract and effective dates."""

    item: ItemRef = Field(description="The item priced.")
    supplier: Party = Field(description="Who sells at this price.")
    gpo: Gpo | None = Field(None, description="GPO whose contract it is; None for a local contract.")
    buyer: Party | None = Field(None, description="A specific buyer, for a customer price list on top of the GPO.")
    contract_id: Text = Field(description="Contract number.")
    tier: str | None = Field(None, description="Tier within the contract.")
    uom: UnitCode = Field(description="Unit the price is per (often CA or BX).")
    price: Amount = Field(ge=0, description="Price per uom.")
    currency: Currency = "USD"
    effective_from: dt.date = Field(description="First day the price applies (X12 DTM 092).")
    effective_to: dt.date | None = Field(None, description="Last day it applies (X12 DTM 093); None = open-ended.")

    @model_validator(mode="after")
    def _dates_ordered(self) -> Self:
        if self.effective_to is not None and self.effective_to < self.effective_from:
            raise ValueError("effective_to is before effective_from")
        return self

    def applies_on(self, day: dt.date) -> bool:
        """Whether the price is in force on a given day."""
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)
