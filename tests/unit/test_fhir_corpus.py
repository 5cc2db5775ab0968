"""Every third-party FHIR file of the corpus gets a definite outcome from the fhir data type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.core.contracts import Outcome
from engine.core.errors import ParseError
from engine.datatypes.fhir import FhirDataType

# file -> "accepted", or (issue code, element path) of the first problem. All 26 files are
# R4 examples that the R4B models and Junction's R4 bindings accept.
EXPECTED: dict[str, str | tuple[str, str]] = {
    name: "accepted"
    for name in (
        "account_r4_example.json",
        "bundle_r4_batch_from_dft_p03_fhirconv.json",
        "bundle_r4_searchset_example.json",
        "bundle_r4_transaction.json",
        "chargeitem_r4_example.json",
        "chargeitemdefinition_r4_device.json",
        "claim_r4_example.json",
        "claim_r4_institutional.json",
        "claim_r4_pharmacy.json",
        "claim_r4_professional.json",
        "claimresponse_r4_example.json",
        "coverage_r4_example.json",
        "device_r4_example.json",
        "device_r4_feedingtube.json",
        "encounter_r4_example.json",
        "encounter_r4_home.json",
        "explanationofbenefit_r4_example.json",
        "explanationofbenefit_r4_example_2.json",
        "invoice_r4_example.json",
        "patient_r4_chinese_names.json",
        "patient_r4_example.json",
        "patient_r4_example_a.json",
        "procedure_r4_biopsy.json",
        "procedure_r4_example.json",
        "supplydelivery_r4_example.json",
        "supplyrequest_r4_simpleorder.json",
    )
}


def outcome(datatype: FhirDataType, raw: bytes) -> str | tuple[str, str]:
    try:
        datatype.parse(raw)
    except ParseError as exc:
        return (exc.code, exc.position)
    return "accepted"


def test_every_corpus_file_has_a_definite_expected_outcome(corpus: Path) -> None:
    files = sorted(p.name for p in (corpus / "fhir").glob("*.json"))
    assert files == sorted(EXPECTED)
    datatype = FhirDataType()
    actual = {name: outcome(datatype, (corpus / "fhir" / name).read_bytes()) for name in files}
    assert actual == EXPECTED


def test_corpus_headers_name_the_resource_type(corpus: Path) -> None:
    datatype = FhirDataType()
    for path in sorted((corpus / "fhir").glob("*.json")):
        kind = json.loads(path.read_bytes())["resourceType"]
        assert datatype.header(path.read_bytes()).message_type.split("/")[0] == kind, path.name


def test_the_converter_bundle_entries_are_typed_and_answered_with_none(corpus: Path) -> None:
    datatype = FhirDataType()
    raw = (corpus / "fhir" / "bundle_r4_batch_from_dft_p03_fhirconv.json").read_bytes()
    doc = datatype.parse(raw)
    entries = doc.entries()
    assert len(entries) == len(json.loads(raw)["entry"]) > 10
    assert all(e.get("resourceType") for e in entries)
    assert datatype.respond(raw, Outcome("AA")) is None


@pytest.mark.parametrize("release", ["R4B", "R5"])
def test_other_releases_give_definite_outcomes_too(corpus: Path, release: str) -> None:
    from engine.datatypes.fhir import FhirConfig

    datatype = FhirDataType(FhirConfig(type="fhir", release=release))  # type: ignore[arg-type]
    for path in sorted((corpus / "fhir").glob("*.json")):
        result = outcome(datatype, path.read_bytes())
        assert result == "accepted" or (result[0] and result[1].split(".")[0]), path.name
