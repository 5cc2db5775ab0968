"""The HTTP destination against a real aiohttp server on 127.0.0.1 (port 0)."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from engine.connectors.http import HttpDestination, HttpDestinationConfig, parse_retry_after
from engine.core.errors import PermanentError, RetryableError
from engine.core.logs import bind
from engine.core.message import Outbound, SendResult

pytestmark = pytest.mark.integration

HL7 = b"MSH|^~\\&|EHR|HOSP|ERP|HOSP|20240101120000||ADT^A01|MSG0001|P|2.5\rPID|1||12345^^^HOSP||DOE^JANE\r"
SECRET_BODY = b"echo: DOE^JANE"  # what a server might echo back; must never reach error text


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Peer:
    """A recording HTTP server; the path picks the answer (/status/503, /slow, anything else: 200)."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, dict(request.headers), await request.read()))
        parts = request.path.strip("/").split("/")
        if parts[0] == "slow":
            await asyncio.wait_for(self.release.wait(), timeout=5)
            return web.Response(text="late")
        if parts[0] == "big":
            return web.Response(body=b"x" * 100_000)
        if parts[0] == "status":
            headers = {"Retry-After": request.query["retry_after"]} if "retry_after" in request.query else {}
            if int(parts[1]) in (301, 302, 307):
                headers["Location"] = "/elsewhere"
            return web.Response(status=int(parts[1]), body=SECRET_BODY, headers=headers)
        return web.Response(status=201 if request.method == "PUT" else 200, body=b"accepted")


@asynccontextmanager
async def serve() -> AsyncIterator[Peer]:
    peer = Peer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", peer.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    peer.url = f"http://{host}:{port}"
    try:
        yield peer
    finally:
        peer.release.set()  # let a held /slow handler finish so cleanup does not wait
        await runner.cleanup()


def config(url: str, **extra: Any) -> HttpDestinationConfig:
    return HttpDestinationConfig.model_validate({"type": "http", "name": "erp", "url": url, **extra})


def item(attempt: int = 1, content: bytes = HL7) -> Outbound:
    return Outbound(
        message_id="01HZX3K9V6Q4M2T8R5N7B1C0DE",
        channel="adt-in",
        destination="erp",
        correlation_id="01HZX3K9V6Q4M2T8R5N7B1C0AA",
        content=content,
        content_type="x-application/hl7-v2+er7",
        control_id="MSG0001",
        attempt=attempt,
    )


async def with_destination(
    cfg: HttpDestinationConfig, body: Callable[[HttpDestination], Awaitable[Any]], base_dir: Path = Path()
) -> Any:
    dest = HttpDestination(cfg, channel="adt-in", base_dir=base_dir, log=bind(logging.getLogger("junction.test")))
    await dest.open()
    try:
        return await body(dest)
    finally:
        await dest.close()


def send_once(cfg: HttpDestinationConfig, out: Outbound | None = None) -> SendResult:
    return asyncio.run(with_destination(cfg, lambda d: d.send(out or item())))


def test_content_is_sent_as_is_with_idempotency_headers() -> None:
    async def scenario() -> tuple[Peer, list[SendResult]]:
        async with serve() as peer:
            cfg = config(peer.url + "/accounts", headers={"X-Source-System": "junction"})

            async def twice(dest: HttpDestination) -> list[SendResult]:
                return [await dest.send(item(attempt=1)), await dest.send(item(attempt=2))]

            return peer, await with_destination(cfg, twice)

    peer, results = asyncio.run(scenario())
    assert [r.status_code for r in results] == [200, 200]
    assert results[0].response == b"accepted"
    first, second = peer.seen
    assert (first.method, first.path, first.body) == ("POST", "/accounts", HL7)
    assert first.headers["Content-Type"] == "x-application/hl7-v2+er7"
    assert first.headers["X-Source-System"] == "junction"
    assert first.headers["Idempotency-Key"] == "01HZX3K9V6Q4M2T8R5N7B1C0DE:erp"
    assert second.headers["Idempotency-Key"] == first.headers["Idempotency-Key"]
    assert first.headers["X-Junction-Message-Id"] == "01HZX3K9V6Q4M2T8R5N7B1C0DE"
    assert first.headers["X-Junction-Correlation-Id"] == "01HZX3K9V6Q4M2T8R5N7B1C0AA"
    assert (first.headers["X-Junction-Attempt"], second.headers["X-Junction-Attempt"]) == ("1", "2")
    assert "Authorization" not in first.headers


def test_response_body_is_capped() -> None:
    async def scenario() -> SendResult:
        async with serve() as peer:
            return await with_destination(config(peer.url + "/big", max_response_bytes=1000), lambda d: d.send(item()))

    result = asyncio.run(scenario())
    assert result.response == b"x" * 1000


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"type": "bearer", "token": "t0k3n"}, "Bearer t0k3n"),
        (
            {"type": "basic", "username": "junction", "password": "pä:ss"},
            "Basic " + base64.b64encode("junction:pä:ss".encode()).decode(),
        ),
    ],
)
def test_auth_header(auth: dict[str, str], expected: str) -> None:
    async def scenario() -> Peer:
        async with serve() as peer:
            await with_destination(config(peer.url + "/accounts", auth=auth), lambda d: d.send(item()))
            return peer

    assert asyncio.run(scenario()).seen[0].headers["Authorization"] == expected


def test_put_envelope_is_json_with_ids_and_decoded_content() -> None:
    async def scenario() -> tuple[Peer, SendResult]:
        async with serve() as peer:
            cfg = config(peer.url + "/accounts/7", method="PUT", body="envelope")
            result = await with_destination(cfg, lambda d: d.send(item(content=HL7 + b"\xff")))
            return peer, result

    peer, result = asyncio.run(scenario())
    assert result.status_code == 201
    seen = peer.seen[0]
    assert seen.method == "PUT"
    assert seen.headers["Content-Type"] == "application/json"
    data = json.loads(seen.body)
    assert data == {
        "message_id": "01HZX3K9V6Q4M2T8R5N7B1C0DE",
        "correlation_id": "01HZX3K9V6Q4M2T8R5N7B1C0AA",
        "channel": "adt-in",
        "control_id": "MSG0001",
        "content_type": "x-application/hl7-v2+er7",
        "content": HL7.decode() + "\ufffd",
    }


def test_content_type_override() -> None:
    async def scenario() -> Peer:
        async with serve() as peer:
            await with_destination(config(peer.url, content_type="text/plain"), lambda d: d.send(item()))
            return peer

    assert asyncio.run(scenario()).seen[0].headers["Content-Type"] == "text/plain"


def run_status(path: str, **extra: Any) -> BaseException:
    async def scenario() -> BaseException:
        async with serve() as peer:
            try:
                await with_destination(config(peer.url + path, **extra), lambda d: d.send(item()))
            except (RetryableError, PermanentError) as exc:
                return exc
        raise AssertionError("send succeeded")

    return asyncio.run(scenario())


def test_503_with_retry_after_seconds_is_retryable() -> None:
    exc = run_status("/status/503?retry_after=7")
    assert isinstance(exc, RetryableError)
    assert exc.status_code == 503
    assert exc.retry_after_secs == 7.0
    assert exc.response == SECRET_BODY  # kept for the store...
    assert "DOE" not in str(exc)  # ...but never in the reason, which is logged
    assert "503" in str(exc)


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    exc = run_status("/status/429?retry_after=" + when.replace(" ", "%20"))
    assert isinstance(exc, RetryableError)
    assert exc.retry_after_secs is not None
    assert 100 < exc.retry_after_secs <= 121


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503])
def test_retryable_statuses(status: int) -> None:
    exc = run_status(f"/status/{status}")
    assert isinstance(exc, RetryableError)
    assert exc.status_code == status
    assert exc.retry_after_secs is None


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422, 301])
def test_permanent_statuses(status: int) -> None:
    exc = run_status(f"/status/{status}")
    assert type(exc) is PermanentError
    assert exc.status_code == status
    assert "DOE" not in str(exc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_retryable() -> None:
    with pytest.raises(RetryableError, match="could not connect") as info:
        send_once(config(f"http://127.0.0.1:{free_port()}/accounts"))
    assert info.value.status_code is None


def test_server_disconnect_is_retryable() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()
        await writer.wait_closed()

    async def scenario() -> None:
        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await with_destination(config(f"http://127.0.0.1:{port}/"), lambda d: d.send(item()))
        finally:
            server.close()
            await server.wait_closed()

    with pytest.raises(RetryableError, match="closed the connection"):
        asyncio.run(scenario())


def test_timeout_is_retryable() -> None:
    async def scenario() -> float:
        async with serve() as peer:
            started = time.monotonic()
            with pytest.raises(RetryableError, match=r"within 0\.3 s"):
                await with_destination(config(peer.url + "/slow", timeout_secs=0.3), lambda d: d.send(item()))
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 3


@pytest.mark.parametrize(("url", "words"), [("", "not configured (empty)"), ("/accounts", "not an absolute")])
def test_unusable_url_sets_problem_and_send_retries(url: str, words: str) -> None:
    async def scenario(dest: HttpDestination) -> str | None:
        with pytest.raises(RetryableError, match=re.escape(words)):
            await dest.send(item())
        return dest.problem

    problem = asyncio.run(with_destination(config(url), scenario))
    assert problem is not None
    assert words in problem


@pytest.mark.parametrize(
    ("auth", "words"),
    [
        ({"type": "bearer", "token": ""}, "auth token is empty"),
        ({"type": "basic", "username": "", "password": "p"}, "auth username is empty"),
    ],
)
def test_empty_credentials_set_problem(auth: dict[str, str], words: str) -> None:
    dest = HttpDestination(
        config("https://erp.example.org/x", auth=auth),
        channel="adt-in",
        base_dir=Path(),
        log=bind(logging.getLogger("t")),
    )
    assert dest.problem is not None
    assert words in dest.problem


def test_method_is_case_insensitive() -> None:
    assert config("https://erp.example.org/x", method="put").method == "PUT"


def test_missing_ca_file_sets_problem(tmp_path: Path) -> None:
    cfg = config("https://erp.example.org/x", ca_file="certs/missing.pem")
    problem = asyncio.run(with_destination(cfg, lambda d: asyncio.sleep(0, d.problem), base_dir=tmp_path))
    assert problem is not None
    assert "certs/missing.pem" in problem


def test_logs_never_carry_the_body(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serve() as peer:
            await with_destination(config(peer.url), lambda d: d.send(item()))

    with caplog.at_level(logging.DEBUG, logger="junction"):
        asyncio.run(scenario())
    assert any(r.getMessage() == "HTTP endpoint answered." for r in caplog.records)
    assert all("DOE" not in repr(vars(r)) for r in caplog.records)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"colour": "blue"}, "extra"),
        ({"method": "GET"}, "method"),
        ({"body": "form"}, "body"),
        ({"timeout_secs": 0}, "timeout_secs"),
        ({"url": "ftp://erp.example.org/"}, "http:// or https://"),
        ({"headers": {"Idempotency-Key": "x"}}, "set by Junction"),
        ({"headers": {"X-Bad": "a\r\nInjected: yes"}}, "line break"),
        ({"headers": {"bad name": "x"}}, "field name"),
        ({"auth": {"type": "digest", "token": "x"}}, "auth"),
        ({"auth": {"type": "bearer"}}, "token"),
        ({"auth": {"type": "basic", "username": "a"}}, "password"),
        ({"auth": {"type": "basic", "username": "a:b", "password": "p"}}, "colon"),
        ({"auth": {"type": "bearer", "token": "t"}, "headers": {"Authorization": "x"}}, "not both"),
        ({"verify_tls": False, "ca_file": "ca.pem"}, "no effect"),
    ],
)
def test_config_rejects(extra: dict[str, Any], words: str) -> None:
    data = {"type": "http", "name": "erp", "url": "https://erp.example.org/x", **extra}
    with pytest.raises(ValidationError, match=words):
        HttpDestinationConfig.model_validate(data)


def test_secrets_stay_out_of_config_repr() -> None:
    cfg = config("https://erp.example.org/x", auth={"type": "bearer", "token": "s3cr3t-token"})
    assert "s3cr3t-token" not in repr(cfg)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), (" 0 ", 0.0), ("-5", 0.0), ("soon", None), ("", None), (None, None), ("nan", None)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_date_in_the_past_is_zero() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
