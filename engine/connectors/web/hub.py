"""Listeners shared by web sources: one aiohttp server per address, routes added and removed live.

aiohttp freezes its router once the server runs, so each listener has a single catch-all
route whose handler looks the request path up in a dict of mounted prefixes. The site
starts with the first mount on an address and stops with the last unmount.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from engine.connectors.web.problems import problem

Handler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]
SHUTDOWN_SECS = 5.0

log = logging.getLogger("junction.web")


class ListenerConflict(OSError):
    """Two channels ask for incompatible things on one address (a path twice, TLS on and off).

    An ``OSError`` like "address in use": the engine reports the channel as unable to start."""


@dataclass
class Mount:
    """One channel's endpoint on a listener: requests under ``prefix`` go to ``handler``."""

    prefix: str
    channel: str
    handler: Handler


@dataclass
class Listener:
    """One bound address and the endpoints mounted on it."""

    host: str
    port: int
    tls_key: Any
    mounts: dict[str, Mount] = field(default_factory=dict)
    runner: web.AppRunner | None = None
    address: str = ""

    def find(self, path: str) -> tuple[Mount, str] | None:
        """The mount whose prefix is the longest match of ``path``, and the rest of the path."""
        candidate = path.rstrip("/") or "/"
        while True:
            mount = self.mounts.get(candidate)
            if mount is not None:
                return mount, path[len(candidate) :]
            if candidate in ("", "/"):
                return None
            candidate = candidate.rsplit("/", 1)[0]

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        found = self.find(request.path)
        if found is None:
            return problem(404, "Not found", "no channel endpoint at this path")
        mount, rest = found
        return await mount.handler(request, rest)


# Per event loop (an engine runs on one; tests may run several in one process).
_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], Listener]] = (
    weakref.WeakKeyDictionary()
)
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    return lock


def _table() -> dict[tuple[str, int], Listener]:
    return _listeners.setdefault(asyncio.get_running_loop(), {})


async def mount(
    host: str, port: int, mount: Mount, *, tls: ssl.SSLContext | None = None, tls_key: Any = None
) -> Listener:
    """Add ``mount`` to the listener of host:port, starting it when it is the first.

    ``tls_key`` identifies the TLS settings: every channel on one address must use the same.
    Port 0 always gets a listener of its own. Raises ``ListenerConflict`` or ``OSError``.
    """
    async with _lock():
        table = _table()
        listener = table.get((host, port)) if port else None
        if listener is not None:
            if listener.tls_key != tls_key:
                others = ", ".join(sorted({m.channel for m in listener.mounts.values()}))
                raise ListenerConflict(
                    f"{host}:{port} is already served with different TLS settings (channels: {others})"
                )
            taken = listener.mounts.get(mount.prefix)
            if taken is not None:
                used = f"path {mount.prefix} on {host}:{port} is already used by channel {taken.channel}"
                raise ListenerConflict(used)
            listener.mounts[mount.prefix] = mount
            return listener
        listener = Listener(host, port, tls_key)
        listener.mounts[mount.prefix] = mount
        await _start(listener, tls)
        table[(host, port if port else -id(listener))] = listener
        return listener


async def unmount(listener: Listener, prefix: str) -> None:
    """Remove the mount at ``prefix``; stop the listener (release the port) after the last one."""
    async with _lock():
        listener.mounts.pop(prefix, None)
        if listener.mounts or listener.runner is None:
            return
        table = _table()
        for key, value in list(table.items()):
            if value is listener:
                del table[key]
        runner, listener.runner = listener.runner, None
        await runner.cleanup()
        log.info("Stopped listening.", extra={"listener": listener.address})


async def _start(listener: Listener, tls: ssl.SSLContext | None) -> None:
    app = web.Application(client_max_size=1024**3)  # sources read bodies themselves, with their own limit
    app.router.add_route("*", "/{tail:.*}", listener.dispatch)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_SECS)
    await runner.setup()
    site = web.TCPSite(runner, listener.host, listener.port, ssl_context=tls, backlog=512)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    listener.runner = runner
    bound = runner.addresses[0]
    host, port = bound[0], int(bound[1])
    listener.port = port
    listener.address = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    log.info("Listening.", extra={"listener": listener.address, "tls": tls is not None})
