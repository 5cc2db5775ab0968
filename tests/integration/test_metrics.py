"""/metrics on a running engine: store counters, intake and delivery latency histograms, in
the Prometheus text format as Prometheus's own parser reads it; token or basic auth."""

from __future__ import annotations

import base64
import socket
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.testing.peers import EngineProcess, mllp_exchange, msa

pytestmark = pytest.mark.integration

CHANNEL = """
    name: lab-in
    source: {type: mllp, listen: 127.0.0.1:0}
    pipeline: {datatype: hl7v2}
    destinations:
      - {name: archive, type: file, directory: var/out/lab}
      - {name: nowhere, type: http, url: "${NOWHERE_URL:-}"}
"""


def oru(n: int) -> bytes:
    return f"MSH|^~\\&|LAB|GH|JUNCTION|ERP|20261130101500||ORU^R01|M{n}|P|2.5.1\rPID|1||{n}^^^GH^MR\r".encode()


def scrape(engine: EngineProcess, authorization: str) -> str:
    request = urllib.request.Request(engine.api + "/metrics")
    request.add_header("Authorization", authorization)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_expose_counters_and_latency_histograms(tmp_path: Path) -> None:
    (tmp_path / "channels").mkdir()
    (tmp_path / "channels" / "lab-in.yaml").write_text(textwrap.dedent(CHANNEL), encoding="utf-8")
    with EngineProcess(tmp_path) as engine:
        with socket.create_connection(engine.address("lab-in"), timeout=10) as sock:
            assert [msa(mllp_exchange(sock, oru(n)))[0] for n in range(5)] == ["AA"] * 5
            assert msa(mllp_exchange(sock, b"garbage"))[0] == "AR"
        bearer = f"Bearer {engine.token}"
        delivered = ("junction_delivery_seconds_count", (("channel", "lab-in"), ("destination", "archive")))
        deadline = time.monotonic() + 15
        while samples(scrape(engine, bearer)).get(delivered) != 5:
            assert time.monotonic() < deadline, "the file deliveries never showed in the histogram"
            time.sleep(0.1)
        text = scrape(engine, bearer)
        values = samples(text)
        lab = (("channel", "lab-in"),)
        # counters from the store
        assert values[("junction_channel_messages", (*lab, ("status", "TRANSFORMED")))] == 5
        assert values[("junction_channel_messages", (*lab, ("status", "ERROR")))] == 1
        assert values[("junction_destination_messages", (*lab, ("destination", "archive"), ("status", "SENT")))] == 5
        assert values[("junction_destination_messages", (*lab, ("destination", "nowhere"), ("status", "QUEUED")))] == 5
        # every answered message is in the intake histogram, the refused one too
        assert values[("junction_intake_seconds_count", lab)] == 6
        buckets = sorted(
            (float(dict(labels)["le"]), value)
            for (name, labels), value in values.items()
            if name == "junction_intake_seconds_bucket"
        )
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
        assert buckets[-1] == (float("inf"), 6)
        assert 0 < values[("junction_intake_seconds_sum", lab)] < 6 * 5
        # the destination that cannot deliver has no delivery observations
        nowhere = ("junction_delivery_seconds_count", (*lab, ("destination", "nowhere")))
        assert values[nowhere] == 0
        assert 0 < values[(delivered[0].replace("_count", "_sum"), delivered[1])] < 5 * 15
        # what Prometheus scrapers send: basic auth with the token as the password
        basic = "Basic " + base64.b64encode(f"prometheus:{engine.token}".encode()).decode()
        assert "junction_intake_seconds_bucket" in scrape(engine, basic)
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(engine, "Bearer wrong")
        assert refused.value.code == 401
        refused.value.close()
        # no identifiers from the messages in the metrics
        assert "M1" not in text and "GH^MR" not in text
