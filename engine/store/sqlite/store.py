"""SqliteStore: the MessageStore protocol on one SQLite file (WAL, group commit)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from engine.core.message import InboundMessage, Status
from engine.core.store import DeliveryOutcome, MessageDetail, MessageQuery, MessageSummary, ProcessResult, QueueEntry
from engine.store import StoreError
from engine.store.sqlite import reads, writes
from engine.store.sqlite.config import SqliteStoreConfig
from engine.store.sqlite.procwriter import ProcessWriter
from engine.store.sqlite.schema import connect, enable_wal, migrate
from engine.store.sqlite.writer import GroupCommitWriter

T = TypeVar("T")
READER_THREADS = 2  # reads are short index lookups; two keep the API responsive during a long search


class SqliteStore:
    """Durable message store on one SQLite file.

    Writes go through one writer thread that commits concurrent calls together (group
    commit); each write returns only after its transaction committed (and, with
    ``synchronous: FULL``, reached the disk). Reads use separate connections on reader
    threads; WAL lets them run while the writer commits. The event loop never blocks.

        store = SqliteStore(SqliteStoreConfig(), base_dir=Path("."))
        await store.open()
        seq = await store.add_message(InboundMessage(channel="adt-in", raw=b"MSH|..."))
        await store.close()
    """

    def __init__(self, config: SqliteStoreConfig, base_dir: Path) -> None:
        self.config = config
        self.path = Path(base_dir) / config.path
        self._writer: GroupCommitWriter | ProcessWriter | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._reader_conns: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._conns_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Create or migrate the schema, then start the writer and reader threads."""
        if self._writer is not None:
            return
        conn = await asyncio.to_thread(self._open_writer_conn)
        cfg = self.config
        if cfg.writer == "process":
            writer = ProcessWriter(
                conn,
                self.path,
                batch_max=cfg.batch_max,
                busy_timeout_ms=cfg.busy_timeout_ms,
                synchronous=cfg.synchronous,
            )
            try:
                await writer.attach()
            except BaseException:
                conn.close()
                raise
            self._writer = writer
        else:
            self._writer = GroupCommitWriter(conn, batch_max=cfg.batch_max)
            self._writer.start()
        self._readers = ThreadPoolExecutor(max_workers=READER_THREADS, thread_name_prefix="junction-store-read")

    def _open_writer_conn(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect(readonly=False)
        try:
            enable_wal(conn, self.path)
            migrate(conn, self.path)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot prepare the SQLite database {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        cfg = self.config
        return connect(self.path, busy_timeout_ms=cfg.busy_timeout_ms, synchronous=cfg.synchronous, readonly=readonly)

    async def close(self) -> None:
        """Commit every queued write, then stop the threads and close the connections."""
        writer, readers = self._writer, self._readers
        if writer is None or readers is None:
            return
        self._writer = self._readers = None
        await asyncio.to_thread(self._close_sync, writer, readers)

    def _close_sync(self, writer: GroupCommitWriter | ProcessWriter, readers: ThreadPoolExecutor) -> None:
        stopped = writer.stop()
        readers.shutdown(wait=True)
        with self._conns_lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()
        if not stopped:
            raise StoreError("the store writer did not finish its last commit in time; the database stays open")
        writer.connection.execute("PRAGMA optimize")  # refresh planner statistics cheaply
        writer.connection.close()

    # -- plumbing -----------------------------------------------------------------------------

    def _write(self, op: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._writer is None:
            raise StoreError("the message store is not open")
        return self._writer.submit(op, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._readers is None:
            raise StoreError("the message store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._in_snapshot, fn, args)

    def _in_snapshot(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        # One read transaction per call, so multi-query reads (get) see a single snapshot.
        conn = self._reader_conn()
        conn.execute("BEGIN")
        try:
            return fn(conn, *args)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(readonly=True)
            self._local.conn = conn
            with self._conns_lock:
                self._reader_conns.append(conn)
        return conn

    @property
    def stats(self) -> dict[str, int]:
        """Group-commit statistics: transactions committed and operations they carried."""
        writer = self._writer
        return {"commits": writer.commits, "operations": writer.operations} if writer else {}

    async def settings(self) -> dict[str, Any]:
        """The effective pragmas of the write connection and the schema version."""
        return await self._write(writes.settings)

    # -- MessageStore -------------------------------------------------------------------------

    async def add_message(
        self,
        msg: InboundMessage,
        *,
        status: Status = Status.RECEIVED,
        error: str = "",
        dedupe_key: str = "",
        values: dict[str, str] | None = None,
        result: ProcessResult | None = None,
    ) -> int:
        """Store a newly received message and its raw content; return (and set) its seq.

        With ``result``, its first pipeline run is stored in the same transaction."""
        seq = await self._write(writes.add_message, msg, str(status), error, dedupe_key, values, result)
        msg.seq = seq
        return seq

    async def record_result(self, result: ProcessResult) -> None:
        """Store one pipeline run: status, kept stages, destination rows, response."""
        await self._write(writes.record_result, result)

    async def record_results(self, results: list[ProcessResult]) -> list[Exception | None]:
        """Store many pipeline runs in one write; see ``writes.record_results``."""
        if not results:
            return []
        return await self._write(writes.record_results, results)

    async def claim(
        self, channel: str, destination: str, partition: int, owner: str, *, limit: int, lease_secs: float, now: float
    ) -> list[QueueEntry]:
        """Lease the oldest free QUEUED rows of one partition, stopping at a retry not yet due."""
        return await self._write(writes.claim, channel, destination, partition, owner, limit, lease_secs, now)

    async def finish(self, outcomes: list[DeliveryOutcome]) -> None:
        """Record attempts, update destination rows and release their leases."""
        if outcomes:
            await self._write(writes.finish, outcomes)

    async def release(self, entries: list[QueueEntry]) -> None:
        """Give back claimed rows without counting an attempt."""
        if entries:
            await self._write(writes.release, entries)

    async def next_retry_at(self, channel: str, destination: str, partition: int) -> float | None:
        """When a claim on the partition could next return a row (see ``reads.next_retry_at``)."""
        return await self._read(reads.next_retry_at, channel, destination, partition)

    async def oldest_queued(self, channel: str, destination: str) -> float | None:
        """When the destination's oldest QUEUED row was queued (see ``reads.oldest_queued``)."""
        return await self._read(reads.oldest_queued, channel, destination)

    async def put_value(self, key: str, value: str) -> None:
        """Store a small named value (control numbers, reference-table versions)."""
        await self._write(writes.put_value, key, value)

    async def get_values(self, prefix: str) -> dict[str, str]:
        """Every stored value whose key starts with ``prefix``."""
        return await self._read(reads.get_values, prefix)

    async def reset_leases(self) -> int:
        """Release every lease; return how many rows held one."""
        return await self._write(writes.reset_leases)

    async def unprocessed(self, channel: str, *, limit: int = 1000, after_seq: int = 0) -> list[InboundMessage]:
        """RECEIVED messages of a channel, oldest first, with raw content and seq."""
        return await self._read(reads.unprocessed, channel, limit, after_seq)

    async def begin_reprocess(self, message_id: str) -> InboundMessage | None:
        """Start run N+1 from the raw content; None for an unknown id."""
        return await self._write(writes.begin_reprocess, message_id)

    async def search(self, query: MessageQuery) -> list[MessageSummary]:
        """Messages matching the query, newest first."""
        return await self._read(reads.search, query)

    async def get(self, message_id: str) -> MessageDetail | None:
        """One message with contents, destination states and attempts of every run."""
        return await self._read(reads.get, message_id)

    async def counters(self, channel: str) -> dict[str, int]:
        """Message counts by status plus ``dest:NAME:STATUS`` counts (latest runs)."""
        return await self._read(reads.counters, channel)

    async def prune_content(self, message_id: str, *, only_if_finished: bool = False) -> bool:
        """Drop every stored content of a message; its metadata and history stay."""
        return await self._write(writes.prune_content, message_id, only_if_finished)

    async def prunable(
        self,
        channel: str,
        *,
        before: float,
        keep_errors: bool,
        with_content: bool,
        after: tuple[float, int] = (0.0, 0),
        limit: int = 500,
    ) -> list[tuple[float, int]]:
        """Messages retention may remove, in receipt order (a read; see ``reads.prunable``)."""
        return await self._read(reads.prunable, channel, before, keep_errors, with_content, after, limit)

    async def prune(
        self, channel: str, seqs: list[int], *, before: float, keep_errors: bool, content_only: bool
    ) -> int:
        """Delete the still-prunable messages (or their contents) among ``seqs``."""
        if not seqs:
            return 0
        return await self._write(writes.prune, channel, seqs, before, keep_errors, content_only)

    async def values_page(
        self, prefix: str, *, after: str = "", orphaned: bool = False, limit: int = 500
    ) -> list[tuple[str, str]]:
        """A page of stored values under ``prefix`` (see ``reads.values_page``)."""
        return await self._read(reads.values_page, prefix, after, orphaned, limit)

    async def delete_values(self, pairs: list[tuple[str, str]]) -> int:
        """Delete values that still hold exactly what was read."""
        if not pairs:
            return 0
        return await self._write(writes.delete_values, pairs)
