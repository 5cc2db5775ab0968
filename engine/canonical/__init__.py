"""Canonical business objects: what mappings produce and ERP/billing systems receive.

Every source format (HL7 v2, X12, FHIR, flat files) is mapped to these pydantic models, so
receivers see the same clean objects whatever the sender spoke. ``MODELS`` lists the
top-level objects by class name (the names mapping files use as ``target``);
``export_schemas`` writes their JSON Schemas (``docs/schemas/canonical/``).

Regenerate the committed schemas after changing a model::

    python -c "from pathlib import Path; from engine.canonical import export_schemas; \\
export_schemas(Path('docs/schemas/canonical'))"
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from engine.canonical.charge import ChargeAction, ChargeEvent, SupplyUsage
from engine.canonical.common import (
    SCHEMA_VERSION,
    Address,
    BusinessObject,
    CanonicalModel,
    CodedEnum,
    Identifier,
    Party,
    PartyId,
    PartyIdType,
    ProcedureCode,
    ProcedureCodeSystem,
    Quantity,
    Reference,
    gs1_check_digit_ok,
)
from engine.canonical.invoice import (
    AllowanceCharge,
    AllowanceChargeIndicator,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    PaymentTerms,
)
from engine.canonical.item import (
    ContractPrice,
    ContractRef,
    Gpo,
    Item,
    ItemIdentifier,
    ItemIdType,
    ItemRef,
    Location,
    LocationKind,
    PackLevel,
    Supplier,
    SupplierRole,
)
from engine.canonical.patient import EncounterRef, PatientRef
from engine.canonical.purchasing import (
    AckStatus,
    BillOnlyDetail,
    LineAck,
    LineStatus,
    OrderPurpose,
    OrderType,
    PurchaseOrder,
    PurchaseOrderAck,
    PurchaseOrderAckLine,
    PurchaseOrderLine,
)
from engine.canonical.remittance import (
    Adjustment,
    AdjustmentGroup,
    ClaimPayment,
    ClaimStatus,
    Payment,
    PaymentMethod,
    ProviderAdjustment,
    Remittance,
    ServiceLinePayment,
)
from engine.canonical.shipping import Carrier, Pack, PackLevelKind, ShipNotice, ShippedItem, ShippedOrder

_TOP_LEVEL: tuple[type[BaseModel], ...] = (
    Item,
    Supplier,
    Location,
    ContractPrice,
    PurchaseOrder,
    PurchaseOrderAck,
    ShipNotice,
    Invoice,
    ChargeEvent,
    SupplyUsage,
    Remittance,
    PatientRef,
)
MODELS: dict[str, type[BaseModel]] = {model.__name__: model for model in _TOP_LEVEL}
"""Canonical objects by class name: the mapping targets and the exported schemas."""

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def model_schema(model: type[BaseModel]) -> dict[str, object]:
    """The JSON Schema of one canonical model, with its dialect."""
    schema = model.model_json_schema()
    schema["$schema"] = SCHEMA_DIALECT
    return schema


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<Name>.schema.json`` for every model in ``MODELS`` into ``directory``.

    Sorted keys, 2-space indent and a trailing newline, so the committed files diff cleanly.
    Returns the written paths, sorted by name.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(MODELS):
        path = directory / f"{name}.schema.json"
        text = json.dumps(model_schema(MODELS[name]), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


__all__ = [
    "MODELS",
    "SCHEMA_VERSION",
    "AckStatus",
    "Address",
    "Adjustment",
    "AdjustmentGroup",
    "AllowanceCharge",
    "AllowanceChargeIndicator",
    "BillOnlyDetail",
    "BusinessObject",
    "CanonicalModel",
    "Carrier",
    "ChargeAction",
    "ChargeEvent",
    "ClaimPayment",
    "ClaimStatus",
    "CodedEnum",
    "ContractPrice",
    "ContractRef",
    "EncounterRef",
    "Gpo",
    "Identifier",
    "Invoice",
    "InvoiceKind",
    "InvoiceLine",
    "Item",
    "ItemIdType",
    "ItemIdentifier",
    "ItemRef",
    "LineAck",
    "LineStatus",
    "Location",
    "LocationKind",
    "OrderPurpose",
    "OrderType",
    "Pack",
    "PackLevel",
    "PackLevelKind",
    "Party",
    "PartyId",
    "PartyIdType",
    "PatientRef",
    "Payment",
    "PaymentMethod",
    "PaymentTerms",
    "ProcedureCode",
    "ProcedureCodeSystem",
    "ProviderAdjustment",
    "PurchaseOrder",
    "PurchaseOrderAck",
    "PurchaseOrderAckLine",
    "PurchaseOrderLine",
    "Quantity",
    "Reference",
    "Remittance",
    "ServiceLinePayment",
    "ShipNotice",
    "ShippedItem",
    "ShippedOrder",
    "Supplier",
    "SupplierRole",
    "SupplyUsage",
    "export_schemas",
    "gs1_check_digit_ok",
    "model_schema",
]
