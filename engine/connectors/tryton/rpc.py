"""A small asynchronous JSON-RPC client for Tryton (trytond 8.x), on aiohttp.

Tryton serves JSON-RPC at ``POST /<database>/rpc/``. It accepts HTTP basic
authentication on every request, but then hashes the password on every call (about 190 ms
each, measured on trytond 8.2); so the client logs in once with ``common.db.login`` and
sends ``Authorization: Session base64(login:user_id:session)`` afterwards, logging in again
once when the session has expired (HTTP 401). A call is ``{"id", "method", "params"}`` where the
method is ``model.<model name>.<method>`` and the last parameter is the context; dates,
datetimes and Decimals travel as ``{"__class__": "date", ...}`` objects. Each call runs in
its own database transaction on the server.

Errors come back as ``{"error": [kind, args]}`` for Tryton's own exceptions
(``UserError``, ``UserWarning``, ``ConcurrencyException``, ``LoginException``) or
``{"error": [text, traceback]}`` for anything else. This module turns them into
Junction's ``PermanentError`` (the server refused the data: the first line of Tryton's
message, which names records, never patients) or ``RetryableError`` (transport, HTTP
5xx, authentication, locking).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from engine.core.errors import PermanentError, RetryableError

if TYPE_CHECKING:
    import aiohttp

__all__ = ["TrytonClient", "TrytonError", "decode", "encode", "first_line"]

MAX_REASON_CHARS = 300
MAX_RESPONSE_BYTES = 16 << 20


class TrytonError(PermanentError):
    """Tryton refused a call with a UserError or UserWarning (bad data, missing record)."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def first_line(text: object) -> str:
    """The first non-empty line of ``text``, capped (Tryton messages can be long).

    >>> first_line("Product is missing.\\nDetails follow")
    'Product is missing.'
    """
    for line in str(text or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= MAX_REASON_CHARS else line[: MAX_REASON_CHARS - 3] + "..."
    return ""


def _to_wire(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {
            "__class__": "datetime",
            **{k: getattr(value, k) for k in ("year", "month", "day", "hour", "minute", "second", "microsecond")},
        }
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, dict):
        return {str(k): _to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_to_wire(v) for v in value]
    return value


def encode(method: str, params: list[Any], call_id: int) -> bytes:
    """The JSON-RPC request body, with Tryton's encoding of Decimal, date and datetime.

    >>> encode("model.x.read", [[1], Decimal("1.50"), dt.date(2026, 1, 2)], 7)[:60]
    b'{"id": 7, "method": "model.x.read", "params": [[1], {"__clas'
    """
    return json.dumps({"id": call_id, "method": method, "params": _to_wire(params)}).encode("utf-8")


def _from_wire(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "datetime":
        return dt.datetime(
            obj["year"], obj["month"], obj["day"], obj["hour"], obj["minute"], obj["second"], obj["microsecond"]
        )
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "time":
        return dt.time(obj["hour"], obj["minute"], obj["second"], obj["microsecond"])
    if kind == "timedelta":
        return dt.timedelta(seconds=obj["seconds"])
    if kind == "bytes":
        return base64.b64decode(obj["base64"])
    return obj


def decode(body: bytes) -> Any:
    """Parse a JSON-RPC answer body, turning Tryton's tagged objects back into Python values.

    >>> decode(b'{"id": 1, "result": {"__class__": "Decimal", "decimal": "2.5"}}')["result"]
    Decimal('2.5')
    """
    return json.loads(body, object_hook=_from_wire)


def _rpc_error(error: Any, method: str) -> PermanentError | RetryableError:
    """Classify the ``error`` member of an answer (never quoting tracebacks)."""
    kind = error[0] if isinstance(error, list | tuple) and error else ""
    args = error[1] if isinstance(error, list | tuple) and len(error) > 1 else None
    if kind == "UserError" and isinstance(args, list | tuple) and args:
        return TrytonError(f"Tryton refused {method}: {first_line(args[0])}", kind="UserError")
    if kind == "UserWarning" and isinstance(args, list | tuple) and len(args) > 1:
        return TrytonError(f"Tryton warned on {method} (not confirmed automatically): {first_line(args[1])}", kind=kind)
    if kind == "ConcurrencyException":
        return RetryableError(f"Tryton reported a concurrent change during {method}")
    if kind == "LoginException":
        return RetryableError("Tryton asked for another login step; check the username and password variables")
    # Any other exception: its text may echo data, and a locked or restarting database is
    # the usual cause, so retry without quoting it.
    return RetryableError(f"Tryton failed with a server error during {method}")


class TrytonClient:
    """JSON-RPC calls to one Tryton database as one user, on one aiohttp session.

    client = TrytonClient("http://127.0.0.1:8000", "erp", "junction", "secret")
    await client.open()
    ids = await client.call("model.product.product.search", [["code", "=", "X1"]], 0, 1, None, {})
    await client.close()
    """

    def __init__(
        self,
        url: str,
        database: str,
        username: str,
        password: str,
        *,
        timeout_secs: float = 30.0,
        verify_tls: bool = True,
    ) -> None:
        self.endpoint = f"{url.rstrip('/')}/{database}/rpc/"
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        # scheme://host:port only: a path or user info may carry secrets.
        self.where = f"Tryton at {parts.scheme.lower()}://{parts.hostname}:{port}"
        self._username = username
        self._password = password
        self._authorization: str | None = None  # the session header, once logged in
        self._login_lock: asyncio.Lock | None = None
        self._timeout = timeout_secs
        self._verify_tls = verify_tls
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self.context: dict[str, Any] = {}

    async def open(self) -> None:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._verify_tls),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )

    async def close(self) -> None:
        """End the Tryton session (best effort) and the HTTP session."""
        if self._session is not None and self._authorization is not None:
            with contextlib.suppress(RetryableError, PermanentError, TimeoutError):
                async with asyncio.timeout(min(self._timeout, 5.0)):
                    await self._post("common.db.logout", [], self._authorization)
        self._authorization = None
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _login(self, stale: str | None) -> str:
        """The session header; logs in when there is none or ``stale`` was refused."""
        if self._login_lock is None:
            self._login_lock = asyncio.Lock()
        async with self._login_lock:
            if self._authorization is None or self._authorization == stale:
                result = await self._post("common.db.login", [self._username, {"password": self._password}], None)
                if not isinstance(result, list | tuple) or len(result) < 2:
                    raise RetryableError(f"{self.where} answered the login without a session")
                token = f"{self._username}:{int(result[0])}:{result[1]}".encode()
                self._authorization = "Session " + base64.b64encode(token).decode("ascii")
            return self._authorization

    async def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` with ``params``; return its result or raise a delivery error."""
        authorization = await self._login(None)
        try:
            return await self._post(method, list(params), authorization)
        except RetryableError as exc:
            if exc.status_code != 401:
                raise
        # The session expired or was removed: a 401 comes before the method runs, so
        # logging in again and repeating the call is safe.
        return await self._post(method, list(params), await self._login(authorization))

    async def _post(self, method: str, params: list[Any], authorization: str | None) -> Any:
        import aiohttp

        from engine.connectors.http import read_capped, transport_error

        if self._session is None:
            await self.open()
        assert self._session is not None
        body = encode(method, params, next(self._ids))
        headers = {"Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        try:
            async with self._session.post(self.endpoint, data=body, headers=headers, allow_redirects=False) as answer:
                status = answer.status
                data = await read_capped(answer, MAX_RESPONSE_BYTES)
        except (aiohttp.ClientError, OSError) as exc:
            raise transport_error(exc, self.where, self._timeout) from exc
        if status != 200:
            raise self._status_error(status)
        try:
            answer_data = decode(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise RetryableError(f"{self.where} answered {method} with a body that is not JSON-RPC") from exc
        if not isinstance(answer_data, dict):
            raise RetryableError(f"{self.where} answered {method} with a body that is not JSON-RPC")
        if answer_data.get("error") is not None:
            raise _rpc_error(answer_data["error"], method)
        return answer_data.get("result")

    def _status_error(self, status: int) -> RetryableError | PermanentError:
        if status == 401:
            return RetryableError(
                f"{self.where} refused the credentials (HTTP 401); check the username and the password "
                "variable of the channel, or whether the user is active",
                status_code=status,
            )
        if status == 403:
            return PermanentError(
                f"{self.where} forbids this call (HTTP 403); the user lacks access rights to the model",
                status_code=status,
            )
        if status == 404:
            return RetryableError(
                f"{self.where} does not know the database (HTTP 404); check the database setting",
                status_code=status,
            )
        if status == 429:
            return RetryableError(
                f"{self.where} is rate-limiting logins (HTTP 429), usually after failed passwords",
                status_code=status,
            )
        return RetryableError(f"{self.where} answered HTTP {status}", status_code=status)

    async def preferences(self) -> dict[str, Any]:
        """Load the user's context (company, language) once; later calls pass it along."""
        if not self.context:
            prefs = await self.call("model.res.user.get_preferences", True, {})
            if not isinstance(prefs, dict):
                raise RetryableError(f"{self.where} answered get_preferences without a context")
            keep = ("company", "companies", "language", "employee", "employees", "company_filter")
            self.context = {k: prefs[k] for k in keep if k in prefs}
        return self.context

    async def model(self, model: str, method: str, *params: Any, context: dict[str, Any] | None = None) -> Any:
        """``model.<model>.<method>(*params, context)`` with the user's context (plus ``context``)."""
        base = await self.preferences()
        return await self.call(f"model.{model}.{method}", *params, {**base, **(context or {})})

    async def search_read(
        self,
        model: str,
        domain: list[Any],
        fields: list[str],
        *,
        limit: int | None = None,
        order: list[list[str]] | None = None,
        context: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        result = await self.model(model, "search_read", domain, 0, limit, order, fields, context=context)
        return list(result or [])
