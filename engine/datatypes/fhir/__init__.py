"""The ``fhir`` data type: FHIR JSON resources and Bundles, validated, read by FHIRPath.

``parse`` decodes the JSON, validates the resource (fhir.resources models plus Junction's
R4 required bindings) and raises ``FhirValidationError`` (a ``ParseError`` whose
``position`` is the first offending element path, ``code`` its OperationOutcome issue type
and ``issues`` every problem) on bad input. ``respond`` answers AE/AR with an
OperationOutcome naming each offending element. fhir.resources is imported on first use,
so listing plug-ins stays cheap.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, field_validator

from engine.core.channel import DataTypeConfig
from engine.core.contracts import Header, Outcome
from engine.core.errors import ParseError
from engine.core.spec import Example, datatype_spec
from engine.datatypes.fhir.paths import SYNTAX, FhirDocument, parse_path
from engine.datatypes.fhir.validation import ISSUE_TYPES, Issue, issues_by_entry, operation_outcome, validate_resource

__all__ = [
    "FHIR",
    "FhirConfig",
    "FhirDataType",
    "FhirDocument",
    "FhirValidationError",
    "Issue",
    "issues_by_entry",
    "operation_outcome",
    "parse_path",
    "validate_resource",
]

_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_PATH_LIKE = re.compile(r"^[A-Z][A-Za-z]*(\.[A-Za-z]+(\[\d+\])?)*(\[x\])?$")


class FhirConfig(DataTypeConfig):
    """Settings of the ``fhir`` data type."""

    release: Literal["R4", "R4B", "R5"] = Field(
        default="R4",
        description="FHIR release the channel validates: R4 (4.0.1, through the R4B models plus Junction's R4 "
        "checks), R4B (4.3.0) or R5 (5.0.0).",
    )
    validation: Literal["full", "structure", "off"] = Field(
        default="full",
        description="full: structure plus required elements and value-set bindings; structure: fhir.resources "
        "models only; off: JSON and resource type only.",
    )
    resource_types: list[str] | None = Field(
        default=None,
        description="Resource types the channel accepts (a Bundle's entries too); others are refused as not-supported.",
    )

    @field_validator("resource_types")
    @classmethod
    def _type_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not _TYPE_NAME.match(name):
                raise ValueError(f"{name!r} is not a FHIR resource type name (e.g. ChargeItem)")
        return value


class FhirValidationError(ParseError):
    """A resource that is not valid FHIR: ``issues`` lists every problem found."""

    def __init__(self, issues: list[Issue]) -> None:
        first = issues[0]
        more = f" (+{len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(first.diagnostics + more, first.expression, first.code)
        self.issues = issues


def _load(raw: bytes) -> Any:
    """JSON with decimals kept exact; ``ParseError`` with the position (never the text)."""
    text = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    try:
        return json.loads(text, parse_float=Decimal)
    except UnicodeDecodeError as exc:
        raise ParseError("the body is not UTF-8 text", f"byte {exc.start + 1}", "structure") from None
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON: {exc.msg}", f"line {exc.lineno}, column {exc.colno}", "structure") from None
    except RecursionError:
        raise ParseError("JSON nested too deeply", "", "structure") from None


class FhirDataType:
    """The ``fhir`` data type (DataType protocol)."""

    content_type = "application/fhir+json"
    validates = False  # parse validates: a 400/422 must be answered at the door
    parse_is_slow = True  # fhir.resources validation: 0.3 ms a resource, 20 ms a big Bundle; off the event loop

    def __init__(self, config: FhirConfig | None = None) -> None:
        self.config = config or FhirConfig(type="fhir")
        types = self.config.resource_types
        self._allowed = frozenset(types) if types is not None else None

    def split(self, raw: bytes) -> list[bytes]:
        return [raw]  # a Bundle is one message; the FHIR listener answers per entry

    def header(self, raw: bytes) -> Header:
        """resourceType (Bundle: Bundle/type) as message type, id as control id, and
        resourceType|identifier system|value (else resourceType/id) as business key."""
        try:
            data = json.loads(raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw)
        except (ValueError, RecursionError):
            return Header()
        if not isinstance(data, dict):
            return Header()
        kind = data.get("resourceType")
        kind = kind if isinstance(kind, str) else ""
        rid = data.get("id")
        rid = rid if isinstance(rid, str) else ""
        identifier = data.get("identifier")
        if isinstance(identifier, list):
            identifier = identifier[0] if identifier else None
        key = f"{kind}/{rid}" if rid else ""
        if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
            key = f"{kind}|{identifier.get('system') or ''}|{identifier['value']}"
        message_type = f"{kind}/{data.get('type')}" if kind == "Bundle" and isinstance(data.get("type"), str) else kind
        fields = {"resourceType": kind, "id": rid, "release": self.config.release}
        return Header(control_id=rid[:200], message_type=message_type[:60], business_key=key[:400], fields=fields)

    def issues(self, raw: bytes) -> list[Issue]:
        """Every problem of ``raw`` as OperationOutcome issues (a JSON error is one issue)."""
        try:
            data = _load(raw)
        except ParseError as exc:
            return [Issue("error", exc.code, "", f"{exc.reason} at {exc.position}" if exc.position else exc.reason)]
        return validate_resource(
            data, release=self.config.release, level=self.config.validation, resource_types=self._allowed
        )

    def parse(self, raw: bytes) -> FhirDocument:
        """Decode and validate; ``FhirValidationError`` (a ParseError) lists every problem."""
        data = _load(raw)
        issues = validate_resource(
            data, release=self.config.release, level=self.config.validation, resource_types=self._allowed
        )
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        if errors:
            raise FhirValidationError(errors)
        return FhirDocument(data)

    def validate(self, raw: bytes) -> list[str]:
        return []  # parse validates already

    def check_path(self, path: str) -> object:
        return parse_path(path)

    def respond(self, raw: bytes, outcome: Outcome) -> bytes | None:
        """None for AA; for AE/AR an OperationOutcome naming each offending element, or, when
        the resource itself is valid (a later stage failed), one issue from ``outcome``."""
        if outcome.code == "AA":
            return None
        issues: list[Issue] = [i for i in self.issues(raw) if i.severity in ("error", "fatal")]
        if not issues:
            code = outcome.error_code if outcome.error_code in ISSUE_TYPES else "processing"
            where = outcome.position if _PATH_LIKE.match(outcome.position or "") else ""
            diagnostics = outcome.reason or ("message refused" if outcome.code == "AR" else "processing failed")
            if outcome.position and not where:
                diagnostics += f" ({outcome.position})"
            issues = [Issue("error", code, where, diagnostics)]
        return operation_outcome(issues)


FHIR = datatype_spec(
    name="fhir",
    summary="FHIR JSON resources and Bundles (R4 via R4B models, R4B, R5), validated, read by FHIRPath.",
    config=FhirConfig,
    factory="engine.datatypes.fhir:FhirDataType",
    status="beta",
    path_syntax=SYNTAX,
    examples=(
        Example("R4 resources, full validation (defaults)", "type: fhir"),
        Example(
            "Only supply chain and billing resources",
            "type: fhir\nrelease: R4\nvalidation: full\n"
            "resource_types: [Bundle, ChargeItem, SupplyDelivery, SupplyRequest, Device, Procedure, Claim, Invoice]",
        ),
        Example("An R5 partner, structure checks only", "type: fhir\nrelease: R5\nvalidation: structure"),
    ),
)
