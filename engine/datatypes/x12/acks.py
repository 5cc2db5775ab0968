"""997 / 999 / TA1 acknowledgements for an inbound X12 payload.

Every functional group of every interchange gets one acknowledgement transaction set: a
997 (GS08 ``004010``) for groups before 5010, a 999 (``005010X231A1``) for 5010 groups.
It has AK1 for the group, per transaction set AK2, one AK3/IK3 per segment problem with
AK4/IK4 per element problem, AK5/IK5 (A or R with codes) and AK9 with the counts.
Interchange-level problems give a TA1, and so does ISA14 = 1 (acknowledgement requested);
the TA1 is sent in an interchange of its own (ISA, TA1, IEA with IEA01 = 0) before the
interchanges carrying the 997/999s.
Groups of acknowledgements (GS01 = FA: 997, 999) are never acknowledged, nor are
interchanges holding only a TA1.

A 997/999 is a *syntax* acknowledgement: its content comes from Junction's own envelope
checks and schema validation, never from the channel's outcome (a transaction may be
syntactically valid and still fail a mapping; that is answered by the business reply,
e.g. an 855, not by the 997).

The response envelope swaps sender and receiver (ISA05/06 with ISA07/08, GS02 with GS03)
and reuses the inbound delimiters and line breaks. ISA13 and GS06 come from an injectable
allocator (``ControlNumbers``); ST02 counts from 0001 in each group.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.core.errors import ParseError
from engine.datatypes.x12.tokenizer import (
    ISA_ELEMENTS,
    Damaged,
    Delimiters,
    Group,
    Interchange,
    Segment,
    Transaction,
    check_group,
    check_gs,
    check_isa,
    check_transaction,
    decode,
    duplicate_sets,
    isa_elements,
    read_delimiters,
    scan,
    tokenize,
    valid_id,
)
from engine.datatypes.x12.validate import SegmentError, is_5010, validate_transaction, version_of

ACK_SETS = frozenset({"997", "999", "TA1"})
VERSION_997 = "004010"
VERSION_999 = "005010X231A1"
_REPETITION_CANDIDATES = "^{}|!"


class ControlNumbers:
    """Interchange and group control numbers for generated acknowledgements (9 digits).

    The base is derived from the clock (tenths of a second since the epoch, modulo 10^9) and
    an in-process counter is added, so numbers increase within a process and a restarted
    process starts above the numbers an earlier one used unless it issued more than ten per
    second on average. The partner registry replaces this with persistent numbers later
    (``X12DataType.control_numbers`` is any callable returning an int).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._base = int(clock() * 10) % 10**9
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return (self._base + next(self._counter) - 1) % (10**9 - 1) + 1


next_control_number = ControlNumbers()
"""The process-wide allocator used by default."""


@dataclass
class TransactionResult:
    """The verdict on one transaction set."""

    st01: str
    st02: str
    st03: str
    codes: list[str] = field(default_factory=list)  # AK502.. / IK502..; empty when accepted
    errors: list[SegmentError] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list, repr=False)  # for 999 CTX business unit ids

    @property
    def accepted(self) -> bool:
        return not self.codes


@dataclass
class GroupResult:
    """The verdict on one functional group."""

    group: Group
    version: str
    transactions: list[TransactionResult]
    codes: list[str] = field(default_factory=list)  # AK905..

    @property
    def status(self) -> str:
        accepted = sum(t.accepted for t in self.transactions)
        if self.codes or accepted == 0:
            return "R"
        return "A" if accepted == len(self.transactions) else "P"


def assess_transaction(transaction: Transaction, delimiters: Delimiters, version: str) -> TransactionResult:
    """Envelope (SE count, control numbers) and schema problems of one transaction set."""
    st = transaction.segments[0]
    result = TransactionResult(_get(st, 1), _get(st, 2), _get(st, 3), segments=transaction.segments)
    try:
        check_transaction(transaction)
    except ParseError as exc:
        result.codes.append(exc.code.partition(":")[2] or "5")
    result.errors = validate_transaction(transaction.segments, delimiters, version)
    if result.errors and "5" not in result.codes:
        result.codes.append("5")
    return result


# Loops whose first segment identifies a business unit (999 CTX01: element name, value).
BUSINESS_UNITS = {"PO1": 1, "IT1": 1, "HL": 1, "LIN": 1, "SLN": 1, "CLM": 1, "CLP": 1, "LX": 1}


def business_unit(segments: list[Segment], error: SegmentError) -> tuple[str, str] | None:
    """(``PO101``, line number) of the loop an error sits in, for the 999 CTX segment.

    Only for errors inside a loop the schema names (``loop_id``) that is, or is inside, a
    line-level loop; the identifier is read from that loop's first segment.
    """
    loops = set(error.loop_id.split("/")) if error.loop_id else set()
    wanted = loops & set(BUSINESS_UNITS)
    if not wanted:
        return None
    for segment in reversed(segments[: max(error.position - 1, 0) + 1]):
        if segment.id in wanted:
            index = BUSINESS_UNITS[segment.id]
            value = segment.elements[index].strip() if index < len(segment.elements) else ""
            return (f"{segment.id}{index:02d}", value) if value else None
    return None


def assess_group(group: Group, delimiters: Delimiters) -> GroupResult:
    """Every transaction set of a group plus GE01/GE02."""
    version = version_of(_get(group.gs, 8))
    result = GroupResult(group, version, [assess_transaction(t, delimiters, version) for t in group.transactions])
    for index in duplicate_sets(group):  # a resent or mis-numbered set is never accepted twice
        result.transactions[index].codes.insert(0, "23")
    try:
        check_group(group, descend=False)
    except ParseError as exc:
        result.codes.append(exc.code.partition(":")[2] or "1")
    return result


def is_ack_group(group: Group) -> bool:
    """A group of acknowledgements (997, 999): never acknowledged itself."""
    sets = {_get(t.segments[0], 1) for t in group.transactions}
    return _get(group.gs, 1) == "FA" or (bool(sets) and sets <= ACK_SETS)


def acknowledge(
    raw: bytes,
    control_numbers: Callable[[], int] = next_control_number,
    now: Callable[[], dt.datetime] | None = None,
    kind: str = "auto",
) -> bytes | None:
    """The acknowledgement interchanges for ``raw``; None when nothing is to be acknowledged.

    ``kind``: ``auto`` (997 before 5010, 999 from 5010), ``997`` or ``999`` for every group.
    """
    moment = (now or _utcnow)()
    try:
        found, encoding = scan(raw)
    except ParseError:
        return None  # an empty payload: nothing to answer to
    out: list[str] = []
    for item in found:  # each interchange answered on its own, a damaged one with its own TA1
        if isinstance(item, Damaged):
            out.extend(filter(None, [_reject_unreadable(item, control_numbers, moment)]))
        else:
            out.extend(_answer(item, control_numbers, moment, kind))
    if not out:
        return None
    answer = "".join(out).encode(encoding, errors="replace")
    try:
        tokenize(answer)
    except ParseError:
        # The inbound envelope is too damaged to answer in its own delimiters (e.g. a sender
        # id holding the segment terminator): no answer beats a malformed one. The message
        # itself is stored with its parse error and can be reprocessed.
        return None
    return answer


def _answer(interchange: Interchange, control_numbers: Callable[[], int], moment: dt.datetime, kind: str) -> list[str]:
    isa = interchange.isa.elements
    ta1: tuple[str, str] | None = None
    if len(isa) != ISA_ELEMENTS + 1:
        ta1 = ("R", "024")
    else:
        iea = interchange.iea.elements if interchange.iea is not None else []
        refused = _envelope_problem(interchange)
        if refused:
            ta1 = ("R", refused)
        elif _num(iea, 2) != _num(isa, 13):
            ta1 = ("R", "001")
        elif _num(iea, 1) != str(len(interchange.groups)):
            ta1 = ("R", "021")  # parse refuses the interchange: an E would tell the sender not to resend
        elif isa[14].strip() == "1":
            ta1 = ("A", "000")
    writer = _Writer(interchange)
    inbound_5010 = _isa_5010(isa)
    if ta1 is not None and ta1[0] == "R":
        return [writer.interchange(isa, ta1, [], control_numbers(), moment, five010=inbound_5010)]
    results = [assess_group(g, interchange.delimiters) for g in interchange.groups if not is_ack_group(g)]
    as_999 = [kind == "999" or (kind != "997" and is_5010(r.version)) for r in results]
    families = [f for f in (False, True) if f in as_999]
    out: list[str] = []
    if ta1 is not None:  # the TA1 travels in its own interchange, ahead of the 997/999s
        out.append(writer.interchange(isa, ta1, [], control_numbers(), moment, five010=inbound_5010))
    for five010 in families:
        control = control_numbers()  # ISA13 first, then GS06 per group
        chosen = [r for r, f in zip(results, as_999, strict=True) if f == five010]
        groups = [writer.group(r, control_numbers, moment, five010) for r in chosen]
        out.append(writer.interchange(isa, None, groups, control, moment, five010=five010))
    return out


def _envelope_problem(interchange: Interchange) -> str:
    """The TA1 note code of an invalid ISA value or of a GS06 no 997/999 could name ("" if none).

    The same checks ``parse`` makes (``check_isa``, ``check_gs``), so that an interchange the
    TA1 refuses is never processed, and every 997/999 written has a valid AK102.
    """
    try:
        check_isa(interchange.isa)
        for group in interchange.groups:
            check_gs(group)
    except ParseError as exc:
        return exc.code.partition(":")[2]
    return ""


class _Writer:
    """Serializes acknowledgement segments with the inbound interchange's delimiters."""

    def __init__(self, interchange: Interchange) -> None:
        self.d = interchange.delimiters
        self.end = self.d.segment + interchange.line_break

    def seg(self, *elements: str) -> str:
        values = list(elements)
        while len(values) > 1 and values[-1] == "":
            values.pop()  # no trailing empty elements
        return self.d.element.join(values) + self.end

    def repetition(self) -> str:
        if self.d.repetition:
            return self.d.repetition
        used = {self.d.element, self.d.component, self.d.segment}
        return next((c for c in _REPETITION_CANDIDATES if c not in used), "U")

    def interchange(
        self,
        isa: list[str],
        ta1: tuple[str, str] | None,
        groups: list[str],
        number: int,
        moment: dt.datetime,
        *,
        five010: bool,
    ) -> str:
        control = f"{number % 10**9:09d}"
        header = [
            "ISA",
            "00",
            " " * 10,
            "00",
            " " * 10,
            _pad(isa, 7, 2),
            _pad(isa, 8, 15),
            _pad(isa, 5, 2),
            _pad(isa, 6, 15),
            moment.strftime("%y%m%d"),
            moment.strftime("%H%M"),
            self.repetition() if five010 else "U",
            "00501" if five010 else "00401",
            control,
            "0",
            _get_list(isa, 15)
            if _get_list(isa, 15) in ("I", "P", "T")
            else "P",  # a valid answer even to an invalid ISA15
            self.d.component,
        ]
        text = self.d.element.join(header) + self.end
        if ta1 is not None:
            text += self.seg("TA1", *_ta1_reference(isa, moment), *ta1)
        text += "".join(groups)
        return text + self.seg("IEA", str(len(groups)), control)

    def group(self, result: GroupResult, control_numbers: Callable[[], int], moment: dt.datetime, five010: bool) -> str:
        gs = result.group.gs
        control = str(control_numbers() % 10**9)
        body = self.ack_set(result, five010)
        gs_segment = self.seg(
            "GS",
            "FA",
            _get(gs, 3),
            _get(gs, 2),
            moment.strftime("%Y%m%d"),
            moment.strftime("%H%M"),
            control,
            "X",
            VERSION_999 if five010 else VERSION_997,
        )
        return gs_segment + body + self.seg("GE", "1", control)

    def ack_set(self, result: GroupResult, five010: bool) -> str:
        gs = result.group.gs
        segments = [
            ["ST", "999", "0001", VERSION_999] if five010 else ["ST", "997", "0001"],
            ["AK1", _get(gs, 1), _get(gs, 6), _get(gs, 8)] if five010 else ["AK1", _get(gs, 1), _get(gs, 6)],
        ]
        for t in result.transactions:
            segments.append(["AK2", t.st01, t.st02, t.st03] if five010 else ["AK2", t.st01, t.st02])
            for error in t.errors:
                segments.append(
                    [
                        "IK3" if five010 else "AK3",
                        self.segment_id(error.segment_id),
                        str(error.position),
                        error.loop_id,
                        error.code,
                    ]
                )
                context = business_unit(t.segments, error) if five010 else None
                if context is not None:  # 999 CTX: which line, claim or HL level the error sits in
                    segments.append(["CTX", self.d.component.join(context)])
                for element in error.elements:
                    where = [str(element.position)]
                    if element.component or element.repeat:
                        where.append(str(element.component) if element.component else "")
                    if element.repeat and five010:
                        where.append(str(element.repeat))
                    position = self.d.component.join(where).rstrip(self.d.component)
                    copy = self.copy(element.bad_value)
                    segments.append(["IK4" if five010 else "AK4", position, "", element.code, copy])
            trailer = "IK5" if five010 else "AK5"
            segments.append([trailer, "A"] if t.accepted else [trailer, "R", *t.codes[:5]])
        included = _get(result.group.ge, 1) if result.group.ge is not None else ""
        received = len(result.transactions)
        accepted = sum(t.accepted for t in result.transactions)
        segments.append(
            [
                "AK9",
                result.status,
                included if included.isdigit() else str(received),
                str(received),
                str(accepted),
                *result.codes[:5],
            ]
        )
        segments.append(["SE", str(len(segments) + 1), "0001"])
        return "".join(self.seg(*s) for s in segments)

    def segment_id(self, sid: str) -> str:
        """AK301/IK301: the segment id as received, or (an invalid id that cannot be carried
        back, e.g. holding a line break) its letters and digits, upper-cased; ``UNK`` if none."""
        if valid_id(sid) or (2 <= len(sid) <= 3 and self.copy(sid) == sid and " " not in sid):
            return sid
        cleaned = "".join(c for c in sid if c.isascii() and c.isalnum()).upper()[:3]
        return cleaned if len(cleaned) >= 2 else "UNK"

    def copy(self, value: str) -> str:
        """The copy of a bad data element for AK404/IK404, left out when it cannot be carried."""
        separators = {self.d.element, self.d.component, self.d.segment, self.d.repetition or self.d.element}
        if not value or any(c in value for c in separators) or any(ord(c) < 32 for c in value):
            return ""
        return value[:99]


def _reject_unreadable(damaged: Damaged, control_numbers: Callable[[], int], moment: dt.datetime) -> str | None:
    """A TA1 rejecting an interchange that does not tokenize, when its ISA can still be read."""
    error = damaged.error
    kind, _, number = error.code.partition(":")
    if kind == "TA1" and len(number) == 3:
        code = number
    elif error.position.startswith("after segment"):
        code = "023"  # the payload ends inside the interchange: improper (premature) end-of-file
    else:
        code = "024"
    return _reject_text(damaged.text, code, control_numbers, moment)


def reject_interchange(
    raw: bytes, code: str, control_numbers: Callable[[], int] = next_control_number, moment: dt.datetime | None = None
) -> bytes | None:
    """A TA1 rejecting the interchange of ``raw`` with note code ``code`` (025: duplicate
    interchange control number), when its ISA can be read; None otherwise."""
    text, encoding = decode(raw)
    answer = _reject_text(text, code, control_numbers, moment or _utcnow())
    return answer.encode(encoding, errors="replace") if answer is not None else None


def _reject_text(text: str, code: str, control_numbers: Callable[[], int], moment: dt.datetime) -> str | None:
    """The TA1 interchange rejecting the interchange whose ISA starts ``text``; None without one."""
    try:
        delims, end, _ = read_delimiters(text, 0)
    except ParseError:
        return None  # no readable ISA: there is no envelope to answer to
    isa = isa_elements(text[:end], delims)
    if len(isa) != ISA_ELEMENTS + 1:
        return None
    line_break = "\r\n" if text.startswith("\r\n", end) else "\n" if text.startswith("\n", end) else ""
    fake = Interchange(delims, Segment(isa, 1), text[:end], line_break)
    return _Writer(fake).interchange(isa, ("R", code), [], control_numbers(), moment, five010=_isa_5010(isa))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _get(segment: object, index: int) -> str:
    elements: list[str] = getattr(segment, "elements", [])
    return elements[index].strip() if index < len(elements) else ""


def _get_list(elements: list[str], index: int) -> str:
    return elements[index].strip() if index < len(elements) else ""


def _num(elements: list[str], index: int) -> str:
    """A numeric envelope value without padding or leading zeros (for comparisons)."""
    value = _get_list(elements, index)
    return str(int(value)) if value.isdigit() else value


def _ta1_reference(isa: list[str], moment: dt.datetime) -> tuple[str, str, str]:
    """TA101..TA103: the inbound ISA13, ISA09 and ISA10, cleaned so the TA1 stays valid X12.

    Control characters (an 80-column wrap, NUL padding) are dropped; a value that is still not
    a 9-digit control number, a YYMMDD date or an HHMM time is replaced by what the answer
    uses itself (zeros for the control number, the answer's own date and time), because a
    TA1 that does not parse helps nobody and the partner finds its interchange by ISA13.
    """
    control, date, time = (_clean(_get_list(isa, i)) for i in (13, 9, 10))
    control = control.zfill(9) if control.isdigit() and len(control) <= 9 else "000000000"
    if not (len(date) == 6 and date.isdigit() and _is_yymmdd(date)):
        date = moment.strftime("%y%m%d")
    if not (len(time) == 4 and time.isdigit() and int(time[:2]) < 24 and int(time[2:]) < 60):
        time = moment.strftime("%H%M")
    return control, date, time


def _clean(value: str) -> str:
    return "".join(c for c in value if ord(c) >= 32 and c != "\x7f").strip()


def _is_yymmdd(value: str) -> bool:
    try:
        dt.date(2000 + int(value[:2]), int(value[2:4]), int(value[4:]))
    except ValueError:
        return False
    return True


def _isa_5010(isa: list[str]) -> bool:
    """ISA12 00501 or later, compared as a number (``501`` written without its zeros too)."""
    value = _get_list(isa, 12)
    return value.isdigit() and int(value) >= 501


def _pad(elements: list[str], index: int, width: int) -> str:
    return _clean(_get_list(elements, index)).ljust(width)
