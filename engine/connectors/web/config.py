"""Config models of the HTTP and FHIR sources (validated without importing aiohttp)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from engine.connectors.tls import ServerTlsConfig
from engine.core.channel import SourceConfig, Strict

DEFAULT_LISTEN = "127.0.0.1:8781"
MAX_BODY_DEFAULT = 10 * 1024 * 1024
_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
_HEADER = re.compile(r"^[A-Za-z0-9-]+$")
_RESOURCE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")

HTTP_CONTENT_TYPES = (
    "application/json",
    "application/fhir+json",
    "application/xml",
    "text/xml",
    "x-application/hl7-v2+er7",
    "application/edi-x12",
    "text/plain",
)
Method = Literal["POST", "PUT"]
AckMode = Literal["on_receipt", "after_processing"]


def split_listen(value: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 hosts in brackets); raise ValueError when malformed.

    >>> split_listen("0.0.0.0:8781")
    ('0.0.0.0', 8781)
    >>> split_listen("[::1]:0")
    ('::1', 0)
    """
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("expected host:port, e.g. 127.0.0.1:8781")
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError("port must be between 0 and 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, number


class HttpAuthConfig(Strict):
    """Who may call the endpoint; every secret comes from an environment variable.

    Give exactly one scheme: ``bearer_env``, ``api_key_env`` (with ``api_key_header``) or
    ``basic_user_env`` + ``basic_password_env``.
    """

    bearer_env: str | None = Field(
        None, description="Variable holding the token expected in 'Authorization: Bearer <token>'."
    )
    api_key_env: str | None = Field(None, description="Variable holding the API key expected in api_key_header.")
    api_key_header: str = Field("X-API-Key", description="Request header that carries the API key.")
    basic_user_env: str | None = Field(None, description="Variable holding the HTTP basic user name.")
    basic_password_env: str | None = Field(None, description="Variable holding the HTTP basic password.")

    @field_validator("bearer_env", "api_key_env", "basic_user_env", "basic_password_env")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("give the name of an environment variable (letters, digits, _), not a secret")
        return value

    @field_validator("api_key_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER.fullmatch(value):
            raise ValueError("a header name has letters, digits and '-' only")
        if value.lower() == "authorization":
            raise ValueError("use bearer_env or basic_*_env for the Authorization header")
        return value

    @model_validator(mode="after")
    def _one_scheme(self) -> HttpAuthConfig:
        basic = self.basic_user_env is not None or self.basic_password_env is not None
        if basic and (self.basic_user_env is None or self.basic_password_env is None):
            raise ValueError("HTTP basic needs both basic_user_env and basic_password_env")
        schemes = [self.bearer_env is not None, self.api_key_env is not None, basic]
        if sum(schemes) != 1:
            raise ValueError("give exactly one of bearer_env, api_key_env or basic_user_env + basic_password_env")
        return self

    @property
    def scheme(self) -> Literal["bearer", "api_key", "basic"]:
        if self.bearer_env is not None:
            return "bearer"
        return "api_key" if self.api_key_env is not None else "basic"


class WebSourceConfig(SourceConfig):
    """Keys shared by the HTTP and FHIR sources."""

    listen: str = Field(
        DEFAULT_LISTEN,
        description="Address to bind, host:port. Channels with the same address share one listener; "
        "port 0 picks a free port for this channel alone.",
    )
    path: str | None = Field(
        None,
        description="URL path prefix of this channel's endpoint; default /channels/<channel> (fhir: /fhir/<channel>).",
    )
    auth: HttpAuthConfig | None = Field(None, description="Caller authentication; none means anyone who can connect.")
    max_body_bytes: int = Field(
        MAX_BODY_DEFAULT, ge=1, description="Largest accepted request body; larger ones are answered 413 and stored."
    )
    tls: ServerTlsConfig | None = Field(
        None, description="Serve HTTPS; client_ca_file + require_client_cert give mutual TLS."
    )
    ack_mode: AckMode = Field(
        "on_receipt",
        description="Answer once the message is stored (on_receipt) or once the pipeline has run (after_processing).",
    )
    sync_timeout_secs: float = Field(
        30.0,
        gt=0,
        le=600,
        description="after_processing: answer 504 when processing takes longer (the message stays stored).",
    )

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        split_listen(value)
        return value.strip()

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not _PATH.fullmatch(value):
            raise ValueError("path must start with '/', have no trailing '/', and use letters, digits, . _ ~ - only")
        return value


class HttpSourceConfig(WebSourceConfig):
    """An HTTP endpoint that stores each request body as one message (JSON, XML, HL7 v2, X12...)."""

    methods: list[Method] = Field(
        default_factory=lambda: list[Method](["POST"]), min_length=1, description="HTTP methods accepted at the path."
    )
    response: Literal["async", "sync"] = Field(
        "async",
        description="async: 202 with the message id once stored. sync: answer with respond_from's reply or the "
        "transformed result (needs ack_mode: after_processing).",
    )
    respond_from: str | None = Field(
        None,
        description="sync only: the send_first destination whose response body is the answer; default: the "
        "channel transform's output.",
    )
    content_types: list[str] = Field(
        default_factory=lambda: list(HTTP_CONTENT_TYPES),
        min_length=1,
        description="Media types accepted (without parameters); other bodies are answered 415 and stored.",
    )

    @field_validator("content_types")
    @classmethod
    def _media_types(cls, value: list[str]) -> list[str]:
        lowered = [v.strip().lower() for v in value]
        for item in lowered:
            if not re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", item):
                raise ValueError(f"{item!r} is not a media type such as application/json")
        return lowered

    @model_validator(mode="after")
    def _sync_needs_processing(self) -> HttpSourceConfig:
        if self.response == "sync" and self.ack_mode != "after_processing":
            raise ValueError("response: sync needs ack_mode: after_processing")
        if self.respond_from is not None and self.response != "sync":
            raise ValueError("respond_from needs response: sync")
        return self


class FhirSourceConfig(WebSourceConfig):
    """A FHIR R4 REST endpoint: create, batch and transaction, plus the CapabilityStatement."""

    resource_types: list[str] = Field(
        default_factory=list,
        description="Resource types accepted (e.g. SupplyDelivery); empty accepts any type the data type parses.",
    )

    @field_validator("resource_types")
    @classmethod
    def _resource_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _RESOURCE.fullmatch(name):
                raise ValueError(f"{name!r} is not a FHIR resource type name (e.g. SupplyDelivery)")
            if name == "Bundle":
                raise ValueError("post batch and transaction Bundles to the base path; Bundle is not listed here")
        if len(set(value)) != len(value):
            raise ValueError("a resource type is listed twice")
        return value
