"""FHIR destination: send FHIR resources to a FHIR R4 server, idempotently.

The content is one resource, a JSON list of resources, or a transaction/batch Bundle
(typically the output of a mapping whose target is ``fhir.SupplyDelivery`` and the like).
Every resource is validated with fhir.resources before anything is sent (R4 through the
R4B models), so Junction never emits an invalid resource.

- One resource: ``POST [base]/[type]`` with ``If-None-Exist: identifier=system|value`` from
  the resource's first identifier (conditional create: a retry after a lost answer finds
  the resource instead of creating a second one; 200 and 201 both mean delivered).
  ``interaction: update`` sends ``PUT [base]/[type]/[id]`` instead (the resource needs an id).
- Several resources: one transaction Bundle with a conditional create per entry
  (``request.ifNoneExist``), so the server stores all or nothing.
- A Bundle: posted to ``[base]`` as it is.

Errors: 4xx answers are permanent (except 408/429), with the OperationOutcome's issue codes
and element expressions in the error (never its diagnostics, which may quote values); 5xx
and transport failures are retried.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import Field

from engine.connectors.http import (
    Auth,
    HttpDestination,
    RateLimit,
    classify,
    status_text,
)
from engine.core.channel import DestinationConfig
from engine.core.errors import PermanentError, RetryableError
from engine.core.message import Outbound, SendResult
from engine.core.spec import Example, destination_spec

__all__ = ["FHIR_DESTINATION", "FhirDestination", "FhirDestinationConfig", "outcome_summary"]

FHIR_JSON = "application/fhir+json"


class FhirDestinationConfig(DestinationConfig):
    """Send FHIR resources to a FHIR server."""

    url: str = Field("", description="The server's base URL (…/fhir); an unset variable holds the queue.")
    interaction: Literal["create", "update"] = Field(
        "create", description="create: conditional create (If-None-Exist); update: PUT by the resource id."
    )
    release: Literal["R4", "R4B", "R5"] = Field(
        "R4", description="What the resources are validated as before sending (R4 through the R4B models)."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (values may be ${VAR}).")
    auth: Auth | None = Field(None, description="bearer, basic, api_key or oauth2 (client credentials), as for http.")
    rate_limit: RateLimit | None = Field(None, description="At most this many requests per second (all threads).")
    timeout_secs: float = Field(30.0, gt=0, description="Give up on a request after this long.")
    max_response_bytes: int = Field(262144, ge=0, description="Keep at most this much of each response.")
    verify_tls: bool = Field(True, description="Verify the server certificate; false only for tests.")
    ca_file: str | None = Field(None, description="PEM CA bundle for the server, relative to the project root.")


def _model(resource_type: str, release: str) -> Any:
    from fhir.resources import get_fhir_model_class

    package = "R5" if release == "R5" else "R4B"
    if package == "R5":
        return get_fhir_model_class(resource_type)
    import importlib

    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    return getattr(module, resource_type)


def validate(resource: Any, release: str) -> dict[str, Any]:
    """The resource as JSON data once fhir.resources accepts it; ``PermanentError`` naming the
    elements otherwise (never their values)."""
    from pydantic import ValidationError

    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise PermanentError("the content is not a FHIR resource (no resourceType)")
    kind = resource["resourceType"]
    try:
        model = _model(kind, release)
    except (ImportError, AttributeError, KeyError, ValueError) as exc:
        raise PermanentError(f"{kind} is not a FHIR {release} resource type") from exc
    try:
        parsed = model.model_validate(resource)
    except ValidationError as exc:
        where = sorted({".".join(str(p) for p in e["loc"]) or kind for e in exc.errors()})[:5]
        raise PermanentError(f"{kind} is not valid FHIR {release}: {', '.join(f'{kind}.{w}' for w in where)}") from exc
    return cast(dict[str, Any], parsed.model_dump(mode="json", exclude_none=True))


def outcome_summary(body: bytes) -> str:
    """``code at expression`` for each OperationOutcome issue in ``body`` (no diagnostics text).

    >>> outcome_summary(b'{"resourceType": "OperationOutcome", "issue": [{"severity": "error",'
    ...                 b' "code": "required", "expression": ["SupplyDelivery.status"], "diagnostics": "x"}]}')
    'required at SupplyDelivery.status'
    """
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, dict) or data.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in data.get("issue") or []:
        if not isinstance(issue, dict) or issue.get("severity") not in ("error", "fatal"):
            continue
        where = issue.get("expression") or issue.get("location") or []
        at = f" at {', '.join(str(w) for w in where[:3])}" if where else ""
        parts.append(f"{issue.get('code', 'unknown')}{at}")
    return "; ".join(parts[:5])


def _if_none_exist(resource: dict[str, Any]) -> str | None:
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("value"):
            system = identifier.get("system")
            return f"identifier={system}|{identifier['value']}" if system else f"identifier={identifier['value']}"
    return None


class FhirDestination(HttpDestination):
    """POSTs (conditional create) or PUTs resources; validates them first."""

    def __init__(
        self,
        config: FhirDestinationConfig,
        *,
        channel: str,
        base_dir: Path,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        super().__init__(config, channel=channel, base_dir=base_dir, log=log)  # type: ignore[arg-type]
        self.fhir = config
        self.base = config.url.rstrip("/")

    def requests(self, item: Outbound) -> tuple[str, str, dict[str, Any], dict[str, str]]:
        """(method, url, body, extra headers) for the content of ``item``."""
        try:
            data = json.loads(item.content)
        except ValueError as exc:
            raise PermanentError("the content is not JSON (a FHIR resource, list or Bundle)") from exc
        release = self.fhir.release
        if isinstance(data, dict) and data.get("resourceType") == "Bundle":
            return "POST", self.base, validate(data, release), {}
        resources = [validate(r, release) for r in (data if isinstance(data, list) else [data])]
        if not resources:
            raise PermanentError("the content holds no FHIR resource")
        if len(resources) == 1:
            resource = resources[0]
            kind = resource["resourceType"]
            if self.fhir.interaction == "update":
                if not resource.get("id"):
                    raise PermanentError(f"interaction update needs {kind}.id")
                return "PUT", f"{self.base}/{kind}/{resource['id']}", resource, {}
            condition = _if_none_exist(resource)
            return "POST", f"{self.base}/{kind}", resource, ({"If-None-Exist": condition} if condition else {})
        entries = []
        for resource in resources:
            request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
            condition = _if_none_exist(resource)
            if self.fhir.interaction == "update" and resource.get("id"):
                request = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
            elif condition:
                request["ifNoneExist"] = condition
            entries.append({"resource": resource, "request": request})
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        return "POST", self.base, validate(bundle, release), {}

    async def send(self, item: Outbound) -> SendResult:
        method, url, body, extra = self.requests(item)
        headers = self._headers(item, FHIR_JSON)
        headers.update({"Accept": FHIR_JSON, **extra})
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        status, response_headers, answer = await self.exchange(item, method, url, payload, headers)
        if 200 <= status < 300:
            result = classify(status, response_headers, answer)
            location = response_headers.get("Location") or response_headers.get("Content-Location")
            result.detail = f"{status_text(status)}{' ' + location if location else ''}"
            return result
        summary = outcome_summary(answer)
        reason = f"FHIR server answered {status_text(status)}" + (f": {summary}" if summary else "")
        if status in (408, 429) or status >= 500:
            try:
                classify(status, response_headers, answer)
            except RetryableError as exc:
                raise RetryableError(
                    reason, status_code=status, response=answer, retry_after_secs=exc.retry_after_secs
                ) from None
        raise PermanentError(reason, status_code=status, response=answer)


FHIR_DESTINATION = destination_spec(
    name="fhir",
    summary="Send FHIR resources (validated first) to a FHIR R4 server: conditional create by identifier, "
    "transaction Bundles for several, OperationOutcome errors recorded.",
    config=FhirDestinationConfig,
    factory="engine.connectors.fhirout:FhirDestination",
    status="beta",
    capabilities=frozenset({"tls"}),
    examples=(
        Example(
            "Supply deliveries to the EHR's FHIR server with OAuth2",
            "type: fhir\n"
            "name: ehr-fhir\n"
            "url: ${EHR_FHIR_BASE_URL}\n"
            "auth:\n"
            "  type: oauth2\n"
            "  token_url: ${EHR_TOKEN_URL}\n"
            "  client_id: ${EHR_CLIENT_ID}\n"
            "  client_secret: ${EHR_CLIENT_SECRET}\n",
        ),
    ),
)
