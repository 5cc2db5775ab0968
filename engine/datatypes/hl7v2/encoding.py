"""Encoding characters (MSH-1, MSH-2) and HL7 escape sequences."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from engine.core.errors import ParseError


@dataclass(frozen=True, slots=True)
class Encoding:
    """The delimiters of one message; ``truncation`` is empty before v2.7."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def msh2(self) -> str:
        """The encoding characters as written in MSH-2."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation

    def as_dict(self) -> dict[str, str]:
        return {
            "field": self.field,
            "component": self.component,
            "repetition": self.repetition,
            "escape": self.escape,
            "subcomponent": self.subcomponent,
            "truncation": self.truncation,
        }


DEFAULT = Encoding()
_POSITION = "segment 1 (MSH), field 2"


def from_msh(segment: str) -> Encoding:
    """Read the delimiters from an MSH (or FHS/BHS) segment; raise ``ParseError`` if unusable.

    MSH-2 holds 4 characters (component, repetition, escape, sub-component), or 5 from
    v2.7 on, the fifth being the truncation character.
    """
    if len(segment) < 8:
        raise ParseError("MSH segment is too short to hold the encoding characters", _POSITION, "101")
    fs = segment[3]
    end = segment.find(fs, 4)
    return _encoding(fs, segment[4:] if end < 0 else segment[4:end])


@lru_cache(maxsize=64)
def _encoding(fs: str, chars: str) -> Encoding:
    # Cached: nearly every feed uses one set of delimiters, and the checks below cost more than the split.
    if len(chars) not in (4, 5):
        raise ParseError("MSH-2 must hold 4 or 5 encoding characters", _POSITION, "102")
    every = fs + chars
    if len(set(every)) != len(every) or any(c.isalnum() or c.isspace() for c in every):
        raise ParseError(
            "encoding characters must be distinct symbols (not letters, digits or spaces)", _POSITION, "102"
        )
    return Encoding(fs, chars[0], chars[1], chars[2], chars[3], chars[4:])


# Formatting commands (\.br\, \H\, ...) that only carry layout; \.br\ and \.sp\ become newlines.
_LINE_BREAKS = {".br", ".sp"}
_DROPPED = {"H", "N", ".fi", ".nf", ".ce"}
_HEX = re.compile(r"X([0-9A-Fa-f]{2})+")


def unescape(value: str, enc: Encoding, charset: str = "utf-8") -> str:
    """Replace HL7 escape sequences in a leaf value.

    ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\P\\`` give the delimiters, ``\\.br\\`` a newline,
    ``\\Xhh..\\`` the bytes hh.. decoded in the message charset, highlighting (``\\H\\``,
    ``\\N\\``) is dropped; anything else (including an unterminated sequence) is kept as
    written.

    >>> unescape(r"Hives \\T\\ rash", DEFAULT)
    'Hives & rash'
    """
    esc = enc.escape
    if esc not in value:
        return value
    parts = value.split(esc)
    out = [parts[0]]
    last = len(parts) - 1
    for i in range(1, len(parts), 2):
        if i == last:  # no closing escape character: keep the text literally
            out.append(esc + parts[i])
            break
        out.append(_sequence(parts[i], enc, charset))
        out.append(parts[i + 1])
    return "".join(out)


def _sequence(body: str, enc: Encoding, charset: str) -> str:
    simple = {
        "F": enc.field,
        "S": enc.component,
        "T": enc.subcomponent,
        "R": enc.repetition,
        "E": enc.escape,
        "P": enc.truncation,
    }.get(body)
    if simple:
        return simple
    command = body.split(" ", 1)[0]
    if command in _LINE_BREAKS:
        return "\n"
    if command in _DROPPED:
        return ""
    if _HEX.fullmatch(body):
        data = bytes.fromhex(body[1:])
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError):
            return data.decode("latin-1")
    return enc.escape + body + enc.escape


def escape(value: str, enc: Encoding) -> str:
    r"""Escape delimiters in ``value`` so that it can be written into one leaf; newlines become ``\.br\``.

    >>> escape("A&B|C", DEFAULT)
    'A\\T\\B\\F\\C'
    """
    e = enc.escape
    out = value.replace(e, f"{e}E{e}")
    for char, code in (
        (enc.field, "F"),
        (enc.component, "S"),
        (enc.subcomponent, "T"),
        (enc.repetition, "R"),
        (enc.truncation, "P"),
    ):
        if char:
            out = out.replace(char, f"{e}{code}{e}")
    for newline in ("\r\n", "\r", "\n"):
        out = out.replace(newline, f"{e}.br{e}")
    return out
