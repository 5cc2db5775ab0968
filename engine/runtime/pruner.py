"""The pruner: removes what channels' ``retention`` says is old enough, and expired keys.

Per channel, in receipt order and in small batches so that intake keeps its pace:

- ``retention.message_days``: finished messages older than that are deleted (metadata,
  contents, destination rows, attempts); afterwards, exactly-once keys of sources
  (``dedupe:``) whose message is gone are dropped with them;
- ``retention.content_days``: finished messages older than that keep their metadata (they
  stay searchable) but lose every stored content;
- ``duplicates.window_hours``: business keys older than the window no longer count and are
  dropped.

Candidates are read outside the write lock; each batch is checked again in the write, so a
message reprocessed meanwhile is left alone. Runs every ``pruning.interval_minutes`` and on
demand (``junction prune``); one run at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from engine.core.channel import ChannelDef
from engine.core.logs import bind
from engine.core.store import MessageStore
from engine.runtime.settings import PruningSettings

if TYPE_CHECKING:
    from collections.abc import Callable

log = bind(logging.getLogger("junction.pruner"))

DAY = 86_400.0
FIRST_RUN_SECS = 300.0  # the first scheduled run comes this soon after start (or sooner)
FULL_PASS_SECS = DAY  # content scans resume where they stopped, from the start once a day
PAGE = 500  # keys read per page


@dataclass
class ChannelPruned:
    """What one run removed from one channel."""

    messages: int = 0  # deleted altogether
    contents: int = 0  # messages whose contents were dropped
    keys: int = 0  # exactly-once and business keys dropped
    error: str = ""


class Pruner:
    """Owned by the engine; ``channels()`` gives the deployed channel definitions."""

    def __init__(
        self, store: MessageStore, settings: PruningSettings, channels: Callable[[], dict[str, ChannelDef]]
    ) -> None:
        self.store = store
        self.settings = settings
        self._channels = channels
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.next_at: float | None = None
        self.last: dict[str, Any] | None = None
        # content scans: where the last one stopped, per channel (metadata rows stay behind)
        self._content_after: dict[str, tuple[float, int]] = {}
        self._full_pass_at = 0.0

    def start(self) -> None:
        if self.settings.interval_minutes > 0 and self._task is None:
            self._task = asyncio.create_task(self._schedule(), name="pruner")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.next_at = None

    def status(self) -> dict[str, Any]:
        return {
            "interval_minutes": self.settings.interval_minutes,
            "next_at": self.next_at,
            "running": self._lock.locked(),
            "last": self.last,
        }

    async def _schedule(self) -> None:
        interval = self.settings.interval_minutes * 60
        delay = min(interval, FIRST_RUN_SECS)
        while True:
            self.next_at = time.time() + delay
            await asyncio.sleep(delay)
            self.next_at = None
            try:
                await self.run()
            except Exception as exc:  # noqa: BLE001 - the schedule must outlive one bad run
                log.error("Pruning failed; it runs again at the next interval.", extra={"error": type(exc).__name__})
            delay = interval

    async def run(self, channel: str | None = None) -> dict[str, Any]:
        """One pass over every deployed channel (or one); the report of what was removed."""
        async with self._lock:
            started = time.time()
            defs = self._channels()
            if channel is not None:
                defs = {channel: defs[channel]}  # KeyError: the caller names an unknown channel
            full = started - self._full_pass_at >= FULL_PASS_SECS
            if full:
                self._content_after.clear()
                self._full_pass_at = started
            report: dict[str, dict[str, Any]] = {}
            for name, definition in sorted(defs.items()):
                if definition.retention is None and definition.duplicates is None:
                    continue
                pruned = ChannelPruned()
                try:
                    await self._channel(definition, started, pruned)
                except Exception as exc:  # noqa: BLE001 - one channel's failure spares the others
                    pruned.error = f"{type(exc).__name__}: {exc}"[:300]
                    log.error("Pruning a channel failed.", extra={"channel": name, "error": type(exc).__name__})
                if pruned.messages or pruned.contents or pruned.keys:
                    log.info("Pruned.", extra={"channel": name, **{k: v for k, v in asdict(pruned).items() if v}})
                report[name] = asdict(pruned)
            self.last = {"started_at": started, "finished_at": time.time(), "channels": report}
            return self.last

    async def _channel(self, channel: ChannelDef, now: float, pruned: ChannelPruned) -> None:
        retention = channel.retention
        if retention is not None and retention.message_days is not None:
            before = now - retention.message_days * DAY
            pruned.messages, _ = await self._batches(channel.name, before, retention.keep_errors, (0.0, 0), False)
            pruned.keys += await self._drop_keys(f"dedupe:{channel.name}:", orphaned=True)
        if retention is not None and retention.content_days is not None:
            before = now - retention.content_days * DAY
            after = self._content_after.get(channel.name, (0.0, 0))
            pruned.contents, after = await self._batches(channel.name, before, retention.keep_errors, after, True)
            self._content_after[channel.name] = after
        if channel.duplicates is not None:
            window_start = now - channel.duplicates.window_hours * 3600

            def expired(value: str) -> bool:
                try:
                    return float(json.loads(value)["at"]) < window_start
                except (ValueError, KeyError, TypeError):
                    return False  # not ours to judge

            pruned.keys += await self._drop_keys(f"business-key:{channel.name}:", select=expired)

    async def _batches(
        self, channel: str, before: float, keep_errors: bool, after: tuple[float, int], content_only: bool
    ) -> tuple[int, tuple[float, int]]:
        done = 0
        batch = self.settings.batch
        while True:
            page = await self.store.prunable(
                channel, before=before, keep_errors=keep_errors, with_content=content_only, after=after, limit=batch
            )
            if not page:
                return done, after
            done += await self.store.prune(
                channel, [seq for _, seq in page], before=before, keep_errors=keep_errors, content_only=content_only
            )
            after = page[-1]
            if len(page) < batch:
                return done, after
            await asyncio.sleep(self.settings.pause_ms / 1000)

    async def _drop_keys(
        self, prefix: str, *, orphaned: bool = False, select: Callable[[str], bool] | None = None
    ) -> int:
        """Drop the keys under ``prefix`` that are orphaned, or whose value ``select`` picks."""
        dropped = 0
        after = ""
        while True:
            page = await self.store.values_page(prefix, after=after, orphaned=orphaned, limit=PAGE)
            if not page:
                return dropped
            chosen = page if select is None else [(k, v) for k, v in page if select(v)]
            dropped += await self.store.delete_values(chosen)
            after = page[-1][0]
            if len(page) < PAGE:
                return dropped
            await asyncio.sleep(self.settings.pause_ms / 1000)
