"""Group commit: one thread owns the write connection and commits queued writes together.

Callers on the event loop enqueue an operation and await a future. The writer takes the
first pending operation, drains whatever else is already waiting (up to ``batch_max``),
runs them all in one ``BEGIN IMMEDIATE ... COMMIT`` (when one of them fails, the batch is
rolled back and run again with a SAVEPOINT around each, so only the failing ones fail), and
settles the futures only after COMMIT returned. Under load the queue refills while a
commit is syncing, so the batch size adapts by itself: one fsync serves many callers,
and an idle store still commits a lone write at once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from engine.store import StoreError

T = TypeVar("T")
Op = Callable[..., Any]
_Item = tuple[Op, tuple[Any, ...], "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_Settled = tuple["asyncio.Future[Any]", Any, BaseException | None]

log = logging.getLogger("junction.store")


class GroupCommitWriter:
    """Runs write operations ``op(conn, *args)`` on a dedicated thread, batched per commit."""

    def __init__(self, conn: sqlite3.Connection, *, batch_max: int, name: str = "junction-store-writer") -> None:
        self._conn = conn
        self._batch_max = max(1, batch_max)
        self._ops: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._closed = False
        self.commits = 0  # statistics for benchmarks and status output
        self.operations = 0

    @property
    def connection(self) -> sqlite3.Connection:
        """The write connection; only for use after ``stop`` (the thread owns it until then)."""
        return self._conn

    def start(self) -> None:
        self._thread.start()

    def submit(self, op: Op, *args: Any) -> asyncio.Future[Any]:
        """Enqueue ``op(conn, *args)``; the future resolves after its transaction committed."""
        if self._closed:
            raise StoreError("the message store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._ops.put((op, args, future, loop))
        return future

    async def run(self, op: Callable[..., T], *args: Any) -> T:
        """Submit and await one operation."""
        return await self.submit(op, *args)  # type: ignore[no-any-return]

    def stop(self, timeout: float = 60.0) -> bool:
        """Commit what is queued, then end the thread (blocking; call it off the loop).

        Returns False when the thread is still busy after ``timeout`` (a stuck disk); the
        connection must then stay open, since the thread may still use it.
        """
        if not self._closed:
            self._closed = True
            self._ops.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self._fail_leftovers()
        return True

    def _fail_leftovers(self) -> None:
        # Only a submit racing with stop from another thread can leave items behind.
        leftovers: list[_Item] = []
        while True:
            try:
                item = self._ops.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                leftovers.append(item)
        error = StoreError("the message store was closed before this write ran")
        _deliver(leftovers, [(future, None, error) for _op, _args, future, _loop in leftovers])

    # -- the writer thread ------------------------------------------------------------------

    def _main(self) -> None:
        while True:
            first = self._ops.get()
            if first is None:
                return
            batch, stop = self._drain(first)
            self._run_batch(batch)
            if stop:
                return

    def _drain(self, first: _Item) -> tuple[list[_Item], bool]:
        batch = [first]
        get = self._ops.get_nowait
        try:
            while len(batch) < self._batch_max:
                item = get()
                if item is None:
                    return batch, True
                batch.append(item)
        except queue.Empty:
            pass
        return batch, False

    def _run_batch(self, batch: list[_Item]) -> None:
        outcomes = run_batch(self._conn, [(op, args) for op, args, _future, _loop in batch])
        settled: list[_Settled] = [
            (future, value, None) if ok else (future, None, value)
            for (_op, _args, future, _loop), (ok, value) in zip(batch, outcomes, strict=True)
        ]
        self.commits += 1
        self.operations += len(batch)
        _deliver(batch, settled)


Outcome = tuple[bool, Any]  # (True, result) or (False, the exception for the caller)


def run_batch(conn: sqlite3.Connection, ops: list[tuple[Op, tuple[Any, ...]]]) -> list[Outcome]:
    """Run ``op(conn, *args)`` for each op in one ``BEGIN IMMEDIATE ... COMMIT``; one outcome
    per op, in order. Shared by the thread writer and the process writer's child."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        outcomes = _run_all(conn, ops)
        if outcomes is None:
            # An operation failed: undo the batch and run it again with a savepoint around
            # each operation, so only the failing ones fail. Operations only touch the
            # database (their callers hear of them after COMMIT), so running them again is safe.
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            outcomes = [_run_one(conn, op, args) for op, args in ops]
        conn.execute("COMMIT")
    except Exception as exc:  # noqa: BLE001 - the transaction is lost: every caller must hear it
        _abort(conn)
        error = _caller_error(exc)
        return [(False, error) for _ in ops]
    return outcomes


def _run_all(conn: sqlite3.Connection, ops: list[tuple[Op, tuple[Any, ...]]]) -> list[Outcome] | None:
    """Every operation without savepoints (two statements fewer each); None if one failed."""
    outcomes: list[Outcome] = []
    for op, args in ops:
        try:
            outcomes.append((True, op(conn, *args)))
        except Exception:  # noqa: BLE001 - the caller re-runs the batch with savepoints
            return None
    return outcomes


def _run_one(conn: sqlite3.Connection, op: Op, args: tuple[Any, ...]) -> Outcome:
    # A failing operation rolls back to its savepoint; the rest of the batch commits.
    # If the savepoint itself is gone (SQLite rolled the whole transaction back on an
    # I/O error), ROLLBACK TO raises and run_batch fails the entire batch instead.
    conn.execute("SAVEPOINT op")
    try:
        result = op(conn, *args)
    except Exception as exc:  # noqa: BLE001 - handed to the caller; the batch goes on
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return False, _caller_error(exc)
    conn.execute("RELEASE op")
    return True, result


def _abort(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("Store rollback failed.")


def _caller_error(exc: Exception) -> Exception:
    """Translate SQLite errors into the portable ones (``ValueError``, ``StoreError``)."""
    error: Exception
    if isinstance(exc, sqlite3.IntegrityError):
        # SQLite names the constraint ("UNIQUE constraint failed: messages.id"), never values.
        error = ValueError(f"store constraint violated: {exc}")
    elif isinstance(exc, sqlite3.Error):
        error = StoreError(f"SQLite write failed: {exc}")
    else:
        return exc
    error.__cause__ = exc
    return error


def _deliver(batch: list[_Item], settled: list[_Settled]) -> None:
    """Settle futures on their loops, one loop callback per loop rather than per future."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
    for (_op, _args, _future, loop), item in zip(batch, settled, strict=True):
        by_loop.setdefault(loop, []).append(item)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:  # the loop closed while we committed: nobody is waiting any more
            continue


def _settle(items: list[_Settled]) -> None:
    for future, result, error in items:
        if future.done():  # the caller was cancelled; the write still committed
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
