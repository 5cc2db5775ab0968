"""The parts of the canonical JSON objects the Tryton connectors read.

Connectors may not import ``engine.canonical`` (import layers), so these lenient models
read the canonical ``SupplyUsage``, ``Invoice`` and ``Item`` JSON by the same field names;
keys the connectors do not use are ignored. The mapping transform that produced the JSON
already validated it against the canonical models.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["InvoiceIn", "InvoiceLineIn", "UsageIn"]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


class Identifier(_Lenient):
    """A typed identifier (canonical ItemIdentifier / PartyId)."""

    type: str = Field(min_length=1)
    value: str = Field(min_length=1)


class UsageIn(_Lenient):
    """A canonical SupplyUsage: item, quantity and unit, lot, when."""

    item: Identifier
    quantity: Decimal = Field(allow_inf_nan=False)
    uom: str = Field(min_length=1)
    lot: str | None = None
    used_at: dt.datetime


class ItemRefIn(_Lenient):
    identifiers: list[Identifier] = Field(min_length=1)
    description: str | None = None


class InvoiceLineIn(_Lenient):
    """A canonical InvoiceLine."""

    line_number: str = Field(min_length=1)
    po_line_number: str | None = None
    item: ItemRefIn
    quantity: Decimal = Field(allow_inf_nan=False)
    uom: str = Field(min_length=1)
    unit_price: Decimal = Field(allow_inf_nan=False)


class PartyIn(_Lenient):
    name: str | None = None
    ids: list[Identifier] = Field(default_factory=list)


class InvoiceIn(_Lenient):
    """A canonical Invoice: number, date, kind, PO, supplier, lines, currency."""

    invoice_number: str = Field(min_length=1)
    invoice_date: dt.date
    kind: Literal["debit", "credit"] = "debit"
    po_number: str | None = None
    supplier: PartyIn
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    lines: list[InvoiceLineIn] = Field(min_length=1)
