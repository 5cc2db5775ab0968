"""The SQLite store: the shared conformance suite plus SQLite-specific behaviour."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from engine.core import registry
from engine.core.message import InboundMessage, Status
from engine.core.store import MessageQuery
from engine.store import SchemaVersionError, StoreError
from engine.store.sqlite import SQLITE_STORE, SqliteStore, SqliteStoreConfig
from engine.store.sqlite.reads import OLDEST_QUEUED
from engine.store.sqlite.schema import LATEST
from engine.store.sqlite.writes import CLAIM_SCAN
from engine.testing.store_conformance import StoreConformance, StoreFactory, accept, run, transform

DB = "db/junction.db"
REPO = Path(__file__).resolve().parents[2]


def _factory(tmp_path: Path, writer: str) -> StoreFactory:
    @contextlib.asynccontextmanager
    async def factory() -> AsyncIterator[SqliteStore]:
        store = SqliteStore(SqliteStoreConfig(path=DB, writer=writer), tmp_path)  # type: ignore[arg-type]
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    return factory


@pytest.fixture
def store_factory(tmp_path: Path) -> StoreFactory:
    return _factory(tmp_path, "thread")


class TestSqliteStore(StoreConformance):
    """Every behaviour the runtime relies on, run against SQLite with ``writer: thread``."""


class TestSqliteStoreProcessWriter(StoreConformance):
    """The same behaviours with ``writer: process`` (writes committed by a child process)."""

    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        return _factory(tmp_path, "process")


def _open_close(tmp_path: Path, **config: object) -> dict[str, object]:
    async def scenario() -> dict[str, object]:
        store = SqliteStore(SqliteStoreConfig(path=DB, **config), tmp_path)  # type: ignore[arg-type]
        await store.open()
        try:
            return await store.settings()
        finally:
            await store.close()

    return asyncio.run(scenario())


def _versions(path: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM schema_version ORDER BY version")]


def test_wal_and_full_sync_are_set(tmp_path: Path) -> None:
    settings = _open_close(tmp_path)
    assert settings == {"journal_mode": "wal", "synchronous": "FULL", "busy_timeout_ms": 5000, "schema_version": LATEST}
    with contextlib.closing(sqlite3.connect(tmp_path / DB)) as conn:  # WAL is a property of the file
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_normal_sync_can_be_chosen(tmp_path: Path) -> None:
    settings = _open_close(tmp_path, synchronous="NORMAL", busy_timeout_ms=250)
    assert (settings["synchronous"], settings["busy_timeout_ms"]) == ("NORMAL", 250)


def test_migrates_an_empty_file_once(tmp_path: Path) -> None:
    path = tmp_path / DB
    path.parent.mkdir()
    path.touch()
    _open_close(tmp_path)
    _open_close(tmp_path)
    assert _versions(path) == list(range(1, LATEST + 1))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"messages", "contents", "queue", "attempts", "kv", "counters", "schema_version"} <= tables


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    _open_close(tmp_path)
    with contextlib.closing(sqlite3.connect(tmp_path / DB)) as conn, conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (LATEST + 1,))
    with pytest.raises(SchemaVersionError, match=f"version {LATEST + 1}.*up to {LATEST}"):
        _open_close(tmp_path)
    assert _versions(tmp_path / DB)[-1] == LATEST + 1  # left untouched


def test_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / DB
    path.parent.mkdir()
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"junction\.db"):
        _open_close(tmp_path)


def test_writes_after_close_fail_clearly(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteStore(SqliteStoreConfig(path=DB), tmp_path)
        await store.open()
        await store.close()
        with pytest.raises(StoreError, match="not open"):
            await store.add_message(InboundMessage(channel="a", raw=b"x"))

    run(scenario())


def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        store = SqliteStore(SqliteStoreConfig(path=DB), tmp_path)
        await store.open()
        try:
            await asyncio.gather(*(store.add_message(InboundMessage(channel="a", raw=b"x")) for _ in range(200)))
            return store.stats["commits"], store.stats["operations"]
        finally:
            await store.close()

    commits, operations = asyncio.run(scenario())
    assert operations == 200
    assert commits < operations


def test_a_late_result_of_an_older_run_does_not_roll_back(store_factory: StoreFactory) -> None:
    async def scenario() -> None:
        async with store_factory() as store:
            (msg,) = await accept(store, 1)
            await store.begin_reprocess(msg.id)  # run 2 starts while run 1 is still processing
            await transform(store, msg, run_no=1)
            detail = await store.get(msg.id)
            counts = await store.counters(msg.channel)
        assert detail is not None
        assert (detail.summary.status, detail.summary.run) == (Status.RECEIVED, 2)
        assert [d.run for d in detail.destinations] == [1]  # kept as history
        assert counts.get("dest:out:QUEUED", 0) == 0  # not the latest run

    run(scenario())


def test_claim_walks_the_partial_index(tmp_path: Path) -> None:
    _open_close(tmp_path)
    with contextlib.closing(sqlite3.connect(tmp_path / DB)) as conn:
        plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + CLAIM_SCAN, ("c", "d", 0)))
    assert "queue_claim" in plan
    assert "TEMP B-TREE" not in plan  # FIFO order comes from the index, not from a sort


def test_oldest_queued_reads_the_partial_index(tmp_path: Path) -> None:
    _open_close(tmp_path)
    with contextlib.closing(sqlite3.connect(tmp_path / DB)) as conn:
        plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + OLDEST_QUEUED, ("c", "d")))
    assert "queue_claim" in plan  # waiting rows only, however much history piles up
    assert "SCAN queue" not in plan


def test_config_defaults_and_unknown_keys() -> None:
    config = SqliteStoreConfig()
    assert (config.type, config.path, config.batch_max, config.synchronous) == (
        "sqlite",
        "var/junction.db",
        512,
        "FULL",
    )
    with pytest.raises(ValueError, match="extra"):
        SqliteStoreConfig.model_validate({"type": "sqlite", "pth": "x.db"})
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStoreConfig.model_validate({"type": "sqlite", "synchronous": "OFF"})


def test_spec_is_registered_and_its_examples_validate() -> None:
    assert registry.get("store", "sqlite") is SQLITE_STORE
    assert SQLITE_STORE.load_factory() is SqliteStore
    for example in SQLITE_STORE.examples:
        assert SqliteStoreConfig.model_validate(yaml.safe_load(example.yaml)).type == "sqlite"


CHILD = """
import asyncio, sys
from pathlib import Path
from engine.core.message import InboundMessage
from engine.store.sqlite import SqliteStore, SqliteStoreConfig

async def produce(store, n):
    while True:
        msg = InboundMessage(channel="crash-in", raw=b"MSH|^~\\\\&|" + str(n).encode() * 200)
        seq = await store.add_message(msg)
        sys.stdout.write(f"{seq} {msg.id}\\n")
        sys.stdout.flush()

async def main():
    store = SqliteStore(SqliteStoreConfig(path=sys.argv[2], writer=sys.argv[3]), Path(sys.argv[1]))
    await store.open()
    await asyncio.gather(*(produce(store, n) for n in range(8)))

asyncio.run(main())
"""


def _read_until(proc: subprocess.Popen[bytes], lines: int, timeout: float) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while data.count(b"\n") < lines:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the child process did not store messages in time"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, "the child process exited early"
            data += chunk
    return data


@pytest.mark.integration
@pytest.mark.parametrize("writer", ["thread", "process"])
def test_acknowledged_messages_survive_sigkill(tmp_path: Path, writer: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", CHILD, str(tmp_path), DB, writer]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=REPO) as proc:
        try:
            data = _read_until(proc, 400, timeout=30)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.stdout is not None
        data += proc.stdout.read()  # lines printed between our last read and the kill count too
    printed = {tuple(line.split()) for line in data.decode().splitlines() if len(line.split()) == 2}
    assert len(printed) >= 400

    async def stored() -> set[tuple[str, str]]:
        store = SqliteStore(SqliteStoreConfig(path=DB), tmp_path)
        await store.open()
        try:
            found = await store.search(MessageQuery(channel="crash-in", limit=1_000_000))
            return {(str(s.seq), s.id) for s in found}
        finally:
            await store.close()

    assert printed <= asyncio.run(stored())


def test_a_killed_process_writer_is_replaced_and_nothing_committed_is_lost(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int, bool]:
        store = SqliteStore(SqliteStoreConfig(path=DB, writer="process"), tmp_path)
        await store.open()
        try:
            first = InboundMessage(channel="a", raw=b"MSH|first")
            await store.add_message(first)
            writer = store._writer
            assert writer is not None and writer._proc is not None  # type: ignore[union-attr]
            old_pid = writer._proc.pid  # type: ignore[union-attr]
            os.kill(old_pid, signal.SIGKILL)
            later = InboundMessage(channel="a", raw=b"MSH|later")
            async with asyncio.timeout(20):
                while True:  # writes fail while the child is replaced, then succeed again
                    try:
                        await store.add_message(later)
                        break
                    except StoreError:
                        await asyncio.sleep(0.05)
            new_pid = writer._proc.pid  # type: ignore[union-attr]
            found = await store.search(MessageQuery(channel="a"))
            return old_pid, new_pid, {s.id for s in found} == {first.id, later.id}
        finally:
            await store.close()

    old_pid, new_pid, both = asyncio.run(scenario())
    assert new_pid != old_pid
    assert both


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_process_writer_whose_loop_is_gone_still_stops_its_child(tmp_path: Path) -> None:
    """A store left open when its loop ended (a caller's bug): the child still ends."""
    store = SqliteStore(SqliteStoreConfig(path=DB, writer="process"), tmp_path)

    async def scenario() -> None:
        await store.open()
        await store.add_message(InboundMessage(channel="a", raw=b"MSH|x"))

    asyncio.run(scenario())  # the loop ends without closing the store
    writer = store._writer
    assert writer is not None
    started = time.monotonic()
    assert writer.stop(timeout=10)
    assert time.monotonic() - started < 5
    assert writer._proc is not None and writer._proc.returncode == 0  # type: ignore[union-attr]
    # The transport of the dead loop warns when collected: let that happen here, filtered.
    store._writer = None
    del writer
    gc.collect()
