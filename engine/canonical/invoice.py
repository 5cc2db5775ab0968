"""Supplier invoices (X12 810): lines, allowances and charges (SAC), totals (TDS).

Real invoices are sometimes off by a cent or a freight charge. An invoice that does not add
up is still a valid object, captured and routed; ``Invoice.problems()`` reports the gaps
so a rule can send it to the exception queue instead of losing it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum

from pydantic import Field

from engine.canonical.common import (
    Amount,
    BusinessObject,
    CanonicalModel,
    Currency,
    Party,
    Reference,
    Text,
    UnitCode,
    amount_sum,
)
from engine.canonical.item import ContractRef, ItemRef
from engine.canonical.purchasing import BillOnlyDetail

CENT = Decimal("0.01")


class InvoiceKind(StrEnum):
    """Debit invoice or credit memo (X12 BIG07 DI / CR)."""

    DEBIT = "debit"
    CREDIT = "credit"


class AllowanceChargeIndicator(StrEnum):
    """Whether an SAC reduces or adds to the amount due (SAC01 A / C / N)."""

    ALLOWANCE = "allowance"
    CHARGE = "charge"
    NO_CHARGE = "no_charge"


class AllowanceCharge(CanonicalModel):
    """A discount, fee or freight charge (X12 SAC), on the whole invoice or on a line."""

    indicator: AllowanceChargeIndicator = Field(description="Allowance (subtracted) or charge (added).")
    code: str | None = Field(None, description="SAC02 code, e.g. D240 freight, C310 discount.")
    amount: Amount = Field(ge=0, description="Amount, always positive; the indicator gives the sign.")
    percent: Amount | None = Field(None, description="Percentage it was computed from, when given.")
    description: str | None = Field(None, description="Free text description.")

    @property
    def signed_amount(self) -> Decimal:
        """The amount as it affects the total: negative for allowances, zero for no-charge."""
        signs = {
            AllowanceChargeIndicator.ALLOWANCE: -1,
            AllowanceChargeIndicator.CHARGE: 1,
            AllowanceChargeIndicator.NO_CHARGE: 0,
        }
        return self.amount * signs[self.indicator]


class PaymentTerms(CanonicalModel):
    """Terms of sale (X12 ITD), e.g. 2% 10 net 30."""

    discount_percent: Amount | None = Field(None, description="Early payment discount percentage.")
    discount_days: int | None = Field(None, ge=0, description="Days within which the discount applies.")
    net_days: int | None = Field(None, ge=0, description="Days until the net amount is due.")
    due_date: dt.date | None = Field(None, description="Net due date, when given.")


class InvoiceLine(CanonicalModel):
    """One invoiced item (X12 IT1 with PID, REF and line-level SAC)."""

    line_number: Text = Field(description="Invoice line number (IT101).")
    po_line_number: str | None = Field(None, description="Purchase order line it bills.")
    item: ItemRef = Field(description="The item billed.")
    quantity: Amount = Field(description="Quantity invoiced (IT102), negative on credit lines.")
    uom: UnitCode
    unit_price: Amount = Field(description="Price per uom (IT104).")
    amount: Amount | None = Field(None, description="Extended amount of the line, when the invoice states it.")
    contract: ContractRef | None = Field(None, description="Contract the price claims to follow.")
    allowances_charges: list[AllowanceCharge] = Field(default_factory=list, description="Line-level SAC.")
    bill_only: BillOnlyDetail | None = Field(None, description="Case, patient and lot/serial of a bill-only line.")

    def extended(self) -> Decimal:
        """The line's amount before allowances and charges: stated, else quantity times price."""
        return self.amount if self.amount is not None else self.quantity * self.unit_price


class Invoice(BusinessObject):
    """A supplier invoice or credit memo with its lines, allowances/charges and totals."""

    invoice_number: Text = Field(description="Invoice number (BIG02).")
    invoice_date: dt.date = Field(description="Invoice date (BIG01).")
    kind: InvoiceKind = Field(InvoiceKind.DEBIT, description="Invoice or credit memo.")
    po_number: str | None = Field(None, description="Purchase order billed (BIG04).")
    supplier: Party = Field(description="Selling party (N1 SE/VN).")
    bill_to: Party = Field(description="Billed party (N1 BT).")
    ship_to: Party | None = Field(None, description="Where the goods went (N1 ST).")
    remit_to: Party | None = Field(None, description="Where to pay (N1 RI).")
    currency: Currency = "USD"
    terms: PaymentTerms | None = Field(None, description="Payment terms.")
    references: list[Reference] = Field(default_factory=list, description="Contract, case and other references.")
    lines: list[InvoiceLine] = Field(min_length=1, description="Invoiced items.")
    allowances_charges: list[AllowanceCharge] = Field(default_factory=list, description="Invoice-level SAC.")
    tax_amount: Amount | None = Field(None, description="Total tax (TXI), when billed.")
    total_amount: Amount | None = Field(None, description="Total amount due (TDS01).")

    def computed_total(self) -> Decimal:
        """Lines plus line and invoice allowances/charges plus tax, to the cent."""
        lines = amount_sum(line.extended() for line in self.lines)
        line_sac = amount_sum(sac.signed_amount for line in self.lines for sac in line.allowances_charges)
        header_sac = amount_sum(sac.signed_amount for sac in self.allowances_charges)
        return (lines + line_sac + header_sac + (self.tax_amount or 0)).quantize(CENT)

    def problems(self, tolerance: Decimal = Decimal(0)) -> list[str]:
        """Where the invoice does not add up; empty when it balances.

        Checks each stated line amount against quantity times unit price, and the stated
        total (when there is one) against the computed one, each within ``tolerance``.
        """
        found = []
        for line in self.lines:
            expected = (line.quantity * line.unit_price).quantize(CENT)
            if line.amount is not None and abs(line.amount - expected) > tolerance:
                found.append(f"line {line.line_number}: amount {line.amount} is not quantity x unit_price {expected}")
        if self.total_amount is not None and abs(self.total_amount - self.computed_total()) > tolerance:
            found.append(
                f"total_amount {self.total_amount} differs from lines, allowances/charges and tax "
                f"{self.computed_total()}"
            )
        return found
