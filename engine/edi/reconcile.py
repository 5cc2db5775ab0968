"""What Junction sent to partners, and which functional acknowledgements (997/999) came back.

Every interchange the ``x12`` destination delivers is recorded per functional group under
``edi:sent:<partner>:<GS06 as 9 digits>`` (a JSON value in the message store). An inbound
997 or 999 from the partner marks the groups and transaction sets it names (AK1/AK2 with
AK5 or IK5, and AK9) as accepted or rejected; ``overdue`` lists the groups still waiting
after the partner's ``ack_timeout_minutes``, for the periodic alert.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.core.errors import ParseError
from engine.core.store import MessageStore
from engine.datatypes.x12 import X12DataType
from engine.edi.partners import Partner

__all__ = ["ReconcileResult", "SentGroup", "overdue", "reconcile", "record_sent", "sent_groups"]

PREFIX = "edi:sent:"
PENDING = "pending"
# AK901 / AK501 / IK501 codes (elements 715 and 717) -> our status words.
_STATUS = {
    "A": "accepted",
    "E": "accepted_with_errors",
    "P": "partially_accepted",
    "R": "rejected",
    "M": "rejected",
    "W": "rejected",
    "X": "rejected",
}


@dataclass
class SentGroup:
    """One functional group sent to a partner and what its acknowledgement said."""

    partner: str
    isa13: int
    gs06: int
    transaction: str  # ST01 of its sets: 850, 855, 856, 810
    st02: list[int]
    sent_at: float
    message_id: str = ""
    status: str = PENDING  # pending, accepted, accepted_with_errors, partially_accepted, rejected
    acked_at: float | None = None
    sets: dict[str, str] = field(default_factory=dict)  # ST02 (4+ digits) -> status word

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SentGroup:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


def _key(partner: str, gs06: int) -> str:
    return f"{PREFIX}{partner}:{gs06:09d}"


async def record_sent(store: MessageStore, group: SentGroup) -> None:
    """Remember a sent group (replaces the record of the same group: a retried delivery)."""
    await store.put_value(_key(group.partner, group.gs06), group.to_json())


async def sent_groups(store: MessageStore, partner: str) -> list[SentGroup]:
    """Every recorded group sent to ``partner``, in control-number order."""
    values = await store.get_values(f"{PREFIX}{partner}:")
    groups = []
    for _, text in sorted(values.items()):
        try:
            groups.append(SentGroup.from_json(text))
        except (ValueError, TypeError):
            continue  # a record written by an incompatible version: not ours to judge
    return groups


@dataclass
class ReconcileResult:
    """What one acknowledgement changed."""

    functional_id: str  # 997 or 999
    updated: list[SentGroup] = field(default_factory=list)
    unknown_groups: list[int] = field(default_factory=list)  # AK102 values we have no record of


def _read_acks(raw: bytes) -> tuple[str, str, str, list[tuple[int, str, dict[str, str]]]]:
    """(ISA05, ISA06, ST01, [(AK102, AK901 status, {AK202: AK501/IK501 status})])."""
    doc = X12DataType().parse(raw)
    segments: list[list[str]] = doc.to_data()["segments"]
    isa = segments[0]
    kinds = {seg[1] for seg in segments if seg[0] == "ST" and len(seg) > 1}
    if not kinds or not kinds <= {"997", "999"}:
        raise ParseError("the interchange holds transaction sets other than 997/999 acknowledgements", "ST01")
    groups: list[tuple[int, str, dict[str, str]]] = []
    current: tuple[int, str, dict[str, str]] | None = None
    set_control = ""
    for number, seg in enumerate(segments, start=1):
        sid = seg[0]
        if sid == "AK1":
            if len(seg) < 3 or not seg[2].strip().isdigit():
                raise ParseError("AK102 (group control number) is missing or not numeric", f"segment {number} (AK1)")
            current = (int(seg[2]), "", {})
            groups.append(current)
        elif sid == "AK2" and current is not None:
            set_control = seg[2].strip() if len(seg) > 2 else ""
        elif sid in ("AK5", "IK5") and current is not None and set_control:
            current[2][set_control.lstrip("0") or "0"] = _STATUS.get(seg[1].strip() if len(seg) > 1 else "", "rejected")
            set_control = ""
        elif sid == "AK9" and current is not None:
            status = _STATUS.get(seg[1].strip() if len(seg) > 1 else "", "rejected")
            groups[-1] = (current[0], status, current[2])
            current = None
    return isa[5].strip(), isa[6].strip(), "/".join(sorted(kinds)), groups


async def reconcile(store: MessageStore, partner: Partner, raw: bytes, *, now: float | None = None) -> ReconcileResult:
    """Apply an inbound 997/999 from ``partner`` to the recorded sent groups.

    Raises ``ParseError`` when ``raw`` is not a clean acknowledgement interchange, and
    ``ValueError`` when its sender (ISA05/ISA06) is not the partner.
    """
    qualifier, sender, kind, acks = _read_acks(raw)
    if (qualifier, sender) != (partner.them.isa_qualifier, partner.them.isa_id):
        raise ValueError(f"the acknowledgement's sender (ISA05/ISA06) is not partner {partner.name}")
    stamp = time.time() if now is None else now
    result = ReconcileResult(kind)
    for gs06, status, sets in acks:
        key = _key(partner.name, gs06)
        text = (await store.get_values(key)).get(key)
        if text is None:
            result.unknown_groups.append(gs06)
            continue
        group = SentGroup.from_json(text)
        group.status = status or _roll_up(sets)
        group.acked_at = stamp
        for st02 in group.st02:
            label = str(st02)
            # An AK9 A without AK2 loops accepts every set of the group.
            group.sets[f"{st02:04d}"] = sets.get(label, "accepted" if group.status == "accepted" else group.status)
        await record_sent(store, group)
        result.updated.append(group)
    return result


def _roll_up(sets: dict[str, str]) -> str:
    states = set(sets.values())
    if not states:
        return "rejected"
    if states == {"accepted"}:
        return "accepted"
    if "rejected" in states:
        return "rejected" if states == {"rejected"} else "partially_accepted"
    return "accepted_with_errors"


async def overdue(store: MessageStore, partner: Partner, *, now: float | None = None) -> list[SentGroup]:
    """Groups sent to ``partner`` still unacknowledged after its ``ack_timeout_minutes``.

    Empty when the partner sends no functional acknowledgements (``acks.expect: none``).
    """
    if partner.acks.expect == "none":
        return []
    stamp = time.time() if now is None else now
    limit = partner.acks.ack_timeout_minutes * 60
    return [g for g in await sent_groups(store, partner.name) if g.status == PENDING and stamp - g.sent_at > limit]
