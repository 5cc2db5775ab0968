"""FHIR resources as mapping targets, for sending canonical objects to FHIR servers.

A mapping with ``target: fhir.ChargeItem`` (and ``source: json``) turns a canonical object
into a FHIR resource; the objects are fhir.resources models, so what Junction emits is
validated by construction. FHIR R4 (4.0.1) is emitted through the R4B models: the
resources listed here have the same elements in R4 and R4B for what Junction fills
(LIBRARY-NOTES: fhir.resources 8 ships R4B and R5, not R4). These are not canonical
objects: they carry no ``schema_version`` and have no exported schema of Junction's own.
"""

from __future__ import annotations

from fhir.resources.R4B.chargeitem import ChargeItem
from fhir.resources.R4B.claim import Claim
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.invoice import Invoice
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.supplydelivery import SupplyDelivery
from fhir.resources.R4B.supplyrequest import SupplyRequest
from pydantic import BaseModel

FHIR_RELEASE = "R4B"

FHIR_TARGETS: dict[str, type[BaseModel]] = {
    f"fhir.{model.__name__}": model
    for model in (ChargeItem, Claim, Device, Invoice, Procedure, SupplyDelivery, SupplyRequest)
}
"""FHIR resource models by mapping target name (``fhir.ChargeItem`` ...)."""
