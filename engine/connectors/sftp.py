"""SFTP source (poll a remote directory) and SFTP destination (upload, then rename).

paramiko is blocking, so every SFTP call runs in a worker thread and the event loop never
waits on the network. The server's host key is always pinned: a ``known_hosts`` file or a
``host_key_sha256`` fingerprint, and an unknown or changed key is refused. Credentials come
only from a key file or from environment variables.

The source uses the shared intake (``engine.connectors.intake``): a file is taken when
complete, claimed by ``posix_rename`` into the work folder, streamed to a local spool file
while hashed, submitted with an exactly-once key, then archived, deleted or moved to the
error folder with a reason file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import io
import logging
import os
import posixpath
import re
import stat
import threading
import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import Field, field_validator, model_validator

from engine.connectors.file import FILENAME_FIELDS, MAX_NAME_BYTES, render_name, template_fields
from engine.connectors.intake import FileInfo, FileTooLarge, Intake, IntakeConfig, IntakeLayout, channel_name
from engine.core.channel import DestinationConfig, PluginConfig
from engine.core.contracts import SourceContext
from engine.core.errors import PermanentError, RetryableError
from engine.core.message import Outbound, SendResult
from engine.core.spec import Example, destination_spec, source_spec

__all__ = [
    "SFTP_DESTINATION",
    "SFTP_SOURCE",
    "HostKeyRefused",
    "SftpDestination",
    "SftpDestinationConfig",
    "SftpSession",
    "SftpSource",
    "SftpSourceConfig",
    "fingerprint",
    "load_private_key",
]

FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
MAX_BACKOFF_SECS = 60.0
COPY_CHUNK = 1024 * 1024


class SftpServerConfig(PluginConfig):
    """Where the SFTP server is, how its host key is pinned and how Junction logs in."""

    host: str = Field(min_length=1, description="Server host name or address.")
    port: int = Field(22, ge=1, le=65535, description="Server port.")
    username: str = Field(min_length=1, description="Login name.")
    known_hosts: str | None = Field(
        None, description="known_hosts file (relative to the project root) that pins the server's host key."
    )
    host_key_sha256: str | None = Field(
        None, description="The server's host key fingerprint as ssh-keygen -lf prints it: SHA256:..."
    )
    key_file: str | None = Field(None, description="Private key file (relative to the project root).")
    key_env: str | None = Field(None, description="Environment variable holding the private key text.")
    passphrase_env: str | None = Field(None, description="Environment variable holding the key's passphrase.")
    password_env: str | None = Field(None, description="Environment variable holding the password.")
    connect_timeout_secs: float = Field(10.0, gt=0, description="Give up connecting or logging in after this long.")

    @field_validator("host_key_sha256")
    @classmethod
    def _fingerprint_shape(cls, value: str | None) -> str | None:
        if value is not None and not FINGERPRINT.match(value.strip()):
            raise ValueError("expected SHA256: followed by 43 base64 characters, as `ssh-keygen -lf KEY.pub` prints")
        return value.strip() if value else value

    @model_validator(mode="after")
    def _pinned_and_authenticated(self) -> SftpServerConfig:
        if (self.known_hosts is None) == (self.host_key_sha256 is None):
            raise ValueError("pin the server's host key with exactly one of known_hosts or host_key_sha256")
        if self.key_file and self.key_env:
            raise ValueError("give key_file or key_env, not both")
        if not (self.key_file or self.key_env or self.password_env):
            raise ValueError("give key_file, key_env or password_env")
        return self

    def missing_env(self) -> str | None:
        """A sentence naming the unset credential variable, or None when all are set."""
        for key in ("key_env", "passphrase_env", "password_env"):
            name = getattr(self, key)
            if name and not os.environ.get(name):
                return f"environment variable {name} ({key}) is not set"
        return None


class SftpSourceConfig(IntakeConfig, SftpServerConfig):
    """Poll a directory on an SFTP server for complete files."""

    path: str = Field(min_length=1, description="Remote directory to poll (absolute, or relative to the login).")
    poll_secs: float = Field(10.0, gt=0, description="List the remote directory this often.")


class SftpDestinationConfig(DestinationConfig, SftpServerConfig):
    """Upload each message as a file to an SFTP server (temp name, then rename)."""

    directory: str = Field(min_length=1, description="Remote directory (must exist).")
    filename: str = Field(
        "{channel}-{message_id}.{ext}",
        min_length=1,
        description="File name template; fields: " + ", ".join(FILENAME_FIELDS) + " (date and time in UTC).",
    )
    temp_suffix: str = Field(".part", min_length=1, description="Suffix of the upload, renamed into place when done.")

    @field_validator("filename", "temp_suffix")
    @classmethod
    def _plain_name(cls, value: str, info: Any) -> str:
        if info.field_name == "filename":
            template_fields(value)
        if "/" in value or "\\" in value or ".." in value:
            raise ValueError(f"{info.field_name} must be a file name (no '/', '\\' or '..')")
        if not value.isprintable() or not value.isascii():
            raise ValueError(f"{info.field_name} may only hold printable ASCII characters")
        return value


# -- the connection ----------------------------------------------------------------------------


class HostKeyRefused(Exception):
    """The server's host key is not the pinned one (or not known at all)."""


def fingerprint(key: Any) -> str:
    """The OpenSSH SHA256 fingerprint of a paramiko public key ("SHA256:" + unpadded base64)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def load_private_key(text: str, passphrase: str | None = None) -> Any:
    """A paramiko private key from its text (OpenSSH or PEM; Ed25519, ECDSA or RSA)."""
    import paramiko

    for cls_name in ("Ed25519Key", "ECDSAKey", "RSAKey"):
        cls = getattr(paramiko, cls_name, None)
        if cls is None:
            continue
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except paramiko.PasswordRequiredException:
            raise ValueError("the private key is encrypted: set passphrase_env") from None
        except (paramiko.SSHException, ValueError):
            continue
    raise ValueError("the private key text is not an Ed25519, ECDSA or RSA key Junction can read")


class SftpSession:
    """One SSH connection with its SFTP channel, opened on demand (blocking; use from a thread)."""

    def __init__(self, config: SftpServerConfig, base_dir: Path) -> None:
        self.config = config
        self.base_dir = base_dir
        self._client: Any = None
        self._sftp: Any = None
        self.lock = threading.Lock()

    @property
    def sftp(self) -> Any:
        """The open SFTP client, connecting first when needed."""
        if self._sftp is None or not self._alive():
            self.close()
            self.connect()
        return self._sftp

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return bool(transport is not None and transport.is_active())

    def connect(self) -> None:
        """Connect, verify the pinned host key, log in and open SFTP."""
        import paramiko

        config = self.config
        client = paramiko.SSHClient()
        if config.known_hosts:
            try:
                client.load_host_keys(str(self.base_dir / config.known_hosts))
            except OSError:
                raise HostKeyRefused("the known_hosts file cannot be read, so no host key is pinned") from None
        client.set_missing_host_key_policy(_PinnedPolicy(config.host_key_sha256))
        auth: dict[str, Any] = {}
        passphrase = os.environ.get(config.passphrase_env) if config.passphrase_env else None
        if config.key_file:
            auth["pkey"] = paramiko.PKey.from_path(str(self.base_dir / config.key_file), passphrase)
        elif config.key_env:
            auth["pkey"] = load_private_key(os.environ.get(config.key_env, ""), passphrase)
        if config.password_env:
            auth["password"] = os.environ.get(config.password_env, "")
        timeout = config.connect_timeout_secs
        try:
            client.connect(
                config.host,
                port=config.port,
                username=config.username,
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                **auth,
            )
        except paramiko.BadHostKeyException:
            client.close()
            raise HostKeyRefused("the server's host key differs from the pinned one (changed key refused)") from None
        except BaseException:
            client.close()
            raise
        self._client = client
        self._sftp = client.open_sftp()
        channel = self._sftp.get_channel()
        if channel is not None:
            channel.settimeout(max(timeout, 30.0))

    def close(self) -> None:
        sftp, client, self._sftp, self._client = self._sftp, self._client, None, None
        for thing in (sftp, client):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()

    @property
    def host_label(self) -> str:
        return f"{self.config.host}:{self.config.port}"


class _PinnedPolicy:
    """paramiko's missing-host-key policy: accept only the key with the pinned fingerprint.

    With a known_hosts file (no fingerprint) every key missing from it is refused.
    """

    def __init__(self, expected: str | None) -> None:
        self.expected = expected

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        if self.expected is None:
            raise HostKeyRefused("the server's host key is not in known_hosts (unknown key refused)")
        if fingerprint(key) != self.expected:
            raise HostKeyRefused("the server's host key fingerprint differs from host_key_sha256 (key refused)")


class _HashingWriter:
    """A file-like sink for ``getfo`` that hashes, counts and enforces a size limit."""

    def __init__(self, fh: BinaryIO, limit: int) -> None:
        self.fh = fh
        self.limit = limit
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise FileTooLarge(f"file grew past max_file_bytes ({self.limit}) while being read")
        self.digest.update(data)
        return self.fh.write(data)


class SftpTransport:
    """The intake's ``Transport`` over one ``SftpSession`` (blocking; run from worker threads)."""

    def __init__(self, session: SftpSession, spool_dir: Path) -> None:
        self.session = session
        self.spool_dir = spool_dir

    def list_files(self, root: str, pattern: str, recursive: bool, skip_dirs: Collection[str]) -> list[FileInfo]:
        import fnmatch

        sftp = self.session.sftp
        found: list[FileInfo] = []
        stack = [root]
        while stack:
            directory = stack.pop()
            try:
                entries = sftp.listdir_attr(directory)
            except FileNotFoundError:
                continue
            for attr in entries:
                name = attr.filename
                full = posixpath.join(directory, name)
                mode = attr.st_mode or 0
                if stat.S_ISDIR(mode):
                    if recursive and not name.startswith(".") and posixpath.normpath(full) not in skip_dirs:
                        stack.append(full)
                    continue
                if not stat.S_ISREG(mode) or not fnmatch.fnmatchcase(name, pattern):
                    continue
                rel = posixpath.relpath(full, root)
                found.append(FileInfo(full, rel, int(attr.st_size or 0), str(int(attr.st_mtime or 0))))
        return found

    def stat(self, path: str) -> FileInfo | None:
        try:
            attr = self.session.sftp.stat(path)
        except FileNotFoundError:
            return None
        return FileInfo(path, posixpath.basename(path), int(attr.st_size or 0), str(int(attr.st_mtime or 0)))

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def makedirs(self, path: str) -> None:
        sftp = self.session.sftp
        parts = [p for p in path.split("/") if p]
        current = "/" if path.startswith("/") else ""
        for part in parts:
            current = posixpath.join(current, part) if current else part
            try:
                sftp.stat(current)
            except FileNotFoundError:
                try:
                    sftp.mkdir(current)
                except OSError:
                    sftp.stat(current)  # created meanwhile by someone else, or a real error

    def rename(self, src: str, dst: str) -> None:
        self.session.sftp.posix_rename(src, dst)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.session.sftp.remove(path)

    def clean_spool(self) -> None:
        """Remove spool files a killed process left behind (their files are still claimed)."""
        for leftover in self.spool_dir.glob("*.part"):
            leftover.unlink(missing_ok=True)

    def fetch(self, path: str, size_limit: int) -> tuple[bytes, str]:
        """Stream the remote file to a spool file while hashing, then read it back."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        spool = self.spool_dir / f"{uuid.uuid4().hex}.part"
        try:
            with open(spool, "wb") as fh:
                writer = _HashingWriter(fh, size_limit)
                self.session.sftp.getfo(path, writer)
            data = spool.read_bytes()
        finally:
            spool.unlink(missing_ok=True)
        return data, writer.digest.hexdigest()

    def put_bytes(self, directory: str, name: str, data: bytes) -> str:
        return upload(self.session.sftp, directory, name, ".part", data)


def upload(sftp: Any, directory: str, name: str, temp_suffix: str, data: bytes) -> str:
    """Write ``data`` to ``directory/name + temp_suffix``, then ``posix_rename`` it into place."""
    final = posixpath.join(directory, name)
    temp = final + temp_suffix
    sftp.putfo(io.BytesIO(data), temp, file_size=len(data), confirm=True)
    try:
        sftp.posix_rename(temp, final)
    except BaseException:
        with contextlib.suppress(Exception):
            sftp.remove(temp)
        raise
    return final


def _reason(exc: BaseException) -> str:
    """A short description of a transport error (never a path or content)."""
    if isinstance(exc, HostKeyRefused):
        return str(exc)
    code = errno.errorcode.get(getattr(exc, "errno", None) or 0, "")
    return f"{type(exc).__name__} {code}".strip()


# -- the source --------------------------------------------------------------------------------


class SftpSource:
    """Polls ``path`` on an SFTP server and submits each complete file exactly once.

        source = SftpSource(SftpSourceConfig(type="sftp", host="files.example.org", ...), ctx)
        await source.start()   # first poll at once, then every poll_secs
        await source.stop()

    Connection failures (and a refused host key) are logged and retried with backoff; they
    never stop the channel. ``last_error`` holds the latest one for status output.
    """

    def __init__(self, config: SftpSourceConfig, ctx: SourceContext) -> None:
        self.config = config
        self._ctx = ctx
        self._log = ctx.log
        self.session = SftpSession(config, ctx.base_dir)
        spool = ctx.base_dir / "var" / "spool" / channel_name(ctx)
        self.transport = SftpTransport(self.session, spool)
        self.layout = IntakeLayout.resolve(config.path, config)
        fields = {"transport": "sftp", "host": self.session.host_label}
        self.intake = Intake(config, self.layout, self.transport, ctx, ctx.log, fields)
        self.problem = config.missing_env()
        self.last_error: str | None = self.problem
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str | None:
        path = self.config.path if self.config.path.startswith("/") else "/" + self.config.path
        return f"sftp://{self.config.username}@{self.config.host}:{self.config.port}{path}"

    async def start(self) -> None:
        """Start polling (returns at once; the first poll runs in the background)."""
        if self.problem:
            self._log.warning("SFTP source is not usable.", extra={"problem": self.problem})
            return
        await asyncio.to_thread(self.transport.clean_spool)
        self._task = asyncio.create_task(self._loop(), name=f"sftp:{channel_name(self._ctx)}")
        self._log.info("Polling SFTP server.", extra={"host": self.session.host_label})

    async def stop(self) -> None:
        """Stop polling and close the connection (a claimed file is finished on restart)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.session.close)
        self._log.info("Stopped polling SFTP server.", extra={"host": self.session.host_label})

    async def _loop(self) -> None:
        failures = 0
        while True:
            try:
                pending = await self.intake.scan()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - no failure may stop the source
                failures += 1
                wait = min(self.config.poll_secs * 2 ** (failures - 1), MAX_BACKOFF_SECS)
                self.last_error = _reason(exc)
                level = logging.ERROR if isinstance(exc, HostKeyRefused) else logging.WARNING
                sentence = "SFTP host key refused." if isinstance(exc, HostKeyRefused) else "SFTP poll failed."
                self._log.log(
                    level,
                    sentence,
                    extra={"host": self.session.host_label, "error": self.last_error, "retry_secs": round(wait, 1)},
                )
                await asyncio.to_thread(self.session.close)
                self.intake.forget_dirs()
            else:
                if failures:
                    self._log.info("SFTP server reachable again.", extra={"host": self.session.host_label})
                failures = 0
                self.last_error = None
                wait = self.config.poll_secs
                if pending:
                    wait = min(wait, max(self.config.stable_secs, 0.05))
            await asyncio.sleep(wait)


# -- the destination ---------------------------------------------------------------------------


class SftpDestination:
    """Uploads each message to ``directory/filename`` as ``<name><temp_suffix>``, then renames it.

    With the default file name (the message id) a repeated delivery replaces the same file,
    so the destination is idempotent. Connection problems raise ``RetryableError``; a missing
    directory or a permission problem raises ``PermanentError``.
    """

    def __init__(
        self,
        config: SftpDestinationConfig,
        *,
        channel: str,
        base_dir: Path,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.config = config
        self.channel = channel
        self._log = log
        self.session = SftpSession(config, base_dir)
        self.problem: str | None = config.missing_env()

    async def open(self) -> None:
        """Nothing to do: the connection opens with the first send."""

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self.session.lock:
            self.session.close()

    async def send(self, item: Outbound) -> SendResult:
        """Upload one message; see the class docstring for the errors raised."""
        name = render_name(self.config.filename, item, time.time())
        if len((name + self.config.temp_suffix).encode()) > MAX_NAME_BYTES:
            raise PermanentError(f"rendered file name is longer than {MAX_NAME_BYTES} bytes; shorten filename")
        path = await asyncio.to_thread(self._upload, name, item.content)
        return SendResult(detail=f"sftp://{self.session.host_label}{path if path.startswith('/') else '/' + path}")

    def _upload(self, name: str, content: bytes) -> str:
        with self.session.lock:
            try:
                sftp = self.session.sftp
            except HostKeyRefused as exc:
                raise RetryableError(f"SFTP {self.session.host_label}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - every connection failure is worth a retry
                self.session.close()
                raise RetryableError(f"SFTP {self.session.host_label}: cannot connect ({_reason(exc)})") from None
            try:
                return upload(sftp, self.config.directory, name, self.config.temp_suffix, content)
            except (FileNotFoundError, PermissionError) as exc:
                what = "directory does not exist" if isinstance(exc, FileNotFoundError) else "permission denied"
                raise PermanentError(f"SFTP {self.session.host_label}: upload failed, {what}") from None
            except Exception as exc:  # noqa: BLE001 - a broken connection: reconnect on the retry
                self.session.close()
                raise RetryableError(f"SFTP {self.session.host_label}: upload failed ({_reason(exc)})") from None


SFTP_SOURCE = source_spec(
    name="sftp",
    summary="Poll an SFTP server for complete files (pinned host key); claim, archive or error folder.",
    config=SftpSourceConfig,
    factory="engine.connectors.sftp:SftpSource",
    capabilities=frozenset({"responds"}),
    examples=(
        Example(
            "Purchase orders from a distributor, 997s written back",
            "type: sftp\n"
            "host: sftp.distributor.example\n"
            "username: hospital\n"
            "known_hosts: config/known_hosts\n"
            "key_env: DISTRIBUTOR_SFTP_KEY\n"
            "path: /outbound/850\n"
            "glob: '*.edi'\n"
            "poll_secs: 60\n"
            "response_dir: /inbound/997\n"
            "response_name: '{stem}.997'\n",
        ),
        Example(
            "GPO price files, pinned by fingerprint, deleted after intake",
            "type: sftp\n"
            "host: files.gpo.example\n"
            "port: 2222\n"
            "username: junction\n"
            "host_key_sha256: SHA256:mC0R7oVfPLH2ol1sQnMsCCuzTGfDkW3TGbExYOkB6Dk\n"
            "key_file: config/gpo_ed25519\n"
            "passphrase_env: GPO_KEY_PASSPHRASE\n"
            "path: prices\n"
            "recursive: true\n"
            "after: delete\n"
            "max_file_bytes: 209715200\n",
        ),
    ),
)

SFTP_DESTINATION = destination_spec(
    name="sftp",
    summary="Upload each message as a file to an SFTP server (temp name, then atomic rename).",
    config=SftpDestinationConfig,
    factory="engine.connectors.sftp:SftpDestination",
    examples=(
        Example(
            "Invoices to a supplier's drop",
            "type: sftp\n"
            "name: supplier-drop\n"
            "host: sftp.supplier.example\n"
            "username: hospital\n"
            "known_hosts: config/known_hosts\n"
            "key_env: SUPPLIER_SFTP_KEY\n"
            "directory: /inbound/810\n"
            'filename: "{date}-{control_id}-{message_id}.{ext}"\n',
        ),
    ),
)
