"""A parsed X12 payload read by X12 paths (``PO1/PO102``, ``N1[N101=ST]/N104``, ``HL[HL03=I]``).

A document is a flat list of segments (ISA to IEA). A path step selects segments by id,
optionally by occurrence (``[2]``, 1-based) or by a qualifier (``[N101=ST]``); a step
followed by ``/`` opens the *loop* of each selected segment. When the transaction set was
validated against a schema, a loop trigger's loop is exactly the schema loop (an N1 loop
of the header ends where the detail begins); otherwise it is the segment and the ones
after it up to the next segment with the same id or the end of the transaction set (SE,
or CTT, the totals that close the detail area). ``iterate`` gives one view per loop; in a
view, paths read the loop first and then the whole document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from engine.datatypes.x12.tokenizer import Delimiters, Interchange, Segment

SYNTAX = """\
SEG, SEGnn, SEGnn-c, with steps joined by / (elements numbered from 01 as in X12):
  ISA06                 the sender id (ISA padding removed)
  BEG03                 element 3 of the first BEG segment
  PO1/PO102             element 2 of each PO1 (get_all: one value per PO1)
  SLN01-2               component 2 of element 1
  REF[2]/REF02          the second REF segment (occurrences count from 1)
  N1[N101=ST]/N104      the ship-to party's id (qualifier selection)
  N1[N101=ST]/N3        the N3 segment (whole text) in the ship-to N1 loop
  HL[HL03=I]            item-level HL loops, e.g. for iterate
A step followed by / opens the loop of each selected segment: the segment and those after
it up to the next segment with the same id, CTT or SE. iterate("PO1") gives one view per
PO1 loop; paths in a view read the loop first, then the whole document. In the view of an
HL loop, HL steps follow the HL01/HL02 tree: HL[HL03=I] in an order view gives its items at
any depth. A repeated element (5010 repetition separator) gives one value per repetition."""

# A segment id is 2-3 characters and an element number exactly 2 digits, so "PO107" is
# PO1 element 07 and "N104" is N1 element 04 (the lazy id makes the regex try short ids first).
_STEP = re.compile(r"([A-Z][A-Z0-9]{1,2}?)(?:\[([^\]]*)\])?(?:(\d{2})(?:-(\d+))?)?")
_QUALIFIER = re.compile(r"([A-Z][A-Z0-9]{1,2}?)(\d{2})(?:-(\d+))?=(.*)")
# Segments that end every loop: the transaction's totals and trailer, and the envelopes.
_LOOP_END = frozenset({"CTT", "SE", "ST", "GE", "GS", "IEA", "ISA"})


@dataclass(frozen=True)
class Qualifier:
    """``[N101=ST]``: keep occurrences whose loop has that value at that element."""

    segment: str
    element: int
    component: int
    value: str


@dataclass(frozen=True)
class Step:
    """One path step: a segment id, an optional selection, an optional element/component."""

    segment: str
    occurrence: int = 0  # 1-based; 0 means every occurrence
    qualifier: Qualifier | None = None
    element: int = 0  # 0 means the whole segment
    component: int = 0


@lru_cache(maxsize=512)
def parse_path(path: str) -> tuple[Step, ...]:
    """Split an X12 path into steps; ``ValueError`` with the syntax when invalid.

    >>> [(step.segment, step.element) for step in parse_path("PO1/PO102")]
    [('PO1', 0), ('PO1', 2)]
    """
    parts = path.strip().split("/")
    steps = [_parse_step(path, part) for part in parts]
    if any(step.element for step in steps[:-1]):
        raise ValueError(f"invalid X12 path {path!r}: only the last step may name an element (SEG/SEGnn)")
    return tuple(steps)


def _parse_step(path: str, part: str) -> Step:
    match = _STEP.fullmatch(part)
    if match is None:
        raise ValueError(f"invalid X12 path {path!r}: expected SEG, SEGnn or SEGnn-c, joined by /")
    segment, selector, element, component = match.groups()
    occurrence, qualifier = 0, None
    if selector is not None:
        if selector.isdigit() and int(selector) > 0:
            occurrence = int(selector)
        else:
            found = _QUALIFIER.fullmatch(selector)
            if found is None:
                raise ValueError(f"invalid X12 path {path!r}: a selection is [n] (from 1) or [SEGnn=value]")
            qualifier = Qualifier(found[1], int(found[2]), int(found[3] or 0), found[4])
    if component and not element:
        raise ValueError(f"invalid X12 path {path!r}: a component needs an element (SEGnn-c)")
    return Step(segment, occurrence, qualifier, int(element or 0), int(component or 0))


Entry = tuple[Segment, Delimiters]


class X12Document:
    """A parsed X12 payload or one loop of it (Document protocol)."""

    __slots__ = ("entries", "interchanges", "node", "parent", "tree", "warnings")

    def __init__(
        self,
        entries: list[Entry],
        parent: X12Document | None = None,
        *,
        warnings: list[str] | None = None,
        interchanges: list[Interchange] | None = None,
    ) -> None:
        self.entries = entries
        self.parent = parent
        self.tree: _HLTree | None = None  # set on the view of one HL loop (see _HLTree)
        self.node = -1  # that loop's index in the tree
        self.warnings: list[str] = warnings if warnings is not None else (parent.warnings if parent else [])
        self.interchanges: list[Interchange] = (
            interchanges if interchanges is not None else (parent.interchanges if parent else [])
        )

    @classmethod
    def from_interchanges(cls, interchanges: list[Interchange]) -> X12Document:
        """The document of a whole tokenized payload."""
        entries: list[Entry] = []
        warnings: list[str] = []
        for interchange in interchanges:
            delims = interchange.delimiters
            entries.append((interchange.isa, delims))
            entries.extend((ta1, delims) for ta1 in interchange.ta1)
            for group in interchange.groups:
                entries.append((group.gs, delims))
                for transaction in group.transactions:
                    entries.extend((segment, delims) for segment in transaction.segments)
                if group.ge is not None:
                    entries.append((group.ge, delims))
            if interchange.iea is not None:
                entries.append((interchange.iea, delims))
            warnings.extend(interchange.warnings)
        return cls(entries, warnings=warnings, interchanges=interchanges)

    def _values(self, path: str) -> list[str] | None:
        """Values at ``path``; None when no segment matched (then the parent is asked)."""
        steps = parse_path(path)
        if self.tree is not None and len(steps) > 1 and _navigates(steps[0]):
            # HL[HL03=P]/HL01 in the view of an HL loop: the related levels only, never a sibling's.
            hops = 1
            while hops < len(steps) - 1 and _navigates(steps[hops]):
                hops += 1
            found = []
            for node in self.tree.select(self.node, steps[:hops]):
                found.extend(_evaluate(self.tree.loops[node], steps[hops:]) or ())
            return found
        found = _evaluate(self.entries, steps)
        if found is None and self.parent is not None:
            return self.parent._values(path)
        return found

    def get(self, path: str) -> str | None:
        for value in self._values(path) or ():
            if value != "":
                return value
        return None

    def get_all(self, path: str) -> list[str]:
        return self._values(path) or []

    def iterate(self, path: str) -> list[X12Document]:
        steps = parse_path(path)
        if steps[-1].element:
            raise ValueError(f"cannot iterate {path!r}: name a segment (PO1, HL[HL03=I]), not an element")
        if all(_navigates(step) for step in steps):
            tree = self.tree if self.tree is not None else _HLTree(self)
            return [tree.view(node) for node in tree.select(self.node, steps)]
        scopes = _scopes(self.entries, steps)
        if not scopes:
            return []  # no such loop here: never the loops of a sibling (another line's lots)
        # A view falls back to what surrounds the loops, not to the other repeats: a PO1
        # line without its own REF or DTM reads the header's, never the previous line's.
        covered = {id(entry) for scope in scopes for entry in scope}
        context = X12Document(
            [entry for entry in self.entries if id(entry) not in covered],
            self.parent,
            warnings=self.warnings,
            interchanges=self.interchanges,
        )
        return [X12Document(scope, context) for scope in scopes]

    def to_data(self) -> Any:
        """The segments as lists of element texts (``[id, el01, el02, ...]``) and the warnings."""
        return {"segments": [list(segment.elements) for segment, _ in self.entries], "warnings": list(self.warnings)}


def _navigates(step: Step) -> bool:
    """An HL step that selects levels of the hierarchy (not an element of the HL segment)."""
    return step.segment == "HL" and not step.element


class _HLTree:
    """The HL hierarchy of a document, built from the HL01/HL02 parent links.

    ``iterate("HL[HL03=O]")`` on a document gives one view per HL loop (the HL segment and the
    segments up to the next HL); in such a view an HL step selects the levels *related* to
    it, its ancestors and descendants at any depth (``HL[HL03=I]`` in an order view: the items
    of that order, under packs or not; in a pack view: the items in the pack, or the item the
    pack belongs to in an S/O/I/P notice), never a sibling's. A view reads its own loop first
    and then what lies outside every HL loop (the heading, the summary), never another level.
    HL01 values are unique per transaction set; an HL02 that names no earlier HL01 of its
    transaction set (schema validation rejects it) makes the level a root.
    """

    __slots__ = ("base", "children", "loops", "parents", "views")

    def __init__(self, doc: X12Document) -> None:
        entries = doc.entries
        self.loops: list[list[Entry]] = []
        self.parents: list[int] = []
        ids: dict[str, int] = {}
        for index, (segment, _) in enumerate(entries):
            if segment.id == "ST":
                ids = {}  # HL01 is unique within one transaction set only
            elif segment.id == "HL":
                loop = _loops(entries[index:], Step("HL"))[0]
                values = segment.elements
                parent = values[2] if len(values) > 2 else ""
                self.parents.append(ids.get(parent, -1) if parent else -1)
                if len(values) > 1 and values[1]:
                    ids[values[1]] = len(self.loops)
                self.loops.append(loop)
        self.children: list[list[int]] = [[] for _ in self.loops]
        for node, parent in enumerate(self.parents):
            if parent >= 0:
                self.children[parent].append(node)
        covered = {id(entry) for loop in self.loops for entry in loop}
        self.base = X12Document(
            [entry for entry in entries if id(entry) not in covered],
            doc.parent,
            warnings=doc.warnings,
            interchanges=doc.interchanges,
        )
        self.views: dict[int, X12Document] = {}

    def related(self, node: int) -> list[int]:
        """The ancestors and descendants of ``node``, in document order."""
        found = []
        parent = self.parents[node]
        while parent >= 0:
            found.append(parent)
            parent = self.parents[parent]
        stack = list(self.children[node])
        while stack:
            child = stack.pop()
            found.append(child)
            stack.extend(self.children[child])
        return sorted(found)

    def select(self, start: int, steps: tuple[Step, ...]) -> list[int]:
        """The levels reached by HL ``steps`` from ``start`` (-1: the whole document)."""
        current = [start]
        for step in steps:
            seen: set[int] = set()
            found = []
            for node in current:
                for candidate in self.related(node) if node >= 0 else range(len(self.loops)):
                    if candidate not in seen:
                        seen.add(candidate)
                        found.append(candidate)
            found.sort()
            if step.qualifier is not None:
                found = [n for n in found if _qualifies(self.loops[n], step.qualifier)]
            if step.occurrence:
                found = found[step.occurrence - 1 : step.occurrence]
            current = found
        return current

    def view(self, node: int) -> X12Document:
        found = self.views.get(node)
        if found is None:
            found = X12Document(self.loops[node], self.base)
            found.tree, found.node = self, node
            self.views[node] = found
        return found


def _scopes(entries: list[Entry], steps: tuple[Step, ...]) -> list[list[Entry]]:
    """The loops selected by ``steps`` (every step opens the loop of its segments)."""
    scopes = [entries]
    for step in steps:
        scopes = [loop for scope in scopes for loop in _loops(scope, step)]
    return scopes


def _loops(scope: list[Entry], step: Step) -> list[list[Entry]]:
    starts = [i for i, (segment, _) in enumerate(scope) if segment.id == step.segment]
    loops = []
    for start in starts:
        first = scope[start][0]
        if first.loop_end:  # the transaction's schema says where this loop ends
            loops.append(scope[start : min(len(scope), start + 1 + first.loop_end - first.number)])
            continue
        end = start + 1
        while end < len(scope) and scope[end][0].id != step.segment and scope[end][0].id not in _LOOP_END:
            end += 1
        loops.append(scope[start:end])
    if step.qualifier is not None:
        loops = [loop for loop in loops if _qualifies(loop, step.qualifier)]
    if step.occurrence:
        loops = loops[step.occurrence - 1 : step.occurrence]
    return loops


def _qualifies(loop: list[Entry], qualifier: Qualifier) -> bool:
    for segment, delims in loop:
        if segment.id == qualifier.segment:
            return qualifier.value in _element_values(segment, delims, qualifier.element, qualifier.component)
    return False


def _evaluate(entries: list[Entry], steps: tuple[Step, ...]) -> list[str] | None:
    last = steps[-1]
    matched = False
    values: list[str] = []
    for scope in _scopes(entries, steps[:-1]):
        for loop in _loops(scope, last):
            # The selected segment is the first of its loop; its followers are not read.
            segment, delims = loop[0]
            matched = True
            if last.element:
                values.extend(_element_values(segment, delims, last.element, last.component))
            else:
                values.append(delims.element.join(segment.elements))
    return values if matched else None


def _element_values(segment: Segment, delims: Delimiters, element: int, component: int) -> list[str]:
    """One value per repetition of the element ("" when the segment is shorter)."""
    if element >= len(segment.elements):
        return [""]
    text = segment.elements[element]
    if segment.id == "ISA":
        # ISA holds the separators themselves (ISA11, ISA16) and fixed-width padding.
        return [text.strip()]
    repeats = text.split(delims.repetition) if delims.repetition else [text]
    if not component:
        return repeats
    values = []
    for repeat in repeats:
        parts = repeat.split(delims.component)
        values.append(parts[component - 1] if component <= len(parts) else "")
    return values
