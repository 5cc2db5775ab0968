"""SOAP destination: each message becomes one SOAP 1.1 or 1.2 call, optionally with WS-Security.

The body is either the message's own XML (the transformed content) or an XML *template*
filled from the message's JSON (canonical objects). Templates are plain XML files; a text
node or attribute that is exactly ``{{ path }}`` takes the value at that dotted path, and an
element with ``j:repeat="lines"`` (``xmlns:j="urn:junction:template"``) is repeated for
each item of that list, paths inside it starting at the item. Values are set through lxml,
so they are always escaped.

SOAP faults are recorded as errors carrying the fault code: a Client/Sender fault fails the
message (the request itself is wrong), a Server/Receiver fault is retried. The fault text
is kept with the stored response, never in logs.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_validator

from engine.connectors.http import classify, http_url, read_capped, status_text, transport_error, url_problem
from engine.core.channel import DestinationConfig, Strict
from engine.core.errors import PermanentError, RetryableError
from engine.core.message import Outbound, SendResult
from engine.core.spec import Example, destination_spec
from engine.core.values import lookup

if TYPE_CHECKING:
    import aiohttp
    from lxml import etree

__all__ = ["SOAP_DESTINATION", "SoapDestination", "SoapDestinationConfig", "fill_template"]

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
TOKEN_PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"  # noqa: S105
BASE64_BINARY = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
TEMPLATE_NS = "urn:junction:template"
_PLACEHOLDER = re.compile(r"^\s*\{\{\s*([A-Za-z0-9_.\[\]-]+)\s*\}\}\s*$")


class WsSecurity(Strict):
    """WS-Security UsernameToken (OASIS Username Token Profile 1.0/1.1) in the SOAP header."""

    username: str = Field(description="User name; may come from ${VAR}. Empty (unset variable) holds the queue.")
    password: SecretStr = Field(description="Password; write ${VAR}, never the password itself.")
    password_type: Literal["text", "digest"] = Field(
        "text", description="text: PasswordText (use over TLS only); digest: SHA-1 PasswordDigest with nonce and time."
    )
    timestamp_secs: int = Field(300, ge=0, description="Add a wsu:Timestamp valid this long (0: no timestamp).")


class SoapDestinationConfig(DestinationConfig):
    """Call a SOAP operation for each message."""

    url: str = Field("", description="The service endpoint (http or https); an unset variable holds the queue.")
    soap_version: Literal["1.1", "1.2"] = Field("1.1", description="SOAP 1.1 (text/xml) or 1.2 (application/soap+xml).")
    action: str = Field("", description="The SOAPAction (1.1 header, 1.2 action parameter) of the operation.")
    template: str | None = Field(
        None,
        description="XML body template filled from the JSON content (relative to the project root); "
        "without it the content must be XML and becomes the body as it is.",
    )
    ws_security: WsSecurity | None = Field(None, description="Add a WS-Security UsernameToken header.")
    timeout_secs: float = Field(30.0, gt=0, description="Give up on a call after this long.")
    max_response_bytes: int = Field(262144, ge=0, description="Keep at most this much of each response.")
    verify_tls: bool = Field(True, description="Verify the server certificate; false only for tests.")

    @field_validator("url")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        return http_url(value)


def _parser() -> etree.XMLParser:
    from lxml import etree

    # No DTDs, entities or network: responses and templates are untrusted input.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def fill_template(template: etree._Element, data: Any) -> etree._Element:
    """A filled copy of ``template`` (see the module docstring for the placeholder rules).

    >>> from lxml import etree
    >>> t = etree.fromstring('<o xmlns:j="urn:junction:template"><n>{{ po }}</n>'
    ...                      '<l j:repeat="lines" q="{{ qty }}">{{ item }}</l></o>')
    >>> etree.tostring(fill_template(t, {"po": "P<1>", "lines": [{"item": "A", "qty": 2}, {"item": "B", "qty": 1}]}))
    b'<o><n>P&lt;1&gt;</n><l q="2">A</l><l q="1">B</l></o>'
    """
    root = copy.deepcopy(template)
    _fill(root, data)
    from lxml import etree

    for element in root.iter():
        if isinstance(element.tag, str):
            for name in [n for n in element.attrib if n.startswith(f"{{{TEMPLATE_NS}}}")]:
                del element.attrib[name]
    etree.cleanup_namespaces(root)
    return root


def _fill(element: etree._Element, data: Any) -> None:
    repeat_attr = f"{{{TEMPLATE_NS}}}repeat"
    for child in list(element):
        if not isinstance(child.tag, str):
            continue
        path = child.get(repeat_attr)
        if path is None:
            _fill(child, data)
            continue
        items = lookup(data, path)
        parent = element
        position = parent.index(child)
        parent.remove(child)
        for offset, value in enumerate(items if isinstance(items, list) else []):
            copy_ = copy.deepcopy(child)
            del copy_.attrib[repeat_attr]
            _fill(copy_, value)
            parent.insert(position + offset, copy_)
    _substitute(element, data)


def _substitute(element: etree._Element, data: Any) -> None:
    if element.text is not None:
        match = _PLACEHOLDER.match(element.text)
        if match:
            element.text = _text(lookup(data, match.group(1)))
    for name, value in element.attrib.items():
        match = _PLACEHOLDER.match(value)
        if match:
            element.set(name, _text(lookup(data, match.group(1))))


def username_token(security: WsSecurity, soap_ns: str, now: float | None = None, nonce: bytes | None = None) -> Any:
    """The ``wsse:Security`` header element for ``security``."""
    from lxml import etree

    moment = dt.datetime.fromtimestamp(time.time() if now is None else now, tz=dt.UTC)
    created = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    header = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE, "wsu": WSU})
    header.set(f"{{{soap_ns}}}mustUnderstand", "1" if soap_ns == SOAP11 else "true")
    if security.timestamp_secs:
        stamp = etree.SubElement(header, f"{{{WSU}}}Timestamp")
        stamp.set(f"{{{WSU}}}Id", "TS-1")
        etree.SubElement(stamp, f"{{{WSU}}}Created").text = created
        expires = moment + dt.timedelta(seconds=security.timestamp_secs)
        etree.SubElement(stamp, f"{{{WSU}}}Expires").text = expires.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    token = etree.SubElement(header, f"{{{WSSE}}}UsernameToken")
    token.set(f"{{{WSU}}}Id", "UT-1")
    etree.SubElement(token, f"{{{WSSE}}}Username").text = security.username
    password = etree.SubElement(token, f"{{{WSSE}}}Password")
    secret = security.password.get_secret_value()
    if security.password_type == "digest":  # noqa: S105 - a mode name, not a password
        raw_nonce = nonce if nonce is not None else os.urandom(16)
        digest = hashlib.sha1(raw_nonce + created.encode() + secret.encode()).digest()  # noqa: S324 - the profile's algorithm
        password.set("Type", f"{TOKEN_PROFILE}#PasswordDigest")
        password.text = base64.b64encode(digest).decode("ascii")
        nonce_el = etree.SubElement(token, f"{{{WSSE}}}Nonce")
        nonce_el.set("EncodingType", BASE64_BINARY)
        nonce_el.text = base64.b64encode(raw_nonce).decode("ascii")
    else:
        password.set("Type", f"{TOKEN_PROFILE}#PasswordText")
        password.text = secret
    etree.SubElement(token, f"{{{WSU}}}Created").text = created
    return header


def read_fault(body: bytes) -> tuple[str, str] | None:
    """(code, text) of a SOAP 1.1 or 1.2 fault in ``body``, or None when it holds none."""
    from lxml import etree

    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError:
        return None
    for ns in (SOAP11, SOAP12):
        fault = root.find(f"{{{ns}}}Body/{{{ns}}}Fault")
        if fault is None:
            continue
        if ns == SOAP11:
            code = (fault.findtext("faultcode") or "").strip()
            text = (fault.findtext("faultstring") or "").strip()
        else:
            code = (fault.findtext(f"{{{ns}}}Code/{{{ns}}}Value") or "").strip()
            sub = fault.findtext(f"{{{ns}}}Code/{{{ns}}}Subcode/{{{ns}}}Value")
            code = f"{code}/{sub.strip()}" if sub else code
            text = (fault.findtext(f"{{{ns}}}Reason/{{{ns}}}Text") or "").strip()
        return code or "(no fault code)", text
    return None


def _local(code: str) -> str:
    return code.split("/", 1)[0].rsplit(":", 1)[-1]


class SoapDestination:
    """Wraps each message in a SOAP envelope, posts it and classifies the answer."""

    def __init__(
        self,
        config: SoapDestinationConfig,
        *,
        channel: str,
        base_dir: Path,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.config = config
        self.channel = channel
        self._base_dir = base_dir
        self._log = log
        self._session: aiohttp.ClientSession | None = None
        self._template: etree._Element | None = None
        self._ns = SOAP11 if config.soap_version == "1.1" else SOAP12
        self.problem: str | None = url_problem(config.url)
        security = config.ws_security
        if not self.problem and security and (not security.username or not security.password.get_secret_value()):
            self.problem = "ws_security username or password is empty; set the environment variable used"
        parts = config.url.split("/")
        self._where = "/".join(parts[:3]) if not self.problem else "the endpoint"

    async def open(self) -> None:
        import aiohttp
        from lxml import etree

        if self.config.template and not self.problem:
            path = self._base_dir / self.config.template
            try:
                self._template = etree.parse(str(path), _parser()).getroot()
            except (OSError, etree.XMLSyntaxError) as exc:
                self.problem = f"template {self.config.template} cannot be read ({type(exc).__name__})"
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_secs)
        connector = aiohttp.TCPConnector(ssl=True if self.config.verify_tls else False)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def envelope(self, item: Outbound) -> bytes:
        """The SOAP envelope for ``item``; ``PermanentError`` when the content does not fit."""
        from lxml import etree

        ns = self._ns
        env = etree.Element(f"{{{ns}}}Envelope", nsmap={"soap": ns})
        header = etree.SubElement(env, f"{{{ns}}}Header")
        if self.config.ws_security:
            header.append(username_token(self.config.ws_security, ns))
        body = etree.SubElement(env, f"{{{ns}}}Body")
        if self._template is not None:
            try:
                data = json.loads(item.content)
            except ValueError as exc:
                raise PermanentError("the SOAP template needs JSON content; the message content is not JSON") from exc
            body.append(fill_template(self._template, {"items": data} if isinstance(data, list) else data))
        else:
            try:
                body.append(etree.fromstring(item.content, _parser()))
            except etree.XMLSyntaxError as exc:
                raise PermanentError("the content is not XML and the destination has no template") from exc
        if not len(header):
            env.remove(header)
        return bytes(etree.tostring(env, xml_declaration=True, encoding="utf-8"))

    async def send(self, item: Outbound) -> SendResult:
        import aiohttp

        if self.problem:
            raise RetryableError(self.problem)
        if self._session is None:
            raise RetryableError("the SOAP destination is not open")
        payload = self.envelope(item)
        headers = {"Idempotency-Key": item.idempotency_key, "X-Junction-Message-Id": item.message_id}
        if self.config.soap_version == "1.1":
            headers["Content-Type"] = "text/xml; charset=utf-8"
            headers["SOAPAction"] = f'"{self.config.action}"'
        else:
            action = f'; action="{self.config.action}"' if self.config.action else ""
            headers["Content-Type"] = f"application/soap+xml; charset=utf-8{action}"
        try:
            async with self._session.post(self.config.url, data=payload, headers=headers, allow_redirects=False) as r:
                body = await read_capped(r, self.config.max_response_bytes)
                status, response_headers = r.status, r.headers
        except (aiohttp.ClientError, OSError) as exc:
            raise transport_error(exc, self._where, self.config.timeout_secs) from exc
        fault = read_fault(body) if body else None
        if fault is not None:
            code = fault[0]
            reason = f"SOAP fault {code} ({status_text(status)})"
            self._log.warning(
                "SOAP call answered with a fault.",
                extra={"destination": self.config.name, "message_id": item.message_id, "fault_code": code},
            )
            if _local(code) in ("Server", "Receiver"):
                raise RetryableError(reason, status_code=status, response=body)
            raise PermanentError(reason, status_code=status, response=body)
        return classify(status, response_headers, body)


SOAP_DESTINATION = destination_spec(
    name="soap",
    summary="Call a SOAP 1.1/1.2 operation per message (XML content or a template filled from JSON), "
    "optional WS-Security UsernameToken; faults are recorded with their code.",
    config=SoapDestinationConfig,
    factory="engine.connectors.soap:SoapDestination",
    capabilities=frozenset({"tls"}),
    examples=(
        Example(
            "ERP inventory issue from canonical SupplyUsage JSON, WS-Security digest",
            "type: soap\n"
            "name: erp-inventory-soap\n"
            "url: ${ERP_SOAP_URL}\n"
            "action: urn:erp:inventory/PostIssue\n"
            "template: mappings/soap/inventory-issue.xml\n"
            "ws_security:\n"
            "  username: ${ERP_SOAP_USER}\n"
            "  password: ${ERP_SOAP_PASSWORD}\n"
            "  password_type: digest\n",
        ),
        Example(
            "SOAP 1.2, the transformed XML is the body",
            "type: soap\nname: billing\nurl: https://billing.example.org/ws\nsoap_version: '1.2'\naction: urn:post\n",
        ),
    ),
)
