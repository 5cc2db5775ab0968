"""X12 tokenizer: delimiters from the ISA, segments, and the ISA/GS/ST envelope checks.

Works on text: the bytes are decoded as UTF-8 (Latin-1 when that fails) because some
senders use a multi-byte character as segment terminator. Errors name a segment by its
1-based number in the payload and its id, never its content. ``ParseError.code`` carries
the acknowledgement code the later 997/999/TA1 generator will need: ``TA1:nnn`` for
interchange problems, ``AK9:n`` for functional groups, ``AK5:n`` for transaction sets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from engine.core.errors import ParseError

BOM = "\ufeff"
ISA_WIDTH = 106  # fixed-width ISA, terminator included
ISA_ELEMENTS = 16
# Line breaks and blanks that senders put between segments; never part of a segment id.
_GAP = " \t\r\n"
# What some systems put after the last IEA: DOS end-of-file (Ctrl-Z) and NUL padding of a
# fixed-size record or block. Never data; dropped after the last IEA and between interchanges.
_FILE_PADDING = "\x1a\x00"
_ISA_START = re.compile(r"ISA(?=[^A-Za-z0-9\s])")


@dataclass(frozen=True)
class Delimiters:
    """The separators one interchange declares in its ISA."""

    element: str
    component: str
    segment: str
    repetition: str | None = None  # ISA11 from 5010 (00501) on; 4010 has the "U" standards id there


@dataclass
class Segment:
    """One segment: ``elements[0]`` is the id, ``elements[n]`` is element n (as in PO107)."""

    elements: list[str]
    number: int  # 1-based position in the payload, for error messages
    loop_end: int = 0  # a schema loop's trigger: number of the loop's last segment (0: unknown)

    @property
    def id(self) -> str:
        return self.elements[0]

    def where(self) -> str:
        # An invalid id may be data (a line broken inside a segment): never quoted.
        return f"segment {self.number} ({self.id})" if valid_id(self.id) else f"segment {self.number}"


@dataclass
class Transaction:
    """ST .. SE, inclusive."""

    segments: list[Segment]


@dataclass
class Group:
    """GS, its transactions, GE."""

    gs: Segment
    transactions: list[Transaction] = field(default_factory=list)
    ge: Segment | None = None


@dataclass
class Interchange:
    """ISA, its groups, IEA, with the delimiters and the exact ISA text (for re-wrapping)."""

    delimiters: Delimiters
    isa: Segment
    isa_text: str
    line_break: str  # what followed the ISA terminator ("", "\n" or "\r\n"), reused on output
    groups: list[Group] = field(default_factory=list)
    iea: Segment | None = None
    warnings: list[str] = field(default_factory=list)
    ta1: list[Segment] = field(default_factory=list)  # interchange acknowledgements, before the first GS


@dataclass
class Damaged:
    """An interchange that does not tokenize: its text (from its ISA to the next one) and why.

    Kept so that one broken interchange in a file does not take the others with it: each
    interchange is answered (and split) on its own.
    """

    text: str
    error: ParseError


def decode(raw: bytes) -> tuple[str, str]:
    """The text of ``raw`` without BOM, leading blanks and trailing file padding, and the encoding used."""
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = raw.decode("latin-1"), "latin-1"
    text = text.lstrip(BOM).lstrip(_GAP).rstrip(_FILE_PADDING + _GAP)
    if "\n" in text or "\r" in text:
        text = _unwrap(text)
    return text, encoding


def _unwrap(text: str) -> str:
    """A file wrapped at a fixed width (80 columns, as VANs and mainframes deliver them)
    without its line breaks; any other text unchanged.

    Wrapped means: the segment terminator is not itself a line break, and some line break
    stands inside a segment (not right after a terminator). Such a break is never data (X12
    data holds no control characters), so every line break goes; a file with one segment per
    line keeps its breaks, which the tokenizer skips between segments anyway.
    """
    compact = text.replace("\r", "").replace("\n", "")
    try:
        terminator = read_delimiters(compact, 0)[0].segment
    except ParseError:
        return text
    if terminator in "\r\n" or terminator.isalnum() or terminator.isspace():
        return text
    if re.search(f"[^{re.escape(terminator)}\r\n][\r\n]", text) is None:
        return text
    return compact


def read_delimiters(text: str, start: int) -> tuple[Delimiters, int, list[str]]:
    """Delimiters of the ISA at ``start``, the index just past its terminator, and warnings.

    The fixed-width positions are tried first; an ISA whose fields are padded wrongly is
    accepted by counting element separators instead, with a warning.
    """
    where = "segment 1 (ISA)" if start == 0 else "interchange header (ISA)"
    if not text.startswith("ISA", start) or len(text) < start + 4:
        raise ParseError("the interchange does not start with an ISA segment", where, "TA1:024")
    element = text[start + 3]
    if element.isalnum() or element in _GAP:
        raise ParseError("the ISA element separator must be a punctuation character", where, "TA1:024")
    warnings: list[str] = []
    fixed = start + ISA_WIDTH - 3  # index of the element separator before ISA16
    if len(text) > fixed + 2 and text[fixed] == element and text.count(element, start, fixed + 1) == ISA_ELEMENTS:
        sixteenth = fixed
    else:
        sixteenth = _nth(text, element, start, ISA_ELEMENTS)
        if sixteenth < 0 or len(text) <= sixteenth + 2:
            raise ParseError(f"the ISA segment must have {ISA_ELEMENTS} elements", where, "TA1:024")
        warnings.append(f"the ISA segment is not fixed width ({sixteenth + 3 - start} characters, expected 106)")
    component, terminator = text[sixteenth + 1], text[sixteenth + 2]
    if terminator.isalnum() or len({element, component, terminator}) < 3:
        raise ParseError("the ISA delimiters are not distinct punctuation characters", where, "TA1:004")
    isa_elements = text[start:sixteenth].split(element)  # ISA, ISA01 .. ISA15
    repetition = isa_elements[11] if len(isa_elements[11]) == 1 and not isa_elements[11].isalnum() else None
    if repetition in (element, component, terminator, " "):
        repetition = None
    return Delimiters(element, component, terminator, repetition), sixteenth + 3, warnings


def isa_elements(isa_text: str, delims: Delimiters) -> list[str]:
    """ISA, ISA01 .. ISA16 of an ISA's text (terminator included), without line breaks.

    Files wrapped at 80 columns break lines inside the ISA; a line break is never part of an
    ISA value, so it is dropped instead of ending up in a sender id, a date or ISA13 (and
    from there in a TA1). ISA16 is left alone: it is the component separator itself.
    """
    elements = isa_text[:-1].split(delims.element)
    return [e.replace("\r", "").replace("\n", "") for e in elements[:-1]] + elements[-1:]


def _nth(text: str, char: str, start: int, n: int) -> int:
    """Index of the n-th ``char`` from ``start`` (-1 if there are fewer), bounded to an ISA's reach."""
    index = start
    limit = start + 2 * ISA_WIDTH  # a real ISA is never this long; stops runaway scans on garbage
    for _ in range(n):
        index = text.find(char, index + 1, limit)
        if index < 0:
            return -1
    return index


def tokenize(raw: bytes) -> tuple[list[Interchange], str]:
    """Every interchange of ``raw`` with its segments nested, and the encoding used.

    Only the structure is checked here (ISA first, every ST closed by SE, every GS by GE,
    every ISA by IEA, nothing outside an envelope); counts and control numbers are checked
    by ``check``. ``ParseError`` for the first interchange that does not tokenize.
    """
    found, encoding = scan(raw)
    interchanges: list[Interchange] = []
    for item in found:
        if isinstance(item, Damaged):
            raise item.error
        interchanges.append(item)
    return interchanges, encoding


def scan(raw: bytes) -> tuple[list[Interchange | Damaged], str]:
    """Like ``tokenize``, but an interchange that does not tokenize is returned as ``Damaged``
    and reading goes on at the next ISA. ``ParseError`` only for an empty payload."""
    text, encoding = decode(raw)
    found: list[Interchange | Damaged] = []
    pos, number = 0, 0
    while True:
        while pos < len(text) and (text[pos] in _GAP or text[pos] in _FILE_PADDING):  # files concatenated
            pos += 1
        if pos >= len(text):
            break
        try:
            interchange, pos, number = _read_interchange(text, pos, number)
        except ParseError as exc:
            end = _next_isa(text, pos)
            found.append(Damaged(text[pos:end], exc))
            pos = end
            continue
        found.append(interchange)
    if not found:
        raise ParseError("the payload is empty", "", "TA1:023")
    return found, encoding


def _next_isa(text: str, start: int) -> int:
    """Where the interchange after the damaged one at ``start`` begins (len(text) if none).

    An ISA counts when it starts a segment: only blanks between it and the segment terminator
    of the damaged interchange (any punctuation when even its ISA is unreadable).
    """
    try:
        terminator = read_delimiters(text, start)[0].segment
    except ParseError:
        terminator = ""
    for match in _ISA_START.finditer(text, start + 3):
        before = text[: match.start()].rstrip(_GAP)[-1:]
        if before and (before == terminator or (not terminator and not before.isalnum())):
            return match.start()
    return len(text)


def _read_interchange(text: str, start: int, number: int) -> tuple[Interchange, int, int]:
    delims, pos, warnings = read_delimiters(text, start)
    isa_text = text[start:pos]
    line_break = "\r\n" if text.startswith("\r\n", pos) else "\n" if text.startswith("\n", pos) else ""
    number += 1
    isa = Segment(isa_elements(isa_text, delims), number)
    interchange = Interchange(delims, isa, isa_text, line_break, warnings=warnings)
    group: Group | None = None
    transaction: Transaction | None = None
    while True:
        end = text.find(delims.segment, pos)
        body = text[pos : len(text) if end < 0 else end].lstrip(_GAP)
        if not body:
            if end < 0:
                break
            pos = end + 1
            continue
        number += 1
        segment = Segment(body.split(delims.element), number)
        pos = len(text) if end < 0 else end + 1
        sid = segment.id
        if not valid_id(sid):
            if transaction is None:  # in the envelope: the interchange cannot be read on
                raise ParseError(_BAD_ID, segment.where(), "TA1:024")
            transaction.segments.append(segment)  # only its transaction set is rejected (AK3 code 1)
            continue
        if sid == "ISA":
            raise ParseError("an interchange starts before the previous one ends with IEA", segment.where(), "TA1:023")
        if sid == "IEA":
            if group is not None:
                raise ParseError("IEA before the group's GE", segment.where(), "AK9:3")
            interchange.iea = segment
            return interchange, pos, number
        if sid == "GS":
            if group is not None:
                raise ParseError("GS before the previous group's GE", segment.where(), "AK9:3")
            group = Group(segment)
            interchange.groups.append(group)
        elif sid == "GE":
            if group is None or transaction is not None:
                code = "AK5:2" if transaction is not None else "TA1:024"
                raise ParseError("GE without a matching GS or before the transaction's SE", segment.where(), code)
            group.ge = segment
            group = None
        elif sid == "ST":
            if group is None or transaction is not None:
                code = "AK5:2" if transaction is not None else "TA1:024"
                raise ParseError("ST outside a functional group or before the previous SE", segment.where(), code)
            transaction = Transaction([segment])
            group.transactions.append(transaction)
        elif sid == "TA1" and group is None and not interchange.groups:
            interchange.ta1.append(segment)
        elif transaction is None:
            raise ParseError("segment outside a transaction set (ST..SE)", segment.where(), "TA1:024")
        else:
            transaction.segments.append(segment)
            if sid == "SE":
                transaction = None
    code = "AK5:2" if transaction is not None else "AK9:3" if group is not None else "TA1:023"
    raise ParseError("the interchange ends without its trailer (SE, GE or IEA)", f"after segment {number}", code)


_BAD_ID = "invalid segment id (expected 2 or 3 upper-case letters or digits)"


def valid_id(sid: str) -> bool:
    """A syntactically valid segment id: 2 or 3 upper-case letters or digits, a letter first."""
    return 2 <= len(sid) <= 3 and sid.isascii() and sid.isalnum() and sid[0].isalpha() and sid.isupper()


def check(interchanges: list[Interchange]) -> None:
    """Check counts and control numbers of every envelope; ``ParseError`` on the first problem."""
    for interchange in interchanges:
        check_interchange(interchange)


def check_interchange(interchange: Interchange, *, descend: bool = True, groups: bool = True) -> None:
    """The ISA values, every GS06, IEA01/IEA02 (the TA1 level), then (``groups``) every group
    and (``descend``) every transaction set."""
    isa, iea = interchange.isa, interchange.iea
    if len(isa.elements) != ISA_ELEMENTS + 1:
        raise ParseError(f"the ISA segment must have {ISA_ELEMENTS} elements", isa.where(), "TA1:024")
    check_isa(isa)
    for group in interchange.groups:
        check_gs(group)
    assert iea is not None  # tokenize never returns an interchange without its IEA
    _expect(iea, 1, str(len(interchange.groups)), "IEA01 does not match the number of functional groups", "TA1:021")
    _expect(iea, 2, isa.elements[13].strip(), "IEA02 does not match the interchange control number ISA13", "TA1:001")
    for group in interchange.groups if groups else ():
        check_group(group, descend=descend)


def check_isa(isa: Segment) -> None:
    """The ISA values a TA1 note code names (X12 I18): ``ParseError`` with ``TA1:nnn``.

    ISA13 numeric (018), ISA12 a known version (017), ISA09 a date YYMMDD (014), ISA10 a
    time HHMM (015), ISA14 0 or 1 (019), ISA15 I, P or T (020). ISA13 need not have nine
    digits: unpadded ISAs are accepted with a warning elsewhere.
    """
    for index, valid, reason, code in _ISA_CHECKS:
        if not valid(_element(isa, index)):
            raise ParseError(reason, f"{isa.where()}, element {index:02d}", f"TA1:{code}")


def _isa_version(value: str) -> bool:
    # 5 digits up to 00999 (versions so far: 00200 .. 00801). Lenient below: real senders write
    # e.g. 00040 for 00400, and the control segments have kept their layout across versions.
    return len(value) == 5 and value.isdigit() and 1 <= int(value) <= 999


def _yymmdd(value: str) -> bool:
    if len(value) != 6 or not value.isdigit():
        return False
    try:
        date(2000 + int(value[:2]), int(value[2:4]), int(value[4:]))
    except ValueError:
        return False
    return True


def _hhmm(value: str) -> bool:
    return len(value) == 4 and value.isdigit() and int(value[:2]) < 24 and int(value[2:]) < 60


_ISA_CHECKS = (
    (13, str.isdigit, "ISA13 (interchange control number) is not numeric", "018"),
    (12, _isa_version, "ISA12 (interchange control version) is not a known version", "017"),
    (9, _yymmdd, "ISA09 (interchange date) is not a valid date YYMMDD", "014"),
    (10, _hhmm, "ISA10 (interchange time) is not a valid time HHMM", "015"),
    (14, lambda v: v in ("0", "1"), "ISA14 (acknowledgment requested) is not 0 or 1", "019"),
    (15, lambda v: v in ("I", "P", "T"), "ISA15 (usage indicator) is not I, P or T", "020"),
)


def check_gs(group: Group) -> None:
    """GS06, which every answer to the group needs.

    Without a numeric GS06 no 997/999 can name the group (AK102 is mandatory and numeric):
    the interchange is refused with TA1 024 (invalid interchange content: invalid GS).
    """
    if not _element(group.gs, 6).isdigit():
        where = f"{group.gs.where()}, element 06"
        raise ParseError("GS06 (group control number) is missing or not numeric", where, "TA1:024")


def check_group(group: Group, *, descend: bool = True) -> None:
    """GS08, GE01/GE02, then (when ``descend``) every transaction set.

    An empty GS08 leaves the group's version unknown: the group is rejected (AK905 2).
    """
    if not _element(group.gs, 8):
        raise ParseError("GS08 (version) is missing", f"{group.gs.where()}, element 08", "AK9:2")
    ge = group.ge
    assert ge is not None
    _expect(ge, 1, str(len(group.transactions)), "GE01 does not match the number of transaction sets", "AK9:5")
    _expect(ge, 2, _element(group.gs, 6), "GE02 does not match the group control number GS06", "AK9:4")
    duplicates = duplicate_sets(group) if descend else set()
    for index, transaction in enumerate(group.transactions if descend else ()):
        check_transaction(transaction)
        if index in duplicates:
            st = transaction.segments[0]
            reason = "ST02 repeats the control number of an earlier transaction set in the group"
            raise ParseError(reason, f"{st.where()}, element 02", "AK5:23")


def duplicate_sets(group: Group) -> set[int]:
    """Indexes of the transaction sets whose ST02 an earlier set of the group already used.

    ST02 must be unique within its group (AK5/IK5 code 23); the first set with a number keeps
    it, every later one is the duplicate. Numbers compare as numbers (``1`` and ``0001``).
    """
    seen: set[str] = set()
    duplicates: set[int] = set()
    for index, transaction in enumerate(group.transactions):
        control = _control(_element(transaction.segments[0], 2))
        if control and control in seen:
            duplicates.add(index)
        seen.add(control)
    return duplicates


def _control(value: str) -> str:
    return str(int(value)) if value.isdigit() else value


def check_transaction(transaction: Transaction) -> None:
    """SE01 (segments from ST to SE inclusive) and SE02 = ST02."""
    st, se = transaction.segments[0], transaction.segments[-1]
    if not _element(st, 1):
        raise ParseError("ST01 (transaction set identifier) is missing", st.where(), "AK5:6")
    if not _element(st, 2):
        raise ParseError("ST02 (transaction set control number) is missing", st.where(), "AK5:7")
    _expect(se, 1, str(len(transaction.segments)), "SE01 does not match the number of segments from ST to SE", "AK5:4")
    _expect(se, 2, _element(st, 2), "SE02 does not match the transaction set control number ST02", "AK5:3")
    for segment in transaction.segments:
        if not valid_id(segment.id):  # kept by tokenize so that only this set is rejected
            raise ParseError(_BAD_ID, segment.where(), "AK5:5")


def _element(segment: Segment, index: int) -> str:
    return segment.elements[index].strip() if index < len(segment.elements) else ""


def _expect(segment: Segment, index: int, wanted: str, reason: str, code: str) -> None:
    value = _element(segment, index)
    # Counts compare as numbers (leading zeros are allowed), control numbers as text.
    same = int(value) == int(wanted) if value.isdigit() and wanted.isdigit() else value == wanted
    if not same:
        raise ParseError(reason, f"{segment.where()}, element {index:02d}", code)
