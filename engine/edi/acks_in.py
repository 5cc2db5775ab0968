"""The ``x12-acks`` destination: partners' 997/999 reconcile what Junction sent them.

An inbound channel routes acknowledgement transaction sets here (filter ``ST01`` in 997,
999). The sender (ISA05/ISA06) names the partner (``config/partners``); every AK1 group is
matched with the group Junction recorded when it sent it (``engine.edi.reconcile``) and
marked accepted, accepted with errors, partially accepted or rejected. The ``x12``
destination raises the alert for groups that stay unacknowledged too long.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field

from engine.core.channel import DestinationConfig
from engine.core.errors import ConfigError, ParseError, PermanentError, RetryableError
from engine.core.message import Outbound, SendResult
from engine.core.spec import Example, destination_spec
from engine.core.store import MessageStore
from engine.datatypes.x12 import X12DataType
from engine.edi.partners import Partner, find_partner, load_partners
from engine.edi.reconcile import reconcile

__all__ = ["X12_ACKS_DESTINATION", "X12AcksConfig", "X12AcksDestination"]


class X12AcksConfig(DestinationConfig):
    """Reconcile inbound 997/999 acknowledgements with the groups Junction sent."""

    partners_dir: str = Field("config/partners", min_length=1, description="Folder of partner files, from the root.")


class X12AcksDestination:
    """Applies each 997/999 to the sent groups of its partner."""

    def __init__(
        self,
        config: X12AcksConfig,
        *,
        channel: str,
        base_dir: Path,
        log: logging.LoggerAdapter[logging.Logger],
        store: MessageStore | None = None,
    ) -> None:
        self.config = config
        self._log = log
        self._store = store
        self.partners: dict[str, Partner] = {}
        self.problem: str | None = None
        if store is None:
            self.problem = "the x12-acks destination needs the message store"
            return
        try:
            self.partners = load_partners(base_dir / config.partners_dir)
        except ConfigError as exc:
            first = exc.diagnostics[0] if exc.diagnostics else None
            self.problem = f"partner files are invalid: {first}" if first else "partner files are invalid"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, item: Outbound) -> SendResult:
        if self.problem or self._store is None:
            raise RetryableError(self.problem or "no store")
        try:
            header = X12DataType().header(item.content)
        except Exception as exc:
            raise PermanentError("not an X12 interchange") from exc
        qualifier, sender = header.fields.get("ISA05", ""), header.fields.get("ISA06", "")
        partner = find_partner(self.partners, qualifier, sender)
        if partner is None:
            raise PermanentError(f"no partner in {self.config.partners_dir} has ISA id {qualifier}:{sender}")
        try:
            result = await reconcile(self._store, partner, item.content)
        except ParseError as exc:
            raise PermanentError(f"not a clean 997/999: {exc}") from exc
        except ValueError as exc:
            raise PermanentError(str(exc)[:300]) from exc
        statuses = ", ".join(f"group {g.gs06} {g.status}" for g in result.updated) or "no known group"
        unknown = f"; unknown groups {result.unknown_groups}" if result.unknown_groups else ""
        self._log.info(
            "Acknowledgement reconciled.",
            extra={
                "partner": partner.name,
                "kind": result.functional_id,
                "groups": [g.gs06 for g in result.updated],
                "unknown_groups": result.unknown_groups,
            },
        )
        return SendResult(detail=f"{result.functional_id} from {partner.name}: {statuses}{unknown}"[:500])


X12_ACKS_DESTINATION = destination_spec(
    name="x12-acks",
    summary="Reconcile partners' 997/999 with the X12 groups Junction sent them (accepted, rejected, ...).",
    config=X12AcksConfig,
    factory="engine.edi.acks_in:X12AcksDestination",
    status="beta",
    examples=(
        Example(
            "In an inbound X12 channel",
            'type: x12-acks\nname: reconcile-acks\nfilter: {field: ST01, in: ["997", "999"]}\n',
        ),
    ),
)
