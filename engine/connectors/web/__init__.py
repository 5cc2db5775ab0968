"""HTTP and FHIR R4 sources on shared aiohttp listeners.

Specs and configs live here; the listeners (``hub``), the HTTP source (``source``) and the
FHIR endpoint (``fhir``) load only when a channel uses them.
"""

from __future__ import annotations

from engine.connectors.web.config import FhirSourceConfig, HttpAuthConfig, HttpSourceConfig
from engine.core.spec import Example, source_spec

__all__ = ["FHIR_SOURCE", "HTTP_SOURCE", "FhirSourceConfig", "HttpAuthConfig", "HttpSourceConfig"]

HTTP_SOURCE = source_spec(
    name="http",
    summary="Receive JSON, XML, HL7 v2 or X12 over HTTP(S): 202 once stored, or a synchronous answer.",
    config=HttpSourceConfig,
    factory="engine.connectors.web.source:HttpSource",
    status="beta",
    since="0.2",
    capabilities=frozenset({"tls", "responds"}),
    examples=(
        Example(
            "Supply orders from a SaaS platform, bearer token",
            "type: http\nlisten: 0.0.0.0:8781\nauth:\n  bearer_env: ORDERS_TOKEN\nmax_body_bytes: 1048576\n",
        ),
        Example(
            "Synchronous price check answered by the ERP destination",
            "type: http\n"
            "listen: 0.0.0.0:8781\n"
            "path: /api/price-check\n"
            "ack_mode: after_processing\n"
            "response: sync\n"
            "respond_from: erp-prices\n"
            "sync_timeout_secs: 10\n"
            "auth:\n"
            "  api_key_env: PRICE_CHECK_KEY\n"
            "  api_key_header: X-API-Key\n",
        ),
        Example(
            "HL7 v2 over HTTPS with client certificates",
            "type: http\n"
            "listen: 0.0.0.0:8443\n"
            "content_types: [x-application/hl7-v2+er7]\n"
            "auth:\n"
            "  basic_user_env: LAB_USER\n"
            "  basic_password_env: LAB_PASSWORD\n"
            "tls:\n"
            "  cert_file: certs/engine.pem\n"
            "  key_file: certs/engine.key\n"
            "  client_ca_file: certs/lab-ca.pem\n"
            "  require_client_cert: true\n",
        ),
    ),
)

FHIR_SOURCE = source_spec(
    name="fhir",
    summary="A FHIR R4 REST endpoint: create, batch and transaction Bundles, and a CapabilityStatement.",
    config=FhirSourceConfig,
    factory="engine.connectors.web.fhir:FhirSource",
    status="beta",
    since="0.2",
    capabilities=frozenset({"tls", "responds"}),
    examples=(
        Example(
            "Supply deliveries and charge items from a SaaS platform",
            "type: fhir\n"
            "listen: 0.0.0.0:8781\n"
            "resource_types: [SupplyDelivery, ChargeItem]\n"
            "auth:\n"
            "  bearer_env: FHIR_INBOUND_TOKEN\n",
        ),
        Example(
            "Validate before answering (422 on business-rule failures)",
            "type: fhir\nack_mode: after_processing\nsync_timeout_secs: 20\nresource_types: [SupplyRequest]\n",
        ),
    ),
)
