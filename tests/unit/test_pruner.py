"""The pruner against a real SQLite store: batches, keys that go with pruned messages,
business keys past their window, one channel's failure sparing the others, the content
scan resuming where it stopped."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from engine.core.channel import ChannelDef
from engine.core.errors import ConfigError
from engine.core.loader import load_channel
from engine.core.message import InboundMessage, Status
from engine.core.store import MessageQuery, ProcessResult
from engine.runtime.pruner import Pruner
from engine.runtime.settings import PruningSettings
from engine.store.sqlite import SqliteStore, SqliteStoreConfig

HOUR = 3600.0


def channel(name: str, extra: str) -> ChannelDef:
    text = f"""
        name: {name}
        source: {{type: mllp, listen: 127.0.0.1:0}}
        pipeline: {{datatype: hl7v2}}
    """
    return load_channel(f"{name}.yaml", text=textwrap.dedent(text) + textwrap.dedent(extra))


def message(channel_name: str, n: int, received_at: float) -> InboundMessage:
    raw = f"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|C{n}|P|2.5\rPID|1||{n}\r".encode()
    return InboundMessage(channel=channel_name, raw=raw, received_at=received_at, control_id=f"C{n}")


async def filtered(store: SqliteStore, msg: InboundMessage, **kw: Any) -> None:
    await store.add_message(msg, **kw)
    await store.record_result(ProcessResult(msg.id, 1, Status.FILTERED))


def with_store(tmp_path: Path, scenario: Any) -> None:
    async def main() -> None:
        store = SqliteStore(SqliteStoreConfig(path="db/junction.db", writer="thread"), tmp_path)
        await store.open()
        try:
            await asyncio.wait_for(scenario(store), 60)
        finally:
            await store.close()

    asyncio.run(main())


def test_message_retention_goes_in_batches_and_takes_the_exactly_once_keys_along(tmp_path: Path) -> None:
    files = channel("files-in", "retention: {message_days: 1}\n")

    async def scenario(store: SqliteStore) -> None:
        old = time.time() - 2 * 24 * HOUR  # store's updated_at is now: the message counts from now
        for n in range(5):
            await filtered(store, message("files-in", n, old), dedupe_key=f"file-{n}")
        pruner = Pruner(store, PruningSettings(batch=2, pause_ms=0), lambda: {"files-in": files})
        # processed just now: not old enough, however old the receipt
        first = await pruner.run()
        assert first["channels"]["files-in"] == {"messages": 0, "contents": 0, "keys": 0, "error": ""}
        later = Pruner(store, PruningSettings(batch=2, pause_ms=0), lambda: {"files-in": files})
        report = await _run_at(later, time.time() + 2 * 24 * HOUR)
        assert report["channels"]["files-in"] == {"messages": 5, "contents": 0, "keys": 5, "error": ""}
        assert await store.search(MessageQuery(channel="files-in")) == []
        assert await store.get_values("dedupe:files-in:") == {}

    with_store(tmp_path, scenario)


async def _run_at(pruner: Pruner, when: float) -> dict[str, Any]:
    """Run the pruner as if the clock read ``when``."""
    real = time.time
    time.time = lambda: when  # type: ignore[assignment]
    try:
        return await pruner.run()
    finally:
        time.time = real  # type: ignore[assignment]


def test_business_keys_go_when_their_window_has_passed(tmp_path: Path) -> None:
    edi = channel("edi-in", "duplicates: {window_hours: 24}\n")

    async def scenario(store: SqliteStore) -> None:
        now = time.time()
        await store.put_value("business-key:edi-in:OLD", json.dumps({"id": "m1", "at": now - 25 * HOUR}))
        await store.put_value("business-key:edi-in:NEW", json.dumps({"id": "m2", "at": now - 1 * HOUR}))
        await store.put_value("business-key:edi-in:ODD", "not json")
        await store.put_value("business-key:other-in:OLD", json.dumps({"id": "m3", "at": now - 25 * HOUR}))
        report = await Pruner(store, PruningSettings(pause_ms=0), lambda: {"edi-in": edi}).run()
        assert report["channels"]["edi-in"]["keys"] == 1
        left = await store.get_values("business-key:")
        assert sorted(left) == ["business-key:edi-in:NEW", "business-key:edi-in:ODD", "business-key:other-in:OLD"]

    with_store(tmp_path, scenario)


def test_a_channel_that_fails_is_reported_and_the_others_are_pruned(tmp_path: Path) -> None:
    good = channel("good-in", "retention: {content_days: 1}\n")
    bad = channel("bad-in", "retention: {content_days: 1}\n")

    async def scenario(store: SqliteStore) -> None:
        await filtered(store, message("good-in", 1, time.time()))
        real = store.prunable

        async def failing(name: str, **kw: Any) -> list[tuple[float, int]]:
            if name == "bad-in":
                raise OSError("disk on fire")
            return await real(name, **kw)

        store.prunable = failing  # type: ignore[method-assign]
        pruner = Pruner(store, PruningSettings(pause_ms=0), lambda: {"bad-in": bad, "good-in": good})
        report = await _run_at(pruner, time.time() + 2 * 24 * HOUR)
        assert report["channels"]["bad-in"]["error"] == "OSError: disk on fire"
        assert report["channels"]["good-in"] == {"messages": 0, "contents": 1, "keys": 0, "error": ""}

    with_store(tmp_path, scenario)


def test_the_content_scan_resumes_where_it_stopped(tmp_path: Path) -> None:
    slim = channel("slim-in", "retention: {content_days: 1}\n")

    async def scenario(store: SqliteStore) -> None:
        now = time.time()
        kept = message("slim-in", 0, now - 10)
        await store.add_message(kept)  # still RECEIVED: passed over, not prunable yet
        for n in range(1, 4):
            await filtered(store, message("slim-in", n, now - 10 + n))
        pruner = Pruner(store, PruningSettings(batch=2, pause_ms=0), lambda: {"slim-in": slim})
        seen: list[tuple[float, int]] = []
        real = store.prunable

        async def recording(name: str, **kw: Any) -> list[tuple[float, int]]:
            seen.append(kw["after"])
            return await real(name, **kw)

        store.prunable = recording  # type: ignore[method-assign]
        first = await _run_at(pruner, now + 2 * 24 * HOUR)
        assert first["channels"]["slim-in"]["contents"] == 3
        await store.record_result(ProcessResult(kept.id, 1, Status.FILTERED))
        seen.clear()
        second = await _run_at(pruner, now + 2 * 24 * HOUR + 60)
        # the second scan starts after the last one: the message passed over waits for the
        # daily full pass
        assert seen and seen[0] != (0.0, 0)
        assert second["channels"]["slim-in"]["contents"] == 0
        third = await _run_at(pruner, now + 3 * 24 * HOUR + 120)
        assert third["channels"]["slim-in"]["contents"] == 1

    with_store(tmp_path, scenario)


@pytest.mark.parametrize(
    ("retention", "words"),
    [
        ("{}", "needs content_days, message_days or both"),
        ("{content_days: 30, message_days: 7}", "must not be longer than message_days"),
        ("{message_days: 0}", "greater than 0"),
        ("{message_day: 7}", "message_day"),
    ],
)
def test_bad_retention_is_refused_at_load(retention: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        channel("x-in", f"retention: {retention}\n")
