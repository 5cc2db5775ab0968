"""Admin HTTP API (aiohttp): channels, messages, health, metrics, and the dashboard page.

Every API path needs the bearer token; the dashboard's static files do not (they hold no
data, and the page calls the API with the token the user gives it)."""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import logging
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from engine import __version__
from engine.core.errors import ConfigError, JunctionError
from engine.core.logs import bind
from engine.core.store import MessageDetail, MessageQuery, MessageSummary
from engine.runtime.engine import ChannelNotFound, Engine, parse_status
from engine.runtime.settings import EngineSettings

log = bind(logging.getLogger("junction.api"))
audit = bind(logging.getLogger("junction.audit"))

CHANNEL_ACTIONS = {"start", "stop", "pause", "resume", "deploy", "undeploy", "redeploy"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ensure_token(base_dir: Path, settings: EngineSettings) -> str:
    """JUNCTION_API_TOKEN, else the token file (created 0600 at first start)."""
    env = os.environ.get("JUNCTION_API_TOKEN")
    if env:
        return env
    path = base_dir / settings.api.token_file
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token


def problem(status: int, title: str, detail: str = "", **extra: Any) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return web.json_response(body, status=status, content_type="application/problem+json")


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def summary_json(summary: MessageSummary) -> dict[str, Any]:
    data: dict[str, Any] = _jsonable(summary)
    data["received"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(summary.received_at))
    return data


def detail_json(detail: MessageDetail, with_content: bool) -> dict[str, Any]:
    contents = []
    for (run, stage), content in sorted(detail.contents.items()):
        entry: dict[str, Any] = {"run": run, "stage": stage, "bytes": len(content)}
        if with_content:
            entry["content"] = content.decode("utf-8", errors="replace")
        contents.append(entry)
    return {
        "message": summary_json(detail.summary),
        "business_key": detail.business_key if with_content else None,
        "contents": contents,
        "destinations": _jsonable(detail.destinations),
        "attempts": _jsonable(detail.attempts),
    }


PUBLIC_PATHS = frozenset({"/healthz", "/", "/dashboard"})
DASHBOARD_ASSETS = {"dashboard.html": "text/html", "dashboard.js": "text/javascript", "dashboard.css": "text/css"}
# The page loads nothing but its own files and talks to nothing but this API.
DASHBOARD_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@functools.cache
def _asset(name: str) -> bytes:
    return resources.files("engine.api").joinpath("static", name).read_bytes()


def _static(name: str) -> web.Response:
    return web.Response(
        body=_asset(name), content_type=DASHBOARD_ASSETS[name], charset="utf-8", headers=DASHBOARD_HEADERS
    )


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body ({} when there is none); anything else is a 400."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise JunctionError("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise JunctionError("the request body must be a JSON object")
    return body


class AdminApi:
    def __init__(self, engine: Engine, token: str) -> None:
        self.engine = engine
        self.token = token
        self.app = web.Application(middlewares=[self._errors, self._auth], client_max_size=64 << 20)
        r = self.app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/", self.home)
        r.add_get("/dashboard", self.dashboard)
        r.add_get("/dashboard/{asset}", self.dashboard_asset)
        r.add_get("/metrics", self.metrics)
        r.add_get("/api/health", self.health)
        r.add_get("/api/channels", self.channels)
        r.add_post("/api/channels/_deploy", self.deploy_all)
        r.add_get("/api/channels/{name}", self.channel)
        r.add_post("/api/channels/{name}/{action}", self.channel_action)
        r.add_get("/api/messages", self.messages)
        r.add_post("/api/messages/_reprocess", self.reprocess_matching)
        r.add_get("/api/tables", self.tables)
        r.add_post("/api/tables/_reload", self.reload_tables)
        r.add_get("/api/tables/{name}", self.table)
        r.add_put("/api/tables/{name}", self.load_table)
        r.add_get("/api/prune", self.prune_status)
        r.add_post("/api/prune", self.prune)
        r.add_get("/api/messages/{id}", self.message)
        r.add_post("/api/messages/{id}/reprocess", self.reprocess)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or request.path.startswith("/dashboard/"):
            return await handler(request)  # no data: the dashboard reads everything through the API
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode()):
            return await handler(request)
        if scheme.lower() == "basic":  # Prometheus scrapers: any user, the token as password
            try:
                _, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                password = ""
            if hmac.compare_digest(password.encode(), self.token.encode()):
                return await handler(request)
        return problem(401, "Unauthorized", "send Authorization: Bearer <token> (JUNCTION_API_TOKEN or var/api-token)")

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except ChannelNotFound as exc:
            return problem(404, "Not found", str(exc))
        except ConfigError as exc:
            return problem(422, "Invalid configuration", "see errors", errors=[str(d) for d in exc.diagnostics])
        except JunctionError as exc:
            return problem(400, "Bad request", str(exc))
        except OSError as exc:
            return problem(409, "Could not complete the action", str(exc))

    async def home(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/dashboard")

    async def dashboard(self, request: web.Request) -> web.Response:
        return _static("dashboard.html")

    async def dashboard_asset(self, request: web.Request) -> web.Response:
        name = request.match_info["asset"]
        if name not in DASHBOARD_ASSETS:
            return problem(404, "Not found", "no such dashboard file")
        return _static(name)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def health(self, request: web.Request) -> web.Response:
        channels = {name: rt.state for name, rt in self.engine.channels.items()}
        return web.json_response(
            {
                "status": "ok",
                "version": __version__,
                "node": self.engine.owner,
                "channels": channels,
                "invalid_channel_files": [str(d) for d in self.engine.load_problems],
            }
        )

    async def channels(self, request: web.Request) -> web.Response:
        return web.json_response(await self.engine.list_channels())

    async def channel(self, request: web.Request) -> web.Response:
        return web.json_response(await self.engine.status(request.match_info["name"]))

    async def channel_action(self, request: web.Request) -> web.Response:
        name, action = request.match_info["name"], request.match_info["action"]
        if action not in CHANNEL_ACTIONS:
            return problem(404, "Unknown action", f"expected one of {', '.join(sorted(CHANNEL_ACTIONS))}")
        audit.info("Admin action.", extra={"action": action, "channel": name, "peer": request.remote})
        result = await self.engine.act(name, action)
        if action != "undeploy":
            result = await self.engine.status(name)
        return web.json_response(result)

    async def deploy_all(self, request: web.Request) -> web.Response:
        audit.info("Admin action.", extra={"action": "deploy-all", "peer": request.remote})
        return web.json_response(await self.engine.deploy_all())

    def _query(self, params: Any) -> MessageQuery:
        def number(key: str) -> float | None:
            value = params.get(key)
            if value in (None, ""):
                return None
            try:
                return float(value)
            except ValueError:
                raise JunctionError(f"{key} must be a number (epoch seconds)") from None

        limit = int(number("limit") or 100)
        before = number("before")
        return MessageQuery(
            channel=params.get("channel") or None,
            status=parse_status(params.get("status")),
            since=number("since"),
            until=number("until"),
            control_id=params.get("control_id") or None,
            correlation_id=params.get("correlation_id") or None,
            limit=max(1, min(limit, 10_000)),
            before_seq=int(before) if before else None,
        )

    async def messages(self, request: web.Request) -> web.Response:
        found = await self.engine.store.search(self._query(request.query))
        return web.json_response([summary_json(m) for m in found])

    async def message(self, request: web.Request) -> web.Response:
        detail = await self.engine.store.get(request.match_info["id"])
        if detail is None:
            return problem(404, "Not found", f"no message {request.match_info['id']!r}")
        with_content = request.query.get("content", "") in ("1", "true", "yes")
        if with_content:
            audit.info(
                "Message content viewed.", extra={"message_id": request.match_info["id"], "peer": request.remote}
            )
        return web.json_response(detail_json(detail, with_content))

    async def reprocess(self, request: web.Request) -> web.Response:
        audit.info(
            "Admin action.",
            extra={"action": "reprocess", "message_id": request.match_info["id"], "peer": request.remote},
        )
        return web.json_response(await self.engine.reprocess(request.match_info["id"]))

    async def reprocess_matching(self, request: web.Request) -> web.Response:
        query = self._query(await _json_object(request))
        if query.channel is None and query.status is None and query.control_id is None:
            raise JunctionError("give at least a channel, a status or a control id to reprocess by filter")
        audit.info("Admin action.", extra={"action": "reprocess-matching", "peer": request.remote})
        return web.json_response(await self.engine.reprocess_matching(query))

    async def prune_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.engine.pruner.status())

    async def prune(self, request: web.Request) -> web.Response:
        channel = (await _json_object(request)).get("channel")
        if channel is not None and not isinstance(channel, str):
            raise JunctionError("channel must be a channel name")
        audit.info("Admin action.", extra={"action": "prune", "channel": channel or "*", "peer": request.remote})
        return web.json_response(await self.engine.prune(channel))

    async def tables(self, request: web.Request) -> web.Response:
        return web.json_response(await self.engine.tables())

    async def table(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "100"))
        return web.json_response(await self.engine.table(request.match_info["name"], max(1, min(limit, 100_000))))

    async def load_table(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        audit.info("Admin action.", extra={"action": "table-load", "table": name, "peer": request.remote})
        return web.json_response(await self.engine.load_table(name, await request.read()))

    async def reload_tables(self, request: web.Request) -> web.Response:
        audit.info("Admin action.", extra={"action": "table-reload", "peer": request.remote})
        return web.json_response(await self.engine.reload_tables())

    async def metrics(self, request: web.Request) -> web.Response:
        lines = [
            "# HELP junction_channel_messages Messages by channel and status (from the store).",
            "# TYPE junction_channel_messages gauge",
        ]
        for name in self.engine.known_names():
            counters = await self.engine.store.counters(name)
            for key, count in sorted(counters.items()):
                if key.startswith("dest:"):
                    _, dest, status = key.split(":", 2)
                    lines.append(
                        f'junction_destination_messages{{channel="{name}",destination="{dest}",'
                        f'status="{status}"}} {count}'
                    )
                else:
                    lines.append(f'junction_channel_messages{{channel="{name}",status="{key}"}} {count}')
        lines.append("# TYPE junction_channel_up gauge")
        for name, rt in self.engine.channels.items():
            lines.append(f'junction_channel_up{{channel="{name}",state="{rt.state}"}} {int(rt.state == "started")}')
        lines.append("# HELP junction_alert Threshold alerts raised now (alerts.errors, alerts.queue), 1 each.")
        lines.append("# TYPE junction_alert gauge")
        for name, rt in self.engine.channels.items():
            for alert in rt.thresholds.raised() if rt.thresholds is not None else []:
                lines.append(
                    f'junction_alert{{channel="{name}",event="{alert.event}",'
                    f'destination="{alert.destination or ""}"}} 1'
                )
        text = "\n".join(lines) + "\n" + self.engine.metrics.exposition()
        return web.Response(text=text, content_type="text/plain")


async def serve(
    base_dir: Path, settings: EngineSettings, *, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None
) -> None:
    """Start the engine and the admin API; run until ``stop`` is set or SIGINT/SIGTERM."""
    engine = Engine(base_dir, settings, settle_heap=True)
    token = ensure_token(engine.base_dir, settings)
    await engine.start()
    api = AdminApi(engine, token)
    runner = web.AppRunner(api.app, access_log=None)
    await runner.setup()
    host, _, port = settings.api.listen.rpartition(":")
    site = web.TCPSite(runner, host or "127.0.0.1", int(port))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        await site.start()
        log.info("Admin API listening.", extra={"address": settings.api.listen})
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        log.info("Shutting down.")
        await runner.cleanup()
        await engine.stop()
