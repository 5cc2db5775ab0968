"""The dashboard in a real browser (Debian's chromium, headless, over DevTools): sign-in by
link or token, channels with counters and problems, a channel action, the message list and
a message's detail, and nothing but the page's own files and the API."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from engine.testing.browser import Chromium, chromium_path
from engine.testing.peers import EngineProcess, mllp_exchange, msa

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed (.ci/run installs it)"),
]

CHANNEL = """
    name: lab-in
    source: {type: mllp, listen: 127.0.0.1:0}
    pipeline: {datatype: hl7v2}
    destinations:
      - {name: archive, type: file, directory: var/out/lab}
      - {name: erp, type: http, url: "${ERP_URL:-}"}
    alerts:
      queue: {depth: 2}
"""
ROWS = "[...document.querySelectorAll('#{table} tbody tr')].map(tr => tr.innerText)"


def oru(n: int) -> bytes:
    return f"MSH|^~\\&|LAB|GH|JUNCTION|ERP|20261130101500||ORU^R01|LAB{n}|P|2.5.1\rPID|1||{n}^^^GH^MR\r".encode()


@pytest.fixture
def engine(tmp_path: Path) -> EngineProcess:
    (tmp_path / "channels").mkdir()
    (tmp_path / "channels" / "lab-in.yaml").write_text(textwrap.dedent(CHANNEL), encoding="utf-8")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "junction.yaml").write_text(
        "api: {listen: '${JUNCTION_API_LISTEN:-127.0.0.1:8780}'}\nalerts: {check_secs: 0.2}\n", encoding="utf-8"
    )
    with EngineProcess(tmp_path) as running:
        with socket.create_connection(running.address("lab-in"), timeout=10) as sock:
            assert [msa(mllp_exchange(sock, oru(n)))[0] for n in range(3)] == ["AA"] * 3
            assert msa(mllp_exchange(sock, b"not a message"))[0] == "AR"
        deadline = time.monotonic() + 15
        while running.call("GET", "/api/channels/lab-in")["counters"].get("dest:archive:SENT", 0) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield running


def test_the_dashboard_shows_channels_and_messages_and_acts(engine: EngineProcess) -> None:
    async def scenario() -> None:
        async with Chromium() as page:
            await page.goto(f"{engine.api}/dashboard#token={engine.token}")
            await page.wait_for("document.body.dataset.loaded === 'true'")
            # the token left the address bar for the tab's storage
            assert await page.evaluate("location.hash") == ""
            assert await page.evaluate("sessionStorage.getItem('junction-token')") == engine.token
            channels = await page.wait_for(ROWS.format(table="channels"))
            assert len(channels) == 1
            line = channels[0]
            assert line.startswith("lab-in")
            assert "started" in line
            assert "mllp 127.0.0.1:" in line
            assert "archive: sent 3" in line
            assert "erp: queued 3" in line
            assert "url is not configured" in line  # the destination's problem
            # the raised queue alert (3 waiting for erp, threshold 2) shows as a problem
            await page.wait_for("(r => r[0].includes('alert: queue-depth erp'))(" + ROWS.format(table="channels") + ")")
            messages = await page.evaluate(ROWS.format(table="messages"))
            assert len(messages) == 4
            assert sum("LAB" in m for m in messages) == 3
            refused = [m for m in messages if "ERROR" in m]
            assert len(refused) == 1 and "parse" in refused[0]
            # a message's detail: destinations and attempts, no content
            await page.evaluate(
                "document.querySelector('#messages tbody tr[data-id]:not(:has(.status-ERROR))').click()"
            )
            await page.wait_for("!document.getElementById('detail').hidden")
            destinations = await page.wait_for(ROWS.format(table="detail-destinations"))
            assert sorted(d.split("\t")[1] for d in destinations) == ["archive", "erp"]
            assert "MSH|" not in await page.evaluate("document.body.innerText")
            shown = await page.evaluate("document.getElementById('detail-id').textContent")
            await page.evaluate("document.getElementById('reprocess').click()")
            deadline = time.monotonic() + 15
            while engine.call("GET", f"/api/messages/{shown}")["message"]["run"] != 2:
                assert time.monotonic() < deadline, "the reprocess button did not start a new run"
                await asyncio.sleep(0.1)
            # an action: pause from the page, seen by the API and by the page
            await page.evaluate(
                'document.querySelector(\'button[data-channel="lab-in"][data-action="pause"]\').click()'
            )
            await page.wait_for("document.querySelector('#channels .state').textContent === 'paused'")
            assert engine.call("GET", "/api/channels/lab-in")["state"] == "paused"
            # the channel filter lists the channels and keeps its options across refreshes
            options = "[...document.querySelectorAll('#filter-channel option')].map(o => o.value)"
            assert await page.wait_for(options) == ["", "lab-in"]
            await page.evaluate("document.querySelector('#filter-channel option[value=\"lab-in\"]').dataset.mark = 'x'")
            await asyncio.sleep(2.5)  # longer than one refresh
            assert await page.evaluate(
                "document.querySelector('#filter-channel option[value=\"lab-in\"]').dataset.mark"
            )
            # filters: only the refused message
            await page.evaluate(
                "const s = document.getElementById('filter-status'); s.value = 'ERROR';"
                " s.dispatchEvent(new Event('change'))"
            )
            await page.wait_for(
                "(r => r.length === 1 && r[0].includes('ERROR'))(" + ROWS.format(table="messages") + ")"
            )
            assert not [c for c in page.console if c.startswith("exception")], page.console

    asyncio.run(asyncio.wait_for(scenario(), 90))


def test_a_wrong_token_leads_back_to_sign_in(engine: EngineProcess) -> None:
    async def scenario() -> None:
        async with Chromium() as page:
            await page.goto(f"{engine.api}/dashboard#token=not-the-token")
            await page.wait_for("!document.getElementById('login').hidden")
            assert "refused" in await page.evaluate("document.getElementById('login-error').textContent")
            assert await page.evaluate("document.getElementById('app').hidden")
            # signing in with the right token through the form
            await page.evaluate(
                f"document.getElementById('token').value = {json.dumps(engine.token)};"
                " document.getElementById('login-form').requestSubmit()"
            )
            await page.wait_for("document.body.dataset.loaded === 'true'")
            assert (await page.evaluate(ROWS.format(table="channels")))[0].startswith("lab-in")

    asyncio.run(asyncio.wait_for(scenario(), 90))


def test_the_page_is_public_the_data_is_not(engine: EngineProcess) -> None:
    with urllib.request.urlopen(engine.api + "/dashboard", timeout=10) as response:
        page = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "lab-in" not in page  # no data in the page itself
    with urllib.request.urlopen(engine.api + "/", timeout=10) as response:
        assert response.url.endswith("/dashboard")
    for path in ("/api/channels", "/dashboard/../api/channels"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(engine.api + path, timeout=10)
        assert refused.value.code in (401, 404)
        refused.value.close()
    link = engine.cli("dashboard")
    assert link.returncode == 0, link.stderr
    assert link.stdout.strip() == f"{engine.api}/dashboard#token={engine.token}"
