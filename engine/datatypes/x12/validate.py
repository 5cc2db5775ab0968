"""Validate one X12 transaction set against its schema, with loop state.

The walk keeps a stack of open loops. A segment is looked for in the innermost loop at or
after the current slot, then in the enclosing loops (which closes the inner ones); a
loop's trigger segment seen again starts the next repeat of that loop. Errors carry the
acknowledgement codes of 997 AK3/AK4 and 999 IK3/IK4, the segment's position in the
transaction set (ST = 1), the loop id and the element/component position. The offending
value is kept only in ``ElementError.bad_value`` (``repr=False``), for the copy of the bad
data element that 997 AK404 / 999 IK404 return to the partner; it never goes into a
message, a log line or ``str()`` of an error.

Segment codes (AK304/IK304): 1 unrecognized segment id, 2 unexpected segment, 3 mandatory
segment missing, 4 loop occurs over maximum times, 5 segment exceeds maximum use,
6 segment not in defined transaction set, 8 segment has data element errors.
Element codes (AK403/IK403): 1 mandatory element missing, 2 conditional required element
missing, 3 too many data elements, 4 too short, 5 too long, 6 invalid character,
7 invalid code value, 8 invalid date, 9 invalid time, 10 exclusion condition violated.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from engine.datatypes.x12.schema import ElementSpec, Node, SegmentSpec, TransactionSchema, dictionary, transaction
from engine.datatypes.x12.tokenizer import Delimiters, Segment, valid_id

MAX_ERRORS = 100  # per transaction set: enough to fix a file, bounded for the acknowledgement

SEGMENT_REASONS = {
    "1": "unrecognized segment id",
    "2": "unexpected segment (not allowed at this place)",
    "3": "mandatory segment missing",
    "4": "loop occurs more often than allowed",
    "5": "segment exceeds its maximum use",
    "6": "segment not in the defined transaction set",
    "8": "segment has data element errors",
}
ELEMENT_REASONS = {
    "1": "mandatory data element missing",
    "2": "conditional required data element missing",
    "3": "too many data elements",
    "4": "data element too short",
    "5": "data element too long",
    "6": "invalid character in data element",
    "7": "invalid code value",
    "8": "invalid date",
    "9": "invalid time",
    "10": "exclusion condition violated",
}
_DIGITS = frozenset("0123456789")
_CONTROL = re.compile(r"[\x00-\x1f]")
# Per (node identity, version): the node's body as that version has it, and its trigger ids.
# Schemas are cached for the process, so their nodes (and ids) live as long as this cache.
_BODIES: dict[tuple[int, str], tuple[tuple[Node, ...], tuple[str, ...]]] = {}
_SPECS: dict[tuple[str, str], SegmentSpec | None] = {}


def _body(nodes: tuple[Node, ...], key: int, version: str) -> tuple[tuple[Node, ...], tuple[str, ...]]:
    found = _BODIES.get((key, version))
    if found is None:
        kept = tuple(n for n in nodes if (not n.since or version >= n.since) and (not n.until or version < n.until))
        found = _BODIES[(key, version)] = (kept, tuple(n.trigger for n in kept))
    return found


def _spec(sid: str, version: str) -> SegmentSpec | None:
    key = (sid, version)
    if key not in _SPECS:
        found = dictionary().get(sid)
        _SPECS[key] = found.for_version(version) if found is not None else None
    return _SPECS[key]


@dataclass
class ElementError:
    """One data element problem (AK4/IK4)."""

    position: int  # element position in the segment, from 1
    code: str
    component: int = 0  # component position in a composite, 0 when simple
    repeat: int = 0  # repetition (5010), 0 when the element does not repeat
    bad_value: str = field(default="", repr=False)  # for AK404/IK404 only; never logged

    def describe(self) -> str:
        where = f"element {self.position:02d}" + (f", component {self.component}" if self.component else "")
        return f"{where}: {ELEMENT_REASONS.get(self.code, 'error')} (code {self.code})"


@dataclass
class SegmentError:
    """One segment problem (AK3/IK3), with its element problems."""

    segment_id: str
    position: int  # in the transaction set, ST = 1
    code: str
    loop_id: str = ""
    number: int = 0  # position in the whole payload (for ParseError positions), 0 if unknown
    elements: list[ElementError] = field(default_factory=list)

    def describe(self) -> str:
        name = self.segment_id if valid_id(self.segment_id) else "with an invalid id"  # may be data: not quoted
        text = f"segment {name} at position {self.position} of the transaction set"
        if self.loop_id:
            text += f" (loop {self.loop_id})"
        if self.elements:
            return f"{text}: " + "; ".join(e.describe() for e in self.elements)
        return f"{text}: {SEGMENT_REASONS.get(self.code, 'error')} (code {self.code})"


FIVE010 = "005010"


def version_of(gs08: str) -> str:
    """The version/release part of GS08, normalised to six digits (``005010X222A1`` -> ``005010``).

    Versions are compared as text everywhere (``version >= "005010"``), which is only a numeric
    comparison when both sides have six digits: senders who write ``4010`` without the leading
    zeros would otherwise compare above ``005010``. "" when GS08 does not start with digits.
    """
    value = gs08.strip()
    digits = value[: len(value) - len(value.lstrip("0123456789"))]
    return digits[:6].zfill(6) if digits else ""


def is_5010(version: str) -> bool:
    """Whether a ``version_of`` value is 5010 or later (999, IK codes)."""
    return version >= FIVE010


class _Level:
    __slots__ = ("counts", "index", "last", "loop_id", "nodes", "trigger", "triggers")

    def __init__(
        self, body: tuple[tuple[Node, ...], tuple[str, ...]], loop_id: str, trigger: Segment | None = None
    ) -> None:
        self.nodes, self.triggers = body
        self.trigger = trigger  # the segment that opened this loop (None at the top level)
        self.last = trigger  # the last segment read in this loop
        nodes = self.nodes
        self.loop_id = loop_id
        self.index = 0
        self.counts = [0] * len(nodes)
        self.counts[0] = 1  # ST, or the loop's trigger, was just read


def validate_transaction(
    segments: list[Segment], delimiters: Delimiters, version: str, schema: TransactionSchema | None = None
) -> list[SegmentError]:
    """Every problem of one transaction set (ST..SE); empty when valid or when it has no schema."""
    if not segments:
        return []
    if schema is None:
        schema = transaction(segments[0].elements[1].strip() if len(segments[0].elements) > 1 else "")
        if schema is None:  # no schema: only what is wrong whatever the set, an invalid segment id
            return [
                SegmentError(s.id, position, "1", number=s.number)
                for position, s in enumerate(segments, 1)
                if not valid_id(s.id)
            ][:MAX_ERRORS]
    return _Walker(schema, delimiters, version).run(segments)


class _Walker:
    def __init__(self, schema: TransactionSchema, delimiters: Delimiters, version: str) -> None:
        self.schema = schema
        self.delims = delimiters
        self.version = version
        # DT was YYMMDD before 4010; both sides have six digits (version_of), so text compares as numbers.
        self.old_dates = bool(version) and version < "004010"
        self.errors: list[SegmentError] = []
        self.hl_ids: set[str] = set()

    def add(self, error: SegmentError) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(error)

    def run(self, segments: list[Segment]) -> list[SegmentError]:
        if self.schema.ids_only:
            for position, segment in enumerate(segments, 1):
                if segment.id not in self.schema.segment_ids:
                    code = "6" if segment.id in dictionary() else "1"
                    self.add(SegmentError(segment.id, position, code, number=segment.number))
            return self.errors
        structure = self.schema.structure
        stack = [_Level(_body(structure, id(structure), self.version), "")]
        self.check_elements(segments[0], 1, "")
        for position, segment in enumerate(segments[1:], 2):
            if len(self.errors) >= MAX_ERRORS:
                break
            self.step(stack, segment, position)
        if stack[0].counts[-1] == 0 and len(self.errors) < MAX_ERRORS:  # no SE matched: close everything
            while len(stack) > 1:
                self.close(stack.pop(), len(segments))
            self.missing(stack[0], stack[0].index + 1, len(stack[0].nodes), len(segments))
        return self.errors

    def step(self, stack: list[_Level], segment: Segment, position: int) -> None:
        sid = segment.id
        for depth in range(len(stack) - 1, -1, -1):
            level = stack[depth]
            try:
                j = level.triggers.index(sid, max(level.index, 1 if depth else 0))
            except ValueError:
                continue
            while len(stack) > depth + 1:
                self.close(stack.pop(), position)
            for open_level in stack[1:]:
                open_level.last = segment
            node = level.nodes[j]
            self.missing(level, level.index + 1, j, position)
            level.index = j
            level.counts[j] += 1
            if node.is_loop:
                if level.counts[j] > node.max_use:
                    self.add(SegmentError(sid, position, "4", node.id, segment.number))
                stack.append(_Level(_body(node.body, id(node), self.version), node.id, segment))
                self.check_elements(segment, position, node.id)
            else:
                if level.counts[j] > node.max_use:
                    self.add(SegmentError(sid, position, "5", level.loop_id, segment.number))
                self.check_elements(segment, position, level.loop_id)
            return
        if sid in self.schema.segment_ids:
            code = "2"
        else:
            code = "6" if sid in dictionary() else "1"
        self.add(SegmentError(sid, position, code, stack[-1].loop_id, segment.number))

    def close(self, level: _Level, position: int) -> None:
        self.missing(level, level.index + 1, len(level.nodes), position)
        if level.trigger is not None and level.last is not None:
            level.trigger.loop_end = level.last.number  # loop-aware paths (document.py)

    def missing(self, level: _Level, start: int, stop: int, position: int) -> None:
        for k in range(start, stop):
            node = level.nodes[k]
            if node.usage == "M" and level.counts[k] == 0:
                self.add(SegmentError(node.trigger, position, "3", level.loop_id))

    # -- elements ------------------------------------------------------------------------------

    def check_elements(self, segment: Segment, position: int, loop_id: str) -> None:
        spec = _spec(segment.id, self.version)
        if spec is None:
            return
        problems: list[ElementError] = []
        values = segment.elements
        count = len(values) - 1
        defined = len(spec.elements)
        if count > defined and not spec.open_tail:
            extra = next((k for k in range(defined + 1, count + 1) if values[k] != ""), 0)
            if extra:
                problems.append(ElementError(extra, "3"))
        for element in spec.elements:
            k = element.position
            value = values[k] if k <= count else ""
            if value == "":
                if element.usage == "M":
                    problems.append(ElementError(k, "1"))
                continue
            if self.delims.repetition and self.delims.repetition in value and segment.id != "ISA":
                for r, part in enumerate(value.split(self.delims.repetition), 1):
                    self.check_value(element, part, problems, segment.id, repeat=r)
            else:
                self.check_value(element, value, problems, segment.id)
        if spec.parsed_rules:
            self.check_rules(spec, values, problems)
        if segment.id == "HL" and self.schema.hierarchy:
            self.check_hierarchy(values, problems)
        if problems:
            problems.sort(key=lambda e: (e.position, e.component))
            self.add(SegmentError(segment.id, position, "8", loop_id, segment.number, problems))

    def check_value(
        self, element: ElementSpec, value: str, problems: list[ElementError], sid: str, repeat: int = 0
    ) -> None:
        if element.type == "C":
            parts = value.split(self.delims.component)
            if len(parts) > len(element.components) and element.components:
                problems.append(ElementError(element.position, "3", len(element.components) + 1, repeat))
            for component in element.components:
                part = parts[component.position - 1] if component.position <= len(parts) else ""
                if part == "":
                    if component.usage == "M":
                        problems.append(ElementError(element.position, "1", component.position, repeat))
                    continue
                code = self.check_simple(component, part, sid)
                if code:
                    problems.append(ElementError(element.position, code, component.position, repeat, part))
            return
        code = self.check_simple(element, value, sid)
        if code:
            problems.append(ElementError(element.position, code, 0, repeat, value))

    def check_simple(self, element: ElementSpec, value: str, sid: str) -> str:
        """The AK403/IK403 code for ``value``, or "" when it is valid."""
        kind = element.type
        if kind == "DT":
            if not _is_date(value, allow_short=self.old_dates or element.min_length == 6):
                return "8"
            return ""
        if kind == "TM":
            return "" if _is_time(value) else "9"
        if kind[0] == "N" or kind == "R":
            body = value[1:] if value[:1] == "-" else value
            if kind == "R":
                if body.count(".") > 1:
                    return "6"
                body = body.replace(".", "", 1)
            if not (body.isascii() and body.isdigit()):
                return "6"
            length = len(body)
        else:
            if _CONTROL.search(value):
                return "6"
            length = len(value)
        if length < element.min_length:
            return "4"
        if length > element.max_length:
            return "5"
        if kind == "ID":
            codes = self.schema.codes.get((sid, element.position), element.codes)
            if codes is not None and value not in codes:
                return "7"
        return ""

    def check_rules(self, spec: SegmentSpec, values: list[str], problems: list[ElementError]) -> None:
        count = len(values) - 1
        for kind, refs in spec.parsed_rules:
            here = [k <= count and values[k] != "" for k in refs]
            if kind == "P" and any(here) and not all(here):
                problems.extend(ElementError(k, "2") for k, h in zip(refs, here, strict=True) if not h)
            elif kind == "R" and not any(here):
                problems.append(ElementError(refs[0], "2"))
            elif kind == "E" and sum(here) > 1:
                problems.append(ElementError(refs[[i for i, h in enumerate(here) if h][1]], "10"))
            elif kind == "C" and here[0] and not all(here[1:]):
                problems.extend(ElementError(k, "2") for k, h in zip(refs[1:], here[1:], strict=True) if not h)
            elif kind == "L" and here[0] and not any(here[1:]):
                problems.append(ElementError(refs[1], "2"))

    def check_hierarchy(self, values: list[str], problems: list[ElementError]) -> None:
        """HL01 unique in the set; HL02, when given, names an earlier HL01."""
        own = values[1] if len(values) > 1 else ""
        parent = values[2] if len(values) > 2 else ""
        if own:
            if own in self.hl_ids:
                problems.append(ElementError(1, "7", bad_value=own))
            self.hl_ids.add(own)
        if parent and parent not in self.hl_ids:
            problems.append(ElementError(2, "7", bad_value=parent))


def _is_date(value: str, *, allow_short: bool) -> bool:
    if not _DIGITS.issuperset(value):
        return False
    if len(value) == 8:
        year, month, day = int(value[:4]), int(value[4:6]), int(value[6:])
    elif len(value) == 6 and allow_short:
        year, month, day = 2000 + int(value[:2]), int(value[2:4]), int(value[4:])
    else:
        return False
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def _is_time(value: str) -> bool:
    if len(value) < 4 or len(value) > 8 or len(value) == 5 or not _DIGITS.issuperset(value):
        return False
    if int(value[:2]) > 23 or int(value[2:4]) > 59:
        return False
    return len(value) < 6 or int(value[4:6]) <= 59
