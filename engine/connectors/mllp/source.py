"""The MLLP listener: frames from many connections go to ``ctx.submit``; answers go back in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast

from engine.connectors.mllp.config import MllpSourceConfig, split_host_port
from engine.connectors.mllp.framing import Event, Frame, Garbage, Incomplete, MllpFramer, Oversize, frame
from engine.connectors.tls import peer_common_name, server_context
from engine.core.contracts import SourceContext, SubmitResult

READ_BYTES = 64 * 1024
CLOSE_WAIT_SECS = 2.0  # how long a closing connection may take before it is aborted
TLS_HANDSHAKE_SECS = 30.0


@dataclass
class _Connection:
    """One accepted connection: who it is and whether it is inside submit (see ``stop``)."""

    peer: str
    writer: asyncio.StreamWriter
    source: dict[str, Any]
    busy: bool = False
    task: asyncio.Task[Any] | None = None
    reading_since: float | None = None  # loop time a read began; None while not reading
    idle_fired: bool = False  # the idle watchdog cancelled the read
    watchdog: asyncio.TimerHandle | None = None


def format_address(sockname: Any) -> str:
    """``getsockname()``/``getpeername()`` as host:port (IPv6 in brackets)."""
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = sockname[0], sockname[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(sockname)


class MllpSource:
    """Listens for MLLP connections and submits every frame to the runtime.

    Per connection, frames are handled one at a time, in arrival order: ``ctx.submit``
    (which returns after the durable commit), then the response it returns is written
    back framed. A frame over ``max_frame_bytes`` goes to ``ctx.reject`` (which answers AR)
    and the connection stays usable. Nothing a peer sends can stop the listener.

        source = MllpSource(MllpSourceConfig(type="mllp", listen="127.0.0.1:0"), ctx)
        await source.start()
        print(source.address)  # 127.0.0.1:40311
        await source.stop()
    """

    def __init__(self, config: MllpSourceConfig, ctx: SourceContext) -> None:
        self.config = config
        self._ctx = ctx
        self._server: asyncio.Server | None = None
        self._address: str | None = None
        self._connections: dict[asyncio.Task[Any], _Connection] = {}
        self._stopping = False

    @property
    def address(self) -> str | None:
        """host:port actually bound (None until started)."""
        return self._address

    async def start(self) -> None:
        """Bind and listen; returns once connections are accepted. TLS problems raise ``TlsError``."""
        host, port = split_host_port(self.config.listen)
        options: dict[str, Any] = {}
        if self.config.tls is not None:
            options["ssl"] = server_context(self.config.tls, self._ctx.base_dir)
            options["ssl_handshake_timeout"] = min(TLS_HANDSHAKE_SECS, self.config.idle_timeout_secs)
        self._stopping = False
        self._server = await asyncio.start_server(self._accept, host, port, limit=READ_BYTES, **options)
        self._address = format_address(self._server.sockets[0].getsockname())
        self._log(logging.INFO, "Listening.", listener=self._address, tls=self.config.tls is not None)

    async def stop(self, grace_secs: float = 5.0) -> None:
        """Stop listening and close every connection within about ``grace_secs``.

        Idle connections close at once; a connection inside ``submit`` may finish that
        message and write its ACK (the message is already committed) before it closes.
        """
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task, conn in list(self._connections.items()):
            if not conn.busy:
                task.cancel()
        await self._wait_connections(grace_secs)
        if self._server is not None:
            try:
                async with asyncio.timeout(CLOSE_WAIT_SECS):
                    await self._server.wait_closed()
            except TimeoutError:
                self._log(logging.WARNING, "Listener did not close in time.", listener=self._address)
            self._server = None
            self._log(logging.INFO, "Stopped listening.", listener=self._address)

    async def _wait_connections(self, grace_secs: float) -> None:
        tasks = list(self._connections)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_secs)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_WAIT_SECS)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = format_address(writer.get_extra_info("peername"))
        if self._stopping or len(self._connections) >= self.config.max_connections:
            self._log(logging.WARNING, "Connection refused: too many connections.", peer=peer)
            await _close(writer)
            return
        conn = _Connection(peer, writer, self._source_fields(peer, writer))
        task = cast("asyncio.Task[Any]", asyncio.current_task())  # start_server runs callbacks as tasks
        conn.task = task
        self._connections[task] = conn
        self._watch(conn)
        self._log(logging.INFO, "Connection accepted.", peer=peer, tls_subject=conn.source["tls_subject"])
        framer = MllpFramer(self.config.max_frame_bytes)
        try:
            await self._serve(reader, conn, framer)
        finally:
            if conn.watchdog is not None:
                conn.watchdog.cancel()
            for event in framer.close():
                self._report_discarded(event, conn)
            del self._connections[task]
            await _close(writer)
            self._log(logging.INFO, "Connection closed.", peer=peer)

    def _source_fields(self, peer: str, writer: asyncio.StreamWriter) -> dict[str, Any]:
        return {
            "peer": peer,
            "listener": self._address,
            "tls_subject": peer_common_name(writer.get_extra_info("peercert")),
        }

    async def _serve(self, reader: asyncio.StreamReader, conn: _Connection, framer: MllpFramer) -> None:
        while not self._stopping:
            data = await self._read(reader, conn)
            if not data:
                return
            for event in framer.feed(data):
                if self._stopping or not await self._handle(event, conn):
                    return

    async def _read(self, reader: asyncio.StreamReader, conn: _Connection) -> bytes:
        """The next chunk; b"" on EOF, idle timeout or a broken connection (each logged)."""
        conn.reading_since = asyncio.get_running_loop().time()
        try:
            return await reader.read(READ_BYTES)
        except asyncio.CancelledError:
            task = conn.task
            if conn.idle_fired and task is not None and task.uncancel() == 0:
                self._log(logging.INFO, "Connection idle; closing it.", peer=conn.peer)
                return b""
            raise  # a real cancellation (stop), not only the watchdog's
        except OSError as exc:  # reset, broken pipe, TLS errors
            self._log(logging.WARNING, "Connection lost.", peer=conn.peer, error_type=type(exc).__name__)
            return b""
        finally:
            conn.reading_since = None

    def _watch(self, conn: _Connection) -> None:
        """The idle timeout: one timer per connection, re-armed, instead of one per read.

        A read that has waited ``idle_timeout_secs`` is cancelled (``_read`` turns that into
        an idle close); time spent processing or answering does not count, as before.
        """
        loop = asyncio.get_running_loop()
        idle = self.config.idle_timeout_secs
        now = loop.time()
        since = conn.reading_since
        if since is not None and now - since >= idle and conn.task is not None and not conn.task.done():
            conn.idle_fired = True
            conn.task.cancel()
            return
        due = since + idle if since is not None else now + idle
        conn.watchdog = loop.call_at(due, self._watch, conn)

    async def _handle(self, event: Event, conn: _Connection) -> bool:
        """Act on one framer event; False when the connection must close."""
        if isinstance(event, Frame):
            if self._ctx.debug:
                self._log(logging.DEBUG, "Frame received.", peer=conn.peer, content=event.payload.decode("latin-1"))
            return await self._answer(conn, self._ctx.submit(event.payload, dict(conn.source)))
        if isinstance(event, Oversize):
            limit = self.config.max_frame_bytes
            self._log(logging.WARNING, "Frame too large; rejected.", peer=conn.peer, size=event.size, limit=limit)
            reason = f"frame exceeds max_frame_bytes ({limit} bytes)"
            return await self._answer(conn, self._ctx.reject(event.prefix, dict(conn.source), reason))
        self._report_discarded(event, conn)
        return True

    async def _answer(self, conn: _Connection, submission: Awaitable[SubmitResult]) -> bool:
        """Await a submit/reject coroutine, then write its response; False on failure."""
        conn.busy = True
        try:
            result = await submission
        except Exception as exc:  # noqa: BLE001 - the listener must outlive any runtime failure
            self._log(logging.ERROR, "Submit failed; closing the connection.", peer=conn.peer, error_type=_name(exc))
            return False
        finally:
            conn.busy = False
        if result.response is None:
            return True
        return await self._write(conn, frame(result.response))

    async def _write(self, conn: _Connection, data: bytes) -> bool:
        try:
            conn.writer.write(data)
            if not conn.writer.transport.get_write_buffer_size():
                return True  # all sent at once (the usual case): no drain, no timer
            async with asyncio.timeout(self.config.idle_timeout_secs):
                await conn.writer.drain()
        except (OSError, TimeoutError) as exc:
            self._log(logging.WARNING, "Could not send the response.", peer=conn.peer, error_type=_name(exc))
            return False
        return True

    def _report_discarded(self, event: Event, conn: _Connection) -> None:
        if isinstance(event, Garbage):
            self._log(logging.WARNING, "Discarded bytes outside frames.", peer=conn.peer, size=event.count)
        elif isinstance(event, Incomplete):
            self._log(logging.WARNING, "Discarded an unfinished frame.", peer=conn.peer, size=event.size)

    def _log(self, level: int, sentence: str, **fields: Any) -> None:
        self._ctx.log.log(level, sentence, extra=fields)


def _name(exc: BaseException) -> str:
    return type(exc).__name__


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close politely (TLS close_notify included); abort when the peer does not cooperate."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_WAIT_SECS):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()
