"""Error answers: RFC 9457 problem details (HTTP source) and FHIR OperationOutcomes (FHIR source)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

PROBLEM_TYPE = "application/problem+json"
FHIR_JSON = "application/fhir+json"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def problem(
    status: int, title: str = "", detail: str = "", *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """A problem-details response; ``extra`` members (e.g. message_id) are added when not None."""
    body: dict[str, Any] = {"type": "about:blank", "title": title or _TITLES.get(status, "Error"), "status": status}
    if detail:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if v is not None})
    return web.Response(body=json.dumps(body).encode(), status=status, content_type=PROBLEM_TYPE, headers=headers)


def issue(code: str, diagnostics: str, expression: str = "", severity: str = "error") -> dict[str, Any]:
    """One OperationOutcome issue (``code`` from the FHIR issue-type value set).

    >>> issue("invalid", "must be a JSON object", "Bundle.entry[0].resource")["expression"]
    ['Bundle.entry[0].resource']
    """
    item: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        item["expression"] = [expression]
    return item


def operation_outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    """An OperationOutcome resource holding ``issues``."""
    return {"resourceType": "OperationOutcome", "issue": issues}


def fhir_response(status: int, resource: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> web.Response:
    """A FHIR JSON response (resource given as a dict or as ready JSON bytes)."""
    body = resource if isinstance(resource, bytes) else json.dumps(resource).encode()
    merged = {"Content-Type": FHIR_JSON + "; charset=utf-8", **(headers or {})}
    return web.Response(body=body, status=status, headers=merged)


def fhir_error(status: int, issues: list[dict[str, Any]], headers: dict[str, str] | None = None) -> web.Response:
    """An OperationOutcome answer with HTTP ``status``."""
    return fhir_response(status, operation_outcome(issues), headers)
