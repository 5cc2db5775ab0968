"""A small FHIRPath subset for mappings, filters and routing over FHIR JSON resources.

Grammar (``SYNTAX``): steps separated by dots; an optional resource type first
(``ChargeItem.status``); ``[n]`` after a step picks item n (from 0) of the collection so
far; ``where(sub.path='text')`` keeps the items whose sub-path has that value;
``ofType(Device)`` keeps resources of one type; ``first()`` is ``[0]``; ``a | b`` reads
``a`` and then ``b`` (the first non-empty value wins in ``get``). As in FHIRPath, arrays
flatten (``code.coding.code`` is every code of every coding) and a choice element is
reachable by its base name (``occurrence`` finds ``occurrenceDateTime`` or
``occurrencePeriod``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

SYNTAX = """\
FHIRPath subset: [ResourceType.]element.element with, after any step,
  [n]                       item n of the collection so far, counted from 0
  where(system='http://x')  keep items whose sub-path has this value ('text', true/false, numbers)
  ofType(Device)            keep resources of one type (e.g. in Bundle.entry.resource)
  first()                   the first item
  a | b                     a, then b: get() gives the first non-empty value
Examples:
  ChargeItem.status                                   the status
  code.coding.where(system='http://www.ama-assn.org/go/cpt').code
  identifier[0].value                                 the first identifier's value
  occurrence                                          occurrenceDateTime or occurrencePeriod (choice)
  occurrenceDateTime | occurrencePeriod.start         a date either way
  Bundle.entry.resource.ofType(ChargeItem)            every ChargeItem of a Bundle
Arrays flatten; iterate("item") (for_each) gives one view per item in which paths read the
item first (sequence, or Claim.item.sequence) and then the whole resource (Claim.patient)."""

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_INDEX = re.compile(r"(.*?)\[(\d+)\]")
_LITERAL = re.compile(r"'((?:[^'\\]|\\.)*)'|(true|false)|(-?\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Step:
    """One step of a path: ``kind`` is key, type, where, oftype or index."""

    kind: str
    name: str = ""
    index: int = 0
    sub: tuple[tuple[Step, ...], ...] = ()
    literal: str = ""


Path = tuple[tuple[Step, ...], ...]  # alternatives (a | b), each a sequence of steps


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside quotes and parentheses."""
    parts: list[str] = []
    depth, quoted, escaped, start = 0, False, False, 0
    for position, char in enumerate(text):
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == "'":
                quoted = False
            continue
        if char == "'":
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced ')'")
        elif char == separator and depth == 0:
            parts.append(text[start:position])
            start = position + 1
    if quoted:
        raise ValueError("unterminated quoted text")
    if depth:
        raise ValueError("unbalanced '('")
    parts.append(text[start:])
    return parts


def _unquote(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return re.sub(r"\\(.)", r"\1", match.group(1))
    return match.group(2) or match.group(3)


def _step(part: str, first: bool) -> list[Step]:
    text = part.strip()
    steps: list[Step] = []
    index_match = _INDEX.fullmatch(text)
    index: int | None = None
    if index_match is not None:
        text, index = index_match.group(1).strip(), int(index_match.group(2))
    if text == "first()":
        steps.append(Step("index", index=0))
    elif text.startswith("where(") and text.endswith(")"):
        inner = text[len("where(") : -1]
        left, sep, right = inner.partition("=")
        literal = _LITERAL.fullmatch(right.strip()) if sep else None
        if literal is None:
            raise ValueError("where() takes one comparison: where(sub.path='text')")
        sub = _parse_alternative(left.strip(), nested=True)
        steps.append(Step("where", sub=(sub,), literal=_unquote(literal)))
    elif text.startswith("ofType(") and text.endswith(")"):
        name = text[len("ofType(") : -1].strip()
        if not _NAME.fullmatch(name) or not name[0].isupper():
            raise ValueError("ofType() takes a resource type such as ofType(Device)")
        steps.append(Step("oftype", name=name))
    elif _NAME.fullmatch(text):
        if text[0].isupper():
            if not first:
                raise ValueError(f"a resource type ({text}) may only start a path; use ofType({text}) later")
            steps.append(Step("type", name=text))
        else:
            steps.append(Step("key", name=text))
    elif "(" in text:
        raise ValueError(f"unsupported function in {text!r}: only where(), ofType() and first()")
    else:
        raise ValueError(f"invalid step {text!r}: expected an element name")
    if index is not None:
        steps.append(Step("index", index=index))
    return steps


def _parse_alternative(text: str, nested: bool = False) -> tuple[Step, ...]:
    if not text.strip():
        raise ValueError("empty path")
    steps: list[Step] = []
    for number, part in enumerate(_split(text, ".")):
        if not part.strip():
            raise ValueError("empty step (two dots in a row, or a dot at an end)")
        steps.extend(_step(part, first=number == 0 and not nested))
    return tuple(steps)


@lru_cache(maxsize=1024)
def parse_path(path: str) -> Path:
    """Compile a path; ``ValueError`` naming the path and the problem when invalid.

    >>> [s.kind for s in parse_path("ChargeItem.code.coding.where(system='http://a.b').code")[0]]
    ['type', 'key', 'key', 'where', 'key']
    >>> parse_path("identifier[0].value")[0][1]
    Step(kind='index', name='', index=0, sub=(), literal='')
    """
    try:
        return tuple(_parse_alternative(alt) for alt in _split(path, "|"))
    except ValueError as exc:
        raise ValueError(f"invalid FHIR path {path!r}: {exc}") from None


def _children(node: Any, name: str) -> list[Any]:
    if not isinstance(node, dict):
        return []
    if name in node:
        found = [node[name]]
    else:  # a choice element by its base name: occurrence -> occurrenceDateTime
        found = [v for k, v in node.items() if k.startswith(name) and len(k) > len(name) and k[len(name)].isupper()]
    out: list[Any] = []
    for value in found:
        out.extend(value if isinstance(value, list) else [value])
    return out


def evaluate(node: Any, steps: tuple[Step, ...]) -> list[Any]:
    """The collection a compiled alternative gives on ``node``."""
    nodes = [node]
    for step in steps:
        if step.kind == "key":
            nodes = [child for n in nodes for child in _children(n, step.name)]
        elif step.kind == "type" or step.kind == "oftype":
            nodes = [n for n in nodes if isinstance(n, dict) and n.get("resourceType") == step.name]
        elif step.kind == "index":
            nodes = nodes[step.index : step.index + 1]
        else:  # where
            nodes = [n for n in nodes if any(text(v) == step.literal for v in evaluate(n, step.sub[0]))]
        if not nodes:
            break
    return nodes


def plain(value: Any) -> Any:
    """``value`` with Decimals turned into JSON numbers (ints when written without a fraction)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and value.as_tuple().exponent == 0 else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def text(value: Any) -> str | None:
    """A value as text: numbers as written, ``true``/``false``, objects as compact JSON."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(plain(value), separators=(",", ":"), ensure_ascii=False)
    return str(value)


class FhirDocument:
    """A parsed FHIR resource (Document protocol); ``iterate`` views read their item first."""

    __slots__ = ("bundle", "data", "parent", "prefix")

    def __init__(
        self,
        data: Any,
        parent: FhirDocument | None = None,
        prefix: tuple[Step, ...] = (),
        bundle: Any = None,
    ) -> None:
        self.data = data
        self.parent = parent
        self.prefix = prefix  # the iterate path, without its resource type, that produced this view
        self.bundle = bundle  # for entries(): the Bundle the resource came in (its fullUrls resolve)

    def resolve(self, url: str) -> Any:
        """The resource a ``urn:uuid:``/``urn:oid:`` reference (a Bundle entry's fullUrl) or a
        ``#id`` reference (a contained resource) names, or None: only a resource that came in
        that Bundle, or that contains it, can be found (nothing is fetched)."""
        root = self.root
        if url.startswith("#"):
            # the resource the view belongs to: an entry's resource, else the root resource
            holders = [d for d in self._lineage() if isinstance(d, dict) and "resourceType" in d]
            for holder in holders:
                for item in holder.get("contained") or []:
                    if isinstance(item, dict) and item.get("id") == url[1:]:
                        return item
            return None
        bundle = root.bundle if root.bundle is not None else root.data
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            return None
        for entry in bundle.get("entry") or []:
            if isinstance(entry, dict) and entry.get("fullUrl") == url:
                return entry.get("resource")
        return None

    def _lineage(self) -> list[Any]:
        found: list[Any] = []
        doc: FhirDocument | None = self
        while doc is not None:
            found.append(doc.data)
            doc = doc.parent
        return found

    @property
    def root(self) -> FhirDocument:
        doc = self
        while doc.parent is not None:
            doc = doc.parent
        return doc

    def _relative(self, steps: tuple[Step, ...]) -> tuple[Step, ...] | None:
        """Steps relative to this view when ``steps`` start with the path that produced it."""
        if not self.prefix:
            return None
        body = steps
        if steps and steps[0].kind == "type":
            root = self.root.data
            if not isinstance(root, dict) or root.get("resourceType") != steps[0].name:
                return None
            body = steps[1:]
        if body[: len(self.prefix)] == self.prefix:
            return body[len(self.prefix) :]
        return None

    def _values(self, steps: tuple[Step, ...]) -> list[Any]:
        relative = self._relative(steps)
        if relative is not None:
            return evaluate(self.data, relative) if relative else [self.data]
        found = evaluate(self.data, steps)
        if not found and self.parent is not None:
            return self.parent._values(steps)
        return found

    def values(self, path: str) -> list[Any]:
        """Every node ``path`` selects (alternatives in order)."""
        return [v for alternative in parse_path(path) for v in self._values(alternative)]

    def get(self, path: str) -> str | None:
        for value in self.values(path):
            found = text(value)
            if found not in (None, ""):
                return found
        return None

    def get_all(self, path: str) -> list[str]:
        return [text(v) or "" for v in self.values(path)]

    def iterate(self, path: str) -> list[FhirDocument]:
        views: list[FhirDocument] = []
        for alternative in parse_path(path):
            bare = alternative[1:] if alternative and alternative[0].kind == "type" else alternative
            relative = self._relative(alternative)
            if relative is not None:  # views remember their path from the resource root
                prefix, found = self.prefix + relative, evaluate(self.data, relative) if relative else [self.data]
            elif found := evaluate(self.data, alternative):  # relative to this view's item
                prefix = self.prefix + bare
            else:
                prefix, found = bare, self.parent._values(alternative) if self.parent is not None else []
            views.extend(FhirDocument(v, self, prefix) for v in found)
        return views

    def entries(self) -> list[FhirDocument]:
        """Each ``Bundle.entry.resource`` as a document of its own (no fallback to the Bundle),
        so a resource mapping runs on an entry exactly as on a resource posted alone."""
        found = evaluate(self.data, parse_path("Bundle.entry.resource")[0])
        return [FhirDocument(v, bundle=self.data) for v in found]

    def to_data(self) -> Any:
        return plain(self.data)
