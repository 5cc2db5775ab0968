"""Real peers for tests: a recording HTTP server and an engine running as a subprocess.

Shipped in the package so plug-in authors can reuse them. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web


@dataclass
class Received:
    path: str
    method: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)


class HttpPeer:
    """An aiohttp server in a background thread that records every request.

    ``behaviour(request)`` returns the HTTP status to answer (default 200), or a tuple
    (status, body, headers) for a custom answer; requests answered with a non-2xx status
    are recorded in ``refused`` instead.
    """

    def __init__(self, behaviour: Callable[[Received], int | tuple[int, bytes, dict[str, str]]] | None = None) -> None:
        self.behaviour = behaviour or (lambda _r: 200)
        self.received: list[Received] = []
        self.refused: list[Received] = []
        self.lock = threading.Lock()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        item = Received(request.path, request.method, dict(request.headers), await request.read())
        answer = self.behaviour(item)
        status = answer if isinstance(answer, int) else answer[0]
        with self.lock:
            (self.received if 200 <= status < 300 else self.refused).append(item)
        if isinstance(answer, tuple):
            return web.Response(status=status, body=answer[1], headers=answer[2])
        return web.json_response({"ok": 200 <= status < 300}, status=status)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]

    def __enter__(self) -> HttpPeer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)


class MllpPeer(socketserver.ThreadingTCPServer):
    """A minimal MLLP listener (an EHR's inbound interface): records each framed message and
    answers AA with its MSH-10. Serve it in a thread (``with MllpPeer() as peer``) or call
    ``serve_forever`` yourself."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _MllpHandler)
        self.messages: list[str] = []
        self.lock = threading.Lock()
        self._serving: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.messages)

    def __enter__(self) -> MllpPeer:
        self._serving = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._serving.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _MllpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: MllpPeer = self.server  # type: ignore[assignment]
        self.request.settimeout(30)
        buffer = b""
        while True:
            try:
                chunk = self.request.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\x1c\r" in buffer:
                frame, _, buffer = buffer.partition(b"\x1c\r")
                text = frame[frame.find(b"\x0b") + 1 :].decode("utf-8")
                with server.lock:
                    server.messages.append(text)
                control = text.split("\r", 1)[0].split("|")[9]
                stamp = time.strftime("%Y%m%d%H%M%S")
                ack = f"MSH|^~\\&|EHR||JUNCTION||{stamp}||ACK|A{control}|P|2.6\rMSA|AA|{control}\r"
                self.request.sendall(b"\x0b" + ack.encode() + b"\x1c\r")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EngineProcess:
    """``python -m engine run`` in a project folder, with its own API port and token."""

    def __init__(self, project: Path, env: dict[str, str] | None = None, token: str | None = "test-token") -> None:  # noqa: S107
        """``token=None``: the engine generates its token file, read back after start."""
        self.project = project
        self.token = token or ""
        self.api_port = free_port()
        self.env = {
            **os.environ,
            "JUNCTION_API_LISTEN": f"127.0.0.1:{self.api_port}",
            "JUNCTION_LOG_FORMAT": "json",
            **(env or {}),
        }
        self.env.pop("JUNCTION_API_TOKEN", None)
        if token:
            self.env["JUNCTION_API_TOKEN"] = token
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = project / "engine.log"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 30.0) -> EngineProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "--project", str(self.project), "run"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.api + "/healthz", timeout=5):  # noqa: S310 - loopback http
                    pass
            except OSError:
                time.sleep(0.1)
                continue
            if not self.token:
                self.token = (self.project / "var" / "api-token").read_text(encoding="utf-8").strip()
            self.call("GET", "/api/health")
            return self
        raise TimeoutError(f"engine did not start within {timeout}s:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(self.api + path, data=data, method=method)  # noqa: S310 - loopback http
        request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback http
            return json.loads(response.read() or b"null")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``junction --project PROJECT ARGS`` against this engine (API URL and token set)."""
        env = {**os.environ, "JUNCTION_API": self.api, "JUNCTION_API_TOKEN": self.token}
        return subprocess.run(
            [sys.executable, "-m", "engine", "--project", str(self.project), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )

    def address(self, channel: str, timeout: float = 10.0) -> tuple[str, int]:
        """The host and port a channel's source listens on (read back from the API)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.call("GET", f"/api/channels/{channel}")
            address = (info.get("source") or {}).get("address")
            if info.get("state") in ("started", "paused") and address:
                host, _, port = address.rpartition(":")
                return host, int(port)
            time.sleep(0.05)
        raise TimeoutError(f"channel {channel} did not start listening")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return int(self.proc.returncode or 0)

    def __enter__(self) -> EngineProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mllp_exchange(sock: socket.socket, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send one framed message on a connected socket and return the unframed response."""
    sock.settimeout(timeout)
    sock.sendall(b"\x0b" + payload + b"\x1c\r")
    buffer = b""
    while b"\x1c" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the ACK")
        buffer += chunk
    start = buffer.find(b"\x0b")
    return buffer[start + 1 : buffer.find(b"\x1c")]


def msa(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK."""
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA"):
            parts = segment.decode("latin-1").split(segment[3:4].decode("latin-1") or "|")
            return (parts[1] if len(parts) > 1 else ""), (parts[2] if len(parts) > 2 else "")
    return "", ""


class EngineThread:
    """An in-process engine on its own event loop in a background thread (no admin API)."""

    def __init__(self, project: Path, settings: Any = None) -> None:
        from engine.runtime.engine import Engine

        self.engine = Engine(project, settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        """Run a coroutine on the engine's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    def address(self, channel: str) -> tuple[str, int]:
        source = self.engine.channels[channel].source
        assert source is not None and source.address
        host, _, port = source.address.rpartition(":")
        return host, int(port)

    def __enter__(self) -> EngineThread:
        self._thread.start()
        self.run(self.engine.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.engine.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
