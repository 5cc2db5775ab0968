"""Watched-folder source against the real filesystem, inotify and a real engine.

Covers the completeness rule (a slow writer that pauses longer than stable_secs, a
temp-then-rename writer, a file there before start-up), claim and archive, delete mode
with the polling observer, recovery of a file claimed before a crash, responses written
back, and a bad file that lands in the error folder with a reason and is stored as ERROR.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.testing.peers import EngineProcess, EngineThread

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "hl7v2"
DEADLINE_SECS = 15.0


def message(control_id: str) -> bytes:
    return (
        "MSH|^~\\&|EHR|GENERAL HOSP|JUNCTION|ERP|20261122101500||ADT^A01^ADT_A01|"
        f"{control_id}|P|2.5.1\r"
        "EVN|A01|20261122101500\r"
        f"PID|1||MRN{control_id}^^^GH^MR||TESTPATIENT^ALPHA||19700101|F\r"
        "PV1|1|I|4N^401^1^GH\r"
    ).encode()


def wait_for(check: Callable[[], bool], what: str, timeout: float = DEADLINE_SECS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def files(directory: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in directory.rglob(pattern) if p.is_file()) if directory.exists() else []


def channel(name: str, extra: str = "") -> str:
    return f"""
    name: {name}
    source:
      type: folder
      path: inbox
      stable_secs: 0.3
      rescan_secs: 5
      response_dir: acks
      response_name: "{{stem}}.ack"
{extra}
    pipeline:
      datatype: hl7v2
    destinations:
      - name: out
        type: file
        directory: out
        filename: "{{control_id}}.hl7"
"""


def test_only_complete_files_are_taken_and_archived(make_project: Callable[[dict[str, str]], Path]) -> None:
    project = make_project({"folder-in": channel("folder-in")})
    inbox = project / "inbox"
    inbox.mkdir()
    (inbox / "early.hl7").write_bytes(message("EARLY"))  # there before start-up: no event for it
    with EngineThread(project):
        wait_for(lambda: (project / "out" / "EARLY.hl7").exists(), "the start-up scan")

        # A slow writer that pauses much longer than stable_secs with the file open.
        slow = message("SLOW")
        with open(inbox / "slow.hl7", "wb") as fh:
            fh.write(slow[:40])
            fh.flush()
            os.fsync(fh.fileno())
            time.sleep(1.2)  # the writer's pause (not synchronisation): 4x stable_secs
            assert not (project / "out" / "SLOW.hl7").exists(), "a file still open for writing was taken"
            fh.write(slow[40:])
        # Temp name first, then a rename into the final name.
        (inbox / "renamed.hl7.tmp").write_bytes(message("RENAMED"))
        os.rename(inbox / "renamed.hl7.tmp", inbox / "renamed.hl7")

        wait_for(lambda: len(files(project / "out")) == 3, "three delivered files")
        wait_for(lambda: len(files(inbox / ".junction" / "archive")) == 3, "three archived files")

    assert (project / "out" / "SLOW.hl7").read_bytes() == slow
    assert (project / "out" / "RENAMED.hl7").read_bytes() == message("RENAMED")
    archived = {p.name: p.read_bytes() for p in files(inbox / ".junction" / "archive")}
    assert archived == {"early.hl7": message("EARLY"), "slow.hl7": slow, "renamed.hl7": message("RENAMED")}
    assert {p.name for p in inbox.iterdir()} == {".junction", "acks"}, "every input file was moved away"
    assert files(inbox / ".junction" / "work") == []
    acks = files(project / "inbox" / "acks")
    assert sorted(p.name for p in acks) == ["early.ack", "renamed.ack", "slow.ack"]
    assert all(b"MSA|AA|" in p.read_bytes() for p in acks)


def test_delete_mode_with_polling_and_a_file_claimed_before_a_crash(
    make_project: Callable[[dict[str, str]], Path],
) -> None:
    extra = "      polling: true\n      after: delete\n      recursive: true\n      work_dir: /WORK\n"
    project = make_project({"poll-in": ""})
    work = project / "claimed"
    (project / "channels" / "poll-in.yaml").write_text(
        __import__("textwrap").dedent(channel("poll-in", extra)).replace("/WORK", str(work)), encoding="utf-8"
    )
    inbox = project / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (work / "sub").mkdir(parents=True)
    (work / "sub" / "left.hl7").write_bytes(message("LEFT"))  # claimed, then the engine died
    with EngineThread(project):
        (inbox / "sub" / "nested.hl7").write_bytes(message("NESTED"))
        (inbox / "ignored.hl7.part").write_bytes(b"partial")
        wait_for(lambda: len(files(project / "out")) == 2, "two delivered files")
        wait_for(lambda: not (inbox / "sub" / "nested.hl7").exists(), "the nested file to be deleted")

    assert {p.name for p in files(project / "out")} == {"LEFT.hl7", "NESTED.hl7"}
    assert files(work) == []
    assert (inbox / "ignored.hl7.part").read_bytes() == b"partial", "a temp name must never be taken"
    assert not (inbox / ".junction" / "archive").exists(), "after: delete keeps no archive"


def test_bad_file_goes_to_the_error_folder_with_a_reason_and_is_stored(
    make_project: Callable[[dict[str, str]], Path],
) -> None:
    project = make_project({"bad-in": channel("bad-in")})
    inbox = project / "inbox"
    inbox.mkdir()
    with EngineProcess(project) as engine:
        (inbox / "garbage.hl7").write_bytes(b"this is not HL7 at all\r")
        (inbox / "good.hl7").write_bytes(message("GOOD"))
        error_dir = inbox / ".junction" / "error"
        wait_for(lambda: (error_dir / "garbage.hl7.reason.txt").exists(), "the reason file")
        wait_for(lambda: (project / "out" / "GOOD.hl7").exists(), "the good file's delivery")
        stored = engine.call("GET", "/api/messages?channel=bad-in&status=ERROR")
        listed = engine.cli("message", "list", "--channel", "bad-in")

    assert (error_dir / "garbage.hl7").read_bytes() == b"this is not HL7 at all\r"
    reason = (error_dir / "garbage.hl7.reason.txt").read_text()
    assert "file: garbage.hl7" in reason and "reason: parse:" in reason
    assert "not HL7" not in reason, "the reason must not quote the content"
    assert len(stored) == 1 and stored[0]["status"] == "ERROR"
    assert stored[0]["source"]["file"] == "garbage.hl7" and stored[0]["source"]["transport"] == "folder"
    assert stored[0]["id"] in reason
    assert listed.returncode == 0 and stored[0]["id"] in listed.stdout
    assert (inbox / ".junction" / "archive" / "good.hl7").exists()
    assert b"MSA|AR|" in (inbox / "acks" / "garbage.ack").read_bytes()


def test_a_claimed_file_already_committed_before_a_crash_is_archived_not_stored_again(
    make_project: Callable[[dict[str, str]], Path],
) -> None:
    import hashlib

    from engine.connectors.intake import dedupe_key
    from engine.core.store import MessageQuery

    extra = "      rescan_secs: 0.2\n"
    project = make_project({"dedupe-in": channel("dedupe-in").replace("      rescan_secs: 5\n", extra)})
    inbox = project / "inbox"
    work = inbox / ".junction" / "work"
    raw = message("ONCE")
    with EngineThread(project) as engine:
        runtime = engine.engine.channels["dedupe-in"]
        mtime_ns = 1_700_000_000_123_456_789
        key = dedupe_key("once.hl7", len(raw), str(mtime_ns), hashlib.sha256(raw).hexdigest())
        # What the source did before the crash: the file was committed, then the process died
        # before it could archive the file, which is still in the work folder.
        first = engine.run(runtime.submit(raw, {"transport": "folder", "file": "once.hl7"}, dedupe_key=key))
        work.mkdir(parents=True, exist_ok=True)
        staged = project / "once.hl7"
        staged.write_bytes(raw)
        os.utime(staged, ns=(mtime_ns, mtime_ns))
        os.rename(staged, work / "once.hl7")
        wait_for(lambda: (inbox / ".junction" / "archive" / "once.hl7").exists(), "the archived file")
        wait_for(lambda: (project / "out" / "ONCE.hl7").exists(), "the delivery")
        stored = engine.run(engine.engine.store.search(MessageQuery(channel="dedupe-in", limit=10)))

    assert first.accepted and first.status != "DUPLICATE"
    assert [m.id for m in stored] == [first.message_id], "the recovered file must not be stored a second time"
    assert files(work) == []
