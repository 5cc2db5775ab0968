"""Optional strict validation with hl7apy, run off the ACK path on a copy of the message.

hl7apy's messages sometimes quote field values; every problem is rewritten to name
elements only (PHI must not reach logs or the store's error column).
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

from engine.core.errors import ParseError
from engine.datatypes.hl7v2.message import parse

# hl7apy messages that quote a value -> the same message without it.
_SCRUB = (
    (re.compile(r"Value .* not in table (\S+) in element (\S+)$"), r"value not in table \1 in element \2"),
    (re.compile(r"The value .* exceed the max length: (\d+)$"), r"a value exceeds the maximum length \1"),
    (re.compile(r".* is not an HL7 valid (\w+) value$"), r"a value is not a valid HL7 \1 value"),
)
# hl7apy messages known to hold element names only.
_SAFE = re.compile(
    r"(Missing required child|Child limit exceeded|Exceeded max length|Datatype \w+ is not correct for"
    r"|Invalid children detected for|Unknown element found|Invalid element found|Cannot add <|No child named"
    r"|Invalid name for|The version \S+ is not supported|Cannot instantiate an unknown Element"
    r"|Invalid message|Invalid encoding chars|Invalid value for|Invalid date format|Invalid date offset)"
)
# Events that share a structure, for messages whose MSH-9.3 is empty (hl7apy then guesses
# CODE_TRIGGER, which does not exist for, e.g., ADT^A08).
_STRUCTURES = {
    **dict.fromkeys(("ADT^A04", "ADT^A08", "ADT^A13"), "ADT_A01"),
    **dict.fromkeys(("ADT^A14", "ADT^A28", "ADT^A31"), "ADT_A05"),
    "ADT^A07": "ADT_A06",
    **dict.fromkeys(("ADT^A10", "ADT^A11"), "ADT_A09"),
    **dict.fromkeys(("ADT^A40", "ADT^A41", "ADT^A42"), "ADT_A39"),
    **dict.fromkeys(("ADT^A22", "ADT^A23", "ADT^A25", "ADT^A26", "ADT^A27", "ADT^A29"), "ADT_A21"),
}


def clean(message: str) -> str:
    """Rewrite one hl7apy message so that it names elements but quotes no values."""
    message = message.strip()
    for pattern, replacement in _SCRUB:
        if pattern.match(message):
            return pattern.sub(replacement, message)
    if _SAFE.match(message):
        return message
    return "details withheld (the validator's message may quote content)"


def validate_strict(raw: bytes, charset: str = "auto") -> list[str]:
    """Errors hl7apy finds at ``VALIDATION_LEVEL.STRICT`` (warnings are left out); Z-segments
    are removed first because hl7apy drops or rejects them."""
    try:
        msg = parse(raw, charset)
    except ParseError as exc:
        return [f"error: {exc}"]
    enc = msg.encoding
    segments = [s for s in msg.segments if not s.startswith("Z")]
    segments[0] = _with_structure(segments[0], msg.message_type, msg.version, enc.field, enc.component)
    return _run_hl7apy("\r".join(segments))


def _with_structure(msh: str, message_type: str, version: str, fs: str, cs: str) -> str:
    parts = message_type.split("^")
    if (len(parts) >= 3 and parts[2]) or len(parts) < 2:
        return msh
    structure = _STRUCTURES.get(f"{parts[0]}^{parts[1]}")
    if structure is None or f"{parts[0]}_{parts[1]}" in _messages(version):
        return msh
    fields = msh.split(fs)
    fields[8] = cs.join([parts[0], parts[1], structure])
    return fs.join(fields)


def _messages(version: str) -> dict[str, Any]:
    from hl7apy import SUPPORTED_LIBRARIES, load_library

    if version not in SUPPORTED_LIBRARIES:
        return {}
    return dict(load_library(version).MESSAGES)


def _run_hl7apy(text: str) -> list[str]:
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    try:
        message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    except Exception as exc:  # noqa: BLE001 - hl7apy raises builtins (ValueError) as well as its own errors
        return [f"error: {type(exc).__name__}: {clean(str(exc))}"]
    failure: Exception | None = None
    with tempfile.TemporaryDirectory() as folder:
        report = os.path.join(folder, "report.txt")
        try:
            message.validate(report_file=report)
        except Exception as exc:  # noqa: BLE001 - raises the first error; the report lists them all
            failure = exc
        # Only errors: hl7apy also warns about every coding system missing from its tables
        # (e.g. CE.3 = "LN"), which real feeds trip constantly, and a problem fails the message.
        problems = [_problem(line) for line in _read(report) if line.startswith("Error")]
    if failure is not None and not problems:
        problems.append(f"error: {type(failure).__name__}: {clean(str(failure))}")
    return problems


def _read(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except FileNotFoundError:
        return []


def _problem(line: str) -> str:
    kind, _, message = line.partition(": ")
    return f"{kind.lower()}: {clean(message)}"
