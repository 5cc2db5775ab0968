"""The MLLP listener and sender over real sockets on 127.0.0.1 (plain and TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.connectors.mllp import MllpDestinationConfig, MllpSourceConfig
from engine.connectors.mllp.acks import control_id, read_ack
from engine.connectors.mllp.config import split_host_port
from engine.connectors.mllp.destination import MllpDestination
from engine.connectors.mllp.framing import Frame, MllpFramer, Oversize, frame
from engine.connectors.mllp.source import MllpSource
from engine.connectors.tls import ClientTlsConfig, TlsError
from engine.core.contracts import SubmitResult
from engine.core.errors import DeliveryError, PermanentError, RetryableError
from engine.core.logs import bind
from engine.core.message import Outbound, new_id

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LOGGER = "junction.test.mllp"
SECRET = b"SECRETNAME"  # stands for PHI: must never reach a log record


def message(cid: str, filler: int = 0) -> bytes:
    return (
        f"MSH|^~\\&|EHR|HOSP|ENGINE|HOSP|202401011200||ADT^A01|{cid}|P|2.5\r".encode()
        + b"PID|1||12345||"
        + SECRET
        + b"^JANE\r"
        + b"NTE|1||"
        + b"n" * filler
        + b"\r"
    )


def ack_for(raw: bytes, code: str = "AA", *, cid: str | None = None, text: str = "") -> bytes:
    """A tiny ACK builder (the real one belongs to the hl7v2 data type)."""
    acked = control_id(raw) if cid is None else cid
    return f"MSH|^~\\&|ENGINE|HOSP|EHR|HOSP|202401011200||ACK^A01|A{acked}|P|2.5\rMSA|{code}|{acked}|{text}\r".encode()


@dataclass
class FakeContext:
    """A SourceContext test double: records submissions and answers with a canned ACK."""

    base_dir: Path = Path()
    channel: str = "test-channel"
    debug: bool = False
    delay_secs: float = 0.0
    log: logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: bind(logging.getLogger(LOGGER), channel="test-channel")
    )
    submitted: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    rejected: list[tuple[bytes, dict[str, Any], str]] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)  # set once submit has been called

    async def submit(self, raw: bytes, source: dict[str, Any]) -> SubmitResult:
        self.entered.set()
        if b"BOOM" in raw:
            raise RuntimeError("store is down")
        if self.delay_secs:
            await asyncio.sleep(self.delay_secs)
        self.submitted.append((raw, source))
        return SubmitResult(message_id=new_id(), accepted=True, response=ack_for(raw))

    async def reject(self, raw: bytes, source: dict[str, Any], reason: str, *, store: bool = True) -> SubmitResult:
        self.rejected.append((raw, source, reason))
        return SubmitResult(message_id=new_id(), accepted=False, response=ack_for(raw, "AR", text=reason))


# --- client helpers -------------------------------------------------------------------


async def connect(address: str, **options: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = split_host_port(address)
    async with asyncio.timeout(5):
        return await asyncio.open_connection(host, port, **options)


async def read_frames(reader: asyncio.StreamReader, count: int, timeout: float = 10.0) -> list[bytes]:
    """Up to ``count`` frames; fewer if the peer closes first."""
    framer, frames = MllpFramer(), list[bytes]()
    async with asyncio.timeout(timeout):
        while len(frames) < count:
            data = await reader.read(65536)
            if not data:
                break
            frames += [e.payload for e in framer.feed(data) if isinstance(e, Frame)]
    return frames


async def read_eof(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything until the peer closes (fails the test when it does not close in time)."""
    chunks = []
    async with asyncio.timeout(timeout):
        while data := await reader.read(65536):
            chunks.append(data)
    return b"".join(chunks)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Bounded wait for a condition another task makes true."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(2):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def running(ctx: FakeContext, **options: Any) -> AsyncIterator[MllpSource]:
    source = MllpSource(MllpSourceConfig(type="mllp", listen="127.0.0.1:0", **options), ctx)
    await source.start()
    try:
        yield source
    finally:
        async with asyncio.timeout(10):
            await source.stop()


def assert_no_content_logged(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert SECRET.decode() not in record.getMessage()
        assert all(SECRET.decode() not in str(value) for value in vars(record).values())


def sentences(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


# --- listener -------------------------------------------------------------------------


def test_many_concurrent_clients_get_their_acks_in_order(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    ctx = FakeContext()

    async def client(address: str, n: int) -> list[str]:
        reader, writer = await connect(address)
        ids = [f"C{n}M{i}" for i in range(50)]
        writer.write(b"".join(frame(message(cid)) for cid in ids))  # pipelined: order must hold
        await writer.drain()
        acks = await read_frames(reader, 50)
        await close(writer)
        return [read_ack(a).control_id for a in acks]  # type: ignore[union-attr]

    async def main() -> None:
        async with running(ctx) as source:
            assert source.address is not None
            assert source.address.startswith("127.0.0.1:")
            assert not source.address.endswith(":0")
            results = await asyncio.gather(*(client(source.address, n) for n in range(20)))
        for n, acked in enumerate(results):
            assert acked == [f"C{n}M{i}" for i in range(50)]

    asyncio.run(main())
    assert len(ctx.submitted) == 1000
    _, meta = ctx.submitted[0]
    assert meta["peer"].startswith("127.0.0.1:")
    assert meta["listener"].startswith("127.0.0.1:")
    assert meta["tls_subject"] is None
    assert "Connection accepted." in sentences(caplog)
    assert_no_content_logged(caplog)


def test_frames_written_byte_by_byte() -> None:
    ctx = FakeContext()

    async def main() -> None:
        async with running(ctx) as source:
            reader, writer = await connect(source.address or "")
            writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for byte in b"\r\n" + frame(message("B1")) + frame(message("B2")):
                writer.write(bytes([byte]))
                await writer.drain()
            acks = await read_frames(reader, 2)
            await close(writer)
        assert [read_ack(a).control_id for a in acks] == ["B1", "B2"]  # type: ignore[union-attr]

    asyncio.run(main())
    assert [raw for raw, _ in ctx.submitted] == [message("B1"), message("B2")]


def test_debug_channel_logs_content_and_others_never(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    ctx = FakeContext(debug=True)

    async def main() -> None:
        async with running(ctx) as source:
            reader, writer = await connect(source.address or "")
            writer.write(frame(message("D1")))
            assert len(await read_frames(reader, 1)) == 1
            await close(writer)

    asyncio.run(main())
    [record] = [r for r in caplog.records if r.getMessage() == "Frame received."]
    assert SECRET.decode() in record.content  # type: ignore[attr-defined]


def test_oversize_frame_is_rejected_and_the_connection_stays_usable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    ctx = FakeContext()
    big = message("BIG", filler=5000)

    async def main() -> None:
        async with running(ctx, max_frame_bytes=1024) as source:
            reader, writer = await connect(source.address or "")
            writer.write(frame(big))
            [nack] = await read_frames(reader, 1)
            writer.write(frame(message("SMALL")))
            [ack] = await read_frames(reader, 1)
            await close(writer)
        assert read_ack(nack).code == "AR"  # type: ignore[union-attr]
        assert read_ack(ack).code == "AA"  # type: ignore[union-attr]
        assert read_ack(ack).control_id == "SMALL"  # type: ignore[union-attr]

    asyncio.run(main())
    [(prefix, meta, reason)] = ctx.rejected
    assert big.startswith(prefix)
    assert control_id(prefix) == "BIG"  # the prefix keeps MSH, so the NACK can name the message
    assert len(prefix) < len(big)
    assert reason == "frame exceeds max_frame_bytes (1024 bytes)"
    assert meta["peer"].startswith("127.0.0.1:")
    assert [raw for raw, _ in ctx.submitted] == [message("SMALL")]
    assert "Frame too large; rejected." in sentences(caplog)
    assert_no_content_logged(caplog)


def test_idle_timeout_closes_and_discards_a_partial_frame(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    ctx = FakeContext()

    async def main() -> float:
        async with running(ctx, idle_timeout_secs=0.3) as source:
            reader, writer = await connect(source.address or "")
            writer.write(b"\x0b" + message("PARTIAL"))
            started = time.monotonic()
            assert await read_eof(reader, timeout=5) == b""
            elapsed = time.monotonic() - started
            await close(writer)
            return elapsed

    elapsed = asyncio.run(main())
    assert 0.25 <= elapsed < 3
    assert ctx.submitted == []
    assert "Connection idle; closing it." in sentences(caplog)
    assert "Discarded an unfinished frame." in sentences(caplog)
    assert_no_content_logged(caplog)


def test_idle_time_counts_only_while_waiting_for_data(caplog: pytest.LogCaptureFixture) -> None:
    """Slow processing is not idleness; and a connection that keeps talking stays open past
    the timeout, each new read restarting the clock."""
    caplog.set_level(logging.INFO, LOGGER)
    ctx = FakeContext(delay_secs=0.5)

    async def main() -> tuple[list[bytes], float]:
        async with running(ctx, idle_timeout_secs=0.3) as source:
            reader, writer = await connect(source.address or "")
            started = time.monotonic()
            writer.write(frame(message("SLOW")))  # processing takes longer than the idle timeout
            answers = await read_frames(reader, 1)
            ctx.delay_secs = 0.0
            for n in range(4):  # 0.8 s of traffic in all, each gap shorter than the timeout
                await asyncio.sleep(0.2)
                writer.write(frame(message(f"KEEP{n}")))
                answers += await read_frames(reader, 1)
            assert await read_eof(reader, timeout=5) == b""  # then silence: closed as idle
            elapsed = time.monotonic() - started
            await close(writer)
            return answers, elapsed

    answers, elapsed = asyncio.run(main())
    assert [control_id(a) for a in answers] == ["ASLOW", "AKEEP0", "AKEEP1", "AKEEP2", "AKEEP3"]
    assert elapsed >= 1.5  # 0.5 processing + 0.8 traffic + 0.3 idle
    assert sentences(caplog).count("Connection idle; closing it.") == 1


def test_max_connections_closes_new_connections_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    ctx = FakeContext()

    async def main() -> None:
        async with running(ctx, max_connections=2) as source:
            address = source.address or ""
            clients = [await connect(address) for _ in range(2)]
            for n, (reader, writer) in enumerate(clients):  # make sure both were accepted
                writer.write(frame(message(f"K{n}")))
                assert len(await read_frames(reader, 1)) == 1
            reader, writer = await connect(address)
            assert await read_eof(reader, timeout=2) == b""
            await close(writer)
            first_reader, first_writer = clients[0]
            first_writer.write(frame(message("K9")))
            assert len(await read_frames(first_reader, 1)) == 1
            for _, w in clients:
                await close(w)

    asyncio.run(main())
    assert "Connection refused: too many connections." in sentences(caplog)


def test_submit_failure_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    ctx = FakeContext()

    async def main() -> None:
        async with running(ctx) as source:
            address = source.address or ""
            reader, writer = await connect(address)
            writer.write(frame(message("BOOM")))
            assert await read_eof(reader) == b""  # no ACK: the sender will resend
            await close(writer)
            reader, writer = await connect(address)
            writer.write(frame(message("AFTER")))
            assert len(await read_frames(reader, 1)) == 1
            await close(writer)

    asyncio.run(main())
    [record] = [r for r in caplog.records if r.getMessage() == "Submit failed; closing the connection."]
    assert record.error_type == "RuntimeError"  # type: ignore[attr-defined]
    assert "store is down" not in str(vars(record))
    assert_no_content_logged(caplog)


def test_peer_gone_mid_frame_is_survived(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    ctx = FakeContext()

    async def main() -> None:
        async with running(ctx) as source:
            address = source.address or ""
            _, writer = await connect(address)
            writer.write(b"junk\x0b" + message("CUT")[:20])
            await writer.drain()
            writer.transport.abort()  # RST-like end, mid-frame
            await asyncio.sleep(0.2)
            reader, writer = await connect(address)
            writer.write(frame(message("NEXT")))
            assert len(await read_frames(reader, 1)) == 1
            await close(writer)

    asyncio.run(main())
    assert [raw for raw, _ in ctx.submitted] == [message("NEXT")]
    assert "Discarded an unfinished frame." in sentences(caplog)
    assert "Discarded bytes outside frames." in sentences(caplog)


def test_stop_closes_idle_connections_and_lets_a_busy_one_answer() -> None:
    ctx = FakeContext(delay_secs=0.3)

    async def main() -> None:
        source = MllpSource(MllpSourceConfig(type="mllp", listen="127.0.0.1:0"), ctx)
        await source.start()
        idle_reader, idle_writer = await connect(source.address or "")
        busy_reader, busy_writer = await connect(source.address or "")
        busy_writer.write(frame(message("INFLIGHT")))
        await busy_writer.drain()
        async with asyncio.timeout(5):
            await ctx.entered.wait()  # the busy connection is now inside submit
        started = time.monotonic()
        await source.stop()
        assert time.monotonic() - started < 3
        assert await read_eof(idle_reader, timeout=2) == b""
        [ack] = await read_frames(busy_reader, 2, timeout=2)  # its ACK, then the close
        assert read_ack(ack).control_id == "INFLIGHT"  # type: ignore[union-attr]
        for w in (idle_writer, busy_writer):
            await close(w)
        with pytest.raises(OSError):
            await connect(source.address or "")
        await source.start()  # the runtime restarts the same instance after a stop
        reader, writer = await connect(source.address or "")
        writer.write(frame(message("AGAIN")))
        assert len(await read_frames(reader, 1)) == 1
        await close(writer)
        await source.stop()

    asyncio.run(main())


class ThreadedSource:
    """An MllpSource on its own event loop thread, for blocking-socket (Hypothesis) clients."""

    def __init__(self, ctx: FakeContext, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.source = MllpSource(MllpSourceConfig(type="mllp", listen="127.0.0.1:0", **options), ctx)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> tuple[str, int]:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.source.start(), self.loop).result(5)
        return split_host_port(self.source.address or "")

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.source.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def exchange_blocking(address: tuple[str, int], chunks: list[bytes], timeout: float = 5.0) -> bytes:
    """Send the chunks, half-close, and read until the listener closes."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in chunks:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        received = []
        while data := sock.recv(65536):
            received.append(data)
    return b"".join(received)


PIECE = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"\x0b", b"\x1c", b"\r", b"\n", b"\x1c\r", b"\x0bMSH|^~\\&|A|B|C|D|T||ADT|X1|P|2.5\r"]),
    st.just(b"x" * 1500),  # over the 1024-byte limit when inside a frame
)


def test_arbitrary_bytes_in_arbitrary_chunks_never_break_the_listener() -> None:
    ctx = FakeContext()
    with ThreadedSource(ctx, max_frame_bytes=1024, idle_timeout_secs=5) as address:

        @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(pieces=st.lists(PIECE, max_size=12), sizes=st.lists(st.integers(1, 200), min_size=1, max_size=10))
        def check(pieces: list[bytes], sizes: list[int]) -> None:
            stream = b"".join(pieces)
            chunks, pos = list[bytes](), 0
            while pos < len(stream):
                size = sizes[len(chunks) % len(sizes)]
                chunks.append(stream[pos : pos + size])
                pos += size
            oracle = MllpFramer(1024).feed(stream)
            expected = sum(isinstance(e, Frame | Oversize) for e in oracle)
            answers = [e for e in MllpFramer().feed(exchange_blocking(address, chunks)) if isinstance(e, Frame)]
            assert len(answers) == expected  # one response per frame, then a clean close
            assert all(read_ack(a.payload) is not None for a in answers)
            # The listener is still healthy: a new connection gets its ACK.
            reply = exchange_blocking(address, [frame(message("ALIVE"))])
            assert read_ack(MllpFramer().feed(reply)[0].payload).control_id == "ALIVE"  # type: ignore[union-attr]

        check()


# --- TLS ------------------------------------------------------------------------------


@dataclass
class Pki:
    dir: Path
    ca: str = "ca.pem"
    server_cert: str = "server.pem"
    server_key: str = "server.key"  # encrypted with PASSWORD
    client_cert: str = "client.pem"
    client_key: str = "client.key"


PASSWORD = "s3cret-for-tests"


def make_pki(directory: Path) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def build(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    def write_key(path: Path, key: ec.EllipticCurvePrivateKey, password: bytes | None) -> None:
        encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))

    pki = Pki(directory)
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = build("Junction Test CA", ca_key, "Junction Test CA", ca_key, ca=True)
    (directory / pki.ca).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cert_name, key_name, cn, key, password in (
        (pki.server_cert, pki.server_key, "localhost", server_key, PASSWORD.encode()),
        (pki.client_cert, pki.client_key, "client-1", client_key, None),
    ):
        cert = build(cn, key, "Junction Test CA", ca_key, ca=False)
        (directory / cert_name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(directory / key_name, key, password)
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def key_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLP_TEST_KEY_PASSWORD", PASSWORD)


def server_tls(pki: Pki, *, require: bool) -> dict[str, Any]:
    return {
        "cert_file": pki.server_cert,  # relative: resolved against ctx.base_dir
        "key_file": pki.server_key,
        "key_password_env": "MLLP_TEST_KEY_PASSWORD",
        "client_ca_file": pki.ca,
        "require_client_cert": require,
    }


def client_ssl(pki: Pki, *, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.dir / pki.ca)
    if with_cert:
        context.load_cert_chain(pki.dir / pki.client_cert, pki.dir / pki.client_key)
    return context


@pytest.mark.usefixtures("key_password")
def test_tls_with_required_client_certificate(pki: Pki) -> None:
    ctx = FakeContext(base_dir=pki.dir)

    async def main() -> None:
        async with running(ctx, tls=server_tls(pki, require=True)) as source:
            address = source.address or ""
            reader, writer = await connect(address, ssl=client_ssl(pki, with_cert=True), server_hostname="localhost")
            writer.write(frame(message("TLS1")))
            [ack] = await read_frames(reader, 1)
            assert read_ack(ack).control_id == "TLS1"  # type: ignore[union-attr]
            await close(writer)
            # Without a client certificate the server ends the handshake: no ACK, nothing submitted.
            reader, writer = await connect(address, ssl=client_ssl(pki, with_cert=False), server_hostname="localhost")
            writer.write(frame(message("NOCERT")))
            try:  # TLS 1.3 finishes the client's handshake first; the refusal arrives as an alert or EOF
                answers = await read_frames(reader, 1, timeout=5)
            except (ssl.SSLError, ConnectionError):
                answers = []
            assert answers == []
            await close(writer)

    asyncio.run(main())
    [(raw, meta)] = ctx.submitted
    assert raw == message("TLS1")
    assert meta["tls_subject"] == "client-1"


@pytest.mark.usefixtures("key_password")
def test_tls_optional_client_certificate(pki: Pki) -> None:
    ctx = FakeContext(base_dir=pki.dir)

    async def main() -> None:
        async with running(ctx, tls=server_tls(pki, require=False)) as source:
            reader, writer = await connect(
                source.address or "", ssl=client_ssl(pki, with_cert=False), server_hostname="localhost"
            )
            writer.write(frame(message("ANON")))
            assert len(await read_frames(reader, 1)) == 1
            await close(writer)

    asyncio.run(main())
    assert ctx.submitted[0][1]["tls_subject"] is None


def test_tls_problems_are_reported_by_file(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLLP_TEST_KEY_PASSWORD", raising=False)
    ctx = FakeContext(base_dir=pki.dir)
    missing = MllpSource(
        MllpSourceConfig(type="mllp", listen="127.0.0.1:0", tls={"cert_file": "no.pem", "key_file": "k"}), ctx
    )
    unset = MllpSource(MllpSourceConfig(type="mllp", listen="127.0.0.1:0", tls=server_tls(pki, require=False)), ctx)
    with pytest.raises(TlsError, match=r"tls\.cert_file: file not found: .*no\.pem"):
        asyncio.run(missing.start())
    with pytest.raises(TlsError, match="MLLP_TEST_KEY_PASSWORD is not set"):
        asyncio.run(unset.start())
    monkeypatch.setenv("MLLP_TEST_KEY_PASSWORD", "wrong-password")
    with pytest.raises(TlsError, match=r"tls\.cert_file: cannot load the certificate or key") as info:
        asyncio.run(unset.start())
    assert "wrong-password" not in str(info.value)


@pytest.mark.usefixtures("key_password")
def test_destination_to_listener_over_mutual_tls(pki: Pki) -> None:
    ctx = FakeContext(base_dir=pki.dir)

    async def main() -> None:
        async with running(ctx, tls=server_tls(pki, require=True)) as source:
            tls = ClientTlsConfig(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
            dest = destination(source.address or "", base_dir=pki.dir, tls=tls)
            await dest.open()
            assert dest.problem is None
            for n in range(3):
                result = await dest.send(outbound(message(f"T{n}")))
                assert read_ack(result.response or b"").control_id == f"T{n}"  # type: ignore[union-attr]
            await dest.close()

    asyncio.run(main())
    assert len({meta["peer"] for _, meta in ctx.submitted}) == 1  # one connection, reused
    assert {meta["tls_subject"] for _, meta in ctx.submitted} == {"client-1"}


def test_destination_refuses_an_untrusted_server(pki: Pki, key_password: None) -> None:
    ctx = FakeContext(base_dir=pki.dir)

    async def main() -> None:
        async with running(ctx, tls=server_tls(pki, require=False)) as source:
            dest = destination(source.address or "", tls=ClientTlsConfig())  # system trust store only
            with pytest.raises(RetryableError, match="could not connect"):
                await dest.send(outbound(message("X")))
            await dest.close()

    asyncio.run(main())
    assert ctx.submitted == []


# --- destination against an in-test MLLP peer ---------------------------------------------


class Peer:
    """An MLLP server whose answer is chosen by ``mode``: AA, AE, AR, CA, wrong, silent, AA-then-close."""

    def __init__(self, mode: str = "AA") -> None:
        self.mode = mode
        self.connections = 0
        self.closed = 0
        self.received: list[bytes] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.endpoint = ""

    async def __aenter__(self) -> Peer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.endpoint = f"{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        async with asyncio.timeout(5):
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        framer = MllpFramer()
        try:
            while data := await reader.read(65536):
                for event in framer.feed(data):
                    if isinstance(event, Frame) and not await self._answer(event.payload, writer):
                        return
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            await close(writer)
            self.closed += 1

    async def _answer(self, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        self.received.append(raw)
        if self.mode == "silent":
            return True
        code = {"wrong": "AA", "AA-then-close": "AA"}.get(self.mode, self.mode)
        cid = "SOMEONE-ELSE" if self.mode == "wrong" else None
        writer.write(frame(ack_for(raw, code, cid=cid, text="Unknown procedure code in FT1-7")))
        await writer.drain()
        return self.mode != "AA-then-close"


def destination(endpoint: str, base_dir: Path = Path(), **options: Any) -> MllpDestination:
    config = MllpDestinationConfig(type="mllp", name="peer", endpoint=endpoint, **options)
    log = bind(logging.getLogger(LOGGER), channel="test-channel", destination="peer")
    return MllpDestination(config, channel="test-channel", base_dir=base_dir, log=log)


def outbound(content: bytes) -> Outbound:
    return Outbound(new_id(), "test-channel", "peer", new_id(), content, "application/hl7-v2")


def test_destination_reuses_one_connection_for_accepted_messages() -> None:
    async def main() -> None:
        async with Peer("AA") as peer:
            dest = destination(peer.endpoint)
            await dest.open()
            results = [await dest.send(outbound(message(f"R{n}"))) for n in range(5)]
            await dest.close()
            assert peer.connections == 1
            assert peer.received == [message(f"R{n}") for n in range(5)]
            assert [r.detail for r in results] == ["AA"] * 5
            assert read_ack(results[4].response or b"").control_id == "R4"  # type: ignore[union-attr]

    asyncio.run(main())


def test_destination_commit_accept_counts_as_success() -> None:
    async def main() -> None:
        async with Peer("CA") as peer:
            dest = destination(peer.endpoint)
            assert (await dest.send(outbound(message("C1")))).detail == "CA"
            await dest.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("mode", "options", "expected"),
    [
        ("AE", {}, RetryableError),
        ("AE", {"on_ae": "error"}, PermanentError),
        ("AR", {}, PermanentError),
        ("AR", {"on_ar": "retry"}, RetryableError),
    ],
)
def test_destination_negative_acks_follow_policy(
    mode: str, options: dict[str, Any], expected: type[DeliveryError]
) -> None:
    async def main() -> None:
        async with Peer(mode) as peer:
            dest = destination(peer.endpoint, **options)
            for _ in range(2):
                with pytest.raises(expected, match=f"answered {mode}.*Unknown procedure code") as info:
                    await dest.send(outbound(message("N1")))
                assert type(info.value) is expected
                assert read_ack(info.value.response or b"").code == mode  # type: ignore[union-attr]
            await dest.close()
            assert peer.connections == 1  # a negative ACK does not break the connection

    asyncio.run(main())


def test_destination_wrong_msa2_retries_on_a_new_connection() -> None:
    async def main() -> None:
        async with Peer("wrong") as peer:
            dest = destination(peer.endpoint)
            with pytest.raises(RetryableError, match="MSA-2"):
                await dest.send(outbound(message("W1")))
            peer.mode = "AA"
            assert (await dest.send(outbound(message("W2")))).detail == "AA"
            await dest.close()
            assert peer.connections == 2

    asyncio.run(main())


def test_destination_control_id_check_can_be_disabled() -> None:
    async def main() -> None:
        async with Peer("wrong") as peer:
            dest = destination(peer.endpoint, check_control_id=False)
            assert (await dest.send(outbound(message("W1")))).detail == "AA"
            await dest.close()

    asyncio.run(main())


@pytest.mark.parametrize(("policy", "expected"), [("retry", RetryableError), ("error", PermanentError)])
def test_destination_ack_timeout(policy: str, expected: type[DeliveryError]) -> None:
    async def main() -> None:
        async with Peer("silent") as peer:
            dest = destination(peer.endpoint, ack_timeout_secs=0.3, on_ack_timeout=policy)
            started = time.monotonic()
            with pytest.raises(expected, match=r"no acknowledgement within 0\.3 s"):
                await dest.send(outbound(message("S1")))
            assert 0.25 <= time.monotonic() - started < 3
            peer.mode = "AA"
            assert (await dest.send(outbound(message("S2")))).detail == "AA"
            await dest.close()
            assert peer.connections == 2  # the timed-out connection was dropped

    asyncio.run(main())


def test_destination_reconnects_when_the_peer_closed_an_idle_connection() -> None:
    async def main() -> None:
        async with Peer("AA-then-close") as peer:
            dest = destination(peer.endpoint)
            for n in range(3):
                assert (await dest.send(outbound(message(f"I{n}")))).detail == "AA"
                await wait_until(lambda: peer.closed == n + 1)  # noqa: B023 (awaited in this iteration)
                await asyncio.sleep(0.05)  # let the peer's FIN reach our side of the connection
            await dest.close()
            assert peer.connections == 3

    asyncio.run(main())


def test_destination_without_keep_connection_open() -> None:
    async def main() -> None:
        async with Peer("AA") as peer:
            dest = destination(peer.endpoint, keep_connection_open=False)
            for n in range(3):
                await dest.send(outbound(message(f"K{n}")))
            await dest.close()
            assert peer.connections == 3

    asyncio.run(main())


def test_destination_connection_refused_and_unconfigured_endpoint() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main() -> None:
        dest = destination(f"127.0.0.1:{port}", connect_timeout_secs=2)
        with pytest.raises(RetryableError, match="could not connect"):
            await dest.send(outbound(message("X")))
        unset = destination("")
        assert unset.problem == "endpoint is not configured"
        with pytest.raises(RetryableError, match="endpoint is not configured"):
            await unset.send(outbound(message("X")))

    asyncio.run(main())


def test_destination_answer_without_msa_follows_on_ae() -> None:
    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: answer_with(r, w, frame(b"HTTP/1.1 400 Bad Request\r\n")), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        dest = destination(f"127.0.0.1:{port}", on_ae="error")
        with pytest.raises(PermanentError, match="no MSA segment"):
            await dest.send(outbound(message("X")))
        await dest.close()
        server.close()
        async with asyncio.timeout(5):
            await server.wait_closed()

    asyncio.run(main())


async def answer_with(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes) -> None:
    await reader.read(65536)
    writer.write(answer)
    await writer.drain()
    await read_eof(reader)
    await close(writer)
