"""The shipped sample channels (channels/*.yaml, unchanged) run end to end against real peers:
price-check answers synchronously, fhir-charges-in validates and maps FHIR, item-master-sync
sends an MFN^M16 over MLLP, remit-835-in and gpo-contract-prices take dropped files."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from engine.testing.peers import EngineThread, HttpPeer, MllpPeer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = ("price-check", "fhir-charges-in", "item-master-sync", "remit-835-in", "gpo-contract-prices")


def wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for folder in ("mappings", "samples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / "channels").mkdir()
    for name in CHANNELS:
        shutil.copy(ROOT / "channels" / f"{name}.yaml", tmp_path / "channels")
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "junction.yaml", tmp_path / "config")
    return tmp_path


def test_sample_channels_end_to_end(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with HttpPeer() as erp, MllpPeer() as ehr:
        for name, value in {
            "JUNCTION_HTTP_LISTEN": "127.0.0.1:0",
            "PRICE_CHECK_KEY": "pc-key",
            "EHR_FHIR_TOKEN": "fhir-token",
            "ERP_BASE_URL": erp.url,
            "RCM_CHARGES_URL": f"{erp.url}/rcm/charges",
            "ERP_INVENTORY_URL": f"{erp.url}/inventory/issues",
            "EHR_MFN_ENDPOINT": ehr.endpoint,
        }.items():
            monkeypatch.setenv(name, value)
        with EngineThread(project) as running:
            assert sorted(running.engine.channels) == sorted(CHANNELS)
            assert all(c.state == "started" for c in running.engine.channels.values())

            # price-check: synchronous answer from the item master, 422 for an unknown item
            host, port = running.address("price-check")
            url = f"http://{host}:{port}/channels/price-check"
            headers = {"Content-Type": "application/json", "X-API-Key": "pc-key"}
            status, item = post(url, json.dumps({"item": "SUP-100234"}).encode(), headers)
            assert status == 200 and item["unit_cost"] == "4250.00" and item["high_cost"] is True
            assert item["charge_code"] == "C-278-1001" and item["identifiers"][0]["value"] == "SUP-100234"
            status, problem = post(url, json.dumps({"item": "NOPE-1"}).encode(), headers)
            assert status == 422 and "item-known" in problem["detail"]

            # fhir-charges-in: a valid ChargeItem is created and reaches billing as a ChargeEvent
            host, port = running.address("fhir-charges-in")
            charge_item = (project / "samples" / "fhir" / "chargeitem_implant_billable.json").read_bytes()
            fhir_headers = {"Content-Type": "application/fhir+json", "Authorization": "Bearer fhir-token"}
            status, created = post(f"http://{host}:{port}/fhir/fhir-charges-in/ChargeItem", charge_item, fhir_headers)
            assert status == 201 and created["resourceType"] == "ChargeItem"
            charge = wait_for(lambda: [r for r in erp.snapshot() if r.path == "/rcm/charges"])
            assert json.loads(charge[0].body)["schema_version"] == "1.0"

            # item-master-sync: the ERP export becomes one MFN^M16 at the EHR
            inbox = project / "var" / "inbox" / "item-master"
            shutil.copy(project / "samples" / "flat" / "item_master_export.csv", inbox / "items.csv")
            (mfn,) = wait_for(lambda: ehr.snapshot())
            segments = mfn.split("\r")
            assert segments[0].split("|")[8] == "MFN^M16^MFN_M16"
            assert sum(1 for s in segments if s.startswith("ITM|")) == 9

            # remit-835-in: the remittance reaches cash posting and a 999 is written
            remit_in = project / "var" / "inbox" / "remit-835"
            sample_835 = project / "samples" / "x12" / "835_5010_remittance_adjustments.edi"
            shutil.copy(sample_835, remit_in / "payer-1.835")
            posted = wait_for(lambda: [r for r in erp.snapshot() if r.path == "/receivables/remittances"])
            assert json.loads(posted[0].body)["payment"]["amount"]
            ack = wait_for(lambda: next((project / "var" / "inbox" / "remit-835" / "acks").glob("payer-1.999"), None))
            assert b"ST*999" in ack.read_bytes()

            # gpo-contract-prices: the contract file becomes ContractPrice objects
            prices_in = project / "var" / "inbox" / "gpo-contracts"
            shutil.copy(project / "samples" / "flat" / "gpo_contract_prices.csv", prices_in / "contract.csv")
            prices = wait_for(lambda: [r for r in erp.snapshot() if r.path == "/purchasing/contract-prices"])
            assert len(json.loads(prices[0].body)) == 6
