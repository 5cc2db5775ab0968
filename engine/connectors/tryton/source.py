"""The ``tryton`` source: polls Tryton products and submits each as a canonical Item (JSON).

The first poll (at start) reads every product; later polls read those whose product or
template was created or written at or after the newest timestamp seen so far (``>=``, so a
record written in the same instant as the cursor is not missed), minus ``overlap_secs``
for transactions that committed after a later one. Each product version is
submitted with ``dedupe_key = tryton:<database>:product.product:<id>:<timestamp>``: the
runtime stores a version once, so re-polls after a restart (the cursor lives in memory)
never duplicate a message.

Each message is one JSON object shaped as ``engine.canonical.item.Item``: the product code
as ``buyer_item`` identifier, the name as description, the default unit as base/issue/
billing unit, the purchase unit (with its factor as a pack level when it differs),
``active``, ``lot_controlled`` (stock_lot's lot_required) and ``unit_cost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from engine.connectors.tryton import TrytonSourceConfig
from engine.connectors.tryton.rpc import TrytonClient
from engine.core.contracts import SourceContext
from engine.core.errors import DeliveryError

__all__ = ["TrytonSource", "item_from_product"]

PRODUCT_FIELDS = [
    "id",
    "code",
    "name",
    "active",
    "write_date",
    "create_date",
    "cost_price",
    "default_uom.symbol",
    "default_uom.factor",
    "purchase_uom.symbol",
    "purchase_uom.factor",
    "template.write_date",
    "template.create_date",
    "template.lot_required",
    "template.purchasable",
]
FAILURE_BACKOFF_SECS = 5.0


def _sub(row: dict[str, Any], field: str, name: str) -> Any:
    nested = row.get(field + ".")
    return nested.get(name) if isinstance(nested, dict) else None


def product_version(row: dict[str, Any]) -> dt.datetime | None:
    """The newest create/write timestamp of a product and its template."""
    stamps = [
        row.get("write_date"),
        row.get("create_date"),
        _sub(row, "template", "write_date"),
        _sub(row, "template", "create_date"),
    ]
    found = [s for s in stamps if isinstance(s, dt.datetime)]
    return max(found) if found else None


def _unit_code(symbol: Any, codes: dict[str, str]) -> str:
    text = str(symbol or "").strip()
    return codes.get(text) or (text.upper()[:10] if text else "EA")


def item_from_product(row: dict[str, Any], uom_codes: dict[str, str]) -> dict[str, Any]:
    """The canonical Item (as JSON data) for one product row; ``ValueError`` when it has no code.

    >>> row = {"id": 3, "code": "ITM-1", "name": "Stent", "active": True,
    ...        "default_uom.": {"symbol": "u", "factor": 1.0}, "purchase_uom.": {"symbol": "box", "factor": 10.0}}
    >>> item = item_from_product(row, {"u": "EA", "box": "BX"})
    >>> item["base_uom"], item["purchase_uom"], item["pack_levels"]
    ('EA', 'BX', [{'uom': 'BX', 'base_quantity': '10'}])
    """
    code = str(row.get("code") or "").strip()
    if not code:
        raise ValueError("product has no code")
    base = _unit_code(_sub(row, "default_uom", "symbol"), uom_codes)
    purchase = _unit_code(_sub(row, "purchase_uom", "symbol") or _sub(row, "default_uom", "symbol"), uom_codes)
    pack_levels = []
    if purchase != base:
        base_factor = _sub(row, "default_uom", "factor") or 1
        purchase_factor = _sub(row, "purchase_uom", "factor") or 1
        ratio = Decimal(format((Decimal(str(purchase_factor)) / Decimal(str(base_factor))).normalize(), "f"))
        if ratio <= 0:
            purchase = base
        else:
            pack_levels.append({"uom": purchase, "base_quantity": str(ratio)})
    lot_required = _sub(row, "template", "lot_required")
    cost = row.get("cost_price")
    data: dict[str, Any] = {
        "schema_version": "1.0",
        "identifiers": [{"type": "buyer_item", "value": code}],
        "description": str(row.get("name") or code),
        "base_uom": base,
        "pack_levels": pack_levels,
        "purchase_uom": purchase,
        "issue_uom": base,
        "billing_uom": base,
        "active": bool(row.get("active", True)),
        "lot_controlled": bool(lot_required),
    }
    if isinstance(cost, Decimal) and cost.is_finite():
        data["unit_cost"] = str(cost)
    return data


class TrytonSource:
    """Polls ``product.product`` every ``poll_secs`` and submits new or changed products.

    source = TrytonSource(config, ctx)
    await source.start()   # the first poll runs at once, in the background
    await source.stop()
    """

    def __init__(self, config: TrytonSourceConfig, ctx: SourceContext) -> None:
        self.config = config
        self._ctx = ctx
        self._log = ctx.log
        self.problem = config.connection_problem()
        self.client = TrytonClient(
            config.url,
            config.database,
            config.username,
            config.password.get_secret_value(),
            timeout_secs=config.timeout_secs,
            verify_tls=config.verify_tls,
        )
        self.cursor: dt.datetime | None = None
        self.polls = 0
        self.submitted = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def address(self) -> str | None:
        """What it polls: scheme://host:port/database model (no credentials)."""
        parts = urlsplit(self.config.url)
        if not parts.hostname:
            return None
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        return f"{parts.scheme.lower()}://{parts.hostname}:{port}/{self.config.database} {self.config.model}"

    async def start(self) -> None:
        await self.client.open()
        self._task = asyncio.create_task(self._loop(), name=f"tryton:{getattr(self._ctx, 'channel', '')}")
        self._log.info("Polling Tryton products.", extra={"poll_secs": self.config.poll_secs})

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.client.close()
        self._log.info("Stopped polling Tryton.")

    @property
    def running(self) -> bool:
        """Whether the poll loop is alive (a failed poll never ends it)."""
        return self._task is not None and not self._task.done()

    def poll_now(self) -> None:
        """Wake the poller at once (tests, admin actions)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            wait = self.config.poll_secs
            if self.problem:
                self.last_error = self.problem
                self._log.warning("Tryton source cannot poll.", extra={"problem": self.problem})
            else:
                try:
                    await self.poll()
                    self.last_error = None
                except asyncio.CancelledError:
                    raise
                except DeliveryError as exc:  # connection, auth, Tryton refusal: say so, retry
                    self.last_error = str(exc)
                    self._log.warning("Tryton poll failed; retrying.", extra={"reason": str(exc)})
                    wait = min(wait, FAILURE_BACKOFF_SECS)
                except Exception as exc:  # noqa: BLE001 - a poll failure must never stop the source
                    self.last_error = f"poll failed ({type(exc).__name__})"
                    self._log.warning("Tryton poll failed; retrying.", extra={"error_type": type(exc).__name__})
                    wait = min(wait, FAILURE_BACKOFF_SECS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()

    async def poll(self) -> int:
        """One poll: submit every product changed since the cursor; returns how many were new."""
        started = time.monotonic()
        domain: list[Any] = []
        if self.config.goods_only:
            domain.append(["type", "=", "goods"])
        if self.cursor is not None:
            # Overlap: a transaction that committed late may carry an older write_date.
            since = self.cursor - dt.timedelta(seconds=self.config.overlap_secs)
            domain.append(
                [
                    "OR",
                    ["write_date", ">=", since],
                    ["create_date", ">=", since],
                    ["template.write_date", ">=", since],
                    ["template.create_date", ">=", since],
                ]
            )
        context = {"active_test": False} if self.config.include_inactive else {}
        newest = self.cursor
        fresh = skipped = offset = 0
        while True:
            rows = await self.client.model(
                "product.product",
                "search_read",
                domain,
                offset,
                self.config.batch_size,
                [["id", "ASC"]],
                PRODUCT_FIELDS,
                context=context,
            )
            rows = list(rows or [])
            for row in rows:
                version = product_version(row)
                fresh_one, skip = await self._submit(row, version)
                fresh += fresh_one
                skipped += skip
                if version is not None and (newest is None or version > newest):
                    newest = version
            if len(rows) < self.config.batch_size:
                break
            offset += len(rows)
        self.cursor = newest  # only after every product of this poll was submitted
        self.polls += 1
        self._log.info(
            "Tryton products polled.",
            extra={
                "new": fresh,
                "skipped": skipped,
                "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return fresh

    async def _submit(self, row: dict[str, Any], version: dt.datetime | None) -> tuple[int, int]:
        record_id = int(row["id"])
        try:
            item = item_from_product(row, self.config.uom_codes)
        except (ValueError, ArithmeticError) as exc:
            reason = "no code" if not row.get("code") else f"units not convertible ({type(exc).__name__})"
            self._log.warning("Tryton product skipped.", extra={"record_id": record_id, "reason": reason})
            return 0, 1
        raw = json.dumps(item, sort_keys=True).encode("utf-8")
        stamp = version.isoformat() if version else "unknown"
        key = f"tryton:{self.config.database}:{self.config.model}:{record_id}:{stamp}"
        source = {"transport": "tryton", "model": self.config.model, "record_id": record_id}
        result = await self._ctx.submit(raw, source, dedupe_key=key)
        if result.status == "DUPLICATE":
            return 0, 0
        self.submitted += 1
        return 1, 0
