"""The FHIR destination against a small real FHIR server (aiohttp, 127.0.0.1) that implements
conditional create, transactions and OperationOutcome errors, and validates what it receives."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.supplydelivery import SupplyDelivery
from pydantic import ValidationError

from engine.connectors.fhirout import FhirDestination, FhirDestinationConfig
from engine.core import registry
from engine.core.errors import PermanentError, RetryableError
from engine.core.logs import bind
from engine.core.message import Outbound
from engine.datatypes.json import Json
from engine.mapping import Tables, compile_mapping

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USAGE = ROOT / "tests" / "golden" / "mapped" / "dft-to-supply-usage" / "samples" / "dft_p03_supply_two_ft1.json"


def outcome(code: str, expression: str, status: int) -> web.Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "expression": [expression], "diagnostics": "patient MRN9 x"}],
    }
    return web.json_response(body, status=status, content_type="application/fhir+json")


@dataclass
class FhirServer:
    """Stores SupplyDelivery resources; conditional create on identifier; answers 503 while ``down``."""

    stored: dict[str, dict[str, object]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    down: int = 0
    url: str = ""

    def _create(self, resource: dict[str, object], condition: str | None) -> tuple[int, str]:
        SupplyDelivery.model_validate(resource)  # what Junction emits must be valid FHIR
        if condition:
            for rid, existing in self.stored.items():
                ident = existing["identifier"][0]  # type: ignore[index]
                if condition == f"identifier={ident['system']}|{ident['value']}":  # type: ignore[index]
                    return 200, rid
        rid = str(len(self.stored) + 1)
        self.stored[rid] = resource
        return 201, rid

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, dict(request.headers)))
        if self.down:
            self.down -= 1
            return outcome("transient", "SupplyDelivery", 503)
        body = await request.json()
        if request.path.endswith("/fhir"):  # transaction
            Bundle.model_validate(body)
            answers = []
            for entry in body["entry"]:
                status, rid = self._create(entry["resource"], entry["request"].get("ifNoneExist"))
                answers.append({"response": {"status": f"{status}", "location": f"SupplyDelivery/{rid}"}})
            return web.json_response({"resourceType": "Bundle", "type": "transaction-response", "entry": answers})
        if body.get("status") == "entered-in-error":
            return outcome("business-rule", "SupplyDelivery.status", 422)
        try:
            status, rid = self._create(body, request.headers.get("If-None-Exist"))
        except ValidationError:
            return outcome("invalid", "SupplyDelivery", 400)
        return web.json_response(
            body, status=status, headers={"Location": f"{self.url}/SupplyDelivery/{rid}/_history/1"}
        )


@asynccontextmanager
async def serving(server: FhirServer) -> AsyncIterator[FhirServer]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}/fhir"
    try:
        yield server
    finally:
        await runner.cleanup()


def deliveries() -> list[dict[str, object]]:
    mapping = compile_mapping(
        ROOT / "mappings" / "supply-usage-to-fhir-supplydelivery.yaml",
        models=registry.models(),
        check_path=Json().check_path,
    )
    result = mapping.run(Json().parse(USAGE.read_bytes()), Tables())
    return [o.model_dump(mode="json", exclude_none=True) for o in result.objects]


def destination(server: FhirServer) -> FhirDestination:
    config = FhirDestinationConfig.model_validate({"type": "fhir", "name": "ehr-fhir", "url": server.url})
    return FhirDestination(config, channel="c", base_dir=ROOT, log=bind(logging.getLogger("t"), channel="c"))


def item(content: object, n: int = 1) -> Outbound:
    return Outbound(f"M{n}", "c", "ehr-fhir", f"M{n}", json.dumps(content).encode(), "application/json")


def test_mapped_supply_deliveries_are_valid_and_created_once_across_a_retry() -> None:
    resources = deliveries()
    assert len(resources) == 2 and all(r["resourceType"] == "SupplyDelivery" for r in resources)

    async def scenario() -> None:
        async with serving(FhirServer()) as server:
            dest = destination(server)
            await dest.open()
            try:
                first = await dest.send(item(resources[0]))
                again = await dest.send(item(resources[0]))  # a retry after a lost answer
                both = await dest.send(item(resources, 2))  # a list: one transaction
            finally:
                await dest.close()
            assert (first.status_code, again.status_code, both.status_code) == (201, 200, 200)
            assert "SupplyDelivery/1" in first.detail
            assert len(server.stored) == 2  # the retry and the transaction's first entry found the resource
            method, path, headers = server.requests[0]
            assert (method, path) == ("POST", "/fhir/SupplyDelivery")
            assert headers["If-None-Exist"] == "identifier=urn:junction:supply-usage|DFT0000000201-1"
            assert headers["Content-Type"].startswith("application/fhir+json")
            assert server.requests[2][1] == "/fhir"

    asyncio.run(scenario())


def test_invalid_resources_are_never_sent_and_outcomes_are_recorded_without_diagnostics() -> None:
    resource = deliveries()[0]

    async def scenario() -> None:
        async with serving(FhirServer(down=1)) as server:
            dest = destination(server)
            await dest.open()
            try:
                with pytest.raises(PermanentError) as invalid:
                    await dest.send(item({**resource, "occurrenceDateTime": "13/03/2024 owl"}))
                with pytest.raises(RetryableError) as busy:
                    await dest.send(item(resource))
                with pytest.raises(PermanentError) as refused:
                    await dest.send(item({**resource, "status": "entered-in-error"}))
            finally:
                await dest.close()
            assert "SupplyDelivery.occurrenceDateTime" in str(invalid.value) and "owl" not in str(invalid.value)
            assert len(server.requests) == 2  # the invalid resource never left Junction
            assert busy.value.status_code == 503
            assert "422" in str(refused.value) and "business-rule at SupplyDelivery.status" in str(refused.value)
            assert "MRN9" not in str(refused.value) and b"MRN9" in (refused.value.response or b"")

    asyncio.run(scenario())
