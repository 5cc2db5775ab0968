"""Latency histograms for ``/metrics`` (Prometheus), one registry per engine.

- ``junction_intake_seconds{channel}``: from a message's arrival to the moment the source
  may answer it (the durable commit; for ``after_processing`` also the processing), the
  ACK latency a sender sees minus the network;
- ``junction_delivery_seconds{channel,destination}``: from receipt to the durable SENT of a
  destination, the end-to-end latency of the interface.

Each channel keeps its labelled children, so an observation is one bucket search.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

# ACKs are milliseconds; deliveries behind a retry can take minutes.
INTAKE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.intake = Histogram(
            "junction_intake_seconds",
            "From a message's arrival to the moment its source may answer (durable commit).",
            ["channel"],
            buckets=INTAKE_BUCKETS,
            registry=self.registry,
        )
        self.delivery = Histogram(
            "junction_delivery_seconds",
            "From a message's receipt to its durable delivery (SENT) by a destination.",
            ["channel", "destination"],
            buckets=DELIVERY_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> str:
        """The histograms in the Prometheus text format."""
        return generate_latest(self.registry).decode()
