"""The flagship ``or-implant-usage`` channel end to end, as shipped in channels/.

DFT^P03 messages arrive over MLLP; every FT1 line reaches the ERP as a SupplyUsage and
every chargeable line reaches billing as a ChargeEvent, both under one correlation id. A
high-cost item that cannot be billed is an EXCEPTION (AE to the EHR, nothing sent) until the
item master is fixed, the channel redeployed and the message reprocessed.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.core.message import Status
from engine.core.store import MessageQuery, MessageSummary
from engine.testing.peers import EngineThread, HttpPeer, Received, mllp_exchange, msa

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "hl7v2"
CHANNEL = "or-implant-usage"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def no_contract() -> bytes:
    """The mixed sample with its hip implant swapped for a high-cost item that has no contract."""
    raw = sample("dft_p03_or_implant_mixed.hl7").replace(b"DFT0000000311", b"DFT0000000314")
    return raw.replace(b"SUP-100234^Hip implant, femoral stem, size 12", b"SUP-600742^Pedicle screw, polyaxial")


def header(request: Received, name: str) -> str:
    return next(v for k, v in request.headers.items() if k.lower() == name.lower())


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition(), "timed out"


def by_control_id(peer: HttpPeer, key: str) -> dict[str, Received]:
    """Requests keyed by the control id in their objects' ``usage_id``/``transaction_id``."""
    found = {}
    for request in peer.snapshot():
        objects: list[dict[str, Any]] = json.loads(request.body)
        found[objects[0][key].split("-")[0]] = request
    return found


def summary(running: EngineThread, control_id: str) -> MessageSummary:
    query = MessageQuery(channel=CHANNEL, control_id=control_id)
    (found,) = running.run(running.engine.store.search(query))
    return found  # type: ignore[no-any-return]


def test_or_implant_usage_fans_out_filters_and_holds_unbillable_items(
    make_project,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    project: Path = make_project({CHANNEL: (ROOT / "channels" / f"{CHANNEL}.yaml").read_text(encoding="utf-8")})
    shutil.copytree(ROOT / "mappings", project / "mappings")
    with HttpPeer() as erp, HttpPeer() as rcm:
        monkeypatch.setenv("OR_USAGE_LISTEN", "127.0.0.1:0")
        monkeypatch.setenv("ERP_INVENTORY_URL", f"{erp.url}/inventory/issues")
        monkeypatch.setenv("RCM_CHARGES_URL", f"{rcm.url}/charges")
        with EngineThread(project) as running:
            _, port = running.address(CHANNEL)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                mixed = msa(mllp_exchange(sock, sample("dft_p03_or_implant_mixed.hl7"), timeout=5))
                plain = msa(mllp_exchange(sock, sample("dft_p03_or_supplies_not_chargeable.hl7"), timeout=5))
                no_code = mllp_exchange(sock, sample("dft_p03_or_implant_no_charge_code.hl7"), timeout=5)
                no_contract_ack = mllp_exchange(sock, no_contract(), timeout=5)
            wait_until(lambda: len(erp.snapshot()) == 2 and len(rcm.snapshot()) == 1)
            wait_until(lambda: Status.QUEUED not in summary(running, "DFT0000000312").destinations.values())
            plain_state = summary(running, "DFT0000000312")
            held = [summary(running, c) for c in ("DFT0000000313", "DFT0000000314")]
            time.sleep(0.2)  # nothing more may arrive for the held messages
            before_fix = (len(erp.snapshot()), len(rcm.snapshot()))

            # Fix the item master (charge code of the knee tray, contract of the pedicle
            # screw), redeploy so the tables reload, reprocess: each is delivered once.
            table = project / "mappings" / "tables" / "item_master.csv"
            text = table.read_text(encoding="utf-8")
            text = text.replace(",,C1776,", ",C-278-2002,C1776,").replace("C1713,,0278", "C1713,GPO-SPINE-2024-09,0278")
            table.write_text(text, encoding="utf-8")
            running.run(running.engine.act(CHANNEL, "redeploy"))
            for message in held:
                running.run(running.engine.reprocess(message.id))
            wait_until(lambda: len(erp.snapshot()) == 4 and len(rcm.snapshot()) == 3)
            done = ("DFT0000000313", "DFT0000000314")
            wait_until(lambda: all(Status.QUEUED not in summary(running, c).destinations.values() for c in done))
            reprocessed = [summary(running, c) for c in done]

    # One DFT with four FT1 lines: four SupplyUsage to the ERP, the two chargeable lines to RCM,
    # under one correlation id (the message's own).
    assert mixed == ("AA", "DFT0000000311") and plain == ("AA", "DFT0000000312")
    erp_requests, rcm_requests = by_control_id(erp, "usage_id"), by_control_id(rcm, "transaction_id")
    usage = json.loads(erp_requests["DFT0000000311"].body)
    assert [u["item"]["value"] for u in usage] == ["SUP-100234", "SUP-100877", "SUP-300450", "SUP-500118"]
    assert [u["chargeable"] for u in usage] == [True, True, False, False]
    charges = json.loads(rcm_requests["DFT0000000311"].body)
    assert [c["item"]["value"] for c in charges] == ["SUP-100234", "SUP-100877"]
    assert [c["charge_code"] for c in charges] == ["C-278-1001", "C-272-0044"]
    assert charges[0]["procedure"] == {"code": "C1776", "system": "hcpcs", "modifiers": []}
    assert "procedure" not in charges[1]  # no HCPCS for bone cement: no half-filled code
    assert charges[1]["amount"] == "371.00" and charges[1]["unit_price"] == "185.50"
    assert charges[0]["encounter"]["account_number"] == "ACCT700011"
    assert "TESTPATIENT" not in json.dumps(charges) + json.dumps(usage)
    correlation = header(erp_requests["DFT0000000311"], "X-Junction-Correlation-Id")
    assert correlation and correlation == header(rcm_requests["DFT0000000311"], "X-Junction-Correlation-Id")
    assert erp_requests["DFT0000000311"].path == "/inventory/issues"
    assert rcm_requests["DFT0000000311"].path == "/charges"

    # No chargeable line: FILTERED for billing, still SENT to the ERP.
    assert plain_state.destinations == {"erp-inventory": Status.SENT, "rcm-charges": Status.FILTERED}
    assert len(json.loads(erp_requests["DFT0000000312"].body)) == 3

    # Unbillable high-cost items: EXCEPTION with the rule, AE to the EHR, nothing sent.
    assert msa(no_code)[0] == "AE" and b"high-cost-needs-charge-code" in no_code
    assert msa(no_contract_ack)[0] == "AE" and b"high-cost-needs-contract" in no_contract_ack
    assert [m.status for m in held] == [Status.EXCEPTION, Status.EXCEPTION]
    assert "high-cost-needs-charge-code" in held[0].error and "high-cost-needs-contract" in held[1].error
    assert before_fix == (2, 1)

    # After the fix and a reprocess, each held message reached each destination exactly once.
    assert all(m.destinations == {"erp-inventory": Status.SENT, "rcm-charges": Status.SENT} for m in reprocessed)
    assert json.loads(rcm_requests["DFT0000000313"].body)[0]["charge_code"] == "C-278-2002"
    assert json.loads(erp_requests["DFT0000000314"].body)[0]["contract_id"] == "GPO-SPINE-2024-09"
    for control_id in ("DFT0000000313", "DFT0000000314"):
        assert header(erp_requests[control_id], "X-Junction-Correlation-Id") == header(
            rcm_requests[control_id], "X-Junction-Correlation-Id"
        )
