"""The fhir data type: FHIRPath subset, validation to OperationOutcome issues, responses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.operationoutcome import OperationOutcome as R5OperationOutcome
from fhir.resources.R4B.operationoutcome import OperationOutcome as R4BOperationOutcome
from pydantic import ValidationError

from engine.core.contracts import Outcome
from engine.core.errors import ParseError
from engine.datatypes.fhir import (
    FhirConfig,
    FhirDataType,
    FhirDocument,
    FhirValidationError,
    Issue,
    issues_by_entry,
    operation_outcome,
    parse_path,
    validate_resource,
)

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "fhir"
INVALID = SAMPLES / "invalid"
FHIR = FhirDataType()

# invalid sample -> (issue code, element path of the first issue)
EXPECTED_FAILURES = {
    "not_json.json": ("structure", "line 3, column 1"),
    "not_a_resource.json": ("structure", ""),
    "unknown_element.json": ("structure", "ChargeItem.chargeCode"),
    "missing_status.json": ("required", "ChargeItem.status"),
    "status_not_in_value_set.json": ("code-invalid", "ChargeItem.status"),
    "datetime_without_timezone.json": ("value", "ChargeItem.occurrenceDateTime"),
    "impossible_date.json": ("value", "ChargeItem.occurrenceDateTime"),
    "choice_given_twice.json": ("structure", "ChargeItem.occurrence[x]"),
    "wrong_json_type.json": ("value", "ChargeItem.quantity.value"),
    "unknown_resource_type.json": ("not-supported", "ChargeEvent"),
    "r4_only_resource_type.json": ("not-supported", "MedicinalProduct"),
    "bundle_bad_entry.json": ("code-invalid", "Bundle.entry[1].resource.status"),
}


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


# -- paths -----------------------------------------------------------------------------------


def test_paths_read_elements_indexes_where_choice_and_unions() -> None:
    doc = FHIR.parse(sample("chargeitem_implant_billable.json"))
    assert doc.get("ChargeItem.status") == "billable"
    assert doc.get("status") == "billable"
    assert doc.get("Claim.status") is None  # another resource type selects nothing
    assert doc.get("identifier[0].value") == "CT-900003-1"
    assert (
        doc.get("code.coding.where(system='http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets').code") == "C1776"
    )
    assert doc.get_all("code.coding.code") == ["C-278-1001", "C1776"]
    assert doc.get("code.coding[1].code") == "C1776"
    assert doc.get("code.coding.first().code") == "C-278-1001"
    assert doc.get("occurrence") == "2024-03-13T14:15:00-05:00"  # choice element by its base name
    assert doc.get("occurrencePeriod.start | occurrenceDateTime") == "2024-03-13T14:15:00-05:00"
    assert doc.get("quantity.value") == "1"
    assert doc.get("priceOverride.value") == "4250.00"
    assert json.loads(doc.get("quantity") or "")["code"] == "{each}"


def test_decimals_keep_their_written_precision_and_to_data_is_json() -> None:
    doc = FHIR.parse(
        b'{"resourceType":"Device","id":"d1","property":[{"type":{"text":"x"},"valueQuantity":[{"value":135.570}]}]}'
    )
    assert doc.get("property.valueQuantity.value") == "135.570"
    assert json.loads(json.dumps(doc.to_data()))["property"][0]["valueQuantity"][0]["value"] == 135.57


def test_iterate_reads_the_item_first_then_the_whole_resource() -> None:
    doc = FHIR.parse(sample("claim_professional_implant.json"))
    items = doc.iterate("Claim.item")
    assert [i.get("sequence") for i in items] == ["1", "2"]
    assert [i.get("Claim.item.sequence") for i in items] == ["1", "2"]  # the current item, not the first
    assert [i.get("Claim.patient.reference") for i in items] == ["Patient/pat-100045"] * 2
    assert items[1].get("revenue.coding.code") == "0278"
    assert items[0].get("revenue.coding.code") is None  # not borrowed from the other item


def test_bundle_paths_oftype_and_entries() -> None:
    doc = FHIR.parse(sample("bundle_batch_two_charges.json"))
    assert doc.get_all("Bundle.entry.resource.ofType(ChargeItem).status") == ["billable", "entered-in-error"]
    assert doc.get_all("entry.resource.ofType(Claim).status") == []
    assert [e.get("ChargeItem.status") for e in doc.iterate("Bundle.entry.resource")] == [
        "billable",
        "entered-in-error",
    ]
    assert [e.get("id") for e in doc.entries()] == ["ci-20240313-0001", "ci-20240314-0007"]


@pytest.mark.parametrize(
    "path",
    ["a..b", "status.", "where(system)", "coding.where(system='x'", "code.Coding", "count()", "ofType(device)", "a[x]"],
)
def test_check_path_rejects_bad_syntax_with_the_reason(path: str) -> None:
    with pytest.raises(ValueError, match="invalid FHIR path"):
        FHIR.check_path(path)


def test_where_literals_may_hold_dots_pipes_and_escaped_quotes() -> None:
    steps = parse_path("coding.where(system='http://a.b/c|d\\'e').code")[0]
    assert [s.kind for s in steps] == ["key", "where", "key"]
    assert steps[1].literal == "http://a.b/c|d'e"
    doc = FhirDocument({"coding": [{"system": "http://a.b/c|d'e", "code": "X"}]})
    assert doc.get("coding.where(system='http://a.b/c|d\\'e').code") == "X"


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED_FAILURES))
def test_each_invalid_sample_fails_with_its_code_and_element(name: str) -> None:
    code, position = EXPECTED_FAILURES[name]
    with pytest.raises(ParseError) as caught:
        FHIR.parse((INVALID / name).read_bytes())
    assert (caught.value.code, caught.value.position) == (code, position)


def test_every_invalid_sample_is_listed() -> None:
    assert {p.name for p in INVALID.glob("*.json")} == set(EXPECTED_FAILURES)


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_every_valid_sample_parses(path: Path) -> None:
    assert FHIR.parse(path.read_bytes()).get("resourceType")


def test_all_issues_are_reported_not_just_the_first() -> None:
    data = json.loads(sample("chargeitem_implant_billable.json"))
    data.update(status="posted", fooBar=1, enteredDate="2024-03-13T16:02")
    del data["subject"]
    issues = validate_resource(data)
    assert {(i.code, i.expression) for i in issues} >= {
        ("code-invalid", "ChargeItem.status"),
        ("structure", "ChargeItem.fooBar"),
        ("value", "ChargeItem.enteredDate"),
        ("required", "ChargeItem.subject"),
    }
    with pytest.raises(FhirValidationError) as caught:
        FHIR.parse(json.dumps(data).encode())
    assert len(caught.value.issues) == len(issues)
    assert "more)" in caught.value.reason


def test_diagnostics_never_quote_the_offending_values() -> None:
    data = json.loads(sample("chargeitem_implant_billable.json"))
    data.update(status="SECRET-STATUS", enteredDate="SECRET-DATE", fooBar="SECRET-EXTRA")
    data["quantity"]["value"] = "SECRET-NUMBER"
    text = " ".join(f"{i.expression} {i.diagnostics}" for i in validate_resource(data))
    assert text and "SECRET" not in text


def test_validation_levels_and_own_bindings() -> None:
    raw = (INVALID / "status_not_in_value_set.json").read_bytes()
    assert FhirDataType(FhirConfig(type="fhir", validation="off")).parse(raw).get("status") == "posted"
    assert FhirDataType(FhirConfig(type="fhir", validation="structure")).parse(raw).get("status") == "posted"
    with pytest.raises(ParseError, match="required value set"):
        FhirDataType(FhirConfig(type="fhir", validation="full")).parse(raw)
    off = FhirDataType(FhirConfig(type="fhir", validation="off"))
    with pytest.raises(ParseError) as caught:
        off.parse((INVALID / "unknown_resource_type.json").read_bytes())
    assert caught.value.code == "not-supported"


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        ({"resourceType": "SupplyDelivery", "status": "delivered"}, "SupplyDelivery.status"),
        (
            {
                "resourceType": "SupplyRequest",
                "status": "active",
                "priority": "high",
                "quantity": {"value": 1},
                "itemCodeableConcept": {"text": "x"},
            },
            "SupplyRequest.priority",
        ),
        ({"resourceType": "Device", "status": "broken"}, "Device.status"),
        ({"resourceType": "Procedure", "status": "done", "subject": {"reference": "Patient/1"}}, "Procedure.status"),
        ({"resourceType": "Invoice", "status": "paid"}, "Invoice.status"),
    ],
)
def test_required_bindings_of_mapped_resources(resource: dict[str, object], expression: str) -> None:
    issues = validate_resource(resource)
    assert [(i.code, i.expression) for i in issues] == [("code-invalid", expression)]


def test_claim_use_binding_and_r4_required_elements() -> None:
    claim = json.loads(sample("claim_professional_implant.json"))
    claim["use"] = "bill"
    assert [(i.code, i.expression) for i in validate_resource(claim)] == [("code-invalid", "Claim.use")]
    del claim["created"], claim["use"]
    found = {(i.code, i.expression) for i in validate_resource(claim)}
    assert found == {("required", "Claim.created"), ("required", "Claim.use")}
    request = json.loads(sample("supplyrequest_stock_order.json"))
    del request["itemCodeableConcept"]
    assert ("required", "SupplyRequest.item[x]") in {(i.code, i.expression) for i in validate_resource(request)}


def test_resource_types_restrict_the_resource_and_bundle_entries() -> None:
    only_claims = FhirDataType(FhirConfig(type="fhir", resource_types=["Claim", "Bundle"]))
    with pytest.raises(ParseError) as caught:
        only_claims.parse(sample("chargeitem_implant_billable.json"))
    assert (caught.value.code, caught.value.position) == ("not-supported", "ChargeItem")
    with pytest.raises(ParseError) as caught:
        only_claims.parse(sample("bundle_batch_two_charges.json"))
    assert caught.value.position == "Bundle.entry[0].resource"
    assert only_claims.parse(sample("claim_professional_implant.json")).get("use") == "claim"
    with pytest.raises(ValidationError):
        FhirConfig(type="fhir", resource_types=["chargeitem"])


def test_releases_r4b_and_r5_use_their_own_shapes() -> None:
    raw = sample("supplydelivery_implant_to_patient.json")
    assert FhirDataType(FhirConfig(type="fhir", release="R4B")).parse(raw).get("status") == "completed"
    with pytest.raises(ParseError) as caught:  # R5 made suppliedItem a list
        FhirDataType(FhirConfig(type="fhir", release="R5")).parse(raw)
    assert caught.value.position.startswith("SupplyDelivery.suppliedItem")
    r5 = b'{"resourceType":"SupplyDelivery","status":"completed","suppliedItem":[{"quantity":{"value":1}}]}'
    assert FhirDataType(FhirConfig(type="fhir", release="R5")).parse(r5).get("suppliedItem.quantity.value") == "1"


def test_bom_and_bad_bytes() -> None:
    assert FHIR.parse(b"\xef\xbb\xbf" + sample("device_hip_stem.json")).get("id") == "dev-hip-stem-12"
    with pytest.raises(ParseError) as caught:
        FHIR.parse(b'{"resourceType": "Device", "id": "\xff"}')
    assert caught.value.code == "structure"


# -- header and responses --------------------------------------------------------------------


def test_header_names_type_id_and_business_key_and_survives_garbage() -> None:
    header = FHIR.header(sample("chargeitem_implant_billable.json"))
    assert (header.message_type, header.control_id) == ("ChargeItem", "ci-20240313-0001")
    assert header.business_key == "ChargeItem|http://hospital.example.org/fhir/sid/charge-transaction|CT-900003-1"
    assert FHIR.header(sample("bundle_batch_two_charges.json")).message_type == "Bundle/batch"
    assert FHIR.header(b"\x00garbage").control_id == ""
    assert FHIR.header(b"[1, 2]").message_type == ""


def test_respond_is_none_for_aa_and_an_operation_outcome_naming_each_element_otherwise() -> None:
    raw = sample("chargeitem_implant_billable.json")
    assert FHIR.respond(raw, Outcome("AA")) is None
    data = json.loads(raw)
    data.update(status="posted", fooBar=1)
    body = FHIR.respond(json.dumps(data).encode(), Outcome("AE", reason="x"))
    assert body is not None
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert {(i["code"], i["expression"][0]) for i in outcome["issue"]} == {
        ("code-invalid", "ChargeItem.status"),
        ("structure", "ChargeItem.fooBar"),
    }
    R4BOperationOutcome.model_validate_json(body)
    R5OperationOutcome.model_validate_json(body)


def test_respond_for_a_valid_resource_that_failed_later_uses_the_outcome() -> None:
    raw = sample("chargeitem_implant_billable.json")
    body = FHIR.respond(raw, Outcome("AE", reason="mapping failed", position="ChargeItem.quantity", error_code="x"))
    assert body is not None
    issue = json.loads(body)["issue"][0]
    assert issue == {
        "severity": "error",
        "code": "processing",
        "diagnostics": "mapping failed",
        "expression": ["ChargeItem.quantity"],
    }
    refused = json.loads(
        FHIR.respond(raw, Outcome("AR", reason="too large", position="byte 9", error_code="100")) or b""
    )
    assert refused["issue"][0]["diagnostics"] == "too large (byte 9)"
    assert "expression" not in refused["issue"][0]


def test_respond_to_broken_json_is_one_structure_issue_without_expression() -> None:
    body = FHIR.respond((INVALID / "not_json.json").read_bytes(), Outcome("AR"))
    assert body is not None
    issue = json.loads(body)["issue"][0]
    assert issue["code"] == "structure" and "line 3, column 1" in issue["diagnostics"]
    R4BOperationOutcome.model_validate_json(body)


@pytest.mark.parametrize("name", sorted(EXPECTED_FAILURES))
def test_every_emitted_operation_outcome_validates_with_fhir_resources(name: str) -> None:
    body = FHIR.respond((INVALID / name).read_bytes(), Outcome("AE"))
    assert body is not None
    parsed = R4BOperationOutcome.model_validate_json(body)
    assert parsed.issue and all(i.severity == "error" for i in parsed.issue)
    R5OperationOutcome.model_validate_json(body)


def test_operation_outcome_function_for_the_listener() -> None:
    empty = operation_outcome([])
    assert json.loads(empty)["issue"][0]["severity"] == "information"
    R4BOperationOutcome.model_validate_json(empty)
    body = operation_outcome([("warning", "made-up", "Bundle.entry[2].resource.quantity", "")])
    issue = json.loads(body)["issue"][0]
    assert issue == {"severity": "warning", "code": "processing", "expression": ["Bundle.entry[2].resource.quantity"]}
    R4BOperationOutcome.model_validate_json(body)


def test_a_refused_bundle_entry_does_not_hide_the_other_entries_problems() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": {"resourceType": "NoSuchThing", "id": "1"}},
            {"resource": {"resourceType": "Device", "status": "broken", "colour": "red"}},
            {"resource": json.loads(sample("device_hip_stem.json"))},
        ],
    }
    issues = validate_resource(bundle)
    assert [(i.code, i.expression) for i in issues] == [
        ("not-supported", "Bundle.entry[0].resource"),
        ("structure", "Bundle.entry[1].resource.colour"),
        ("code-invalid", "Bundle.entry[1].resource.status"),
    ]
    grouped = issues_by_entry(issues)
    assert sorted(grouped, key=str) == [0, 1]
    assert [i.code for i in grouped[1]] == ["structure", "code-invalid"]
    assert issues_by_entry([*issues, Issue("error", "required", "Bundle.type", "missing")])[None][0].code == "required"


def test_contained_resources_are_checked_with_their_path() -> None:
    device = json.loads(sample("device_hip_stem.json"))
    device["status"] = "retired"
    charge = json.loads(sample("chargeitem_implant_billable.json"))
    charge["contained"] = [device]
    assert [(i.code, i.expression) for i in validate_resource(charge)] == [
        ("code-invalid", "ChargeItem.contained[0].status")
    ]


def test_nested_iterate_keeps_each_view_on_its_own_item() -> None:
    doc = FhirDocument(
        {
            "resourceType": "Invoice",
            "status": "issued",
            "lineItem": [
                {"sequence": 1, "priceComponent": [{"type": "base"}, {"type": "tax"}]},
                {"sequence": 2, "priceComponent": [{"type": "discount"}]},
            ],
        }
    )
    lines = doc.iterate("Invoice.lineItem")
    assert [[p.get("Invoice.lineItem.priceComponent.type") for p in li.iterate("priceComponent")] for li in lines] == [
        ["base", "tax"],
        ["discount"],
    ]
    assert [len(li.iterate("Invoice.lineItem.priceComponent")) for li in lines] == [2, 1]
    assert [li.get("Invoice.status") for li in lines] == ["issued", "issued"]
    assert lines[0].get("Claim.status") is None  # another type's path does not fall back
    assert [p.get("type") for p in doc.iterate("lineItem.priceComponent")] == ["base", "tax", "discount"]


def test_r4_types_that_r4b_reshaped_are_not_supported_instead_of_falsely_invalid() -> None:
    # a valid R4 Evidence (status and exposureBackground are its required elements in R4)
    evidence = {
        "resourceType": "Evidence",
        "status": "active",
        "exposureBackground": {"reference": "EvidenceVariable/v"},
    }
    issues = validate_resource(evidence)
    assert [(i.code, i.expression) for i in issues] == [("not-supported", "Evidence")]
    assert "cannot validate R4 Evidence" in issues[0].diagnostics
    # an R4B-model error under release R4 says which model spoke, never "in FHIR R4"
    charge = {"resourceType": "ChargeItem", "status": "billable", "code": {"text": "x"},
              "subject": {"reference": "Patient/p1"}, "notAnElement": 1}  # fmt: skip
    (unknown,) = validate_resource(charge)
    assert unknown.expression == "ChargeItem.notAnElement" and "FHIR R4B" in unknown.diagnostics
    assert "in FHIR R4)" not in unknown.diagnostics
    assert validate_resource(evidence, release="R4B") != issues  # R4B itself still validates its Evidence
