"""Database destination: write canonical JSON into ERP staging tables (PostgreSQL, MariaDB/MySQL).

Each message is one transaction: its content (one JSON object, or a list of objects) becomes
one row per object (or per item of ``explode``), and either every row is written or none.
Retries are idempotent through a unique ``key``: ``insert`` counts a row whose key is
already present as done, ``upsert`` updates it. The drivers (psycopg 3, PyMySQL) are used
directly, imported in ``open()``, and run in worker threads so the event loop never blocks.

Errors never quote values: a failed statement names the SQLSTATE or MariaDB error code, the
row number and, when the server says, the column or constraint.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import Field, field_validator, model_validator

from engine.core.channel import DestinationConfig
from engine.core.errors import DeliveryError, PermanentError, RetryableError
from engine.core.message import Outbound, SendResult
from engine.core.spec import Example, destination_spec

__all__ = [
    "DATABASE_DESTINATION",
    "DatabaseDestination",
    "DatabaseDestinationConfig",
    "compile_statement",
    "load_objects",
    "resolve",
]

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SPECIALS = frozenset(
    {
        "$message_id",
        "$idempotency_key",
        "$correlation_id",
        "$received_at",
        "$sent_at",
        "$channel",
        "$destination",
        "$control_id",
        "$row_index",
        "$object",
    }
)
_STEP = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")
# Statement tokens: quoted text and casts pass through; :name becomes a driver placeholder.
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|::|:([A-Za-z_][A-Za-z0-9_]*)|%")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# --------------------------------------------------------------------------- content


def load_objects(content: bytes, *, exact: bool = True) -> tuple[list[dict[str, Any]], bool]:
    """The JSON objects of a message and whether the content was a list.

    ``exact`` reads JSON numbers with a fraction as ``Decimal`` (database parameters keep
    their precision); without it they are floats, which serialise back to JSON numbers.

    Raises ``PermanentError`` (no content quoted) when the content is not JSON or holds
    something other than objects.

    >>> load_objects(b'{"a": 1}')
    ([{'a': 1}], False)
    >>> load_objects(b'[{"a": 1}, {"a": 2}]')[1]
    True
    """
    try:
        # Decode first: json.loads would guess UTF-16/32 from the bytes; JSON on the wire is UTF-8.
        data = json.loads(content.decode("utf-8-sig"), parse_float=Decimal if exact else float)
    except UnicodeDecodeError:
        raise PermanentError("the content is not UTF-8 text; this destination needs JSON objects") from None
    except json.JSONDecodeError as exc:
        raise PermanentError(f"the content is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if isinstance(data, dict):
        return [data], False
    if isinstance(data, list):
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                raise PermanentError(f"item {index} of the content is {_json_kind(item)}, expected a JSON object")
        return data, True
    raise PermanentError(f"the content is {_json_kind(data)}, expected a JSON object or a list of objects")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def check_path(path: str) -> str:
    """Validate a content path (``key.key[n].key`` or ``$``); return it unchanged."""
    if path == "$" or path in SPECIALS:
        return path
    if path.startswith("$"):
        raise ValueError(f"unknown special value {path!r}; use one of {', '.join(sorted(SPECIALS))} or a JSON path")
    for part in path.split("."):
        match = _STEP.fullmatch(part)
        if not match:
            raise ValueError(f"path {path!r} is not key.key[n].key (keys separated by dots, [n] counted from 0)")
    return path


_MISSING = object()


def resolve(data: Any, path: str) -> Any:
    """The value at ``path`` in ``data``; ``_MISSING`` when absent.

    >>> resolve({"item": {"ids": [{"value": "A1"}]}}, "item.ids[0].value")
    'A1'
    """
    current = data
    for part in path.split("."):
        match = _STEP.fullmatch(part)
        if match is None or not isinstance(current, dict) or match.group(1) not in current:
            return _MISSING
        current = current[match.group(1)]
        for index in _INDEX.findall(match.group(2)):
            if not isinstance(current, list) or int(index) >= len(current):
                return _MISSING
            current = current[int(index)]
    return current


def to_param(value: Any) -> Any:
    """A driver parameter: scalars as they are, objects and lists as JSON text, absent as NULL."""
    if value is _MISSING:
        return None
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_number)
    return value


def _json_number(value: Any) -> Any:
    """JSON numbers read as Decimal go back out as numbers (canonical amounts are strings anyway)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def id_time(message_id: str) -> datetime | None:
    """When a message was received, read from the time part of its ULID-layout id (UTC).

    >>> id_time("01HRZ0000000000000000000000").year
    2024
    """
    value = 0
    for char in message_id[:10].upper():
        digit = _CROCKFORD.find(char)
        if digit < 0:
            return None
        value = value * 32 + digit
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def compile_statement(statement: str) -> tuple[str, list[str]]:
    """Turn ``:name`` placeholders into the drivers' ``%(name)s`` form; return the names used.

    Quoted text, quoted identifiers and PostgreSQL ``::`` casts are left alone; a literal
    ``%`` (also inside quotes) is doubled as both drivers require.

    >>> compile_statement("INSERT INTO t (a, b) VALUES (:a, ':b 5%'::text)")
    ("INSERT INTO t (a, b) VALUES (%(a)s, ':b 5%%'::text)", ['a'])
    """
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if match.group(1):
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"%({match.group(1)})s"
        return text.replace("%", "%%")  # both drivers read % as the start of a placeholder

    return _TOKEN.sub(replace, statement), names


# --------------------------------------------------------------------------- config


class DatabaseDestinationConfig(DestinationConfig):
    """Write each message's JSON objects as rows of a staging table, one transaction per message."""

    url_env: str = Field(
        description="Name of the environment variable holding the DSN, e.g. postgresql://user@host:5432/db or "
        "mysql://user@host:3306/db (the password belongs in the variable, never in the channel file).",
        examples=["ERP_STAGING_DSN"],
    )
    table: str | None = Field(None, description="Target table, `name` or `schema.name` (letters, digits, underscores).")
    mode: Literal["insert", "upsert"] = Field(
        "insert",
        description="insert: a row whose key exists already counts as written (a retry); upsert: update it.",
    )
    key: list[str] = Field(
        default_factory=list,
        description="Columns of the table's unique key that make retries idempotent (needed with table).",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Column (or statement parameter) -> JSON path in the object (key.key[n].key, $ for the whole "
        "object as JSON) or a special: $message_id, $idempotency_key, $correlation_id, $received_at, $sent_at, "
        "$channel, $destination, $control_id, $row_index, $object.",
    )
    explode: str | None = Field(
        None,
        description="Path of a list inside each object: one row per item; paths read the item first, then the object.",
    )
    statement: str | None = Field(
        None,
        description="Instead of table: one SQL statement run per row with :name parameters taken from columns "
        "(values are always sent as parameters); make it idempotent yourself (ON CONFLICT / ON DUPLICATE KEY).",
    )
    create_table: bool = Field(
        False, description="Create the table (text columns, unique key) when it does not exist; for tests and demos."
    )
    timeout_secs: float = Field(
        30.0, gt=0, le=3600, description="Limit for connecting and for each statement (lock waits included)."
    )

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not ENV_NAME.match(value):
            raise ValueError("url_env names an environment variable (letters, digits, underscores), not a DSN")
        return value

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str | None) -> str | None:
        if value is not None:
            parts = value.split(".")
            if len(parts) > 2 or not all(IDENTIFIER.match(p) for p in parts):
                raise ValueError("table must be name or schema.name of letters, digits and underscores")
        return value

    @field_validator("key")
    @classmethod
    def _key_names(cls, value: list[str]) -> list[str]:
        for name in value:
            _check_identifier(name, "key column")
        if len(set(value)) != len(value):
            raise ValueError("key names a column twice")
        return value

    @field_validator("columns")
    @classmethod
    def _column_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            _check_identifier(name, "column")
            check_path(path)
        return value

    @field_validator("explode")
    @classmethod
    def _explode_path(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("$") or not value):
            raise ValueError("explode is a JSON path to a list inside each object")
        return None if value is None else check_path(value)

    @model_validator(mode="after")
    def _consistent(self) -> DatabaseDestinationConfig:
        if (self.table is None) == (self.statement is None):
            raise ValueError("give exactly one of table or statement")
        if self.statement is not None:
            self._check_statement(self.statement)
            return self
        if not self.columns:
            raise ValueError("columns is empty: map at least one column to a JSON path")
        if not self.key:
            raise ValueError("key is required with table: a unique key keeps retried deliveries from duplicating rows")
        missing = [name for name in self.key if name not in self.columns]
        if missing:
            raise ValueError(f"key column(s) {', '.join(missing)} are not in columns")
        return self

    def _check_statement(self, statement: str) -> None:
        if self.key or self.mode != "insert" or self.create_table:
            raise ValueError("key, mode and create_table apply to table, not to statement")
        _, names = compile_statement(statement)
        missing = [name for name in names if name not in self.columns]
        if missing:
            raise ValueError(f"statement uses :{missing[0]} but columns has no entry {missing[0]!r}")
        unused = [name for name in self.columns if name not in names]
        if unused:
            raise ValueError(f"columns entry {unused[0]!r} is not used in the statement (:{unused[0]})")


def _check_identifier(name: str, what: str) -> None:
    if not IDENTIFIER.match(name):
        raise ValueError(f"{what} {name!r} must be letters, digits and underscores (at most 63, not starting a digit)")


# --------------------------------------------------------------------------- dialects


@dataclass(frozen=True)
class Dsn:
    """A parsed DSN; ``text`` keeps the original for libpq (never logged)."""

    dialect: Literal["postgresql", "mysql"]
    text: str
    host: str
    port: int
    user: str
    password: str
    database: str
    options: dict[str, str]

    @property
    def where(self) -> str:
        """host:port only: user names and passwords stay out of messages."""
        return f"{self.host}:{self.port}"


def parse_dsn(text: str) -> Dsn | str:
    """The parsed DSN, or a sentence saying why it cannot be used (without quoting it)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return "the DSN is not a valid URL (check the port and special characters in the password)"
    scheme = parts.scheme.lower()
    if scheme in ("postgresql", "postgres"):
        dialect: Literal["postgresql", "mysql"] = "postgresql"
        default_port = 5432
    elif scheme in ("mysql", "mariadb"):
        dialect, default_port = "mysql", 3306
    else:
        return "the DSN must start with postgresql:// or mysql:// (mariadb:// also works)"
    database = unquote(parts.path.lstrip("/"))
    if not database:
        return "the DSN names no database (add /dbname after host:port)"
    return Dsn(
        dialect=dialect,
        text=text.strip(),
        host=parts.hostname or "localhost",
        port=port or default_port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=database,
        options=dict(parse_qsl(parts.query)),
    )


class Dialect(Protocol):
    """What differs between PostgreSQL and MariaDB."""

    name: str

    def connect(self, dsn: Dsn, timeout_secs: float) -> Any: ...

    def quote_table(self, table: str) -> str: ...

    def quote(self, name: str) -> str: ...

    def row_sql(self, config: DatabaseDestinationConfig, table: str) -> str: ...

    def create_sql(self, config: DatabaseDestinationConfig, table: str) -> str: ...

    def classify(self, exc: Exception, row: int | None) -> DeliveryError | None: ...

    def is_key_conflict(self, exc: Exception, key_indexes: frozenset[str]) -> bool: ...

    def key_indexes(self, conn: Any, config: DatabaseDestinationConfig) -> frozenset[str]: ...

    def connection_lost(self, exc: Exception) -> bool: ...


def _where_row(row: int | None) -> str:
    return f" at row {row + 1}" if row is not None else ""


class Postgres:
    """psycopg 3; idempotent writes with INSERT ... ON CONFLICT (key)."""

    name = "PostgreSQL"
    # SQLSTATE classes and codes a later attempt can get past.
    RETRYABLE_CLASSES = ("08", "40", "53", "57", "58", "HV")
    RETRYABLE_CODES = frozenset({"55P03", "55006", "57014"})

    def connect(self, dsn: Dsn, timeout_secs: float) -> Any:
        import psycopg

        millis = int(timeout_secs * 1000)
        return psycopg.connect(
            dsn.text,
            connect_timeout=max(1, round(timeout_secs)),
            options=f"-c statement_timeout={millis} -c lock_timeout={millis}",
            autocommit=False,
        )

    def quote(self, name: str) -> str:
        from psycopg import sql

        return sql.Identifier(name).as_string(None)

    def quote_table(self, table: str) -> str:
        return ".".join(self.quote(part) for part in table.split("."))

    def row_sql(self, config: DatabaseDestinationConfig, table: str) -> str:
        names = list(config.columns)
        cols = ", ".join(self.quote(n) for n in names)
        values = ", ".join(f"%({n})s" for n in names)
        conflict = ", ".join(self.quote(n) for n in config.key)
        updates = [n for n in names if n not in config.key]
        if config.mode == "upsert" and updates:
            sets = ", ".join(f"{self.quote(n)} = EXCLUDED.{self.quote(n)}" for n in updates)
            action = f"DO UPDATE SET {sets}"
        else:
            action = "DO NOTHING"
        return f"INSERT INTO {table} ({cols}) VALUES ({values}) ON CONFLICT ({conflict}) {action}"  # noqa: S608

    def create_sql(self, config: DatabaseDestinationConfig, table: str) -> str:
        cols = ", ".join(f"{self.quote(n)} TEXT" for n in config.columns)
        key = ", ".join(self.quote(n) for n in config.key)
        return f"CREATE TABLE IF NOT EXISTS {table} ({cols}, UNIQUE ({key}))"

    def classify(self, exc: Exception, row: int | None) -> DeliveryError | None:
        import psycopg

        if not isinstance(exc, psycopg.Error):
            return None
        state = exc.sqlstate or ""
        if not state and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            # No SQLSTATE: the connection failed or broke before the server answered.
            return RetryableError(f"PostgreSQL connection failed{_where_row(row)} ({type(exc).__name__})")
        if not state:
            return PermanentError(
                f"the statement could not be sent to PostgreSQL{_where_row(row)} ({type(exc).__name__})"
            )
        what = f"SQLSTATE {state} ({type(exc).__name__})"
        diag = exc.diag
        if diag.column_name:
            what += f", column {diag.column_name}"
        if diag.constraint_name:
            what += f", constraint {diag.constraint_name}"
        if state == "42P10":
            return PermanentError(
                f"PostgreSQL has no unique index or constraint on exactly the key columns{_where_row(row)}: {what}; "
                "create one so that retries stay idempotent"
            )
        if state[:2] in self.RETRYABLE_CLASSES or state in self.RETRYABLE_CODES:
            return RetryableError(f"PostgreSQL could not complete the transaction{_where_row(row)}: {what}")
        return PermanentError(f"PostgreSQL refused the statement{_where_row(row)}: {what}")

    def is_key_conflict(self, exc: Exception, key_indexes: frozenset[str]) -> bool:
        return False  # ON CONFLICT (key) already absorbs conflicts on the key

    def key_indexes(self, conn: Any, config: DatabaseDestinationConfig) -> frozenset[str]:
        return frozenset()

    def connection_lost(self, exc: Exception) -> bool:
        import psycopg

        if isinstance(exc, psycopg.Error):
            state = exc.sqlstate or ""
            if not state:
                return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
            return state.startswith("08") or state in ("57P01", "57P02", "57P03")
        return isinstance(exc, OSError)


# MariaDB / MySQL error codes that a later attempt can get past: lock wait timeout,
# deadlock, too many connections, server shutdown, lost or refused connections,
# statement timeout (MariaDB 1969, MySQL 3024), read-only during failover.
MYSQL_RETRYABLE = frozenset({1040, 1053, 1077, 1205, 1213, 1290, 1836, 1927, 1969, 2002, 2003, 2006, 2013, 2055, 3024})
_DUPLICATE_KEY_NAME = re.compile(r"for key '([^']*)'\s*$")


class MariaDb:
    """PyMySQL; idempotent inserts by recognising a duplicate on the key's unique index."""

    name = "MariaDB"

    def connect(self, dsn: Dsn, timeout_secs: float) -> Any:
        import pymysql

        conn = pymysql.connect(
            host=dsn.host,
            port=dsn.port,
            user=dsn.user or None,
            password=dsn.password,
            database=dsn.database,
            charset=dsn.options.get("charset", "utf8mb4"),
            connect_timeout=max(1, round(timeout_secs)),
            read_timeout=timeout_secs + 5,
            write_timeout=timeout_secs + 5,
            autocommit=False,
        )
        with conn.cursor() as cur:
            seconds = max(1, round(timeout_secs))
            cur.execute(f"SET SESSION innodb_lock_wait_timeout = {seconds}")
            # sql_mode strict: a missing NOT NULL value is an error, not a silent default.
            cur.execute("SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_ALL_TABLES')")
            if "mariadb" in conn.get_server_info().lower():
                cur.execute(f"SET SESSION max_statement_time = {seconds}")  # MariaDB only (MySQL: SELECT only)
        return conn

    def quote(self, name: str) -> str:
        if not IDENTIFIER.match(name):  # names are validated in the config; this guards direct use
            raise ValueError("invalid identifier")
        return f"`{name}`"

    def quote_table(self, table: str) -> str:
        return ".".join(self.quote(part) for part in table.split("."))

    def row_sql(self, config: DatabaseDestinationConfig, table: str) -> str:
        names = list(config.columns)
        cols = ", ".join(self.quote(n) for n in names)
        values = ", ".join(f"%({n})s" for n in names)
        sql = f"INSERT INTO {table} ({cols}) VALUES ({values})"  # noqa: S608
        updates = [n for n in names if n not in config.key]
        if config.mode == "upsert" and updates:
            # VALUES(col) is the row that conflicted; MariaDB keeps supporting it.
            sql += " ON DUPLICATE KEY UPDATE " + ", ".join(
                f"{self.quote(n)} = VALUES({self.quote(n)})" for n in updates
            )
        return sql

    def create_sql(self, config: DatabaseDestinationConfig, table: str) -> str:
        # Unique indexes need a bounded length: key columns are VARCHAR(255), the rest TEXT.
        cols = ", ".join(f"{self.quote(n)} {'VARCHAR(255)' if n in config.key else 'TEXT'}" for n in config.columns)
        key = ", ".join(self.quote(n) for n in config.key)
        return f"CREATE TABLE IF NOT EXISTS {table} ({cols}, UNIQUE KEY junction_key ({key})) CHARACTER SET utf8mb4"

    def classify(self, exc: Exception, row: int | None) -> DeliveryError | None:
        import pymysql

        if not isinstance(exc, pymysql.MySQLError):
            return None
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        if isinstance(exc, pymysql.err.InterfaceError) or code in MYSQL_RETRYABLE:
            return RetryableError(f"MariaDB could not complete the transaction{_where_row(row)}: error {code}")
        return PermanentError(f"MariaDB refused the statement{_where_row(row)}: error {code} ({type(exc).__name__})")

    def is_key_conflict(self, exc: Exception, key_indexes: frozenset[str]) -> bool:
        import pymysql

        if not isinstance(exc, pymysql.err.IntegrityError) or not exc.args or exc.args[0] != 1062:
            return False
        # The message ends with the index name (MySQL 8 prefixes the table): compare names only.
        match = _DUPLICATE_KEY_NAME.search(str(exc.args[1]) if len(exc.args) > 1 else "")
        return match is not None and match.group(1).rsplit(".", 1)[-1] in key_indexes

    def key_indexes(self, conn: Any, config: DatabaseDestinationConfig) -> frozenset[str]:
        assert config.table is not None
        schema, _, table = config.table.rpartition(".")
        with conn.cursor() as cur:
            cur.execute(
                "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
                "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s AND NON_UNIQUE = 0",
                (schema or None, table),
            )
            found: dict[str, set[str]] = {}
            for index_name, column in cur.fetchall():
                found.setdefault(index_name, set()).add(column.lower())
        conn.commit()
        wanted = {name.lower() for name in config.key}
        return frozenset(name for name, cols in found.items() if cols == wanted)

    def connection_lost(self, exc: Exception) -> bool:
        import pymysql

        if isinstance(exc, pymysql.MySQLError):
            code = exc.args[0] if exc.args else 0
            return isinstance(exc, pymysql.err.InterfaceError) or code in (2006, 2013, 2055, 1927)
        return isinstance(exc, OSError)


DIALECTS: dict[str, Dialect] = {"postgresql": Postgres(), "mysql": MariaDb()}


# --------------------------------------------------------------------------- destination


@dataclass
class Written:
    """What one message's transaction did."""

    rows: int = 0
    written: int = 0
    present: int = 0


class DatabaseDestination:
    """Writes each message's rows in one transaction; a small pool holds one connection per worker.

    dest = DatabaseDestination(config, channel="usage-in", base_dir=root, log=log)
    await dest.open()
    result = await dest.send(outbound)  # result.detail: "2 rows: 2 written, 0 already present"
    await dest.close()
    """

    def __init__(
        self,
        config: DatabaseDestinationConfig,
        *,
        channel: str,
        base_dir: Path,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.config = config
        self.channel = channel
        self._log = log
        self.problem: str | None = None
        self._dsn: Dsn | None = None
        raw = os.environ.get(config.url_env, "")
        if not raw.strip():
            self.problem = f"environment variable {config.url_env} is not set; it must hold the database DSN"
        else:
            parsed = parse_dsn(raw)
            if isinstance(parsed, str):
                self.problem = f"{parsed} (environment variable {config.url_env})"
            else:
                self._dsn = parsed
        self._dialect: Dialect | None = DIALECTS[self._dsn.dialect] if self._dsn else None
        self._idle: list[Any] = []
        self._slots = asyncio.Semaphore(config.threads)
        self._sql = ""
        self._key_indexes: frozenset[str] | None = None
        self._prepared = False
        self._closed = False

    @property
    def where(self) -> str:
        return self._dsn.where if self._dsn else "the database"

    async def open(self) -> None:
        """Import the driver and build the statement; connections open on first use."""
        if self.problem or self._dialect is None:
            return
        try:
            await asyncio.to_thread(self._build_sql)
        except ImportError as exc:
            self.problem = f"the {self._dialect.name} driver is not installed ({exc.name})"

    def _build_sql(self) -> None:
        assert self._dialect is not None
        if self.config.statement is not None:
            self._sql = compile_statement(self.config.statement)[0]
        else:
            assert self.config.table is not None
            self._sql = self._dialect.row_sql(self.config, self._dialect.quote_table(self.config.table))

    async def close(self) -> None:
        """Close idle connections; a connection still in use is closed when its send returns."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await asyncio.to_thread(_close_quietly, conn)

    async def send(self, item: Outbound) -> SendResult:
        """Write ``item``'s rows in one transaction; raise ``RetryableError`` or ``PermanentError``."""
        if self.problem:
            raise RetryableError(self.problem)
        if not self._sql:
            raise RetryableError("the database destination is not open")
        rows = self.rows(item)
        if not rows:
            return SendResult(detail="no rows (the content holds no objects)")
        started = time.monotonic()
        async with self._slots:
            done = await self._run(rows)
        self._log.debug(
            "Database rows written.",
            extra={
                "destination": self.config.name,
                "message_id": item.message_id,
                "rows": done.rows,
                "written": done.written,
                "already_present": done.present,
                "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return SendResult(detail=f"{done.rows} rows: {done.written} written, {done.present} already present")

    def rows(self, item: Outbound) -> list[dict[str, Any]]:
        """The parameter dicts of ``item``: one per object, or per item of ``explode``."""
        objects, _ = load_objects(item.content)
        rows: list[dict[str, Any]] = []
        for position, obj in enumerate(objects):
            for scope in self._scopes(obj, position):
                rows.append(self._row(item, scope, obj, len(rows)))
        return rows

    def _scopes(self, obj: dict[str, Any], position: int) -> list[Any]:
        if self.config.explode is None:
            return [obj]
        items = resolve(obj, self.config.explode)
        if items is _MISSING:
            return []
        if not isinstance(items, list):
            raise PermanentError(f"object {position}: explode path {self.config.explode} is not a list")
        return items

    def _row(self, item: Outbound, scope: Any, obj: dict[str, Any], index: int) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for column, path in self.config.columns.items():
            if path.startswith("$"):
                row[column] = self._special(item, path, obj, index)
                continue
            value = resolve(scope, path)
            if value is _MISSING and scope is not obj:
                value = resolve(obj, path)
            row[column] = to_param(value)
        return row

    def _special(self, item: Outbound, path: str, obj: dict[str, Any], index: int) -> Any:
        values: dict[str, Any] = {
            "$message_id": item.message_id,
            "$idempotency_key": item.idempotency_key,
            "$correlation_id": item.correlation_id,
            "$channel": item.channel,
            "$destination": item.destination,
            "$control_id": item.control_id or None,
            "$row_index": index,
        }
        if path in values:
            return values[path]
        if path == "$received_at":
            return id_time(item.message_id)
        if path == "$sent_at":
            return datetime.now(tz=UTC)
        return to_param(obj)  # $ and $object: the whole object as JSON text

    async def _run(self, rows: list[dict[str, Any]]) -> Written:
        """Run the transaction on a pooled connection; retry once on a fresh one if a reused one broke."""
        assert self._dialect is not None
        for fresh_only in (False, True):
            conn, reused = await self._acquire(fresh_only)
            task = asyncio.ensure_future(asyncio.to_thread(self._transaction, conn, rows))
            try:
                done = await asyncio.shield(task)
            except asyncio.CancelledError:
                task.add_done_callback(_closer(conn))
                raise
            except Exception as exc:  # noqa: BLE001 - translated at this boundary
                error = self._translate(exc)
                await self._discard_or_keep(conn, error)
                cause = exc.cause if isinstance(exc, _RowFailure) else exc
                if reused and isinstance(error, RetryableError) and self._dialect.connection_lost(cause):
                    continue  # idle connection died (server restart, idle timeout): rows are idempotent
                raise error from None
            self._release(conn)
            return done
        raise RetryableError(f"could not reach {self._dialect.name} at {self.where}")  # pragma: no cover

    async def _acquire(self, fresh_only: bool) -> tuple[Any, bool]:
        assert self._dialect is not None and self._dsn is not None
        if self._idle and not fresh_only:
            return self._idle.pop(), True
        try:
            conn = await asyncio.to_thread(self._dialect.connect, self._dsn, self.config.timeout_secs)
        except Exception as exc:  # noqa: BLE001 - translated at this boundary
            raise self._connect_error(exc) from None
        if not self._prepared:
            await self._prepare(conn)
        return conn, False

    def _connect_error(self, exc: Exception) -> DeliveryError:
        assert self._dialect is not None
        # Driver messages may echo the user name or database: name the exception type only.
        return RetryableError(f"could not connect to {self._dialect.name} at {self.where} ({type(exc).__name__})")

    async def _prepare(self, conn: Any) -> None:
        """First connection: create the table if asked and find the key's unique index (MariaDB)."""
        assert self._dialect is not None
        try:
            await asyncio.to_thread(self._prepare_sync, conn)
        except Exception as exc:  # noqa: BLE001 - translated at this boundary
            await asyncio.to_thread(_close_quietly, conn)
            raise self._translate(exc) from None
        self._prepared = True

    def _prepare_sync(self, conn: Any) -> None:
        assert self._dialect is not None
        if self.config.table is None:
            return
        if self.config.create_table:
            with conn.cursor() as cur:
                cur.execute(self._dialect.create_sql(self.config, self._dialect.quote_table(self.config.table)))
            conn.commit()
        self._key_indexes = self._dialect.key_indexes(conn, self.config)
        if isinstance(self._dialect, MariaDb) and self.config.mode == "insert" and not self._key_indexes:
            raise PermanentError(
                f"MariaDB table {self.config.table} has no unique index on exactly the key columns "
                f"({', '.join(self.config.key)}); create one so that retries stay idempotent"
            )

    def _transaction(self, conn: Any, rows: list[dict[str, Any]]) -> Written:
        """One transaction for all rows of a message (runs in a worker thread)."""
        assert self._dialect is not None
        done = Written(rows=len(rows))
        index: int | None = None
        try:
            with conn.cursor() as cur:
                for position, row in enumerate(rows):
                    index = position
                    try:
                        cur.execute(self._sql, row)
                    except Exception as exc:
                        # MariaDB keeps the transaction after a failed statement; PostgreSQL never gets here.
                        if self._dialect.is_key_conflict(exc, self._key_indexes or frozenset()):
                            done.present += 1
                            continue
                        raise
                    if cur.rowcount == 0:
                        done.present += 1
                    else:
                        done.written += 1
            index = None
            conn.commit()
        except Exception as exc:
            _rollback_quietly(conn)
            raise _RowFailure(exc, index) from exc
        return done

    def _translate(self, exc: Exception) -> DeliveryError:
        assert self._dialect is not None
        row: int | None = None
        if isinstance(exc, _RowFailure):
            row = exc.row
            exc = exc.cause
        if isinstance(exc, DeliveryError):
            return exc
        error = self._dialect.classify(exc, row)
        if error is not None:
            return error
        if isinstance(exc, OSError | TimeoutError):
            return RetryableError(
                f"the connection to {self._dialect.name} at {self.where} failed ({type(exc).__name__})"
            )
        return PermanentError(f"{self._dialect.name} driver error{_where_row(row)} ({type(exc).__name__})")

    async def _discard_or_keep(self, conn: Any, error: DeliveryError) -> None:
        """Keep a connection after a refused statement; close it after anything retryable."""
        if isinstance(error, PermanentError) and not _is_closed(conn):
            self._release(conn)
        else:
            await asyncio.to_thread(_close_quietly, conn)

    def _release(self, conn: Any) -> None:
        if self._closed:
            _close_quietly(conn)
        else:
            self._idle.append(conn)


class _RowFailure(Exception):
    """Carries the failing row index from the worker thread to the translation."""

    def __init__(self, cause: Exception, row: int | None) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause
        self.row = row


def _is_closed(conn: Any) -> bool:
    closed = getattr(conn, "closed", None)
    if isinstance(closed, bool):
        return closed
    return not getattr(conn, "open", True)


def _rollback_quietly(conn: Any) -> None:
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001, S110 - the connection is broken; it is closed by the caller
        pass


def _closer(conn: Any) -> Any:
    """A done-callback that closes ``conn`` once a cancelled send's thread has finished with it."""

    def close(_: object) -> None:
        _close_quietly(conn)

    return close


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001, S110 - closing a broken connection may fail; nothing to recover
        pass


DATABASE_DESTINATION = destination_spec(
    name="database",
    summary="Insert or upsert each message's JSON objects into a PostgreSQL or MariaDB staging table, "
    "one transaction per message, idempotent through a unique key.",
    config=DatabaseDestinationConfig,
    factory="engine.connectors.database:DatabaseDestination",
    status="beta",
    examples=(
        Example(
            "Supply usage into an ERP staging table (PostgreSQL)",
            "type: database\n"
            "name: erp-staging\n"
            "url_env: ERP_STAGING_DSN\n"
            "table: staging.supply_usage\n"
            "mode: upsert\n"
            "key: [message_id, line_no]\n"
            "columns:\n"
            "  message_id: $message_id\n"
            "  line_no: $row_index\n"
            "  item_number: item.value\n"
            "  quantity: quantity\n"
            "  uom: uom\n"
            "  received_at: $received_at\n",
        ),
        Example(
            "Purchase order lines, one row per line (MariaDB)",
            "type: database\n"
            "name: po-lines\n"
            "url_env: ERP_MARIADB_DSN\n"
            "table: po_line_staging\n"
            "key: [po_number, line_number]\n"
            "explode: lines\n"
            "columns:\n"
            "  po_number: po_number\n"
            "  line_number: line_number\n"
            "  quantity: quantity\n"
            "  payload: $object\n",
        ),
        Example(
            "Your own statement with named parameters",
            "type: database\n"
            "name: charge-stage\n"
            "url_env: BILLING_DSN\n"
            "statement: >-\n"
            "  INSERT INTO charge_stage (msg, code, qty) VALUES (:msg, :code, :qty)\n"
            "  ON CONFLICT (msg, code) DO NOTHING\n"
            "columns:\n"
            "  msg: $idempotency_key\n"
            "  code: charge_code\n"
            "  qty: quantity\n",
        ),
    ),
)
