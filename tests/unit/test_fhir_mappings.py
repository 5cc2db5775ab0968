"""Golden canonical JSON for every FHIR sample (and corpus resource) each FHIR mapping applies to.

Pairs live in ``tests/golden/mapped/fhir/<mapping>/{samples,corpus}/<file>.json``: the objects
the mapping produces (sorted keys, two-space indent), or the failure that stops the resource.
``pytest --update-golden`` rewrites them; review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.core import registry
from engine.core.errors import MappingError
from engine.datatypes.fhir import FhirDataType, FhirDocument
from engine.mapping import Tables, compile_mapping

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "mapped" / "fhir"
SAMPLES = ROOT / "samples" / "fhir"
CORPUS = ROOT.parent / "shared" / "corpus" / "fhir"
MAPPINGS = {  # mapping -> the resource files it applies to
    "fhir-chargeitem-to-charge-event": "chargeitem_*.json",
    "fhir-supplydelivery-to-supply-usage": "supplydelivery_*.json",
    "fhir-supplyrequest-to-purchase-order": "supplyrequest_*.json",
    "fhir-device-to-item": "device_*.json",
    "fhir-procedure-to-supply-usage": "procedure_*.json",
    "fhir-claim-to-charge-event": "claim_*.json",
    "fhir-invoice-to-invoice": "invoice_*.json",
}
DATATYPE = FhirDataType()
TABLES = Tables.from_dir(ROOT / "mappings" / "tables")  # units: fhir_unit.csv


def cases() -> list[tuple[str, Path]]:
    found = []
    for mapping, pattern in MAPPINGS.items():
        found += [(mapping, p) for p in sorted(SAMPLES.glob(pattern))]
        if CORPUS.is_dir():
            found += [(mapping, p) for p in sorted(CORPUS.glob(pattern))]
    return found


def compiled(mapping: str) -> object:
    return compile_mapping(
        ROOT / "mappings" / f"{mapping}.yaml", models=registry.models(), datatype="fhir", check_path=DATATYPE.check_path
    )


def produce(mapping: str, doc: FhirDocument) -> object:
    try:
        result = compiled(mapping).run(doc, TABLES)  # type: ignore[attr-defined]
    except MappingError as exc:
        return {"exception": {"rule": exc.rule, "field": exc.field, "message": str(exc)}}
    return [obj.model_dump(mode="json", exclude_none=True) for obj in result.objects]


def dumped(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@pytest.mark.parametrize(("mapping", "sample"), cases(), ids=[f"{m}:{p.name}" for m, p in cases()])
def test_mapping_output_matches_golden(mapping: str, sample: Path, request: pytest.FixtureRequest) -> None:
    actual = dumped(produce(mapping, DATATYPE.parse(sample.read_bytes())))
    where = "corpus" if sample.is_relative_to(CORPUS) else "samples"
    golden = GOLDEN / mapping / where / (sample.stem + ".json")
    if request.config.getoption("--update-golden"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}; run pytest --update-golden and review it"
    assert actual == golden.read_text(encoding="utf-8")


def test_every_mapping_has_a_sample_that_produces_an_object() -> None:
    for mapping, pattern in MAPPINGS.items():
        outputs = [produce(mapping, DATATYPE.parse(p.read_bytes())) for p in sorted(SAMPLES.glob(pattern))]
        assert any(isinstance(out, list) and out for out in outputs), f"{mapping}: no sample produces an object"


def test_every_fhir_mapping_file_is_listed_here() -> None:
    assert {p.stem for p in (ROOT / "mappings").glob("fhir-*.yaml")} == set(MAPPINGS)


def test_bundle_entries_map_like_resources_posted_alone() -> None:
    bundle = DATATYPE.parse((SAMPLES / "bundle_batch_two_charges.json").read_bytes())
    entries = bundle.entries()
    assert [e.get("resourceType") for e in entries] == ["ChargeItem", "ChargeItem"]
    from_bundle = [produce("fhir-chargeitem-to-charge-event", e) for e in entries]
    alone = [
        produce("fhir-chargeitem-to-charge-event", DATATYPE.parse((SAMPLES / name).read_bytes()))
        for name in ("chargeitem_implant_billable.json", "chargeitem_credit_entered_in_error.json")
    ]
    assert from_bundle == alone
    assert [objs[0]["action"] for objs in from_bundle] == ["charge", "credit"]  # type: ignore[index]


def test_status_gates_produce_nothing_for_planned_charges_and_stock_deliveries() -> None:
    planned = DATATYPE.parse((SAMPLES / "chargeitem_planned.json").read_bytes())
    restock = DATATYPE.parse((SAMPLES / "supplydelivery_stock_restock.json").read_bytes())
    assert produce("fhir-chargeitem-to-charge-event", planned) == []
    assert produce("fhir-supplydelivery-to-supply-usage", restock) == []


def test_claim_items_become_one_charge_each_with_their_own_codes() -> None:
    claim = DATATYPE.parse((SAMPLES / "claim_professional_implant.json").read_bytes())
    charges = produce("fhir-claim-to-charge-event", claim)
    assert isinstance(charges, list)
    assert [(c["transaction_id"], c["procedure"]["system"], c.get("revenue_code")) for c in charges] == [
        ("CLM-2024-900003-1", "cpt", None),
        ("CLM-2024-900003-2", "hcpcs", "0278"),
    ]


def test_a_bad_fhir_path_in_a_mapping_is_a_load_error_naming_it(tmp_path: Path) -> None:
    from engine.core.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "source: fhir\ntarget: ChargeEvent\nfields:\n  charge_code: code.Coding.code\n"
        '  quantity: {from: "quantity.where(value)", as: decimal}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        compile_mapping(bad, models=registry.models(), datatype="fhir", check_path=DATATYPE.check_path)
    text = str(caught.value)
    assert "invalid FHIR path 'code.Coding.code'" in text
    assert "where() takes one comparison" in text


def test_mapped_business_objects_add_up() -> None:
    from engine.canonical import Invoice

    invoice = compiled("fhir-invoice-to-invoice").run(  # type: ignore[attr-defined]
        DATATYPE.parse((SAMPLES / "invoice_supplier_implants.json").read_bytes()), Tables()
    )
    (obj,) = invoice.objects
    assert isinstance(obj, Invoice)
    assert obj.problems() == [] and str(obj.computed_total()) == "4536.50"


CHANNEL = """\
name: fhir-charges
source: {type: mllp, listen: "127.0.0.1:0"}
pipeline:
  datatype: {type: fhir, resource_types: [ChargeItem]}
  transform: {type: mapping, file: mappings/fhir-chargeitem-to-charge-event.yaml}
destinations:
  - {name: billing, type: http, url: "http://127.0.0.1:9/charges"}
"""


def test_a_channel_pipeline_maps_charge_items_and_answers_bad_ones_with_an_operation_outcome() -> None:
    from engine.core.contracts import Outcome
    from engine.core.loader import load_channel
    from engine.core.message import InboundMessage, Status
    from engine.runtime.pipeline import Pipeline

    pipeline = Pipeline(load_channel("fhir-charges.yaml", env={}, text=CHANNEL), ROOT)
    raw = (SAMPLES / "chargeitem_implant_billable.json").read_bytes()
    header, doc, error = pipeline.precheck(raw)
    assert error is None and header.message_type == "ChargeItem"
    result = pipeline.run(InboundMessage("fhir-charges", raw), doc)
    assert result.status == Status.TRANSFORMED
    assert json.loads(result.routes[0].content or b"")["charge_code"] == "C-278-1001"
    planned = pipeline.run(InboundMessage("fhir-charges", (SAMPLES / "chargeitem_planned.json").read_bytes()))
    assert planned.status == Status.FILTERED
    claim = (SAMPLES / "claim_professional_implant.json").read_bytes()
    _, _, refused = pipeline.precheck(claim)
    assert refused is not None and (refused.code, refused.position) == ("not-supported", "Claim")
    answer = pipeline.respond(claim, Outcome("AE", reason=refused.reason, position=refused.position))
    assert json.loads(answer or b"")["issue"][0]["expression"] == ["Claim"]


def _charge(**elements: object) -> dict[str, object]:
    return {
        "resourceType": "ChargeItem",
        "status": "billable",
        "code": {"coding": [{"system": "http://hospital.example.org/fhir/sid/cdm", "code": "C-1"}]},
        "occurrenceDateTime": "2024-03-13",
        "subject": {"reference": "Patient/p1"},
        **elements,
    }


def _delivery(quantity: dict[str, object], patient: object = None) -> dict[str, object]:
    return {
        "resourceType": "SupplyDelivery",
        "id": "sd1",
        "status": "completed",
        "patient": patient or {"reference": "Patient/p1"},
        "suppliedItem": {"quantity": quantity, "itemCodeableConcept": {"coding": [{"code": "SUP-1"}]}},
        "occurrenceDateTime": "2024-03-13T10:00:00Z",
        "destination": {"reference": "https://ehr.example.org/fhir/Location/or3/_history/2"},
        "extension": [
            {
                "url": "http://hospital.example.org/fhir/StructureDefinition/encounter",
                "valueReference": {"reference": "Encounter/e1"},
            }
        ],
    }


def _parse(resource: dict[str, object]) -> FhirDocument:
    return DATATYPE.parse(json.dumps(resource).encode())


def test_every_r4_reference_form_maps_to_the_id_or_fails_with_a_rule_message() -> None:
    absolute = _charge(
        subject={"reference": "https://ehr.example.org/fhir/Patient/p1"},
        context={"reference": "Encounter/e1/_history/3"},
        account=[{"reference": "http://ehr.example.org/fhir/Account/a1"}],
    )
    (charge,) = produce("fhir-chargeitem-to-charge-event", _parse(absolute))  # type: ignore[misc]
    assert charge["patient"]["id"] == "p1"
    assert charge["encounter"] == {"encounter_id": "e1", "account_number": "a1"}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b6e5e8a-1c1a-4a61-9a43-5a9d2f0c0f01",
                "resource": {"resourceType": "Encounter", "id": "e7", "status": "finished", "class": {"code": "IMP"}},
            },
            {"resource": _charge(context={"reference": "urn:uuid:0b6e5e8a-1c1a-4a61-9a43-5a9d2f0c0f01"})},
        ],
    }
    entries = _parse(bundle).entries()
    (from_bundle,) = produce("fhir-chargeitem-to-charge-event", entries[1])  # type: ignore[misc]
    assert from_bundle["encounter"]["encounter_id"] == "e7"  # resolved through the fullUrl
    alone = produce("fhir-chargeitem-to-charge-event", _parse(bundle["entry"][1]["resource"]))  # type: ignore[index]
    assert alone["exception"]["rule"] == "reference"  # type: ignore[index]
    assert "cannot be resolved" in alone["exception"]["message"]  # type: ignore[index]
    logical = _charge(context={"identifier": {"system": "http://hospital.example.org/visit", "value": "V1"}})
    failed = produce("fhir-chargeitem-to-charge-event", _parse(logical))
    assert failed["exception"]["field"] == "encounter.encounter_id"  # type: ignore[index]
    assert "logical reference" in failed["exception"]["message"]  # type: ignore[index]
    # an absolute patient reference is usage for the ERP, not a stock movement
    (usage,) = produce(  # type: ignore[misc]
        "fhir-supplydelivery-to-supply-usage",
        _parse(_delivery({"value": 2}, {"reference": "https://ehr.example.org/fhir/Patient/p1"})),
    )
    assert usage["patient"]["id"] == "p1" and usage["location"] == "or3"
    by_identifier = produce(
        "fhir-supplydelivery-to-supply-usage", _parse(_delivery({"value": 2}, {"identifier": {"value": "MRN1"}}))
    )
    assert by_identifier["exception"]["rule"] == "reference"  # type: ignore[index]


def test_units_map_through_the_unit_table_and_an_unknown_unit_is_an_error() -> None:
    def unit(quantity: dict[str, object]) -> object:
        out = produce("fhir-supplydelivery-to-supply-usage", _parse(_delivery(quantity)))
        return out[0]["uom"] if isinstance(out, list) else out["exception"]  # type: ignore[index]

    ucum = "http://unitsofmeasure.org"
    assert unit({"value": 10, "system": ucum, "code": "mL", "unit": "mL"}) == "ML"
    assert unit({"value": 1, "system": ucum, "code": "{box}"}) == "BX"
    assert unit({"value": 3, "unit": "each"}) == "EA"
    assert unit({"value": 3}) == "EA"  # no unit at all: a count
    unknown = unit({"value": 2, "system": ucum, "code": "[in_i]"})
    assert isinstance(unknown, dict) and unknown["rule"] == "unit-known"
    request = {
        "resourceType": "SupplyRequest",
        "id": "sr1",
        "status": "active",
        "itemCodeableConcept": {"coding": [{"code": "SUP-1"}]},
        "quantity": {"value": 500, "system": ucum, "code": "mL"},
        "authoredOn": "2024-03-13",
        "requester": {"display": "OR storeroom"},
        "supplier": [{"display": "Distributor"}],
        "deliverTo": {"display": "Dock 1"},
    }
    (order,) = produce("fhir-supplyrequest-to-purchase-order", _parse(request))  # type: ignore[misc]
    assert order["lines"][0]["uom"] == "ML" and order["lines"][0]["quantity"] == "500"
    request["quantity"] = {"value": 5, "code": "furlong"}
    refused = produce("fhir-supplyrequest-to-purchase-order", _parse(request))
    assert refused["exception"]["rule"] == "unit-known"  # type: ignore[index]
