"""Serialize X12: segments with a partner's delimiters, and ISA/GS/ST..SE/GE/IEA envelopes.

The writer is the inverse of the tokenizer: it takes segments as lists of element texts
(``["PO1", "1", "10", "EA"]``), checks that no value holds a delimiter, and wraps
transaction sets in envelopes whose counts and control numbers always agree:

- ``SE01`` counts the segments from ST to SE inclusive, ``SE02`` repeats ``ST02``;
- ``GE01`` counts the transaction sets, ``GE02`` repeats ``GS06``;
- ``IEA01`` counts the groups, ``IEA02`` repeats ``ISA13``;
- the ISA is fixed width (106 characters with its terminator): ids padded to 15, control
  number zero-padded to 9, ``ISA11`` the repetition separator from 5010 on, ``U`` before.

Values of type ``FreeText`` (names, descriptions) have delimiter characters replaced by a
space; any other value holding a delimiter raises ``WriteError`` naming the segment and
element (never the value, which may hold PHI).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from engine.datatypes.x12.tokenizer import ISA_WIDTH, Delimiters

__all__ = [
    "FUNCTIONAL_IDS",
    "FreeText",
    "GroupSpec",
    "InterchangeSpec",
    "TransactionSet",
    "WriteError",
    "build_interchange",
    "isa_segment",
    "serialize",
]

# GS01 functional identifier code (element 479) per transaction set.
FUNCTIONAL_IDS: dict[str, str] = {
    "810": "IN",
    "850": "PO",
    "855": "PR",
    "856": "SH",
    "860": "PC",
    "997": "FA",
    "999": "FA",
}

LINE_BREAKS: dict[str, str] = {"none": "", "lf": "\n", "crlf": "\r\n"}


class WriteError(ValueError):
    """A segment cannot be written: a value holds a delimiter or an envelope value is invalid."""


class FreeText(str):
    """A free-text value (name, description): delimiter characters become spaces on output."""

    __slots__ = ()


@dataclass(frozen=True)
class TransactionSet:
    """One transaction set before enveloping: its id (``850``) and body segments (no ST/SE)."""

    code: str
    segments: list[list[str]]
    implementation: str = ""  # ST03 (5010 implementation convention reference), usually empty


@dataclass(frozen=True)
class GroupSpec:
    """GS values: application sender/receiver codes, control number GS06 and version GS08."""

    sender: str
    receiver: str
    control: int
    version: str  # "004010", "005010" (GS08; suffixes such as "005010X222A1" allowed)
    transactions: list[tuple[int, TransactionSet]] = field(default_factory=list)  # (ST02, set)


@dataclass(frozen=True)
class InterchangeSpec:
    """ISA values. Ids are unpadded: the writer pads them to the fixed width."""

    sender_qualifier: str
    sender_id: str
    receiver_qualifier: str
    receiver_id: str
    control: int
    version: str  # ISA12: "00401" or "00501"
    usage: str = "P"  # ISA15: P production, T test
    ack_requested: bool = False  # ISA14: ask the receiver for a TA1
    authorization: tuple[str, str] = ("00", "")  # ISA01/ISA02
    security: tuple[str, str] = ("00", "")  # ISA03/ISA04


def _clean(value: str, delims: Delimiters, where: str) -> str:
    specials = [delims.element, delims.component, delims.segment]
    if delims.repetition:
        specials.append(delims.repetition)
    if isinstance(value, FreeText):
        text = str(value)
        for char in specials:
            text = text.replace(char, " ")
        return " ".join(text.replace("\r", " ").replace("\n", " ").split())
    for char in specials:
        if char in value:
            raise WriteError(f"{where} holds a delimiter character; it cannot be written with these delimiters")
    if "\r" in value or "\n" in value:
        raise WriteError(f"{where} holds a line break")
    return value


def serialize(segments: list[list[str]], delims: Delimiters, line_break: str = "", *, first: int = 1) -> str:
    """Join segments with the delimiters; trailing empty elements are dropped (X12 rule).

    ``first`` is the number of the first segment, for error positions.

    >>> serialize([["BEG", "00", "SA", "PO1", "", "20240105"], ["REF", "DP", "", ""]], Delimiters("*", ">", "~"))
    'BEG*00*SA*PO1**20240105~REF*DP~'
    """
    out = []
    for number, segment in enumerate(segments, start=first):
        if not segment or not segment[0]:
            raise WriteError(f"segment {number} has no id")
        sid = segment[0]
        values = [sid] + [
            _clean(value, delims, f"segment {number} ({sid}), element {index:02d}")
            for index, value in enumerate(segment[1:], start=1)
        ]
        while len(values) > 1 and values[-1] == "":
            values.pop()
        out.append(delims.element.join(values) + delims.segment + line_break)
    return "".join(out)


def _fixed(value: str, width: int, name: str) -> str:
    if len(value) > width:
        raise WriteError(f"{name} is longer than {width} characters")
    return value.ljust(width)


def isa_segment(spec: InterchangeSpec, delims: Delimiters, when: dt.datetime) -> list[str]:
    """The 17 ISA texts (id plus ISA01..ISA16), each at its fixed width.

    ISA11 is the repetition separator for version 00501 and later, ``U`` before.
    """
    if not 0 < spec.control <= 999_999_999:
        raise WriteError("ISA13 (interchange control number) must be between 1 and 999999999")
    if spec.usage not in ("P", "T", "I"):
        raise WriteError("ISA15 (usage indicator) must be P, T or I")
    if len(spec.version) != 5 or not spec.version.isdigit():
        raise WriteError("ISA12 (version) must be 5 digits, e.g. 00401 or 00501")
    if spec.version >= "00402":
        if not delims.repetition:
            raise WriteError(f"version {spec.version} needs a repetition separator (ISA11)")
        isa11 = delims.repetition
    else:
        isa11 = "U"
    elements = [
        "ISA",
        _fixed(spec.authorization[0], 2, "ISA01"),
        _fixed(spec.authorization[1], 10, "ISA02"),
        _fixed(spec.security[0], 2, "ISA03"),
        _fixed(spec.security[1], 10, "ISA04"),
        _fixed(spec.sender_qualifier, 2, "ISA05"),
        _fixed(spec.sender_id, 15, "ISA06"),
        _fixed(spec.receiver_qualifier, 2, "ISA07"),
        _fixed(spec.receiver_id, 15, "ISA08"),
        when.strftime("%y%m%d"),
        when.strftime("%H%M"),
        isa11,
        spec.version,
        f"{spec.control:09d}",
        "1" if spec.ack_requested else "0",
        spec.usage,
        delims.component,
    ]
    for index, value in enumerate(elements[1:16], start=1):
        if index != 11:  # ISA11 is the repetition separator itself from 5010 on
            _clean(value, delims, f"ISA{index:02d}")
    return elements


def _check_delimiters(delims: Delimiters) -> None:
    chars = [delims.element, delims.component, delims.segment] + ([delims.repetition] if delims.repetition else [])
    if any(len(c) != 1 for c in chars):
        raise WriteError("every delimiter must be a single character")
    if len(set(chars)) != len(chars):
        raise WriteError("the delimiters must be distinct")
    if any(c.isalnum() or c == " " for c in chars):
        raise WriteError("delimiters must not be letters, digits or spaces")


def build_interchange(
    interchange: InterchangeSpec,
    groups: list[GroupSpec],
    delims: Delimiters,
    *,
    when: dt.datetime,
    line_break: str = "",
) -> bytes:
    """A complete interchange (ISA, GS, ST..SE, GE, IEA) as UTF-8 bytes, counts filled in.

    ``when`` stamps ISA09/ISA10 and GS04/GS05; pass the same instant for a byte-identical
    retry.
    """
    _check_delimiters(delims)
    if not groups:
        raise WriteError("an interchange needs at least one functional group")
    isa = isa_segment(interchange, delims, when)
    isa_text = delims.element.join(isa) + delims.segment
    if len(isa_text) != ISA_WIDTH:  # pragma: no cover - guaranteed by the fixed widths
        raise WriteError(f"the ISA is {len(isa_text)} characters wide, expected {ISA_WIDTH}")
    body: list[list[str]] = []
    for group in groups:
        if not group.transactions:
            raise WriteError(f"functional group {group.control} has no transaction sets")
        if not 0 < group.control <= 999_999_999:
            raise WriteError("GS06 (group control number) must be between 1 and 999999999")
        codes = {ts.code for _, ts in group.transactions}
        functional = {FUNCTIONAL_IDS.get(code, "") for code in codes}
        if len(functional) != 1 or "" in functional:
            raise WriteError("a functional group holds transaction sets of one known functional id (GS01)")
        for name, value, low, high in (("GS02", group.sender, 2, 15), ("GS03", group.receiver, 2, 15)):
            if not low <= len(value) <= high:
                raise WriteError(f"{name} must be {low} to {high} characters")
        body.append(
            [
                "GS",
                functional.pop(),
                group.sender,
                group.receiver,
                when.strftime("%Y%m%d"),
                when.strftime("%H%M"),
                str(group.control),
                "X",
                group.version,
            ]
        )
        for st02, ts in group.transactions:
            if not 1 <= st02 <= 999_999_999:
                raise WriteError("ST02 (transaction set control number) must be between 1 and 999999999")
            control = f"{st02:04d}"
            st = ["ST", ts.code, control] + ([ts.implementation] if ts.implementation else [])
            segments = [st, *ts.segments]
            body.extend(segments)
            body.append(["SE", str(len(segments) + 1), control])
        body.append(["GE", str(len(group.transactions)), str(group.control)])
    body.append(["IEA", str(len(groups)), f"{interchange.control:09d}"])
    text = isa_text + line_break + serialize(body, delims, line_break, first=2)
    return text.encode("utf-8")
