"""Table destination: a channel keeps a reference table up to date (e.g. an ERP item-master drop).

Each message replaces one reference table (``mappings/tables/NAME.csv``) through the
engine, exactly as ``junction table load`` does: the file is replaced atomically, every
deployed mapping that uses the folder reloads it at once, the version is recorded in the
store, and an invalid table changes nothing (the message fails with the reason).

The content is either CSV as it is (``format: csv``: a passthrough of the dropped file)
or JSON objects (``format: json``: a list of flat objects, e.g. canonical Items mapped
from the ERP feed), written as CSV with the ``columns`` given (column -> dotted path).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from engine.core.channel import DestinationConfig
from engine.core.contracts import EngineServices
from engine.core.errors import ConfigError, PermanentError, RetryableError
from engine.core.message import Outbound, SendResult
from engine.core.spec import Example, destination_spec
from engine.core.values import lookup

__all__ = ["TABLE_DESTINATION", "TableDestination", "TableDestinationConfig"]

_NAME = re.compile(r"[a-z0-9_]{1,64}")


class TableDestinationConfig(DestinationConfig):
    """Replace one reference table with each message."""

    table: str = Field(description="Table name (the file mappings/tables/NAME.csv): lower-case, digits, underscores.")
    format: Literal["csv", "json"] = Field(
        "csv", description="csv: the content is the table as it is; json: a list of objects written with `columns`."
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="format json: CSV column -> dotted path in each object (e.g. item_number: identifiers[0].value).",
    )
    min_rows: int = Field(
        1, ge=0, description="Refuse a table with fewer data rows (a truncated or empty drop must not wipe the table)."
    )

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("a table name is 1-64 lower-case letters, digits and underscores")
        return value

    @model_validator(mode="after")
    def _columns_for_json(self) -> TableDestinationConfig:
        if self.format == "json" and not self.columns:
            raise ValueError("format json needs columns (CSV column -> path in each object)")
        if self.format == "csv" and self.columns:
            raise ValueError("columns apply to format json only")
        return self


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def json_to_csv(content: bytes, columns: dict[str, str]) -> tuple[bytes, int]:
    """CSV bytes and the row count for a JSON object or list of objects."""
    try:
        data = json.loads(content)
    except ValueError as exc:
        raise PermanentError("format json: the content is not JSON") from exc
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    rows = data if isinstance(data, list) else [data]
    if not all(isinstance(row, dict) for row in rows):
        raise PermanentError("format json: expected objects (a list of JSON objects)")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(columns))
    for row in rows:
        writer.writerow([_cell(lookup(row, path)) for path in columns.values()])
    return out.getvalue().encode("utf-8"), len(rows)


def csv_rows(content: bytes) -> int:
    """Data rows of a CSV (records after the header), counting quoted line breaks correctly."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PermanentError("the table is not UTF-8 text") from exc
    return max(sum(1 for record in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in record)) - 1, 0)


class TableDestination:
    """Loads each message as a new version of one reference table."""

    def __init__(
        self,
        config: TableDestinationConfig,
        *,
        channel: str,
        base_dir: Path,
        log: logging.LoggerAdapter[logging.Logger],
        services: EngineServices | None = None,
    ) -> None:
        self.config = config
        self.channel = channel
        self._log = log
        self._services = services
        self.problem: str | None = None if services is not None else "the engine gave this destination no table service"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, item: Outbound) -> SendResult:
        if self._services is None:
            raise RetryableError(self.problem or "no table service")
        if self.config.format == "json":
            data, rows = json_to_csv(item.content, self.config.columns)
        else:
            data, rows = item.content, csv_rows(item.content)
        if rows < self.config.min_rows:
            raise PermanentError(
                f"table {self.config.table}: {rows} data rows, fewer than min_rows {self.config.min_rows}; "
                "the table in use was kept"
            )
        try:
            loaded = await self._services.load_table(self.config.table, data)
        except ConfigError as exc:
            reason = "; ".join(
                (f"line {d.location.line}: " if d.location.line else "") + (f"{d.path}: " if d.path else "") + d.message
                for d in exc.diagnostics[:5]
            )
            raise PermanentError(f"table {self.config.table} is invalid, the table in use was kept: {reason}") from exc
        self._log.info(
            "Reference table updated by the channel.",
            extra={"table": self.config.table, "version": loaded.get("version"), "rows": rows},
        )
        detail = f"table {self.config.table} version {loaded.get('version')} ({rows} rows)"
        return SendResult(response=json.dumps(loaded).encode(), detail=detail, content_type="application/json")


TABLE_DESTINATION = destination_spec(
    name="table",
    summary="Replace a reference table (mappings/tables/NAME.csv) with each message and reload its users.",
    config=TableDestinationConfig,
    factory="engine.connectors.table:TableDestination",
    status="beta",
    examples=(
        Example(
            "An ERP item-master CSV drop becomes the item_master table",
            "type: table\nname: item-master\ntable: item_master\n",
        ),
        Example(
            "Canonical Items (JSON) written as the item_master table",
            "type: table\n"
            "name: item-master\n"
            "table: item_master\n"
            "format: json\n"
            "columns:\n"
            "  item_number: identifiers[0].value\n"
            "  description: description\n"
            "  unit_of_measure: issue_uom\n"
            "  high_cost: high_cost\n"
            "  chargeable: chargeable\n"
            "  charge_code: charge_code\n",
        ),
    ),
)
