"""The FHIR R4 endpoint (source type fhir) with the fhir data type, real aiohttp clients and engine."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.core.message import Status
from engine.testing.peers import EngineThread, HttpPeer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]

FHIR = "application/fhir+json"
DELIVERY: dict[str, Any] = {
    "resourceType": "SupplyDelivery",
    "status": "completed",
    "patient": {"reference": "Patient/p1"},
    "suppliedItem": {"quantity": {"value": 2}, "itemCodeableConcept": {"text": "gauze 4x4"}},
}
BAD_DELIVERY: dict[str, Any] = {
    "resourceType": "SupplyDelivery",
    "status": "bogus",
    "suppliedItem": {"quantity": {"value": "two"}},
}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    method: str,
    url: str,
    body: bytes | None = None,
    content_type: str | None = FHIR,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request with a real aiohttp client (its own loop; bounded by a 20 s timeout)."""

    async def go() -> Answer:
        sent = {**(headers or {}), **({"Content-Type": content_type} if content_type else {})}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
            session.request(method, url, data=body, headers=sent) as response,
        ):
            return Answer(response.status, dict(response.headers), await response.read())

    return asyncio.run(go())


def fhir_channel(name: str, source: str = "", datatype: str = "fhir") -> str:
    options = "".join(f"  {line}\n" for line in source.splitlines())
    return f"name: {name}\nsource:\n  type: fhir\n  listen: 127.0.0.1:0\n{options}pipeline:\n  datatype: {{type: {datatype}}}\n"


def base_url(engine: EngineThread, channel: str) -> str:
    host, port = engine.address(channel)
    return f"http://{host}:{port}/fhir/{channel}"


def post(url: str, resource: Any, **kwargs: Any) -> Answer:
    return call("POST", url, json.dumps(resource).encode(), FHIR, **kwargs)


def expressions(outcome: dict[str, Any]) -> list[str]:
    assert outcome["resourceType"] == "OperationOutcome"
    return [e for issue in outcome["issue"] for e in issue.get("expression", [])]


def entry(resource: dict[str, Any], method: str = "POST", url: str | None = None) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": method, "url": url or resource["resourceType"]}}


@pytest.fixture
def engine(make_project: Callable[..., Path]) -> Any:
    project = make_project({"supply": fhir_channel("supply", "resource_types: [SupplyDelivery, ChargeItem]")})
    with EngineThread(project) as running:
        yield running


def stored(engine: EngineThread, message_id: str) -> Any:
    detail = engine.run(engine.engine.store.get(message_id))
    assert detail is not None
    return detail


def test_create_answers_201_with_location_and_the_stored_resource(engine: EngineThread) -> None:
    base = base_url(engine, "supply")
    answer = post(f"{base}/SupplyDelivery", DELIVERY)
    assert answer.status == 201, answer.body
    assert answer.headers["Content-Type"].startswith(FHIR)
    echo = answer.json()
    message_id = echo["id"]
    assert answer.headers["Location"] == f"{base}/SupplyDelivery/{message_id}/_history/1"
    assert echo["meta"]["versionId"] == "1" and echo["suppliedItem"] == DELIVERY["suppliedItem"]
    detail = stored(engine, message_id)
    assert detail.contents[(0, "raw")] == json.dumps(DELIVERY).encode()
    assert detail.summary.source["path"] == "/fhir/supply/SupplyDelivery"
    minimal = post(f"{base}/SupplyDelivery", DELIVERY, headers={"Prefer": "return=minimal"})
    assert minimal.status == 201 and minimal.body == b"" and "/SupplyDelivery/" in minimal.headers["Location"]
    plain_json = call("POST", f"{base}/SupplyDelivery", json.dumps(DELIVERY).encode(), "application/json")
    assert plain_json.status == 201


def test_invalid_resources_get_an_operation_outcome_naming_each_element(engine: EngineThread) -> None:
    base = base_url(engine, "supply")
    invalid = post(f"{base}/SupplyDelivery", BAD_DELIVERY)
    assert invalid.status == 422, invalid.body
    assert set(expressions(invalid.json())) >= {
        "SupplyDelivery.status",
        "SupplyDelivery.suppliedItem.quantity.value",
    }
    assert stored(engine, invalid.headers["X-Junction-Message-Id"]).summary.status == Status.ERROR
    garbage = call("POST", f"{base}/SupplyDelivery", b"{not json", FHIR)
    assert garbage.status == 400 and garbage.json()["issue"][0]["code"] == "structure"
    mismatch = post(f"{base}/ChargeItem", DELIVERY)
    assert mismatch.status == 400 and expressions(mismatch.json()) == ["resourceType"]
    unknown = post(f"{base}/Patient", {"resourceType": "Patient"})
    assert unknown.status == 404 and unknown.json()["issue"][0]["code"] == "not-supported"
    assert post(f"{base}/not-a-type", DELIVERY).status == 404
    assert call("POST", f"{base}/SupplyDelivery", b"a|b", "text/plain").status == 415
    assert call("GET", f"{base}/SupplyDelivery").status == 405
    assert call("POST", f"{base}/SupplyDelivery/123/_history", b"{}", FHIR).status == 404
    errors = engine.run(engine.engine.store.counters("supply")).get("ERROR", 0)
    assert errors == 4  # invalid, garbage, mismatch, wrong media type: all kept with their error


def test_batch_answers_per_entry(engine: EngineThread) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [entry(DELIVERY), entry(BAD_DELIVERY), entry(DELIVERY, method="PUT"), entry(DELIVERY)],
    }
    answer = post(base_url(engine, "supply"), bundle)
    assert answer.status == 200, answer.body
    result = answer.json()
    assert result["resourceType"] == "Bundle" and result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "422 Unprocessable Entity", "400 Bad Request", "201 Created"]
    first, _, third, fourth = result["entry"]
    assert "SupplyDelivery.status" in expressions(result["entry"][1]["response"]["outcome"])
    assert expressions(third["response"]["outcome"]) == ["Bundle.entry[2].request.method"]
    ids = [e["response"]["location"].split("/")[1] for e in (first, fourth)]
    assert ids[0] != ids[1]
    for message_id in ids:
        detail = stored(engine, message_id)
        assert json.loads(detail.contents[(0, "raw")]) == DELIVERY
        assert detail.summary.source["bundle"] == "batch"


def test_transaction_is_all_or_nothing_and_one_message_per_entry(engine: EngineThread) -> None:
    base = base_url(engine, "supply")
    charge = {
        "resourceType": "ChargeItem",
        "status": "billable",
        "code": {"text": "gauze"},
        "subject": {"reference": "Patient/p1"},
    }
    good: dict[str, Any] = {"resourceType": "Bundle", "type": "transaction", "entry": [entry(DELIVERY), entry(charge)]}
    wrong = copy.deepcopy(good)
    wrong["entry"][1]["request"]["url"] = "SupplyDelivery"
    wrong["entry"].append({"request": {"method": "DELETE", "url": "Device/1"}})
    refused = post(base, wrong)
    assert refused.status == 400, refused.body
    assert expressions(refused.json()) == [
        "Bundle.entry[1].request.url",
        "Bundle.entry[2].resource",
        "Bundle.entry[2].request.method",
    ]
    before = engine.run(engine.engine.store.counters("supply"))
    assert before.get("ERROR", 0) == 1 and before.get("RECEIVED", 0) + before.get("TRANSFORMED", 0) == 0
    answer = post(base, good)
    assert answer.status == 200, answer.body
    result = answer.json()
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created", "201 Created"]
    locations = [e["response"]["location"] for e in result["entry"]]
    assert locations[0].startswith("SupplyDelivery/") and locations[1].startswith("ChargeItem/")
    ids = [location.split("/")[1] for location in locations]
    assert ids[0] != ids[1] and answer.headers["X-Junction-Message-Id"] == ids[0]
    for index, (message_id, resource) in enumerate(zip(ids, (DELIVERY, charge), strict=True)):
        detail = stored(engine, message_id)
        assert json.loads(detail.contents[(0, "raw")]) == resource  # each entry its own message
        assert detail.summary.source["bundle"] == "transaction" and detail.summary.source["entry"] == index
        assert detail.summary.correlation_id == ids[0]  # one correlation id for the transaction
    again = post(base, good)  # a retry (e.g. after a time-out) stores nothing twice
    assert again.status == 200 and [e["response"]["location"] for e in again.json()["entry"]] == locations
    invalid_inside = copy.deepcopy(good)
    invalid_inside["entry"][1]["resource"] = {**BAD_DELIVERY, "status": "billable"} | {"resourceType": "SupplyDelivery"}
    invalid_inside["entry"][1]["request"]["url"] = "SupplyDelivery"
    counts = engine.run(engine.engine.store.counters("supply"))
    rejected = post(base, invalid_inside)
    assert rejected.status == 422, rejected.body
    assert set(expressions(rejected.json())) == {
        "Bundle.entry[1].resource.status",
        "Bundle.entry[1].resource.suppliedItem.quantity.value",
    }
    after = engine.run(engine.engine.store.counters("supply"))
    assert after.get("ERROR", 0) == counts.get("ERROR", 0) + 1  # the request, stored as refused
    assert sum(after.values()) == sum(counts.values()) + 1  # and not its valid first entry
    other = post(base, {"resourceType": "Bundle", "type": "collection", "entry": []})
    assert other.status == 400 and expressions(other.json()) == ["Bundle.type"]


def test_metadata_is_a_capability_statement(engine: EngineThread) -> None:
    answer = call("GET", f"{base_url(engine, 'supply')}/metadata", content_type=None)
    assert answer.status == 200 and answer.headers["Content-Type"].startswith(FHIR)
    statement = answer.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1" and statement["kind"] == "instance"
    assert statement["status"] == "active" and "application/fhir+json" in statement["format"]
    rest = statement["rest"][0]
    assert rest["mode"] == "server"
    assert [r["type"] for r in rest["resource"]] == ["SupplyDelivery", "ChargeItem"]
    assert all(r["interaction"] == [{"code": "create"}] for r in rest["resource"])
    assert {i["code"] for i in rest["interaction"]} == {"batch", "transaction"}
    assert call("POST", f"{base_url(engine, 'supply')}/metadata", b"{}", FHIR).status == 405


def test_auth_and_size_limits_answer_in_fhir(
    make_project: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FHIR_T_TOKEN", "fhir-tok")
    source = "auth: {bearer_env: FHIR_T_TOKEN}\nmax_body_bytes: 2048"
    project = make_project({"secure": fhir_channel("secure", source)})
    with EngineThread(project) as engine:
        base = base_url(engine, "secure")
        denied = post(f"{base}/SupplyDelivery", DELIVERY)
        assert denied.status == 401 and denied.headers["WWW-Authenticate"].startswith("Bearer")
        assert denied.json()["issue"][0]["code"] == "login"
        token = {"Authorization": "Bearer fhir-tok"}
        assert post(f"{base}/SupplyDelivery", DELIVERY, headers=token).status == 201
        big = dict(DELIVERY, text={"status": "generated", "div": "<div>" + "x" * 4000 + "</div>"})
        too_big = post(f"{base}/SupplyDelivery", big, headers=token)
        assert too_big.status == 413 and too_big.json()["issue"][0]["code"] == "too-costly"
        metadata = call("GET", f"{base}/metadata", content_type=None)
        assert metadata.status == 200  # public, as FHIR clients expect
        assert "bearer" in metadata.json()["rest"][0]["security"]["description"]
        counters = engine.run(engine.engine.store.counters("secure"))
        assert counters.get("ERROR", 0) == 1  # the oversize body; the 401 was not stored


def test_any_resource_type_with_the_json_data_type(make_project: Callable[..., Path]) -> None:
    """Without resource_types every type is accepted; the data type decides (json accepts all)."""
    project = make_project({"open": fhir_channel("open", "ack_mode: after_processing", datatype="json")})
    with EngineThread(project) as engine:
        base = base_url(engine, "open")
        answer = post(f"{base}/Patient", {"resourceType": "Patient", "active": True})
        assert answer.status == 201
        assert stored(engine, answer.json()["id"]).summary.status == Status.TRANSFORMED
        statement = call("GET", f"{base}/metadata", content_type=None).json()
        assert statement["rest"][0]["resource"] == []


BILLING = """
name: billing
source:
  type: fhir
  listen: 127.0.0.1:0
  ack_mode: after_processing
  resource_types: [SupplyDelivery, ChargeItem]
pipeline:
  datatype: {type: fhir}
  transform: {type: mapping, file: mappings/fhir-chargeitem-to-charge-event.yaml}
destinations:
  - {name: billing, type: http, url: "${BILLING_URL}/charges"}
"""


def test_each_transaction_entry_is_mapped_like_a_create_and_reaches_the_destination(
    make_project: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project({"billing": BILLING})
    shutil.copytree(ROOT / "mappings", project / "mappings")
    charge = {
        "resourceType": "ChargeItem",
        "status": "billable",
        "code": {"coding": [{"system": "http://hospital.example.org/fhir/sid/cdm", "code": "C-1"}]},
        "subject": {"reference": "https://ehr.example.org/fhir/Patient/p1"},
        "context": {"reference": "Encounter/e1"},
        "occurrenceDateTime": "2024-03-13",
        "service": [{"reference": "urn:uuid:5d1c7a9e-2b1f-4c3e-9d8a-0e4f5a6b7c8d"}],
    }
    delivery = {**DELIVERY, "id": "sd9"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {**entry(delivery), "fullUrl": "urn:uuid:5d1c7a9e-2b1f-4c3e-9d8a-0e4f5a6b7c8d"},
            entry(charge),
        ],
    }
    with HttpPeer() as billing:
        monkeypatch.setenv("BILLING_URL", billing.url)
        with EngineThread(project) as running:
            answer = post(base_url(running, "billing"), bundle)
            assert answer.status == 200, answer.body
            charge_id = answer.json()["entry"][1]["response"]["location"].split("/")[1]
            deadline = time.monotonic() + 10
            while not billing.snapshot() and time.monotonic() < deadline:
                time.sleep(0.02)
            detail = stored(running, charge_id)
            # valid FHIR, but the mapping refuses it (a logical reference has no id): with
            # after_processing that entry is answered with its failure, the other stays stored
            logical = {**charge, "context": {"identifier": {"value": "V1"}}}
            logical.pop("service")
            later = post(base_url(running, "billing"), {**bundle, "entry": [entry(DELIVERY), entry(logical)]})
    assert later.status == 422, later.body
    outcome = later.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert expressions(outcome) == ["Bundle.entry[1]"] and "logical reference" in outcome["issue"][0]["diagnostics"]
    assert "not undone): entry 0 (SupplyDelivery/" in outcome["issue"][-1]["diagnostics"]
    (posted,) = billing.snapshot()  # the ChargeItem's charge; the SupplyDelivery maps to nothing
    sent = json.loads(posted.body)
    assert sent["charge_code"] == "C-1" and sent["patient"]["id"] == "p1"
    assert sent["encounter"]["encounter_id"] == "e1"
    # the urn:uuid reference to the other entry now names that resource by its id
    assert json.loads(detail.contents[(0, "raw")])["service"] == [{"reference": "SupplyDelivery/sd9"}]
