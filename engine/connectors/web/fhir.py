"""The FHIR R4 endpoint: create, batch and transaction Bundles, and the CapabilityStatement.

Parsing and validating resources is the channel data type's job (``pipeline.datatype``,
normally ``fhir``); this source checks the REST shape (JSON object, resourceType matching
the URL, Bundle entries) and answers in FHIR: OperationOutcomes for errors, batch- and
transaction-response Bundles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from typing import Any

from aiohttp import web

from engine import __version__
from engine.connectors.web.base import BodyTooLarge, WebSource
from engine.connectors.web.config import FhirSourceConfig
from engine.connectors.web.problems import fhir_error, fhir_response, issue, operation_outcome
from engine.connectors.web.source import refusal_status
from engine.core.contracts import SourceContext, SubmitResult
from engine.core.errors import ParseError

FHIR_VERSION = "4.0.1"
RESOURCE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")
_PATH = re.compile(r"[A-Z][A-Za-z]*(\.[A-Za-z]+(\[\d+\])?)+")
_ISSUE_CODES = frozenset({"structure", "invalid", "required", "value", "code-invalid", "not-supported"})
MEDIA_TYPES = ("application/fhir+json", "application/json")
_STATUS_LINES = {
    201: "201 Created",
    400: "400 Bad Request",
    422: "422 Unprocessable Entity",
    500: "500 Internal Server Error",
    504: "504 Gateway Timeout",
}


class FhirSource(WebSource):
    """FHIR R4 REST endpoint under ``/fhir/<channel>`` (see docs/connectors/http-source.md).

    - ``POST {base}/{Type}``: create; the stored message id is the new resource id (201).
    - ``POST {base}`` with a ``batch`` Bundle: every entry is its own message (200 batch-response).
    - ``POST {base}`` with a ``transaction`` Bundle: all entries are checked first (REST shape
      and the data type's parse); when all pass, every entry is stored as its own message with
      one correlation id (200 transaction-response, each entry its own Location), else nothing
      is accepted (400/422 with an OperationOutcome naming every offending entry).
    - ``GET {base}/metadata``: the CapabilityStatement (no authentication, as FHIR clients expect).
    """

    config: FhirSourceConfig
    default_prefix = "/fhir"

    def __init__(self, config: FhirSourceConfig, ctx: SourceContext) -> None:
        super().__init__(config, ctx)

    def error(self, status: int, detail: str, **extra: Any) -> web.Response:
        code = {401: "login", 404: "not-supported", 405: "not-supported", 413: "too-costly", 503: "transient"}
        return fhir_error(status, [issue(code.get(status, "exception"), detail)])

    async def route(self, request: web.Request, rest: str) -> web.StreamResponse:
        parts = [p for p in rest.split("/") if p]
        if parts == ["metadata"]:
            if request.method != "GET":
                return self._not_allowed("GET")
            return fhir_response(200, self.capability_statement(self._base_url(request)))
        if len(parts) > 1:
            return self.error(404, "only create, batch, transaction and metadata are supported here")
        refused = self.refuse_unusable() or self.authenticate(request)
        if refused is not None:
            return refused
        if request.method != "POST":
            return self._not_allowed("POST")
        type_name = parts[0] if parts else None
        if type_name is not None and not RESOURCE_NAME.fullmatch(type_name):
            return self.error(404, "the path does not name a FHIR resource type")
        if type_name is not None and not self._accepts(type_name):
            return self.error(404, f"resource type {type_name} is not accepted by this endpoint")
        source = self.source_fields(request)
        try:
            raw = await self.read_body(request)
        except BodyTooLarge as exc:
            limit = self.config.max_body_bytes
            message_id = await self.reject(exc.prefix, source, f"request body exceeds max_body_bytes ({limit} bytes)")
            self._log(logging.WARNING, "Request refused: body too large.", peer=source["peer"], message_id=message_id)
            return self.error(413, f"the body is larger than {limit} bytes")
        if request.content_type not in MEDIA_TYPES:
            await self.reject(raw, source, "media type not accepted by this endpoint")
            return fhir_error(415, [issue("not-supported", f"send {MEDIA_TYPES[0]} (or {MEDIA_TYPES[1]})")])
        resource, problem_issue = _json_object(raw)
        if resource is None:
            await self.reject(raw, source, problem_issue["diagnostics"])
            return fhir_error(400, [problem_issue])
        if type_name is None:
            return await self._bundle(request, raw, resource, source)
        return await self._create(request, raw, resource, type_name, source)

    # -- create ----------------------------------------------------------------------------

    async def _create(
        self, request: web.Request, raw: bytes, resource: dict[str, Any], type_name: str, source: dict[str, Any]
    ) -> web.Response:
        actual = resource.get("resourceType")
        if actual != type_name:
            detail = (
                f"resourceType must be {type_name}, as in the URL"
                if isinstance(actual, str)
                else "resourceType is missing or not a string"
            )
            await self.reject(raw, source, detail)
            return fhir_error(400, [issue("invalid", detail, "resourceType")])
        result = await self._submit(raw, source)
        if isinstance(result, web.Response):
            return result
        if not result.accepted:
            return self._refused(result)
        location = f"{self._base_url(request)}/{type_name}/{result.message_id}/_history/1"
        headers = {"Location": location, "ETag": 'W/"1"', "Last-Modified": _http_date()}
        prefer = request.headers.get("Prefer", "").replace(" ", "").lower()
        if "return=minimal" in prefer:
            return web.Response(status=201, headers=headers)
        if "return=operationoutcome" in prefer:
            accepted = [issue("informational", "created", severity="information")]
            return fhir_response(201, operation_outcome(accepted), headers)
        return fhir_response(201, _stored(resource, result.message_id), headers)

    # -- Bundles ---------------------------------------------------------------------------

    async def _bundle(
        self, request: web.Request, raw: bytes, bundle: dict[str, Any], source: dict[str, Any]
    ) -> web.Response:
        kind = bundle.get("type")
        if bundle.get("resourceType") != "Bundle" or kind not in ("batch", "transaction"):
            detail = "post a Bundle of type batch or transaction here, or a resource to [base]/{type}"
            await self.reject(raw, source, detail)
            return fhir_error(400, [issue("invalid", detail, "Bundle.type")])
        entries = bundle.get("entry", [])
        if not isinstance(entries, list):
            await self.reject(raw, source, "Bundle.entry is not a list")
            return fhir_error(400, [issue("structure", "entry must be a list", "Bundle.entry")])
        checks = [self._check_entry(index, entry) for index, entry in enumerate(entries)]
        if kind == "transaction":
            return await self._transaction(request, raw, entries, checks, source)
        return await self._batch(request, entries, checks, source)

    def _check_entry(self, index: int, entry: Any) -> list[dict[str, Any]]:
        """Issues of one Bundle entry (empty when it is a create this endpoint accepts)."""
        where = f"Bundle.entry[{index}]"
        if not isinstance(entry, dict):
            return [issue("structure", "entry must be an object", where)]
        resource, request = entry.get("resource"), entry.get("request")
        found: list[dict[str, Any]] = []
        type_name = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(type_name, str):
            found.append(issue("required", "resource with a resourceType is required", f"{where}.resource"))
        elif not self._accepts(type_name) or type_name == "Bundle":
            found.append(issue("not-supported", f"resource type {type_name} is not accepted", f"{where}.resource"))
        if not isinstance(request, dict):
            need = "request (method POST, url = resource type) is required"
            found.append(issue("required", need, f"{where}.request"))
            return found
        if request.get("method") != "POST":
            found.append(issue("not-supported", "only POST (create) entries are supported", f"{where}.request.method"))
        url = request.get("url")
        if isinstance(type_name, str) and url != type_name:
            found.append(issue("invalid", f"request.url must be {type_name}", f"{where}.request.url"))
        return found

    async def _transaction(
        self,
        request: web.Request,
        raw: bytes,
        entries: list[Any],
        checks: list[list[dict[str, Any]]],
        source: dict[str, Any],
    ) -> web.Response:
        """Check every entry first (the REST shape, then the data type's parse, the same check
        a create gets); refuse the whole transaction if one fails. Only then store each entry
        as its own message, so each is mapped like a create (the Bundle root maps to nothing).

        The store commits entry by entry, not the whole Bundle at once: every entry gets the
        dedupe key ``fhir-transaction:<sha256 of the body>#<index>``, so a client that retries
        after a time-out, a fault or a crash between entries completes the transaction without
        storing an entry twice (docs/connectors/http-source.md, "Transactions").
        """
        problems = [item for found in checks for item in found]
        if problems:
            await self.reject(raw, source, f"transaction refused: {len(problems)} problem(s) in its entries")
            return fhir_error(400, problems)
        parts = [json.dumps(resource).encode() for resource in _local_references(entries)]
        invalid: list[dict[str, Any]] = []
        bad_entries: list[int] = []
        for index, part in enumerate(parts):
            error = await self._ctx.check(part)
            if error is not None:
                bad_entries.append(index)
                invalid.extend(_entry_issues(index, error))
        if invalid:
            named = ", ".join(str(i) for i in bad_entries)
            await self.reject(raw, source, f"transaction refused: entries not valid FHIR: {named}")
            status = 400 if any(i.get("code") == "structure" for i in invalid) else 422
            return fhir_error(status, invalid)
        digest = hashlib.sha256(raw).hexdigest()
        correlation = ""
        answers: list[dict[str, Any]] = []
        failed: list[tuple[int, int, dict[str, Any]]] = []
        for index, (entry, part) in enumerate(zip(entries, parts, strict=True)):
            fields = {**source, "bundle": "transaction", "transaction": digest[:16], "entry": index}
            fields["entries"] = len(parts)
            key = f"fhir-transaction:{digest}#{index}"
            result = await self._submit(part, fields, dedupe_key=key, correlation_id=correlation)
            if isinstance(result, web.Response):  # a time-out or store fault: the rest is not stored yet
                return _cut_short(result, index, answers)
            correlation = correlation or result.message_id
            if not result.accepted:  # refused after the check (after_processing: mapping, duplicate window)
                outcome = _outcome_of(result)
                failed.append((index, fhir_refusal_status(result, outcome), outcome))
                answers.append(_entry_response(fhir_refusal_status(result, outcome), outcome))
                continue
            answers.append(_created(entry["resource"]["resourceType"], result.message_id))
        headers = {"X-Junction-Message-Id": correlation}
        if failed:
            return fhir_response(max(status for _, status, _ in failed), _partly(failed, answers), headers)
        response = {"resourceType": "Bundle", "id": correlation, "type": "transaction-response", "entry": answers}
        return fhir_response(200, response, headers)

    async def _batch(
        self,
        request: web.Request,
        entries: list[Any],
        checks: list[list[dict[str, Any]]],
        source: dict[str, Any],
    ) -> web.Response:
        answers: list[dict[str, Any]] = []
        for index, (entry, found) in enumerate(zip(entries, checks, strict=True)):
            part = json.dumps(entry.get("resource") if isinstance(entry, dict) else entry).encode()
            fields = {**source, "bundle": "batch", "entry": index}
            if found:
                await self.reject(part, fields, f"batch entry {index} refused: {found[0]['diagnostics']}")
                answers.append(_entry_response(400, operation_outcome(found)))
                continue
            result = await self._submit(part, fields)
            if isinstance(result, web.Response):  # a time-out or engine fault: say so for this entry
                answers.append(_entry_response(result.status, json.loads(result.body or b"{}")))  # type: ignore[arg-type]
                continue
            if not result.accepted:
                outcome = _outcome_of(result)
                answers.append(_entry_response(fhir_refusal_status(result, outcome), outcome))
                continue
            answers.append(_created(entry["resource"]["resourceType"], result.message_id))
        return fhir_response(200, {"resourceType": "Bundle", "type": "batch-response", "entry": answers})

    # -- shared ----------------------------------------------------------------------------

    async def _submit(
        self, raw: bytes, source: dict[str, Any], *, dedupe_key: str = "", correlation_id: str = ""
    ) -> SubmitResult | web.Response:
        timeout = self.config.sync_timeout_secs if self.config.ack_mode == "after_processing" else None
        try:
            result = await self.submit(raw, source, timeout, dedupe_key=dedupe_key, correlation_id=correlation_id)
        except Exception as exc:  # noqa: BLE001 - answer 500, keep serving
            self._log(logging.ERROR, "Submit failed.", peer=source.get("peer"), error_type=type(exc).__name__)
            return self.error(500, "the message could not be stored; try again later")
        if result is None:
            return fhir_error(
                504,
                [issue("timeout", f"no result within {timeout:g} s; the resource is stored and still being processed")],
            )
        return result

    def _refused(self, result: SubmitResult) -> web.Response:
        outcome = _outcome_of(result)
        status = fhir_refusal_status(result, outcome)
        return fhir_response(status, outcome, {"X-Junction-Message-Id": result.message_id})

    def _accepts(self, type_name: str) -> bool:
        return not self.config.resource_types or type_name in self.config.resource_types

    def _not_allowed(self, method: str) -> web.Response:
        response = self.error(405, f"use {method} here")
        response.headers["Allow"] = method
        return response

    def _base_url(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}{self.prefix}"

    def capability_statement(self, base_url: str) -> dict[str, Any]:
        """What this endpoint does, as an R4 CapabilityStatement (built here, no FHIR library)."""
        rest: dict[str, Any] = {
            "mode": "server",
            "documentation": "Create only; batch and transaction entries are stored one by one "
            "(a transaction only when every entry is valid).",
            "resource": [{"type": name, "interaction": [{"code": "create"}]} for name in self.config.resource_types],
            "interaction": [{"code": "batch"}, {"code": "transaction"}],
        }
        if self.config.auth is not None:
            rest["security"] = {"description": f"{self.config.auth.scheme.replace('_', ' ')} authentication required"}
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "kind": "instance",
            "software": {"name": "Junction", "version": __version__},
            "implementation": {"description": f"Junction channel {self.channel}", "url": base_url},
            "fhirVersion": FHIR_VERSION,
            "format": ["application/fhir+json", "json"],
            "rest": [rest],
        }


def _json_object(raw: bytes) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The body as a JSON object, or None and the issue that says why not (no content quoted)."""
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        return None, issue("structure", "the body is not UTF-8 text")
    except json.JSONDecodeError as exc:
        return None, issue("structure", f"the body is not JSON (line {exc.lineno}, column {exc.colno})")
    if not isinstance(data, dict):
        return None, issue("structure", "the body must be a JSON object (a FHIR resource)")
    return data, {}


def fhir_refusal_status(result: SubmitResult, outcome: dict[str, Any]) -> int:
    """400 when the resource could not be read as FHIR (an issue of type ``structure``),
    422 when it was read but broke the rules (cardinality, value sets, mapping), 500 on an
    engine fault.

    >>> refused = SubmitResult("m", False, status="ERROR", reason="parse: x")
    >>> fhir_refusal_status(refused, {"issue": [{"code": "code-invalid"}, {"code": "value"}]})
    422
    >>> fhir_refusal_status(refused, {"issue": [{"code": "structure"}]})
    400
    """
    status = refusal_status(str(result.status), result.reason)
    if status != 400:
        return status
    issues = outcome.get("issue")
    codes = {i.get("code") for i in issues if isinstance(i, dict)} if isinstance(issues, list) else set()
    return 400 if not codes or "structure" in codes else 422


def _outcome_of(result: SubmitResult) -> dict[str, Any]:
    """The data type's OperationOutcome for a refused message, or one built from the reason."""
    if result.response:
        try:
            data = json.loads(result.response)
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("resourceType") == "OperationOutcome":
            return data
    reason = result.reason or "the channel refused the resource; it is stored with its error"
    return operation_outcome([issue("processing", reason)])


def _local_references(entries: list[dict[str, Any]]) -> list[Any]:
    """Each entry's resource, its ``urn:uuid:``/``urn:oid:`` references to another entry of
    the transaction rewritten to ``Type/id`` when that entry's resource carries an id.

    Once the entries are messages of their own, the Bundle's fullUrls are gone; without the
    rewrite, a mapping could not read the id (it fails with rule ``reference``, as it still
    does for a referenced resource without an id).

    >>> entries = [{"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "p1"}},
    ...            {"resource": {"resourceType": "ChargeItem", "subject": {"reference": "urn:uuid:1"}}}]
    >>> _local_references(entries)[1]["subject"]
    {'reference': 'Patient/p1'}
    """
    targets: dict[str, str] = {}
    for entry in entries:
        url, resource = entry.get("fullUrl"), entry["resource"]
        rid = resource.get("id")
        if isinstance(url, str) and url.startswith(("urn:uuid:", "urn:oid:")) and isinstance(rid, str) and rid:
            targets[url] = f"{resource['resourceType']}/{rid}"

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        if not isinstance(node, dict):
            return node
        copied = {key: rewrite(value) for key, value in node.items()}
        reference = copied.get("reference")
        if isinstance(reference, str) and reference in targets:
            copied["reference"] = targets[reference]
        return copied

    return [rewrite(entry["resource"]) if targets else entry["resource"] for entry in entries]


def _entry_issues(index: int, error: ParseError) -> list[dict[str, Any]]:
    """The data type's issues of entry ``index`` (a resource checked alone), their paths
    rewritten from ``Type.element`` to ``Bundle.entry[index].resource.element``."""
    where = f"Bundle.entry[{index}].resource"
    # the fhir data type lists every problem (``issues``); any other ParseError is one issue
    found = [(i.code, i.expression, i.diagnostics) for i in getattr(error, "issues", None) or []]
    if not found:
        code = error.code if error.code in _ISSUE_CODES else "processing"
        found = [(code, error.position, error.reason)]
    issues: list[dict[str, Any]] = []
    for code, expression, diagnostics in found:
        _, dot, rest = expression.partition(".")
        path = f"{where}.{rest}" if dot and _PATH.fullmatch(expression) else where
        text = diagnostics if path != where or not expression else f"{diagnostics} ({expression})"
        issues.append(issue(code, f"entry {index}: {text}", path))
    return issues


def _cut_short(answer: web.Response, index: int, stored: list[dict[str, Any]]) -> web.Response:
    """A time-out or fault at entry ``index``: say how far the transaction got and that a retry
    of the same request completes it (the entries stored before are not stored again)."""
    if index == 0:
        return answer
    note = (
        f"entries 0 to {index - 1} are stored; entry {index} and later may not be: send the same "
        "transaction again to complete it (entries already stored are not stored twice)"
    )
    body = json.loads(answer.body or b"{}")  # type: ignore[arg-type]
    issues = [*body.get("issue", []), issue("incomplete", note)]
    return fhir_error(answer.status, issues)


def _partly(failed: list[tuple[int, int, dict[str, Any]]], answers: list[dict[str, Any]]) -> dict[str, Any]:
    """The OperationOutcome when entries passed the check but were refused on processing
    (``after_processing``): which entries failed, and that the others are stored."""
    issues: list[dict[str, Any]] = []
    for index, _, outcome in failed:
        for item in outcome.get("issue", []):
            text = item.get("diagnostics", "refused")
            issues.append(issue(item.get("code", "processing"), f"entry {index}: {text}", f"Bundle.entry[{index}]"))
    kept = [str(i) for i, answer in enumerate(answers) if answer["response"]["status"] == "201 Created"]
    if kept:
        locations = ", ".join(answers[int(i)]["response"]["location"] for i in kept)
        stored = f"stored and kept (not undone): entry {', '.join(kept)} ({locations})"
        issues.append(issue("informational", stored, severity="information"))
    return operation_outcome(issues)


def _created(type_name: str, message_id: str) -> dict[str, Any]:
    return {"response": {"status": "201 Created", "location": f"{type_name}/{message_id}/_history/1"}}


def _entry_response(status: int, outcome: dict[str, Any]) -> dict[str, Any]:
    return {"response": {"status": _STATUS_LINES.get(status, str(status)), "outcome": outcome}}


def _stored(resource: dict[str, Any], message_id: str) -> dict[str, Any]:
    """The resource as stored: our id, version 1, the time it was accepted."""
    found = resource.get("meta")
    meta: dict[str, Any] = found if isinstance(found, dict) else {}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {**resource, "id": message_id, "meta": {**meta, "versionId": "1", "lastUpdated": stamp}}


def _http_date() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
