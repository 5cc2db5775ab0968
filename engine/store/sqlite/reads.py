"""Read queries, run on reader threads with their own connections (WAL: readers never block the writer)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from engine.core.message import InboundMessage, Status
from engine.core.store import AttemptRecord, DestinationState, MessageDetail, MessageQuery, MessageSummary
from engine.store.sqlite.writes import PRUNABLE  # one definition of "prunable" for both sides

SUMMARY_COLUMNS = (
    "m.seq, m.id, m.channel, m.correlation_id, m.received_at, m.control_id, m.status, m.run, m.error, m.source_json"
)
# Same walk as a claim, so the answer is "when could a claim next return a row".
RETRY_SCAN = """SELECT next_attempt_at, lease_until FROM queue
    WHERE channel = ? AND destination = ? AND partition = ? AND status = 'QUEUED'
    ORDER BY message_seq, run"""
UNPROCESSED = """SELECT m.seq, m.id, m.correlation_id, m.received_at, m.control_id, m.business_key, m.source_json,
        m.run, c.content
    FROM messages m LEFT JOIN contents c ON c.message_seq = m.seq AND c.run = 0 AND c.stage = 'raw'
    WHERE m.channel = ? AND m.status = 'RECEIVED' AND m.seq > ?
    ORDER BY m.seq LIMIT ?"""
# Rows are numbered as they are inserted, and created_at is the insert time: the lowest id
# among the waiting rows is the oldest. min(id) reads the partial index alone (its entries
# carry the id), about 4 times cheaper than min(created_at), which visits every row.
OLDEST_QUEUED = """SELECT created_at FROM queue WHERE id = (
    SELECT min(id) FROM queue WHERE channel = ? AND destination = ? AND status = 'QUEUED')"""
LATEST_DESTINATIONS = """SELECT q.message_seq, q.destination, q.status FROM queue q
    JOIN messages m ON m.seq = q.message_seq AND m.run = q.run
    WHERE q.message_seq IN ({marks}) ORDER BY q.id"""
_IN_CHUNK = 500  # stay far below SQLite's bound-parameter limit


def next_retry_at(conn: sqlite3.Connection, channel: str, destination: str, partition: int) -> float | None:
    """When a claim on the partition could next return a row; None when no row is QUEUED.

    Rows behind a retry that is not due cannot be claimed before it (FIFO), so they do not
    count: answering "now" for them would make an idle worker spin until the head is due.
    A row leased by a live worker counts from its lease expiry.
    """
    now = time.time()
    earliest: float | None = None
    next_at: float | None
    lease_until: float | None
    for next_at, lease_until in conn.execute(RETRY_SCAN, (channel, destination, partition)):
        if next_at is not None and next_at > now:
            return next_at if earliest is None else min(earliest, next_at)
        if lease_until is not None and lease_until > now:
            earliest = lease_until if earliest is None else min(earliest, lease_until)
            continue
        return now if next_at is None else next_at
    return earliest


def oldest_queued(conn: sqlite3.Connection, channel: str, destination: str) -> float | None:
    """created_at of the destination's oldest QUEUED row (every partition); None when none waits."""
    row = conn.execute(OLDEST_QUEUED, (channel, destination)).fetchone()
    return None if row is None else float(row[0])


def unprocessed(conn: sqlite3.Connection, channel: str, limit: int, after_seq: int) -> list[InboundMessage]:
    """RECEIVED messages of a channel in seq order, with their raw content and current run."""
    rows = conn.execute(UNPROCESSED, (channel, after_seq, limit)).fetchall()
    return [
        InboundMessage(
            channel=channel,
            raw=raw if raw is not None else b"",
            id=message_id,
            correlation_id=correlation,
            received_at=received_at,
            source=_source(source),
            control_id=control,
            business_key=business_key,
            run=run,
            seq=seq,
        )
        for seq, message_id, correlation, received_at, control, business_key, source, run, raw in rows
    ]


def _source(text: str) -> dict[str, Any]:
    source: dict[str, Any] = {} if text == "{}" else json.loads(text)
    return source


def _summary(row: tuple[Any, ...]) -> MessageSummary:
    seq, message_id, channel, correlation, received_at, control, status, run, error, source = row
    return MessageSummary(
        seq=seq,
        id=message_id,
        channel=channel,
        correlation_id=correlation,
        received_at=received_at,
        control_id=control,
        status=Status(status),
        run=run,
        error=error,
        source=_source(source),
    )


def search(conn: sqlite3.Connection, query: MessageQuery) -> list[MessageSummary]:
    """Messages matching every given filter, newest (highest seq) first."""
    where, params = _filters(query)
    sql = f"SELECT {SUMMARY_COLUMNS} FROM messages m"  # noqa: S608 - constants; values are bound parameters
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY m.seq DESC LIMIT ?"
    summaries = [_summary(row) for row in conn.execute(sql, (*params, max(query.limit, 0)))]
    _fill_destinations(conn, summaries)
    return summaries


def _filters(query: MessageQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    simple = (
        ("m.channel = ?", query.channel),
        ("m.received_at >= ?", query.since),
        ("m.received_at < ?", query.until),
        ("m.control_id = ?", query.control_id),
        ("m.correlation_id = ?", query.correlation_id),
        ("m.seq < ?", query.before_seq),
    )
    for clause, value in simple:
        if value is not None:
            where.append(clause)
            params.append(value)
    if query.status is not None:
        where.append(
            "(m.status = ? OR EXISTS (SELECT 1 FROM queue q"
            " WHERE q.message_seq = m.seq AND q.run = m.run AND q.status = ?))"
        )
        params += [str(query.status), str(query.status)]
    return where, params


def _fill_destinations(conn: sqlite3.Connection, summaries: list[MessageSummary]) -> None:
    by_seq = {s.seq: s for s in summaries}
    seqs = list(by_seq)
    for start in range(0, len(seqs), _IN_CHUNK):
        chunk = seqs[start : start + _IN_CHUNK]
        sql = LATEST_DESTINATIONS.format(marks=",".join("?" * len(chunk)))
        for seq, destination, status in conn.execute(sql, chunk):
            by_seq[seq].destinations[destination] = Status(status)


def get(conn: sqlite3.Connection, message_id: str) -> MessageDetail | None:
    """One message with every content, destination state and attempt of every run."""
    row = conn.execute(
        f"SELECT {SUMMARY_COLUMNS}, m.business_key FROM messages m WHERE m.id = ?",  # noqa: S608 - a constant
        (message_id,),
    ).fetchone()
    if row is None:
        return None
    summary = _summary(row[:-1])
    _fill_destinations(conn, [summary])
    seq = summary.seq
    contents = {
        (run, stage): content
        for run, stage, content in conn.execute(
            "SELECT run, stage, content FROM contents WHERE message_seq = ? ORDER BY run, stage", (seq,)
        )
    }
    return MessageDetail(
        summary=summary,
        business_key=row[-1],
        contents=contents,
        destinations=_destination_states(conn, seq),
        attempts=_attempts(conn, seq),
    )


def _destination_states(conn: sqlite3.Connection, seq: int) -> list[DestinationState]:
    rows = conn.execute(
        """SELECT destination, run, status, attempts, last_error, created_at, updated_at, next_attempt_at, status_code
        FROM queue WHERE message_seq = ? ORDER BY run, id""",
        (seq,),
    )
    return [
        DestinationState(
            destination=dest,
            run=run,
            status=Status(status),
            attempts=attempts,
            last_error=last_error,
            created_at=created,
            updated_at=updated,
            next_attempt_at=next_at,
            status_code=code,
        )
        for dest, run, status, attempts, last_error, created, updated, next_at, code in rows
    ]


def _attempts(conn: sqlite3.Connection, seq: int) -> list[AttemptRecord]:
    rows = conn.execute(
        """SELECT destination, run, attempt, started_at, finished_at, status, error, status_code
        FROM attempts WHERE message_seq = ? ORDER BY id""",
        (seq,),
    )
    return [
        AttemptRecord(
            destination=dest,
            run=run,
            attempt=attempt,
            started_at=started,
            finished_at=finished,
            status=Status(status),
            error=error,
            status_code=code,
        )
        for dest, run, attempt, started, finished, status, error, code in rows
    ]


def counters(conn: sqlite3.Connection, channel: str) -> dict[str, int]:
    """Every message status (0 when none) plus ``dest:NAME:STATUS`` for the latest runs."""
    counts = {str(status): 0 for status in Status}
    for key, n in conn.execute("SELECT key, n FROM counters WHERE channel = ? ORDER BY key", (channel,)):
        counts[key] = n
    return counts


def get_values(conn: sqlite3.Connection, prefix: str) -> dict[str, str]:
    """Key/value rows whose key starts with ``prefix`` (a range scan on the primary key)."""
    rows = conn.execute(
        "SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key", (prefix, prefix + "\uffff")
    )
    return {key: value for key, value in rows}


_PRUNABLE_SCAN = {
    (keep, content): (
        "SELECT m.received_at, m.seq FROM messages m INDEXED BY messages_channel_received"  # noqa: S608 - constants
        f" WHERE {PRUNABLE[keep]}"
        + (" AND EXISTS (SELECT 1 FROM contents c WHERE c.message_seq = m.seq)" if content else "")
        + " AND (m.received_at > :at OR (m.received_at = :at AND m.seq > :seq))"
        " ORDER BY m.received_at, m.seq LIMIT :limit"
    )
    for keep in (True, False)
    for content in (True, False)
}


def prunable(
    conn: sqlite3.Connection,
    channel: str,
    before: float,
    keep_errors: bool,
    with_content: bool,
    after: tuple[float, int],
    limit: int,
) -> list[tuple[float, int]]:
    """(received_at, seq) of a channel's prunable messages (``writes.PRUNABLE``) after ``after``,
    in receipt order; with ``with_content``, only those that still hold content."""
    params = {"channel": channel, "before": before, "at": after[0], "seq": after[1], "limit": limit}
    return [(float(at), int(seq)) for at, seq in conn.execute(_PRUNABLE_SCAN[keep_errors, with_content], params)]


_VALUES_PAGE = "SELECT key, value FROM kv WHERE key > ? AND key < ? ORDER BY key LIMIT ?"
_ORPHANS_PAGE = """SELECT key, value FROM kv WHERE key > ? AND key < ?
    AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = kv.value) ORDER BY key LIMIT ?"""


def values_page(conn: sqlite3.Connection, prefix: str, after: str, orphaned: bool, limit: int) -> list[tuple[str, str]]:
    """A page of (key, value) rows whose key starts with ``prefix``, in key order after ``after``;
    with ``orphaned``, only those whose value names a message no longer stored."""
    # keys are TEXT: every key with the prefix sorts below prefix + U+10FFFF
    bounds = (max(after, prefix), prefix + "\U0010ffff", limit)
    return [(str(k), str(v)) for k, v in conn.execute(_ORPHANS_PAGE if orphaned else _VALUES_PAGE, bounds)]
