"""The file destination: atomic writes, file name templates, overwrite modes."""

from __future__ import annotations

import asyncio
import calendar
import errno
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engine.connectors.file import (
    FILENAME_FIELDS,
    FileDestination,
    FileDestinationConfig,
    _Plan,
    _unnamed_files,
    _write_unnamed,
    extension_for,
    render_name,
)
from engine.core.errors import PermanentError, RetryableError
from engine.core.logs import bind
from engine.core.message import Outbound, SendResult

HL7 = b"MSH|^~\\&|EHR|HOSP|ERP|HOSP|20240101120000||ADT^A01|MSG0001|P|2.5\rPID|1||12345\r"
MESSAGE_ID = "01HZX3K9V6Q4M2T8R5N7B1C0DE"


def config(**extra: Any) -> FileDestinationConfig:
    return FileDestinationConfig.model_validate({"type": "file", "name": "archive", "directory": "out", **extra})


def item(content: bytes = HL7, **extra: Any) -> Outbound:
    fields: dict[str, Any] = {
        "message_id": MESSAGE_ID,
        "channel": "adt-in",
        "destination": "archive",
        "correlation_id": "01HZX3K9V6Q4M2T8R5N7B1C0AA",
        "content": content,
        "content_type": "x-application/hl7-v2+er7",
        "control_id": "MSG0001",
        "attempt": 1,
    }
    fields.update(extra)
    return Outbound(**fields)


def destination(base: Path, cfg: FileDestinationConfig) -> FileDestination:
    return FileDestination(cfg, channel="adt-in", base_dir=base, log=bind(logging.getLogger("junction.test")))


def deliver(base: Path, cfg: FileDestinationConfig, *items: Outbound) -> list[SendResult]:
    async def run() -> list[SendResult]:
        dest = destination(base, cfg)
        await dest.open()
        try:
            return [await dest.send(x) for x in items]
        finally:
            await dest.close()

    return asyncio.run(run())


@pytest.mark.parametrize("fsync", [True, False])
def test_writes_exact_content_without_leftovers(tmp_path: Path, fsync: bool) -> None:
    (result,) = deliver(tmp_path, config(fsync=fsync), item())
    assert result.detail == f"out/adt-in-{MESSAGE_ID}.hl7"
    assert (tmp_path / result.detail).read_bytes() == HL7
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"adt-in-{MESSAGE_ID}.hl7"]


def test_stale_temp_file_from_a_crash_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A temp name exists only where unnamed files cannot be made (or to replace a file).
    monkeypatch.setattr("engine.connectors.file._unnamed_files", lambda: False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / f"adt-in-{MESSAGE_ID}.hl7.part").write_bytes(b"half a mess")
    (result,) = deliver(tmp_path, config(temp_suffix=".part"), item())
    assert (tmp_path / result.detail).read_bytes() == HL7
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"adt-in-{MESSAGE_ID}.hl7"]


def test_directory_is_created_at_open_and_again_when_removed(tmp_path: Path) -> None:
    cfg = config(directory="var/out/adt")

    async def run() -> bool:
        dest = destination(tmp_path, cfg)
        await dest.open()
        created = (tmp_path / "var/out/adt").is_dir()
        (tmp_path / "var/out/adt").rmdir()
        await dest.send(item())
        await dest.close()
        return created

    assert asyncio.run(run())
    assert (tmp_path / "var/out/adt" / f"adt-in-{MESSAGE_ID}.hl7").read_bytes() == HL7


def test_absolute_directory_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "abs"
    (result,) = deliver(tmp_path / "elsewhere", config(directory=str(target)), item())
    assert result.detail == str(target / f"adt-in-{MESSAGE_ID}.hl7")
    assert Path(result.detail).read_bytes() == HL7


def test_every_template_field() -> None:
    now = calendar.timegm((2024, 1, 2, 3, 4, 5)) + 0.678
    template = (
        "{channel}_{destination}_{message_id}_{correlation_id}_{control_id}_{attempt}_{date}_{time}_{timestamp}.{ext}"
    )
    name = render_name(template, item(attempt=3), now)
    assert name == (
        f"adt-in_archive_{MESSAGE_ID}_01HZX3K9V6Q4M2T8R5N7B1C0AA_MSG0001_3_20240102_030405_1704164645678.hl7"
    )


@pytest.mark.parametrize("field", FILENAME_FIELDS)
def test_each_field_alone_renders_as_in_the_full_template(field: str) -> None:
    # render_name computes only the fields a template names: each must come out the same
    # whether it stands alone or among all the others.
    now = calendar.timegm((2024, 1, 2, 3, 4, 5)) + 0.678
    full = render_name("+".join(f"{{{f}}}" for f in FILENAME_FIELDS), item(attempt=3), now).split("+")
    alone = render_name(f"x{{{field}}}", item(attempt=3), now)
    assert alone == "x" + full[FILENAME_FIELDS.index(field)]


@pytest.mark.parametrize("control_id", ["../../etc/passwd", "a/b\\c", "..", ".hidden.", "x y\tz\u00e9", "..\x00.."])
def test_values_are_sanitised(tmp_path: Path, control_id: str) -> None:
    cfg = config(filename="{control_id}.{ext}")
    (result,) = deliver(tmp_path, cfg, item(control_id=control_id))
    name = Path(result.detail).name
    assert Path(result.detail).parent == Path("out")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name)
    assert ".." not in name
    assert not name.startswith(".")
    assert [p.name for p in (tmp_path / "out").iterdir()] == [name]
    assert not (tmp_path / "etc").exists()


def test_long_values_are_truncated() -> None:
    name = render_name("{control_id}.{ext}", item(control_id="9" * 500), 0.0)
    assert name == "9" * 64 + ".hl7"


def test_name_longer_than_the_filesystem_allows_is_permanent(tmp_path: Path) -> None:
    cfg = config(filename="x" * 250 + "-{message_id}")
    with pytest.raises(PermanentError, match="longer than 255 bytes"):
        deliver(tmp_path, cfg, item())


@pytest.mark.parametrize(
    ("filename", "words"),
    [
        ("{patient_name}.hl7", "unknown field {patient_name} in filename; valid fields: channel, destination"),
        ("{}.hl7", "unknown field {}"),
        ("{channel.real}.hl7", "unknown field {channel.real}"),
        ("{attempt:03d}.hl7", "format specs"),
        ("{channel!r}.hl7", "format specs"),
        ("{message_id.hl7", "not a valid template"),
        ("sub/{message_id}.hl7", "not a path"),
        ("..{message_id}", "'..'"),
        ("{message_id}\n.hl7", "printable ASCII"),
        ("", "at least 1"),
    ],
)
def test_bad_templates_are_rejected_at_validation(filename: str, words: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(words)):
        config(filename=filename)


@pytest.mark.parametrize(
    "extra",
    [{"temp_suffix": "/x"}, {"overwrite": "append"}, {"colour": "blue"}, {"directory": ""}, {"fsync": "often"}],
)
def test_other_bad_config_is_rejected(extra: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        config(**extra)


def test_directory_is_required() -> None:
    with pytest.raises(ValidationError, match="directory"):
        FileDestinationConfig.model_validate({"type": "file", "name": "archive"})


def test_overwrite_replace_is_idempotent(tmp_path: Path) -> None:
    first, second = deliver(tmp_path, config(), item(content=b"one"), item(content=b"two", attempt=2))
    assert first.detail == second.detail
    assert (tmp_path / first.detail).read_bytes() == b"two"
    assert len(list((tmp_path / "out").iterdir())) == 1


def test_overwrite_error_keeps_the_file_and_fails_permanently(tmp_path: Path) -> None:
    deliver(tmp_path, config(overwrite="error"), item(content=b"one"))
    with pytest.raises(PermanentError, match="already exists"):
        deliver(tmp_path, config(overwrite="error"), item(content=b"two"))
    assert [p.read_bytes() for p in (tmp_path / "out").iterdir()] == [b"one"]


def test_overwrite_skip_keeps_the_file_and_succeeds(tmp_path: Path) -> None:
    first, second = deliver(tmp_path, config(overwrite="skip"), item(content=b"one"), item(content=b"two"))
    assert first.detail == second.detail
    assert [p.read_bytes() for p in (tmp_path / "out").iterdir()] == [b"one"]


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_exclusive_modes_write_new_files(tmp_path: Path, mode: str) -> None:
    (result,) = deliver(tmp_path, config(overwrite=mode), item())
    assert (tmp_path / result.detail).read_bytes() == HL7
    assert len(list((tmp_path / "out").iterdir())) == 1


@pytest.mark.parametrize(
    ("content_type", "ext"),
    [
        ("x-application/hl7-v2+er7", "hl7"),
        ("application/hl7-v2", "hl7"),
        ("application/json", "json"),
        ("application/json; charset=utf-8", "json"),
        ("application/fhir+json", "json"),
        ("application/xml", "xml"),
        ("text/xml", "xml"),
        ("application/edi-x12", "x12"),
        ("text/plain", "txt"),
        ("TEXT/PLAIN", "txt"),
        ("application/octet-stream", "bin"),
        ("", "bin"),
    ],
)
def test_extension_by_content_type(content_type: str, ext: str) -> None:
    assert extension_for(content_type) == ext


def test_extension_in_written_name(tmp_path: Path) -> None:
    (result,) = deliver(tmp_path, config(), item(content=b"{}", content_type="application/json"))
    assert result.detail.endswith(".json")


def test_io_errors_are_retryable(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_bytes(b"")  # a file where a directory should be
    with pytest.raises(RetryableError, match="writing to blocker/out failed"):
        deliver(tmp_path, config(directory="blocker/out"), item())


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_exclusive_modes_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    def no_links(src: object, dst: object, **_kw: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # what vfat answers

    monkeypatch.setattr("engine.connectors.file.os.link", no_links)
    (result,) = deliver(tmp_path, config(overwrite=mode), item())
    assert (tmp_path / result.detail).read_bytes() == HL7
    assert len(list((tmp_path / "out").iterdir())) == 1


@pytest.mark.skipif(not _unnamed_files(), reason="unnamed files (O_TMPFILE) are a Linux facility")
def test_files_are_written_unnamed_and_linked_without_a_temp_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_temp_names(plan: object, content: bytes) -> None:
        raise AssertionError("a temp name was written")

    monkeypatch.setattr("engine.connectors.file._write_temp", no_temp_names)
    first, second = deliver(tmp_path, config(), item(), item(message_id="01HZX3K9V6Q4M2T8R5N7B1C0DF"))
    assert (tmp_path / first.detail).read_bytes() == (tmp_path / second.detail).read_bytes() == HL7
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"adt-in-{MESSAGE_ID}.hl7",
        "adt-in-01HZX3K9V6Q4M2T8R5N7B1C0DF.hl7",
    ]


@pytest.mark.skipif(not _unnamed_files(), reason="unnamed files (O_TMPFILE) are a Linux facility")
@pytest.mark.parametrize("mode", ["replace", "error", "skip"])
def test_an_existing_name_is_never_overwritten_by_an_unnamed_file(tmp_path: Path, mode: str) -> None:
    # The race the exists() check cannot close: the link refuses, nothing is left behind.
    directory = tmp_path / "out"
    directory.mkdir()
    (directory / "taken.hl7").write_bytes(b"one")
    plan = _Plan(str(directory), "taken.hl7", ".tmp", mode, False)
    fd = os.open(directory, os.O_RDONLY)
    try:
        assert _write_unnamed(plan, b"two", fd) is False
    finally:
        os.close(fd)
    assert [(p.name, p.read_bytes()) for p in directory.iterdir()] == [("taken.hl7", b"one")]


def test_a_filesystem_without_unnamed_files_gets_temp_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.connectors.file as file_module

    real_open = os.open
    refused: list[str] = []

    def no_tmpfile(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if flags & getattr(os, "O_TMPFILE", 0) == getattr(os, "O_TMPFILE", -1):
            refused.append(str(path))
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")  # what vfat answers
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(file_module.os, "open", no_tmpfile)
    monkeypatch.setattr(file_module, "_UNNAMED_REFUSED", set())
    monkeypatch.setattr(file_module, "_unnamed_files", lambda: True)
    results = deliver(tmp_path, config(), item(), item(message_id="01HZX3K9V6Q4M2T8R5N7B1C0DF"))
    assert [(tmp_path / r.detail).read_bytes() for r in results] == [HL7, HL7]
    assert len(list((tmp_path / "out").iterdir())) == 2
    assert len(refused) == 1  # asked once, then remembered for the directory
