"""The database destination against the real PostgreSQL and MariaDB servers on 127.0.0.1.

Every test uses its own table (``jt_<random>``) and drops it at the end. A server that cannot
be reached fails the test with a clear message: CI runs both servers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from engine.connectors.database import DatabaseDestination, DatabaseDestinationConfig
from engine.core.errors import PermanentError, RetryableError
from engine.core.logs import bind
from engine.core.message import Outbound, SendResult, Status, new_id
from engine.core.store import MessageQuery
from engine.testing.peers import EngineThread, free_port, mllp_exchange, msa

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DSNS = {
    "postgresql": os.environ.get("JUNCTION_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("JUNCTION_TEST_MARIADB_DSN", "mysql://root@127.0.0.1:3306/test"),
}
ENV = "JT_STAGING_DSN"
LOG = bind(logging.getLogger("junction.test.database"), channel="db-test")
SECRET = "DOE^JANE-SECRET"  # a value that must never reach an error text


# --------------------------------------------------------------------------- helpers


class Admin:
    """A plain driver connection for setting up and inspecting a test table (autocommit)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        try:
            if backend == "postgresql":
                self.conn: Any = psycopg.connect(DSNS[backend], autocommit=True, connect_timeout=5)
            else:
                self.conn = pymysql.connect(
                    host="127.0.0.1", port=3306, user="root", password="", database="test", autocommit=True
                )
        except (psycopg.Error, pymysql.MySQLError) as exc:
            pytest.fail(f"{backend} test server at {DSNS[backend]} is not reachable ({exc}); CI provides it")

    def run(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    def rows(self, table: str, order: str) -> list[tuple[Any, ...]]:
        return self.run(f"SELECT * FROM {table} ORDER BY {order}")

    def count(self, table: str) -> int:
        return int(self.run(f"SELECT COUNT(*) FROM {table}")[0][0])


@contextmanager
def staging(backend: str, columns: str) -> Iterator[tuple[Admin, str]]:
    """A fresh table with the given column definitions, dropped afterwards."""
    admin = Admin(backend)
    table = f"jt_{uuid.uuid4().hex[:12]}"
    admin.run(f"CREATE TABLE {table} ({columns})")
    try:
        yield admin, table
    finally:
        admin.run(f"DROP TABLE IF EXISTS {table}")
        admin.conn.close()


def outbound(content: Any, message_id: str | None = None) -> Outbound:
    mid = message_id or new_id()
    body = content if isinstance(content, bytes) else json.dumps(content).encode()
    return Outbound(mid, "db-test", "staging", mid, body, "application/json", control_id="CTRL1")


def config(table: str, **extra: Any) -> DatabaseDestinationConfig:
    data: dict[str, Any] = {
        "type": "database",
        "name": "staging",
        "url_env": ENV,
        "table": table,
        "key": ["message_id", "line_no"],
        "columns": {"message_id": "$message_id", "line_no": "$row_index", "item": "item.value", "qty": "quantity"},
    }
    data.update(extra)
    return DatabaseDestinationConfig.model_validate(data)


def run_with(
    backend: str, cfg: DatabaseDestinationConfig, monkeypatch: pytest.MonkeyPatch, *steps: Callable[..., Any]
) -> list[Any]:
    """Open a destination on ``backend``, run each step (async fn of dest) in order, close it."""
    monkeypatch.setenv(ENV, DSNS[backend])

    async def scenario() -> list[Any]:
        dest = DatabaseDestination(cfg, channel="db-test", base_dir=ROOT, log=LOG)
        assert dest.problem is None
        await dest.open()
        results: list[Any] = []
        try:
            for step in steps:
                try:
                    results.append(await step(dest))
                except (RetryableError, PermanentError) as exc:
                    results.append(exc)
        finally:
            await dest.close()
        return results

    return asyncio.run(scenario())


def usage(item: str, qty: str) -> dict[str, Any]:
    return {"item": {"type": "buyer_item", "value": item}, "quantity": qty, "schema_version": "1.0"}


BACKENDS = pytest.mark.parametrize("backend", ["postgresql", "mysql"])
TABLE_COLUMNS = "message_id VARCHAR(40) NOT NULL, line_no INT NOT NULL, item VARCHAR(40) NOT NULL, qty DECIMAL(10,2), "


# --------------------------------------------------------------------------- behaviour


@BACKENDS
def test_insert_twice_with_the_same_outbound_leaves_one_row_per_object(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with staging(backend, TABLE_COLUMNS + "UNIQUE (message_id, line_no)") as (admin, table):
        item = outbound([usage("SUP-1", "2"), usage("SUP-2", "1.50")])
        first, second = run_with(backend, config(table), monkeypatch, lambda d: d.send(item), lambda d: d.send(item))
        rows = admin.rows(table, "line_no")
    assert isinstance(first, SendResult) and first.detail == "2 rows: 2 written, 0 already present"
    assert isinstance(second, SendResult) and second.detail == "2 rows: 0 written, 2 already present"
    assert [(r[0], r[1], r[2], str(r[3])) for r in rows] == [
        (item.message_id, 0, "SUP-1", "2.00"),
        (item.message_id, 1, "SUP-2", "1.50"),
    ]


@BACKENDS
def test_upsert_updates_the_row_with_the_same_key(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with staging(backend, TABLE_COLUMNS + "UNIQUE (item)") as (admin, table):
        cfg = config(
            table,
            mode="upsert",
            key=["item"],
            columns={"item": "item.value", "qty": "quantity", "message_id": "$message_id", "line_no": "$row_index"},
        )
        one, two = outbound(usage("SUP-9", "1")), outbound(usage("SUP-9", "7"))
        results = run_with(
            backend, cfg, monkeypatch, lambda d: d.send(one), lambda d: d.send(two), lambda d: d.send(two)
        )
        rows = admin.rows(table, "item")
    assert all(isinstance(r, SendResult) for r in results), results
    assert [(r[0], r[2], str(r[3])) for r in rows] == [(two.message_id, "SUP-9", "7.00")]


@BACKENDS
def test_all_rows_of_a_message_are_one_transaction(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = outbound([usage("SUP-1", "1"), usage("SUP-2", "1"), {"quantity": "3", "note": SECRET}, usage("SUP-4", "1")])
    good = outbound([usage("SUP-5", "3")])
    with staging(backend, TABLE_COLUMNS + "UNIQUE (message_id, line_no)") as (admin, table):
        refused, after = run_with(backend, config(table), monkeypatch, lambda d: d.send(bad), lambda d: d.send(good))
        rows = admin.rows(table, "line_no")
    assert isinstance(refused, PermanentError)
    assert "at row 3" in str(refused)
    assert ("SQLSTATE 23502" in str(refused) and "column item" in str(refused)) or "error 1048" in str(refused)
    assert SECRET not in str(refused)
    # No row of the refused message was kept, and the connection still works afterwards.
    assert isinstance(after, SendResult)
    assert [(r[0], r[2]) for r in rows] == [(good.message_id, "SUP-5")]


@BACKENDS
def test_a_conflict_on_another_unique_index_is_permanent(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cols = TABLE_COLUMNS + "UNIQUE (message_id, line_no), UNIQUE (item)"
    with staging(backend, cols) as (admin, table):
        one, two = outbound(usage(SECRET, "1")), outbound(usage(SECRET, "2"))
        first, second = run_with(backend, config(table), monkeypatch, lambda d: d.send(one), lambda d: d.send(two))
        count = admin.count(table)
    assert isinstance(first, SendResult)
    assert isinstance(second, PermanentError)
    assert "SQLSTATE 23505" in str(second) or "error 1062" in str(second)
    assert SECRET not in str(second)
    assert count == 1


@BACKENDS
def test_a_send_after_the_connection_was_killed_reconnects_and_stays_idempotent(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = outbound([usage("SUP-1", "1"), usage("SUP-2", "2")])
    with staging(backend, TABLE_COLUMNS + "UNIQUE (message_id, line_no)") as (admin, table):

        async def kill_sessions(dest: DatabaseDestination) -> int:
            (conn,) = dest._idle  # the pooled connection the first send used
            if backend == "postgresql":
                admin.run("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            else:
                admin.run(f"KILL {int(conn.thread_id())}")
            return 1

        results = run_with(
            backend,
            config(table),
            monkeypatch,
            lambda d: d.send(item),
            kill_sessions,
            lambda d: d.send(item),  # the runtime's retry of a send whose answer was lost
            lambda d: d.send(outbound([usage("SUP-3", "3")])),
        )
        count = admin.count(table)
    assert [r.detail if isinstance(r, SendResult) else r for r in results] == [
        "2 rows: 2 written, 0 already present",
        1,
        "2 rows: 0 written, 2 already present",
        "1 rows: 1 written, 0 already present",
    ]
    assert count == 3


@BACKENDS
def test_a_lock_wait_timeout_is_retryable_and_the_retry_writes_once(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = outbound(usage("SUP-1", "1"))
    with staging(backend, TABLE_COLUMNS + "UNIQUE (message_id, line_no)") as (admin, table):
        blocker = Admin(backend)
        try:
            # Another writer holds the same key in an open transaction: our insert must wait, then give up.
            blocker.run("BEGIN")
            blocker.run(
                f"INSERT INTO {table} (message_id, line_no, item) VALUES (%s, 0, 'OTHER')",
                (item.message_id,),
            )

            async def release(dest: DatabaseDestination) -> str:
                blocker.run("ROLLBACK")
                return "released"

            started = time.monotonic()
            timed_out, _, retried = run_with(
                backend,
                config(table, timeout_secs=1),
                monkeypatch,
                lambda d: d.send(item),
                release,
                lambda d: d.send(item),
            )
            elapsed = time.monotonic() - started
        finally:
            blocker.conn.close()
        rows = admin.rows(table, "line_no")
    assert isinstance(timed_out, RetryableError), timed_out
    # The lock wait limit or the statement time limit, whichever fires first.
    codes = ("SQLSTATE 55P03", "SQLSTATE 57014", "error 1205", "error 1969")
    assert any(code in str(timed_out) for code in codes), timed_out
    assert isinstance(retried, SendResult) and retried.detail == "1 rows: 1 written, 0 already present"
    assert [(r[0], r[2]) for r in rows] == [(item.message_id, "SUP-1")]
    assert elapsed < 10


@BACKENDS
def test_create_table_makes_a_keyed_table_and_specials_are_filled(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = f"jt_{uuid.uuid4().hex[:12]}"
    admin = Admin(backend)
    cfg = config(
        table,
        create_table=True,
        explode="lines",
        key=["idem", "line_no"],
        columns={
            "idem": "$idempotency_key",
            "line_no": "$row_index",
            "po": "po_number",
            "sku": "sku",
            "received": "$received_at",
            "whole": "$object",
        },
    )
    po = {"po_number": "PO-7", "lines": [{"sku": "A"}, {"sku": "B", "po_number": "LINE-LEVEL"}]}
    item = outbound(po)
    try:
        first, second = run_with(backend, cfg, monkeypatch, lambda d: d.send(item), lambda d: d.send(item))
        rows = admin.rows(table, "line_no")
    finally:
        admin.run(f"DROP TABLE IF EXISTS {table}")
        admin.conn.close()
    assert isinstance(first, SendResult) and first.detail.startswith("2 rows: 2 written")
    assert isinstance(second, SendResult) and second.detail.endswith("2 already present")
    assert [(r[0], str(r[1]), r[2], r[3]) for r in rows] == [
        (item.idempotency_key, "0", "PO-7", "A"),  # po_number falls back to the object
        (item.idempotency_key, "1", "LINE-LEVEL", "B"),  # the line's own value comes first
    ]
    assert rows[0][4].startswith(time.strftime("%Y-", time.gmtime()))
    assert json.loads(rows[0][5]) == po


@BACKENDS
def test_a_table_without_a_unique_key_index_is_refused(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with staging(backend, TABLE_COLUMNS.rstrip(", ")) as (admin, table):
        (result,) = run_with(backend, config(table), monkeypatch, lambda d: d.send(outbound(usage("SUP-1", "1"))))
        count = admin.count(table)
    assert isinstance(result, PermanentError)
    assert "unique index" in str(result) and "key columns" in str(result)
    assert count == 0


def test_a_statement_with_named_parameters_runs_once_per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    with staging("postgresql", "k TEXT PRIMARY KEY, item TEXT, qty NUMERIC, note TEXT") as (admin, table):
        cfg = DatabaseDestinationConfig.model_validate(
            {
                "type": "database",
                "name": "staging",
                "url_env": ENV,
                "statement": f"INSERT INTO {table} (k, item, qty, note) "
                "VALUES (:k || ':' || :row, :item, :qty::numeric * 2, 'literal :not_a_param 100%') "
                "ON CONFLICT (k) DO NOTHING",
                "columns": {"k": "$idempotency_key", "row": "$row_index", "item": "item.value", "qty": "quantity"},
            }
        )
        item = outbound([usage("SUP-1", "1.5"), usage("SUP-2", "2")])
        first, second = run_with("postgresql", cfg, monkeypatch, lambda d: d.send(item), lambda d: d.send(item))
        rows = admin.rows(table, "k")
    assert isinstance(first, SendResult) and first.detail == "2 rows: 2 written, 0 already present"
    assert isinstance(second, SendResult) and second.detail == "2 rows: 0 written, 2 already present"
    assert [(r[0], r[1], str(r[2]), r[3]) for r in rows] == [
        (f"{item.idempotency_key}:0", "SUP-1", "3.0", "literal :not_a_param 100%"),
        (f"{item.idempotency_key}:1", "SUP-2", "4", "literal :not_a_param 100%"),
    ]


@BACKENDS
def test_concurrent_sends_share_at_most_one_connection_per_worker(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [outbound(usage(f"SUP-{n}", "1")) for n in range(12)]
    with staging(backend, TABLE_COLUMNS + "UNIQUE (message_id, line_no)") as (admin, table):

        async def burst(dest: DatabaseDestination) -> tuple[int, int]:
            results = await asyncio.gather(*(dest.send(item) for item in items))
            return sum(r.detail.endswith("1 written, 0 already present") for r in results), len(dest._idle)

        ((written, pooled),) = run_with(backend, config(table, threads=3), monkeypatch, burst)
        count = admin.count(table)
    assert written == 12 and count == 12
    assert 1 <= pooled <= 3


@BACKENDS
def test_content_that_is_not_json_objects_is_permanent(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with staging(backend, TABLE_COLUMNS + "UNIQUE (message_id, line_no)") as (admin, table):
        results = run_with(
            backend,
            config(table),
            monkeypatch,
            lambda d: d.send(outbound(b"MSH|^~\\&|" + SECRET.encode())),
            lambda d: d.send(outbound([usage("SUP-1", "1"), SECRET])),
            lambda d: d.send(outbound([])),
        )
        count = admin.count(table)
    not_json, not_object, empty = results
    assert isinstance(not_json, PermanentError) and "not JSON" in str(not_json)
    assert isinstance(not_object, PermanentError) and "item 1 of the content is a string" in str(not_object)
    assert SECRET not in str(not_json) + str(not_object)
    assert isinstance(empty, SendResult) and empty.detail.startswith("no rows")
    assert count == 0


@BACKENDS
def test_an_unreachable_server_is_retryable_without_quoting_the_dsn(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    scheme = "postgresql" if backend == "postgresql" else "mysql"
    monkeypatch.setenv(ENV, f"{scheme}://junction:{SECRET}@127.0.0.1:{port}/test")

    async def scenario() -> BaseException:
        dest = DatabaseDestination(config("t", timeout_secs=2), channel="db-test", base_dir=ROOT, log=LOG)
        await dest.open()
        try:
            await dest.send(outbound(usage("SUP-1", "1")))
        except RetryableError as exc:
            return exc
        finally:
            await dest.close()
        raise AssertionError("the send should have failed")

    error = asyncio.run(scenario())
    assert f"127.0.0.1:{port}" in str(error)
    assert SECRET not in str(error) and "junction" not in str(error)


# --------------------------------------------------------------------------- end to end

CHANNEL = """
    name: usage-to-staging
    source: {type: mllp, listen: "127.0.0.1:0", ack_mode: after_processing}
    pipeline:
      datatype: hl7v2
      transform: {type: mapping, file: mappings/dft-to-supply-usage.yaml}
    destinations:
      - type: database
        name: erp-staging
        url_env: JT_E2E_DSN
        table: TABLE
        mode: upsert
        key: [usage_id]
        columns:
          usage_id: usage_id
          message_id: $message_id
          item: item.value
          quantity: quantity
          cost_centre: cost_centre
          payload: $object
"""


def dft(control_id: str) -> bytes:
    return (
        f"MSH|^~\\&|OR|GH|JUNCTION|ERP|20261122101500||DFT^P03|{control_id}|P|2.5\r"
        "PID|1||MRN77^^^GH^MR||TESTPATIENT^EPSILON\r"
        "PV1|1|I|OR^05^^GH||||||||||||||||ENC77\r"
        "FT1|1|||20261122101000|20261122101500|CG|SUP-100234|||2|||ORSURG\r"
        "FT1|2|||20261122101000|20261122101500|CG|SUP-100234|||1|||ORSURG\r"
    ).encode()


def test_a_channel_delivers_mapped_usage_into_a_postgresql_table(
    make_project: Callable[[dict[str, str]], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cols = "usage_id TEXT PRIMARY KEY, message_id TEXT, item TEXT, quantity NUMERIC, cost_centre TEXT, payload JSONB"
    with staging("postgresql", cols) as (admin, table):
        project = make_project({"usage-to-staging": CHANNEL.replace("TABLE", table)})
        shutil.copytree(ROOT / "mappings", project / "mappings")
        monkeypatch.setenv("JT_E2E_DSN", DSNS["postgresql"])
        with EngineThread(project) as running:
            _, port = running.address("usage-to-staging")
            with closing(socket.create_connection(("127.0.0.1", port), timeout=10)) as sock:
                ack = msa(mllp_exchange(sock, dft("E2E1")))
                again = msa(mllp_exchange(sock, dft("E2E1")))  # the sender resends: same usage ids
            deadline = time.monotonic() + 15
            while admin.count(table) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            store = running.engine.store
            deadline = time.monotonic() + 15
            sent: list[Any] = []
            while len(sent) < 2 and time.monotonic() < deadline:
                sent = running.run(store.search(MessageQuery(channel="usage-to-staging", status=Status.SENT)))
                time.sleep(0.05)
        rows = admin.rows(table, "usage_id")
    assert ack[0] == "AA" and again[0] == "AA"
    assert len(sent) == 2
    assert [(r[0], r[2], str(r[3]), r[4]) for r in rows] == [
        ("E2E1-1", "SUP-100234", "2", "CC-4410"),
        ("E2E1-2", "SUP-100234", "1", "CC-4410"),
    ]
    assert rows[0][1] in {m.id for m in sent}
    assert rows[0][5]["item"] == {"type": "buyer_item", "value": "SUP-100234"}
    assert "TESTPATIENT" not in json.dumps(rows[0][5])
