"""SFTP source and destination against a real OpenSSH sshd on 127.0.0.1 (key-only auth).

The sshd serves the real filesystem (no chroot), so each test uses its own directories
under tmp_path as the remote paths.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.connectors.sftp import SftpDestination, SftpDestinationConfig
from engine.core.errors import PermanentError, RetryableError
from engine.core.logs import bind
from engine.core.message import Outbound
from engine.core.store import MessageQuery
from engine.testing.peers import EngineThread, free_port
from engine.testing.sshd import Sshd, available

pytestmark = pytest.mark.integration

DEADLINE_SECS = 15.0


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    problem = available()
    if problem:
        pytest.skip(problem)
    with Sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def message(control_id: str) -> bytes:
    return (
        "MSH|^~\\&|EHR|GENERAL HOSP|JUNCTION|ERP|20261122101500||ADT^A01^ADT_A01|"
        f"{control_id}|P|2.5.1\r"
        "EVN|A01|20261122101500\r"
        f"PID|1||MRN{control_id}^^^GH^MR||TESTPATIENT^ALPHA||19700101|F\r"
    ).encode()


def wait_for(check: Callable[[], bool], what: str, timeout: float = DEADLINE_SECS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sftp_channel(name: str, sshd: Sshd, remote: Path, pin: str, extra: str = "") -> str:
    return (
        textwrap.dedent(f"""
    name: {name}
    source:
      type: sftp
      host: 127.0.0.1
      port: {sshd.port}
      username: {sshd.user}
      {pin}
      key_file: {sshd.client_key}
      path: {remote}
      glob: "*.hl7"
      poll_secs: 0.2
      stable_secs: 0.2
    """)
        + textwrap.indent(textwrap.dedent(extra), "  ")
        + textwrap.dedent("""
    pipeline:
      datatype: hl7v2
    destinations:
      - name: out
        type: file
        directory: out
        filename: "{control_id}.hl7"
    """)
    )


@pytest.mark.parametrize("case", ["changed-key", "unknown-host", "wrong-fingerprint"])
def test_a_host_key_that_is_not_the_pinned_one_is_refused(
    case: str, sshd: Sshd, make_project: Callable[[dict[str, str]], Path], tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "a.hl7").write_bytes(message("A"))
    empty = tmp_path / "known_hosts.empty"
    empty.write_text("")
    pin = {
        "changed-key": f"known_hosts: {sshd.wrong_known_hosts}",
        "unknown-host": f"known_hosts: {empty}",
        "wrong-fingerprint": "host_key_sha256: SHA256:" + "Q" * 43,
    }[case]
    project = make_project({"pinned": sftp_channel("pinned", sshd, remote, pin)})
    with EngineThread(project) as engine:
        source = engine.engine.channels["pinned"].source
        wait_for(lambda: bool(getattr(source, "last_error", None)), "the refusal")
        assert "refused" in str(source.last_error)  # type: ignore[union-attr]
        assert engine.engine.channels["pinned"].state == "started", "a refused key must not stop the channel"
    assert (remote / "a.hl7").read_bytes() == message("A"), "nothing may be claimed from an unverified server"
    assert not (remote / ".junction").exists()
    assert not list((project / "out").glob("*")), "nothing may be delivered"


def test_files_are_archived_refused_ones_go_to_the_error_folder_and_responses_are_written(
    sshd: Sshd, make_project: Callable[[dict[str, str]], Path], tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    (remote / "sub").mkdir(parents=True)
    (remote / "good.hl7").write_bytes(message("GOOD"))
    (remote / "bad.hl7").write_bytes(b"not an HL7 message\r")
    (remote / "huge.hl7").write_bytes(message("HUGE") + b"Z" * 5000)
    (remote / "upload.hl7.part").write_bytes(b"half")
    (remote / "notes.txt").write_bytes(b"not matched by the glob")
    (remote / "sub" / "deep.hl7").write_bytes(message("DEEP"))  # recursive is off
    extra = """
    max_file_bytes: 2000
    archive_dir: done
    response_dir: acks
    response_name: "{stem}.ack"
    """
    pin = f"host_key_sha256: {sshd.fingerprint}"
    project = make_project({"sftp-in": sftp_channel("sftp-in", sshd, remote, pin, extra)})
    with EngineThread(project) as engine:
        wait_for(lambda: (remote / "done" / "good.hl7").exists(), "the archived file")
        wait_for(lambda: (project / "out" / "GOOD.hl7").exists(), "the delivery")
        wait_for(lambda: (remote / ".junction" / "error" / "huge.hl7.reason.txt").exists(), "the oversize reason")
        wait_for(lambda: (remote / ".junction" / "error" / "bad.hl7.reason.txt").exists(), "the parse reason")
        stored = engine.run(engine.engine.store.search(_query("sftp-in")))
        address = engine.engine.channels["sftp-in"].source.address  # type: ignore[union-attr]

    assert (project / "out" / "GOOD.hl7").read_bytes() == message("GOOD")
    assert (remote / "done" / "good.hl7").read_bytes() == message("GOOD")
    assert b"MSA|AA|GOOD" in (remote / "acks" / "good.ack").read_bytes()
    assert b"MSA|AR|" in (remote / "acks" / "bad.ack").read_bytes()
    error = remote / ".junction" / "error"
    assert (error / "bad.hl7").read_bytes() == b"not an HL7 message\r"
    assert "reason: parse:" in (error / "bad.hl7.reason.txt").read_text()
    assert "over max_file_bytes (2000); not read" in (error / "huge.hl7.reason.txt").read_text()
    assert (error / "huge.hl7").stat().st_size > 5000
    untouched = {"upload.hl7.part", "notes.txt", "sub"}
    assert {p.name for p in remote.iterdir()} == untouched | {"done", "acks", ".junction"}
    assert (remote / "sub" / "deep.hl7").exists()
    assert not list((remote / ".junction" / "work").iterdir())
    by_file = {m.source["file"]: m for m in stored}
    assert set(by_file) == {"good.hl7", "bad.hl7", "huge.hl7"}
    assert by_file["good.hl7"].status != "ERROR" and by_file["bad.hl7"].status == "ERROR"
    assert by_file["huge.hl7"].status == "ERROR" and "max_file_bytes" in by_file["huge.hl7"].error
    assert by_file["good.hl7"].source["transport"] == "sftp"
    assert by_file["good.hl7"].source["host"] == f"127.0.0.1:{sshd.port}"
    assert address == f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{remote}"


def _query(channel: str) -> MessageQuery:
    return MessageQuery(channel=channel, limit=100)


def _outbound(content: bytes, message_id: str = "01JTESTMESSAGE0000000000001") -> Outbound:
    return Outbound(message_id, "orders", "drop", message_id, content, "application/hl7-v2", control_id="C1")


def _destination(sshd: Sshd, directory: Path, **extra: object) -> SftpDestination:
    config = SftpDestinationConfig.model_validate(
        {
            "type": "sftp",
            "name": "drop",
            "host": "127.0.0.1",
            "port": sshd.port,
            "username": sshd.user,
            "known_hosts": str(sshd.known_hosts),
            "key_file": str(sshd.client_key),
            "directory": str(directory),
            **extra,
        }
    )
    return SftpDestination(config, channel="orders", base_dir=Path("/"), log=bind(logging.getLogger("test.sftp")))


def test_destination_uploads_to_a_temp_name_then_renames(sshd: Sshd, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()

    async def scenario() -> None:
        dest = _destination(sshd, drop, filename="{control_id}-{message_id}.{ext}")
        assert dest.problem is None
        await dest.open()
        try:
            first = await dest.send(_outbound(b"MSH|first\r"))
            again = await dest.send(_outbound(b"MSH|second\r"))  # a re-delivery replaces the file
            assert first.detail == again.detail
            assert first.detail.endswith("/drop/C1-01JTESTMESSAGE0000000000001.hl7")
        finally:
            await dest.close()

    asyncio.run(scenario())
    assert [p.name for p in drop.iterdir()] == ["C1-01JTESTMESSAGE0000000000001.hl7"], "no temp file may remain"
    assert (drop / "C1-01JTESTMESSAGE0000000000001.hl7").read_bytes() == b"MSH|second\r"


def test_destination_key_from_the_environment_and_its_errors(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    unset = _destination(sshd, drop, key_file=None, key_env="JUNCTION_TEST_UNSET_SFTP_KEY")
    assert unset.problem == "environment variable JUNCTION_TEST_UNSET_SFTP_KEY (key_env) is not set"
    monkeypatch.setenv("JUNCTION_TEST_SFTP_KEY", sshd.client_key.read_text())

    async def scenario() -> None:
        dest = _destination(sshd, drop, key_file=None, key_env="JUNCTION_TEST_SFTP_KEY")
        assert dest.problem is None
        try:
            await dest.send(_outbound(b"MSH|env\r"))
            missing = _destination(sshd, tmp_path / "no-such-dir", key_file=None, key_env="JUNCTION_TEST_SFTP_KEY")
            with pytest.raises(PermanentError, match="directory does not exist"):
                await missing.send(_outbound(b"MSH|x\r"))
            await missing.close()
            down = _destination(sshd, drop, port=free_port(), connect_timeout_secs=2)
            with pytest.raises(RetryableError, match="cannot connect"):
                await down.send(_outbound(b"MSH|x\r"))
            await down.close()
            wrong = _destination(sshd, drop, known_hosts=str(sshd.wrong_known_hosts))
            with pytest.raises(RetryableError, match="changed key refused"):
                await wrong.send(_outbound(b"MSH|x\r"))
            await wrong.close()
        finally:
            await dest.close()

    asyncio.run(scenario())
    assert [p.read_bytes() for p in drop.iterdir()] == [b"MSH|env\r"]


def test_the_source_keeps_retrying_until_the_server_is_up(
    make_project: Callable[[dict[str, str]], Path], tmp_path: Path
) -> None:
    if available():
        pytest.skip(str(available()))
    server = Sshd(tmp_path / "late-sshd", port=free_port())
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "late.hl7").write_bytes(message("LATE"))
    # Keys and known_hosts exist only once the server has started once: start, stop, then
    # run the engine against the silent port.
    server.start().stop()
    pin = f"known_hosts: {server.known_hosts}"
    project = make_project({"late": sftp_channel("late", server, remote, pin)})
    with EngineThread(project) as engine:
        source = engine.engine.channels["late"].source
        wait_for(lambda: bool(getattr(source, "last_error", None)), "a failed poll")
        assert "refused" not in str(source.last_error)  # type: ignore[union-attr]
        with server:
            wait_for(lambda: (project / "out" / "LATE.hl7").exists(), "the delivery after the server came up")
            assert source.last_error is None  # type: ignore[union-attr]
    assert (remote / ".junction" / "archive" / "late.hl7").read_bytes() == message("LATE")
