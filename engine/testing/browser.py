"""A real headless browser for tests: Debian's chromium driven over the DevTools protocol.

No WebDriver and no extra package: chromium is started with ``--remote-debugging-port=0``,
the port is read from its stderr, and one page is driven over a websocket (aiohttp).
Every wait is bounded.

    async with Chromium() as page:
        await page.goto("http://127.0.0.1:8780/dashboard")
        await page.wait_for("document.body.dataset.loaded === 'true'")
        title = await page.evaluate("document.title")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The browser binary, or None when none is installed."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless chromium with one page; an async context manager."""

    def __init__(self, *, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._next_id = 0
        self.console: list[str] = []  # console messages and uncaught exceptions of the page

    async def __aenter__(self) -> Chromium:
        binary = chromium_path()
        if binary is None:
            raise BrowserError("no chromium installed (Debian: apt-get install chromium)")
        self._launch(binary)
        try:
            await self._connect()
        except BaseException:
            await self.__aexit__(None, None, None)  # no browser left behind
            raise
        return self

    async def _connect(self) -> None:
        port = await asyncio.wait_for(asyncio.to_thread(self._devtools_port), self.timeout)
        self._session = aiohttp.ClientSession()
        deadline = time.monotonic() + self.timeout
        target = None
        while target is None:
            async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [t for t in await response.json() if t.get("type") == "page"]
            target = pages[0] if pages else None
            if target is None:
                if time.monotonic() > deadline:
                    raise BrowserError("chromium opened no page")
                await asyncio.sleep(0.1)
        self._ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        await self.send("Page.enable")
        await self.send("Runtime.enable")

    def _launch(self, binary: str) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="junction-chromium-")
        self._proc = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",  # root in a container
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )

    def _devtools_port(self) -> int:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            found = re.search(rb"DevTools listening on ws://[^:]+:(\d+)/", raw)
            if found:
                return int(found.group(1))
        raise BrowserError("chromium exited before it listened for DevTools")

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(self._proc.wait), 10)
            except TimeoutError:
                self._proc.kill()
                self._proc.wait(timeout=10)
            if self._proc.stderr is not None:
                self._proc.stderr.close()
        if self._profile is not None:
            with contextlib.suppress(OSError):
                self._profile.cleanup()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events that arrive meanwhile are kept as console)."""
        assert self._ws is not None
        self._next_id += 1
        ident = self._next_id
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer to {method}")
            message = await self._ws.receive(timeout=left)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise BrowserError(f"DevTools connection ended during {method}")
            data = json.loads(message.data)
            if data.get("id") == ident:
                if "error" in data:
                    raise BrowserError(f"{method}: {data['error'].get('message')}")
                return dict(data.get("result") or {})
            self._event(data)

    def _event(self, data: dict[str, Any]) -> None:
        method = data.get("method")
        params = data.get("params") or {}
        if method == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails") or {}
            self.console.append("exception: " + str((details.get("exception") or {}).get("description", details)))

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} raised: {result['exceptionDetails'].get('text')}")
        return (result.get("result") or {}).get("value")

    async def wait_for(self, expression: str, within: float | None = None) -> Any:
        """Poll until ``expression`` is truthy (for at most ``within`` seconds); its value."""
        deadline = time.monotonic() + (within or self.timeout)
        while True:
            with contextlib.suppress(BrowserError):  # the page may be navigating
                value = await self.evaluate(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression!r}; console: {self.console[-5:]}")
            await asyncio.sleep(0.1)
