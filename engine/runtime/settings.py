"""Engine settings (config/junction.yaml): store, admin API, logging, pruning, alert checks."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.core.errors import ConfigError
from engine.core.loader import load_model, load_yaml, resolve_plugin, validate_model
from engine.runtime.alerts import ALERT_CHECK_SECS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiSettings(_Strict):
    listen: str = Field("127.0.0.1:8780", description="Admin API address, host:port.")
    token_file: str = Field("var/api-token", description="Where a generated token is kept (mode 0600).")


class LogSettings(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class PruningSettings(_Strict):
    interval_minutes: float = Field(
        60.0,
        ge=0,
        description="How often the pruner runs over channels with `retention` or `duplicates`; "
        "0: only when asked (`junction prune`).",
    )
    batch: int = Field(
        25, ge=1, le=5000, description="Messages removed per write transaction (intake waits for each one)."
    )
    pause_ms: float = Field(
        20.0, ge=0, le=10_000, description="Pause between two batches, so that intake and delivery keep their pace."
    )


class AlertSettings(_Strict):
    check_secs: float = Field(
        ALERT_CHECK_SECS,
        gt=0,
        le=3600,
        description="How often each channel checks its alert thresholds (alerts.errors, alerts.queue).",
    )


class EngineSettings(_Strict):
    channels_dir: str = Field("channels", description="Folder of channel YAML files.")
    store: dict[str, Any] = Field(default_factory=lambda: {"type": "sqlite"}, description="Message store.")
    api: ApiSettings = Field(default_factory=ApiSettings)  # type: ignore[arg-type]
    log: LogSettings = Field(default_factory=LogSettings)  # type: ignore[arg-type]
    pruning: PruningSettings = Field(default_factory=PruningSettings)  # type: ignore[arg-type]
    alerts: AlertSettings = Field(default_factory=AlertSettings)  # type: ignore[arg-type]
    node_id: str = Field("", description="Name of this engine node in leases; default host-pid.")

    def node(self) -> str:
        return self.node_id or f"{socket.gethostname()}-{os.getpid()}"


# Used when a project has no config/junction.yaml: the same environment overrides apply.
DEFAULT_SETTINGS = """
store: {type: sqlite, path: "${JUNCTION_DB:-var/junction.db}"}
api: {listen: "${JUNCTION_API_LISTEN:-127.0.0.1:8780}"}
log: {level: "${JUNCTION_LOG_LEVEL:-INFO}", format: "${JUNCTION_LOG_FORMAT:-text}"}
"""


def load_settings(path: Path | None) -> EngineSettings:
    if path is None or not path.exists():
        doc = load_yaml("<built-in settings>", text=DEFAULT_SETTINGS)
        settings = validate_model(EngineSettings, doc, doc.data)
        if settings is None or doc.problems:
            raise ConfigError(doc.problems)
        return settings
    settings = load_model(path, EngineSettings)
    doc = load_yaml(path)
    if resolve_plugin(doc, "store", dict(settings.store), ("store",)) is None:  # type: ignore[arg-type]
        raise ConfigError(doc.problems)
    return settings
