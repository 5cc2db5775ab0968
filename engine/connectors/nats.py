"""NATS JetStream destination: publish each canonical object as an event, exactly once per message id.

One publish per object of the content (a JSON object, or a list of objects) to a subject
built from a template such as ``junction.{object_type}`` (``junction.supply_usage``). Every
event carries ``Nats-Msg-Id``: the message's idempotency key (``<message id>:<destination>``),
plus ``:<index>`` when the content is a list, so a retried delivery is dropped by the
stream's duplicate window instead of being stored twice. A send succeeds once JetStream has
acknowledged every object; an acknowledgement flagged ``duplicate`` counts as success.

nats-py is imported in ``open()``; one connection is kept across sends (the client
reconnects on its own) and opened again after it was closed; ``close()`` drains it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, field_validator, model_validator

from engine.connectors.database import load_objects
from engine.core.channel import DestinationConfig
from engine.core.errors import DeliveryError, PermanentError, RetryableError
from engine.core.message import Outbound, SendResult
from engine.core.spec import Example, destination_spec

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

__all__ = ["NATS_DESTINATION", "NatsDestination", "NatsDestinationConfig", "ObjectTypes", "snake_case"]

RECONNECT_ATTEMPTS = 2  # per server, one second apart
PLACEHOLDERS = frozenset({"object_type", "channel", "destination"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
_STREAM = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
Event = tuple[str, bytes, dict[str, str]]  # subject, payload, headers
_MEDIA_OBJECT = re.compile(r";\s*object=\"?([A-Za-z][A-Za-z0-9_]*)\"?", re.IGNORECASE)


def snake_case(name: str) -> str:
    """A class name as a subject token.

    >>> snake_case("SupplyUsage"), snake_case("PurchaseOrderAck"), snake_case("Item")
    ('supply_usage', 'purchase_order_ack', 'item')
    """
    return _CAMEL.sub("_", name).lower()


def _check_subject(subject: str, *, wildcards: bool) -> None:
    parts = subject.split(".")
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        if wildcards and (part == "*" or (part == ">" and last)):
            continue
        if not _SUBJECT_TOKEN.match(part):
            raise ValueError(
                "subjects are dot-separated tokens of letters, digits, _ and - "
                + ("(* and a final > as wildcards)" if wildcards else "(no wildcards, no empty tokens)")
            )


class NatsDestinationConfig(DestinationConfig):
    """Publish every canonical object of a message to NATS JetStream, de-duplicated by message id."""

    servers: list[str] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"],
        description="NATS server URLs (nats:// or tls://); the client fails over between them.",
    )
    subject: str = Field(
        "junction.{object_type}",
        description="Subject template; {object_type} (snake_case, e.g. supply_usage), {channel} and {destination} "
        "are replaced per object.",
    )
    object_type: str | None = Field(
        None,
        description="The canonical object name (e.g. SupplyUsage) for every object; default: read it from the "
        "content type (object=Name) or recognise it by the object's fields.",
    )
    stream: str | None = Field(
        None, description="The stream that must store the events (checked on every publish; created when asked)."
    )
    create_stream: bool = Field(False, description="Create the stream when it does not exist (needs stream).")
    subjects: list[str] = Field(
        default_factory=list,
        description="Subjects of a created stream; default: the subject template with * for each placeholder.",
    )
    duplicate_window_secs: float = Field(
        600.0,
        gt=0,
        le=86400,
        description="De-duplication window of a created stream; keep it longer than the retry backoff cap.",
    )
    timeout_secs: float = Field(10.0, gt=0, le=600, description="Limit for connecting and for each PubAck.")
    token_env: str | None = Field(None, description="Environment variable holding an auth token.")
    user_env: str | None = Field(None, description="Environment variable holding the user name.")
    password_env: str | None = Field(None, description="Environment variable holding the password.")
    creds_file: str | None = Field(None, description="NATS credentials file (JWT + NKey), relative to the project.")

    @field_validator("servers")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("servers needs at least one nats:// URL")
        for url in value:
            if not re.match(r"^(nats|tls|ws|wss)://[^/\s]+/?$", url):
                raise ValueError("servers are URLs like nats://host:4222 (nats, tls, ws or wss)")
            if "@" in url:
                raise ValueError("put credentials in token_env, user_env/password_env or creds_file, not in servers")
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        for name in _PLACEHOLDER.findall(value):
            if name not in PLACEHOLDERS:
                raise ValueError(f"unknown placeholder {{{name}}}; use {', '.join(sorted(PLACEHOLDERS))}")
        _check_subject(_PLACEHOLDER.sub("x", value), wildcards=False)
        return value

    @field_validator("subjects")
    @classmethod
    def _subjects(cls, value: list[str]) -> list[str]:
        for subject in value:
            _check_subject(subject, wildcards=True)
        return value

    @field_validator("stream")
    @classmethod
    def _stream(cls, value: str | None) -> str | None:
        if value is not None and not _STREAM.match(value):
            raise ValueError("stream names are letters, digits, _ and - (no dots, spaces or wildcards)")
        return value

    @field_validator("object_type")
    @classmethod
    def _object_type(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", value):
            raise ValueError("object_type is a class name such as SupplyUsage")
        return value

    @field_validator("token_env", "user_env", "password_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("name an environment variable (letters, digits, underscores), not the secret itself")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> NatsDestinationConfig:
        if self.create_stream and not self.stream:
            raise ValueError("create_stream needs stream (the name of the stream to create)")
        if self.subjects and not self.create_stream:
            raise ValueError("subjects only apply with create_stream: true")
        if (self.user_env is None) != (self.password_env is None):
            raise ValueError("give user_env and password_env together")
        methods = [self.token_env is not None, self.user_env is not None, self.creds_file is not None]
        if sum(methods) > 1:
            raise ValueError("use one of token_env, user_env/password_env or creds_file")
        return self

    def stream_subjects(self) -> list[str]:
        """The subjects of a created stream: given, or the template with wildcards."""
        return self.subjects or [_PLACEHOLDER.sub("*", self.subject)]


class ObjectTypes:
    """Recognises which canonical object a JSON object is, from its field names.

    Canonical objects forbid unknown keys, so an object fits a model when it has all of the
    model's required fields and nothing else; when several fit, full validation decides.
    """

    def __init__(self, models: dict[str, type[BaseModel]]) -> None:
        self.models = models
        self._shapes: list[tuple[str, frozenset[str], frozenset[str]]] = []
        for name, model in models.items():
            fields = model.model_fields
            names = frozenset(f.alias or n for n, f in fields.items()) | frozenset(fields)
            required = frozenset(f.alias or n for n, f in fields.items() if f.is_required())
            self._shapes.append((name, required, names))

    def recognise(self, obj: dict[str, Any]) -> str | None:
        """The model name for ``obj``, or None when no single model fits."""
        keys = frozenset(obj)
        fits = [name for name, required, names in self._shapes if required <= keys <= names]
        if len(fits) > 1:
            fits = [name for name in fits if self._validates(name, obj)]
        return fits[0] if len(fits) == 1 else None

    def _validates(self, name: str, obj: dict[str, Any]) -> bool:
        from pydantic import ValidationError

        try:
            self.models[name].model_validate(obj)
        except ValidationError:
            return False
        return True


class NatsDestination:
    """Publishes each object of a message to JetStream and waits for every PubAck.

    dest = NatsDestination(config, channel="usage-in", base_dir=root, log=log)
    await dest.open()
    result = await dest.send(outbound)  # result.detail: "2 events: 2 stored, 0 duplicates"
    await dest.close()
    """

    def __init__(
        self,
        config: NatsDestinationConfig,
        *,
        channel: str,
        base_dir: Path,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.config = config
        self.channel = channel
        self._base_dir = base_dir
        self._log = log
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._types: ObjectTypes | None = None
        self._stream_ready = not config.create_stream
        self._auth: dict[str, Any] = {}
        self.problem: str | None = self._auth_problem()
        # host:port of each server: the only part of a URL that goes into messages.
        self._where = ", ".join(re.sub(r"^\w+://", "", url).rstrip("/") for url in config.servers)

    def _auth_problem(self) -> str | None:
        config = self.config
        for field in ("token_env", "user_env", "password_env"):
            name = getattr(config, field)
            if name is not None and not os.environ.get(name):
                return f"environment variable {name} ({field}) is not set"
        if config.token_env:
            self._auth["token"] = os.environ[config.token_env]
        if config.user_env and config.password_env:
            self._auth["user"] = os.environ[config.user_env]
            self._auth["password"] = os.environ[config.password_env]
        if config.creds_file:
            path = self._base_dir / config.creds_file
            if not path.is_file():
                return f"creds_file {config.creds_file} does not exist"
            self._auth["user_credentials"] = str(path)
        return None

    async def open(self) -> None:
        """Import nats-py and connect; a failed connection is retried by the first send."""
        if self.problem:
            return
        try:
            import nats  # noqa: F401 - fail early when the client library is missing
        except ImportError:
            self.problem = "the nats-py client library is not installed"
            return
        try:
            await self._connect()
        except RetryableError as exc:
            self._log.warning("NATS connection failed; sends will retry.", extra={"error": str(exc)})

    async def _connect(self) -> JetStreamContext:
        import nats
        import nats.errors

        if self._nc is not None and not self._nc.is_closed and self._js is not None:
            return self._js
        try:
            self._nc = await nats.connect(
                servers=self.config.servers,
                name=f"junction:{self.channel}:{self.config.name}",
                connect_timeout=self.config.timeout_secs,
                # A few quick reconnects ride out a server restart; after that the client
                # closes and the next send (the runtime's retry) connects again. Unbounded
                # attempts would also make the first connect wait forever.
                allow_reconnect=True,
                max_reconnect_attempts=RECONNECT_ATTEMPTS,
                reconnect_time_wait=1,
                drain_timeout=max(1, round(self.config.timeout_secs)),
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnect,
                reconnected_cb=self._on_reconnect,
                **self._auth,
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self._nc = None
            raise RetryableError(f"could not connect to NATS at {self._where} ({type(exc).__name__})") from None
        self._js = self._nc.jetstream(timeout=self.config.timeout_secs)
        return self._js

    async def _on_error(self, exc: Exception) -> None:
        self._log.warning("NATS client error.", extra={"destination": self.config.name, "error": type(exc).__name__})

    async def _on_disconnect(self) -> None:
        self._log.info("NATS connection lost; reconnecting.", extra={"destination": self.config.name})

    async def _on_reconnect(self) -> None:
        self._log.info("NATS connection restored.", extra={"destination": self.config.name})

    async def close(self) -> None:
        """Drain the connection: pending publishes finish before it closes."""
        import nats.errors

        nc, self._nc, self._js = self._nc, None, None
        if nc is None or nc.is_closed:
            return
        try:
            await nc.drain()
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self._log.warning("NATS connection did not drain cleanly.", extra={"error": type(exc).__name__})
            await nc.close()

    async def send(self, item: Outbound) -> SendResult:
        """Publish every object of ``item``; raise ``RetryableError`` or ``PermanentError``."""
        if self.problem:
            raise RetryableError(self.problem)
        objects, is_list = load_objects(item.content, exact=False)
        if not objects:
            return SendResult(detail="no events (the content holds no objects)")
        events = [self._event(item, obj, index, is_list) for index, obj in enumerate(objects)]
        js = await self._connect()
        await self._ensure_stream(js)
        started = time.monotonic()
        duplicates = 0
        for subject, payload, headers in events:
            duplicates += await self._publish(js, subject, payload, headers)
        self._log.debug(
            "NATS events published.",
            extra={
                "destination": self.config.name,
                "message_id": item.message_id,
                "events": len(events),
                "duplicates": duplicates,
                "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        stored = len(events) - duplicates
        return SendResult(detail=f"{len(events)} events: {stored} stored, {duplicates} duplicates")

    def _event(self, item: Outbound, obj: dict[str, Any], index: int, is_list: bool) -> Event:
        object_type = self._object_type(item, obj, index)
        values = {"object_type": snake_case(object_type), "channel": item.channel, "destination": item.destination}
        subject = _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.config.subject)
        try:
            _check_subject(subject, wildcards=False)
        except ValueError:
            raise PermanentError(f"object {index}: the subject built from the template is not valid") from None
        msg_id = f"{item.idempotency_key}:{index}" if is_list else item.idempotency_key
        headers = {
            "Nats-Msg-Id": msg_id,
            "Content-Type": "application/json",
            "Junction-Message-Id": item.message_id,
            "Junction-Correlation-Id": item.correlation_id,
            "Junction-Channel": item.channel,
            "Junction-Object-Type": object_type,
        }
        version = obj.get("schema_version")
        if isinstance(version, str):
            headers["Junction-Schema-Version"] = version
        # A single object goes out as received; list items are serialised one by one.
        if not is_list:
            return subject, item.content, headers
        payload = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        return subject, payload, headers

    def _object_type(self, item: Outbound, obj: dict[str, Any], index: int) -> str:
        if self.config.object_type:
            return self.config.object_type
        declared = _MEDIA_OBJECT.search(item.content_type or "")
        if declared:
            return declared.group(1)
        if self._types is None:
            from engine.core import registry

            self._types = ObjectTypes(registry.models())
        found = self._types.recognise(obj)
        if found is None:
            raise PermanentError(
                f"object {index} is not a recognisable canonical object (its fields match no single model); "
                "set object_type in the destination"
            )
        return found

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Create the stream once when asked; an existing stream is used as it is."""
        if self._stream_ready:
            return
        import nats.errors
        from nats.js import api
        from nats.js.errors import NotFoundError

        assert self.config.stream is not None
        try:
            try:
                await js.stream_info(self.config.stream)
            except NotFoundError:
                await js.add_stream(
                    api.StreamConfig(
                        name=self.config.stream,
                        subjects=self.config.stream_subjects(),
                        duplicate_window=self.config.duplicate_window_secs,
                        storage=api.StorageType.FILE,
                    )
                )
                self._log.info("NATS stream created.", extra={"destination": self.config.name})
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            # A stream that cannot be created is a setup problem: hold the queue, lose nothing.
            error = self._translate(exc, "creating the stream")
            raise RetryableError(f"{error}; check the stream settings") from None
        self._stream_ready = True

    async def _publish(self, js: JetStreamContext, subject: str, payload: bytes, headers: dict[str, str]) -> int:
        """Publish one event; 1 when JetStream reports it as a duplicate, else 0."""
        import nats.errors

        try:
            ack = await js.publish(
                subject, payload, timeout=self.config.timeout_secs, stream=self.config.stream, headers=headers
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise self._translate(exc, f"publishing to {subject}") from None
        return 1 if ack.duplicate else 0

    def _translate(self, exc: BaseException, doing: str) -> DeliveryError:
        """Classify a nats-py error; subjects and stream names are configuration, not content."""
        import nats.errors
        from nats.js.errors import APIError, NoStreamResponseError

        if isinstance(exc, NoStreamResponseError):
            return RetryableError(f"no JetStream stream stores the subject when {doing}; create the stream")
        if isinstance(exc, APIError):
            code = exc.err_code or exc.code or 0
            if exc.err_code == 10060:
                return PermanentError(f"the subject is stored by another stream than {self.config.stream} ({doing})")
            if (exc.code is not None and exc.code >= 500) or exc.err_code in (10008, 10077):
                return RetryableError(f"JetStream could not store the event when {doing} (error {code})")
            return PermanentError(f"JetStream refused the event when {doing} (error {code})")
        if isinstance(exc, nats.errors.MaxPayloadError):
            return PermanentError(f"the event is larger than the server's max_payload ({doing})")
        if isinstance(exc, nats.errors.TimeoutError | TimeoutError):
            return RetryableError(f"no acknowledgement from JetStream within {self.config.timeout_secs:g} s ({doing})")
        if isinstance(exc, nats.errors.ConnectionClosedError):
            self._nc = None
        return RetryableError(f"NATS at {self._where} failed when {doing} ({type(exc).__name__})")


NATS_DESTINATION = destination_spec(
    name="nats",
    summary="Publish each canonical object to NATS JetStream (subject per object type), exactly once per "
    "message id within the stream's duplicate window.",
    config=NatsDestinationConfig,
    factory="engine.connectors.nats:NatsDestination",
    status="beta",
    examples=(
        Example(
            "Canonical events for analytics, one subject per object type",
            "type: nats\n"
            "name: event-bus\n"
            "servers: [nats://nats.internal:4222]\n"
            "subject: junction.{object_type}\n"
            "stream: JUNCTION_EVENTS\n"
            "token_env: NATS_TOKEN\n",
        ),
        Example(
            "Create the stream on first use (development)",
            "type: nats\n"
            "name: events\n"
            "subject: hospital.{channel}.{object_type}\n"
            "stream: HOSPITAL_EVENTS\n"
            "create_stream: true\n"
            "duplicate_window_secs: 900\n",
        ),
    ),
)
