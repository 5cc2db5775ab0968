"""The MLLP sender: one message, one ACK, checked; failures classified for the runtime."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.connectors.mllp.acks import control_id, read_ack
from engine.connectors.mllp.config import MllpDestinationConfig, Policy, split_host_port
from engine.connectors.mllp.framing import Frame, MllpFramer, Oversize, frame
from engine.connectors.tls import TlsError, client_context
from engine.core.errors import DeliveryError, PermanentError, RetryableError
from engine.core.message import Outbound, SendResult

if TYPE_CHECKING:
    import ssl

MAX_ACK_BYTES = 1024 * 1024
READ_BYTES = 64 * 1024
CLOSE_WAIT_SECS = 2.0
_ACCEPT = {"AA", "CA"}
_ERROR = {"AE", "CE"}
_REJECT = {"AR", "CR"}


@dataclass
class _Link:
    """An open connection and the framer reading its answers."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    framer: MllpFramer = field(default_factory=lambda: MllpFramer(MAX_ACK_BYTES))

    def usable(self) -> bool:
        # The peer may have closed an idle connection since the last send; its EOF is
        # already in the reader, so reconnect instead of sending into a dead socket.
        return not (self.reader.at_eof() or self.writer.is_closing())


def _failure(policy: Policy, reason: str, response: bytes | None = None) -> DeliveryError:
    """The error the runtime expects for ``policy``: retry later, or mark the message ERROR."""
    if policy == "retry":
        return RetryableError(reason, response=response)
    return PermanentError(reason, response=response)


class MllpDestination:
    """Sends each message framed over MLLP and waits for its ACK.

    AA/CA succeed. AE/CE and AR/CR fail per ``on_ae``/``on_ar``; a wrong MSA-2, a broken
    connection or a missing ACK drop the connection (the next send reconnects). One
    connection is reused between sends unless ``keep_connection_open`` is false; a lock
    keeps sends on it one at a time.

        dest = MllpDestination(config, channel="adt-out", base_dir=root, log=log)
        await dest.open()
        result = await dest.send(outbound)  # result.response holds the ACK
        await dest.close()
    """

    def __init__(
        self,
        config: MllpDestinationConfig,
        *,
        channel: str,
        base_dir: Path,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.config = config
        self.channel = channel
        self._base_dir = base_dir
        self._log = log
        self._lock = asyncio.Lock()
        self._link: _Link | None = None
        self._ssl: ssl.SSLContext | None = None
        self._host, self._port = "", 0
        self.problem: str | None = None
        if config.endpoint:
            self._host, self._port = split_host_port(config.endpoint, allow_port_zero=False)
        else:
            self.problem = "endpoint is not configured"

    async def open(self) -> None:
        """Prepare TLS; a TLS file problem becomes ``problem``. Connecting waits for the first send."""
        if self.config.tls is None or self._ssl is not None:
            return
        try:
            self._ssl = client_context(self.config.tls, self._base_dir)
        except TlsError as exc:
            self.problem = str(exc)

    async def close(self) -> None:
        """Close the connection, if any."""
        async with self._lock:
            await self._disconnect()

    async def send(self, item: Outbound) -> SendResult:
        """Send ``item.content`` and return the ACK; raise ``RetryableError``/``PermanentError``."""
        await self.open()
        if self.problem:
            raise RetryableError(self.problem)
        async with self._lock:
            link = await self._connect()
            try:
                response = await self._exchange(link, item.content)
            except BaseException:
                self._abort()
                raise
            try:
                return self._judge(item.content, response)
            finally:
                if not self.config.keep_connection_open:
                    await self._disconnect()

    async def _connect(self) -> _Link:
        if self._link is not None and self._link.usable():
            return self._link
        await self._disconnect()
        options: dict[str, Any] = {"limit": READ_BYTES}
        if self._ssl is not None and self.config.tls is not None:
            options.update(ssl=self._ssl, server_hostname=self.config.tls.server_hostname or self._host)
        timeout = self.config.connect_timeout_secs
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(self._host, self._port, **options)
        except TimeoutError:
            raise RetryableError(f"could not connect within {timeout:g} s") from None
        except OSError as exc:
            raise RetryableError(f"could not connect: {_describe(exc)}") from None
        self._log.info("Connected.", extra={"endpoint": self.config.endpoint})
        self._link = _Link(reader, writer)
        return self._link

    async def _exchange(self, link: _Link, content: bytes) -> bytes:
        """Write the frame and read one answer frame, all within ack_timeout_secs."""
        timeout = self.config.ack_timeout_secs
        try:
            async with asyncio.timeout(timeout):
                link.writer.write(frame(content))
                await link.writer.drain()
                return await self._read_answer(link)
        except TimeoutError:
            raise _failure(self.config.on_ack_timeout, f"no acknowledgement within {timeout:g} s") from None
        except OSError as exc:
            raise RetryableError(f"connection failed while waiting for the acknowledgement: {_describe(exc)}") from None

    async def _read_answer(self, link: _Link) -> bytes:
        while True:
            data = await link.reader.read(READ_BYTES)
            if not data:
                raise RetryableError("the peer closed the connection before acknowledging")
            for event in link.framer.feed(data):
                if isinstance(event, Frame):
                    return event.payload  # later frames in this chunk are unsolicited: dropped
                if isinstance(event, Oversize):
                    raise RetryableError(f"the acknowledgement exceeds {MAX_ACK_BYTES} bytes")

    def _judge(self, content: bytes, response: bytes) -> SendResult:
        """Classify the ACK (see the class docstring)."""
        ack = read_ack(response)
        if ack is None:
            raise _failure(self.config.on_ae, "the answer is not an HL7 acknowledgement (no MSA segment)", response)
        expected = control_id(content) if self.config.check_control_id else ""
        if expected and ack.control_id != expected:
            self._abort()  # the stream is out of step with our sends; start afresh
            raise RetryableError(
                "MSA-2 of the acknowledgement does not match MSH-10 of the sent message", response=response
            )
        if ack.code in _ACCEPT:
            return SendResult(response=response, detail=ack.code)
        text = f": {ack.text}" if ack.text else ""
        if ack.code in _ERROR:
            raise _failure(self.config.on_ae, f"the peer answered {ack.code} (application error){text}", response)
        if ack.code in _REJECT:
            raise _failure(self.config.on_ar, f"the peer answered {ack.code} (rejected){text}", response)
        raise _failure(self.config.on_ae, "MSA-1 of the acknowledgement is not a known code", response)

    def _abort(self) -> None:
        """Drop the connection at once (after an error its state is unknown)."""
        if self._link is not None:
            self._link.writer.transport.abort()
            self._link = None

    async def _disconnect(self) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        link.writer.close()
        try:
            async with asyncio.timeout(CLOSE_WAIT_SECS):
                await link.writer.wait_closed()
        except (OSError, TimeoutError):
            link.writer.transport.abort()


def _describe(exc: OSError) -> str:
    """Why a socket call failed, without anything from the message."""
    return exc.strerror or str(exc) or type(exc).__name__
