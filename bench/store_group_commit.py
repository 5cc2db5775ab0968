"""Measure the SQLite store: group commit versus one commit per message, a full message
cycle, and read latency on a large database.

    PYTHONPATH=. python bench/store_group_commit.py [--seconds 2] [--payload-bytes 1024] [--dir DIR]

Every case gets a fresh database file under ``--dir`` (default: a temporary folder; make
sure it sits on the disk you care about, not on tmpfs). The baseline is the same store
with ``batch_max: 1``, i.e. one transaction and one fsync per message.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from engine.core.message import InboundMessage, Status, new_id
from engine.core.store import DeliveryOutcome, DestinationRoute, MessageQuery, ProcessResult
from engine.store.sqlite import SqliteStore, SqliteStoreConfig

CHANNEL = "bench-in"


def _message(payload: bytes) -> InboundMessage:
    return InboundMessage(channel=CHANNEL, raw=payload, source={"peer": "127.0.0.1:50000"}, control_id="C1")


async def _open(folder: Path, name: str, **config: Any) -> SqliteStore:
    store = SqliteStore(SqliteStoreConfig(path=name, **config), folder)
    await store.open()
    return store


async def _for(seconds: float, producers: int, step: Callable[[], Awaitable[None]]) -> int:
    """Run ``producers`` loops of ``step`` for ``seconds``; return how many steps finished."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await step()
            done += 1

    await asyncio.gather(*(loop() for _ in range(producers)))
    return done


async def add_rate(
    folder: Path, name: str, producers: int, seconds: float, payload: bytes, batch_max: int
) -> tuple[float, float]:
    """add_message per second and the mean batch size."""
    store = await _open(folder, name, batch_max=batch_max)
    try:

        async def step() -> None:
            await store.add_message(_message(payload))

        started = time.perf_counter()
        done = await _for(seconds, producers, step)
        elapsed = time.perf_counter() - started
        stats = store.stats
        return done / elapsed, stats["operations"] / max(stats["commits"], 1)
    finally:
        await store.close()


async def cycle_rate(folder: Path, producers: int, seconds: float, payload: bytes) -> float:
    """Messages per second through add_message + record_result + claim + finish (one destination)."""
    store = await _open(folder, "cycle.db")
    finished = 0
    stop = asyncio.Event()

    async def produce() -> None:
        msg = _message(payload)
        await store.add_message(msg)
        route = DestinationRoute(destination="out", content=payload, content_type="text/plain")
        await store.record_result(ProcessResult(msg.id, 1, Status.TRANSFORMED, routes=[route]))

    async def deliver() -> None:
        nonlocal finished
        while not stop.is_set():
            now = time.time()
            entries = await store.claim(CHANNEL, "out", 0, "bench", limit=256, lease_secs=60, now=now)
            if not entries:
                await asyncio.sleep(0.001)
                continue
            await store.finish([DeliveryOutcome(e.message_id, e.run, "out", Status.SENT, now, now) for e in entries])
            finished += len(entries)

    try:
        worker = asyncio.create_task(deliver())
        started = time.perf_counter()
        await _for(seconds, producers, produce)
        stop.set()
        await worker
        return finished / (time.perf_counter() - started)
    finally:
        await store.close()


def _fill(path: Path, count: int, payload: bytes) -> None:
    """Bulk-load ``count`` delivered messages with the store's own SQL (and its triggers)."""
    now = time.time()
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        for start in range(0, count, 10_000):
            n = min(10_000, count - start)
            ids = [new_id() for _ in range(n)]
            conn.executemany(
                """INSERT INTO messages (id, channel, correlation_id, received_at, control_id, status, run, updated_at)
                VALUES (?, ?, ?, ?, ?, 'TRANSFORMED', 1, ?)""",
                [(i, CHANNEL, i, now - count + start + k, f"C{start + k}", now) for k, i in enumerate(ids)],
            )
            conn.execute(
                """INSERT INTO contents (message_seq, run, stage, content)
                SELECT seq, 0, 'raw', ? FROM messages WHERE seq > (SELECT max(seq) FROM messages) - ?""",
                (payload, n),
            )
            conn.execute(
                """INSERT INTO queue (message_seq, run, channel, destination, partition, status, attempts,
                    content_type, created_at, updated_at)
                SELECT seq, 1, channel, 'out', 0, 'SENT', 1, 'text/plain', ?, ? FROM messages
                WHERE seq > (SELECT max(seq) FROM messages) - ?""",
                (now, now, n),
            )
        conn.execute("COMMIT")
    conn.close()


async def read_latency(folder: Path, count: int, payload: bytes) -> dict[str, float]:
    """Median milliseconds of the read paths on a database of ``count`` finished messages."""
    store = await _open(folder, "large.db")
    await store.close()
    _fill(folder / "large.db", count, payload)
    store = await _open(folder, "large.db")
    try:
        msgs = [_message(payload) for _ in range(100)]
        for msg in msgs:
            await store.add_message(msg)
            route = DestinationRoute(destination="out", content=payload)
            await store.record_result(ProcessResult(msg.id, 1, Status.TRANSFORMED, routes=[route]))
        now = time.time()
        probes: dict[str, Callable[[], Awaitable[Any]]] = {
            "counters": lambda: store.counters(CHANNEL),
            "search newest 100": lambda: store.search(MessageQuery(channel=CHANNEL)),
            "search status QUEUED": lambda: store.search(MessageQuery(channel=CHANNEL, status=Status.QUEUED)),
            "search control_id": lambda: store.search(MessageQuery(control_id="C5000")),
            "search ERROR (no hit)": lambda: store.search(MessageQuery(channel=CHANNEL, status=Status.ERROR)),
            "search 1 h, 50 h ago": lambda: store.search(MessageQuery(since=now - 50 * 3600, until=now - 49 * 3600)),
            "get": lambda: store.get(msgs[0].id),
            "next_retry_at": lambda: store.next_retry_at(CHANNEL, "out", 0),
            "claim 64 + release": lambda: _claim_release(store, now),
        }
        result = {}
        for label, probe in probes.items():
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                await probe()
                timings.append((time.perf_counter() - started) * 1000)
            result[label] = statistics.median(timings)
        return result
    finally:
        await store.close()


async def _claim_release(store: SqliteStore, now: float) -> None:
    entries = await store.claim(CHANNEL, "out", 0, "bench", limit=64, lease_secs=60, now=now)
    await store.release(entries)


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="junction-bench-", dir=args.dir))
    payload = b"M" * args.payload_bytes
    try:
        print(f"add_message, {args.payload_bytes}-byte messages, {args.seconds:g} s per case, folder {folder}")
        print(f"{'producers':>9} {'one commit/msg':>15} {'group commit':>13} {'mean batch':>11} {'ratio':>7}")
        for producers in (1, 8, 32):
            base, _ = await add_rate(folder, f"base{producers}.db", producers, args.seconds, payload, batch_max=1)
            group, batch = await add_rate(
                folder, f"group{producers}.db", producers, args.seconds, payload, batch_max=512
            )
            print(f"{producers:>9} {base:>11,.0f}/s {group:>9,.0f}/s {batch:>11.1f} {group / base:>6.1f}x")
        rate = await cycle_rate(folder, 32, args.seconds, payload)
        print(f"\nfull store cycle (add + record_result + claim + finish), 32 producers: {rate:,.0f} msg/s")
        print(f"\nread latency with {args.messages:,} stored messages (median ms):")
        for label, ms in (await read_latency(folder, args.messages, payload)).items():
            print(f"  {label:<22} {ms:8.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each throughput case")
    parser.add_argument("--payload-bytes", type=int, default=1024, help="size of each raw message")
    parser.add_argument("--messages", type=int, default=100_000, help="stored messages for the read-latency case")
    parser.add_argument("--dir", default=None, help="where to create the database files")
    parser.add_argument("--keep", action="store_true", help="keep the database files")
    asyncio.run(main(parser.parse_args()))
