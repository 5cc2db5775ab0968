"""MLLP (Minimal Lower Layer Protocol): the HL7 v2 transport over TCP, optionally TLS.

Specs and configs live here; the listener (``source.py``), the sender
(``destination.py``) and the sans-IO framer (``framing.py``) load only when used.
"""

from __future__ import annotations

from engine.connectors.mllp.config import MllpDestinationConfig, MllpSourceConfig
from engine.core.spec import Example, destination_spec, source_spec

__all__ = ["MLLP_DESTINATION", "MLLP_SOURCE", "MllpDestinationConfig", "MllpSourceConfig"]

MLLP_SOURCE = source_spec(
    name="mllp",
    summary="Receive HL7 v2 over MLLP (TCP, optional TLS): persistent connections, one ACK per frame.",
    config=MllpSourceConfig,
    factory="engine.connectors.mllp.source:MllpSource",
    capabilities=frozenset({"tls", "responds"}),
    examples=(
        Example("EHR ADT feed", "type: mllp\nlisten: 0.0.0.0:6661\n"),
        Example(
            "Charges over mutual TLS, ACK after processing",
            "type: mllp\n"
            "listen: 0.0.0.0:6671\n"
            "ack_mode: after_processing\n"
            "idle_timeout_secs: 600\n"
            "tls:\n"
            "  cert_file: certs/engine.pem\n"
            "  key_file: certs/engine.key\n"
            "  client_ca_file: certs/ehr-ca.pem\n"
            "  require_client_cert: true\n",
        ),
    ),
)

MLLP_DESTINATION = destination_spec(
    name="mllp",
    summary="Send HL7 v2 over MLLP (TCP, optional TLS) and check each ACK (MSA-1, MSA-2).",
    config=MllpDestinationConfig,
    factory="engine.connectors.mllp.destination:MllpDestination",
    capabilities=frozenset({"tls"}),
    examples=(
        Example("Lab orders", "type: mllp\nname: lab-orders\nendpoint: lab.example.org:6661\n"),
        Example(
            "Billing system over TLS, AE is final",
            "type: mllp\n"
            "name: billing\n"
            "endpoint: billing.example.org:7001\n"
            "ack_timeout_secs: 60\n"
            "on_ae: error\n"
            "tls:\n"
            "  ca_file: certs/billing-ca.pem\n",
        ),
    ),
)
