"""Group commit in a separate process (``writer: process``).

The thread writer (``writer.py``) shares the engine's GIL: every SQLite statement gives the
GIL back and must win it again from the busy event loop. Measured on a 2-core VM with the
bench channel: the ACK path alone went from 2,517 to 3,528 msg/s with this writer, and the
full pipeline (file destination delivering) from 1,285 to 1,618 msg/s, in A/B runs.

How it works: the event loop gathers the writes submitted during one loop iteration and
sends them as one pickled frame over a socketpair. The child process (``main`` here) reads
every frame already waiting (up to ``batch_max`` operations) and runs them in one
``BEGIN IMMEDIATE ... COMMIT`` with the thread writer's fallback (a failing operation is
run again alone under a savepoint, the rest commit). It answers each frame after COMMIT
returned, in order: a future resolves only once its write is durable, as with the thread
writer.

The child ends when the socket closes: on ``stop`` after answering everything sent, and
when the engine dies (even by SIGKILL, the kernel closes the socket) after finishing the
batch in hand. Operations are the module-level functions of ``writes.py`` (pickled by
name) and their arguments are plain dataclasses. POSIX only (the socket is inherited).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import pickle
import select
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from engine.store import StoreError
from engine.store.sqlite.writer import run_batch

T = TypeVar("T")
# Not ``-m engine.store.sqlite.procwriter``: the package imports this module first, and runpy
# warns about running a module that is already imported.
_CHILD_MAIN = "import sys; from engine.store.sqlite.procwriter import main; main(sys.argv[1:])"
_LEN = struct.Struct("!I")
_PICKLE = pickle.HIGHEST_PROTOCOL
RESTART_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # then writes keep failing: the engine needs a look
log = logging.getLogger("junction.store")


class ProcessWriter:
    """The ``GroupCommitWriter`` interface, with the writes done by a child process."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, *, batch_max: int, busy_timeout_ms: int, synchronous: str
    ) -> None:
        self._conn = conn  # the parent's connection: schema set-up before, PRAGMA optimize after
        self._args = [str(path), str(max(1, batch_max)), str(busy_timeout_ms), synchronous]
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gathering: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] | None = None
        self._waiting: collections.deque[list[asyncio.Future[Any]]] = collections.deque()
        self._buffer = bytearray()
        self._closed = False
        self._gone: BaseException | None = None
        self._ended = threading.Event()
        self._restarting: asyncio.Task[None] | None = None
        self.commits = 0  # answered frames (a commit answers one or more)
        self.operations = 0

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    async def attach(self) -> None:
        """Start the child and connect it to the running loop (the store's loop from now on)."""
        parent, child = socket.socketpair()
        try:
            self._proc = await asyncio.to_thread(self._spawn, child)
        except (OSError, ValueError) as exc:  # ValueError: pass_fds where there is no fork
            parent.close()
            raise StoreError(f"cannot start the store writer process (writer: process needs POSIX): {exc}") from exc
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self._sock = parent
        self._loop = asyncio.get_running_loop()
        self._transport, _ = await self._loop.create_unix_connection(lambda: _Link(self), sock=parent)

    def _spawn(self, child: socket.socket) -> subprocess.Popen[bytes]:
        # The child imports this very package, wherever it was imported from (an installed
        # copy, a checkout on sys.path, a benchmark that put it there).
        home = str(Path(__file__).resolve().parents[3])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (home, os.environ.get("PYTHONPATH")) if p)}
        return subprocess.Popen(
            [sys.executable, "-c", _CHILD_MAIN, str(child.fileno()), *self._args],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def submit(self, op: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Queue ``op(conn, *args)``; the future resolves after its transaction committed."""
        if self._closed or self._gone is not None:
            raise StoreError("the message store is closed" if self._closed else f"the store writer ended: {self._gone}")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise StoreError("this store's process writer belongs to another event loop")
        future: asyncio.Future[Any] = loop.create_future()
        if self._gathering is None:
            self._gathering = []
            loop.call_soon(self._send)  # this iteration's writes travel (and commit) together
        self._gathering.append((op, args, future))
        return future

    async def run(self, op: Callable[..., T], *args: Any) -> T:
        return await self.submit(op, *args)  # type: ignore[no-any-return]

    def _send(self) -> None:
        items, self._gathering = self._gathering or [], None
        if not items:
            return
        futures = [future for _op, _args, future in items]
        try:
            data = pickle.dumps([(op, args) for op, args, _future in items], protocol=_PICKLE)
        except Exception as exc:  # noqa: BLE001 - an argument that cannot travel fails its callers
            for future in futures:
                if not future.done():
                    future.set_exception(StoreError(f"cannot send this write to the store process: {exc}"))
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            self._fail(futures, StoreError("the store writer process is gone"))
            return
        self._waiting.append(futures)
        transport.write(_LEN.pack(len(data)) + data)

    def _received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while len(buf) >= _LEN.size:
            (size,) = _LEN.unpack_from(buf)
            end = _LEN.size + size
            if len(buf) < end:
                return
            results = pickle.loads(bytes(buf[_LEN.size : end]))  # noqa: S301 - our own child
            del buf[:end]
            futures = self._waiting.popleft()
            self.commits += 1
            self.operations += len(futures)
            for future, (ok, value) in zip(futures, results, strict=True):
                if future.done():  # the caller was cancelled; the write still committed
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _lost(self, exc: BaseException | None) -> None:
        self._gone = exc or StoreError("the store writer process closed its end")
        while self._waiting:
            self._fail(self._waiting.popleft(), StoreError("the store writer process ended before answering"))
        self._ended.set()
        if not self._closed and self._loop is not None and not self._loop.is_closed():
            # Killed or crashed: the writes in flight failed (their senders get no ACK and send
            # again); start a new child so the engine goes on without a restart.
            log.error("The store writer process ended unexpectedly; starting a new one.")
            self._restarting = self._loop.create_task(self._restart())

    async def _restart(self) -> None:
        for delay in RESTART_DELAYS:
            await asyncio.sleep(delay)
            if self._closed:
                return
            proc = self._proc
            if proc is not None:
                await asyncio.to_thread(_reap, proc)
            try:
                self._ended.clear()
                self._buffer.clear()
                await self.attach()
            except (OSError, RuntimeError) as exc:
                log.error("Could not start the store writer process.", extra={"error": str(exc)[:300]})
                continue
            self._gone = None
            log.info("The store writer process is running again.")
            return

    @staticmethod
    def _fail(futures: list[asyncio.Future[Any]], error: Exception) -> None:
        for future in futures:
            if not future.done():
                future.set_exception(error)

    def stop(self, timeout: float = 60.0) -> bool:
        """Let the child commit and answer everything sent, then end it (call off the loop)."""
        self._closed = True
        loop, transport = self._loop, self._transport
        via_loop = False
        try:
            if loop is None or transport is None or not loop.is_running():
                raise RuntimeError("no loop to send the end on")
            # Behind any _send already scheduled on the loop: those frames go out first.
            loop.call_soon_threadsafe(_write_eof, transport)
            via_loop = True
        except RuntimeError:  # no running loop to do it: closing our end ends the child too
            if self._sock is not None:
                self._sock.close()
        proc = self._proc
        if proc is None:
            return True
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        if via_loop:
            self._ended.wait(5.0)  # the loop has read the last answers
        return True


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _write_eof(transport: asyncio.Transport) -> None:
    if not transport.is_closing():
        transport.write_eof()


class _Link(asyncio.Protocol):
    def __init__(self, writer: ProcessWriter) -> None:
        self._writer = writer

    def data_received(self, data: bytes) -> None:
        self._writer._received(data)

    def eof_received(self) -> bool:
        return False  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self._writer._lost(exc)


# -- the child process -------------------------------------------------------------------------


def _answer(error: Exception) -> Exception:
    """An exception that survives pickling as itself, else a StoreError that names it."""
    try:
        back = pickle.loads(pickle.dumps(error, protocol=_PICKLE))  # noqa: S301 - just made
    except Exception:  # noqa: BLE001
        return StoreError(f"{type(error).__name__}: {error}")
    return back if type(back) is type(error) else StoreError(f"{type(error).__name__}: {error}")


class _Child:
    def __init__(self, sock: socket.socket, conn: sqlite3.Connection, batch_max: int) -> None:
        self.sock = sock
        self.conn = conn
        self.batch_max = batch_max
        self.buf = bytearray()
        self.eof = False
        # recv(1 MiB) would allocate and map a fresh MiB per read (mmap, mremap, munmap)
        self._chunk = memoryview(bytearray(1 << 20))

    def _frames(self) -> list[list[tuple[Callable[..., Any], tuple[Any, ...]]]]:
        out = []
        buf = self.buf
        while len(buf) >= _LEN.size:
            (size,) = _LEN.unpack_from(buf)
            end = _LEN.size + size
            if len(buf) < end:
                break
            out.append(pickle.loads(bytes(buf[_LEN.size : end])))  # noqa: S301 - from our parent
            del buf[:end]
        return out

    def _read(self, wait: bool) -> bool:
        """Read what is there (blocking for the first bytes when ``wait``); False at EOF."""
        if not wait and not select.select([self.sock], [], [], 0)[0]:
            return True
        size = self.sock.recv_into(self._chunk)
        if not size:
            self.eof = True
            return False
        self.buf += self._chunk[:size]
        return True

    def serve(self) -> None:
        while True:
            requests = self._frames()
            while not requests and self._read(wait=True):
                requests = self._frames()
            if not requests:
                return  # EOF with nothing pending
            # Group commit: everything already sent joins this transaction.
            while not self.eof and sum(len(r) for r in requests) < self.batch_max and self._read(wait=False):
                more = self._frames()
                if not more:
                    break
                requests += more
            replies = self._commit(requests)
            try:
                for reply in replies:
                    data = pickle.dumps(reply, protocol=_PICKLE)
                    self.sock.sendall(_LEN.pack(len(data)) + data)
            except OSError:
                return  # the engine is gone; what it sent is committed

    def _commit(self, requests: list[list[tuple[Callable[..., Any], tuple[Any, ...]]]]) -> list[list[Any]]:
        outcomes = run_batch(self.conn, [item for request in requests for item in request])
        outcomes = [(ok, value if ok else _answer(value)) for ok, value in outcomes]
        replies = []
        position = 0
        for request in requests:
            replies.append(outcomes[position : position + len(request)])
            position += len(request)
        return replies


def main(argv: list[str]) -> None:
    """The child: ``FD PATH BATCH_MAX BUSY_TIMEOUT_MS SYNCHRONOUS`` (see ``ProcessWriter``)."""
    import signal

    from engine.store.sqlite.schema import connect

    # Ctrl-C and a service manager's SIGTERM reach the whole process group: the child keeps
    # committing until the engine closes the socket (its graceful stop, or its death).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd, path, batch_max, busy_timeout_ms, synchronous = argv
    sock = socket.socket(fileno=int(fd))
    conn = connect(Path(path), busy_timeout_ms=int(busy_timeout_ms), synchronous=synchronous)  # type: ignore[arg-type]
    try:
        _Child(sock, conn, int(batch_max)).serve()
    finally:
        conn.close()
        sock.close()
