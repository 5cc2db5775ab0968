"""Config models of the MLLP source and destination."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from engine.connectors.tls import ClientTlsConfig, ServerTlsConfig
from engine.core.channel import DestinationConfig, SourceConfig

Policy = Literal["retry", "error"]


def split_host_port(value: str, *, allow_port_zero: bool = True) -> tuple[str, int]:
    """Split "host:port" (IPv6 hosts in brackets); raise ValueError when malformed.

    >>> split_host_port("[::1]:6661")
    ('::1', 6661)
    """
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("expected host:port, e.g. 0.0.0.0:6661")
    number = int(port)
    lowest = 0 if allow_port_zero else 1
    if not lowest <= number <= 65535:
        raise ValueError(f"port must be between {lowest} and 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, number


class MllpSourceConfig(SourceConfig):
    """An MLLP listener (TCP, optional TLS); persistent connections, one ACK per frame."""

    listen: str = Field(description="Address to bind, host:port; port 0 picks a free port.", examples=["0.0.0.0:6661"])
    ack_mode: Literal["on_receipt", "after_processing"] = Field(
        "on_receipt",
        description="ACK once the message is stored (on_receipt) or once the pipeline has run (after_processing).",
    )
    max_frame_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Largest accepted payload; larger frames are answered with AR."
    )
    idle_timeout_secs: float = Field(300.0, gt=0, description="Close a connection when nothing arrives for this long.")
    max_connections: int = Field(256, ge=1, description="Connections beyond this many are closed at once.")
    tls: ServerTlsConfig | None = Field(None, description="Serve MLLP over TLS.")

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        split_host_port(value)
        return value.strip()


class MllpDestinationConfig(DestinationConfig):
    """An MLLP sender that waits for each ACK and checks it."""

    endpoint: str = Field(
        description="Peer address, host:port; an empty value (unset variable) holds the queue.",
        examples=["lab.example.org:6661"],
    )
    connect_timeout_secs: float = Field(10.0, gt=0, description="Give up connecting after this long (retried).")
    ack_timeout_secs: float = Field(30.0, gt=0, description="Wait this long for the ACK of each message.")
    keep_connection_open: bool = Field(True, description="Reuse one connection between messages.")
    check_control_id: bool = Field(True, description="Require MSA-2 of the ACK to equal MSH-10 of the sent message.")
    on_ae: Policy = Field("retry", description="An AE/CE answer (application error): retry or mark ERROR.")
    on_ar: Policy = Field("error", description="An AR/CR answer (rejected): retry or mark ERROR.")
    on_ack_timeout: Policy = Field("retry", description="No ACK within ack_timeout_secs: retry or mark ERROR.")
    tls: ClientTlsConfig | None = Field(None, description="Connect over TLS.")

    @field_validator("endpoint")
    @classmethod
    def _endpoint_address(cls, value: str) -> str:
        if value.strip():
            split_host_port(value, allow_port_zero=False)
        return value.strip()
