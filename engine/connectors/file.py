"""File destination: write each message to its own file, atomically (temp file, fsync, rename).

Readers of the directory never see a partial file. On Linux the content goes to an unnamed
file in the directory (``O_TMPFILE``) that is linked under its final name once written: no
temporary name is ever visible and a crash leaves nothing behind. Elsewhere, and to replace
an existing file, the content goes to ``<name><temp_suffix>`` first and is renamed over the
final name.
With the default template the name depends only on the message id, so a delivery repeated
after a crash replaces the same file and the destination is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import re
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from engine.core.channel import DestinationConfig
from engine.core.errors import PermanentError, RetryableError
from engine.core.message import Outbound, SendResult
from engine.core.spec import Example, destination_spec

__all__ = ["FILENAME_FIELDS", "FILE_DESTINATION", "FileDestination", "FileDestinationConfig", "extension_for"]

FILENAME_FIELDS = (
    "channel",
    "destination",
    "message_id",
    "correlation_id",
    "control_id",
    "attempt",
    "date",
    "time",
    "timestamp",
    "ext",
)
MAX_NAME_BYTES = 255  # NAME_MAX on ext4, xfs, NTFS and most others
MAX_VALUE_CHARS = 64  # one field must not crowd the others out of MAX_NAME_BYTES
_EXTENSIONS = {
    "x-application/hl7-v2+er7": "hl7",
    "application/hl7-v2": "hl7",
    "application/json": "json",
    "application/xml": "xml",
    "text/xml": "xml",
    "application/edi-x12": "x12",
    "text/plain": "txt",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_DOTS = re.compile(r"\.{2,}")
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")
# Filesystems without hard links (vfat, some SMB mounts) answer os.link with one of these.
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK})


def extension_for(content_type: str) -> str:
    """The file extension for a content type (parameters and case ignored).

    >>> extension_for("application/hl7-v2; charset=utf-8"), extension_for("application/fhir+json")
    ('hl7', 'json')
    """
    base = content_type.split(";", 1)[0].strip().lower()
    if base in _EXTENSIONS:
        return _EXTENSIONS[base]
    # Structured-syntax suffixes (RFC 6839): application/fhir+json is still JSON.
    for suffix in ("json", "xml"):
        if base.endswith("+" + suffix):
            return suffix
    return "bin"


def template_fields(template: str) -> list[str]:
    """The field names in ``template``; raise ValueError for anything but plain ``{field}``."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"filename is not a valid template ({exc}); write {{{{ or }}}} for a literal brace") from None
    names: list[str] = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in FILENAME_FIELDS:
            shown = f"{{{name}}}" if name else "{}"
            raise ValueError(f"unknown field {shown} in filename; valid fields: " + ", ".join(FILENAME_FIELDS))
        if spec or conversion:
            raise ValueError(f"filename field {{{name}}}: format specs and conversions are not supported")
        names.append(name)
    return names


def safe_part(value: str) -> str:
    """``value`` reduced to letters, digits, '.', '_' and '-', without '..', at most 64 chars.

    >>> safe_part("../etc/passwd")
    '__etc_passwd'
    """
    return _DOTS.sub("_", _UNSAFE.sub("_", value))[:MAX_VALUE_CHARS]


class FileDestinationConfig(DestinationConfig):
    """Write each message to a file in a directory."""

    directory: str = Field(min_length=1, description="Target directory, relative to the project root; created.")
    filename: str = Field(
        "{channel}-{message_id}.{ext}",
        min_length=1,
        description="File name template; fields: " + ", ".join(FILENAME_FIELDS) + " (date and time in UTC).",
    )
    temp_suffix: str = Field(
        ".tmp",
        min_length=1,
        description="Suffix of the temporary file renamed into place (used to replace an existing file, and "
        "where the filesystem cannot write unnamed files).",
    )
    fsync: bool = Field(
        True,
        description="Make files durable before they are reported SENT (one filesystem sync per batch of sends).",
    )
    overwrite: Literal["replace", "error", "skip"] = Field(
        "replace",
        description="When the file exists: replace it (idempotent re-delivery), fail the message, or keep it.",
    )

    @field_validator("filename")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        template_fields(value)
        _check_name_text(value, "filename")
        return value

    @field_validator("temp_suffix")
    @classmethod
    def _valid_suffix(cls, value: str) -> str:
        _check_name_text(value, "temp_suffix")
        return value


def _check_name_text(value: str, key: str) -> None:
    if "/" in value or "\\" in value:
        raise ValueError(f"{key} must be a file name, not a path (no / or \\); put folders in directory")
    if not _PRINTABLE.match(value):
        raise ValueError(f"{key} may only hold printable ASCII characters")
    if ".." in value:
        raise ValueError(f"{key} may not contain '..'")


@functools.lru_cache(maxsize=256)
def _used_fields(template: str) -> frozenset[str]:
    try:
        return frozenset(template_fields(template))
    except ValueError:
        return frozenset(FILENAME_FIELDS)  # let format_map report it below


def _field_value(name: str, item: Outbound, now: float) -> str:
    if name in ("date", "time"):
        return time.strftime("%Y%m%d" if name == "date" else "%H%M%S", time.gmtime(now))
    if name == "timestamp":
        return str(int(now * 1000))
    if name == "ext":
        return extension_for(item.content_type)
    if name == "attempt":
        return str(item.attempt)
    return str(getattr(item, name))


def render_name(template: str, item: Outbound, now: float) -> str:
    """The file name for ``item``; raise ``PermanentError`` when it cannot be a file name."""
    # Only the fields the template names are computed (one sanitising pass each).
    values = {name: safe_part(_field_value(name, item, now)) for name in _used_fields(template)}
    try:
        name = template.format_map(values)
    except (KeyError, ValueError, IndexError) as exc:
        raise PermanentError(f"filename template cannot be rendered ({type(exc).__name__})") from exc
    # Joins can still make '..' ("{control_id}.{ext}" with an id ending in '.') or a hidden file.
    name = _DOTS.sub(".", name)
    if name.startswith("."):
        name = "_" + name[1:]
    if not name.strip("._-"):
        raise PermanentError("filename template rendered an empty name")
    return name


@dataclass(frozen=True)
class _Plan:
    """Where one delivery writes (plain strings: this runs once per file)."""

    directory: str
    name: str
    temp_suffix: str
    overwrite: str
    fsync: bool

    @property
    def final(self) -> str:
        return os.path.join(self.directory, self.name)

    @property
    def temp(self) -> str:
        return os.path.join(self.directory, self.name + self.temp_suffix)


def _fsync_directory(directory: str | Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems (and platforms) cannot fsync a directory; the rename stands anyway.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
# Linux: an unnamed file in a directory, given a name later with linkat(2) through /proc.
_UNNAMED_FLAGS = getattr(os, "O_TMPFILE", 0) | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
# What open(O_TMPFILE) answers where the filesystem or the kernel cannot do it.
_NO_UNNAMED = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL})


_UNNAMED_REFUSED: set[str] = set()  # directories whose filesystem refused O_TMPFILE


def _unnamed_files() -> bool:
    return bool(getattr(os, "O_TMPFILE", 0)) and os.path.isdir("/proc/self/fd")


def _write_all_to(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]


def _write_temp(plan: _Plan, content: bytes) -> None:
    # Plain descriptor calls: open() would add fstat, ioctl and lseek per file, and each
    # system call here hands the GIL back and forth with the busy event loop.
    fd = os.open(plan.temp, _TEMP_FLAGS, 0o666)
    try:
        _write_all_to(fd, content)
        if plan.fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_unnamed(plan: _Plan, content: bytes, dir_fd: int) -> bool | None:
    """Write ``content`` to an unnamed file in ``dir_fd`` and link it as ``plan.name``.

    True when placed, False when a file of that name exists (nothing is left behind), None
    when this filesystem cannot make unnamed files (the caller writes a temp file instead).
    One directory entry per file instead of a temp name, a rename and (for the exclusive
    modes) a link and an unlink.
    """
    try:
        fd = os.open(".", _UNNAMED_FLAGS, 0o666, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _NO_UNNAMED:
            _UNNAMED_REFUSED.add(plan.directory)  # asked once per directory, not per file
            return None
        raise
    try:
        _write_all_to(fd, content)
        if plan.fsync:
            os.fsync(fd)
        try:
            # linkat(AT_SYMLINK_FOLLOW): os.link uses linkat only when given a directory fd.
            os.link(f"/proc/self/fd/{fd}", plan.name, dst_dir_fd=dir_fd)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno in _NO_LINKS:
                return None
            raise
    finally:
        os.close(fd)  # an unnamed file never linked is freed here
    return True


def _place_exclusive(plan: _Plan) -> bool:
    """Move the temp file to the final name unless one exists; False when it existed."""
    try:
        os.link(plan.temp, plan.final)  # atomic "create unless exists"
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        # No hard links here: a check then rename, with a small race nobody else can close either.
        if os.path.exists(plan.final):
            return False
        os.replace(plan.temp, plan.final)
        return True
    os.unlink(plan.temp)
    return True


def _conflict(plan: _Plan) -> bool:
    """Handle an existing final file per ``overwrite``: True = skip, raise for error."""
    if plan.overwrite == "error":
        raise PermanentError(
            f"a file with this name already exists in {os.path.basename(plan.directory)} (overwrite: error)"
        )
    return True


def write_file(plan: _Plan, content: bytes, dir_fd: int | None = None) -> bool:
    """Write ``content`` atomically per ``plan`` (blocking); False when an existing file was kept.

    With ``dir_fd`` (the open directory) the file is written unnamed and linked into place
    where the platform allows; otherwise, or when the name exists and is to be replaced,
    through a temp file and a rename.
    """
    if plan.overwrite != "replace" and os.path.exists(plan.final) and _conflict(plan):
        return False
    if dir_fd is not None:
        placed = _write_unnamed(plan, content, dir_fd)
        if placed:
            return True
        if placed is False and plan.overwrite != "replace":
            return not _conflict(plan)
    try:
        _write_temp(plan, content)
    except FileNotFoundError:
        os.makedirs(plan.directory, exist_ok=True)  # created lazily: a syscall saved per file
        _write_temp(plan, content)
    placed = False
    try:
        if plan.overwrite == "replace":
            os.replace(plan.temp, plan.final)
            placed = True
        elif not _place_exclusive(plan) and _conflict(plan):
            return False
        else:
            placed = True
    finally:
        if not placed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(plan.temp)
    if plan.fsync:
        _fsync_directory(plan.directory)
    return True


def _sync_filesystem(directory: Path, files: list[str]) -> None:
    """Make the given files and their renames durable with one syncfs(2) where Linux offers it.

    One filesystem sync per batch costs one journal commit instead of two fsyncs per file.
    Elsewhere each file and then the directory are fsynced.
    """
    if _syncfs(directory):
        return
    for file in files:
        try:
            fd = os.open(file, os.O_RDONLY)
        except FileNotFoundError:
            continue  # replaced meanwhile by a later delivery of the same name
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_directory(directory)


@functools.cache
def _libc_syncfs() -> Any:
    """libc's syncfs, looked up once (find_library may run a subprocess); None elsewhere."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


def _syncfs(directory: Path) -> bool:
    syncfs = _libc_syncfs()
    if syncfs is None:
        return False
    import ctypes

    fd = os.open(directory, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed")
    finally:
        os.close(fd)
    return True


class FileDestination:
    """Writes each message to ``directory/filename`` through a temp file and a rename.

    ``SendResult.detail`` is the file's path as configured (relative to the project root
    when ``directory`` is relative).

        dest = FileDestination(config, channel="adt-in", base_dir=root, log=log)
        await dest.open()
        result = await dest.send(outbound)  # result.detail == "var/out/adt-in-01J....hl7"
        await dest.close()
    """

    def __init__(
        self,
        config: FileDestinationConfig,
        *,
        channel: str,
        base_dir: Path,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.config = config
        self.channel = channel
        self._directory = base_dir / config.directory  # an absolute directory stays absolute
        self._directory_str = str(self._directory)
        self._detail_prefix = str(Path(config.directory))  # as configured, for SendResult.detail
        self._log = log
        self.problem: str | None = None
        self._unsynced: list[str] = []
        self._unnamed = _unnamed_files()

    async def open(self) -> None:
        """Create the directory; a failure here is retried per message, not a held queue."""
        try:
            await asyncio.to_thread(self._directory.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            self._log.warning(
                "Output directory cannot be created yet.",
                extra={"destination": self.config.name, "error": _os_reason(exc)},
            )

    async def close(self) -> None:
        """Nothing to release: every send opens and closes its own file."""

    async def flush(self) -> None:
        """Make every file written since the last flush durable (raises RetryableError if not)."""
        files, self._unsynced = self._unsynced, []
        if not files:
            return
        try:
            await asyncio.to_thread(_sync_filesystem, self._directory, files)
        except OSError as exc:
            raise RetryableError(f"syncing {self.config.directory} failed: {_os_reason(exc)}") from exc

    async def send(self, item: Outbound) -> SendResult:
        """Write ``item``; raise ``RetryableError`` on I/O errors, ``PermanentError`` on bad names."""
        result = (await self.send_batch([item]))[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def send_batch(self, items: list[Outbound]) -> list[SendResult | Exception]:
        """Write several items in one worker thread, stopping at the first failure."""
        return await asyncio.to_thread(self._write_all, items)

    def _write_all(self, items: list[Outbound]) -> list[SendResult | Exception]:
        results: list[SendResult | Exception] = []
        dir_fd = self._open_directory()
        try:
            for item in items:
                try:
                    results.append(self._write_one(item, dir_fd))
                except (RetryableError, PermanentError) as exc:
                    results.append(exc)
                    break
        finally:
            if dir_fd is not None:
                os.close(dir_fd)
        return results

    def _open_directory(self) -> int | None:
        """The directory, open for unnamed files (None: write through temp names instead)."""
        if not self._unnamed or self._directory_str in _UNNAMED_REFUSED:
            return None
        try:
            return os.open(self._directory_str, _DIR_FLAGS)
        except OSError:
            return None  # missing or unusable: the temp-name path creates it or reports why

    def _write_one(self, item: Outbound, dir_fd: int | None = None) -> SendResult:
        name = render_name(self.config.filename, item, time.time())
        if len((name + self.config.temp_suffix).encode()) > MAX_NAME_BYTES:
            raise PermanentError(f"rendered file name is longer than {MAX_NAME_BYTES} bytes; shorten filename")
        # Durability is deferred to flush(), which the runtime calls before recording SENT.
        plan = _Plan(self._directory_str, name, self.config.temp_suffix, self.config.overwrite, False)
        try:
            written = write_file(plan, item.content, dir_fd)
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise PermanentError("rendered file name is too long for this filesystem") from exc
            raise RetryableError(f"writing to {self.config.directory} failed: {_os_reason(exc)}") from exc
        if self.config.fsync:
            self._unsynced.append(plan.final)
        if not written:
            self._log.info(
                "File exists; delivery skipped.", extra={"destination": self.config.name, "message_id": item.message_id}
            )
        return SendResult(detail=os.path.join(self._detail_prefix, name))


def _os_reason(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or type(exc).__name__
    return f"{text} ({code})" if code else text


FILE_DESTINATION = destination_spec(
    name="file",
    summary="Write each message to its own file (atomically, durable before SENT); idempotent by default.",
    config=FileDestinationConfig,
    factory="engine.connectors.file:FileDestination",
    examples=(
        Example("Archive every message", "type: file\nname: archive\ndirectory: var/out/adt\n"),
        Example(
            "Date-stamped drop for a downstream poller, never overwritten",
            "type: file\n"
            "name: lab-drop\n"
            "directory: /srv/exchange/lab/in\n"
            'filename: "{date}-{control_id}-{message_id}.{ext}"\n'
            "temp_suffix: .part\n"
            "overwrite: error\n",
        ),
    ),
)
