"""The embedded default message store: SQLite in WAL mode with group commit.

Layout: ``config`` (the YAML model), ``schema`` (migrations, pragmas), ``writer`` (the
group-commit thread), ``writes`` / ``reads`` (the SQL), ``store`` (``SqliteStore``).
"""

from __future__ import annotations

from engine.core.spec import Example, store_spec
from engine.store.sqlite.config import SqliteStoreConfig
from engine.store.sqlite.store import SqliteStore

__all__ = ["SQLITE_STORE", "SqliteStore", "SqliteStoreConfig"]

SQLITE_STORE = store_spec(
    name="sqlite",
    summary="Embedded message store: one SQLite file (WAL, fsync per commit) with group commit.",
    config=SqliteStoreConfig,
    factory="engine.store.sqlite:SqliteStore",
    examples=(
        Example(title="Default: durable, in var/", yaml="type: sqlite\npath: var/junction.db\n"),
        Example(
            title="Test bench: faster, not durable against power loss",
            yaml="type: sqlite\npath: var/bench.db\nsynchronous: NORMAL\nbatch_max: 1024\n",
        ),
    ),
)
