"""HL7 v2 paths: ``SEG[occurrence]-FIELD[repetition].COMPONENT.SUBCOMPONENT``, counted from 1."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

ALL = -1  # the ``[*]`` index

SYNTAX = """\
SEG[-FIELD[.COMPONENT[.SUBCOMPONENT]]], counted from 1 like the standard:
  PID-3         first repetition of PID-3 (a whole field)
  PID-3.1       component 1;  PID-3.1.2: sub-component 2 of component 1
  PID-3[2].1    second repetition;  PID-3[*].1 every repetition (get_all)
  FT1[2]-7.1    the second FT1 segment;  FT1-7.1 with get_all: one value per FT1 segment
  MSH-9.1       MSH-1 is the field separator, MSH-2 the encoding characters
  ZPI           a whole segment as written (e.g. to test that it exists)
get returns the first value (escape sequences resolved) or None when absent or empty;
a path that stops above the leaves of a composite value returns it as written."""

_PATH = re.compile(
    r"(?P<seg>[A-Z0-9]{3})(?:\[(?P<occ>\d+|\*)\])?"
    r"(?:-(?P<field>\d+)(?:\[(?P<rep>\d+|\*)\])?(?:\.(?P<comp>\d+)(?:\.(?P<sub>\d+))?)?)?"
)


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed path. ``occurrence``/``repetition``: None = default, ``ALL`` = ``[*]``, else 1-based."""

    segment: str
    occurrence: int | None = None
    field: int | None = None
    repetition: int | None = None
    component: int | None = None
    subcomponent: int | None = None


@lru_cache(maxsize=1024)
def parse_path(text: str) -> Path:
    """Parse a path; raise ``ValueError`` with the expected syntax when it is invalid.

    >>> parse_path("FT1[2]-7.1")
    Path(segment='FT1', occurrence=2, field=7, repetition=None, component=1, subcomponent=None)
    """
    match = _PATH.fullmatch(text.strip())
    if not match:
        raise ValueError(
            f"invalid HL7 v2 path {text!r}: expected SEG[-FIELD[.COMPONENT[.SUBCOMPONENT]]] with an optional "
            "[n] or [*] after SEG or FIELD, e.g. PID-3, PID-3[2].1, FT1[2]-7.1 (segment ids are upper-case)"
        )
    groups = match.groupdict()
    numbers = {k: _index(v) for k, v in groups.items() if k != "seg"}
    for key, value in numbers.items():
        if value == 0:
            raise ValueError(f"invalid HL7 v2 path {text!r}: {_NAMES[key]} numbers count from 1, not 0")
    return Path(groups["seg"], numbers["occ"], numbers["field"], numbers["rep"], numbers["comp"], numbers["sub"])


_NAMES = {
    "occ": "segment occurrence",
    "field": "field",
    "rep": "repetition",
    "comp": "component",
    "sub": "sub-component",
}


def _index(value: str | None) -> int | None:
    if value is None:
        return None
    return ALL if value == "*" else int(value)
