"""Tryton ERP connectors: a destination (stock usage, supplier invoices) and a product poller.

Both speak Tryton's JSON-RPC over HTTP (``POST <url>/<database>/rpc/``, basic auth) with
the aiohttp client; this module holds only the configuration models and specs, so
validating a channel imports neither aiohttp nor the connectors.
"""

from __future__ import annotations

from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from engine.connectors.http import http_url
from engine.core.channel import DestinationConfig, SourceConfig, Strict
from engine.core.spec import Example, destination_spec, source_spec

__all__ = [
    "TRYTON_DESTINATION",
    "TRYTON_SOURCE",
    "StockUsageSettings",
    "SupplierInvoiceSettings",
    "TrytonDestinationConfig",
    "TrytonSourceConfig",
]

DEFAULT_UOM_MAP = {"EA": "u"}


class _Connection(Strict):
    """Where Tryton is and who Junction is there (shared by the source and the destination)."""

    url: str = Field(
        "",
        description="Base URL of trytond, e.g. ${TRYTON_URL} = http://erp.example.org:8000; empty holds the channel.",
    )
    database: str = Field(min_length=1, description="Tryton database name (the first path part of /<db>/rpc/).")
    username: str = Field("", description="Tryton login of the integration user; may come from ${VAR}.")
    password: SecretStr = Field(
        SecretStr(""), description="Password of that user; write ${VAR}, never the password itself."
    )
    timeout_secs: float = Field(30.0, gt=0, description="Give up on one JSON-RPC call after this long.")
    verify_tls: bool = Field(True, description="Verify the server certificate (https); false only for tests.")

    @field_validator("url")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        return http_url(value)

    @field_validator("database")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "?" in value or "#" in value:
            raise ValueError("database is a name, not a path (no '/', '?' or '#')")
        return value

    def connection_problem(self) -> str | None:
        """Why the connection cannot work as configured (no secret quoted), else None."""
        unset = "; set the environment variable used in the channel file"
        parts = urlsplit(self.url)
        if not self.url:
            return "url is not configured (empty)" + unset
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            return "url is not an absolute http:// or https:// address" + unset
        if parts.username or parts.password:
            return "url must not carry credentials; use username and password"
        if not self.username:
            return "username is empty" + unset
        if ":" in self.username:
            return "username may not contain a colon (basic auth separates user and password with one)"
        if not self.password.get_secret_value():
            return "password is empty" + unset
        return None


class StockUsageSettings(Strict):
    """How a canonical SupplyUsage becomes a done stock move in Tryton."""

    from_location: str = Field(
        min_length=1, description="Code (or else exact name) of the storage location the item is taken from."
    )
    to_location: str = Field(
        "Lost and Found",
        min_length=1,
        description="Code or name of the consumption location (a storage or lost-and-found location).",
    )
    lot: Literal["create", "require", "ignore"] = Field(
        "create",
        description="A usage's lot number: create the stock.lot when Tryton has none (create), "
        "fail the message (require), or do not record lots (ignore).",
    )
    uom_map: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_UOM_MAP),
        description="Junction unit code (X12 355, e.g. EA) -> Tryton unit symbol or name (e.g. u). "
        "A unit not listed is used when it equals the product's default unit symbol.",
    )


class SupplierInvoiceSettings(Strict):
    """How a canonical Invoice becomes a draft supplier invoice matched to its purchase."""

    party_match: list[Literal["code", "name"]] = Field(
        default_factory=lambda: ["code", "name"],  # type: ignore[arg-type]
        min_length=1,
        description="How to find the supplier party: by code (each of the invoice supplier's ids), "
        "then by exact name; tried in this order.",
    )
    purchase_match: Literal["number", "reference", "either"] = Field(
        "either", description="Which purchase field must equal the invoice's po_number."
    )
    require_purchase: bool = Field(
        True, description="Fail an invoice without po_number or whose purchase Tryton does not have."
    )
    journal: str | None = Field(None, description="Code of the expense journal; default: the first expense journal.")
    uom_map: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_UOM_MAP),
        description="Junction unit code -> Tryton unit symbol or name, for lines without a purchase line.",
    )


class TrytonDestinationConfig(DestinationConfig, _Connection):
    """Post canonical business objects into a Tryton ERP."""

    flow: Literal["stock-usage", "supplier-invoice"] = Field(
        description="stock-usage: SupplyUsage -> done stock move (lowers on-hand stock); "
        "supplier-invoice: Invoice -> draft supplier invoice matched to its purchase."
    )
    stock_usage: StockUsageSettings | None = Field(None, description="Settings of the stock-usage flow.")
    supplier_invoice: SupplierInvoiceSettings | None = Field(None, description="Settings of the supplier-invoice flow.")

    @model_validator(mode="after")
    def _flow_settings(self) -> Self:
        if self.flow == "stock-usage" and self.stock_usage is None:
            raise ValueError("flow stock-usage needs a stock_usage block (at least from_location)")
        if self.flow == "supplier-invoice" and self.stock_usage is not None:
            raise ValueError("stock_usage settings do not apply to flow supplier-invoice")
        if self.flow == "stock-usage" and self.supplier_invoice is not None:
            raise ValueError("supplier_invoice settings do not apply to flow stock-usage")
        return self


class TrytonSourceConfig(SourceConfig, _Connection):
    """Poll Tryton products and submit each new or changed one as a canonical Item (JSON)."""

    model: Literal["product.product"] = Field("product.product", description="What to poll (products).")
    poll_secs: float = Field(60.0, gt=0, description="Poll this often; the first poll runs at start.")
    include_inactive: bool = Field(
        True, description="Also send deactivated products (as active: false, an MDC in MFN^M16)."
    )
    goods_only: bool = Field(True, description="Only products of type goods (no services).")
    uom_codes: dict[str, str] = Field(
        default_factory=lambda: {"u": "EA"},
        description="Tryton unit symbol -> Junction unit code (X12 355); unlisted symbols are upper-cased.",
    )
    overlap_secs: float = Field(
        60.0,
        ge=0,
        description="Re-read products changed this long before the newest one seen (late commits); "
        "versions already submitted are dropped as duplicates.",
    )
    batch_size: int = Field(500, ge=1, le=10000, description="Products read per JSON-RPC call.")


TRYTON_DESTINATION = destination_spec(
    name="tryton",
    summary="Post SupplyUsage as a done stock move (with lot) or an Invoice as a draft supplier invoice "
    "matched to its purchase into Tryton over JSON-RPC; idempotent across retries.",
    config=TrytonDestinationConfig,
    factory="engine.connectors.tryton.destination:TrytonDestination",
    status="beta",
    since="0.4",
    capabilities=frozenset({"tls"}),
    examples=(
        Example(
            "Implant usage in the OR lowers Tryton stock",
            "type: tryton\n"
            "name: erp-stock\n"
            "url: ${TRYTON_URL}\n"
            "database: hospital\n"
            "username: junction\n"
            "password: ${TRYTON_PASSWORD}\n"
            "flow: stock-usage\n"
            "stock_usage:\n"
            "  from_location: OR1\n"
            "  to_location: Lost and Found\n"
            "  lot: create\n"
            "  uom_map: {EA: u, BX: box}\n",
        ),
        Example(
            "Supplier invoices (X12 810) as draft invoices in Tryton",
            "type: tryton\n"
            "name: erp-invoices\n"
            "url: ${TRYTON_URL}\n"
            "database: hospital\n"
            "username: junction\n"
            "password: ${TRYTON_PASSWORD}\n"
            "flow: supplier-invoice\n"
            "supplier_invoice:\n"
            "  party_match: [code, name]\n"
            "  purchase_match: number\n"
            "retry: {max_attempts: 0, backoff_secs: 5, max_backoff_secs: 600}\n",
        ),
    ),
)

TRYTON_SOURCE = source_spec(
    name="tryton",
    summary="Poll Tryton products (new or changed since the last poll) and submit each as a canonical Item "
    "in JSON, exactly once per product version.",
    config=TrytonSourceConfig,
    factory="engine.connectors.tryton.source:TrytonSource",
    status="beta",
    since="0.4",
    examples=(
        Example(
            "Item master from Tryton every five minutes",
            "type: tryton\n"
            "url: ${TRYTON_URL}\n"
            "database: hospital\n"
            "username: junction\n"
            "password: ${TRYTON_PASSWORD}\n"
            "poll_secs: 300\n"
            "uom_codes: {u: EA, box: BX}\n",
        ),
    ),
)
