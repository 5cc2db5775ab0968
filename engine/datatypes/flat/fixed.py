"""The ``fixed-width`` data type: positional files read with a declared layout."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from engine.core.contracts import Header, Outcome
from engine.core.errors import ParseError
from engine.datatypes.flat.document import SYNTAX, FlatDocument, Record
from engine.datatypes.flat.layout import FieldDef, load_layout
from engine.datatypes.flat.records import Shape, assemble, decode
from engine.datatypes.flat.spec import FixedWidthConfig, check_path_against, control_header

_LINES = re.compile(r"\r\n|\n|\r")
Slices = tuple[tuple[int, int], ...]


def _slices(fields: list[FieldDef]) -> Slices:
    return tuple(((f.start or 1) - 1, (f.start or 1) - 1 + (f.length or 0)) for f in fields)


class FixedWidth:
    """The ``fixed-width`` data type (DataType protocol)."""

    content_type = "text/plain"
    validates = False
    path_syntax = SYNTAX

    def __init__(self, config: FixedWidthConfig, *, base_dir: Path | None = None) -> None:
        self.config: FixedWidthConfig = load_layout(FixedWidthConfig, config, base_dir)
        cfg = self.config
        if cfg.records:
            self._shapes = {code: Shape.of_record(code, rec) for code, rec in cfg.records.items()}
            self._cuts = {code: _slices(rec.fields) for code, rec in cfg.records.items()}
        else:
            self._shapes = {}
            self._plain = Shape("rows", "data", cfg.fields)
            self._plain_cuts = _slices(cfg.fields)

    def _lines(self, raw: bytes) -> tuple[list[tuple[int, str]], Iterator[tuple[int, str]]]:
        lines = _LINES.split(decode(raw, self.config.encoding))
        skip = self.config.skip_rows
        preamble = list(enumerate(lines[:skip], 1))
        rest = ((n, line) for n, line in enumerate(lines[skip:], skip + 1) if line.strip())
        return preamble, rest

    def _cells(self, line: str, cuts: Slices) -> list[str]:
        if self.config.trim:
            return [line[a:b].strip() for a, b in cuts]
        return [line[a:b] for a, b in cuts]

    def _code(self, line: str) -> str:
        spot = self.config.record_type
        assert spot is not None
        return line[spot.start - 1 : spot.start - 1 + spot.length].strip()

    def parse(self, raw: bytes) -> FlatDocument:
        """Parse a whole file; ``ParseError`` names the line and field, never the value."""
        preamble_lines, lines = self._lines(raw)
        preamble = [Record("preamble", "preamble", n, [line], {}) for n, line in preamble_lines]
        if not self.config.records:
            shape, cuts = self._plain, self._plain_cuts
            return FlatDocument([shape.build(n, self._cells(line, cuts)) for n, line in lines], preamble)
        return assemble(self._typed(lines), preamble, self._shapes)

    def _typed(self, lines: Iterator[tuple[int, str]]) -> Iterator[Record]:
        for number, line in lines:
            code = self._code(line)
            shape = self._shapes.get(code)
            if shape is None:
                known = ", ".join(self._shapes)
                raise ParseError(f"unknown record type (expected one of {known})", f"line {number}")
            yield shape.build(number, self._cells(line, self._cuts[code]))

    def split(self, raw: bytes) -> list[bytes]:
        """With ``per_row``: one message per data record, keeping the preamble lines, the header
        record and the trailer (its count set for that message). Never raises."""
        if not self.config.per_row:
            return [raw]
        try:
            doc = self.parse(raw)
            preamble, rest = self._lines(raw)
            lines = [line for _, line in rest]
        except ParseError:
            return [raw]
        if len(doc.data) <= 1:
            return [raw]
        kept = [line for _, line in preamble]
        head = [line for line, r in zip(lines, doc.records, strict=True) if r.role == "header"]
        tail = [line for line, r in zip(lines, doc.records, strict=True) if r.role == "trailer"]
        trailer = next((s for s in self._shapes.values() if s.role == "trailer"), None)
        if tail and trailer is not None and trailer.count_position >= 0:
            count = 1 + (len(head) + 1 if trailer.counts == "all" else 0)
            a, b = self._cuts[trailer.code][trailer.count_position]
            old = tail[0][a:b]
            text = str(count).zfill(b - a) if old[:1] == "0" else str(count).rjust(b - a)
            tail = [tail[0][:a] + text + tail[0][b:]]
        line_end = "\r\n" if b"\r\n" in raw[:4096] else "\n"
        data = [line for line, r in zip(lines, doc.records, strict=True) if r.role == "data"]
        encoding = self.config.encoding
        return [(line_end.join([*kept, *head, line, *tail]) + line_end).encode(encoding) for line in data]

    def header(self, raw: bytes) -> Header:
        return control_header(self, raw, self.config.control_id_path)

    def validate(self, raw: bytes) -> list[str]:
        return []

    def check_path(self, path: str) -> object:
        if self.config.records:
            closed = {code: set(shape.names) for code, shape in self._shapes.items()}
        else:
            closed = {"rows": set(self._plain.names)}
        return check_path_against(path, self._shapes, closed)

    def respond(self, raw: bytes, outcome: Outcome) -> bytes | None:
        return None  # files have no sender to answer
