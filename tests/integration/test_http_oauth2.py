"""OAuth2 client credentials, API keys and rate limiting of the HTTP destination, against a real
token endpoint and a real resource server (aiohttp on 127.0.0.1, port 0)."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote_plus

import pytest
from aiohttp import web

from engine.connectors.http import HttpDestination, HttpDestinationConfig
from engine.core.errors import RetryableError
from engine.core.logs import bind
from engine.core.message import Outbound

pytestmark = pytest.mark.integration

CLIENT_ID, CLIENT_SECRET = "junction-erp", "s3cr:et/+"  # characters that basic auth must form-encode


@dataclass
class AuthServer:
    """A token endpoint (client_secret_basic or _post) and an API that accepts only its live tokens."""

    lifetime: float = 3600.0
    issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    api_calls: list[str] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.forms.append(form)
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            user, password = unquote_plus(user), unquote_plus(password)
        else:
            user, password = form.get("client_id", ""), form.get("client_secret", "")
        if (user, password) != (CLIENT_ID, CLIENT_SECRET) or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_client"}, status=401)
        token = f"tok-{len(self.issued) + 1}"
        self.issued.append(token)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime})

    async def api(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        key = request.headers.get("X-Api-Key", "")
        self.api_calls.append(token or key)
        if key == "k-123" or (token in self.issued and token not in self.revoked):
            return web.json_response({"ok": True})
        return web.json_response({"error": "invalid_token"}, status=401)


@asynccontextmanager
async def serving(server: AuthServer) -> AsyncIterator[AuthServer]:
    app = web.Application()
    app.router.add_post("/oauth/token", server.token)
    app.router.add_post("/api/usage", server.api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def destination(server: AuthServer, **auth: object) -> HttpDestination:
    config = HttpDestinationConfig.model_validate(
        {
            "type": "http",
            "name": "erp",
            "url": f"{server.url}/api/usage",
            "auth": {
                "type": "oauth2",
                "token_url": f"{server.url}/oauth/token",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "scope": "usage.write",
                **auth,
            },
        }
    )
    return HttpDestination(config, channel="c", base_dir=Path("."), log=bind(logging.getLogger("test"), channel="c"))


def item(n: int) -> Outbound:
    return Outbound(f"M{n}", "c", "erp", f"M{n}", b'{"qty": 1}', "application/json")


def test_one_token_serves_many_messages_and_concurrent_workers() -> None:
    async def scenario() -> None:
        async with serving(AuthServer()) as server:
            dest = destination(server)
            await dest.open()
            try:
                await asyncio.gather(*(dest.send(item(n)) for n in range(10)))
                for n in range(10, 20):
                    await dest.send(item(n))
            finally:
                await dest.close()
            assert server.issued == ["tok-1"]
            assert server.api_calls == ["tok-1"] * 20
            assert server.forms[0]["scope"] == "usage.write"

    asyncio.run(scenario())


def test_an_expired_token_is_refreshed_once_not_per_message() -> None:
    async def scenario() -> None:
        # lifetime 61 s with the default 60 s margin: the token is due for renewal after 1 s
        async with serving(AuthServer(lifetime=61.2)) as server:
            dest = destination(server)
            await dest.open()
            try:
                await dest.send(item(0))
                assert server.issued == ["tok-1"]
                await asyncio.sleep(1.3)  # let the token expire (no polling can replace real time here)
                await asyncio.gather(*(dest.send(item(n)) for n in range(1, 9)))
            finally:
                await dest.close()
            assert server.issued == ["tok-1", "tok-2"]
            assert server.api_calls == ["tok-1"] + ["tok-2"] * 8

    asyncio.run(scenario())


def test_a_revoked_token_is_renewed_once_on_401_and_the_message_goes_through() -> None:
    async def scenario() -> None:
        async with serving(AuthServer()) as server:
            dest = destination(server, client_auth="body")
            await dest.open()
            try:
                await dest.send(item(0))
                server.revoked.add("tok-1")
                result = await dest.send(item(1))
                await dest.send(item(2))
            finally:
                await dest.close()
            assert result.status_code == 200
            assert server.issued == ["tok-1", "tok-2"]
            assert server.api_calls == ["tok-1", "tok-1", "tok-2", "tok-2"]
            assert server.forms[0]["client_id"] == CLIENT_ID

    asyncio.run(scenario())


def test_wrong_client_secret_is_retryable_and_does_not_leak_the_secret() -> None:
    async def scenario() -> None:
        async with serving(AuthServer()) as server:
            dest = destination(server, client_secret="wrong")
            await dest.open()
            try:
                with pytest.raises(RetryableError) as failed:
                    await dest.send(item(0))
            finally:
                await dest.close()
            assert "401" in str(failed.value) and "wrong" not in str(failed.value)
            assert server.api_calls == []

    asyncio.run(scenario())


def test_unset_client_secret_holds_the_queue() -> None:
    server = AuthServer(url="http://127.0.0.1:9")
    dest = destination(server, client_secret="")
    assert dest.problem is not None and "client_secret" in dest.problem


def test_api_key_header_and_rate_limit() -> None:
    async def scenario() -> None:
        async with serving(AuthServer()) as server:
            config = HttpDestinationConfig.model_validate(
                {
                    "type": "http",
                    "name": "erp",
                    "url": f"{server.url}/api/usage",
                    "auth": {"type": "api_key", "header": "X-Api-Key", "key": "k-123"},
                    "rate_limit": {"per_second": 20, "burst": 2},
                }
            )
            dest = HttpDestination(
                config, channel="c", base_dir=Path("."), log=bind(logging.getLogger("t"), channel="c")
            )
            await dest.open()
            loop = asyncio.get_running_loop()
            try:
                started = loop.time()
                await asyncio.gather(*(dest.send(item(n)) for n in range(8)))
                elapsed = loop.time() - started
            finally:
                await dest.close()
            assert server.api_calls == ["k-123"] * 8
            # 2 at once, then 6 more at 20/s: at least 0.3 s (an upper bound would be a timing test)
            assert elapsed >= 0.29

    asyncio.run(scenario())
