"""X12 transaction set schemas kept as data (``schemas/*.yaml``), loaded once and cached.

Two kinds of file live in ``schemas/``:

* ``segments.yaml``, the segment dictionary: per segment id its elements (usage, type,
  min/max length), code lists for closed qualifiers, composites and X12 syntax notes
  (``P0304`` paired, ``R0203`` at least one, ``E0102`` at most one, ``C0302`` if first then
  all, ``L010203`` if first then at least one other);
* one file per transaction set (``850.yaml`` ...): the segments in order with usage
  (``M`` mandatory, ``O`` optional) and maximum use, nested loops (id, maximum repeat,
  body whose first entry is the trigger segment; a slot marked ``since=005010`` exists from that
version on, one marked ``until=005010`` only before it) and transaction-specific code lists; or,
  for the HIPAA sets validated in depth by pyx12, only the list of allowed segment ids.

An element is written ``"USAGE TYPE MIN/MAX Name"`` (``"M ID 2/2 Purpose Code"``); a token
``since=005010`` limits it to that version and later (element count checks follow the
version in GS08). Code lists are strings of space-separated codes (YAML would read ``00``
as a number).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

TYPES = frozenset({"AN", "ID", "R", "DT", "TM", "C", "B"} | {f"N{n}" for n in range(10)})
RULE_KINDS = frozenset("PRECL")
UNBOUNDED = 10**9


class SchemaError(ValueError):
    """A schema file is malformed (a bug in the shipped data, caught by the unit tests)."""


@dataclass(frozen=True)
class ElementSpec:
    """One simple or composite data element of a segment."""

    position: int
    usage: str  # M, O or X (conditional: governed by the segment's syntax rules)
    type: str
    min_length: int
    max_length: int
    name: str = ""
    since: str = ""  # the first version (GS08 prefix, e.g. 005010) that has this element
    codes: frozenset[str] | None = None  # closed code list
    components: tuple[ElementSpec, ...] = ()


@dataclass(frozen=True)
class SegmentSpec:
    """A segment of the dictionary; ``open_tail`` accepts elements past the last defined one."""

    id: str
    name: str
    elements: tuple[ElementSpec, ...]
    rules: tuple[str, ...] = ()
    open_tail: bool = False
    parsed_rules: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (kind, element positions) per rule

    def for_version(self, version: str) -> SegmentSpec:
        """This segment as the given version defines it (elements added later dropped)."""
        kept = tuple(e for e in self.elements if not e.since or version >= e.since)
        if len(kept) == len(self.elements):
            return self
        return SegmentSpec(self.id, self.name, kept, self.rules, self.open_tail, self.parsed_rules)


@dataclass(frozen=True)
class Node:
    """A segment slot or a loop of a transaction set's structure."""

    id: str  # the segment id, or the loop id
    usage: str  # M or O
    max_use: int
    body: tuple[Node, ...] = ()  # loops only; body[0] is the trigger segment
    since: str = ""
    until: str = ""  # the first version that no longer has this slot (e.g. MSG in a 5010 N9 loop)

    @property
    def is_loop(self) -> bool:
        return bool(self.body)

    @property
    def trigger(self) -> str:
        return self.body[0].id if self.body else self.id


@dataclass(frozen=True)
class TransactionSchema:
    """One transaction set: ordered structure, or (``ids_only``) the allowed segment ids."""

    id: str
    name: str
    functional_group: str
    structure: tuple[Node, ...]
    segment_ids: frozenset[str]  # every segment id the set may contain
    ids_only: bool = False
    codes: dict[tuple[str, int], frozenset[str]] = field(default_factory=dict)  # (segment, element) overrides
    hierarchy: bool = False  # HL01/HL02 parent links are checked (856)


def _split_codes(text: Any, where: str) -> frozenset[str]:
    if not isinstance(text, str) or not text.split():
        raise SchemaError(f"{where}: a code list is a non-empty string of space-separated codes")
    return frozenset(text.split())


def _element(text: Any, position: int, where: str) -> ElementSpec:
    if not isinstance(text, str):
        raise SchemaError(f"{where} element {position:02d}: expected 'USAGE TYPE MIN/MAX Name'")
    words = text.split()
    since = ""
    for word in list(words):
        if word.startswith("since="):
            since = word.removeprefix("since=")
            words.remove(word)
    if len(words) < 2 or words[0] not in ("M", "O", "X") or words[1] not in TYPES:
        raise SchemaError(f"{where} element {position:02d}: expected 'USAGE TYPE MIN/MAX Name', got {text!r}")
    usage, kind = words[0], words[1]
    if kind == "C":
        return ElementSpec(position, usage, kind, 0, 0, " ".join(words[2:]), since)
    try:
        low, high = (int(x) for x in words[2].split("/"))
    except (IndexError, ValueError):
        raise SchemaError(f"{where} element {position:02d}: MIN/MAX lengths missing in {text!r}") from None
    return ElementSpec(position, usage, kind, low, high, " ".join(words[3:]), since)


def _segment(sid: str, data: Any) -> SegmentSpec:
    where = f"segments.yaml {sid}"
    if not isinstance(data, dict):
        raise SchemaError(f"{where}: expected a mapping with name and elements")
    unknown = set(data) - {"name", "elements", "codes", "components", "rules", "open_tail"}
    if unknown:
        raise SchemaError(f"{where}: unknown keys {sorted(unknown)}")
    elements = [_element(text, n, where) for n, text in enumerate(data.get("elements") or [], 1)]
    for position, codes in (data.get("codes") or {}).items():
        index = int(position) - 1
        if not 0 <= index < len(elements):
            raise SchemaError(f"{where}: code list for element {position} which is not defined")
        elements[index] = _replace(elements[index], codes=_split_codes(codes, f"{where}{int(position):02d}"))
    for position, parts in (data.get("components") or {}).items():
        index = int(position) - 1
        if not 0 <= index < len(elements) or elements[index].type != "C":
            raise SchemaError(f"{where}: components for element {position} which is not a composite (C)")
        comps = tuple(_element(text, n, f"{where}{int(position):02d}") for n, text in enumerate(parts, 1))
        elements[index] = _replace(elements[index], components=comps)
    rules = tuple(str(rule) for rule in data.get("rules") or ())
    for rule in rules:
        digits = rule[1:]
        if rule[:1] not in RULE_KINDS or len(digits) < 4 or len(digits) % 2 or not digits.isdigit():
            raise SchemaError(f"{where}: syntax rule {rule!r} is not like P0304 / R0203 / C0302")
        if any(int(digits[i : i + 2]) > len(elements) for i in range(0, len(digits), 2)):
            raise SchemaError(f"{where}: syntax rule {rule!r} names an element that is not defined")
    parsed = tuple((r[0], tuple(int(r[i : i + 2]) for i in range(1, len(r), 2))) for r in rules)
    return SegmentSpec(
        sid, str(data.get("name", "")), tuple(elements), rules, bool(data.get("open_tail", False)), parsed
    )


def _replace(spec: ElementSpec, **changes: Any) -> ElementSpec:
    values = {name: getattr(spec, name) for name in spec.__dataclass_fields__}
    values.update(changes)
    return ElementSpec(**values)


def _read(name: str) -> Any:
    text = resources.files("engine.datatypes.x12").joinpath("schemas", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@lru_cache(maxsize=1)
def dictionary() -> dict[str, SegmentSpec]:
    """The segment dictionary (``segments.yaml``), parsed once."""
    data = _read("segments.yaml")
    if not isinstance(data, dict):
        raise SchemaError("segments.yaml: expected a mapping of segment id to definition")
    return {str(sid): _segment(str(sid), body) for sid, body in data.items()}


def _node(item: Any, where: str, known: dict[str, SegmentSpec], ids: set[str]) -> Node:
    if isinstance(item, str):
        words = item.split()
        since = until = ""
        for word in list(words):
            if word.startswith("since="):
                since = word.removeprefix("since=")
                words.remove(word)
            elif word.startswith("until="):
                until = word.removeprefix("until=")
                words.remove(word)
        if len(words) != 3 or words[1] not in ("M", "O"):
            raise SchemaError(f"{where}: expected 'SEG USAGE MAXUSE' (e.g. 'REF O >1'), got {item!r}")
        sid, usage, use = words
        if sid not in known:
            raise SchemaError(f"{where}: segment {sid} is not in segments.yaml")
        ids.add(sid)
        return Node(sid, usage, UNBOUNDED if use == ">1" else int(use), since=since, until=until)
    if not isinstance(item, dict) or set(item) - {"loop", "usage", "repeat", "body", "since"}:
        raise SchemaError(f"{where}: a loop is a mapping with loop, usage, repeat and body")
    body = tuple(_node(x, f"{where} loop {item.get('loop')}", known, ids) for x in item.get("body") or [])
    if not body or body[0].is_loop:
        raise SchemaError(f"{where}: loop {item.get('loop')} needs a body starting with its trigger segment")
    repeat = item.get("repeat", 1)
    return Node(
        str(item["loop"]),
        str(item.get("usage", "O")),
        UNBOUNDED if repeat == ">1" else int(repeat),
        body,
        str(item.get("since", "")),
    )


@lru_cache(maxsize=64)
def transaction(set_id: str) -> TransactionSchema | None:
    """The schema of a transaction set (ST01), or None when Junction has none for it."""
    if not (set_id.isascii() and set_id.isalnum() and len(set_id) == 3):
        return None
    try:
        data = _read(f"{set_id}.yaml")
    except FileNotFoundError:
        return None
    where = f"{set_id}.yaml"
    known = dictionary()
    ids: set[str] = set()
    codes: dict[tuple[str, int], frozenset[str]] = {}
    for ref, text in (data.get("codes") or {}).items():
        ref = str(ref)
        codes[(ref[:-2], int(ref[-2:]))] = _split_codes(text, f"{where} {ref}")
    if "segment_ids" in data:
        ids = set(_split_codes(data["segment_ids"], f"{where} segment_ids"))
        structure: tuple[Node, ...] = ()
    else:
        structure = tuple(_node(x, where, known, ids) for x in data.get("structure") or [])
        if not structure or structure[0].id != "ST" or structure[-1].id != "SE":
            raise SchemaError(f"{where}: the structure must start with ST and end with SE")
    return TransactionSchema(
        id=str(data.get("transaction", set_id)),
        name=str(data.get("name", "")),
        functional_group=str(data.get("functional_group", "")),
        structure=structure,
        segment_ids=frozenset(ids),
        ids_only="segment_ids" in data,
        codes=codes,
        hierarchy=bool(data.get("hierarchy", False)),
    )


def available() -> list[str]:
    """The transaction sets that have a schema file."""
    folder = resources.files("engine.datatypes.x12").joinpath("schemas")
    names = (entry.name for entry in folder.iterdir())
    return sorted(n.removesuffix(".yaml") for n in names if n.endswith(".yaml") and n != "segments.yaml")
