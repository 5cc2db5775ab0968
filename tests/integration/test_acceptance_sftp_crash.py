"""Acceptance: SIGKILL during an SFTP batch of 200 files; after a restart each file is processed once.

A real OpenSSH sshd serves 200 HL7 files (the ADT sample with a distinct MSH-10 each); the
engine's SFTP source feeds an HTTP destination pointed at a real aiohttp server. The engine
is killed with SIGKILL part-way through, then restarted. Afterwards every file was
delivered, each file produced exactly one message (one distinct Idempotency-Key per file;
a re-delivery of the same message is allowed), the store holds exactly 200 messages, and
every file is in the archive folder.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.testing.peers import EngineProcess, HttpPeer
from engine.testing.sshd import Sshd, available

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "hl7v2" / "adt_a01_admit.hl7"
FILES = 200
KILL_AFTER_DELIVERIES = 40


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    problem = available()
    if problem:
        pytest.skip(problem)
    with Sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def control_id(index: int) -> str:
    return f"SFTPCRASH{index:04d}"


def file_content(index: int) -> bytes:
    raw = SAMPLE.read_bytes()
    fields = raw.split(b"\r", 1)[0].split(b"|")
    original = fields[9]
    assert original, "the sample's MSH-10 is empty"
    return raw.replace(b"|" + original + b"|", b"|" + control_id(index).encode() + b"|", 1)


def control_id_of(body: bytes) -> str:
    return body.split(b"\r", 1)[0].split(b"|")[9].decode()


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


def test_sigkill_during_an_sftp_batch_processes_every_file_exactly_once(
    sshd: Sshd, make_project: Callable[[dict[str, str]], Path], tmp_path: Path
) -> None:
    remote = tmp_path / "partner" / "outbound"
    remote.mkdir(parents=True)
    for index in range(FILES):
        (remote / f"adt-{index:04d}.hl7").write_bytes(file_content(index))
    channel = f"""
    name: sftp-crash
    source:
      type: sftp
      host: 127.0.0.1
      port: {sshd.port}
      username: {sshd.user}
      known_hosts: {sshd.known_hosts}
      key_file: {sshd.client_key}
      path: {remote}
      glob: "*.hl7"
      poll_secs: 0.1
      stable_secs: 0.1
    pipeline:
      datatype: hl7v2
    destinations:
      - name: erp
        type: http
        url: ${{ERP_URL}}/adt
        retry: {{max_attempts: 0, backoff_secs: 0.1, max_backoff_secs: 0.5}}
    """
    project = make_project({"sftp-crash": channel})
    archive = remote / ".junction" / "archive"
    work = remote / ".junction" / "work"
    started = time.monotonic()
    with HttpPeer() as erp:
        env = {"ERP_URL": erp.url}
        engine = EngineProcess(project, env).start()
        try:
            assert wait_for(lambda: len(erp.snapshot()) >= KILL_AFTER_DELIVERIES, 30), engine.log_text()[-3000:]
        finally:
            engine.kill()
        archived_at_kill = len(list(archive.glob("*.hl7"))) if archive.exists() else 0
        left_at_kill = len(list(remote.glob("*.hl7")))
        claimed_at_kill = len(list(work.glob("*.hl7"))) if work.exists() else 0
        assert left_at_kill > 0, "the kill came too late: every file had been claimed"

        restarted = EngineProcess(project, env).start()
        try:
            every = {control_id(i) for i in range(FILES)}
            done = wait_for(
                lambda: (
                    {control_id_of(r.body) for r in erp.snapshot()} >= every
                    and len(list(archive.glob("*.hl7"))) == FILES
                ),
                40,
            )
            stored = restarted.call("GET", "/api/messages?channel=sftp-crash&limit=1000")
        finally:
            restarted.stop()
        deliveries = erp.snapshot()

    elapsed = time.monotonic() - started
    print(
        f"at the kill: {archived_at_kill} archived, {claimed_at_kill} claimed, {left_at_kill} not yet claimed; "
        f"recovered after restart: {restarted.log_text().count('found in the work folder')}; "
        f"{len(stored)} stored, {len(deliveries)} deliveries for "
        f"{len({control_id_of(r.body) for r in deliveries})} files; {elapsed:.1f}s"
    )
    assert done, f"not finished: {len(list(archive.glob('*.hl7')))} archived"
    assert len(stored) == FILES, f"the store holds {len(stored)} messages for {FILES} files"
    assert len({m["source"]["file"] for m in stored}) == FILES
    assert {m["control_id"] for m in stored} == every
    keys: dict[str, set[str]] = defaultdict(set)
    for request in deliveries:
        keys[control_id_of(request.body)].add(request.headers["Idempotency-Key"])
    by_control = {m["control_id"]: m["id"] for m in stored}
    assert set(keys) == every
    for cid, seen in keys.items():
        assert seen == {f"{by_control[cid]}:erp"}, f"{cid} was posted as {len(seen)} distinct messages"
    assert list(remote.glob("*.hl7")) == [], "every file left the inbox"
    assert list(work.glob("*")) == [], "no file stays claimed"
    assert sorted(p.read_bytes() for p in archive.glob("*.hl7")) == sorted(file_content(i) for i in range(FILES))
