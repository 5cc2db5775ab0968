"""The ``raw`` data type: bytes pass through untouched; no parsing, no response."""

from __future__ import annotations

from typing import Any

from engine.core.channel import DataTypeConfig
from engine.core.contracts import Header, Outcome
from engine.core.spec import Example, datatype_spec

WHOLE = "$"


class RawConfig(DataTypeConfig):
    """The ``raw`` data type has no settings."""


class RawDocument:
    """The whole payload as text; the only path is ``$``."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8, or latin-1 when it is not UTF-8."""
        try:
            return self.raw.decode("utf-8")
        except UnicodeDecodeError:
            return self.raw.decode("latin-1")

    def get(self, path: str) -> str | None:
        """``$`` gives the whole text (None when empty); any other path raises ValueError."""
        _check(path)
        return self.text or None

    def get_all(self, path: str) -> list[str]:
        _check(path)
        return [self.text]

    def iterate(self, path: str) -> list[RawDocument]:
        """Raw content has no repeats: ``$`` is the one item."""
        _check(path)
        return [self]

    def to_data(self) -> Any:
        """None: raw content has no structure (hl7-to-json refuses it)."""
        return None


def _check(path: str) -> None:
    if path.strip() != WHOLE:
        raise ValueError(f"invalid raw path {path!r}: the raw data type only knows $ (the whole text)")


class Raw:
    """The ``raw`` data type (implements ``engine.core.contracts.DataType``)."""

    content_type = "application/octet-stream"
    validates = False

    def __init__(self, config: RawConfig | None = None) -> None:
        self.config = config or RawConfig(type="raw")

    def split(self, raw: bytes) -> list[bytes]:
        return [raw]

    def header(self, raw: bytes) -> Header:
        return Header()

    def parse(self, raw: bytes) -> RawDocument:
        return RawDocument(raw)

    def validate(self, raw: bytes) -> list[str]:
        return []

    def respond(self, raw: bytes, outcome: Outcome) -> bytes | None:
        return None


RAW = datatype_spec(
    name="raw",
    summary="Opaque bytes passed through as they are (no parsing, no acknowledgement).",
    config=RawConfig,
    factory="engine.datatypes.raw:Raw",
    path_syntax="$ is the whole payload as text (UTF-8, or latin-1 when it is not valid UTF-8).",
    examples=(Example("Forward files untouched", "type: raw"),),
)
