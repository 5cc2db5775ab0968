"""Acceptance (issue 5): every FHIR file of the corpus POSTed to a running endpoint gets 201/200,
or a 4xx with an OperationOutcome naming the element; accepted resources are stored and mapped
where a mapping applies (the delivered objects equal the mapping goldens); and every FHIR
resource the endpoint emits (echoes, OperationOutcomes, batch responses, the
CapabilityStatement) validates with fhir.resources."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fhir.resources import R4B

from engine.core.store import MessageQuery
from engine.testing.peers import EngineThread, HttpPeer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "mapped" / "fhir"
MAPPINGS = {  # resource type -> mapping (as in tests/unit/test_fhir_mappings.py)
    "ChargeItem": "fhir-chargeitem-to-charge-event",
    "SupplyDelivery": "fhir-supplydelivery-to-supply-usage",
    "SupplyRequest": "fhir-supplyrequest-to-purchase-order",
    "Device": "fhir-device-to-item",
    "Procedure": "fhir-procedure-to-supply-usage",
    "Claim": "fhir-claim-to-charge-event",
    "Invoice": "fhir-invoice-to-invoice",
}
FHIR = "application/fhir+json"


def channel() -> str:
    lines = [
        "name: fhir-corpus",
        "source: {type: fhir, listen: '127.0.0.1:0'}",
        "pipeline: {datatype: {type: fhir, release: R4}}",
        "destinations:",
    ]
    for kind, mapping in MAPPINGS.items():
        lines.append(
            f"  - {{name: {mapping}, type: http, url: '${{PEER}}/{mapping}', "
            f"transform: {{type: mapping, file: mappings/{mapping}.yaml}}, "
            f"filter: {{field: resourceType, equals: {kind}}}}}"
        )
    return "\n".join(lines) + "\n"


def validates(resource: dict[str, Any]) -> None:
    """Raise unless fhir.resources (R4B) accepts the resource Junction emitted."""
    model = R4B.get_fhir_model_class(resource["resourceType"])
    model.model_validate(resource)


async def exchange(method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
        session.request(method, url, data=body, headers={"Content-Type": FHIR}) as answer,
    ):
        return answer.status, json.loads(await answer.read())


def wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_every_corpus_fhir_file_gets_a_definite_fhir_answer(corpus: Path, make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    project: Path = make_project({"fhir-corpus": channel()})
    (project / "mappings").symlink_to(ROOT / "mappings")
    files = sorted((corpus / "fhir").glob("*.json"))
    assert len(files) >= 20
    with HttpPeer() as peer:
        monkeypatch.setenv("PEER", peer.url)
        with EngineThread(project) as running:
            host, port = running.address("fhir-corpus")
            base = f"http://{host}:{port}/fhir/fhir-corpus"
            status, capability = asyncio.run(exchange("GET", f"{base}/metadata"))
            assert status == 200 and capability["resourceType"] == "CapabilityStatement"
            validates(capability)
            outcomes: dict[str, int] = {}
            for file in files:
                resource = json.loads(file.read_text(encoding="utf-8"))
                kind = resource["resourceType"]
                batch = kind == "Bundle" and resource.get("type") in ("batch", "transaction")
                url = base if batch else f"{base}/{kind}"
                status, answer = asyncio.run(exchange("POST", url, file.read_bytes()))
                outcomes[file.name] = status
                assert status in (200, 201) or 400 <= status < 500, f"{file.name}: {status}"
                if status >= 400:
                    assert answer["resourceType"] == "OperationOutcome", file.name
                    assert any(issue.get("expression") for issue in answer["issue"]), file.name
                validates(answer)  # the echo, the OperationOutcome or the batch/transaction response
            stored = running.run(running.engine.store.search(MessageQuery(channel="fhir-corpus", limit=1000)))
            accepted = [name for name, status in outcomes.items() if status in (200, 201)]
            assert len(stored) >= len(accepted)

            # mapped where a mapping applies: what reached the peer equals the goldens
            for file in files:
                kind = json.loads(file.read_text(encoding="utf-8"))["resourceType"]
                mapping = MAPPINGS.get(kind)
                if mapping is None or outcomes[file.name] not in (200, 201):
                    continue
                golden = json.loads((GOLDEN / mapping / "corpus" / f"{file.stem}.json").read_text(encoding="utf-8"))
                if isinstance(golden, list) and golden:
                    wait_for(lambda m=mapping: any(r.path == f"/{m}" for r in peer.snapshot()))
                    sent = [json.loads(r.body) for r in peer.snapshot() if r.path == f"/{mapping}"]
                    as_lists = [body if isinstance(body, list) else [body] for body in sent]
                    assert golden in as_lists, f"{file.name}: delivered objects differ from the golden"
