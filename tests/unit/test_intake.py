"""File intake building blocks: completeness, naming, claim and the source/destination configs."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from engine.connectors.folder import FOLDER_SOURCE, FolderSourceConfig
from engine.connectors.intake import (
    FileInfo,
    FileTooLarge,
    IntakeLayout,
    LocalTransport,
    Stability,
    dedupe_key,
    is_ignored,
    response_file_name,
    unique_name,
)
from engine.connectors.sftp import (
    SFTP_DESTINATION,
    SFTP_SOURCE,
    SftpDestinationConfig,
    SftpSourceConfig,
    fingerprint,
    load_private_key,
)
from engine.core.spec import PluginSpec
from engine.testing.sshd import public_fingerprint

SFTP_BASE = {
    "type": "sftp",
    "host": "sftp.example.org",
    "username": "junction",
    "known_hosts": "config/known_hosts",
    "key_file": "config/id_ed25519",
    "path": "/outbound",
}


def info(name: str, size: int = 10, mtime: str = "1") -> FileInfo:
    return FileInfo("/in/" + name, name, size, mtime)


# -- completeness -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ignored"),
    [
        ("po.edi", False),
        ("sub/po.edi", False),
        ("po.edi.tmp", True),
        ("po.edi.part", True),
        ("po.edi.filepart", True),
        (".~lock.po.edi#", True),
        (".hidden", True),
        ("sub/.hidden", True),
        ("po.lck", True),  # from the configured ignore list
    ],
)
def test_temp_hidden_and_configured_names_are_ignored(name: str, ignored: bool) -> None:
    assert is_ignored(name, ["*.lck"]) is ignored


def test_a_file_is_ready_only_after_two_unchanged_observations_stable_secs_apart() -> None:
    stability = Stability(2.0)
    assert stability.observe([info("a")], now=0.0) == []
    assert stability.observe([info("a")], now=1.0) == [], "unchanged, but not for long enough"
    assert stability.observe([info("a", size=20)], now=2.5) == [], "it grew: the clock restarts"
    assert stability.observe([info("a", size=20)], now=4.0) == []
    assert stability.observe([info("a", size=20)], now=4.5) == [info("a", size=20)]


def test_an_mtime_change_at_the_same_size_restarts_the_clock() -> None:
    stability = Stability(1.0)
    stability.observe([info("a", mtime="1")], now=0.0)
    assert stability.observe([info("a", mtime="2")], now=5.0) == []
    assert stability.observe([info("a", mtime="2")], now=6.0) == [info("a", mtime="2")]


def test_zero_stable_secs_still_needs_a_second_observation() -> None:
    stability = Stability(0.0)
    assert stability.observe([info("a")], now=0.0) == []
    assert stability.observe([info("a")], now=0.0) == [info("a")]


def test_busy_files_are_never_ready_and_vanished_files_are_forgotten() -> None:
    stability = Stability(1.0)
    stability.observe([info("a"), info("b")], now=0.0)
    assert stability.observe([info("a"), info("b")], now=5.0, busy={"a"}) == [info("b")]
    assert stability.observe([info("a")], now=5.5) == [], "busy reset the clock of a"
    assert stability.pending == 1, "b vanished from the listing and is forgotten"
    assert stability.observe([info("a")], now=6.5) == [info("a")]
    stability.forget("a")
    assert stability.pending == 0


# -- naming -----------------------------------------------------------------------------------


def test_unique_name_adds_a_timestamp_then_a_counter() -> None:
    taken = {"/a/x.hl7", "/a/x.19700101T000000Z.hl7", "/a/x.19700101T000000Z-1.hl7"}
    assert unique_name("/a/y.hl7", taken.__contains__, 0.0) == "/a/y.hl7"
    assert unique_name("/a/x.hl7", taken.__contains__, 0.0) == "/a/x.19700101T000000Z-2.hl7"
    assert unique_name("/a/README", {"/a/README"}.__contains__, 0.0) == "/a/README.19700101T000000Z"


def test_unique_name_gives_up_after_bounded_tries() -> None:
    with pytest.raises(FileExistsError):
        unique_name("/a/x", lambda _p: True, 0.0)


@pytest.mark.parametrize(
    ("template", "name", "expected"),
    [
        ("{stem}.997", "po-1.edi", "po-1.997"),
        ("{name}.ack", "sub/po-1.edi", "po-1.edi.ack"),
        ("{stem}-{message_id}.{ext}", "po.x12", "po-01J.x12"),
        ("{stem}.ack", "noext", "noext.ack"),
        ("{stem}.ack", ".profile", ".profile.ack"),
    ],
)
def test_response_names(template: str, name: str, expected: str) -> None:
    assert response_file_name(template, name, "01J") == expected


def test_dedupe_key_holds_name_size_mtime_and_hash() -> None:
    digest = hashlib.sha256(b"abc").hexdigest()
    assert dedupe_key("sub/a.hl7", 3, "1700000000000000000", digest) == f"sub/a.hl7|3|1700000000000000000|{digest}"


def test_layout_resolves_relative_folders_under_the_watched_directory() -> None:
    config = FolderSourceConfig.model_validate(
        {"type": "folder", "path": "in", "archive_dir": "/srv/archive", "response_dir": "out"}
    )
    layout = IntakeLayout.resolve("/data/in", config)
    assert layout.work == "/data/in/.junction/work"
    assert layout.archive == "/srv/archive"
    assert layout.error == "/data/in/.junction/error"
    assert layout.response == "/data/in/out"
    assert layout.skip_dirs == {"/data/in/.junction/work", "/srv/archive", "/data/in/.junction/error", "/data/in/out"}


# -- the local transport (claim, read, write) -------------------------------------------------


def test_listing_honours_glob_recursion_hidden_and_skipped_folders(tmp_path: Path) -> None:
    for rel in ("a.hl7", "b.txt", "sub/c.hl7", "sub/deeper/d.hl7", ".junction/work/e.hl7", "done/f.hl7"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    transport = LocalTransport()
    flat = transport.list_files(str(tmp_path), "*.hl7", False, ())
    assert [f.name for f in flat] == ["a.hl7"]
    deep = transport.list_files(str(tmp_path), "*.hl7", True, {str(tmp_path / "done")})
    assert sorted(f.name for f in deep) == ["a.hl7", "sub/c.hl7", "sub/deeper/d.hl7"]
    (a,) = flat
    stat = os.stat(tmp_path / "a.hl7")
    assert (a.size, a.mtime, a.path) == (1, str(stat.st_mtime_ns), str(tmp_path / "a.hl7"))


def test_claim_is_an_atomic_rename_that_fails_when_another_taker_won(tmp_path: Path) -> None:
    transport = LocalTransport()
    (tmp_path / "a.hl7").write_bytes(b"payload")
    transport.makedirs(str(tmp_path / "work" / "sub"))
    transport.rename(str(tmp_path / "a.hl7"), str(tmp_path / "work" / "sub" / "a.hl7"))
    with pytest.raises(FileNotFoundError):
        transport.rename(str(tmp_path / "a.hl7"), str(tmp_path / "work" / "sub" / "a.hl7"))
    claimed = transport.stat(str(tmp_path / "work" / "sub" / "a.hl7"))
    assert claimed is not None and claimed.size == 7
    assert transport.stat(str(tmp_path / "a.hl7")) is None


def test_fetch_hashes_and_refuses_files_past_the_limit(tmp_path: Path) -> None:
    transport = LocalTransport()
    (tmp_path / "a").write_bytes(b"x" * 100)
    data, digest = transport.fetch(str(tmp_path / "a"), 100)
    assert data == b"x" * 100 and digest == hashlib.sha256(data).hexdigest()
    with pytest.raises(FileTooLarge, match="max_file_bytes"):
        transport.fetch(str(tmp_path / "a"), 99)


def test_put_bytes_leaves_only_the_final_file(tmp_path: Path) -> None:
    transport = LocalTransport()
    path = transport.put_bytes(str(tmp_path), "x.997", b"ISA*")
    assert path == str(tmp_path / "x.997")
    assert [p.name for p in tmp_path.iterdir()] == ["x.997"]
    transport.remove(path)
    transport.remove(path)  # removing twice is fine (a delete repeated after a crash)
    assert not tmp_path.joinpath("x.997").exists()


# -- configs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"glob": "sub/*.edi"}, "patterns match file names"),
        ({"ignore": ["a/b"]}, "patterns match file names"),
        ({"archive_dir": "../elsewhere"}, "may not contain '..'"),
        ({"response_name": "{stem}.{control_id}"}, "unknown field"),
        ({"response_name": "acks/{stem}.997"}, "must be a file name"),
        ({"stable_secs": -1}, "greater than or equal"),
        ({"after": "move"}, "archive"),
        ({"colour": "blue"}, "Extra inputs"),
    ],
)
def test_folder_config_rejects_bad_values(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FolderSourceConfig.model_validate({"type": "folder", "path": "in", **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"known_hosts": None}, "exactly one of known_hosts or host_key_sha256"),
        ({"host_key_sha256": "SHA256:" + "A" * 43}, "exactly one of known_hosts or host_key_sha256"),
        ({"known_hosts": None, "host_key_sha256": "MD5:aa:bb"}, "SHA256: followed by 43"),
        ({"key_file": None}, "give key_file, key_env or password_env"),
        ({"key_env": "KEY"}, "key_file or key_env, not both"),
        ({"port": 0}, "greater than or equal to 1"),
    ],
)
def test_sftp_source_config_requires_a_pinned_key_and_credentials(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SftpSourceConfig.model_validate({**SFTP_BASE, **changes})


def test_missing_credential_variables_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    config = SftpSourceConfig.model_validate(
        {**SFTP_BASE, "key_file": None, "key_env": "JUNCTION_UNIT_KEY", "passphrase_env": "JUNCTION_UNIT_PASS"}
    )
    monkeypatch.delenv("JUNCTION_UNIT_KEY", raising=False)
    monkeypatch.delenv("JUNCTION_UNIT_PASS", raising=False)
    assert config.missing_env() == "environment variable JUNCTION_UNIT_KEY (key_env) is not set"
    monkeypatch.setenv("JUNCTION_UNIT_KEY", "k")
    assert config.missing_env() == "environment variable JUNCTION_UNIT_PASS (passphrase_env) is not set"
    monkeypatch.setenv("JUNCTION_UNIT_PASS", "p")
    assert config.missing_env() is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"filename": "{nope}.x"}, "unknown field"),
        ({"filename": "out/{message_id}"}, "must be a file name"),
        ({"temp_suffix": "/.part"}, "must be a file name"),
        ({"filename": "caf\u00e9-{message_id}"}, "printable ASCII"),
    ],
)
def test_sftp_destination_config_rejects_unsafe_names(changes: dict[str, object], message: str) -> None:
    base = {k: v for k, v in SFTP_BASE.items() if k != "path"}
    with pytest.raises(ValidationError, match=message):
        SftpDestinationConfig.model_validate({**base, "name": "drop", "directory": "/in", **changes})


def test_private_key_text_loads_and_its_fingerprint_matches_ssh_keygen_format() -> None:
    import paramiko

    key = paramiko.RSAKey.generate(2048)
    text = io.StringIO()
    key.write_private_key(text)
    loaded = load_private_key(text.getvalue())
    line = f"{loaded.get_name()} {loaded.get_base64()}"
    assert fingerprint(loaded) == fingerprint(key) == public_fingerprint(line)
    assert fingerprint(key).startswith("SHA256:") and len(fingerprint(key)) == 50
    with pytest.raises(ValueError, match="not an Ed25519, ECDSA or RSA key"):
        load_private_key("-----BEGIN NONSENSE-----\nAAAA\n-----END NONSENSE-----\n")
    encrypted = io.StringIO()
    key.write_private_key(encrypted, password="secret")
    with pytest.raises(ValueError, match="set passphrase_env"):
        load_private_key(encrypted.getvalue())
    assert fingerprint(load_private_key(encrypted.getvalue(), "secret")) == fingerprint(key)


@pytest.mark.parametrize("spec", [FOLDER_SOURCE, SFTP_SOURCE, SFTP_DESTINATION], ids=lambda s: f"{s.kind}:{s.name}")
def test_specs_are_documented_and_examples_validate(spec: PluginSpec) -> None:
    assert spec.summary.endswith(".")
    for name, field in spec.config.model_fields.items():
        assert field.description or name == "type", f"{spec.name}.{name} has no description"
    for example in spec.examples:
        data = yaml.safe_load(example.yaml)
        if spec.kind == "destination":
            data.setdefault("name", "example")
        spec.config.model_validate(data)
    assert callable(spec.load_factory())
