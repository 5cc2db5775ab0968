"""Write operations, each ``op(conn, ...)`` run by the writer thread inside a savepoint.

They never commit: the writer groups them into one transaction. SQL strings are constants
so that the connection's statement cache prepares each one once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from engine.core.errors import DuplicateMessage
from engine.core.message import InboundMessage, Status
from engine.core.store import DeliveryOutcome, ProcessResult, QueueEntry
from engine.store import StoreError

INSERT_MESSAGE = """INSERT INTO messages
    (id, channel, correlation_id, received_at, control_id, business_key, source_json, status, run, error, updated_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
UPSERT_CONTENT = "INSERT OR REPLACE INTO contents (message_seq, run, stage, content) VALUES (?, ?, ?, ?)"
FIND_MESSAGE = "SELECT seq, channel, run FROM messages WHERE id = ?"
# A late result of an older run (reprocess raced with processing) must not roll the message back.
UPDATE_RESULT = "UPDATE messages SET status = ?, error = ?, run = ?, updated_at = ? WHERE seq = ? AND run <= ?"
INSERT_QUEUE = """INSERT INTO queue
    (message_seq, run, channel, destination, partition, status, content_type, created_at, updated_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"""
INSERT_QUEUE_CONTENT = "INSERT INTO queue_content (queue_id, content) VALUES (?, ?)"
# Walks the partial index in FIFO order; rows are read lazily and the walk stops early.
CLAIM_SCAN = """SELECT q.id, q.next_attempt_at, q.lease_until, q.message_seq, q.run, q.attempts, qc.content,
        q.content_type, m.id, m.correlation_id, m.control_id, m.source_json, m.received_at
    FROM queue q JOIN messages m ON m.seq = q.message_seq LEFT JOIN queue_content qc ON qc.queue_id = q.id
    WHERE q.channel = ? AND q.destination = ? AND q.partition = ? AND q.status = 'QUEUED'
    ORDER BY q.message_seq, q.run"""
LEASE = "UPDATE queue SET lease_owner = ?, lease_until = ? WHERE id = ?"
FINISH = """UPDATE queue SET status = ?, attempts = attempts + 1, last_error = ?, status_code = ?,
        next_attempt_at = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?
    WHERE message_seq = (SELECT seq FROM messages WHERE id = ?) AND run = ? AND destination = ?
    RETURNING message_seq, attempts"""
INSERT_ATTEMPT = """INSERT INTO attempts
    (message_seq, run, destination, attempt, started_at, finished_at, status, error, status_code)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"""
RELEASE = """UPDATE queue SET lease_owner = NULL, lease_until = NULL
    WHERE message_seq = (SELECT seq FROM messages WHERE id = ?) AND run = ? AND destination = ? AND status = 'QUEUED'"""
SUPERSEDE = """UPDATE queue SET status = 'ERROR', last_error = ?, lease_owner = NULL, lease_until = NULL,
        updated_at = ? WHERE message_seq = ? AND run < ? AND status = 'QUEUED'"""
# One encoder for every message (json.dumps with options builds a new one per call).
_SOURCE_JSON = json.JSONEncoder(separators=(",", ":"), default=str)
RAW = "SELECT content FROM contents WHERE message_seq = ? AND run = 0 AND stage = 'raw'"


def add_message(
    conn: sqlite3.Connection,
    msg: InboundMessage,
    status: str,
    error: str,
    dedupe_key: str = "",
    values: dict[str, str] | None = None,
    result: ProcessResult | None = None,
) -> int:
    """Insert the message row and its raw content (run 0, stage 'raw'); return the seq.

    A ``dedupe_key`` is kept in the kv table (``dedupe:<channel>:<key>`` -> message id) in
    the same transaction; a key already there raises ``DuplicateMessage`` before any insert.
    With ``result`` (the message's first pipeline run), the row starts with that run's
    status and its stages and destination rows are inserted too: one transaction does what
    ``add_message`` then ``record_result`` would.
    """
    if dedupe_key:
        kv_key = f"dedupe:{msg.channel}:{dedupe_key}"
        row = conn.execute("SELECT value FROM kv WHERE key = ?", (kv_key,)).fetchone()
        if row is not None:
            raise DuplicateMessage(row[0])
        conn.execute("INSERT INTO kv (key, value) VALUES (?, ?)", (kv_key, msg.id))
    if result is not None:
        if result.message_id != msg.id or result.run != msg.run:
            raise ValueError("the processing result given with a new message must be its own first run")
        status, error = str(result.status), result.error
    source = _SOURCE_JSON.encode(msg.source) if msg.source else "{}"
    row = (msg.id, msg.channel, msg.correlation_id, msg.received_at, msg.control_id, msg.business_key)
    now = time.time()
    cur = conn.execute(INSERT_MESSAGE, (*row, source, status, msg.run, error, now))
    seq = cur.lastrowid
    if seq is None:  # cannot happen: an INSERT into a rowid table always sets it
        raise StoreError("SQLite did not report the new message's sequence number")
    conn.execute(UPSERT_CONTENT, (seq, 0, "raw", msg.raw))
    if values:
        conn.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", list(values.items()))
    if result is not None:
        _result_rows(conn, seq, msg.channel, result, now)
    return seq


def _find(conn: sqlite3.Connection, message_id: str) -> tuple[int, str, int]:
    row = conn.execute(FIND_MESSAGE, (message_id,)).fetchone()
    if row is None:
        raise LookupError("no stored message has this id")
    return row  # type: ignore[no-any-return]


def record_result(conn: sqlite3.Connection, result: ProcessResult) -> None:
    """Store one pipeline run: status first (so queue triggers see the new run), then rows.

    A result for a run older than the message's current one keeps its stages and rows as
    history but leaves the message status alone.
    """
    seq, channel, _run = _find(conn, result.message_id)
    now = time.time()
    conn.execute(UPDATE_RESULT, (str(result.status), result.error, result.run, now, seq, result.run))
    _result_rows(conn, seq, channel, result, now)


def _result_rows(conn: sqlite3.Connection, seq: int, channel: str, result: ProcessResult, now: float) -> None:
    """A run's kept stages, response and destination rows (the message row is done)."""
    stages = [(seq, result.run, name, content) for name, content in result.stages.items()]
    if result.response is not None:
        stages.append((seq, result.run, "response", result.response))
    if stages:
        conn.executemany(UPSERT_CONTENT, stages)
    for r in result.routes:
        row = (seq, result.run, channel, r.destination, r.partition, str(r.status), r.content_type, now, now)
        queue_id = conn.execute(INSERT_QUEUE, row).lastrowid
        if r.content is not None:
            conn.execute(INSERT_QUEUE_CONTENT, (queue_id, r.content))


def record_results(conn: sqlite3.Connection, results: list[ProcessResult]) -> list[Exception | None]:
    """``record_result`` for each result, each in its own savepoint so one failure spares the rest."""
    errors: list[Exception | None] = []
    for result in results:
        conn.execute("SAVEPOINT result")
        try:
            record_result(conn, result)
        except (LookupError, sqlite3.Error) as exc:
            conn.execute("ROLLBACK TO result")
            errors.append(exc)
        else:
            errors.append(None)
        conn.execute("RELEASE result")
    return errors


def claim(
    conn: sqlite3.Connection,
    channel: str,
    destination: str,
    partition: int,
    owner: str,
    limit: int,
    lease_secs: float,
    now: float,
) -> list[QueueEntry]:
    """Lease up to ``limit`` free rows in FIFO order, stopping at a retry that is not due."""
    if limit <= 0:
        return []
    picked: list[tuple[Any, ...]] = []
    cur = conn.execute(CLAIM_SCAN, (channel, destination, partition))
    for row in cur:
        next_at, lease_until = row[1], row[2]
        if next_at is not None and next_at > now:
            break  # FIFO: nothing may overtake a message waiting for its retry
        if lease_until is not None and lease_until > now:
            continue  # held by another worker whose lease has not expired
        picked.append(row)
        if len(picked) >= limit:
            break
    cur.close()
    until = now + lease_secs
    conn.executemany(LEASE, [(owner, until, row[0]) for row in picked])
    return [_entry(channel, destination, partition, row) for row in picked]


def _entry(channel: str, destination: str, partition: int, row: tuple[Any, ...]) -> QueueEntry:
    _id, _next, _lease, seq, run, attempts, content, content_type, message_id, correlation, control, source, at = row
    return QueueEntry(
        message_id=message_id,
        run=run,
        channel=channel,
        destination=destination,
        partition=partition,
        seq=seq,
        attempts=attempts,
        content=content if content is not None else b"",
        content_type=content_type,
        correlation_id=correlation,
        control_id=control,
        source=json.loads(source) if source != "{}" else {},
        received_at=at,
    )


def finish(conn: sqlite3.Connection, outcomes: list[DeliveryOutcome]) -> None:
    """Update each destination row, log the attempt, keep the response when asked."""
    attempts = []
    responses = []
    for o in outcomes:
        retry_at = o.retry_at if o.status == Status.QUEUED else None
        params = (str(o.status), o.error, o.status_code, retry_at, o.finished_at, o.message_id, o.run, o.destination)
        rows = conn.execute(FINISH, params).fetchall()
        if not rows:
            raise LookupError("no destination row for this message, run and destination")
        seq, attempt = rows[0]
        attempts.append(
            (seq, o.run, o.destination, attempt, o.started_at, o.finished_at, str(o.status), o.error, o.status_code)
        )
        if o.keep_response and o.response is not None:
            responses.append((seq, o.run, f"response:{o.destination}", o.response))
    conn.executemany(INSERT_ATTEMPT, attempts)
    if responses:
        conn.executemany(UPSERT_CONTENT, responses)


def release(conn: sqlite3.Connection, entries: list[QueueEntry]) -> None:
    """Clear the leases of claimed rows without counting an attempt."""
    conn.executemany(RELEASE, [(e.message_id, e.run, e.destination) for e in entries])


def reset_leases(conn: sqlite3.Connection) -> int:
    """Release every lease; only QUEUED rows can hold one (finish clears them)."""
    cur = conn.execute(
        "UPDATE queue SET lease_owner = NULL, lease_until = NULL WHERE status = 'QUEUED' AND lease_owner IS NOT NULL"
    )
    return cur.rowcount


def begin_reprocess(conn: sqlite3.Connection, message_id: str) -> InboundMessage | None:
    """Open run N+1 of a message from its raw content; None when the id is unknown."""
    row = conn.execute(
        """SELECT seq, run, channel, correlation_id, received_at, control_id, business_key, source_json
        FROM messages WHERE id = ?""",
        (message_id,),
    ).fetchone()
    if row is None:
        return None
    seq, run, channel, correlation, received_at, control, business_key, source = row
    raw = conn.execute(RAW, (seq,)).fetchone()
    if raw is None:
        raise ValueError("the raw content of this message was pruned; it cannot be reprocessed")
    now = time.time()
    conn.execute(
        "UPDATE messages SET run = ?, status = ?, error = '', updated_at = ? WHERE seq = ?",
        (run + 1, str(Status.RECEIVED), now, seq),
    )
    # Deliveries of earlier runs still waiting are superseded: the new run replaces them.
    conn.execute(SUPERSEDE, (f"superseded by run {run + 1} (reprocessed)", now, seq, run + 1))
    return InboundMessage(
        channel=channel,
        raw=raw[0],
        id=message_id,
        correlation_id=correlation,
        received_at=received_at,
        source=json.loads(source),
        control_id=control,
        business_key=business_key,
        run=run + 1,
        seq=seq,
    )


UNFINISHED = """SELECT 1 FROM messages m WHERE m.seq = ? AND (m.status NOT IN ('TRANSFORMED', 'FILTERED')
    OR EXISTS (SELECT 1 FROM queue q WHERE q.message_seq = m.seq AND q.run = m.run
               AND q.status NOT IN ('SENT', 'FILTERED')))"""


def prune_content(conn: sqlite3.Connection, message_id: str, only_if_finished: bool = False) -> bool:
    """Delete every stored content of a message (stages, responses, queue payloads).

    With ``only_if_finished``, only when the latest run is done: FILTERED, or TRANSFORMED
    with every destination SENT or FILTERED (an ERROR keeps its raw content to reprocess).
    """
    row = conn.execute(FIND_MESSAGE, (message_id,)).fetchone()
    if row is None:
        return False
    if only_if_finished and conn.execute(UNFINISHED, (row[0],)).fetchone() is not None:
        return False
    conn.execute("DELETE FROM contents WHERE message_seq = ?", (row[0],))
    conn.execute("DELETE FROM queue_content WHERE queue_id IN (SELECT id FROM queue WHERE message_seq = ?)", (row[0],))
    return True


def settings(conn: sqlite3.Connection) -> dict[str, Any]:
    """The effective pragmas of the write connection (for status output and tests)."""
    return {
        "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
        "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[conn.execute("PRAGMA synchronous").fetchone()[0]],
        "busy_timeout_ms": conn.execute("PRAGMA busy_timeout").fetchone()[0],
        "schema_version": conn.execute("SELECT max(version) FROM schema_version").fetchone()[0],
    }


def put_value(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Insert or replace one key/value row."""
    conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))


# -- pruning (retention) ----------------------------------------------------------------------
# A message may go when its latest run is done: FILTERED, or TRANSFORMED with every destination
# SENT or FILTERED; with errors allowed, ERROR/EXCEPTION and destinations in ERROR too. A row
# still QUEUED (of any run, leased or not) always keeps it. Ages count from the later of
# receipt and the last processing.
_PRUNABLE = """m.channel = :channel AND m.received_at < :before AND m.updated_at < :before
    AND m.status IN ({statuses})
    AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.message_seq = m.seq
        AND (q.status = 'QUEUED' OR (q.run = m.run AND q.status NOT IN ({finished}))))"""
PRUNABLE = {
    True: _PRUNABLE.format(statuses="'FILTERED', 'TRANSFORMED'", finished="'SENT', 'FILTERED'"),
    False: _PRUNABLE.format(
        statuses="'FILTERED', 'TRANSFORMED', 'ERROR', 'EXCEPTION'", finished="'SENT', 'FILTERED', 'ERROR'"
    ),
}
_STILL_PRUNABLE = {
    keep: f"SELECT 1 FROM messages m WHERE m.seq = :seq AND {cond}"  # noqa: S608 - constant fragments
    for keep, cond in PRUNABLE.items()
}
_DELETE_MESSAGE = (
    "DELETE FROM attempts WHERE message_seq = ?",
    "DELETE FROM queue_content WHERE queue_id IN (SELECT id FROM queue WHERE message_seq = ?)",
    # queue rows before the message row: their trigger still finds the run to count down
    "DELETE FROM queue WHERE message_seq = ?",
    "DELETE FROM contents WHERE message_seq = ?",
    "DELETE FROM messages WHERE seq = ?",
)
_DELETE_CONTENT = (
    "DELETE FROM queue_content WHERE queue_id IN (SELECT id FROM queue WHERE message_seq = ?)",
    "DELETE FROM contents WHERE message_seq = ?",
)


def prune(
    conn: sqlite3.Connection, channel: str, seqs: list[int], before: float, keep_errors: bool, content_only: bool
) -> int:
    """Delete the given messages (or only their contents) that are still prunable; return how many.

    The candidates come from a read outside this transaction, so each is checked again here:
    a message reprocessed or given a new delivery meanwhile is left alone.
    """
    check = _STILL_PRUNABLE[keep_errors]
    statements = _DELETE_CONTENT if content_only else _DELETE_MESSAGE
    done = 0
    for seq in seqs:
        if conn.execute(check, {"seq": seq, "channel": channel, "before": before}).fetchone() is None:
            continue
        for statement in statements:
            conn.execute(statement, (seq,))
        done += 1
    return done


def delete_values(conn: sqlite3.Connection, pairs: list[tuple[str, str]]) -> int:
    """Delete kv rows that still hold exactly the value read (a newer value is kept)."""
    done = 0
    for key, value in pairs:
        done += conn.execute("DELETE FROM kv WHERE key = ? AND value = ?", (key, value)).rowcount
    return done
