"""The ``x12`` data type: ANSI X12 interchanges (850, 855, 856, 810, 835, 837, 997, 999 ...).

Delimiters come from each ISA; envelopes (ISA/IEA, GS/GE, ST/SE counts and control
numbers) are checked at parse. ``split`` turns a file with several transaction sets into
one complete interchange per transaction set, so every message keeps its envelope context.
With ``schema_validation`` (the default) every transaction set that has a schema
(``schemas/*.yaml``: 850, 855, 856, 810, 997, 999; segment ids only for 835 and 837) is
validated at parse: a failing one raises ``ParseError`` naming the segment and element, so
the runtime stores it as ERROR, answers negatively and it can be reprocessed. ``respond``
builds 997/999 (and TA1) acknowledgements for the whole inbound payload (see ``acks``).
``hipaa_validation: pyx12`` adds pyx12's 5010 TR3 validation of 835/837 off the hot path.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from engine.core.channel import DataTypeConfig
from engine.core.contracts import Header, Outcome
from engine.core.errors import ParseError
from engine.core.spec import Example, datatype_spec
from engine.datatypes.x12.acks import acknowledge, next_control_number, reject_interchange
from engine.datatypes.x12.document import SYNTAX, X12Document, parse_path
from engine.datatypes.x12.tokenizer import (
    Damaged,
    Group,
    Interchange,
    Segment,
    Transaction,
    check,
    check_group,
    check_interchange,
    decode,
    duplicate_sets,
    scan,
    tokenize,
)
from engine.datatypes.x12.validate import SegmentError, is_5010, validate_transaction, version_of

HIPAA_SETS = frozenset({"835", "837"})


class X12Config(DataTypeConfig):
    """Settings of the ``x12`` data type."""

    strict_isa_width: bool = Field(
        default=False,
        description="Reject an ISA segment that is not 106 characters wide instead of accepting it with a warning.",
    )
    schema_validation: bool = Field(
        default=True,
        description=(
            "Validate transaction sets that have a Junction schema (850, 855, 856, 810, 997, 999; segment ids "
            "for 835/837) at parse; a failing one is stored as ERROR and answered with a rejecting 997/999."
        ),
    )
    acknowledgement: Literal["auto", "997", "999", "off"] = Field(
        default="auto",
        description="What respond() sends back: auto (997 before 5010, 999 from 5010), 997 or 999 always, or off.",
    )
    hipaa_validation: Literal["pyx12", "off"] = Field(
        default="off",
        description="Also validate 835/837 against pyx12's HIPAA maps, off the hot path (slow: ~5 s per MB).",
    )

    @field_validator("acknowledgement", mode="before")
    @classmethod
    def _number_as_text(cls, value: object) -> object:
        """``acknowledgement: 997`` (a YAML number) means the text "997"."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class X12DataType:
    """The ``x12`` data type (DataType protocol)."""

    content_type = "application/edi-x12"
    validates = False
    responds_to_whole = True  # respond() answers a whole multi-transaction payload at once

    def __init__(self, config: X12Config | None = None) -> None:
        self.config = config or X12Config(type="x12")
        self.validates = self.config.hipaa_validation == "pyx12"
        # ISA13/GS06 of generated acknowledgements; the partner registry may inject its own.
        self.control_numbers: Callable[[], int] = next_control_number
        # Set by the runtime when partners are configured: the allocator for acknowledgements to
        # the sender with this ISA05/ISA06 (its partner's counter), or None for unknown senders.
        self.control_numbers_for: Callable[[str, str], Callable[[], int] | None] | None = None
        self.clock: Callable[[], dt.datetime] | None = None  # None: the current UTC time

    def split(self, raw: bytes) -> list[bytes]:
        """One complete interchange (ISA/GS/ST..SE/GE/IEA) per transaction set.

        Never raises: a payload that does not tokenize is returned whole (in a file of several
        interchanges, the interchange that does not tokenize is a part of its own), and so is an
        interchange with an interchange-level (TA1) problem, and a group whose counts or control
        numbers are wrong is a part of its own (its GE as received), so that ``parse`` rejects
        them as a unit instead of the error disappearing in re-wrapped counts, while the other
        groups are processed, as their 997/999 says. A set whose ST02
        repeats an earlier one of its group travels with that earlier set, so that ``parse``
        refuses it (AK5 23) as the 997/999 does, instead of it passing alone.
        """
        try:
            found, encoding = scan(raw)
        except ParseError:
            return [raw]
        interchanges = [i for i in found if isinstance(i, Interchange)]
        if len(found) == 1 and not interchanges:
            return [raw]
        if len(found) == len(interchanges) and sum(len(g.transactions) for i in interchanges for g in i.groups) <= 1:
            return [raw]
        parts: list[bytes] = []
        for interchange in found:
            if isinstance(interchange, Damaged):  # refused by parse on its own; the others go on
                parts.append(interchange.text.encode(encoding))
                continue
            try:
                check_interchange(interchange, groups=False)
            except ParseError:
                parts.append(_rebuild_whole(interchange).encode(encoding))
                continue
            for group in interchange.groups:
                try:
                    check_group(group, descend=False)
                except ParseError:  # refused as a unit; the other groups are processed, as the 997 says
                    parts.append(_wrap_group(interchange, group).encode(encoding))
                    continue
                duplicates = duplicate_sets(group)
                for index, transaction in enumerate(group.transactions):
                    sets = [transaction]
                    if index in duplicates:  # with the set it repeats, so that parse rejects it (AK5 23)
                        sets.insert(0, _first_with_st02(group, transaction))
                    parts.append(_wrap(interchange, group, *sets).encode(encoding))
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
        """Tokenize, check every envelope and (``schema_validation``) every transaction set.

        ``ParseError`` names the segment, element and check (``AK5:5``/``IK5:5`` for schema
        problems, the envelope codes otherwise), never the content.
        """
        interchanges, _ = tokenize(raw)
        check(interchanges)
        if self.config.strict_isa_width:
            for interchange in interchanges:
                if interchange.warnings:
                    reason = "the ISA segment is not fixed width (106 characters)"
                    raise ParseError(reason, interchange.isa.where(), "TA1:024")
        if self.config.schema_validation:
            for interchange in interchanges:
                for group in interchange.groups:
                    version = version_of(_element(group.gs, 8))
                    for transaction in group.transactions:
                        errors = validate_transaction(transaction.segments, interchange.delimiters, version)
                        if errors:
                            raise _schema_error(transaction, errors, version)
        return X12Document.from_interchanges(interchanges)

    def validate(self, raw: bytes) -> list[str]:
        """pyx12 HIPAA validation of 835/837 (``hipaa_validation: pyx12``); problems without content."""
        if self.config.hipaa_validation != "pyx12":
            return []
        try:
            interchanges, _ = tokenize(raw)
        except ParseError:
            return []  # parse reports it
        sets = {_element(t.segments[0], 1) for i in interchanges for g in i.groups for t in g.transactions}
        if not sets & HIPAA_SETS:
            return []
        return hipaa_problems(raw)

    def check_path(self, path: str) -> object:
        return parse_path(path)

    def respond(self, raw: bytes, outcome: Outcome) -> bytes | None:
        """997/999 (and TA1) for every functional group of ``raw``; None for acknowledgements.

        The content comes from Junction's own envelope and schema checks, not from
        ``outcome``: a 997/999 is a syntax acknowledgement, and a mapping failure of a
        syntactically valid transaction is not the sender's syntax error.
        """
        if self.config.acknowledgement == "off":
            return None
        numbers = self.control_numbers
        if self.control_numbers_for is not None:
            fields = self.header(raw).fields
            numbers = self.control_numbers_for(fields.get("ISA05", ""), fields.get("ISA06", "")) or numbers
        if getattr(outcome, "duplicate", False):  # the runtime refused a resent interchange: TA1 025 only
            return reject_interchange(raw, "025", numbers, self.clock() if self.clock else None)
        return acknowledge(raw, numbers, self.clock, self.config.acknowledgement)


def _schema_error(transaction: Transaction, errors: list[SegmentError], version: str) -> ParseError:
    """The first schema problem of a transaction set as a ParseError (position, no content)."""
    first = errors[0]
    segments = transaction.segments
    at = segments[min(max(first.position, 1), len(segments)) - 1]
    position = f"segment {at.number} ({at.id})"
    if first.elements:
        element = first.elements[0]
        position += f", element {element.position:02d}"
        if element.component:
            position += f", component {element.component}"
    more = f"; {len(errors) - 1} more problem(s)" if len(errors) > 1 else ""
    kind = _element(segments[0], 1)
    reason = f"the {kind} transaction set does not match its schema: {first.describe()}{more}"
    return ParseError(reason, position, f"{'IK5' if is_5010(version) else 'AK5'}:5")


_PYX12_LOGGER = "pyx12"


def hipaa_problems(raw: bytes) -> list[str]:
    """pyx12's 5010 TR3 findings for an 835/837 payload, as content-free sentences.

    pyx12 logs each finding with the offending value, so its logger is kept from
    propagating into Junction's logs; the JSON report is read for codes and positions only.
    """
    import pyx12.params  # heavy: imported only when HIPAA validation is configured
    import pyx12.x12n_document

    pyx_logger = logging.getLogger(_PYX12_LOGGER)
    if pyx_logger.propagate or not pyx_logger.handlers:
        pyx_logger.addHandler(logging.NullHandler())
        pyx_logger.propagate = False
    text, _ = decode(raw)
    report = io.StringIO()
    try:
        pyx12.x12n_document.x12n_document(
            param=pyx12.params.params(), src_file=io.StringIO(text), fd_997=None, fd_html=None, fd_json=report
        )
        data = json.loads(report.getvalue() or "{}")
    except Exception as exc:  # noqa: BLE001 - pyx12 failures must not fail the message silently
        return [f"pyx12 could not validate the payload ({type(exc).__name__})"]
    return _pyx12_findings(data)


def _pyx12_findings(data: Any) -> list[str]:
    problems: list[str] = []

    def codes(node: Any) -> list[str]:
        return [str(e.get("err_cde", "")) for e in node.get("errors") or []]

    for n, interchange in enumerate(data.get("interchanges") or [], 1):
        problems.extend(f"interchange {n}: TA1 code {c}" for c in codes(interchange))
        for g, group in enumerate(interchange.get("groups") or [], 1):
            problems.extend(f"interchange {n}, group {g}: AK9 code {c}" for c in codes(group))
            for t, trn in enumerate(group.get("transactions") or [], 1):
                where = f"interchange {n}, group {g}, transaction set {t}"
                problems.extend(f"{where}: IK5 code {c}" for c in codes(trn))
                for seg in trn.get("segments") or []:
                    at = f"{where}, segment {seg.get('seg_id')} at position {seg.get('seg_count')}"
                    problems.extend(f"{at}: IK3 code {c}" for c in codes(seg))
                    for ele in seg.get("elements") or []:
                        pos = f"element {ele.get('ele_pos')}"
                        if ele.get("subele_pos"):
                            pos += f", component {ele.get('subele_pos')}"
                        problems.extend(f"{at}, {pos}: IK4 code {c}" for c in codes(ele))
    return problems


def _element(segment: Segment | None, index: int) -> str:
    if segment is None or index >= len(segment.elements):
        return ""
    return segment.elements[index].strip()


def _lines(interchange: Interchange, segments: list[list[str]]) -> str:
    delims = interchange.delimiters
    end = delims.segment + interchange.line_break
    return "".join(delims.element.join(elements) + end for elements in segments)


def _wrap(interchange: Interchange, group: Group, *transactions: Transaction) -> str:
    """Transaction sets in a copy of their ISA and GS, with GE01 (their number) and IEA01 = 1."""
    gs06 = group.gs.elements[6] if len(group.gs.elements) > 6 else ""
    sets = [s.elements for t in transactions for s in t.segments]
    body = [group.gs.elements, *sets, ["GE", str(len(transactions)), gs06]]
    body.append(["IEA", "1", interchange.isa.elements[13]])
    return interchange.isa_text + interchange.line_break + _lines(interchange, body)


def _wrap_group(interchange: Interchange, group: Group) -> str:
    """A whole group, with its GE as received, in a copy of its ISA (IEA01 = 1)."""
    body = [group.gs.elements, *(s.elements for t in group.transactions for s in t.segments)]
    body.append(group.ge.elements if group.ge is not None else ["GE", str(len(group.transactions))])
    body.append(["IEA", "1", interchange.isa.elements[13]])
    return interchange.isa_text + interchange.line_break + _lines(interchange, body)


def _first_with_st02(group: Group, duplicate: Transaction) -> Transaction:
    """The first transaction set of ``group`` with the control number ``duplicate`` repeats."""
    wanted = _number(_element(duplicate.segments[0], 2))
    return next(t for t in group.transactions if _number(_element(t.segments[0], 2)) == wanted)


def _number(value: str) -> str:
    return str(int(value)) if value.isdigit() else value


def _rebuild_whole(interchange: Interchange) -> str:
    body: list[list[str]] = [s.elements for s in interchange.ta1]
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
        Example("Envelope checks only (no transaction schemas)", "type: x12\nschema_validation: false"),
        Example("A partner that wants 997s for 5010 too", "type: x12\nacknowledgement: '997'"),
        Example("835/837: add pyx12 HIPAA validation off the hot path", "type: x12\nhipaa_validation: pyx12"),
    ),
)
