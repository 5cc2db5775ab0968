"""The SOAP destination against a real SOAP service (aiohttp + lxml on 127.0.0.1) that checks
WS-Security, the SOAPAction and answers faults."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from lxml import etree

from engine.connectors.soap import SOAP11, SOAP12, WSSE, WSU, SoapDestination, SoapDestinationConfig
from engine.core.errors import PermanentError, RetryableError
from engine.core.logs import bind
from engine.core.message import Outbound

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "junction", "pa<ss>&word"
SAFE = etree.XMLParser(resolve_entities=False, no_network=True)


@dataclass
class SoapService:
    """Accepts PostIssue calls with a valid UsernameToken; lot FAULT-C gives a Client fault, FAULT-S a Server one."""

    calls: list[etree._Element] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    def _authenticated(self, envelope: etree._Element, ns: str) -> bool:
        token = envelope.find(f"{{{ns}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        if token is None or token.findtext(f"{{{WSSE}}}Username") != USER:
            return False
        password = token.find(f"{{{WSSE}}}Password")
        assert password is not None
        if password.get("Type", "").endswith("#PasswordDigest"):
            nonce = base64.b64decode(token.findtext(f"{{{WSSE}}}Nonce") or "")
            created = token.findtext(f"{{{WSU}}}Created") or ""
            expected = base64.b64encode(hashlib.sha1(nonce + created.encode() + PASSWORD.encode()).digest()).decode()
            return password.text == expected
        return password.text == PASSWORD

    async def handle(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        envelope = etree.fromstring(await request.read(), SAFE)
        ns = envelope.tag[1:].split("}")[0]
        self.calls.append(envelope)
        if not self._authenticated(envelope, ns):
            return self.fault(ns, "Client", "FailedAuthentication")
        lots = [e.text for e in envelope.iter("{urn:erp:inventory}Lot")]
        if "FAULT-C" in lots:
            return self.fault(ns, "Client", "unknown item for patient DOE^JANE")
        if "FAULT-S" in lots:
            return self.fault(ns, "Server", "database busy")
        body = f'<e:Envelope xmlns:e="{ns}"><e:Body><r:Posted xmlns:r="urn:erp:inventory">OK</r:Posted></e:Body></e:Envelope>'
        return web.Response(body=body.encode(), content_type="text/xml")

    def fault(self, ns: str, kind: str, text: str) -> web.Response:
        if ns == SOAP11:
            inner = f"<faultcode>e:{kind}</faultcode><faultstring>{text}</faultstring>"
        else:
            code = "Sender" if kind == "Client" else "Receiver"
            inner = f"<e:Code><e:Value>e:{code}</e:Value></e:Code><e:Reason><e:Text xml:lang='en'>{text}</e:Text></e:Reason>"
        body = f'<e:Envelope xmlns:e="{ns}"><e:Body><e:Fault>{inner}</e:Fault></e:Body></e:Envelope>'
        return web.Response(status=500, body=body.encode(), content_type="text/xml")


@asynccontextmanager
async def serving(service: SoapService) -> AsyncIterator[SoapService]:
    app = web.Application()
    app.router.add_post("/ws/inventory", service.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    service.url = f"http://127.0.0.1:{runner.addresses[0][1]}/ws/inventory"
    try:
        yield service
    finally:
        await runner.cleanup()


def usage(lot: str, n: int = 1) -> bytes:
    line = {"usage_id": f"U{n}", "item": {"type": "buyer_item", "value": "SUP-100234"}, "quantity": "1", "uom": "EA"}
    return json.dumps([{**line, "lot": lot, "location": "ORSURG"}]).encode()


def build(service: SoapService, **extra: object) -> SoapDestination:
    config = SoapDestinationConfig.model_validate(
        {
            "type": "soap",
            "name": "erp-soap",
            "url": service.url,
            "action": "urn:erp:inventory/PostIssue",
            "template": "mappings/soap/inventory-issue.xml",
            "ws_security": {"username": USER, "password": PASSWORD, "password_type": "digest"},
            **extra,
        }
    )
    return SoapDestination(config, channel="c", base_dir=ROOT, log=bind(logging.getLogger("t"), channel="c"))


def item(content: bytes, n: int = 1) -> Outbound:
    return Outbound(f"M{n}", "c", "erp-soap", f"M{n}", content, "application/json")


def test_template_call_with_digest_token_and_soap_action() -> None:
    async def scenario() -> None:
        async with serving(SoapService()) as service:
            dest = build(service)
            await dest.open()
            try:
                result = await dest.send(item(usage("LOT-7")))
            finally:
                await dest.close()
            assert result.status_code == 200 and b"Posted" in (result.response or b"")
            assert service.headers[0]["SOAPAction"] == '"urn:erp:inventory/PostIssue"'
            assert service.headers[0]["Idempotency-Key"] == "M1:erp-soap"
            line = service.calls[0].find(f"{{{SOAP11}}}Body/{{urn:erp:inventory}}PostIssue/{{urn:erp:inventory}}Line")
            assert line is not None
            assert line.findtext("{urn:erp:inventory}Item") == "SUP-100234"
            assert line.find("{urn:erp:inventory}Quantity").get("uom") == "EA"  # type: ignore[union-attr]
            assert line.findtext("{urn:erp:inventory}Lot") == "LOT-7"
            assert line.findtext("{urn:erp:inventory}Serial") == ""  # absent values stay empty
            assert not any("urn:junction:template" in (e.nsmap or {}).values() for e in service.calls[0].iter())

    asyncio.run(scenario())


def test_client_fault_fails_server_fault_retries_without_leaking_fault_text() -> None:
    async def scenario() -> None:
        async with serving(SoapService()) as service:
            dest = build(service, ws_security={"username": USER, "password": PASSWORD})  # PasswordText
            await dest.open()
            try:
                with pytest.raises(PermanentError) as client:
                    await dest.send(item(usage("FAULT-C")))
                with pytest.raises(RetryableError) as server:
                    await dest.send(item(usage("FAULT-S")))
            finally:
                await dest.close()
            assert "SOAP fault e:Client" in str(client.value) and "DOE" not in str(client.value)
            assert b"DOE^JANE" in (client.value.response or b"")  # kept with the stored response only
            assert "e:Server" in str(server.value)

    asyncio.run(scenario())


def test_wrong_password_is_a_client_fault_and_soap12_uses_its_content_type() -> None:
    async def scenario() -> None:
        async with serving(SoapService()) as service:
            dest = build(service, soap_version="1.2", ws_security={"username": USER, "password": "nope"})
            await dest.open()
            try:
                with pytest.raises(PermanentError) as refused:
                    await dest.send(item(usage("LOT-1")))
            finally:
                await dest.close()
            assert "e:Sender" in str(refused.value)
            content_type = service.headers[0]["Content-Type"]
            assert (
                content_type.startswith("application/soap+xml")
                and 'action="urn:erp:inventory/PostIssue"' in content_type
            )
            assert service.calls[0].tag == f"{{{SOAP12}}}Envelope"

    asyncio.run(scenario())


def test_xml_content_without_template_and_non_xml_is_permanent() -> None:
    async def scenario() -> None:
        async with serving(SoapService()) as service:
            dest = build(service, template=None)
            await dest.open()
            try:
                ok = await dest.send(
                    item(b'<inv:PostIssue xmlns:inv="urn:erp:inventory"><inv:Lot>L1</inv:Lot></inv:PostIssue>')
                )
                with pytest.raises(PermanentError):
                    await dest.send(item(b"not xml"))
            finally:
                await dest.close()
            assert ok.status_code == 200 and len(service.calls) == 1

    asyncio.run(scenario())


def test_unset_credentials_hold_the_queue() -> None:
    dest = build(SoapService(url="http://127.0.0.1:9/ws"), ws_security={"username": "", "password": ""})
    assert dest.problem is not None and "ws_security" in dest.problem
