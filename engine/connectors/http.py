"""HTTP destination: POST or PUT each message to an HTTP(S) endpoint with the aiohttp client.

The connector classifies, the runtime retries: 2xx succeeds; 408, 425, 429, 5xx and
network failures raise ``RetryableError``; any other status raises ``PermanentError``.
aiohttp and ssl are imported in ``open()``, so validating a channel stays fast.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import quote_plus, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from engine.core.channel import DestinationConfig, Strict
from engine.core.errors import DeliveryError, PermanentError, RetryableError
from engine.core.message import Outbound, SendResult
from engine.core.spec import Example, destination_spec

if TYPE_CHECKING:
    import ssl

    import aiohttp

__all__ = [
    "HTTP_DESTINATION",
    "ApiKeyAuth",
    "BasicAuth",
    "BearerAuth",
    "HttpDestination",
    "HttpDestinationConfig",
    "OAuth2Auth",
    "RateLimit",
]

RETRYABLE_STATUSES = frozenset({408, 425, 429})
# A Retry-After far in the future is more likely a server bug than a plan; a day bounds the damage.
MAX_RETRY_AFTER_SECS = 86400.0
# Junction owns these headers; letting a channel set them would break idempotency or framing.
RESERVED_HEADERS = frozenset(
    {
        "idempotency-key",
        "x-junction-message-id",
        "x-junction-correlation-id",
        "x-junction-attempt",
        "content-type",
        "content-length",
        "transfer-encoding",
        "host",
    }
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name


def http_url(value: str, field: str = "url") -> str:
    """``value`` stripped; ValueError when it names a scheme other than http or https.

    An empty or relative value (an unset variable) passes: the destination reports it as its
    ``problem`` at run time instead of failing the whole channel file.

    >>> http_url(" https://erp.example.org/api ")
    'https://erp.example.org/api'
    """
    value = value.strip()
    scheme = urlsplit(value).scheme.lower() if "://" in value else ""
    if scheme and scheme not in ("http", "https"):
        raise ValueError(f"{field} must start with http:// or https://")
    return value


_BAD_VALUE = re.compile(r"[\r\n\x00]")


class BearerAuth(Strict):
    """``Authorization: Bearer <token>``."""

    type: Literal["bearer"] = Field(description="Bearer token authentication.")
    token: SecretStr = Field(
        description="The token; write ${VAR}, never the token itself. Empty (unset variable) holds the queue."
    )


class BasicAuth(Strict):
    """HTTP basic authentication (RFC 7617, UTF-8)."""

    type: Literal["basic"] = Field(description="HTTP basic authentication.")
    username: str = Field(description="User name; may not contain a colon. Empty (unset variable) holds the queue.")
    password: SecretStr = Field(description="Password; write ${VAR}, never the password itself.")

    @field_validator("username")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        if ":" in value:
            raise ValueError("username may not contain a colon (basic auth separates user and password with one)")
        return value


class ApiKeyAuth(Strict):
    """An API key in a request header (``X-API-Key`` by default)."""

    type: Literal["api_key"] = Field(description="API key authentication.")
    header: str = Field("X-API-Key", description="The header that carries the key.")
    key: SecretStr = Field(
        description="The key; write ${VAR}, never the key itself. Empty (unset variable) holds the queue."
    )

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _TOKEN.match(value) or value.lower() in RESERVED_HEADERS:
            raise ValueError(f"{value!r} cannot carry the API key (not a valid or not a free header name)")
        return value


class OAuth2Auth(Strict):
    """OAuth 2.0 client credentials (RFC 6749 section 4.4): a bearer token fetched from ``token_url``.

    The token is cached per destination and fetched again shortly before it expires (or once
    when the endpoint answers 401), never per message.
    """

    type: Literal["oauth2"] = Field(description="OAuth 2.0 client-credentials authentication.")
    token_url: str = Field(description="The authorization server's token endpoint (http or https).")
    client_id: str = Field(description="Client id; may come from ${VAR}. Empty (unset variable) holds the queue.")
    client_secret: SecretStr = Field(description="Client secret; write ${VAR}, never the secret itself.")
    scope: str | None = Field(None, description="Space-separated scopes to request.")
    audience: str | None = Field(None, description="The `audience` parameter some servers require (Auth0, Okta).")
    client_auth: Literal["basic", "body"] = Field(
        "basic", description="basic: client_secret_basic (HTTP basic header); body: client_secret_post (form fields)."
    )
    refresh_margin_secs: float = Field(
        60.0, ge=0, description="Fetch a new token this long before the current one expires."
    )

    @field_validator("token_url")
    @classmethod
    def _token_scheme(cls, value: str) -> str:
        return http_url(value, "token_url")


Auth = Annotated[BearerAuth | BasicAuth | ApiKeyAuth | OAuth2Auth, Field(discriminator="type")]


class RateLimit(Strict):
    """A token bucket shared by every worker of the destination."""

    per_second: float = Field(gt=0, description="Sustained requests per second.")
    burst: int = Field(1, ge=1, description="Requests that may go at once after a quiet period.")


class HttpDestinationConfig(DestinationConfig):
    """Send each message to an HTTP(S) endpoint."""

    url: str = Field(
        "",
        description="Absolute http(s) URL; an empty or relative value (unset variable) holds the queue.",
        examples=["https://erp.example.org/api/patient-accounts"],
    )
    method: Literal["POST", "PUT"] = Field("POST", description="HTTP method.")
    body: Literal["content", "envelope"] = Field(
        "content",
        description="content: the transformed bytes as they are; envelope: a JSON object with ids and the content.",
    )
    content_type: str | None = Field(
        None, description="Content-Type to send; default: the content's own type (application/json for envelope)."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (values may be ${VAR}).")
    auth: Auth | None = Field(
        None, description="Authentication: bearer, basic, api_key or oauth2 (client credentials); secrets from ${VAR}."
    )
    rate_limit: RateLimit | None = Field(None, description="At most this many requests per second (all threads).")
    timeout_secs: float = Field(30.0, gt=0, description="Give up on a request (connect, send, answer) after this long.")
    max_response_bytes: int = Field(65536, ge=0, description="Keep at most this much of each response body.")
    verify_tls: bool = Field(True, description="Verify the server certificate and host name; false only for tests.")
    ca_file: str | None = Field(
        None, description="PEM CA bundle that verifies the server, relative to the project root; default: system."
    )

    @field_validator("method", mode="before")
    @classmethod
    def _upper_method(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        return http_url(value)

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _TOKEN.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP field name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by Junction (use content_type for Content-Type)")
            if _BAD_VALUE.search(text):
                # Do not echo the value: it may be a secret taken from the environment.
                raise ValueError(f"header {name!r} has a line break or NUL in its value")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> HttpDestinationConfig:
        if self.auth is not None and any(n.lower() == "authorization" for n in self.headers):
            raise ValueError("set Authorization either with auth or in headers, not both")
        if self.ca_file and not self.verify_tls:
            raise ValueError("ca_file has no effect when verify_tls is false; remove one of them")
        return self


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be used, as a sentence that does not quote it (it may hold secrets)."""
    if not url:
        return "url is not configured (empty); set the environment variable used in the channel file"
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return (
            "url is not an absolute http:// or https:// address; "
            "check the environment variable used in the channel file"
        )
    return None


def auth_problem(auth: BearerAuth | BasicAuth | ApiKeyAuth | OAuth2Auth | None) -> str | None:
    """Why ``auth`` cannot be used: an empty token or user name usually means an unset variable."""
    unset = "; set the environment variable used in the channel file"
    if isinstance(auth, BearerAuth) and not auth.token.get_secret_value():
        return "auth token is empty" + unset
    if isinstance(auth, BasicAuth) and not auth.username:
        return "auth username is empty" + unset
    if isinstance(auth, ApiKeyAuth) and not auth.key.get_secret_value():
        return "auth key is empty" + unset
    if isinstance(auth, OAuth2Auth):
        if not auth.client_id or not auth.client_secret.get_secret_value():
            return "oauth2 client_id or client_secret is empty" + unset
        problem = url_problem(auth.token_url)
        if problem:
            return "oauth2 token_url: " + problem
    return None


class TokenBucket:
    """Rate limiting without a background task: ``delay()`` reserves a slot and says how long to wait.

    >>> clock = iter([0.0, 0.0, 0.0, 0.0, 0.0]).__next__
    >>> bucket = TokenBucket(per_second=2, burst=2, clock=clock)
    >>> [bucket.delay() for _ in range(4)]
    [0.0, 0.0, 0.5, 1.0]
    """

    def __init__(self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_second
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def delay(self) -> float:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class OAuth2Token:
    """The client-credentials token of one destination: fetched once, shared, refreshed before expiry."""

    def __init__(self, auth: OAuth2Auth, where_timeout: float, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.auth = auth
        self._timeout = where_timeout
        self._log = log
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock: asyncio.Lock | None = None
        self.fetches = 0
        parts = urlsplit(auth.token_url)
        self._where = f"the token endpoint {parts.scheme.lower()}://{parts.hostname}:{parts.port or ''}".rstrip(":")

    async def header(self, session: aiohttp.ClientSession, *, stale: str | None = None) -> str:
        """``Bearer <token>``; ``stale`` is a header the resource server refused (fetch a new one)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            current = f"Bearer {self._token}" if self._token else None
            fresh = self._token is not None and time.time() < self._expires_at - self.auth.refresh_margin_secs
            if current is None or not fresh or (stale is not None and stale == current):
                await self._fetch(session)
            return f"Bearer {self._token}"

    async def _fetch(self, session: aiohttp.ClientSession) -> None:
        import aiohttp

        form = {"grant_type": "client_credentials"}
        if self.auth.scope:
            form["scope"] = self.auth.scope
        if self.auth.audience:
            form["audience"] = self.auth.audience
        headers = {"Accept": "application/json"}
        secret = self.auth.client_secret.get_secret_value()
        if self.auth.client_auth == "basic":
            # RFC 6749 2.3.1: id and secret are form-urlencoded before the basic encoding.
            pair = f"{quote_plus(self.auth.client_id)}:{quote_plus(secret)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        else:
            form.update({"client_id": self.auth.client_id, "client_secret": secret})
        try:
            async with session.post(self.auth.token_url, data=form, headers=headers, allow_redirects=False) as answer:
                body = await read_capped(answer, 65536)
                status = answer.status
        except (aiohttp.ClientError, OSError) as exc:
            raise transport_error(exc, self._where, self._timeout) from exc
        self.fetches += 1
        if status != 200:
            # 400 invalid_client or 401 usually mean wrong credentials: retryable, so that
            # fixing the secret and redeploying delivers what was queued meanwhile.
            raise RetryableError(f"{self._where} answered {status_text(status)}", status_code=status)
        try:
            data = json.loads(body)
            token = data["access_token"]
            expires_in = float(data.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError) as exc:
            raise RetryableError(f"{self._where} answered without a usable access_token") from exc
        if not isinstance(token, str) or not token or not math.isfinite(expires_in):
            raise RetryableError(f"{self._where} answered without a usable access_token")
        self._token = token
        self._expires_at = time.time() + expires_in
        self._log.info("OAuth2 token fetched.", extra={"expires_in": round(expires_in)})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP date), or None.

    >>> parse_retry_after("120")
    120.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    """
    if not value or not value.strip():
        return None
    try:
        secs = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        secs = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(secs):
        return None
    return min(max(secs, 0.0), MAX_RETRY_AFTER_SECS)


def status_text(status: int) -> str:
    # The stdlib phrase, not the server's reason line: that one is free text from the peer.
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def classify(status: int, headers: Mapping[str, str], body: bytes) -> SendResult:
    """Return the result of a 2xx answer; raise the matching delivery error otherwise.

    The reason names the status only: response bodies may echo the message (PHI). The
    body travels on the error for the store, which keeps responses per storage mode.
    """
    if 200 <= status < 300:
        content_type = headers.get("Content-Type", "") or headers.get("content-type", "")
        return SendResult(response=body, status_code=status, detail=status_text(status), content_type=content_type)
    reason = f"endpoint answered {status_text(status)}"
    if status in RETRYABLE_STATUSES or 500 <= status < 600:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        raise RetryableError(reason, status_code=status, response=body, retry_after_secs=retry_after)
    if 300 <= status < 400:
        reason += " (redirects are not followed; point url at the final address)"
    raise PermanentError(reason, status_code=status, response=body)


def transport_error(exc: BaseException, where: str, timeout_secs: float) -> DeliveryError:
    """Translate an aiohttp or socket failure into a retryable error with a short reason."""
    import aiohttp

    if isinstance(exc, TimeoutError):  # aiohttp's own timeout errors subclass it as well
        return RetryableError(f"no answer from {where} within {timeout_secs:g} s")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return RetryableError(f"the TLS certificate of {where} was not accepted")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return RetryableError(f"could not resolve the host of {where}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return RetryableError(f"could not connect to {where}: {exc.os_error.strerror or type(exc.os_error).__name__}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return RetryableError(f"{where} closed the connection before answering")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return RetryableError(f"the response from {where} was cut off")
    return RetryableError(f"request to {where} failed ({type(exc).__name__})")


def _basic_header(auth: BasicAuth) -> str:
    pair = f"{auth.username}:{auth.password.get_secret_value()}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _auth_header(auth: BearerAuth | BasicAuth | ApiKeyAuth | OAuth2Auth | None) -> str | None:
    if isinstance(auth, BearerAuth):
        return "Bearer " + auth.token.get_secret_value()
    if isinstance(auth, BasicAuth):
        return _basic_header(auth)
    return None  # api_key and oauth2 set their headers per request


def envelope(item: Outbound) -> bytes:
    """The JSON envelope: ids plus the content decoded as UTF-8 (bad bytes become U+FFFD)."""
    data = {
        "message_id": item.message_id,
        "correlation_id": item.correlation_id,
        "channel": item.channel,
        "control_id": item.control_id,
        "content_type": item.content_type,
        "content": item.content.decode("utf-8", errors="replace"),
    }
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read at most ``limit`` bytes of the body; the rest is dropped with the connection."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        if size >= limit:
            break
        piece = chunk[: limit - size]
        chunks.append(piece)
        size += len(piece)
    return b"".join(chunks)


class HttpDestination:
    """Sends each message as one HTTP request and classifies the answer.

    Every request carries ``Idempotency-Key`` (message id + ":" + destination, stable across
    retries and restarts) and ``X-Junction-Message-Id``, ``-Correlation-Id``, ``-Attempt``.
    One ``aiohttp.ClientSession`` lives from ``open()`` to ``close()``.

        dest = HttpDestination(config, channel="adt-in", base_dir=root, log=log)
        await dest.open()
        result = await dest.send(outbound)  # result.status_code, result.response
        await dest.close()
    """

    def __init__(
        self,
        config: HttpDestinationConfig,
        *,
        channel: str,
        base_dir: Path,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.config = config
        self.channel = channel
        self._base_dir = base_dir
        self._log = log
        self._session: aiohttp.ClientSession | None = None
        self._authorization = _auth_header(config.auth)
        self._oauth = (
            OAuth2Token(config.auth, config.timeout_secs, log) if isinstance(config.auth, OAuth2Auth) else None
        )
        self._bucket = TokenBucket(config.rate_limit.per_second, config.rate_limit.burst) if config.rate_limit else None
        self.problem: str | None = url_problem(config.url) or auth_problem(config.auth)
        self._where = self._endpoint_name()

    def _endpoint_name(self) -> str:
        # scheme://host:port only: paths, queries and user info may carry secrets.
        if self.problem:
            return "the endpoint"
        parts = urlsplit(self.config.url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        return f"{parts.scheme.lower()}://{parts.hostname}:{port}"

    async def open(self) -> None:
        """Create the client session (also when ``problem`` is set, so ``close`` is uniform)."""
        import aiohttp

        ssl_setting = self._ssl_setting()
        connector = aiohttp.TCPConnector(ssl=ssl_setting)
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_secs)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False)

    def _ssl_setting(self) -> bool | ssl.SSLContext:
        """True (system trust), False (no verification) or a context for ``ca_file``."""
        if not self.config.verify_tls:
            return False
        if not self.config.ca_file:
            return True
        import ssl

        path = self._base_dir / self.config.ca_file
        try:
            return ssl.create_default_context(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            self.problem = f"ca_file {self.config.ca_file} cannot be loaded ({type(exc).__name__})"
            return True

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(self, item: Outbound) -> SendResult:
        """Deliver ``item``; raise ``RetryableError`` or ``PermanentError`` on failure."""
        data, content_type = self._body(item)
        status, headers, body = await self.exchange(
            item, self.config.method, self.config.url, data, self._headers(item, content_type)
        )
        return classify(status, headers, body)

    async def exchange(
        self, item: Outbound, method: str, url: str, data: bytes | None, headers_out: dict[str, str]
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One HTTP exchange with this destination's session, auth, rate limit and time-out.

        Returns (status, headers, capped body); raises ``RetryableError`` for transport
        failures. Subclasses (FHIR) build their own URL and headers and classify themselves.
        """
        import aiohttp

        if self.problem:
            raise RetryableError(self.problem)
        if self._session is None:
            raise RetryableError("the HTTP destination is not open")
        if self._bucket is not None:
            wait = self._bucket.delay()
            if wait > 0:
                await asyncio.sleep(wait)
        started = time.monotonic()
        for renewal in (False, True):
            if self._oauth is not None:
                stale = headers_out.get("Authorization") if renewal else None
                headers_out["Authorization"] = await self._oauth.header(self._session, stale=stale)
            try:
                async with self._session.request(
                    method, url, data=data, headers=headers_out, allow_redirects=False
                ) as response:
                    body = await read_capped(response, self.config.max_response_bytes)
                    status, headers = response.status, response.headers
            except (aiohttp.ClientError, OSError) as exc:
                raise transport_error(exc, self._where, self.config.timeout_secs) from exc
            if status != 401 or self._oauth is None:
                break  # a 401 with OAuth2: the token was revoked or expired early; renew it once
        self._log.debug(
            "HTTP endpoint answered.",
            extra={
                "destination": self.config.name,
                "message_id": item.message_id,
                "status_code": status,
                "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return status, headers, body

    def _body(self, item: Outbound) -> tuple[bytes, str]:
        if self.config.body == "envelope":
            return envelope(item), self.config.content_type or "application/json"
        return item.content, self.config.content_type or item.content_type or "application/octet-stream"

    def _headers(self, item: Outbound, content_type: str) -> dict[str, str]:
        headers = dict(self.config.headers)
        if self._authorization:
            headers["Authorization"] = self._authorization
        if isinstance(self.config.auth, ApiKeyAuth):
            headers[self.config.auth.header] = self.config.auth.key.get_secret_value()
        headers.update(
            {
                "Content-Type": content_type,
                "Idempotency-Key": item.idempotency_key,
                "X-Junction-Message-Id": item.message_id,
                "X-Junction-Correlation-Id": item.correlation_id,
                "X-Junction-Attempt": str(item.attempt),
            }
        )
        return headers


HTTP_DESTINATION = destination_spec(
    name="http",
    summary="POST or PUT each message to an HTTP(S) endpoint; 2xx succeeds, 408/425/429/5xx and network "
    "errors are retried, other statuses fail the message.",
    config=HttpDestinationConfig,
    factory="engine.connectors.http:HttpDestination",
    capabilities=frozenset({"tls"}),
    examples=(
        Example(
            "ERP REST endpoint with a bearer token",
            "type: http\n"
            "name: erp-patient-accounts\n"
            "url: ${ERP_BASE_URL}/patient-accounts\n"
            "auth:\n"
            "  type: bearer\n"
            "  token: ${ERP_TOKEN}\n"
            "retry: {max_attempts: 0, backoff_secs: 2, max_backoff_secs: 300}\n",
        ),
        Example(
            "JSON envelope, PUT with basic auth and a private CA",
            "type: http\n"
            "name: billing-webhook\n"
            "url: https://billing.example.org/hooks/hl7\n"
            "method: PUT\n"
            "body: envelope\n"
            "headers:\n"
            "  X-Source-System: junction\n"
            "auth:\n"
            "  type: basic\n"
            "  username: junction\n"
            "  password: ${BILLING_PASSWORD}\n"
            "timeout_secs: 10\n"
            "ca_file: certs/billing-ca.pem\n",
        ),
        Example(
            "SaaS procurement API: OAuth2 client credentials, at most 5 requests a second",
            "type: http\n"
            "name: procurement-api\n"
            "url: ${PROCUREMENT_URL}/v2/requisitions\n"
            "auth:\n"
            "  type: oauth2\n"
            "  token_url: ${PROCUREMENT_TOKEN_URL}\n"
            "  client_id: ${PROCUREMENT_CLIENT_ID}\n"
            "  client_secret: ${PROCUREMENT_CLIENT_SECRET}\n"
            "  scope: requisitions.write\n"
            "rate_limit: {per_second: 5, burst: 5}\n",
        ),
        Example(
            "Analytics ingest with an API key header",
            "type: http\n"
            "name: analytics\n"
            "url: https://ingest.example.org/events\n"
            'auth: {type: api_key, header: X-Api-Key, key: "${ANALYTICS_KEY}"}\n',
        ),
    ),
)
