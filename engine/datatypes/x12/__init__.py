"""The ``x12`` data type: ANSI X12 interchanges (850, 855, 856, 810, 835, 837, 997, 999 ...).

Delimiters come from each ISA; envelopes (ISA/IEA, GS/GE, ST/SE counts and control
numbers) are checked at parse. ``split`` turns a file with several transaction sets into
one complete interchange per transaction set, so every message keeps its envelope context.
Transaction schemas, 997/999 acknowledgements and partners come in later increments.
"""

from __future__ import annotations

from pydantic import Field

from engine.core.channel import DataTypeConfig
from engine.core.contracts import Header, Outcome
from engine.core.errors import ParseError
from engine.core.spec import Example, datatype_spec
from engine.datatypes.x12.document import SYNTAX, X12Document, parse_path
from engine.datatypes.x12.tokenizer import Group, Interchange, Segment, Transaction, check, check_interchange, tokenize


class X12Config(DataTypeConfig):
    """Settings of the ``x12`` data type."""

    strict_isa_width: bool = Field(
        default=False,
        description="Reject an ISA segment that is not 106 characters wide instead of accepting it with a warning.",
    )


class X12DataType:
    """The ``x12`` data type (DataType protocol)."""

    content_type = "application/edi-x12"
    validates = False

    def __init__(self, config: X12Config | None = None) -> None:
        self.config = config or X12Config(type="x12")

    def split(self, raw: bytes) -> list[bytes]:
        """One complete interchange (ISA/GS/ST..SE/GE/IEA) per transaction set.

        Never raises: a payload that does not tokenize is returned whole, and so is an
        interchange whose group or interchange counts are wrong, so that ``parse`` rejects
        it as a unit instead of the error disappearing in re-wrapped counts.
        """
        try:
            interchanges, encoding = tokenize(raw)
        except ParseError:
            return [raw]
        if sum(len(g.transactions) for i in interchanges for g in i.groups) <= 1:
            return [raw]
        parts: list[bytes] = []
        for interchange in interchanges:
            try:
                check_interchange(interchange, descend=False)
            except ParseError:
                parts.append(_rebuild_whole(interchange).encode(encoding))
                continue
            for group in interchange.groups:
                for transaction in group.transactions:
                    parts.append(_wrap(interchange, group, transaction).encode(encoding))
        return parts

    def header(self, raw: bytes) -> Header:
        """ST02 as control id, ST01 as message type, sender|ISA13|GS06|ST02 as business key."""
        try:
            interchanges, _ = tokenize(raw)
        except ParseError:
            return Header()
        interchange = interchanges[0]
        group = interchange.groups[0] if interchange.groups else None
        st = group.transactions[0].segments[0] if group and group.transactions else None
        isa = interchange.isa
        control, kind = _element(st, 2), _element(st, 1)
        sender = _element(isa, 6)
        key = "|".join((sender, _element(isa, 13), _element(group.gs if group else None, 6), control))
        fields = {
            "ISA05": _element(isa, 5),
            "ISA06": sender,
            "ISA07": _element(isa, 7),
            "ISA08": _element(isa, 8),
            "ISA12": _element(isa, 12),
            "ISA15": _element(isa, 15),
        }
        if group is not None:
            fields.update({f"GS0{n}": _element(group.gs, n) for n in (1, 2, 3, 8)})
        return Header(control_id=control[:200], message_type=kind[:20], business_key=key[:400], fields=fields)

    def parse(self, raw: bytes) -> X12Document:
        """Tokenize and check every envelope; ``ParseError`` names the segment and the check."""
        interchanges, _ = tokenize(raw)
        check(interchanges)
        if self.config.strict_isa_width:
            for interchange in interchanges:
                if interchange.warnings:
                    reason = "the ISA segment is not fixed width (106 characters)"
                    raise ParseError(reason, interchange.isa.where(), "TA1:024")
        return X12Document.from_interchanges(interchanges)

    def validate(self, raw: bytes) -> list[str]:
        return []  # transaction schemas come with the next increment

    def check_path(self, path: str) -> object:
        return parse_path(path)

    def respond(self, raw: bytes, outcome: Outcome) -> bytes | None:
        return None  # 997/999 generation comes with the next increment


def _element(segment: Segment | None, index: int) -> str:
    if segment is None or index >= len(segment.elements):
        return ""
    return segment.elements[index].strip()


def _lines(interchange: Interchange, segments: list[list[str]]) -> str:
    delims = interchange.delimiters
    end = delims.segment + interchange.line_break
    return "".join(delims.element.join(elements) + end for elements in segments)


def _wrap(interchange: Interchange, group: Group, transaction: Transaction) -> str:
    """One transaction set in a copy of its ISA and GS, with GE01 and IEA01 set to 1."""
    gs06 = group.gs.elements[6] if len(group.gs.elements) > 6 else ""
    body = [group.gs.elements, *(s.elements for s in transaction.segments), ["GE", "1", gs06]]
    body.append(["IEA", "1", interchange.isa.elements[13]])
    return interchange.isa_text + interchange.line_break + _lines(interchange, body)


def _rebuild_whole(interchange: Interchange) -> str:
    body: list[list[str]] = []
    for group in interchange.groups:
        body.append(group.gs.elements)
        body.extend(s.elements for t in group.transactions for s in t.segments)
        if group.ge is not None:
            body.append(group.ge.elements)
    if interchange.iea is not None:
        body.append(interchange.iea.elements)
    return interchange.isa_text + interchange.line_break + _lines(interchange, body)


X12 = datatype_spec(
    name="x12",
    summary="ANSI X12 EDI interchanges: delimiters from the ISA, envelope checks, one message per transaction set.",
    config=X12Config,
    factory="engine.datatypes.x12:X12DataType",
    capabilities=frozenset({"batches"}),
    path_syntax=SYNTAX,
    examples=(
        Example("Defaults: accept a non-fixed-width ISA with a warning", "type: x12"),
        Example("Partners who must send a fixed-width ISA", "type: x12\nstrict_isa_width: true"),
    ),
)
