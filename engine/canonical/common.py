"""Building blocks shared by every canonical object: base models, amounts, codes, parties.

Money and quantities are ``Decimal`` (a float cannot hold 0.10 exactly, and invoices are
balanced to the cent); a document carries one ``currency`` and plain amounts, because an
EDI document is single-currency. Units of measure are X12 355 codes (EA, BX, CA, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, GetJsonSchemaHandler, ValidationInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

SCHEMA_VERSION: Literal["1.0"] = "1.0"


def _refuse_python_float(value: object, info: ValidationInfo) -> object:
    # A Python float reaching a money field means someone computed with binary floats upstream;
    # JSON numbers (mode "json") are accepted: they are parsed from their text, not computed.
    if isinstance(value, float) and info.mode == "python":
        raise ValueError("expected a Decimal, an int or a numeric string, not a float")
    return value


Amount = Annotated[
    Decimal,
    BeforeValidator(_refuse_python_float),
    Field(allow_inf_nan=False),
]
PositiveAmount = Annotated[Amount, Field(gt=0)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code, e.g. USD.")]
UnitCode = Annotated[
    str,
    Field(min_length=1, max_length=10, description="Unit of measure, an X12 355 code such as EA, BX, CA, CS, PK."),
]
Text = Annotated[str, Field(min_length=1)]


class CanonicalModel(BaseModel):
    """Base of every canonical model: unknown keys rejected, immutable, whitespace trimmed."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class BusinessObject(CanonicalModel):
    """A top-level object that travels on its own (a mapping target, an API payload)."""

    schema_version: Literal["1.0"] = Field(SCHEMA_VERSION, description="Version of this object's schema.")


class CodedEnum(StrEnum):
    """A code list whose members carry a description (X12 and HL7 tables).

    The value is the code as it appears on the wire; ``member.description`` is its meaning,
    and the JSON Schema lists each code with its description.
    """

    description: str

    def __new__(cls, code: str, description: str = "") -> Self:
        member = str.__new__(cls, code)
        member._value_ = code
        member.description = description
        return member

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler.resolve_ref_schema(handler(core_schema))
        schema.pop("enum", None)
        schema["oneOf"] = [{"const": member.value, "description": member.description} for member in cls]
        return schema


class Identifier(CanonicalModel):
    """A value with the code saying what kind of identifier it is and who issued it."""

    type: Text = Field(description="Identifier type code, e.g. an X12 REF qualifier or an HL7 table 0203 code.")
    value: Text = Field(description="The identifier itself.")
    issuer: str | None = Field(None, description="Assigning authority or issuing party, when known.")


class Quantity(CanonicalModel):
    """An amount of something in a unit of measure."""

    value: Amount = Field(description="How many units.")
    uom: UnitCode


class PartyIdType(StrEnum):
    """Kinds of party and location identifiers seen in hospital supply chain EDI."""

    GLN = "gln"  # GS1 Global Location Number, 13 digits (X12 66 code UL)
    HIN = "hin"  # Health Industry Number from HIBCC (X12 66 code 21)
    DEA = "dea"  # US DEA registration, on pharmacy ship-to (X12 66 code 11)
    DUNS = "duns"
    NPI = "npi"
    TAX_ID = "tax_id"
    PAYER_ID = "payer_id"
    BUYER_ASSIGNED = "buyer_assigned"  # X12 66 code 92: e.g. the hospital's vendor number
    SELLER_ASSIGNED = "seller_assigned"  # X12 66 code 91: e.g. the supplier's customer account
    LICENSE = "license"  # state licence, 340B entity id
    OTHER = "other"


class PartyId(CanonicalModel):
    """One typed identifier of a party or location."""

    type: PartyIdType = Field(description="What kind of identifier this is.")
    value: Text = Field(description="The identifier.")
    qualifier: str | None = Field(None, description="The source qualifier as received (e.g. X12 N103), for audit.")


class Address(CanonicalModel):
    """A postal address."""

    lines: list[Text] = Field(default_factory=list, description="Street lines, in order.")
    city: str | None = Field(None, description="City.")
    region: str | None = Field(None, description="State or province code.")
    postal_code: str | None = Field(None, description="ZIP or postal code.")
    country: str | None = Field(None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 country code.")


class Party(CanonicalModel):
    """A trading partner or place in a transaction: buyer, supplier, ship-to, payer, ..."""

    name: str | None = Field(None, description="Name as given in the transaction.")
    ids: list[PartyId] = Field(default_factory=list, description="Typed identifiers: GLN, HIN, DEA, account numbers.")
    address: Address | None = Field(None, description="Postal address, when given.")
    department: str | None = Field(None, description="Department or mark-for inside the party (deliver-to).")

    def id_of(self, kind: PartyIdType) -> str | None:
        """The first identifier of one kind, or None."""
        return next((party_id.value for party_id in self.ids if party_id.type == kind), None)


class Reference(CanonicalModel):
    """A partner-specific reference (an X12 REF segment): qualifier plus value."""

    qualifier: Text = Field(description="Reference qualifier as received, e.g. X12 128 code BM, CN, DP.")
    value: Text = Field(description="The reference.")


class ProcedureCodeSystem(StrEnum):
    """Code systems for billable procedures and supplies."""

    CPT = "cpt"
    HCPCS = "hcpcs"
    ICD10_PCS = "icd10_pcs"
    OTHER = "other"


class ProcedureCode(CanonicalModel):
    """A billable procedure or supply code with its modifiers."""

    code: Text = Field(description="The code, e.g. 27447 (CPT) or C1776 (HCPCS device code).")
    system: ProcedureCodeSystem = Field(description="Which code system the code belongs to.")
    modifiers: list[Text] = Field(default_factory=list, description="CPT/HCPCS modifiers, in order.")


def gs1_check_digit_ok(number: str) -> bool:
    """Whether a GTIN, GLN or SSCC (all digits) has a valid GS1 mod-10 check digit.

    >>> gs1_check_digit_ok("00614141123452"), gs1_check_digit_ok("00614141123453")
    (True, False)
    """
    if not number.isdigit() or len(number) < 2:
        return False
    body = [int(digit) for digit in reversed(number[:-1])]
    total = sum(digit * (3 if position % 2 == 0 else 1) for position, digit in enumerate(body))
    return (10 - total % 10) % 10 == int(number[-1])


def amount_sum(values: Iterable[Decimal | None]) -> Decimal:
    """Sum of Decimal amounts, skipping missing ones."""
    return sum((value for value in values if value is not None), Decimal(0))
