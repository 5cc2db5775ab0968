"""The HTTP source against real aiohttp clients, an in-process engine and a subprocess engine."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.core.message import Status
from engine.core.store import MessageQuery
from engine.testing.peers import EngineProcess, EngineThread, HttpPeer, Received, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HL7 = b"MSH|^~\\&|EHR|HOSP|ERP|HOSP|20261129120000||ADT^A01|HTTP0001|P|2.5\rPID|1||12345^^^HOSP||SECRETNAME^JANE\r"
ORDER = {"order": "PO-1", "lines": [{"item": "SUP-1", "qty": 2}]}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    method: str,
    url: str,
    body: bytes | None = None,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Answer:
    """One request with a real aiohttp client (its own loop; bounded by a 20 s timeout)."""

    async def go() -> Answer:
        sent = dict(headers or {})
        if content_type is not None:
            sent["Content-Type"] = content_type
        timeout = aiohttp.ClientTimeout(total=20)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, data=body, headers=sent, ssl=tls if tls is not None else True) as response,
        ):
            return Answer(response.status, dict(response.headers), await response.read())

    return asyncio.run(go())


def channel_yaml(name: str, source: str, datatype: str = "json", rest: str = "", kind: str = "http") -> str:
    return (
        f"name: {name}\nsource:\n  type: {kind}\n{_indent(source)}pipeline:\n  datatype: {{type: {datatype}}}\n{rest}"
    )


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.strip().splitlines())


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def url_of(engine: EngineThread, channel: str, path: str | None = None, scheme: str = "http") -> str:
    host, port = engine.address(channel)
    return f"{scheme}://{host}:{port}{path or f'/channels/{channel}'}"


# --- asynchronous mode, admin API, shared listener -----------------------------------------


def test_async_202_then_found_in_the_store_through_the_admin_api(make_project: Callable[..., Path]) -> None:
    port = free_port()
    listen = f"listen: 127.0.0.1:{port}"
    project = make_project(
        {
            "orders-in": channel_yaml("orders-in", listen),
            "adt-in": channel_yaml("adt-in", f"{listen}\npath: /hl7/adt", "hl7v2"),
            "edi-in": channel_yaml("edi-in", listen, "x12"),
            "xml-in": channel_yaml("xml-in", listen, "xml"),
        }
    )
    with EngineProcess(project) as engine:
        engine.address("orders-in")
        base = f"http://127.0.0.1:{port}"
        answer = call("POST", f"{base}/channels/orders-in", json.dumps(ORDER).encode())
        assert answer.status == 202, answer.body
        message_id = answer.json()["message_id"]
        assert answer.json()["status"] == "RECEIVED"
        detail = engine.call("GET", f"/api/messages/{message_id}")
        assert detail["message"]["channel"] == "orders-in"
        source = detail["message"]["source"]
        assert source["transport"] == "http" and source["method"] == "POST"
        assert source["path"] == "/channels/orders-in" and source["content_type"] == "application/json"
        assert source["peer"] == "127.0.0.1"
        # Four channels on one port: each body goes to its own channel and data type.
        hl7 = call("POST", f"{base}/hl7/adt", HL7, "x-application/hl7-v2+er7")
        assert hl7.status == 202, hl7.body
        assert engine.call("GET", f"/api/messages/{hl7.json()['message_id']}")["message"]["control_id"] == "HTTP0001"
        xml = call("POST", f"{base}/channels/xml-in", b"<order><id>1</id></order>", "application/xml")
        assert xml.status == 202
        x12 = call("POST", f"{base}/channels/edi-in", b"not an interchange", "application/edi-x12")
        assert x12.status == 400 and x12.headers["Content-Type"].startswith("application/problem+json")
        stored = engine.call("GET", f"/api/messages/{x12.json()['message_id']}")
        assert stored["message"]["status"] == "ERROR" and stored["message"]["channel"] == "edi-in"
        missing = call("POST", f"{base}/channels/nowhere", b"{}")
        assert missing.status == 404 and missing.json()["title"] == "Not found"
        listed = engine.call("GET", "/api/messages?channel=orders-in")
        assert [m["id"] for m in listed] == [message_id]
        assert "SECRETNAME" not in engine.log_text()


def test_bad_bodies_get_problem_details_and_are_stored(make_project: Callable[..., Path]) -> None:
    source = "listen: 127.0.0.1:0\nmax_body_bytes: 1024\nmethods: [POST, PUT]"
    project = make_project({"limits": channel_yaml("limits", source)})
    with EngineThread(project) as engine:
        url = url_of(engine, "limits")
        too_big = call("POST", url, b'{"x": "' + b"a" * 3000 + b'"}')
        assert too_big.status == 413
        assert too_big.json()["status"] == 413 and "1024 bytes" in too_big.json()["detail"]
        wrong_type = call("POST", url, b"a,b\n1,2\n", "text/csv")
        assert wrong_type.status == 415 and "application/json" in wrong_type.json()["detail"]
        not_json = call("PUT", url, b"{not json")
        assert not_json.status == 400 and not_json.json()["detail"].startswith("parse")
        assert call("POST", url, b"", "application/json").status == 400
        refused = call("DELETE", url, b"{}")
        assert refused.status == 405 and refused.headers["Allow"] == "POST, PUT"
        for answer, error in ((too_big, "refused: request body exceeds"), (wrong_type, "refused: media type")):
            detail = engine.run(engine.engine.store.get(answer.json()["message_id"]))
            assert detail.summary.status == Status.ERROR and detail.summary.error.startswith(error)
        parsed = engine.run(engine.engine.store.get(not_json.json()["message_id"]))
        assert parsed.summary.status == Status.ERROR and parsed.summary.source["method"] == "PUT"
        assert call("POST", url + "/deeper", b"{}").status == 404


# --- authentication --------------------------------------------------------------------------


def test_bearer_api_key_and_basic_auth(make_project: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_T_TOKEN", "tok-123")
    monkeypatch.setenv("WEB_T_KEY", "key-456")
    monkeypatch.setenv("WEB_T_USER", "lab")
    monkeypatch.setenv("WEB_T_PASSWORD", "pa:ss")
    port = free_port()
    project = make_project(
        {
            "bearer": channel_yaml("bearer", f"listen: 127.0.0.1:{port}\nauth: {{bearer_env: WEB_T_TOKEN}}"),
            "apikey": channel_yaml(
                "apikey", f"listen: 127.0.0.1:{port}\nauth: {{api_key_env: WEB_T_KEY, api_key_header: X-Partner-Key}}"
            ),
            "basic": channel_yaml(
                "basic",
                f"listen: 127.0.0.1:{port}\nauth: {{basic_user_env: WEB_T_USER, basic_password_env: WEB_T_PASSWORD}}",
            ),
        }
    )
    body = json.dumps(ORDER).encode()
    with EngineThread(project) as engine:
        base = f"http://127.0.0.1:{port}/channels"
        basic = "Basic " + base64.b64encode(b"lab:pa:ss").decode()
        cases = [
            ("bearer", {"Authorization": "Bearer tok-123"}, {"Authorization": "Bearer tok-12"}, "Bearer"),
            ("apikey", {"X-Partner-Key": "key-456"}, {"X-API-Key": "key-456"}, "ApiKey"),
            (
                "basic",
                {"Authorization": basic},
                {"Authorization": "Basic " + base64.b64encode(b"lab:x").decode()},
                "Basic",
            ),
        ]
        for channel, good, bad, challenge in cases:
            assert call("POST", f"{base}/{channel}", body, headers=good).status == 202, channel
            for headers in (bad, {}):
                denied = call("POST", f"{base}/{channel}", body, headers=headers)
                assert denied.status == 401, channel
                assert denied.headers["WWW-Authenticate"].startswith(challenge)
                assert denied.json()["title"] == "Unauthorized"
        # Unauthenticated requests are not stored: exactly one message per channel, none in error.
        for channel in ("bearer", "apikey", "basic"):
            found = engine.run(engine.engine.store.search(MessageQuery(channel=channel)))
            assert [m.status for m in found] != [] and len(found) == 1, channel
            assert found[0].status != Status.ERROR


def test_missing_secret_refuses_requests_with_503(make_project: Callable[..., Path]) -> None:
    source = "listen: 127.0.0.1:0\nauth: {bearer_env: WEB_T_UNSET_TOKEN}"
    project = make_project({"nosecret": channel_yaml("nosecret", source)})
    with EngineThread(project) as engine:
        answer = call("POST", url_of(engine, "nosecret"), b"{}", headers={"Authorization": "Bearer "})
        assert answer.status == 503 and "not usable" in answer.json()["detail"]
        assert engine.engine.channels["nosecret"].source.problem.startswith("auth.bearer_env")  # type: ignore[union-attr]


# --- synchronous mode ------------------------------------------------------------------------


def test_sync_answers_with_the_destination_reply(make_project: Callable[..., Path]) -> None:
    def behaviour(request: Received) -> int:
        return 200 if b"PO-1" in request.body else 409

    with HttpPeer(behaviour) as peer:
        source = "listen: 127.0.0.1:0\nack_mode: after_processing\nresponse: sync\nrespond_from: erp"
        dest = f"destinations:\n  - {{type: http, name: erp, url: '{peer.url}/prices', send_first: true}}\n"
        project = make_project({"price-check": channel_yaml("price-check", source, rest=dest)})
        with EngineThread(project) as engine:
            answer = call("POST", url_of(engine, "price-check"), json.dumps(ORDER).encode())
            assert answer.status == 200, answer.body
            assert answer.json() == {"ok": True}  # HttpPeer's answer, passed through
            assert answer.headers["Content-Type"].startswith("application/json")
            assert peer.snapshot()[0].path == "/prices"
            failed = call("POST", url_of(engine, "price-check"), json.dumps({"order": "PO-2"}).encode())
            assert failed.status == 502 and failed.json()["upstream_status"] == 409
            assert "erp" in failed.json()["detail"] and failed.json()["message_id"]


def test_sync_answers_with_the_transformed_result(make_project: Callable[..., Path]) -> None:
    source = "listen: 127.0.0.1:0\nack_mode: after_processing\nresponse: sync"
    rest = "  transform: {type: hl7-to-json}\n"
    project = make_project({"adt-json": channel_yaml("adt-json", source, "hl7v2", rest)})
    with EngineThread(project) as engine:
        answer = call("POST", url_of(engine, "adt-json"), HL7, "x-application/hl7-v2+er7")
        assert answer.status == 200, answer.body
        assert answer.headers["Content-Type"].startswith("application/json")
        assert "HTTP0001" in answer.body.decode()
        stored = engine.run(engine.engine.store.get(answer.headers["X-Junction-Message-Id"]))
        assert stored.summary.status in (Status.TRANSFORMED, Status.SENT)


def test_sync_time_out_answers_504_and_the_message_carries_on(make_project: Callable[..., Path]) -> None:
    release = threading.Event()

    def slow(request: Received) -> int:
        release.wait(timeout=10)
        return 200

    with HttpPeer(slow) as peer:
        source = "listen: 127.0.0.1:0\nack_mode: after_processing\nresponse: sync\nrespond_from: erp\n"
        source += "sync_timeout_secs: 0.3"
        dest = f"destinations:\n  - {{type: http, name: erp, url: '{peer.url}/slow', send_first: true}}\n"
        project = make_project({"slow-check": channel_yaml("slow-check", source, rest=dest)})
        with EngineThread(project) as engine:
            started = time.monotonic()
            answer = call("POST", url_of(engine, "slow-check"), json.dumps(ORDER).encode())
            elapsed = time.monotonic() - started
            release.set()
            assert answer.status == 504 and answer.json()["title"] == "Gateway timeout"
            assert elapsed < 5
            wait_until(lambda: len(peer.snapshot()) == 1)

            def sent() -> bool:
                counters = engine.run(engine.engine.store.counters("slow-check"))
                return bool(counters.get("dest:erp:SENT", 0) == 1)

            wait_until(sent)


# --- lifecycle, TLS ----------------------------------------------------------------------------


def test_two_channels_share_a_port_and_the_last_stop_releases_it(make_project: Callable[..., Path]) -> None:
    port = free_port()
    project = make_project(
        {
            "first": channel_yaml("first", f"listen: 127.0.0.1:{port}"),
            "second": channel_yaml("second", f"listen: 127.0.0.1:{port}"),
        }
    )
    base = f"http://127.0.0.1:{port}/channels"
    with EngineThread(project) as engine:
        assert engine.address("first") == engine.address("second") == ("127.0.0.1", port)
        assert call("POST", f"{base}/first", b"{}").status == 202
        engine.run(engine.engine.act("first", "stop"))
        assert call("POST", f"{base}/first", b"{}").status == 404  # route gone, port still served
        assert call("POST", f"{base}/second", b"{}").status == 202
        engine.run(engine.engine.act("second", "stop"))
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        engine.run(engine.engine.act("first", "start"))
        assert call("POST", f"{base}/first", b"{}").status == 202


def test_a_second_channel_on_a_taken_path_does_not_start(make_project: Callable[..., Path]) -> None:
    port = free_port()
    source = f"listen: 127.0.0.1:{port}\npath: /shared/orders"
    project = make_project({"dup-a": channel_yaml("dup-a", source), "dup-b": channel_yaml("dup-b", source)})
    with EngineThread(project) as engine:
        states = sorted(rt.state for rt in engine.engine.channels.values())
        assert states == ["started", "stopped"]
        answer = call("POST", f"http://127.0.0.1:{port}/shared/orders", b"{}")
        assert answer.status == 202
        owner = next(name for name, rt in engine.engine.channels.items() if rt.state == "started")
        assert engine.run(engine.engine.store.get(answer.json()["message_id"])).summary.channel == owner


@dataclass
class Pki:
    dir: Path
    ca: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (CN client-7)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())

    def cert(cn: str, key: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Web Test CA")]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        return builder.sign(ca_key, hashes.SHA256())

    def write(name: str, item: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        (directory / f"{name}.pem").write_bytes(item.public_bytes(serialization.Encoding.PEM))
        (directory / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return directory / f"{name}.pem", directory / f"{name}.key"

    ca_pem, _ = write("ca", cert("Web Test CA", ca_key, ca=True), ca_key)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    write("server", cert("localhost", server_key, ca=False), server_key)
    client_pem, client_key_path = write("client", cert("client-7", client_key, ca=False), client_key)
    return Pki(directory, ca_pem, client_pem, client_key_path)


def test_mutual_tls_records_the_client_subject(make_project: Callable[..., Path]) -> None:
    source = (
        "listen: 127.0.0.1:0\n"
        "tls: {cert_file: certs/server.pem, key_file: certs/server.key, client_ca_file: certs/ca.pem, "
        "require_client_cert: true}"
    )
    project = make_project({"mtls": channel_yaml("mtls", source)})
    (project / "certs").mkdir()
    pki = make_pki(project / "certs")
    with EngineThread(project) as engine:
        url = url_of(engine, "mtls", scheme="https")
        with_cert = ssl.create_default_context(cafile=pki.ca)
        with_cert.load_cert_chain(pki.client_cert, pki.client_key)
        answer = call("POST", url, b'{"a": 1}', tls=with_cert)
        assert answer.status == 202
        stored = engine.run(engine.engine.store.get(answer.json()["message_id"]))
        assert stored.summary.source["tls_subject"] == "client-7"
        without = ssl.create_default_context(cafile=pki.ca)
        with pytest.raises(aiohttp.ClientError):
            call("POST", url, b'{"a": 1}', tls=without)
        with pytest.raises(aiohttp.ClientError):  # plain HTTP on a TLS port
            call("POST", url.replace("https:", "http:"), b'{"a": 1}')
        assert engine.run(engine.engine.store.counters("mtls")).get("ERROR", 0) == 0


def test_listener_conflicts_are_refused_and_leave_the_listener_serving() -> None:
    from aiohttp import web

    from engine.connectors.tls import ServerTlsConfig
    from engine.connectors.web import hub

    async def hello(request: web.Request, rest: str) -> web.StreamResponse:
        return web.Response(text=f"rest={rest}")

    async def go() -> None:
        port = free_port()
        listener = await hub.mount("127.0.0.1", port, hub.Mount("/a", "chan-a", hello))
        try:
            with pytest.raises(hub.ListenerConflict, match="already used by channel chan-a"):
                await hub.mount("127.0.0.1", port, hub.Mount("/a", "chan-b", hello))
            tls = ServerTlsConfig.model_validate({"cert_file": "x.pem", "key_file": "x.key"})
            with pytest.raises(hub.ListenerConflict, match="different TLS settings"):
                await hub.mount("127.0.0.1", port, hub.Mount("/b", "chan-b", hello), tls_key=tls)
            nested = await hub.mount("127.0.0.1", port, hub.Mount("/a/b", "chan-c", hello))
            assert nested is listener
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                for path, text in (("/a/x/y", "rest=/x/y"), ("/a/b/z", "rest=/z"), ("/a", "rest=")):
                    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                        assert (response.status, await response.text()) == (200, text)
            await hub.unmount(listener, "/a/b")
        finally:
            await hub.unmount(listener, "/a")
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass

    asyncio.run(go())
