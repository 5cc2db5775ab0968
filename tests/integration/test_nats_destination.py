"""The NATS JetStream destination against the real NATS server at 127.0.0.1:4222.

Every test uses its own stream and subject prefix (random) and deletes the stream at the end.
An unreachable server fails the test with a clear message: CI runs NATS with JetStream.
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
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from engine.connectors.nats import NatsDestination, NatsDestinationConfig
from engine.core.errors import PermanentError, RetryableError
from engine.core.logs import bind
from engine.core.message import Outbound, SendResult, new_id
from engine.testing.peers import EngineThread, free_port, mllp_exchange, msa

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVER = os.environ.get("JUNCTION_TEST_NATS_URL", "nats://127.0.0.1:4222")
LOG = bind(logging.getLogger("junction.test.nats"), channel="bus-test")

USAGE = {
    "schema_version": "1.0",
    "encounter": {"encounter_id": "ENC1"},
    "item": {"type": "buyer_item", "value": "SUP-1"},
    "quantity": "2",
    "uom": "EA",
    "location": "OR1",
    "used_at": "2026-11-22T10:10:00",
    "currency": "USD",
}
ACK = {"schema_version": "1.0", "po_number": "PO-1", "ack_date": "2026-11-22", "status": "AC", "lines": []}


def outbound(content: Any, content_type: str = "application/json", message_id: str | None = None) -> Outbound:
    mid = message_id or new_id()
    body = content if isinstance(content, bytes) else json.dumps(content).encode()
    return Outbound(mid, "bus-test", "events", mid, body, content_type)


@asynccontextmanager
async def bus(**extra: Any) -> AsyncIterator[tuple[NatsDestination, JetStreamContext, str, str]]:
    """A destination plus an admin JetStream context, a fresh stream and a subject prefix."""
    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"JT_{tag}", f"jt{tag}"
    try:
        admin = await nats.connect(SERVER, connect_timeout=3, allow_reconnect=False)
    except (nats.errors.Error, OSError) as exc:
        pytest.fail(f"NATS test server at {SERVER} is not reachable ({type(exc).__name__}); CI provides it")
    js = admin.jetstream()
    settings: dict[str, Any] = {
        "type": "nats",
        "name": "events",
        "servers": [SERVER],
        "subject": prefix + ".{object_type}",
        "stream": stream,
        "create_stream": True,
        "duplicate_window_secs": 120,
        "timeout_secs": 3,
    }
    settings.update(extra)
    dest = NatsDestination(NatsDestinationConfig.model_validate(settings), channel="bus-test", base_dir=ROOT, log=LOG)
    await dest.open()
    try:
        yield dest, js, stream, prefix
    finally:
        await dest.close()
        try:
            await js.delete_stream(stream)
        except NotFoundError:
            pass
        await admin.close()


async def messages(js: JetStreamContext, stream: str) -> list[Any]:
    """Every message of the stream, in order (bounded by the stream's own count)."""
    info = await js.stream_info(stream)
    return [await js.get_msg(stream, seq) for seq in range(info.state.first_seq, info.state.last_seq + 1)]


def run(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(scenario())


def test_the_same_delivery_twice_stores_each_event_once() -> None:
    async def scenario() -> tuple[list[SendResult], list[Any], float]:
        async with bus() as (dest, js, stream, _):
            item = outbound([USAGE, dict(USAGE, quantity="5")])
            first = await dest.send(item)
            second = await dest.send(item)
            info = await js.stream_info(stream)
            return [first, second], await messages(js, stream), info.config.duplicate_window or 0

    (first, second), stored, window = run(scenario)
    assert first.detail == "2 events: 2 stored, 0 duplicates"
    assert second.detail == "2 events: 0 stored, 2 duplicates"
    assert len(stored) == 2
    assert [json.loads(m.data)["quantity"] for m in stored] == ["2", "5"]
    assert window == 120


def test_each_object_type_gets_its_own_subject_and_headers() -> None:
    async def scenario() -> tuple[Outbound, list[Any], str]:
        async with bus() as (dest, js, stream, prefix):
            item = outbound([USAGE, ACK])
            await dest.send(item)
            return item, await messages(js, stream), prefix

    item, stored, prefix = run(scenario)
    assert [m.subject for m in stored] == [f"{prefix}.supply_usage", f"{prefix}.purchase_order_ack"]
    first, second = (m.headers for m in stored)
    assert first["Nats-Msg-Id"] == f"{item.message_id}:events:0"
    assert second["Nats-Msg-Id"] == f"{item.message_id}:events:1"
    assert first["Junction-Object-Type"] == "SupplyUsage"
    assert first["Junction-Schema-Version"] == "1.0"
    assert first["Junction-Message-Id"] == item.message_id
    assert first["Junction-Correlation-Id"] == item.correlation_id
    assert json.loads(stored[1].data) == ACK


def test_a_single_object_is_sent_as_received_with_the_plain_idempotency_key() -> None:
    body = b'{"schema_version":"1.0","po_number":"PO-9","ack_date":"2026-11-22","status":"AC","lines":[]}'

    async def scenario() -> tuple[Outbound, list[Any], str]:
        async with bus() as (dest, js, stream, prefix):
            item = outbound(body)
            await dest.send(item)
            return item, await messages(js, stream), prefix

    item, (stored,), prefix = run(scenario)
    assert stored.data == body
    assert stored.subject == f"{prefix}.purchase_order_ack"
    assert stored.headers["Nats-Msg-Id"] == item.idempotency_key


def test_the_object_type_can_come_from_config_or_the_content_type() -> None:
    async def scenario() -> tuple[list[str], Any]:
        subjects: list[str] = []
        async with bus() as (dest, js, stream, prefix):
            await dest.send(outbound({"anything": 1}, content_type="application/json; object=ChargeEvent"))
            refused = None
            try:
                await dest.send(outbound({"anything": 1, "secret": "DOE^JANE"}))
            except PermanentError as exc:
                refused = exc
            subjects += [m.subject.removeprefix(prefix) for m in await messages(js, stream)]
        async with bus(object_type="Item") as (dest, js, stream, prefix):
            await dest.send(outbound(USAGE))
            subjects += [m.subject.removeprefix(prefix) for m in await messages(js, stream)]
        return subjects, refused

    subjects, refused = run(scenario)
    assert subjects == [".charge_event", ".item"]
    assert isinstance(refused, PermanentError)
    assert "set object_type" in str(refused) and "DOE" not in str(refused)


def test_a_retry_after_a_partial_failure_publishes_only_the_missing_events() -> None:
    async def scenario() -> tuple[SendResult, list[Any]]:
        async with bus() as (dest, js, stream, prefix):
            item = outbound([USAGE, ACK, USAGE])
            # The first attempt got event 0 stored, then the connection broke before event 1.
            await dest.send(outbound(USAGE))  # creates the stream
            await js.publish(
                f"{prefix}.supply_usage", b"{}", headers={"Nats-Msg-Id": f"{item.idempotency_key}:0"}, stream=stream
            )
            assert dest._nc is not None
            await dest._nc.close()
            result = await dest.send(item)  # the runtime's retry: reconnects, skips event 0
            return result, await messages(js, stream)

    result, stored = run(scenario)
    assert result.detail == "3 events: 2 stored, 1 duplicates"
    assert len(stored) == 4
    assert [m.headers["Nats-Msg-Id"].rsplit(":", 1)[-1] for m in stored[1:]] == ["0", "1", "2"]


def test_without_a_stream_the_send_is_retryable_until_the_stream_exists() -> None:
    async def scenario() -> tuple[BaseException | None, SendResult, SendResult, int]:
        async with bus(create_stream=False, duplicate_window_secs=600) as (dest, js, stream, prefix):
            item = outbound(USAGE)
            error = None
            try:
                await dest.send(item)
            except RetryableError as exc:
                error = exc
            await js.add_stream(api.StreamConfig(name=stream, subjects=[f"{prefix}.>"], duplicate_window=60))
            retried = await dest.send(item)
            again = await dest.send(item)
            return error, retried, again, len(await messages(js, stream))

    error, retried, again, count = run(scenario)
    assert isinstance(error, RetryableError) and "no JetStream stream" in str(error)
    assert retried.detail == "1 events: 1 stored, 0 duplicates"
    assert again.detail == "1 events: 0 stored, 1 duplicates"
    assert count == 1


def test_a_subject_stored_by_another_stream_is_permanent() -> None:
    async def scenario() -> BaseException | None:
        async with bus(create_stream=False) as (dest, js, _, prefix):
            other = f"JT_OTHER_{uuid.uuid4().hex[:10]}"
            await js.add_stream(api.StreamConfig(name=other, subjects=[f"{prefix}.>"]))
            try:
                await dest.send(outbound(USAGE))
            except PermanentError as exc:
                return exc
            finally:
                await js.delete_stream(other)
        return None

    error = run(scenario)
    assert isinstance(error, PermanentError) and "another stream" in str(error)


def test_an_unreachable_server_is_retryable_and_fast() -> None:
    port = free_port()
    config = NatsDestinationConfig.model_validate(
        {"type": "nats", "name": "events", "servers": [f"nats://127.0.0.1:{port}"], "timeout_secs": 2}
    )

    async def scenario() -> tuple[BaseException | None, float]:
        dest = NatsDestination(config, channel="bus-test", base_dir=ROOT, log=LOG)
        started = time.monotonic()
        await dest.open()
        try:
            await dest.send(outbound(USAGE))
        except RetryableError as exc:
            return exc, time.monotonic() - started
        finally:
            await dest.close()
        return None, 0.0

    error, elapsed = run(scenario)
    assert isinstance(error, RetryableError)
    assert f"127.0.0.1:{port}" in str(error)
    assert elapsed < 15


def test_an_unset_token_variable_holds_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JT_NATS_TOKEN", raising=False)
    config = NatsDestinationConfig.model_validate(
        {"type": "nats", "name": "events", "servers": [SERVER], "token_env": "JT_NATS_TOKEN"}
    )

    async def scenario() -> BaseException | None:
        dest = NatsDestination(config, channel="bus-test", base_dir=ROOT, log=LOG)
        await dest.open()
        try:
            await dest.send(outbound(USAGE))
        except RetryableError as exc:
            return exc
        finally:
            await dest.close()
        return None

    assert "JT_NATS_TOKEN" in str(run(scenario))


CHANNEL = """
    name: usage-events
    source: {type: mllp, listen: "127.0.0.1:0", ack_mode: after_processing}
    pipeline:
      datatype: hl7v2
      transform: {type: mapping, file: mappings/dft-to-supply-usage.yaml}
    destinations:
      - type: nats
        name: event-bus
        servers: [SERVER]
        subject: PREFIX.{channel}.{object_type}
        stream: STREAM
        create_stream: true
"""


def test_a_channel_publishes_mapped_usage_events(make_project: Callable[[dict[str, str]], Path]) -> None:
    tag = uuid.uuid4().hex[:10]
    stream, prefix = f"JT_{tag}", f"jt{tag}"
    text = CHANNEL.replace("SERVER", SERVER).replace("PREFIX", prefix).replace("STREAM", stream)
    project = make_project({"usage-events": text})
    shutil.copytree(ROOT / "mappings", project / "mappings")
    dft = (
        b"MSH|^~\\&|OR|GH|JUNCTION|ERP|20261122101500||DFT^P03|EV1|P|2.5\r"
        b"PID|1||MRN77^^^GH^MR||TESTPATIENT^EPSILON\r"
        b"PV1|1|I|OR^05^^GH||||||||||||||||ENC77\r"
        b"FT1|1|||20261122101000|20261122101500|CG|SUP-100234|||2|||ORSURG\r"
        b"FT1|2|||20261122101000|20261122101500|CG|SUP-100234|||1|||ORSURG\r"
    )

    async def stored() -> list[Any]:
        admin = await nats.connect(SERVER, connect_timeout=3, allow_reconnect=False)
        try:
            js = admin.jetstream()
            try:
                return await messages(js, stream)
            except NotFoundError:
                return []
        finally:
            await admin.close()

    async def cleanup() -> None:
        admin = await nats.connect(SERVER, connect_timeout=3, allow_reconnect=False)
        try:
            await admin.jetstream().delete_stream(stream)
        except NotFoundError:
            pass
        finally:
            await admin.close()

    try:
        with EngineThread(project) as running:
            _, port = running.address("usage-events")
            with closing(socket.create_connection(("127.0.0.1", port), timeout=10)) as sock:
                ack = msa(mllp_exchange(sock, dft))
            deadline = time.monotonic() + 15
            events: list[Any] = []
            while len(events) < 2 and time.monotonic() < deadline:
                events = run(stored)
                time.sleep(0.05)
    finally:
        run(cleanup)
    assert ack[0] == "AA"
    assert [e.subject for e in events] == [f"{prefix}.usage-events.supply_usage"] * 2
    assert [json.loads(e.data)["usage_id"] for e in events] == ["EV1-1", "EV1-2"]
    assert [e.headers["Nats-Msg-Id"].rsplit(":", 1)[-1] for e in events] == ["0", "1"]
    assert all("TESTPATIENT" not in e.data.decode() for e in events)
