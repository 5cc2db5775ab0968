"""The engine process: the store, every deployed channel, deploy/undeploy from YAML."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from engine.core import registry
from engine.core.contracts import ReferenceTables
from engine.core.errors import ConfigError, Diagnostic, JunctionError
from engine.core.loader import channel_files, load_channel
from engine.core.logs import bind
from engine.core.message import Status
from engine.core.store import MessageQuery, MessageStore
from engine.runtime.channel import ChannelRuntime
from engine.runtime.metrics import Metrics
from engine.runtime.pruner import Pruner
from engine.runtime.settings import EngineSettings

log = bind(logging.getLogger("junction.engine"))


class ChannelNotFound(JunctionError):
    pass


def settle_heap() -> None:
    """Collect garbage, then move every object alive now out of the collector's sight.

    The engine's long-lived objects (modules, models, channel runtimes) are otherwise walked
    by every full collection, and the event loop, with every ACK, waits for it: measured with
    the sample load here, a full collection during traffic took 25-31 ms, and 0.3 ms after a
    freeze. Unfreezing first lets objects of a channel that was undeployed since be collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Engine:
    """Owns the store and the channel runtimes; every admin action goes through here."""

    def __init__(self, base_dir: Path, settings: EngineSettings | None = None, *, settle_heap: bool = False) -> None:
        """``settle_heap``: freeze the heap after start and each (re)deploy (see ``settle_heap``);
        for the engine process, not for callers that share their process with other work."""
        self.base_dir = base_dir.resolve()
        self._settle_heap = settle_heap
        self.settings = settings or EngineSettings()
        self.channels_dir = self.base_dir / self.settings.channels_dir
        self.owner = self.settings.node()
        self.store: MessageStore = self._build_store()
        self.channels: dict[str, ChannelRuntime] = {}
        self.load_problems: list[Diagnostic] = []
        self._lock = asyncio.Lock()
        # Resources plug-ins share across channels (reference tables), keyed by the plug-in.
        self.shared: dict[str, Any] = {}
        self.tables_dir = self.base_dir / "mappings" / "tables"
        self.metrics = Metrics()  # latency histograms; cumulative across redeploys
        self.pruner = Pruner(
            self.store, self.settings.pruning, lambda: {name: rt.channel for name, rt in self.channels.items()}
        )

    def _build_store(self) -> MessageStore:
        data = dict(self.settings.store)
        spec = registry.get("store", str(data.get("type", "sqlite")))
        config = spec.config.model_validate(data)
        store: MessageStore = spec.load_factory()(config, self.base_dir)
        return store

    # -- process lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        released = await self.store.reset_leases()
        if released:
            log.info("Released stale queue leases.", extra={"count": released})
        result = await self.deploy_all()
        for problem in self.load_problems:
            log.error("Channel file is invalid; it was not deployed.", extra={"problem": str(problem)})
        self.pruner.start()
        log.info("Engine started.", extra={"deployed": len(self.channels), "failed": len(result["failed"])})

    def _settle(self) -> None:
        if self._settle_heap:
            settle_heap()

    async def stop(self) -> None:
        await self.pruner.stop()
        for name in list(self.channels):
            await self._undeploy(name)
        await self.store.close()
        log.info("Engine stopped.")

    # -- deployment ----------------------------------------------------------------------------

    def channel_path(self, name: str) -> Path:
        for suffix in (".yaml", ".yml"):
            path = self.channels_dir / f"{name}{suffix}"
            if path.exists():
                return path
        raise ChannelNotFound(f"no channel file for {name!r} in {self.channels_dir}")

    def known_names(self) -> list[str]:
        names = {p.stem for p in channel_files([self.channels_dir])} if self.channels_dir.exists() else set()
        return sorted(names | set(self.channels))

    async def deploy(self, name: str, *, state: str | None = None) -> ChannelRuntime:
        """(Re)deploy one channel from its YAML file; keeps the current state on redeploy."""
        async with self._lock:
            runtime = await self._deploy(name, state=state)
            self._settle()
            return runtime

    async def _deploy(self, name: str, *, state: str | None = None) -> ChannelRuntime:
        path = self.channel_path(name)
        channel = load_channel(path)  # raises ConfigError before anything is touched
        previous = self.channels.get(name)
        target = state or (previous.state if previous else channel.initial_state)
        if previous is not None:
            await self._undeploy(name)
        runtime = ChannelRuntime(
            channel,
            self.store,
            self.base_dir,
            self.owner,
            self.shared,
            self,
            self.metrics,
            alert_check_secs=self.settings.alerts.check_secs,
        )
        await runtime.open()
        if previous is not None:
            runtime.adopt_alerts(previous)
        self.channels[name] = runtime
        try:
            if target == "started":
                await runtime.start()
            elif target == "paused":
                await runtime.pause()
        except (OSError, ValueError, JunctionError) as exc:  # a taken port, a bad certificate file, ...
            log.error("Channel could not start.", extra={"channel": name, "error": str(exc)[:300]})
            await runtime.stop()
        log.info("Channel deployed.", extra={"channel": name, "state": runtime.state})
        return runtime

    async def undeploy(self, name: str) -> None:
        async with self._lock:
            await self._undeploy(name)
            self._settle()

    async def _undeploy(self, name: str) -> None:
        runtime = self.channels.pop(name, None)
        if runtime is None:
            raise ChannelNotFound(f"channel {name!r} is not deployed")
        await runtime.close()
        log.info("Channel undeployed.", extra={"channel": name})

    async def deploy_all(self) -> dict[str, Any]:
        """Deploy new files, redeploy changed ones, undeploy channels whose file is gone."""
        async with self._lock:
            self.load_problems = []
            deployed, failed = [], []
            names = {p.stem for p in channel_files([self.channels_dir])} if self.channels_dir.exists() else set()
            for name in sorted(set(self.channels) - names):
                await self._undeploy(name)
            for name in sorted(names):
                try:
                    await self._deploy(name)
                    deployed.append(name)
                except ConfigError as exc:
                    self.load_problems.extend(exc.diagnostics)
                    failed.append({"channel": name, "errors": [str(d) for d in exc.diagnostics]})
            self._settle()  # also the one after start, which deploys through here
            return {"deployed": deployed, "failed": failed}

    def get(self, name: str) -> ChannelRuntime:
        runtime = self.channels.get(name)
        if runtime is None:
            raise ChannelNotFound(f"channel {name!r} is not deployed")
        return runtime

    # -- channel actions -------------------------------------------------------------------------

    async def act(self, name: str, action: str) -> dict[str, Any]:
        async with self._lock:
            if action == "deploy":
                runtime = await self._deploy(name)
                return runtime.describe()
            if action == "redeploy":
                runtime = await self._deploy(name)
                return runtime.describe()
            if action == "undeploy":
                await self._undeploy(name)
                return {"name": name, "state": "undeployed"}
            runtime = self.get(name)
            operation = {
                "start": runtime.start,
                "stop": runtime.stop,
                "pause": runtime.pause,
                "resume": runtime.resume,
            }.get(action)
            if operation is None:
                raise JunctionError(f"unknown action {action!r}")
            await operation()
            return runtime.describe()

    async def status(self, name: str) -> dict[str, Any]:
        if name in self.channels:
            info = self.channels[name].describe()
        else:
            self.channel_path(name)
            info = {"name": name, "state": "undeployed", "source": None, "destinations": [], "alerts": []}
        info["counters"] = await self.store.counters(name)
        return info

    async def list_channels(self) -> list[dict[str, Any]]:
        return [await self.status(name) for name in self.known_names()]

    # -- messages ----------------------------------------------------------------------------------

    async def reprocess(self, message_id: str) -> dict[str, Any]:
        try:
            msg = await self.store.begin_reprocess(message_id)
        except ValueError as exc:  # its raw content was pruned (retention, storage: metadata)
            raise JunctionError(f"message {message_id}: {exc}") from exc
        if msg is None:
            raise JunctionError(f"no message {message_id!r}")
        runtime = self.channels.get(msg.channel)
        if runtime is not None:
            await runtime.enqueue_existing(msg)
        log.info(
            "Message queued for reprocessing.", extra={"message_id": msg.id, "channel": msg.channel, "run": msg.run}
        )
        return {"id": msg.id, "channel": msg.channel, "run": msg.run, "queued": runtime is not None}

    async def reprocess_matching(self, query: MessageQuery) -> list[dict[str, Any]]:
        """Reprocess every match; one that cannot be (content pruned) is reported, not fatal."""
        done: list[dict[str, Any]] = []
        for found in await self.store.search(query):
            try:
                done.append(await self.reprocess(found.id))
            except JunctionError as exc:
                done.append({"id": found.id, "channel": found.channel, "error": str(exc)})
        return done

    # -- retention -------------------------------------------------------------------------------

    async def prune(self, channel: str | None = None) -> dict[str, Any]:
        """Run the pruner now over every deployed channel, or one; its report."""
        if channel is not None and channel not in self.channels:
            self.get(channel)  # raises ChannelNotFound with the usual wording
        return await self.pruner.run(channel)

    # -- reference tables ------------------------------------------------------------------------

    def _table_sets(self, directory: Path | None = None) -> list[ReferenceTables]:
        sets = [v for k, v in self.shared.items() if k.startswith("tables:")]
        return [t for t in sets if directory is None or Path(t.directory).resolve() == directory.resolve()]

    async def tables(self) -> list[dict[str, Any]]:
        """Every reference table: version in use, rows, and the history recorded in the store."""
        recorded = await self.store.get_values("table:")
        found: dict[str, dict[str, Any]] = {}
        for table_set in self._table_sets():
            for name, version in table_set.versions().items():
                columns, rows = table_set.rows(name)
                found[name] = {
                    "name": name,
                    "version": version,
                    "rows": len(rows),
                    "columns": columns,
                    "directory": str(table_set.directory),
                }
        for key, value in recorded.items():
            name = key.split(":", 1)[1]
            entry = found.setdefault(name, {"name": name, "version": None, "rows": None, "columns": []})
            entry["recorded"] = json.loads(value)
        return [found[name] for name in sorted(found)]

    async def table(self, name: str, limit: int = 100) -> dict[str, Any]:
        for table_set in self._table_sets():
            try:
                columns, rows = table_set.rows(name)
            except LookupError:
                continue
            return {
                "name": name,
                "version": table_set.versions().get(name),
                "columns": columns,
                "rows": rows[:limit],
                "total_rows": len(rows),
            }
        raise JunctionError(f"no loaded reference table {name!r} (no deployed mapping uses it)")

    async def reload_tables(self) -> dict[str, str]:
        """Re-read every reference table folder in use; all or nothing per folder."""
        versions: dict[str, str] = {}
        for table_set in self._table_sets():
            versions.update(await asyncio.to_thread(table_set.reload))
        await self._record_versions(versions, "reload")
        return versions

    async def load_table(self, name: str, data: bytes) -> dict[str, Any]:
        """Replace ``mappings/tables/NAME.csv`` and reload; an invalid file changes nothing."""
        if not _TABLE_NAME.fullmatch(name):
            raise JunctionError("a table name is lower-case letters, digits and underscores")
        self.tables_dir.mkdir(parents=True, exist_ok=True)
        target = self.tables_dir / f"{name}.csv"
        previous = target.read_bytes() if target.exists() else None
        await asyncio.to_thread(_replace_file, target, data)
        users = self._table_sets(self.tables_dir)
        try:
            versions: dict[str, str] = {}
            for table_set in users:
                versions.update(await asyncio.to_thread(table_set.reload))
        except ConfigError:
            if previous is None:
                target.unlink(missing_ok=True)
            else:
                await asyncio.to_thread(_replace_file, target, previous)
            raise
        version = versions.get(name) or hashlib.sha256(data).hexdigest()[:16]
        await self._record_versions({name: version}, "load")
        log.info("Reference table loaded.", extra={"table": name, "version": version, "channels": len(users)})
        return {"name": name, "version": version, "in_use": bool(users)}

    async def _record_versions(self, versions: dict[str, str], how: str) -> None:
        now = time.time()
        for name, version in versions.items():
            record = json.dumps({"version": version, "at": now, "how": how})
            await self.store.put_value(f"table:{name}", record)
            await self.store.put_value(f"table-history:{name}:{now:.3f}", record)


def parse_status(value: str | None) -> Status | None:
    if not value:
        return None
    try:
        return Status(value.upper())
    except ValueError:
        raise JunctionError(f"unknown status {value!r}; expected one of {', '.join(s.value for s in Status)}") from None


_TABLE_NAME = re.compile(r"[a-z0-9_]{1,64}")


def _replace_file(target: Path, data: bytes) -> None:
    temp = target.with_name(target.name + ".tmp")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, target)
