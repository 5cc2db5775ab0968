"""The ``tryton`` destination: canonical objects -> Tryton records over JSON-RPC.

Two flows, each idempotent across retries and restarts:

- ``stock-usage``: a canonical ``SupplyUsage`` (one object or a list) becomes one internal
  shipment from the configured storage location (e.g. the OR) to the consumption location,
  with one stock move per usage (product by code, lot by number, quantity and unit), driven
  to ``done`` at once, which lowers the on-hand quantity. Tryton's stock moves have no free
  text field, so the shipment's ``reference`` carries Junction's idempotency key; the
  shipment and its moves are created in one call (one transaction), and a retry finds the
  shipment by that key and only finishes what is left (wait, assign, do). Returns
  (negative quantities) go the other way in a second shipment.
- ``supplier-invoice``: a canonical ``Invoice`` becomes a draft supplier invoice
  (``account.invoice`` of type ``in``) for the supplier party, whose lines point at the
  purchase lines (``origin``) of the purchase whose number or reference is the invoice's
  ``po_number``. The supplier's invoice number is the Tryton invoice's ``reference``: an
  invoice with that reference for that party is never created twice.

Tryton's refusals (``UserError``, ``UserWarning``, unknown product, missing location) fail
the message with Tryton's first line; transport errors, HTTP 5xx and refused credentials are
retried.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from engine.connectors.tryton import SupplierInvoiceSettings, TrytonDestinationConfig
from engine.connectors.tryton.payloads import InvoiceIn, InvoiceLineIn, UsageIn
from engine.connectors.tryton.rpc import TrytonClient
from engine.core.errors import PermanentError, RetryableError
from engine.core.message import Outbound, SendResult

__all__ = ["TrytonDestination", "describe_validation_error"]

SHIPMENT = "stock.shipment.internal"
MAX_TRANSITIONS = 6
CONSUMPTION_TYPES = ["storage", "lost_found"]
M = TypeVar("M", bound=BaseModel)


def describe_validation_error(exc: ValidationError, what: str) -> str:
    """Where the content does not fit the canonical model, without quoting values."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:3]:
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        problems.append(f"{where}: {error['msg']}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return f"content is not a canonical {what}: " + "; ".join(problems) + more


def _sub(row: dict[str, Any], field: str, name: str) -> Any:
    """A value read through a relation: Tryton answers ``field.name`` as ``{"field.": {...}}``."""
    nested = row.get(field + ".")
    return nested.get(name) if isinstance(nested, dict) else None


def _parse_many(content: bytes, model: type[M], what: str) -> list[M]:
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PermanentError(f"content is not JSON (a canonical {what} was expected)") from exc
    items = data if isinstance(data, list) else [data]
    if not items:
        raise PermanentError(f"content is an empty list (a canonical {what} was expected)")
    parsed = []
    for number, element in enumerate(items, 1):
        try:
            parsed.append(model.model_validate(element, strict=False))
        except ValidationError as exc:
            prefix = f"{what} {number}: " if len(items) > 1 else ""
            raise PermanentError(prefix + describe_validation_error(exc, what)) from exc
    return parsed


def _first_id(result: Any) -> int:
    if isinstance(result, list) and result and isinstance(result[0], int):
        return result[0]
    raise RetryableError("Tryton answered a create call without the new record id")


class TrytonDestination:
    """Creates Tryton records from canonical objects; see the module docstring for the flows.

    dest = TrytonDestination(config, channel="or-usage", base_dir=root, log=log)
    await dest.open()
    result = await dest.send(outbound)  # result.response: JSON naming the Tryton record
    await dest.close()
    """

    def __init__(
        self,
        config: TrytonDestinationConfig,
        *,
        channel: str,
        base_dir: Path,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.config = config
        self.channel = channel
        self._log = log
        self.problem: str | None = config.connection_problem()
        self.client = TrytonClient(
            config.url,
            config.database,
            config.username,
            config.password.get_secret_value(),
            timeout_secs=config.timeout_secs,
            verify_tls=config.verify_tls,
        )
        self._locations: dict[str, int] = {}
        self._uoms: dict[str, int] = {}

    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    async def send(self, item: Outbound) -> SendResult:
        """Deliver one message per the configured flow; raise on failure (see module docstring)."""
        if self.problem:
            raise RetryableError(self.problem)
        started = time.monotonic()
        if self.config.flow == "stock-usage":
            record = await self._stock_usage(item)
        else:
            record = await self._supplier_invoice(item)
        self._log.info(
            "Tryton record written.",
            extra={
                "destination": self.config.name,
                "message_id": item.message_id,
                "flow": self.config.flow,
                "model": record["model"],
                "record_id": record["id"],
                "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        body = json.dumps(record, default=str).encode("utf-8")
        detail = f"Tryton {record['model']} {record['id']} {record.get('state', '')}".strip()
        return SendResult(response=body, detail=detail, content_type="application/json")

    # -- lookups -------------------------------------------------------------------------

    async def _location(self, key: str) -> int:
        """A storage or lost-and-found location by code, else by exact name (cached)."""
        if key not in self._locations:
            for field in ("code", "name"):
                found = await self.client.search_read(
                    "stock.location", [[field, "=", key], ["type", "in", CONSUMPTION_TYPES]], ["id"], limit=2
                )
                if len(found) > 1:
                    raise PermanentError(f"Tryton has several storage locations with {field} {key!r}; use a code")
                if found:
                    self._locations[key] = int(found[0]["id"])
                    break
            else:
                raise PermanentError(f"Tryton has no storage or lost-and-found location with code or name {key!r}")
        return self._locations[key]

    async def _uom(self, code: str, uom_map: dict[str, str], product_uom: dict[str, Any], where: str) -> int:
        """The Tryton unit for a Junction unit code (via uom_map, else the product's default unit)."""
        target = uom_map.get(code)
        if target is None:
            symbol = str(_sub(product_uom, "default_uom", "symbol") or "")
            name = str(_sub(product_uom, "default_uom", "name") or "")
            if code.lower() in (symbol.lower(), name.lower()):
                return int(product_uom["default_uom"])
            raise PermanentError(f"{where}: unit {code!r} is not in uom_map and is not the product's default unit")
        if target not in self._uoms:
            for field in ("symbol", "name"):
                found = await self.client.search_read("product.uom", [[field, "=", target]], ["id"], limit=1)
                if found:
                    self._uoms[target] = int(found[0]["id"])
                    break
            else:
                raise PermanentError(f"{where}: Tryton has no unit with symbol or name {target!r} (uom_map)")
        return self._uoms[target]

    async def _product(self, code: str, where: str) -> dict[str, Any]:
        found = await self.client.search_read(
            "product.product",
            [["code", "=", code]],
            ["id", "default_uom", "default_uom.symbol", "default_uom.name"],
            limit=2,
        )
        if not found:
            raise PermanentError(f"{where}: Tryton has no active product with code {code!r}")
        if len(found) > 1:
            raise PermanentError(f"{where}: Tryton has several products with code {code!r}")
        return found[0]

    async def _product_by_any(self, codes: list[str], where: str) -> dict[str, Any]:
        """The product whose code is one of an invoice line's item identifiers (in their order)."""
        for code in codes[:-1]:
            try:
                return await self._product(code, where)
            except PermanentError:
                continue
        return await self._product(codes[-1], where)

    # -- stock-usage -----------------------------------------------------------------------

    async def _stock_usage(self, item: Outbound) -> dict[str, Any]:
        settings = self.config.stock_usage
        assert settings is not None  # the config validator guarantees it
        usages = _parse_many(item.content, UsageIn, "SupplyUsage")
        for number, usage in enumerate(usages, 1):
            if usage.quantity == 0:
                raise PermanentError(f"usage {number}: quantity is zero")
        storage = await self._location(settings.from_location)
        consumption = await self._location(settings.to_location)
        groups = [
            ("use", item.idempotency_key, storage, consumption, [u for u in enumerate(usages, 1) if u[1].quantity > 0]),
            (
                "return",
                item.idempotency_key + "/return",
                consumption,
                storage,
                [u for u in enumerate(usages, 1) if u[1].quantity < 0],
            ),
        ]
        records = []
        for direction, reference, source, target, group in groups:
            if group:
                records.append(await self._shipment(reference, source, target, group, direction))
        record = dict(records[0])
        if len(records) > 1:
            record["return_shipment"] = records[1]["id"]
        return record

    async def _shipment(
        self, reference: str, source: int, target: int, group: list[tuple[int, UsageIn]], direction: str
    ) -> dict[str, Any]:
        found = await self.client.search_read(SHIPMENT, [["reference", "=", reference]], ["id", "state"], limit=1)
        if found:
            shipment_id, state = int(found[0]["id"]), str(found[0]["state"])
            self._log.info("Tryton shipment exists already; finishing it.", extra={"record_id": shipment_id})
        else:
            shipment_id = await self._create_shipment(reference, source, target, group, direction)
            state = "draft"
        state = await self._finish(shipment_id, state)
        moves = await self.client.search_read(
            "stock.move", [["shipment", "=", f"{SHIPMENT},{shipment_id}"]], ["id", "state", "lot"]
        )
        return {
            "model": SHIPMENT,
            "id": shipment_id,
            "state": state,
            "moves": [int(m["id"]) for m in moves],
            "direction": direction,
        }

    async def _create_shipment(
        self, reference: str, source: int, target: int, group: list[tuple[int, UsageIn]], direction: str
    ) -> int:
        settings = self.config.stock_usage
        assert settings is not None
        context = await self.client.preferences()
        company = context.get("company")
        if not company:
            raise PermanentError("the Tryton user has no current company; set one in the user's preferences")
        today = dt.date.today()
        moves = []
        used_on = today
        for number, usage in group:
            where = f"usage {number}"
            product = await self._product(usage.item.value, where)
            unit = await self._uom(usage.uom, settings.uom_map, product, where)
            move: dict[str, Any] = {
                "product": int(product["id"]),
                "unit": unit,
                "quantity": float(abs(usage.quantity)),
                "from_location": source,
                "to_location": target,
                "company": company,
            }
            lot = await self._lot(usage, int(product["id"]), where)
            if lot is not None:
                move["lot"] = lot
            moves.append(move)
            used_on = min(used_on, usage.used_at.date())
        values = {
            "reference": reference,
            "company": company,
            "from_location": source,
            "to_location": target,
            "planned_date": used_on,
            "planned_start_date": used_on,
            "effective_date": used_on,
            "moves": [["create", moves]],
        }
        shipment_id = _first_id(await self.client.model(SHIPMENT, "create", [values]))
        self._log.info(
            "Tryton shipment created.", extra={"record_id": shipment_id, "moves": len(moves), "direction": direction}
        )
        return shipment_id

    async def _lot(self, usage: UsageIn, product: int, where: str) -> int | None:
        settings = self.config.stock_usage
        assert settings is not None
        if not usage.lot or settings.lot == "ignore":
            return None
        found = await self.client.search_read(
            "stock.lot", [["number", "=", usage.lot], ["product", "=", product]], ["id"], limit=1
        )
        if found:
            return int(found[0]["id"])
        if settings.lot == "require":
            raise PermanentError(f"{where}: Tryton has no lot with this number for the product (lot: require)")
        return _first_id(await self.client.model("stock.lot", "create", [{"number": usage.lot, "product": product}]))

    async def _finish(self, shipment_id: int, state: str) -> str:
        """Drive the shipment to done: draft -> waiting -> assigned (forced) -> done."""
        steps = {"draft": "wait", "waiting": "assign_force", "assigned": "do"}
        for _ in range(MAX_TRANSITIONS):
            if state == "done":
                return state
            if state not in steps:
                raise PermanentError(f"Tryton shipment {shipment_id} is {state}; it cannot be completed automatically")
            await self.client.model(SHIPMENT, steps[state], [shipment_id])
            rows = await self.client.model(SHIPMENT, "read", [shipment_id], ["state"])
            state = str(rows[0]["state"]) if rows else "missing"
        raise RetryableError(f"Tryton shipment {shipment_id} did not reach done (still {state})")

    # -- supplier-invoice ------------------------------------------------------------------

    async def _supplier_invoice(self, item: Outbound) -> dict[str, Any]:
        settings = self.config.supplier_invoice or SupplierInvoiceSettings.model_validate({})
        invoices = _parse_many(item.content, InvoiceIn, "Invoice")
        if len(invoices) != 1:
            raise PermanentError("content holds several invoices; send one Invoice per message")
        invoice = invoices[0]
        party = await self._party(invoice, settings.party_match)
        existing = await self.client.search_read(
            "account.invoice",
            [["type", "=", "in"], ["party", "=", party], ["reference", "=", invoice.invoice_number]],
            ["id", "state"],
            limit=1,
        )
        if existing:
            self._log.info("Tryton invoice exists already.", extra={"record_id": existing[0]["id"]})
            return {"model": "account.invoice", "id": int(existing[0]["id"]), "state": existing[0]["state"]}
        purchase = await self._purchase(invoice.po_number, settings.purchase_match, settings.require_purchase)
        values = await self._invoice_values(invoice, party, purchase, settings.uom_map, settings.journal)
        invoice_id = _first_id(await self.client.model("account.invoice", "create", [values]))
        return {
            "model": "account.invoice",
            "id": invoice_id,
            "state": "draft",
            "purchase": purchase["id"] if purchase else None,
        }

    async def _party(self, invoice: InvoiceIn, match: Sequence[str]) -> int:
        for how in match:
            if how == "code":
                for party_id in invoice.supplier.ids:
                    found = await self.client.search_read(
                        "party.party", [["code", "=", party_id.value]], ["id"], limit=2
                    )
                    if len(found) == 1:
                        return int(found[0]["id"])
            elif invoice.supplier.name:
                found = await self.client.search_read(
                    "party.party", [["name", "=", invoice.supplier.name]], ["id"], limit=2
                )
                if len(found) == 1:
                    return int(found[0]["id"])
        raise PermanentError("the invoice's supplier matches no single Tryton party (by " + ", ".join(match) + ")")

    async def _purchase(self, po_number: str | None, match: str, required: bool) -> dict[str, Any] | None:
        if not po_number:
            if required:
                raise PermanentError("the invoice has no po_number; it cannot be matched to a Tryton purchase")
            return None
        fields = ["number", "reference"] if match == "either" else [match]
        for field in fields:
            found = await self.client.search_read(
                "purchase.purchase",
                [[field, "=", po_number], ["state", "in", ["confirmed", "processing", "done"]]],
                ["id", "currency", "payment_term", "invoice_address"],
                limit=2,
            )
            if len(found) > 1:
                raise PermanentError(f"several confirmed Tryton purchases have this {field}")
            if found:
                purchase = found[0]
                purchase["lines"] = await self.client.search_read(
                    "purchase.line",
                    [["purchase", "=", purchase["id"]], ["type", "=", "line"]],
                    ["id", "product", "product.code", "unit", "unit_price", "description", "taxes"],
                    order=[["sequence", "ASC"], ["id", "ASC"]],
                )
                return purchase
        if required:
            raise PermanentError("Tryton has no confirmed purchase with the invoice's po_number")
        return None

    async def _invoice_values(
        self,
        invoice: InvoiceIn,
        party: int,
        purchase: dict[str, Any] | None,
        uom_map: dict[str, str],
        journal_code: str | None,
    ) -> dict[str, Any]:
        context = await self.client.preferences()
        company = context.get("company")
        if not company:
            raise PermanentError("the Tryton user has no current company; set one in the user's preferences")
        party_rows = await self.client.model(
            "party.party", "read", [party], ["addresses", "account_payable", "supplier_payment_term"]
        )
        party_row = party_rows[0]
        payable = party_row.get("account_payable")
        if not payable:  # the accounting configuration's default, as Tryton itself falls back to
            config_rows = await self.client.model("account.configuration", "read", [1], ["default_account_payable"])
            payable = config_rows[0].get("default_account_payable") if config_rows else None
        address = (purchase or {}).get("invoice_address") or next(iter(party_row.get("addresses") or []), None)
        if not address:
            raise PermanentError("the supplier party has no address in Tryton (an invoice address is required)")
        if not payable:
            raise PermanentError("neither the supplier party nor the accounting configuration has a payable account")
        currency = (purchase or {}).get("currency") or await self._currency(invoice.currency)
        journal = await self._journal(journal_code)
        sign = Decimal(-1) if invoice.kind == "credit" else Decimal(1)
        used: set[int] = set()
        lines = []
        for number, line in enumerate(invoice.lines, 1):
            lines.append(await self._line_values(line, number, purchase, used, uom_map, sign, company, currency, party))
        values: dict[str, Any] = {
            "type": "in",
            "company": company,
            "party": party,
            "invoice_address": address,
            "currency": currency,
            "account": payable,
            "journal": journal,
            "reference": invoice.invoice_number,
            "invoice_date": invoice.invoice_date,
            "lines": [["create", lines]],
        }
        payment_term = (purchase or {}).get("payment_term") or party_row.get("supplier_payment_term")
        if payment_term:
            values["payment_term"] = payment_term
        if invoice.po_number:
            values["description"] = f"PO {invoice.po_number}"
        return values

    async def _line_values(
        self,
        line: InvoiceLineIn,
        number: int,
        purchase: dict[str, Any] | None,
        used: set[int],
        uom_map: dict[str, str],
        sign: Decimal,
        company: int,
        currency: int,
        party: int,
    ) -> dict[str, Any]:
        where = f"invoice line {number}"
        codes = [ident.value for ident in line.item.identifiers]
        match = _match_purchase_line(purchase, line, codes, used) if purchase else None
        if purchase and match is None:
            raise PermanentError(f"{where} matches no unbilled line of the Tryton purchase (by item code or PO line)")
        if match is not None:
            used.add(int(match["id"]))
            product_id = int(match["product"]) if match.get("product") else None
            # The purchase line's unit, unless the invoice names another mapped unit.
            unit = int(match["unit"])
            if line.uom in uom_map:
                unit = await self._uom(line.uom, uom_map, {}, where)
        else:
            product_row = await self._product_by_any(codes, where)
            product_id = int(product_row["id"])
            unit = await self._uom(line.uom, uom_map, product_row, where)
        account = await self._expense_account(product_id) if product_id is not None else None
        if not account:
            raise PermanentError(f"{where}: the product has no expense account in Tryton (its accounting category)")
        quantity = line.quantity if line.quantity < 0 else line.quantity * sign
        values: dict[str, Any] = {
            "type": "line",
            "invoice_type": "in",
            "company": company,
            "currency": currency,
            "party": party,
            "product": product_id,
            "unit": unit,
            "quantity": float(quantity),
            "unit_price": line.unit_price,
            "account": account,
            "description": (match or {}).get("description") or line.item.description or f"Line {line.line_number}",
        }
        if match is not None:
            values["origin"] = f"purchase.line,{int(match['id'])}"
            if match.get("taxes"):
                values["taxes"] = [["add", list(match["taxes"])]]
        return values

    async def _expense_account(self, product: int) -> int | None:
        """The product's expense account: its accounting category's (or that one's parent's)."""
        rows = await self.client.model("product.product", "read", [product], ["template.account_category"])
        category = _sub(rows[0], "template", "account_category") if rows else None
        for _ in range(5):  # categories may inherit accounts from their parent; bounded
            if not category:
                return None
            found = await self.client.model(
                "product.category", "read", [category], ["account_expense", "account_parent", "parent"]
            )
            if not found:
                return None
            if found[0].get("account_expense"):
                return int(found[0]["account_expense"])
            category = found[0].get("parent") if found[0].get("account_parent") else None
        return None

    async def _currency(self, code: str) -> int:
        found = await self.client.search_read("currency.currency", [["code", "=", code]], ["id"], limit=1)
        if not found:
            raise PermanentError(f"Tryton has no currency {code}")
        return int(found[0]["id"])

    async def _journal(self, code: str | None) -> int:
        domain: list[Any] = [["type", "=", "expense"]]
        if code:
            domain.append(["code", "=", code])
        found = await self.client.search_read("account.journal", domain, ["id"], limit=1)
        if not found:
            raise PermanentError("Tryton has no expense journal" + (" with the configured code" if code else ""))
        return int(found[0]["id"])


def _match_purchase_line(
    purchase: dict[str, Any] | None, line: InvoiceLineIn, codes: list[str], used: set[int]
) -> dict[str, Any] | None:
    """The purchase line an invoice line bills: the PO line number (1-based position) when its
    product code is one of the line's item codes, else the first unused line with such a code."""
    candidates = [pl for pl in (purchase or {}).get("lines", []) if int(pl["id"]) not in used]
    lines = (purchase or {}).get("lines", [])
    if line.po_line_number and line.po_line_number.isdigit():
        position = int(line.po_line_number)
        if 1 <= position <= len(lines):
            chosen = lines[position - 1]
            if int(chosen["id"]) not in used and (not codes or _sub(chosen, "product", "code") in codes):
                return dict(chosen)
    for candidate in candidates:
        if _sub(candidate, "product", "code") in codes:
            return dict(candidate)
    return None
