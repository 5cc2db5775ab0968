"""FHIR validation: fhir.resources models plus Junction's own R4 checks, as OperationOutcome issues.

``validate_resource`` returns every problem it finds, each as an ``Issue`` (severity, code,
expression, diagnostics) where ``code`` is an OperationOutcome issue type (``required``,
``structure``, ``value``, ``code-invalid``, ``not-supported``) and ``expression`` the FHIR
element path (``Bundle.entry[2].resource.quantity``). Diagnostics describe the problem and
never quote the value (it may be PHI).

fhir.resources 8 has no R4 (4.0.1) models: release ``R4`` validates through the R4B models,
refuses the R4 resource types R4B removed, and adds the R4 required bindings of
``bindings.py`` (the same codes in R4B for these resources).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from engine.datatypes.fhir.bindings import BINDINGS, R4_ONLY, R4B_RESHAPED, REQUIRED

Release = Literal["R4", "R4B", "R5"]
Level = Literal["structure", "full", "off"]

ISSUE_TYPES = frozenset(
    {
        "invalid",
        "structure",
        "required",
        "value",
        "invariant",
        "security",
        "login",
        "unknown",
        "expired",
        "forbidden",
        "suppressed",
        "processing",
        "not-supported",
        "duplicate",
        "multiple-matches",
        "not-found",
        "deleted",
        "too-long",
        "code-invalid",
        "extension",
        "too-costly",
        "business-rule",
        "conflict",
        "transient",
        "lock-error",
        "no-store",
        "exception",
        "timeout",
        "incomplete",
        "throttled",
        "informational",
    }
)
_PRIMITIVE_FORMATS = {
    "DateTime": "a FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss[.sss] with a time zone)",
    "Date": "a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)",
    "Instant": "a FHIR instant (YYYY-MM-DDThh:mm:ss[.sss] with a time zone)",
    "Time": "a FHIR time (hh:mm:ss)",
    "Decimal": "a FHIR decimal (a JSON number)",
    "Integer": "a FHIR integer",
    "PositiveInt": "a FHIR positiveInt (1 or more)",
    "UnsignedInt": "a FHIR unsignedInt (0 or more)",
    "Uri": "a FHIR uri",
    "Id": "a FHIR id (1-64 letters, digits, '-' and '.')",
    "Code": "a FHIR code (no leading, trailing or double spaces)",
}
_REGEX_ERROR = re.compile(r"(\w+) value string does not match spec regex")
_CHOICE_ERROR = re.compile(r"Any of one field value is expected from this list \[([^\]]*)\]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]\.resource")
_ENTRY_PREFIX = re.compile(r"^Bundle\.entry\[(\d+)\]\.resource(?=$|\.|\[)")


class Issue(NamedTuple):
    """One OperationOutcome issue: severity (fatal|error|warning|information), issue type code,
    FHIR element path, and a description without message content."""

    severity: str
    code: str
    expression: str
    diagnostics: str


@lru_cache(maxsize=8)
def _models(release: Release) -> Any:
    """The fhir.resources ``get_fhir_model_class`` of a release (imported on first use)."""
    if release == "R5":
        from fhir.resources import get_fhir_model_class
    else:
        from fhir.resources.R4B import get_fhir_model_class
    return get_fhir_model_class


def model_class(resource_type: str, release: Release = "R4") -> type[Any] | None:
    """The fhir.resources model of a resource type in ``release``, or None when it has none."""
    if release == "R4" and (resource_type in R4_ONLY or resource_type in R4B_RESHAPED):
        return None
    try:
        return _models(release)(resource_type)  # type: ignore[no-any-return]
    except (KeyError, ValueError, AttributeError, ImportError):
        return None


def _expression(base: str, loc: tuple[Any, ...]) -> str:
    path = base
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and part != "root" and _NAME.fullmatch(part):
            path += f".{part}"
    return path


def _choice_base(names: list[str]) -> str:
    prefix = names[0] if names else ""
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    return prefix


def _translate(error: dict[str, Any], base: str, release: str) -> Issue:
    """One pydantic error of fhir.resources as an Issue (no input value in the text)."""
    kind = str(error.get("type", ""))
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    where = _expression(base, tuple(error.get("loc", ())))
    if kind in ("missing", "model_field_validation.missing"):
        return Issue("error", "required", where, "required element is missing")
    if kind == "extra_forbidden":
        return Issue("error", "structure", where, f"unknown element (not defined for this type in FHIR {release})")
    choice = _CHOICE_ERROR.search(message)
    if choice is not None:
        names = [n.strip().strip("'\"") for n in choice.group(1).split(",")]
        stem = _choice_base(names)
        return Issue("error", "structure", f"{where}.{stem}[x]", f"more than one type given for {stem}[x]")
    regex = _REGEX_ERROR.search(message)
    if regex is not None:
        expected = _PRIMITIVE_FORMATS.get(regex.group(1), f"a FHIR {regex.group(1)[:1].lower()}{regex.group(1)[1:]}")
        return Issue("error", "value", where, f"not {expected}")
    if "date" in kind and ("parsing" in kind or "range" in message):
        return Issue("error", "value", where, "not a calendar date (day or month out of range)")
    if kind == "string_pattern_mismatch":
        return Issue(
            "error", "value", where, "not in the FHIR format of this element (e.g. leading, trailing or doubled spaces)"
        )
    if kind == "json_invalid":  # a primitive given where this release expects an object
        return Issue("error", "structure", where, "wrong JSON type: expected an object for this element")
    if kind.endswith("_type") or kind == "model_validation_format":
        return Issue("error", "structure", where, f"wrong JSON type: {message[:160]}")
    return Issue("error", "value", where, message[:200] or kind)


def _structure(data: dict[str, Any], cls: type[Any], base: str, release: str) -> list[Issue]:
    from pydantic import ValidationError

    try:
        cls.model_validate(data)
    except ValidationError as exc:
        return [_translate(dict(e), base, release) for e in exc.errors(include_url=False, include_input=False)]
    except (ValueError, TypeError) as exc:  # fhir_core raises plain errors for some shapes
        return [Issue("error", "structure", base, f"invalid resource structure ({type(exc).__name__})")]
    return []


def _leaves(node: Any, parts: list[str], where: str) -> Iterator[tuple[str, Any]]:
    """(expression, value) of every element at ``parts`` below ``node``, arrays indexed."""
    if not parts:
        yield where, node
        return
    if not isinstance(node, dict) or parts[0] not in node:
        return
    value = node[parts[0]]
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, parts[1:], f"{where}.{parts[0]}[{index}]")
    else:
        yield from _leaves(value, parts[1:], f"{where}.{parts[0]}")


def _own(data: dict[str, Any], base: str) -> list[Issue]:
    """Required R4 elements and required value-set bindings for one resource (not its children)."""
    issues: list[Issue] = []
    kind = data.get("resourceType")
    for element in REQUIRED.get(str(kind), ()):
        if element.endswith("[x]"):
            stem = element[:-3]
            present = any(k.startswith(stem) and len(k) > len(stem) and k[len(stem)].isupper() for k in data)
        else:
            present = data.get(element) not in (None, "", [], {})
        if not present:
            issues.append(Issue("error", "required", f"{base}.{element}", "required element is missing (1..1 in R4)"))
    for element, codes in BINDINGS.get(str(kind), {}).items():
        for where, value in _leaves(data, element.split("."), base):
            if isinstance(value, str) and value not in codes:
                allowed = ", ".join(sorted(codes))
                issues.append(
                    Issue("error", "code-invalid", where, f"code is not in the required value set (allowed: {allowed})")
                )
    return issues


def _check_types(
    data: dict[str, Any], base: str, release: Release, allowed: frozenset[str] | None, top: bool
) -> list[Issue]:
    """Resource type problems of a resource, its contained resources and Bundle entries."""
    issues: list[Issue] = []
    kind = data.get("resourceType")
    if not isinstance(kind, str) or not kind:
        return [
            Issue("error", "required", f"{base}.resourceType" if base else "resourceType", "resourceType is missing")
        ]
    if allowed is not None and kind not in allowed and (top or kind != "Bundle"):
        issues.append(Issue("error", "not-supported", base, "this channel does not accept this resource type"))
    elif model_class(kind, release) is None:
        if release == "R4" and kind in R4_ONLY:
            reason = "an R4 resource type that R4B removed: fhir.resources cannot validate it"
        elif release == "R4" and kind in R4B_RESHAPED:
            reason = f"cannot validate R4 {kind}: R4B changed its shape and fhir.resources has no R4 model"
        else:
            reason = f"not a resource type of FHIR {release}"
        issues.append(Issue("error", "not-supported", base, reason))
    return issues


def _resources(data: dict[str, Any], base: str) -> Iterator[tuple[dict[str, Any], str]]:
    """``data`` and every resource inside it (contained, Bundle entries), with their paths."""
    yield data, base
    for index, item in enumerate(data.get("contained") or []):
        if isinstance(item, dict):
            yield from _resources(item, f"{base}.contained[{index}]")
    if data.get("resourceType") == "Bundle":
        for index, entry in enumerate(data.get("entry") or []):
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield from _resources(entry["resource"], f"{base}.entry[{index}].resource")


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for issue in issues:
        key = (issue.code, issue.expression)
        if key not in seen:
            seen.add(key)
            kept.append(issue)
    return kept


def validate_resource(
    data: Any,
    *,
    release: Release = "R4",
    level: Level = "full",
    resource_types: frozenset[str] | None = None,
) -> list[Issue]:
    """Every problem of one resource (a Bundle: with its entries); empty when it is valid.

    ``level``: ``off`` checks only the resource type, ``structure`` adds fhir.resources
    validation, ``full`` (default) adds Junction's R4 required elements and bindings.

    >>> validate_resource({"resourceType": "Device", "status": "broken"})[0].expression
    'Device.status'
    """
    if not isinstance(data, dict):
        return [Issue("error", "structure", "", "a FHIR resource is a JSON object")]
    kind = data.get("resourceType")
    base = kind if isinstance(kind, str) and _NAME.fullmatch(kind) else ""
    issues: list[Issue] = []
    for resource, where in _resources(data, base):
        issues += _check_types(resource, where, release, resource_types, top=resource is data)
    entries = {int(m.group(1)) for i in issues if (m := _ENTRY.fullmatch(i.expression))}
    if level == "off" or len(entries) < len(issues):  # the resource itself cannot be validated
        return _dedupe(issues)
    if entries:  # validate the rest of the Bundle with the refused entries' resources left out
        data = dict(data)
        data["entry"] = [
            {k: v for k, v in e.items() if k != "resource"} if n in entries else e for n, e in enumerate(data["entry"])
        ]
    cls = model_class(str(kind), release)
    if cls is not None:
        # R4 is checked with the R4B models: their messages must name R4B, not claim R4
        issues += _structure(data, cls, base, "R4B (whose models check R4)" if release == "R4" else release)
    if level == "full" and release != "R5":
        for resource, where in _resources(data, base):
            issues += _own(resource, where)
    return _dedupe(issues)


def issues_by_entry(issues: list[Issue]) -> dict[int | None, list[Issue]]:
    """A Bundle's issues grouped by entry index (None: the Bundle itself), for one
    OperationOutcome per entry; expressions keep their full path from the Bundle.

    >>> sorted(issues_by_entry([Issue("error", "value", "Bundle.entry[2].resource.quantity", "x"),
    ...                         Issue("error", "required", "Bundle.type", "y")]), key=str)
    [2, None]
    """
    grouped: dict[int | None, list[Issue]] = {}
    for issue in issues:
        match = _ENTRY_PREFIX.match(issue.expression)
        if match is None:
            grouped.setdefault(None, []).append(issue)
            continue
        grouped.setdefault(int(match.group(1)), []).append(issue)
    return grouped


def operation_outcome(issues: list[tuple[str, str, str, str]] | list[Issue]) -> bytes:
    """An OperationOutcome (FHIR JSON, UTF-8) with one issue per (severity, code, expression,
    diagnostics); an empty list gives one ``information`` issue saying all is well.

    >>> json.loads(operation_outcome([("error", "required", "ChargeItem.status", "missing")]))["issue"][0]["expression"]
    ['ChargeItem.status']
    """
    entries: list[dict[str, Any]] = []
    for severity, code, expression, diagnostics in issues or [("information", "informational", "", "no problems")]:
        entry: dict[str, Any] = {
            "severity": severity if severity in ("fatal", "error", "warning", "information") else "error",
            "code": code if code in ISSUE_TYPES else "processing",
        }
        if diagnostics:
            entry["diagnostics"] = diagnostics
        if expression:
            entry["expression"] = [expression]
        entries.append(entry)
    return json.dumps({"resourceType": "OperationOutcome", "issue": entries}, ensure_ascii=False).encode()
