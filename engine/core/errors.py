"""Exception hierarchy shared by every part of Junction."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A position in a configuration file (1-based line and column)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


@dataclass(frozen=True)
class Diagnostic:
    """One configuration problem, printed like compiler output."""

    location: Location
    path: str
    message: str
    hint: str = ""
    severity: str = "error"

    def __str__(self) -> str:
        prefix = f"{self.location}: {self.severity}: "
        where = f"{self.path}: " if self.path else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{prefix}{where}{self.message}{hint}"


class JunctionError(Exception):
    """Base class of every error Junction raises on purpose."""


class ConfigError(JunctionError):
    """A channel, mapping or engine configuration is invalid."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class ParseError(JunctionError):
    """Bytes could not be parsed by a data type.

    ``position`` says where (for example ``segment 4 (FT1), field 10``); the message never
    quotes message content, because it may hold PHI.
    """

    def __init__(self, message: str, position: str = "", code: str = "parse") -> None:
        self.reason = message
        self.position = position
        self.code = code
        text = f"{position}: {message}" if position else message
        super().__init__(text)


class MappingError(JunctionError):
    """A mapping or transform rule failed."""

    def __init__(self, message: str, rule: str = "", field: str = "", severity: str = "error") -> None:
        self.rule = rule
        self.field = field
        self.severity = severity
        super().__init__(message)


class DuplicateMessage(JunctionError):
    """``add_message`` with a ``dedupe_key`` that an earlier committed message already holds."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        super().__init__(f"already stored as message {message_id}")

    def __reduce__(self) -> tuple[type[DuplicateMessage], tuple[str]]:
        return DuplicateMessage, (self.message_id,)  # crosses to and from the store's process writer


class DeliveryError(JunctionError):
    """A destination could not deliver a message."""

    def __init__(self, message: str, *, status_code: int | None = None, response: bytes | None = None) -> None:
        self.status_code = status_code
        self.response = response
        super().__init__(message)


class RetryableError(DeliveryError):
    """Delivery failed in a way that may succeed later (connection refused, 503, timeout)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        response: bytes | None = None,
        retry_after_secs: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, response=response)
        self.retry_after_secs = retry_after_secs


class PermanentError(DeliveryError):
    """Delivery failed in a way that retrying cannot fix (400, AR with a bad message)."""
