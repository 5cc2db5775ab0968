"""Junction's own FHIR R4 checks that fhir.resources does not make.

fhir.resources checks structure, cardinality of complex elements and primitive formats, but
not required value-set bindings (it accepts ``status: "not-a-status"``), and it reports a
missing required primitive only once everything else is well formed. These tables hold the
R4 (4.0.1) required bindings and 1..1 elements of the resources Junction maps; the codes
are facts from the R4 specification's value sets.
"""

from __future__ import annotations

FINANCIAL_STATUS = frozenset({"active", "cancelled", "draft", "entered-in-error"})
EVENT_STATUS = frozenset(
    {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error", "unknown"}
)
CLAIM_USE = frozenset({"claim", "preauthorization", "predetermination"})
CLAIM_OUTCOME = frozenset({"queued", "complete", "error", "partial"})
PUBLICATION_STATUS = frozenset({"draft", "active", "retired", "unknown"})

# resource type -> element path (dots, arrays flatten) -> allowed codes
BINDINGS: dict[str, dict[str, frozenset[str]]] = {
    "ChargeItem": {
        "status": frozenset(
            {"planned", "billable", "not-billable", "aborted", "billed", "entered-in-error", "unknown"}
        ),
    },
    "ChargeItemDefinition": {"status": PUBLICATION_STATUS},
    "SupplyDelivery": {"status": frozenset({"in-progress", "completed", "abandoned", "entered-in-error"})},
    "SupplyRequest": {
        "status": frozenset({"draft", "active", "suspended", "cancelled", "completed", "entered-in-error", "unknown"}),
        "priority": frozenset({"routine", "urgent", "asap", "stat"}),
    },
    "Device": {
        "status": frozenset({"active", "inactive", "entered-in-error", "unknown"}),
        "udiCarrier.entryType": frozenset({"barcode", "rfid", "manual", "card", "self-reported", "unknown"}),
    },
    "Procedure": {"status": EVENT_STATUS},
    "Claim": {"status": FINANCIAL_STATUS, "use": CLAIM_USE},
    "ClaimResponse": {"status": FINANCIAL_STATUS, "use": CLAIM_USE, "outcome": CLAIM_OUTCOME},
    "ExplanationOfBenefit": {
        "status": frozenset({"active", "cancelled", "draft", "entered-in-error"}),
        "use": CLAIM_USE,
        "outcome": CLAIM_OUTCOME,
    },
    "Coverage": {"status": FINANCIAL_STATUS},
    "Account": {"status": frozenset({"active", "inactive", "entered-in-error", "on-hold", "unknown"})},
    "Invoice": {
        "status": frozenset({"draft", "issued", "balanced", "cancelled", "entered-in-error"}),
        "lineItem.priceComponent.type": frozenset(
            {"base", "surcharge", "deduction", "discount", "tax", "informational"}
        ),
        "totalPriceComponent.type": frozenset({"base", "surcharge", "deduction", "discount", "tax", "informational"}),
    },
    "Encounter": {
        "status": frozenset(
            {
                "planned",
                "arrived",
                "triaged",
                "in-progress",
                "onleave",
                "finished",
                "cancelled",
                "entered-in-error",
                "unknown",
            }
        ),
    },
    "Patient": {"gender": frozenset({"male", "female", "other", "unknown"})},
    "Bundle": {
        "type": frozenset(
            {
                "document",
                "message",
                "transaction",
                "transaction-response",
                "batch",
                "batch-response",
                "history",
                "searchset",
                "collection",
            }
        ),
        "entry.request.method": frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"}),
        "entry.search.mode": frozenset({"match", "include", "outcome"}),
    },
}

# resource type -> elements that are 1..1 in R4 ("item[x]" names a choice element)
REQUIRED: dict[str, tuple[str, ...]] = {
    "ChargeItem": ("status", "code", "subject"),
    "SupplyRequest": ("item[x]", "quantity"),
    "Procedure": ("status", "subject"),
    "Claim": ("status", "type", "use", "patient", "created", "provider", "priority", "insurance"),
    "Invoice": ("status",),
    "Bundle": ("type",),
}

# Resource types of R4 that R4B removed (replaced by MedicinalProductDefinition and friends,
# or dropped): fhir.resources has no model to validate them with.
R4_ONLY = frozenset(
    {
        "EffectEvidenceSynthesis",
        "RiskEvidenceSynthesis",
        "MedicinalProduct",
        "MedicinalProductAuthorization",
        "MedicinalProductContraindication",
        "MedicinalProductIndication",
        "MedicinalProductIngredient",
        "MedicinalProductInteraction",
        "MedicinalProductManufactured",
        "MedicinalProductPackaged",
        "MedicinalProductPharmaceutical",
        "MedicinalProductUndesirableEffect",
        "SubstanceNucleicAcid",
        "SubstancePolymer",
        "SubstanceProtein",
        "SubstanceReferenceInformation",
        "SubstanceSourceMaterial",
        "SubstanceSpecification",
    }
)

# Resource types of R4 whose shape R4B changed (Evidence and EvidenceVariable were
# redesigned): the R4B models would refuse valid R4 content with false messages, so release
# R4 answers not-supported for them instead of validating with the wrong model.
R4B_RESHAPED = frozenset({"Evidence", "EvidenceVariable"})
