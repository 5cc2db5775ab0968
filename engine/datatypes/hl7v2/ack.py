"""Acknowledgements: ``respond`` builds them, ``ack_code`` reads them."""

from __future__ import annotations

import re
import time
from datetime import datetime
from functools import lru_cache

from engine.core.contracts import Outcome
from engine.core.errors import ParseError
from engine.core.message import new_id
from engine.datatypes.hl7v2 import charsets
from engine.datatypes.hl7v2.encoding import DEFAULT, Encoding, escape, from_msh
from engine.datatypes.hl7v2.header import Msh, rough_msh, split_msh
from engine.datatypes.hl7v2.message import Hl7Message, split_segments

# HL7 table 0357 (message error condition codes).
TABLE_0357 = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "104": "Value too long",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}
_COMMIT_CODES = {"AA": "CA", "AE": "CE", "AR": "CR"}
MAX_TEXT = 80  # MSA-3 is 80 characters long in v2.5; longer texts are cut


def wants_ack(accept_ack_type: str, code: str) -> bool:
    """MSH-15 (accept acknowledgment type): should this code be answered?"""
    kind = accept_ack_type.strip().upper()
    if kind == "NE":
        return False
    if kind == "ER":
        return code != "AA"
    if kind == "SU":
        return code == "AA"
    return True  # AL, empty (original mode) or a value we do not know


def build_ack(
    raw: bytes,
    outcome: Outcome,
    *,
    charset: str = "auto",
    honor_accept_ack_type: bool = True,
    sending_application: str | None = None,
    sending_facility: str | None = None,
) -> bytes | None:
    """The ACK for ``raw``: see ``Hl7v2.respond``."""
    try:
        text, codec = charsets.decode(raw, charset)
    except ParseError:
        # Bytes that do not fit the charset (configured, or UTF-8 after a BOM): read the ASCII
        # structure through latin-1 and answer in the charset the sender should have used.
        text, codec = raw.decode("latin-1"), ("utf-8" if charset == "auto" else charset)
    segments = split_segments(text.lstrip())
    return _build(
        _first_msh(segments), segments, codec, outcome, honor_accept_ack_type, sending_application, sending_facility
    )


def build_ack_parsed(
    doc: Hl7Message,
    outcome: Outcome,
    *,
    honor_accept_ack_type: bool = True,
    sending_application: str | None = None,
    sending_facility: str | None = None,
) -> bytes | None:
    """``build_ack`` for a message the parser accepted, reusing its decode and split (the
    same text, segments, MSH fields and codec ``build_ack`` would find again)."""
    fields = doc.msh_fields
    msh = Msh(doc.encoding, fields) if fields is not None else _first_msh(doc.segments)
    return _build(msh, doc.segments, doc.charset, outcome, honor_accept_ack_type, sending_application, sending_facility)


def _build(
    msh: Msh | None,
    segments: list[str],
    codec: str,
    outcome: Outcome,
    honor_accept_ack_type: bool,
    sending_application: str | None,
    sending_facility: str | None,
) -> bytes | None:
    if msh is None or msh.rough:
        # Nothing (or only MSH-3 to MSH-12 split on the field separator) to mirror: answer AR
        # with default delimiters so the sender sees a rejection of that control id.
        reject = Outcome("AR", outcome.reason, outcome.position, outcome.error_code)
        text = _ack_text(msh, [], reject, sending_application, sending_facility)
    else:
        if honor_accept_ack_type and not wants_ack(msh.field(15), outcome.code):
            return None
        # Enhanced mode (MSH-15 or MSH-16 valued): the answer on the connection is the
        # accept (commit) acknowledgment, CA/CE/CR; AA/AE/AR are application ACKs.
        commit = honor_accept_ack_type and bool(msh.field(15).strip() or msh.field(16).strip())
        text = _ack_text(msh, segments, outcome, sending_application, sending_facility, commit=commit)
    return text.encode(codec, errors="replace")


_stamp: tuple[int, str] = (0, "")


def _now_stamp() -> str:
    """The local time as HL7 TS with offset, formatted once per second (ACKs are a hot path)."""
    global _stamp
    second = int(time.time())
    if _stamp[0] != second:
        _stamp = (second, datetime.fromtimestamp(second).astimezone().strftime("%Y%m%d%H%M%S%z"))
    return _stamp[1]


def _first_msh(segments: list[str]) -> Msh | None:
    for segment in segments:
        if not segment.startswith(("FHS", "BHS")):
            return split_msh(segment) or rough_msh(segment)
    return None


def _ack_text(
    msh: Msh | None,
    segments: list[str],
    outcome: Outcome,
    app: str | None,
    facility: str | None,
    *,
    commit: bool = False,
) -> str:
    enc = msh.encoding if msh else DEFAULT
    original = msh.field if msh else (lambda _n: "")
    version = (msh.component(12, 1) if msh else "") or "2.5"
    trigger = msh.component(9, 2) if msh else ""
    # MSH-9.3 (message structure) exists from v2.3.1 on; older versions answer ACK^<event>.
    structure = f"{enc.component}ACK" if _has_structure(version) else ""
    c, fs = enc.component, enc.field
    fields = [
        "MSH",
        enc.msh2,
        app if app is not None else original(5),
        facility if facility is not None else original(6),
        original(3),
        original(4),
        _now_stamp(),
        "",
        f"ACK{c}{trigger}{structure}" if trigger else "ACK",
        new_id()[:20],  # MSH-10 is 20 characters long up to v2.6
        original(11) or "P",
        version,
    ]
    charset = msh.field(18).strip(" \x00") if msh else ""
    if charset:
        fields += ["", "", "", "", "", charset]  # declare the same charset we encode with
    ack = [fs.join(fields), _msa(enc, outcome, original(10), commit)]
    if outcome.code != "AA":
        ack.append(_err(enc, outcome, version, segments))
    return "\r".join(ack) + "\r"


def _msa(enc: Encoding, outcome: Outcome, control_id: str, commit: bool = False) -> str:
    fields = ["MSA", _COMMIT_CODES[outcome.code] if commit else outcome.code, control_id]
    text = f"{outcome.position}: {outcome.reason}" if outcome.position and outcome.reason else outcome.reason
    reason = " ".join(text.split())[:MAX_TEXT]
    if reason:
        fields.append(escape(reason, enc))
    return enc.field.join(fields)


def _err(enc: Encoding, outcome: Outcome, version: str, segments: list[str]) -> str:
    code = outcome.error_code or "207"
    text = TABLE_0357.get(code) or escape(" ".join(outcome.reason.split())[:MAX_TEXT], enc)
    segment_id, sequence, field = _location(outcome.position, segments)
    c, s, fs = enc.component, enc.subcomponent, enc.field
    if _version_tuple(version) < (2, 5):
        # v2.3/2.4: ERR-1 (ELD) = segment ^ sequence ^ field ^ code&text&table
        return f"ERR{fs}{segment_id}{c}{sequence}{c}{field}{c}{code}{s}{text}{s}HL70357"
    location = c.join(p for p in (segment_id, sequence, field) if p) if segment_id else ""
    return fs.join(["ERR", "", location, f"{code}{c}{text}{c}HL70357", "E"])


_POSITION = re.compile(r"segment (?P<n>\d+)(?: \((?P<sid>[A-Z0-9]{3})\))?(?:, field (?P<field>\d+))?")
_SEGMENT_ID = re.compile(r"[A-Z0-9]{3}")
_PATH = re.compile(r"(?P<sid>[A-Z0-9]{3})(?:\[(?P<seq>\d+)\])?(?:-(?P<field>\d+))?")


def _location(position: str, segments: list[str]) -> tuple[str, str, str]:
    """(segment id, sequence among segments with that id, field) from a ParseError-style
    position ("segment 4 (FT1), field 10") or a path ("FT1[2]-10"); empty when unknown."""
    match = _POSITION.search(position)
    if match:
        number = int(match["n"])
        ids = [segment[:3] for segment in segments[:number]]
        sid = match["sid"] or (ids[-1] if len(ids) == number else "")
        if not _SEGMENT_ID.fullmatch(sid):
            return ("", "", "")  # a malformed segment id is message content: do not echo it
        sequence = str(ids.count(sid)) if len(ids) == number else "1"
        return (sid, sequence, match["field"] or "")
    match = _PATH.match(position.strip())
    if match:
        return (match["sid"], match["seq"] or "1", match["field"] or "")
    return ("", "", "")


@lru_cache(maxsize=64)
def _has_structure(version: str) -> bool:
    """Whether MSH-9 has its message structure component (v2.3.1 on) in this version; an
    unreadable version counts as the 2.5 the ACK then declares. Cached: ACKs are a hot path."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
    return (numbers or (2, 5)) >= (2, 3, 1)


def _version_tuple(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else (2, 5)


def ack_code(ack: bytes) -> tuple[str, str]:
    """(MSA-1 code, MSA-2 acknowledged control id) of an ACK; ("", "") when there is no MSA.

    >>> ack_code(b"MSH|^~\\\\&|A|B|C|D|20240101||ACK|1|P|2.5\\rMSA|AE|MSG0001|bad\\r")
    ('AE', 'MSG0001')
    """
    try:
        text = ack.decode("utf-8")
    except UnicodeDecodeError:
        text = ack.decode("latin-1")
    segments = split_segments(text.strip("\x0b\x1c\r\n \t"))
    fs = segments[0][3] if segments and segments[0].startswith("MSH") and len(segments[0]) > 3 else "|"
    for segment in segments:
        if segment.startswith("MSA"):
            fields = segment.split(fs)
            return (fields[1] if len(fields) > 1 else "", fields[2] if len(fields) > 2 else "")
    return ("", "")


def batch_response(raw: bytes, acks: list[bytes], *, charset: str = "auto") -> bytes | None:
    """One answer for a payload that held several messages: the ACK of each, in order.

    A batch (BHS, optionally inside FHS) is answered with a response batch as HL7 v2
    chapter 2 describes it: FHS/BHS with the sending and receiving application and
    facility swapped, a new control id and the original's control id as reference
    (FHS-12, BHS-12), one ACK per message, then BTS with the count (and FTS). Several
    messages without a batch header get their ACKs one after the other in the same frame.
    None when no message is to be answered (MSH-15 said not to).
    """
    if not acks:
        return None
    try:
        text, codec = charsets.decode(raw, charset)
    except ParseError:
        text, codec = raw.decode("latin-1"), ("utf-8" if charset == "auto" else charset)
    headers = {}
    for segment in split_segments(text.lstrip()):
        head = segment[:3]
        if head in ("FHS", "BHS") and head not in headers:
            headers[head] = segment
        elif head not in ("FHS", "BHS"):
            break
    if "BHS" not in headers and "FHS" not in headers:
        return b"".join(acks)
    before: list[str] = []
    after: list[str] = []
    if "FHS" in headers:
        before.append(_batch_header(headers["FHS"]))
    before.append(_batch_header(headers["BHS"] if "BHS" in headers else "BHS" + headers["FHS"][3:]))
    after.append(f"BTS{_field_separator(headers)}{len(acks)}")
    if "FHS" in headers:
        after.append(f"FTS{_field_separator(headers)}1")
    opening = ("\r".join(before) + "\r").encode(codec, errors="replace")
    closing = ("\r".join(after) + "\r").encode(codec, errors="replace")
    return opening + b"".join(acks) + closing


def _field_separator(headers: dict[str, str]) -> str:
    segment = headers.get("BHS") or headers["FHS"]
    return segment[3] if len(segment) > 3 else "|"


def _batch_header(segment: str) -> str:
    """The answer's FHS/BHS for the original's: ends swapped, new id, reference to the original."""
    name = segment[:3]
    try:
        enc = from_msh("MSH" + segment[3:])
    except ParseError:
        enc = DEFAULT
    fields = segment.split(enc.field) if len(segment) > 3 else [name]
    fields.insert(1, enc.field)

    def original(n: int) -> str:
        return fields[n] if n < len(fields) else ""

    answer = [
        name,
        enc.msh2,
        original(5),
        original(6),
        original(3),
        original(4),
        _now_stamp(),
        "",
        "",
        "",
        new_id()[:20],
        original(11),  # FHS-12 / BHS-12: the reference file / batch control id
    ]
    return enc.field.join(answer)
