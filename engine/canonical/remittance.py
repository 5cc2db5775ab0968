"""Payer remittance advice (X12 835): payment, claims, service lines, adjustments.

An 835 balances at three levels, and posting software relies on it: each service line's
charge less its adjustments is its payment; each claim's charge less claim and line
adjustments is its payment; the payment (BPR02) is the claims' payments less provider-level
adjustments (PLB). ``Remittance.balance_problems()`` reports where a remittance does not.
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
    CodedEnum,
    Currency,
    Party,
    ProcedureCode,
    Text,
    amount_sum,
)
from engine.canonical.patient import PatientRef


class PaymentMethod(StrEnum):
    """How the money moves (BPR04: ACH, CHK, FWT, BOP, NON)."""

    ACH = "ach"
    CHECK = "check"
    WIRE = "wire"
    FINANCIAL_INSTITUTION_OPTION = "financial_institution_option"
    NONE = "none"  # non-payment data: the 835 only reports adjustments


class Payment(CanonicalModel):
    """The payment the remittance explains (BPR and TRN)."""

    method: PaymentMethod = Field(description="Payment method.")
    amount: Amount = Field(description="Total actual provider payment (BPR02).")
    date: dt.date = Field(description="Check issue or EFT effective date (BPR16).")
    trace_number: Text = Field(description="Check or EFT trace number (TRN02), the reassociation key.")


class AdjustmentGroup(CodedEnum):
    """Who bears an adjustment (CAS01, claim adjustment group code)."""

    CO = "CO", "Contractual obligations"
    PR = "PR", "Patient responsibility"
    OA = "OA", "Other adjustments"
    PI = "PI", "Payor initiated reductions"
    CR = "CR", "Corrections and reversals"


class Adjustment(CanonicalModel):
    """One adjustment: group, CARC reason code and amount (a CAS triplet)."""

    group: AdjustmentGroup = Field(description="Group code.")
    reason_code: str = Field(pattern=r"^[A-Z0-9]{1,5}$", description="Claim adjustment reason code (CARC), e.g. 45.")
    amount: Amount = Field(description="Amount adjusted; negative amounts increase the payment.")
    quantity: Amount | None = Field(None, description="Units adjusted, when given.")


class ServiceLinePayment(CanonicalModel):
    """Payment for one service line of a claim (SVC loop)."""

    procedure: ProcedureCode | None = Field(None, description="Procedure or supply code paid (SVC01).")
    revenue_code: str | None = Field(None, description="Revenue code (SVC04), for institutional claims.")
    charge_amount: Amount = Field(description="Line charge submitted (SVC02).")
    paid_amount: Amount = Field(description="Line amount paid (SVC03).")
    units: Amount | None = Field(None, description="Units paid (SVC05).")
    service_date: dt.date | None = Field(
        None, description="Date of service (DTM 472), or the first date of a service period (DTM 150)."
    )
    service_to: dt.date | None = Field(
        None, description="Last date of a service period (DTM 151); absent for a single date of service."
    )
    line_control_number: str | None = Field(None, description="Provider's line item control number (REF 6R).")
    adjustments: list[Adjustment] = Field(default_factory=list, description="Line-level adjustments (CAS).")


class ClaimStatus(CodedEnum):
    """Claim status (CLP02)."""

    PRIMARY = "1", "Processed as primary"
    SECONDARY = "2", "Processed as secondary"
    TERTIARY = "3", "Processed as tertiary"
    DENIED = "4", "Denied"
    PRIMARY_FORWARDED = "19", "Processed as primary, forwarded to additional payer(s)"
    SECONDARY_FORWARDED = "20", "Processed as secondary, forwarded to additional payer(s)"
    TERTIARY_FORWARDED = "21", "Processed as tertiary, forwarded to additional payer(s)"
    REVERSAL = "22", "Reversal of previous payment"
    NOT_OUR_CLAIM = "23", "Not our claim, forwarded to additional payer(s)"
    PREDETERMINATION = "25", "Predetermination pricing only - no payment"


class ClaimPayment(CanonicalModel):
    """How the payer settled one claim (CLP loop)."""

    claim_id: Text = Field(description="Provider's patient control number (CLP01).")
    status: ClaimStatus = Field(description="Claim status (CLP02).")
    charge_amount: Amount = Field(description="Total claim charge (CLP03).")
    paid_amount: Amount = Field(description="Claim payment (CLP04).")
    patient_responsibility: Amount | None = Field(None, description="Patient responsibility (CLP05).")
    payer_claim_number: str | None = Field(None, description="Payer claim control number (CLP07).")
    patient: PatientRef | None = Field(None, description="Patient identifier (NM1 QC), no names.")
    service_from: dt.date | None = Field(None, description="First date of service (DTM 232).")
    service_to: dt.date | None = Field(None, description="Last date of service (DTM 233).")
    adjustments: list[Adjustment] = Field(default_factory=list, description="Claim-level adjustments (CAS).")
    service_lines: list[ServiceLinePayment] = Field(default_factory=list, description="Service line payments.")


class ProviderAdjustment(CanonicalModel):
    """A provider-level adjustment (PLB): recoupments, interest, withholds not tied to a claim."""

    reason_code: Text = Field(description="Adjustment reason (PLB03-1), e.g. WO overpayment recovery, L6 interest.")
    reference: str | None = Field(None, description="Reference identifier (PLB03-2).")
    amount: Amount = Field(description="Amount; positive reduces the payment, negative increases it.")
    fiscal_period_date: dt.date | None = Field(None, description="Last day of the provider's fiscal year (PLB02).")


class Remittance(BusinessObject):
    """A remittance advice: one payment explained claim by claim."""

    payer: Party = Field(description="Paying health plan (N1 PR), with its payer id.")
    payee: Party = Field(description="Paid provider (N1 PE), with its NPI or tax id.")
    payment: Payment = Field(description="The payment.")
    currency: Currency = "USD"
    production_date: dt.date | None = Field(None, description="Payer's adjudication cycle date (DTM 405).")
    claims: list[ClaimPayment] = Field(default_factory=list, description="Claims settled.")
    provider_adjustments: list[ProviderAdjustment] = Field(default_factory=list, description="PLB adjustments.")

    def balance_problems(self) -> list[str]:
        """Where the remittance does not balance; empty when it does."""
        found = []
        expected = amount_sum(claim.paid_amount for claim in self.claims) - amount_sum(
            adjustment.amount for adjustment in self.provider_adjustments
        )
        if self.payment.amount != expected:
            found.append(
                f"payment amount {self.payment.amount} is not claim payments less provider adjustments {expected}"
            )
        for index, claim in enumerate(self.claims):
            found.extend(_claim_problems(index, claim))
        return found


def _claim_problems(index: int, claim: ClaimPayment) -> list[str]:
    # Positions, not claim numbers or amounts: a claim is tied to a patient (PHI).
    found = [
        f"claims[{index}].service_lines[{line_index}]: paid_amount is not charge_amount less adjustments"
        for line_index, line in enumerate(claim.service_lines)
        if line.paid_amount != line.charge_amount - _total(line.adjustments)
    ]
    adjusted = _total(claim.adjustments) + sum((_total(line.adjustments) for line in claim.service_lines), Decimal(0))
    if claim.paid_amount != claim.charge_amount - adjusted:
        found.append(f"claims[{index}]: paid_amount is not charge_amount less claim and line adjustments")
    return found


def _total(adjustments: list[Adjustment]) -> Decimal:
    return amount_sum(adjustment.amount for adjustment in adjustments)
