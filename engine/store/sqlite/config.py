"""Configuration of the SQLite message store (``store:`` in ``config/``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engine.core.channel import PluginConfig


class SqliteStoreConfig(PluginConfig):
    """The embedded default store: one SQLite file in WAL mode with group commit."""

    type: str = Field(default="sqlite", description="Store type; `sqlite` for this store.")
    path: str = Field(
        default="var/junction.db", description="Database file, relative to the project root; its folder is created."
    )
    batch_max: int = Field(
        default=512, ge=1, le=100_000, description="Most writes committed together in one transaction (group commit)."
    )
    busy_timeout_ms: int = Field(
        default=5000, ge=0, description="How long to wait for a lock held by another process before failing."
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description=(
            "FULL syncs every commit to disk: an acknowledged message survives power loss. "
            "NORMAL skips that sync: it survives a crash of Junction but NOT power loss or an "
            "operating-system crash, so recently acknowledged messages can be lost."
        ),
    )
