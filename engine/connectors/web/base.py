"""What the HTTP and FHIR sources share: mounting, authentication, bounded bodies, guarded submits."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import os
from typing import Any

from aiohttp import web

from engine.connectors.tls import peer_common_name, server_context
from engine.connectors.web import hub
from engine.connectors.web.config import WebSourceConfig, split_listen
from engine.core.contracts import SourceContext, SubmitResult

READ_CHUNK = 64 * 1024
STOP_GRACE_SECS = 5.0


class BodyTooLarge(Exception):
    """The request body is over ``max_body_bytes``; ``prefix`` is what was read (at most the limit)."""

    def __init__(self, prefix: bytes, declared: int | None) -> None:
        super().__init__("request body too large")
        self.prefix = prefix
        self.declared = declared


class WebSource:
    """Base of the web sources: one mount on a shared listener, auth and request bookkeeping.

    Subclasses implement ``route(request, rest)``; ``rest`` is the request path after the
    mount prefix ("" for the prefix itself). ``problem`` is a sentence when the source cannot
    work as configured (an auth variable is unset): it then answers 503 to every request.
    """

    default_prefix = "/channels"

    def __init__(self, config: WebSourceConfig, ctx: SourceContext) -> None:
        self.config = config
        self._ctx = ctx
        self.channel = channel_name(ctx)
        self.prefix = config.path or f"{self.default_prefix}/{self.channel}"
        self.problem: str | None = None
        self._listener: hub.Listener | None = None
        self._secrets: tuple[bytes, ...] = ()
        self._requests: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> str | None:
        """host:port actually bound (None until started)."""
        return self._listener.address if self._listener is not None else None

    async def start(self) -> None:
        """Mount the endpoint (starting the listener if first); raises on TLS or address problems."""
        self.problem = None
        self._secrets = self._load_secrets()
        host, port = split_listen(self.config.listen)
        tls = server_context(self.config.tls, self._ctx.base_dir) if self.config.tls is not None else None
        mount = hub.Mount(self.prefix, self.channel, self._handle)
        self._listener = await hub.mount(host, port, mount, tls=tls, tls_key=self.config.tls)
        self._log(
            logging.INFO,
            "Endpoint ready.",
            listener=self._listener.address,
            path=self.prefix,
            tls=self.config.tls is not None,
            auth=self.config.auth.scheme if self.config.auth else "none",
        )

    async def stop(self, grace_secs: float = STOP_GRACE_SECS) -> None:
        """Unmount (new requests get 404 or a closed port), then let requests in flight finish."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await hub.unmount(listener, self.prefix)
            self._log(logging.INFO, "Endpoint removed.", listener=listener.address, path=self.prefix)
        pending = [t for t in (*self._requests, *self._background) if t is not asyncio.current_task()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace_secs)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)

    # -- requests ------------------------------------------------------------------------

    async def _handle(self, request: web.Request, rest: str) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._requests.add(task)
        try:
            return await self.route(request, rest)
        except Exception as exc:  # noqa: BLE001 - one request must never take the listener down
            self._log(logging.ERROR, "Request failed.", peer=request.remote, error_type=type(exc).__name__)
            return self.error(500, "the request could not be handled; see the engine log")
        finally:
            if task is not None:
                self._requests.discard(task)

    async def route(self, request: web.Request, rest: str) -> web.StreamResponse:
        raise NotImplementedError

    def error(self, status: int, detail: str, **extra: Any) -> web.Response:
        """An error answer in the source's format (problem details here)."""
        from engine.connectors.web.problems import problem

        return problem(status, detail=detail, **extra)

    def refuse_unusable(self) -> web.Response | None:
        """503 while the source has a configuration problem."""
        if self.problem is None:
            return None
        self._log(logging.WARNING, "Request refused: the endpoint is not usable.", problem=self.problem)
        return self.error(503, "this endpoint is not usable as configured; see the engine log")

    def authenticate(self, request: web.Request) -> web.Response | None:
        """None when the caller may proceed, else the 401 answer (with WWW-Authenticate)."""
        auth = self.config.auth
        if auth is None:
            return None
        if auth.scheme == "api_key":
            given = request.headers.get(auth.api_key_header, "").encode()
            ok = hmac.compare_digest(given, self._secrets[0])
            challenge = f'ApiKey realm="junction", header="{auth.api_key_header}"'
        elif auth.scheme == "bearer":
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            token = value.strip().encode() if scheme.lower() == "bearer" else b""
            ok = hmac.compare_digest(token, self._secrets[0])
            challenge = 'Bearer realm="junction"'
        else:
            user, password = _basic_credentials(request.headers.get("Authorization", ""))
            user_ok = hmac.compare_digest(user, self._secrets[0])
            password_ok = hmac.compare_digest(password, self._secrets[1])
            ok = user_ok and password_ok
            challenge = 'Basic realm="junction", charset="UTF-8"'
        if ok:
            return None
        self._log(logging.WARNING, "Request refused: not authenticated.", peer=request.remote, scheme=auth.scheme)
        response = self.error(401, f"send valid {auth.scheme.replace('_', ' ')} credentials")
        response.headers["WWW-Authenticate"] = challenge
        return response

    async def read_body(self, request: web.Request) -> bytes:
        """The whole body, or ``BodyTooLarge`` once it passes ``max_body_bytes``."""
        limit = self.config.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise BodyTooLarge(b"", declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.read(READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                kept = b"".join(chunks)
                raise BodyTooLarge((kept + chunk)[:limit], declared)
            chunks.append(chunk)

    def source_fields(self, request: web.Request) -> dict[str, Any]:
        """What the store records about the sender: never headers, never secrets."""
        fields: dict[str, Any] = {
            "transport": "http",
            "peer": request.remote or "",
            "method": request.method,
            "path": request.path,
            "content_type": request.content_type,
        }
        if self.config.tls is not None and request.transport is not None:
            fields["tls_subject"] = peer_common_name(request.transport.get_extra_info("peercert"))
        return fields

    async def submit(
        self,
        raw: bytes,
        source: dict[str, Any],
        wait_secs: float | None = None,
        *,
        dedupe_key: str = "",
        correlation_id: str = "",
    ) -> SubmitResult | None:
        """``ctx.submit`` in a task of its own: a client that goes away cannot cancel a commit.

        Returns None when ``wait_secs`` pass first; the submit then finishes in the background.
        Exceptions of the runtime propagate (the caller answers 500).
        """
        if dedupe_key or correlation_id:
            call = self._ctx.submit(raw, source, dedupe_key=dedupe_key, correlation_id=correlation_id)
        else:
            call = self._ctx.submit(raw, source)
        task = asyncio.create_task(call)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        done, _ = await asyncio.wait({task}, timeout=wait_secs)
        if not done:
            task.add_done_callback(self._finished_late)
            return None
        return task.result()

    def _finished_late(self, task: asyncio.Task[SubmitResult]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log(logging.ERROR, "A timed-out submit failed.", error_type=type(exc).__name__)
            return
        result = task.result()
        self._log(
            logging.WARNING,
            "Message finished after its caller was answered 504.",
            message_id=result.message_id,
            status=str(result.status),
        )

    async def reject(self, raw: bytes, source: dict[str, Any], reason: str) -> str | None:
        """Store a request the source refused; returns its message id (None if storing failed)."""
        try:
            result = await self._ctx.reject(raw, source, reason)
        except Exception as exc:  # noqa: BLE001 - the caller still gets its answer
            self._log(logging.ERROR, "Could not store a refused request.", error_type=type(exc).__name__)
            return None
        return result.message_id

    # -- helpers -------------------------------------------------------------------------

    def _load_secrets(self) -> tuple[bytes, ...]:
        auth = self.config.auth
        if auth is None:
            return ()
        if auth.scheme == "bearer":
            names = [("auth.bearer_env", auth.bearer_env)]
        elif auth.scheme == "api_key":
            names = [("auth.api_key_env", auth.api_key_env)]
        else:
            names = [("auth.basic_user_env", auth.basic_user_env), ("auth.basic_password_env", auth.basic_password_env)]
        values: list[bytes] = []
        for key, env in names:
            value = os.environ.get(env or "", "")
            if not value:
                self.problem = f"{key}: environment variable {env} is not set or empty"
                self._log(logging.ERROR, "Endpoint refuses every request: a secret is missing.", problem=self.problem)
                return ()
            values.append(value.encode())
        return tuple(values)

    def _log(self, level: int, sentence: str, **fields: Any) -> None:
        self._ctx.log.log(level, sentence, extra=fields)


def channel_name(ctx: SourceContext) -> str:
    """The channel's name (``SourceContext.name``)."""
    return ctx.name


def _basic_credentials(header: str) -> tuple[bytes, bytes]:
    """(user, password) of an HTTP basic Authorization header; empty values when absent or malformed.

    >>> _basic_credentials("Basic dTpwOnc=")
    (b'u', b'p:w')
    >>> _basic_credentials("Bearer x")
    (b'', b'')
    """
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return b"", b""
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b"", b""
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else (b"", b"")
