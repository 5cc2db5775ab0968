"""The ``delimited`` data type: CSV, TSV and pipe files read with a declared layout."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from engine.core.contracts import Header, Outcome
from engine.core.errors import ParseError
from engine.datatypes.flat.document import SYNTAX, FlatDocument, Record
from engine.datatypes.flat.layout import load_layout
from engine.datatypes.flat.records import Shape, assemble, decode
from engine.datatypes.flat.spec import DelimitedConfig, check_path_against, control_header

Row = tuple[int, list[str]]  # (line number of the row's end, cells)


class Delimited:
    """The ``delimited`` data type (DataType protocol)."""

    content_type = "text/csv"
    validates = False
    path_syntax = SYNTAX

    def __init__(self, config: DelimitedConfig | None = None, *, base_dir: Path | None = None) -> None:
        given = config or DelimitedConfig.model_validate({"type": "delimited"})
        self.config: DelimitedConfig = load_layout(DelimitedConfig, given, base_dir)
        cfg = self.config
        self._header = cfg.header if cfg.header is not None else not cfg.records
        self._shapes = {code: Shape.of_record(code, rec) for code, rec in cfg.records.items()}
        self._named_shape = Shape("rows", "data", cfg.columns)  # a file without a header row
        if cfg.quote_char is None:
            self._dialect = {"delimiter": cfg.delimiter, "quoting": csv.QUOTE_NONE, "escapechar": cfg.escape_char}
        else:
            self._dialect = {
                "delimiter": cfg.delimiter,
                "quotechar": cfg.quote_char,
                "escapechar": cfg.escape_char,
                "doublequote": cfg.escape_char is None,
            }

    # --- reading -----------------------------------------------------------------------

    def _rows(self, text: str) -> Iterator[Row]:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True, **self._dialect)
        trim = self.config.trim
        try:
            for cells in reader:
                yield reader.line_num, ([c.strip() for c in cells] if trim else cells)
        except csv.Error as exc:
            reason = str(exc).split(":")[0]  # csv's reasons describe the quoting, not the content
            raise ParseError(f"malformed delimited text ({reason})", f"line {reader.line_num}") from None

    def _split_rows(self, raw: bytes) -> tuple[list[Row], Row | None, Iterator[Row]]:
        """(preamble rows, header row or None, the remaining rows) of a payload."""
        rows = self._rows(decode(raw, self.config.encoding))
        preamble = []
        for _ in range(self.config.skip_rows):
            row = next(rows, None)
            if row is None:
                break
            preamble.append(row)
        header = None
        if self._header:
            header = next((r for r in rows if any(r[1])), None)
            if header is None:
                raise ParseError("the file has no column header row", f"line {self.config.skip_rows + 1}")
        return preamble, header, rows

    def parse(self, raw: bytes) -> FlatDocument:
        """Parse a whole file; ``ParseError`` names the line and column, never the value."""
        preamble_rows, header, rows = self._split_rows(raw)
        preamble = [Record("preamble", "preamble", n, cells, {}) for n, cells in preamble_rows]
        if self.config.records:
            return assemble(self._typed(rows), preamble, self._shapes)
        shape = self._header_shape(header) if header is not None else self._named_shape
        width = shape.width if header is not None or self.config.columns else 0
        records = []
        build = shape.build
        for number, cells in rows:
            if not cells or (len(cells) == 1 and not cells[0]):
                continue
            if width and len(cells) > width and any(cells[width:]):
                raise ParseError(f"{len(cells)} fields, the layout has {width}", f"line {number}")
            records.append(build(number, cells))
        return FlatDocument(records, preamble)

    def _header_shape(self, header: Row) -> Shape:
        number, names = header
        positions: dict[str, int] = {}
        for position, name in enumerate(names):
            positions.setdefault(name, position)
        present, where = [], []
        for column in self.config.columns:
            if column.name in positions:
                present.append(column)
                where.append(positions[column.name])
            elif column.required:
                raise ParseError(f"the column header has no column '{column.name}'", f"line {number}")
        shape = Shape("rows", "data", present, where)
        shape.names = positions
        shape.width = len(names)
        return shape

    def _typed(self, rows: Iterator[Row]) -> Iterator[Record]:
        column = (self.config.type_column or 1) - 1
        shapes = self._shapes
        for number, cells in rows:
            if not cells or (len(cells) == 1 and not cells[0]):
                continue
            code = cells[column] if column < len(cells) else ""
            shape = shapes.get(code)
            if shape is None:
                known = ", ".join(shapes)
                raise ParseError(f"unknown record type (expected one of {known})", f"line {number}")
            if len(cells) > shape.width and any(cells[shape.width :]):
                raise ParseError(f"{len(cells)} fields, record {code} has {shape.width}", f"line {number}")
            yield shape.build(number, cells)

    # --- DataType protocol -------------------------------------------------------------

    def split(self, raw: bytes) -> list[bytes]:
        """With ``per_row``: one message per data record, keeping the rows before it (preamble,
        column header, header record) and the trailer with its count set for that message.

        Never raises: a file that does not parse is returned whole, for ``parse`` to reject.
        """
        if not self.config.per_row:
            return [raw]
        try:
            doc = self.parse(raw)
            preamble, header, rows = self._split_rows(raw)
            kept = [cells for _, cells in preamble] + ([header[1]] if header is not None else [])
            others = [cells for _, cells in rows if cells and not (len(cells) == 1 and not cells[0])]
        except ParseError:
            return [raw]
        if len(doc.data) <= 1:
            return [raw]
        roles = [r.role for r in doc.records]
        head = [cells for cells, role in zip(others, roles, strict=True) if role == "header"]
        tail = [cells for cells, role in zip(others, roles, strict=True) if role == "trailer"]
        data = [cells for cells, role in zip(others, roles, strict=True) if role == "data"]
        trailer = next((s for s in self._shapes.values() if s.role == "trailer"), None)
        if tail and trailer is not None and trailer.count_position >= 0:
            count = 1 + (len(head) + 1 if trailer.counts == "all" else 0)
            cells = list(tail[0])
            cells[trailer.count_position] = str(count)
            tail = [cells]
        parts = []
        try:
            for cells in data:
                out = io.StringIO()
                writer = csv.writer(out, lineterminator="\r\n", **self._dialect)
                writer.writerows([*kept, *head, cells, *tail])
                parts.append(out.getvalue().encode(self.config.encoding))
        except csv.Error:
            return [raw]  # a value that cannot be written back without quoting (quote_char: null)
        return parts

    def header(self, raw: bytes) -> Header:
        return control_header(self, raw, self.config.control_id_path)

    def validate(self, raw: bytes) -> list[str]:
        return []

    def check_path(self, path: str) -> object:
        return check_path_against(path, self._shapes, self._closed_names())

    def _closed_names(self) -> dict[str, set[str]] | None:
        if self.config.records:
            return {code: set(shape.names) for code, shape in self._shapes.items()}
        if not self._header and self.config.columns:
            return {"rows": {c.name for c in self.config.columns}}
        return None

    def respond(self, raw: bytes, outcome: Outcome) -> bytes | None:
        return None  # files have no sender to answer
