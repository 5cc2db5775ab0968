"""SQLite schema, versioned migrations and connection set-up.

Each migration is an ordered tuple of single SQL statements (not a script: trigger bodies
contain semicolons, and ``executescript`` would commit behind our back). All pending steps
run in one ``BEGIN IMMEDIATE`` transaction, so a crash mid-migration leaves the old schema.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Literal

from engine.store import SchemaVersionError, StoreError

# Destination counters only count rows of the message's latest run: every queue trigger
# checks the run against the message row, and a new run moves the old run's rows out.
_COUNT_UP = (
    "INSERT INTO counters (channel, key, n) VALUES ({channel}, {key}, 1)"
    " ON CONFLICT (channel, key) DO UPDATE SET n = n + 1"
)
_COUNT_DOWN = "UPDATE counters SET n = n - 1 WHERE channel = {channel} AND key = {key}"
_OLD_DEST = "'dest:' || OLD.destination || ':' || OLD.status"
_NEW_DEST = "'dest:' || NEW.destination || ':' || NEW.status"
_LATEST_RUN = "(SELECT run FROM messages WHERE seq = {row}.message_seq)"


def _trigger(name: str, event: str, when: str, *body: str) -> str:
    when_sql = f" WHEN {when}" if when else ""
    return f"CREATE TRIGGER {name} AFTER {event}{when_sql} BEGIN " + "".join(f"{s}; " for s in body) + "END"


V1: tuple[str, ...] = (
    """CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        channel TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        received_at REAL NOT NULL,
        control_id TEXT NOT NULL DEFAULT '',
        business_key TEXT NOT NULL DEFAULT '',
        source_json TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL,
        run INTEGER NOT NULL DEFAULT 1,
        error TEXT NOT NULL DEFAULT '',
        updated_at REAL NOT NULL
    )""",
    "CREATE INDEX messages_channel_status ON messages (channel, status, seq)",
    "CREATE INDEX messages_channel_seq ON messages (channel, seq)",
    "CREATE INDEX messages_channel_received ON messages (channel, received_at)",
    "CREATE INDEX messages_control ON messages (control_id)",
    "CREATE INDEX messages_correlation ON messages (correlation_id)",
    # Raw is (run 0, stage 'raw'); a rowid table because contents are often larger than
    # the 1/20 page that WITHOUT ROWID tables handle well.
    """CREATE TABLE contents (
        message_seq INTEGER NOT NULL,
        run INTEGER NOT NULL,
        stage TEXT NOT NULL,
        content BLOB NOT NULL,
        PRIMARY KEY (message_seq, run, stage)
    )""",
    """CREATE TABLE queue (
        id INTEGER PRIMARY KEY,
        message_seq INTEGER NOT NULL,
        run INTEGER NOT NULL,
        channel TEXT NOT NULL,
        destination TEXT NOT NULL,
        partition INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        status_code INTEGER,
        next_attempt_at REAL,
        lease_owner TEXT,
        lease_until REAL,
        content_type TEXT NOT NULL DEFAULT 'application/octet-stream',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (message_seq, run, destination)
    )""",
    # Partial index: only waiting rows, so claims stay fast however much history piles up.
    # Queries must spell `status = 'QUEUED'` literally for SQLite to use it.
    "CREATE INDEX queue_claim ON queue (channel, destination, partition, message_seq, run) WHERE status = 'QUEUED'",
    # The payload to send lives apart from its queue row: claims and outcomes update the row
    # twice per delivery, and SQLite rewrites a whole record on update (measured: about 15%
    # of the store's cost per message with 1 KB payloads when they shared the row).
    "CREATE TABLE queue_content (queue_id INTEGER PRIMARY KEY, content BLOB NOT NULL)",
    """CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        message_seq INTEGER NOT NULL,
        run INTEGER NOT NULL,
        destination TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL,
        status TEXT NOT NULL,
        error TEXT NOT NULL DEFAULT '',
        status_code INTEGER
    )""",
    "CREATE INDEX attempts_message ON attempts (message_seq)",
    "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # Maintained by triggers so that `counters()` is one index range read, not a scan.
    """CREATE TABLE counters (
        channel TEXT NOT NULL,
        key TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (channel, key)
    ) WITHOUT ROWID""",
    _trigger(
        "messages_count_insert",
        "INSERT ON messages",
        "",
        _COUNT_UP.format(channel="NEW.channel", key="NEW.status"),
    ),
    _trigger(
        "messages_count_status",
        "UPDATE OF status ON messages",
        "OLD.status <> NEW.status",
        _COUNT_DOWN.format(channel="OLD.channel", key="OLD.status"),
        _COUNT_UP.format(channel="NEW.channel", key="NEW.status"),
    ),
    _trigger(
        "messages_count_run",
        "UPDATE OF run ON messages",
        "OLD.run <> NEW.run",
        """UPDATE counters SET n = n - (
            SELECT count(*) FROM queue q WHERE q.message_seq = OLD.seq AND q.run = OLD.run
            AND 'dest:' || q.destination || ':' || q.status = counters.key)
        WHERE channel = OLD.channel AND key IN (
            SELECT 'dest:' || destination || ':' || status FROM queue WHERE message_seq = OLD.seq AND run = OLD.run)""",
        """INSERT INTO counters (channel, key, n)
        SELECT NEW.channel, 'dest:' || destination || ':' || status, count(*) FROM queue
        WHERE message_seq = NEW.seq AND run = NEW.run GROUP BY 2
        ON CONFLICT (channel, key) DO UPDATE SET n = n + excluded.n""",
    ),
    _trigger(
        "messages_count_delete",
        "DELETE ON messages",
        "",
        _COUNT_DOWN.format(channel="OLD.channel", key="OLD.status"),
        """UPDATE counters SET n = n - (
            SELECT count(*) FROM queue q WHERE q.message_seq = OLD.seq AND q.run = OLD.run
            AND 'dest:' || q.destination || ':' || q.status = counters.key)
        WHERE channel = OLD.channel AND key IN (
            SELECT 'dest:' || destination || ':' || status FROM queue WHERE message_seq = OLD.seq AND run = OLD.run)""",
    ),
    _trigger(
        "queue_count_insert",
        "INSERT ON queue",
        "NEW.run = " + _LATEST_RUN.format(row="NEW"),
        _COUNT_UP.format(channel="NEW.channel", key=_NEW_DEST),
    ),
    _trigger(
        "queue_count_status",
        "UPDATE OF status ON queue",
        "OLD.status <> NEW.status AND NEW.run = " + _LATEST_RUN.format(row="NEW"),
        _COUNT_DOWN.format(channel="OLD.channel", key=_OLD_DEST),
        _COUNT_UP.format(channel="NEW.channel", key=_NEW_DEST),
    ),
    _trigger(
        "queue_count_delete",
        "DELETE ON queue",
        "OLD.run = " + _LATEST_RUN.format(row="OLD"),
        _COUNT_DOWN.format(channel="OLD.channel", key=_OLD_DEST),
    ),
)

# Append new steps; never edit a released one (databases in the field already ran it).
MIGRATIONS: tuple[tuple[str, ...], ...] = (V1,)
LATEST = len(MIGRATIONS)

Synchronous = Literal["FULL", "NORMAL"]


def connect(
    path: Path, *, busy_timeout_ms: int, synchronous: Synchronous, readonly: bool = False
) -> sqlite3.Connection:
    """Open one connection with Junction's pragmas; transactions are managed explicitly."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=256)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the SQLite database {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA temp_store = MEMORY")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot use {path} as a SQLite database: {exc}") from exc
    return conn


def enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Switch the database file to WAL (persistent); fail if the file system refuses it."""
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot use {path} as a SQLite database: {exc}") from exc
    if str(mode).lower() != "wal":
        raise StoreError(f"{path}: SQLite refused WAL mode (got {mode!r}); put the database on a local disk")


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest applied migration (0 for an empty database)."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if not exists:
        return 0
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Apply the pending migrations in one transaction; return the resulting version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        current = schema_version(conn)
        if current > LATEST:
            raise SchemaVersionError(
                f"{path} has store schema version {current}, but this Junction knows versions up to {LATEST}; "
                "upgrade Junction or point the store at another database file"
            )
        for version in range(current + 1, LATEST + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, time.time()))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return LATEST
