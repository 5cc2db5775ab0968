"""Configuration, row building and event naming of the database and NATS destinations (no servers)."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engine.canonical import MODELS
from engine.connectors.database import (
    DatabaseDestination,
    DatabaseDestinationConfig,
    compile_statement,
    id_time,
    load_objects,
    parse_dsn,
    resolve,
)
from engine.connectors.nats import NatsDestination, NatsDestinationConfig, ObjectTypes, snake_case
from engine.core.errors import PermanentError
from engine.core.logs import bind
from engine.core.message import Outbound, new_id

ROOT = Path(__file__).resolve().parents[2]
LOG = bind(logging.getLogger("junction.test"), channel="unit")
SECRET = "s3cr3t-PASSWORD"


def db_config(**extra: Any) -> DatabaseDestinationConfig:
    data: dict[str, Any] = {
        "type": "database",
        "name": "staging",
        "url_env": "JT_UNIT_DSN",
        "table": "staging.usage",
        "key": ["id"],
        "columns": {"id": "$idempotency_key", "item": "item.value"},
    }
    data.update(extra)
    return DatabaseDestinationConfig.model_validate(data)


def outbound(content: Any, content_type: str = "application/json") -> Outbound:
    mid = new_id()
    return Outbound(mid, "unit", "staging", "corr-1", json.dumps(content).encode(), content_type, control_id="C1")


# --------------------------------------------------------------------------- database config


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"table": "usage; DROP TABLE x"}, "table must be name or schema.name"),
        ({"table": "a.b.c"}, "table must be name or schema.name"),
        ({"columns": {"bad-name": "x"}, "key": []}, "column 'bad-name' must be letters"),
        ({"key": []}, "key is required with table"),
        ({"key": ["other"]}, "key column(s) other are not in columns"),
        ({"columns": {"id": "$nope"}}, "unknown special value '$nope'"),
        ({"columns": {"id": "a..b"}}, "is not key.key[n].key"),
        ({"table": None}, "give exactly one of table or statement"),
        ({"statement": "INSERT INTO t VALUES (:a)"}, "give exactly one of table or statement"),
        ({"url_env": "postgresql://u:p@h/db"}, "url_env names an environment variable"),
        ({"mode": "merge"}, "'insert' or 'upsert'"),
        ({"unknown_key": 1}, "Extra inputs are not permitted"),
    ],
)
def test_database_config_rejects_mistakes_with_a_clear_reason(extra: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        db_config(**extra)
    assert expected in str(info.value)


def test_a_statement_must_use_exactly_the_mapped_parameters() -> None:
    base: dict[str, Any] = {"table": None, "key": []}
    with pytest.raises(ValidationError, match="statement uses :qty but columns has no entry 'qty'"):
        db_config(**base, statement="INSERT INTO t (id, q) VALUES (:id, :qty)", columns={"id": "$message_id"})
    with pytest.raises(ValidationError, match="columns entry 'extra' is not used"):
        db_config(**base, statement="INSERT INTO t (id) VALUES (:id)", columns={"id": "$message_id", "extra": "x"})
    with pytest.raises(ValidationError, match="key, mode and create_table apply to table"):
        db_config(table=None, statement="INSERT INTO t (id) VALUES (:id)", columns={"id": "$message_id"})
    ok = db_config(**base, statement="INSERT INTO t (id) VALUES (:id)", columns={"id": "$message_id"})
    assert ok.statement is not None


def test_statements_become_driver_placeholders_and_leave_quotes_and_casts_alone() -> None:
    sql, names = compile_statement(
        "UPDATE t SET a = :a::numeric, b = 'x :b 50%', \"c:d\" = :c, e = :a WHERE f LIKE 'z%' AND g = 5 % 2"
    )
    assert names == ["a", "c"]
    assert sql == (
        "UPDATE t SET a = %(a)s::numeric, b = 'x :b 50%%', \"c:d\" = %(c)s, e = %(a)s WHERE f LIKE 'z%%' AND g = 5 %% 2"
    )


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        ("oracle://u@h/db", "must start with postgresql:// or mysql://"),
        ("postgresql://u@h:5432", "names no database"),
        ("mysql://u@h:99999/db", "not a valid URL"),
    ],
)
def test_unusable_dsns_are_explained_without_quoting_them(dsn: str, reason: str) -> None:
    result = parse_dsn(dsn)
    assert isinstance(result, str) and reason in result and "u@h" not in result


def test_dsns_of_both_dialects_are_parsed() -> None:
    pg = parse_dsn("postgres://app:p%40ss@db.example:6543/erp?sslmode=require")
    my = parse_dsn("mariadb://root@127.0.0.1/test?charset=utf8mb4")
    assert not isinstance(pg, str) and not isinstance(my, str)
    assert (pg.dialect, pg.host, pg.port, pg.user, pg.password, pg.database) == (
        "postgresql",
        "db.example",
        6543,
        "app",
        "p@ss",
        "erp",
    )
    assert (my.dialect, my.port, my.options, my.where) == ("mysql", 3306, {"charset": "utf8mb4"}, "127.0.0.1:3306")


def test_an_unset_or_bad_dsn_variable_is_a_problem_that_does_not_quote_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JT_UNIT_DSN", raising=False)
    unset = DatabaseDestination(db_config(), channel="unit", base_dir=ROOT, log=LOG)
    monkeypatch.setenv("JT_UNIT_DSN", f"http://user:{SECRET}@host/db")
    bad = DatabaseDestination(db_config(), channel="unit", base_dir=ROOT, log=LOG)
    monkeypatch.setenv("JT_UNIT_DSN", f"postgresql://user:{SECRET}@host/db")
    good = DatabaseDestination(db_config(), channel="unit", base_dir=ROOT, log=LOG)
    assert unset.problem == "environment variable JT_UNIT_DSN is not set; it must hold the database DSN"
    assert bad.problem is not None and "JT_UNIT_DSN" in bad.problem and SECRET not in bad.problem
    assert good.problem is None and good.where == "host:5432"


# --------------------------------------------------------------------------- rows


def test_rows_read_paths_specials_and_explode_with_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JT_UNIT_DSN", "postgresql://u@127.0.0.1/test")
    config = db_config(
        key=["id", "n"],
        explode="lines",
        columns={
            "id": "$idempotency_key",
            "n": "$row_index",
            "po": "po_number",
            "sku": "item.ids[1]",
            "qty": "quantity",
            "flag": "rush",
            "whole": "$",
            "message": "$message_id",
            "corr": "$correlation_id",
            "control": "$control_id",
            "received": "$received_at",
            "missing": "not.there[3]",
        },
    )
    dest = DatabaseDestination(config, channel="unit", base_dir=ROOT, log=LOG)
    po = {"po_number": "PO-1", "rush": True, "lines": [{"item": {"ids": ["a", "b"]}, "quantity": 1.50}, {"x": 1}]}
    item = outbound([po, {"po_number": "PO-2", "lines": []}])
    first, second = dest.rows(item)
    assert first["id"] == item.idempotency_key and (first["n"], second["n"]) == (0, 1)
    assert (first["po"], first["sku"], first["qty"], first["flag"]) == ("PO-1", "b", Decimal("1.50"), True)
    assert (second["sku"], second["qty"], second["missing"]) == (None, None, None)
    assert json.loads(first["whole"]) == po  # $ is the object, not the line
    assert (first["message"], first["corr"], first["control"]) == (item.message_id, "corr-1", "C1")
    assert first["received"] == id_time(item.message_id) and first["received"] is not None


def test_a_non_list_explode_target_is_permanent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JT_UNIT_DSN", "postgresql://u@127.0.0.1/test")
    dest = DatabaseDestination(db_config(explode="lines"), channel="unit", base_dir=ROOT, log=LOG)
    with pytest.raises(PermanentError, match="object 0: explode path lines is not a list"):
        dest.rows(outbound({"lines": "DOE^JANE"}))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"MSH|^~\\&|DOE", "the content is not JSON (line 1, column 1"),
        (b'"DOE"', "the content is a string, expected a JSON object or a list of objects"),
        (b'[{"a": 1}, 5]', "item 1 of the content is a number"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_content_other_than_json_objects_is_refused_without_quoting_it(content: bytes, reason: str) -> None:
    with pytest.raises(PermanentError) as info:
        load_objects(content)
    assert reason in str(info.value) and "DOE" not in str(info.value)


def test_resolve_walks_keys_and_indexes() -> None:
    data = {"a": [{"b": 1}, {"b": {"c": None}}]}
    assert resolve(data, "a[1].b.c") is None
    assert resolve(data, "a[0].b") == 1
    assert resolve(data, "a[2].b") is not None and resolve(data, "a[2].b") is resolve(data, "x")  # both missing


# --------------------------------------------------------------------------- NATS


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"subject": "junction.{kind}"}, "unknown placeholder {kind}"),
        ({"subject": "junction.*"}, "no wildcards"),
        ({"subject": "junction..x"}, "no empty tokens"),
        ({"servers": ["nats://user:pw@host:4222"]}, "not in servers"),
        ({"servers": ["http://host:4222"]}, "servers are URLs like nats://host:4222"),
        ({"servers": []}, "at least one"),
        ({"create_stream": True}, "create_stream needs stream"),
        ({"subjects": ["a.>"], "stream": "S"}, "subjects only apply with create_stream"),
        ({"stream": "A.B"}, "stream names are letters"),
        ({"user_env": "NATS_USER"}, "user_env and password_env together"),
        ({"token_env": "T", "creds_file": "x.creds"}, "use one of token_env"),
        ({"token_env": "nats-token-value"}, "name an environment variable"),
        ({"object_type": "supply usage"}, "object_type is a class name"),
    ],
)
def test_nats_config_rejects_mistakes_with_a_clear_reason(extra: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        NatsDestinationConfig.model_validate({"type": "nats", "name": "events", **extra})
    assert expected in str(info.value)


def test_nats_defaults_and_created_stream_subjects() -> None:
    config = NatsDestinationConfig.model_validate(
        {"type": "nats", "name": "events", "subject": "h.{channel}.{object_type}", "stream": "S", "create_stream": True}
    )
    assert config.servers == ["nats://127.0.0.1:4222"]
    assert config.stream_subjects() == ["h.*.*"]
    assert config.duplicate_window_secs == 600


def test_nats_problems_name_the_variable_or_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JT_NATS_PW", raising=False)
    monkeypatch.setenv("JT_NATS_USER", "svc")
    pw = NatsDestinationConfig.model_validate(
        {"type": "nats", "name": "e", "user_env": "JT_NATS_USER", "password_env": "JT_NATS_PW"}
    )
    creds = NatsDestinationConfig.model_validate({"type": "nats", "name": "e", "creds_file": "secrets/none.creds"})
    assert NatsDestination(pw, channel="u", base_dir=ROOT, log=LOG).problem == (
        "environment variable JT_NATS_PW (password_env) is not set"
    )
    assert NatsDestination(creds, channel="u", base_dir=ROOT, log=LOG).problem == (
        "creds_file secrets/none.creds does not exist"
    )


def test_canonical_objects_are_recognised_by_their_fields() -> None:
    types = ObjectTypes(MODELS)
    usage = MODELS["SupplyUsage"].model_validate(
        {
            "encounter": {"encounter_id": "E1"},
            "item": {"type": "buyer_item", "value": "S1"},
            "location": "OR1",
            "quantity": "2",
            "uom": "EA",
            "used_at": "2026-11-22T10:10:00",
        }
    )
    supplier = MODELS["Supplier"].model_validate({"supplier_id": "V1", "name": "Acme", "roles": ["vendor"]})
    assert types.recognise(usage.model_dump(mode="json", exclude_none=True)) == "SupplyUsage"
    assert types.recognise(supplier.model_dump(mode="json", exclude_none=True)) == "Supplier"
    assert types.recognise({"supplier_id": "V1"}) is None  # missing required fields
    assert types.recognise({**supplier.model_dump(mode="json"), "extra": 1}) is None  # unknown key


def test_every_canonical_model_name_is_a_valid_subject_token() -> None:
    assert snake_case("ShipNotice") == "ship_notice"
    for name in MODELS:
        NatsDestinationConfig.model_validate({"type": "nats", "name": "e", "subject": f"j.{snake_case(name)}"})
