"""The least patient data a supply or finance object needs: identifiers, never demographics.

Supply chain and billing interfaces only need to know *which* patient and *which* visit a
usage or charge belongs to (for recall tracing and for posting to the right account). Names,
birth dates and addresses stay in the clinical systems, so a canonical object leaking into a
log, a queue or an ERP carries as little PHI as possible.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from engine.canonical.common import BusinessObject, CanonicalModel, Text


class PatientRef(BusinessObject):
    """A patient identifier with its assigning authority (HL7 PID-3: CX.1, CX.4, CX.5).

    A canonical object of its own (versioned, with an exported schema): supply and finance
    objects embed it, and a patient merge or identifier change can travel as one."""

    id: Text = Field(description="Patient identifier, e.g. the medical record number.")
    assigning_authority: str | None = Field(None, description="Who issued the identifier (CX.4), e.g. the facility.")
    id_type: str | None = Field(None, description="Identifier type code from HL7 table 0203 (CX.5), e.g. MR.")


class EncounterRef(CanonicalModel):
    """The visit or account an event belongs to: encounter number, account number or both.

    HL7 carries the visit number in PV1-19 and the patient account number in PID-18; charges
    post to the account, usage is traced to the encounter. At least one must be present.
    """

    encounter_id: str | None = Field(None, description="Visit or encounter number (HL7 PV1-19).")
    account_number: str | None = Field(None, description="Patient account number for billing (HL7 PID-18).")
    assigning_authority: str | None = Field(None, description="System or facility that issued the numbers.")
    facility: str | None = Field(None, description="Facility code of the encounter, when several share a system.")

    @model_validator(mode="after")
    def _one_reference(self) -> Self:
        if not (self.encounter_id or self.account_number):
            raise ValueError("an encounter reference needs encounter_id or account_number")
        return self
