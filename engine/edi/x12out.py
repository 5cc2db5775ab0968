"""The ``x12`` destination: canonical JSON -> 850/855/856/810 in the partner's envelope, via its route.

For each message the destination

1. validates the content (one canonical object or a list of them) and builds the
   transaction sets; bad content is a ``PermanentError`` naming fields, never values;
2. allocates ISA13, GS06 and ST02s from the partner's counters, once per message and
   destination: the numbers, the timestamp and a hash of the content are remembered under
   ``edi:out:<message id>:<destination>``, so a retry sends a byte-identical interchange
   (a reprocessed message with different content gets new numbers);
3. wraps the sets in the partner's envelope and hands it to the partner's ``route``
   destination (file, sftp, http ...) as ``application/edi-x12``;
4. records the sent group for 997/999 reconciliation (``engine.edi.reconcile``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import inspect
import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from engine.core import registry
from engine.core.channel import DestinationConfig, Kebab
from engine.core.errors import ConfigError, PermanentError, RetryableError
from engine.core.message import Outbound, SendResult
from engine.core.spec import Example, destination_spec
from engine.core.store import MessageStore
from engine.datatypes.x12.writer import GroupSpec, InterchangeSpec, TransactionSet, WriteError, build_interchange
from engine.edi.control import ControlNumbers
from engine.edi.generate import GenerateError, generate
from engine.edi.partners import Partner, load_partner
from engine.edi.reconcile import SentGroup, overdue, record_sent

__all__ = ["X12_DESTINATION", "X12Destination", "X12DestinationConfig"]

OUT_PREFIX = "edi:out:"
ALERTED_PREFIX = "edi:ack-overdue-alerted:"
ACK_CHECK_SECS = 60.0
CONTENT_TYPE = "application/edi-x12"


class X12DestinationConfig(DestinationConfig):
    """Send canonical objects to a trading partner as X12 transaction sets."""

    partner: Kebab = Field(description="Partner name: the file config/partners/<partner>.yaml (see partners_dir).")
    transaction: Literal["850", "855", "856", "810"] = Field(
        description="Transaction set to generate: 850 order, 855 order acknowledgement, 856 ship notice, 810 invoice."
    )
    partners_dir: str = Field("config/partners", min_length=1, description="Folder of partner files, from the root.")


def _accepts_store(factory: Any) -> bool:
    try:
        return "store" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


class X12Destination:
    """Generates X12 for one partner and delivers it through the partner's route destination.

    Needs the message store (``store`` keyword) for control numbers; without it, or with an
    invalid partner file, ``problem`` says why and the runtime holds the queue.
    """

    def __init__(
        self,
        config: X12DestinationConfig,
        *,
        channel: str,
        base_dir: Path,
        log: logging.LoggerAdapter[logging.Logger],
        store: MessageStore | None = None,
    ) -> None:
        self.config = config
        self.channel = channel
        self._log = log
        self._store = store
        self.problem: str | None = None
        self.partner: Partner | None = None
        self.route: Any = None
        self._numbers = ControlNumbers(store) if store is not None else None
        self._watch: asyncio.Task[None] | None = None
        folder = base_dir / config.partners_dir
        file = next(
            (p for p in (folder / f"{config.partner}.yaml", folder / f"{config.partner}.yml") if p.is_file()), None
        )
        if file is None:
            self.problem = f"partner file {config.partner}.yaml not found in {config.partners_dir}"
            return
        try:
            self.partner = load_partner(file)
        except ConfigError as exc:
            first = exc.diagnostics[0] if exc.diagnostics else None
            self.problem = f"partner file is invalid: {first}" if first else "partner file is invalid"
            return
        if store is None:
            self.problem = "the x12 destination needs the message store for control numbers (runtime too old)"
            return
        route_config = self.partner.route
        factory = registry.get("destination", route_config.type).load_factory()
        kwargs: dict[str, Any] = {"channel": channel, "base_dir": base_dir, "log": log}
        if _accepts_store(factory):
            kwargs["store"] = store
        self.route = factory(route_config, **kwargs)
        route_problem = getattr(self.route, "problem", None)
        if route_problem:
            self.problem = f"partner route: {route_problem}"

    async def open(self) -> None:
        if self.route is not None:
            await self.route.open()
        if self._store is not None and self.partner is not None and self.partner.acks.expect != "none":
            self._watch = asyncio.create_task(self._watch_acks(), name=f"x12-acks-{self.config.name}")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        if self.route is not None:
            await self.route.close()

    async def _watch_acks(self) -> None:
        """Alert once for every group the partner has not acknowledged within ack_timeout_minutes."""
        while True:
            try:
                await self.check_overdue()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive a store hiccup
                self._log.warning("Could not check for overdue acknowledgements.", extra={"error": str(exc)[:200]})
            await asyncio.sleep(ACK_CHECK_SECS)

    async def check_overdue(self, *, now: float | None = None) -> list[SentGroup]:
        """Raise the alert (a warning log event, once per group) for overdue groups; return them."""
        assert self._store is not None and self.partner is not None
        raised = []
        for group in await overdue(self._store, self.partner, now=now):
            key = f"{ALERTED_PREFIX}{group.partner}:{group.gs06:09d}"
            if await self._store.get_values(key):
                continue
            self._log.warning(
                "X12 group not acknowledged in time.",
                extra={
                    "alert": "x12-ack-overdue",
                    "partner": group.partner,
                    "transaction": group.transaction,
                    "group_control": group.gs06,
                    "interchange_control": group.isa13,
                    "message_id": group.message_id,
                    "minutes": self.partner.acks.ack_timeout_minutes,
                },
            )
            await self._store.put_value(key, str(time.time()))
            raised.append(group)
        return raised

    async def flush(self) -> None:
        """Make the route's deliveries durable when it batches them (the file destination does)."""
        flush = getattr(self.route, "flush", None)
        if flush is not None:
            await flush()

    def _transaction_sets(self, content: bytes) -> list[TransactionSet]:
        assert self.partner is not None
        try:
            data = json.loads(content)
        except (ValueError, UnicodeDecodeError):
            raise PermanentError("the content is not JSON (expected canonical objects from the mapping)") from None
        objects = data if isinstance(data, list) else [data]
        if not objects:
            raise PermanentError("the content is an empty list: nothing to send")
        sets = []
        for index, obj in enumerate(objects):
            try:
                sets.append(generate(self.config.transaction, obj, order_type_code=self.partner.order_type_code))
            except GenerateError as exc:
                where = f"object {index + 1}: " if len(objects) > 1 else ""
                raise PermanentError(f"{where}{exc}") from None
        return sets

    def _build(self, sets: list[TransactionSet], isa13: int, gs06: int, st02: list[int], when: dt.datetime) -> bytes:
        partner = self.partner
        assert partner is not None
        interchange = InterchangeSpec(
            sender_qualifier=partner.us.isa_qualifier,
            sender_id=partner.us.isa_id,
            receiver_qualifier=partner.them.isa_qualifier,
            receiver_id=partner.them.isa_id,
            control=isa13,
            version=partner.isa_version,
            usage=partner.usage,
            ack_requested=partner.acks.ta1,
        )
        group = GroupSpec(
            partner.us.gs_id, partner.them.gs_id, gs06, partner.version, list(zip(st02, sets, strict=True))
        )
        try:
            return build_interchange(
                interchange, [group], partner.x12_delimiters, when=when, line_break=partner.line_break
            )
        except WriteError as exc:
            raise PermanentError(str(exc)) from None

    async def _allocate(self, item: Outbound, digest: str, count: int) -> dict[str, Any]:
        """Control numbers and timestamp for this message+destination, allocated once."""
        assert self._store is not None and self._numbers is not None and self.partner is not None
        key = OUT_PREFIX + item.idempotency_key
        previous = (await self._store.get_values(key)).get(key)
        if previous is not None:
            try:
                record: dict[str, Any] = json.loads(previous)
                if record.get("digest") == digest and len(record.get("st02", [])) == count:
                    return record
            except ValueError:
                pass  # unreadable: allocate anew
        name = self.partner.name
        record = {
            "isa13": await self._numbers.next(name, "interchange"),
            "gs06": await self._numbers.next(name, "group"),
            "st02": await self._numbers.take(name, "transaction", count),
            "at": dt.datetime.now(dt.UTC).replace(second=0, microsecond=0).isoformat(),
            "digest": digest,
        }
        await self._store.put_value(key, json.dumps(record, sort_keys=True))
        return record

    async def send(self, item: Outbound) -> SendResult:
        """Generate, envelope and deliver ``item``; see the module docstring."""
        if self.problem or self.partner is None or self.route is None:
            raise RetryableError(self.problem or "the x12 destination is not configured")
        sets = self._transaction_sets(item.content)
        when = dt.datetime.now(dt.UTC)
        self._build(sets, 1, 1, list(range(1, len(sets) + 1)), when)  # refuse bad content before using numbers
        digest = hashlib.sha256(item.content).hexdigest()
        record = await self._allocate(item, digest, len(sets))
        when = dt.datetime.fromisoformat(record["at"])
        isa13, gs06, st02 = int(record["isa13"]), int(record["gs06"]), [int(n) for n in record["st02"]]
        payload = self._build(sets, isa13, gs06, st02, when)
        wrapped = Outbound(
            message_id=item.message_id,
            channel=item.channel,
            destination=item.destination,
            correlation_id=item.correlation_id,
            content=payload,
            content_type=CONTENT_TYPE,
            control_id=f"{isa13:09d}",
            attempt=item.attempt,
            source=dict(item.source),
        )
        result: SendResult = await self.route.send(wrapped)
        assert self._store is not None
        await record_sent(
            self._store,
            SentGroup(
                partner=self.partner.name,
                isa13=isa13,
                gs06=gs06,
                transaction=self.config.transaction,
                st02=st02,
                sent_at=when.timestamp(),
                message_id=item.message_id,
            ),
        )
        self._log.info(
            "X12 interchange sent.",
            extra={
                "destination": self.config.name,
                "partner": self.partner.name,
                "transaction": self.config.transaction,
                "isa13": f"{isa13:09d}",
                "gs06": gs06,
                "sets": len(sets),
            },
        )
        detail = f"ISA13 {isa13:09d} GS06 {gs06} to {self.partner.name}"
        return SendResult(
            response=result.response,
            status_code=result.status_code,
            detail=f"{detail}; {result.detail}" if result.detail else detail,
        )


X12_DESTINATION = destination_spec(
    name="x12",
    summary="Send canonical orders, acknowledgements, ship notices or invoices to a partner as X12 (850/855/856/810).",
    config=X12DestinationConfig,
    factory="engine.edi.x12out:X12Destination",
    status="beta",
    since="0.2",
    examples=(
        Example(
            "Purchase orders to a distributor", "type: x12\nname: acme-po\npartner: acme-medical\ntransaction: '850'\n"
        ),
        Example(
            "Invoices as the supplier, partner files in another folder",
            "type: x12\nname: invoices\npartner: mercy-general\ntransaction: '810'\npartners_dir: edi/partners\n",
        ),
    ),
)
