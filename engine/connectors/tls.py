"""TLS for connectors: the config models and the ``ssl.SSLContext`` built from them.

Paths in the models are relative to the project root (``base_dir``). ``ssl`` is imported
inside the builders, so validating a channel does not load OpenSSL.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from engine.core.channel import Strict
from engine.core.errors import JunctionError

if TYPE_CHECKING:
    import ssl


class TlsError(JunctionError, ValueError):
    """A TLS file or setting cannot be used; the message names the file, never a secret."""


class ServerTlsConfig(Strict):
    """TLS for a listener."""

    cert_file: str = Field(description="PEM certificate (chain) presented to clients, relative to the project root.")
    key_file: str = Field(description="PEM private key of cert_file.")
    key_password_env: str | None = Field(
        None, description="Name of the environment variable holding the key's password, when the key is encrypted."
    )
    client_ca_file: str | None = Field(
        None, description="PEM CA bundle that verifies client certificates; without it none are asked for."
    )
    require_client_cert: bool = Field(
        False, description="Refuse clients without a certificate signed by client_ca_file (mutual TLS)."
    )

    @model_validator(mode="after")
    def _ca_for_clients(self) -> ServerTlsConfig:
        if self.require_client_cert and not self.client_ca_file:
            raise ValueError("require_client_cert needs client_ca_file")
        return self


class ClientTlsConfig(Strict):
    """TLS for an outbound connection."""

    ca_file: str | None = Field(
        None, description="PEM CA bundle that verifies the server; default: the system trust store."
    )
    cert_file: str | None = Field(None, description="PEM client certificate (chain), for servers that require one.")
    key_file: str | None = Field(None, description="PEM private key of cert_file, when not inside cert_file.")
    verify: bool = Field(True, description="Verify the server certificate and host name; false only for tests.")
    server_hostname: str | None = Field(
        None, description="Name the server certificate must match (also sent as SNI); default: the endpoint host."
    )

    @model_validator(mode="after")
    def _key_needs_cert(self) -> ClientTlsConfig:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")
        return self


def resolve(path: str, base_dir: Path) -> Path:
    """``path`` made absolute against the project root."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else base_dir / candidate


def server_context(config: ServerTlsConfig, base_dir: Path) -> ssl.SSLContext:
    """A server-side context: our certificate, and client verification when configured."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    password = _password(config.key_password_env)
    _load_chain(context, "cert_file", resolve(config.cert_file, base_dir), resolve(config.key_file, base_dir), password)
    if config.client_ca_file:
        _load_ca(context, "client_ca_file", resolve(config.client_ca_file, base_dir))
        context.verify_mode = ssl.CERT_REQUIRED if config.require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(config: ClientTlsConfig, base_dir: Path) -> ssl.SSLContext:
    """A client-side context: server verification (unless disabled) and our certificate if any."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if config.ca_file:
        _load_ca(context, "ca_file", resolve(config.ca_file, base_dir))
    if not config.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert_file:
        key = resolve(config.key_file, base_dir) if config.key_file else None
        _load_chain(context, "cert_file", resolve(config.cert_file, base_dir), key, None)
    return context


def peer_common_name(peercert: Any) -> str | None:
    """The subject CN of a verified peer certificate (``SSLObject.getpeercert()``), if any."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _password(env_name: str | None) -> str | None:
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if value is None:
        raise TlsError(f"tls.key_password_env: environment variable {env_name} is not set")
    return value


def _load_chain(context: ssl.SSLContext, key: str, cert: Path, keyfile: Path | None, password: str | None) -> None:
    import ssl

    for path in (cert, keyfile):
        if path is not None and not path.is_file():
            raise TlsError(f"tls.{key}: file not found: {path}")
    try:
        context.load_cert_chain(cert, keyfile, password)
    except ssl.SSLError as exc:
        raise TlsError(f"tls.{key}: cannot load the certificate or key from {cert} ({exc.reason})") from None


def _load_ca(context: ssl.SSLContext, key: str, path: Path) -> None:
    import ssl

    if not path.is_file():
        raise TlsError(f"tls.{key}: file not found: {path}")
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise TlsError(f"tls.{key}: cannot load CA certificates from {path} ({exc.reason})") from None
