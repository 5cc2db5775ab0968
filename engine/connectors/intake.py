"""File intake shared by the folder and SFTP sources: completeness, claim, submit, archive.

The flow for every file, whatever the transport:

1. **List** the watched directory (optionally recursive), keeping names that match ``glob``
   and skipping temp names (``*.tmp``, ``*.part``, ``.~*``, ``*.filepart``, hidden files)
   and the ``ignore`` patterns.
2. **Complete?** A file is taken only when its size and mtime stayed the same across two
   observations at least ``stable_secs`` apart (and, for the folder source, no writer has
   it open).
3. **Claim** it by an atomic rename into the work folder before reading a byte: one node
   and one pass only ever processes it.
4. **Read** it (SFTP: streamed to a local spool file while hashing) and submit it with a
   dedupe key ``name|size|mtime|sha256``, committed atomically with the message.
5. **After the commit**: write the response (997, ACK) to ``response_dir`` when asked,
   then archive or delete the file; a file the channel did not accept goes to
   ``error_dir`` with ``<name>.reason.txt`` beside it.

After a crash the work folder still holds the claimed files: each is submitted again with
the same dedupe key, the runtime answers ``DUPLICATE`` for those already committed, and
they are archived, so no file is lost and none is processed twice.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import logging
import os
import posixpath
import string
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field, field_validator

from engine.core.channel import SourceConfig
from engine.core.contracts import SourceContext, SubmitResult

__all__ = [
    "DEFAULT_IGNORE",
    "RESPONSE_FIELDS",
    "FileInfo",
    "FileTooLarge",
    "Intake",
    "IntakeConfig",
    "IntakeLayout",
    "LocalTransport",
    "Stability",
    "Transport",
    "channel_name",
    "dedupe_key",
    "is_ignored",
    "response_file_name",
    "unique_name",
]

DEFAULT_IGNORE = ("*.tmp", "*.part", ".~*", "*.filepart", ".*")
RESPONSE_FIELDS = ("name", "stem", "ext", "message_id")
REASON_SUFFIX = ".reason.txt"
READ_CHUNK = 1024 * 1024
MAX_UNIQUE_TRIES = 1000


class FileTooLarge(Exception):
    """A file turned out larger than ``max_file_bytes`` while it was read."""


class IntakeConfig(SourceConfig):
    """Keys shared by the file-intake sources (folder, sftp)."""

    path: str = Field(min_length=1, description="The watched directory.")
    glob: str = Field("*", min_length=1, description="Only file names matching this pattern are taken (e.g. *.edi).")
    recursive: bool = Field(False, description="Also take files from sub-directories (hidden ones are skipped).")
    ignore: list[str] = Field(
        default_factory=list,
        description="More name patterns to skip, besides *.tmp, *.part, .~*, *.filepart and hidden files.",
    )
    stable_secs: float = Field(
        2.0, ge=0, description="A file is complete when its size and mtime stay unchanged for this long."
    )
    work_dir: str = Field(
        ".junction/work", min_length=1, description="Claimed files wait here while processed (relative to path)."
    )
    after: Literal["archive", "delete"] = Field(
        "archive", description="What happens to a file once its message is committed."
    )
    archive_dir: str = Field(
        ".junction/archive", min_length=1, description="Where processed files go (relative to path)."
    )
    error_dir: str = Field(
        ".junction/error",
        min_length=1,
        description="Where refused files go, each with <name>.reason.txt beside it (relative to path).",
    )
    response_dir: str | None = Field(
        None, description="Write the data type's response (997, 999, ACK) here (relative to path); off when unset."
    )
    response_name: str = Field(
        "{stem}.ack",
        min_length=1,
        description="Response file name; fields: " + ", ".join(RESPONSE_FIELDS) + " (e.g. {stem}.997).",
    )
    max_file_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="Larger files go to error_dir unread, with a reason."
    )
    ack_mode: Literal["on_receipt", "after_processing"] = Field(
        "on_receipt",
        description="Answer (and archive) once the message is stored, or once the pipeline has run.",
    )

    @field_validator("glob", "ignore")
    @classmethod
    def _no_separator(cls, value: Any) -> Any:
        patterns = [value] if isinstance(value, str) else value
        for pattern in patterns:
            if "/" in pattern:
                raise ValueError("patterns match file names, not paths: remove '/'")
        return value

    @field_validator("work_dir", "archive_dir", "error_dir", "response_dir")
    @classmethod
    def _no_parent(cls, value: str | None) -> str | None:
        if value is not None and ".." in value.split("/"):
            raise ValueError("may not contain '..'; use an absolute path to leave the watched directory")
        return value

    @field_validator("response_name")
    @classmethod
    def _response_template(cls, value: str) -> str:
        response_fields(value)
        if "/" in value or ".." in value:
            raise ValueError("response_name must be a file name (no '/' or '..')")
        return value


def channel_name(ctx: SourceContext) -> str:
    """The name of the channel a source feeds (for task and spool names)."""
    return ctx.name


def response_fields(template: str) -> list[str]:
    """The fields of a response name template; ValueError for unknown ones.

    >>> response_fields("{stem}.997")
    ['stem']
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"response_name is not a valid template ({exc})") from None
    names = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in RESPONSE_FIELDS or spec or conversion:
            raise ValueError(f"response_name: unknown field {{{name}}}; valid fields: " + ", ".join(RESPONSE_FIELDS))
        names.append(name)
    return names


def response_file_name(template: str, name: str, message_id: str) -> str:
    """Render ``response_name`` for the input file ``name`` (its base name is used).

    >>> response_file_name("{stem}.997", "in/po-1.edi", "01J")
    'po-1.997'
    """
    base = posixpath.basename(name)
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem:
        stem, ext = base, ""
    return template.format(name=base, stem=stem, ext=ext, message_id=message_id)


def is_ignored(name: str, extra: Collection[str] = ()) -> bool:
    """True for temp or hidden names and names matching ``extra`` (base name only).

    >>> is_ignored("po.edi.part"), is_ignored(".~lock.po"), is_ignored("po.edi")
    (True, True, False)
    """
    base = posixpath.basename(name)
    return any(fnmatch.fnmatchcase(base, p) for p in (*DEFAULT_IGNORE, *extra))


def dedupe_key(name: str, size: int, mtime: str, sha256: str) -> str:
    """The exactly-once key of a file: relative name, size, mtime and content hash.

    >>> dedupe_key("a.hl7", 3, "1700000000", "ab")
    'a.hl7|3|1700000000|ab'
    """
    return f"{name}|{size}|{mtime}|{sha256}"


def unique_name(path: str, exists: Callable[[str], bool], now: float | None = None) -> str:
    """``path`` itself when free, else with a UTC timestamp (and a counter) before the extension.

    >>> unique_name("/a/x.hl7", lambda p: p == "/a/x.hl7", 0.0)
    '/a/x.19700101T000000Z.hl7'
    """
    if not exists(path):
        return path
    directory, base = posixpath.split(path)
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem:
        stem, ext = base, ""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    suffix = f".{ext}" if ext else ""
    for attempt in range(MAX_UNIQUE_TRIES):
        tag = stamp if attempt == 0 else f"{stamp}-{attempt}"
        candidate = posixpath.join(directory, f"{stem}.{tag}{suffix}")
        if not exists(candidate):
            return candidate
    raise FileExistsError(f"no free name for a file in {posixpath.basename(directory) or directory}")


@dataclass(frozen=True)
class FileInfo:
    """One listed file: its full path, its name relative to the watched directory, size, mtime."""

    path: str
    name: str
    size: int
    mtime: str  # as the transport reports it (folder: nanoseconds, SFTP: seconds)

    @property
    def signature(self) -> tuple[int, str]:
        return self.size, self.mtime


class Transport(Protocol):
    """Blocking file operations (run in a worker thread); paths are POSIX strings."""

    def list_files(self, root: str, pattern: str, recursive: bool, skip_dirs: Collection[str]) -> list[FileInfo]:
        """Regular files under ``root`` whose base name matches ``pattern`` (names relative to root)."""

    def stat(self, path: str) -> FileInfo | None:
        """Size and mtime of ``path`` (name = base name), None when it does not exist."""

    def exists(self, path: str) -> bool: ...

    def makedirs(self, path: str) -> None: ...

    def rename(self, src: str, dst: str) -> None:
        """Atomic rename; ``FileNotFoundError`` when ``src`` is gone."""

    def remove(self, path: str) -> None: ...

    def fetch(self, path: str, size_limit: int) -> tuple[bytes, str]:
        """The whole content and its sha256 (hex); never reads past ``size_limit`` bytes."""

    def put_bytes(self, directory: str, name: str, data: bytes) -> str:
        """Write ``data`` as ``directory/name`` via a temp name and a rename; returns the path."""


@dataclass
class Stability:
    """Tracks size and mtime across observations: a file is ready once unchanged ``stable_secs``.

    >>> s = Stability(1.0)
    >>> f = FileInfo("/d/a", "a", 3, "1")
    >>> s.observe([f], now=0.0), [x.name for x in s.observe([f], now=1.5)]
    ([], ['a'])
    """

    stable_secs: float
    _seen: dict[str, tuple[tuple[int, str], float]] = field(default_factory=dict)

    def observe(self, files: list[FileInfo], now: float, busy: Collection[str] = ()) -> list[FileInfo]:
        """Record ``files`` (the complete listing); return those complete and not ``busy``."""
        ready: list[FileInfo] = []
        current: dict[str, tuple[tuple[int, str], float]] = {}
        for info in files:
            previous = self._seen.get(info.name)
            if info.name in busy or previous is None or previous[0] != info.signature:
                current[info.name] = (info.signature, now)
                continue
            current[info.name] = previous
            if now - previous[1] >= self.stable_secs:
                ready.append(info)
        self._seen = current
        return ready

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)

    @property
    def pending(self) -> int:
        """How many listed files still wait to be complete."""
        return len(self._seen)


@dataclass(frozen=True)
class IntakeLayout:
    """The resolved directories of one intake (absolute POSIX paths)."""

    root: str
    work: str
    archive: str
    error: str
    response: str | None

    @classmethod
    def resolve(cls, root: str, config: IntakeConfig) -> IntakeLayout:
        def under(value: str) -> str:
            return posixpath.normpath(posixpath.join(root, value))

        return cls(
            root=posixpath.normpath(root),
            work=under(config.work_dir),
            archive=under(config.archive_dir),
            error=under(config.error_dir),
            response=under(config.response_dir) if config.response_dir else None,
        )

    @property
    def skip_dirs(self) -> frozenset[str]:
        """Directories a recursive listing must never enter."""
        return frozenset(d for d in (self.work, self.archive, self.error, self.response) if d)


class Intake:
    """Completeness, claim, submit and archive for one watched directory (transport-neutral).

    ``scan()`` runs one pass: claimed leftovers first (work folder), then complete new
    files, one at a time in name order. Transport errors (a dropped SFTP connection)
    propagate so the source can reconnect; the file stays claimed and a later pass
    finishes it with the same dedupe key.
    """

    def __init__(
        self,
        config: IntakeConfig,
        layout: IntakeLayout,
        transport: Transport,
        ctx: SourceContext,
        log: logging.LoggerAdapter[logging.Logger],
        source_fields: dict[str, Any],
    ) -> None:
        self.config = config
        self.layout = layout
        self.transport = transport
        self._ctx = ctx
        self._log = log
        self._source_fields = dict(source_fields)
        self.stability = Stability(config.stable_secs)
        self.processed = 0
        self._made: set[str] = set()
        self._unclaimable: set[tuple[str, tuple[int, str]]] = set()

    async def _run(self, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(func, *args)

    async def scan(self, busy: Collection[str] = ()) -> int:
        """One pass; returns how many listed files still wait to be complete."""
        await self.recover()
        listed: list[FileInfo] = await self._run(
            self.transport.list_files, self.layout.root, self.config.glob, self.config.recursive, self.layout.skip_dirs
        )
        listed = [f for f in listed if not is_ignored(f.name, self.config.ignore)]
        ready = self.stability.observe(listed, time.monotonic(), busy)
        for info in sorted(ready, key=lambda f: f.name):
            self.stability.forget(info.name)
            await self._claim_and_process(info)
        return self.stability.pending

    async def recover(self) -> int:
        """Finish files claimed by an earlier pass or process (crash); returns how many."""
        claimed: list[FileInfo] = await self._run(self.transport.list_files, self.layout.work, "*", True, ())
        for info in sorted(claimed, key=lambda f: f.name):
            self._log.info("Claimed file found in the work folder; finishing it.", extra=self._fields(info))
            await self._process(info.name, info)
        return len(claimed)

    async def _claim_and_process(self, info: FileInfo) -> None:
        work_path = posixpath.join(self.layout.work, info.name)
        await self._ensure_dir(posixpath.dirname(work_path))
        try:
            await self._run(self.transport.rename, info.path, work_path)
        except FileNotFoundError:
            self._log.info("File vanished before it was claimed (taken by another node?).", extra=self._fields(info))
            return
        except PermissionError:
            # Left where it is; warned once per version of the file, retried on later passes.
            if (info.name, info.signature) not in self._unclaimable:
                self._unclaimable.add((info.name, info.signature))
                sentence = "File cannot be claimed (permission denied); left in place."
                self._log.warning(sentence, extra=self._fields(info))
            return
        claimed = await self._run(self.transport.stat, work_path)
        if claimed is None:
            return
        await self._process(info.name, FileInfo(work_path, info.name, claimed.size, claimed.mtime))

    async def _process(self, name: str, claimed: FileInfo) -> None:
        """Submit one claimed file (``claimed.path`` in the work folder) and file it away."""
        source = {**self._source_fields, "file": name, "size": claimed.size}
        if claimed.size > self.config.max_file_bytes:
            reason = f"file is {claimed.size} bytes, over max_file_bytes ({self.config.max_file_bytes}); not read"
            refused_key = dedupe_key(name, claimed.size, claimed.mtime, "unread")
            result = await self._ctx.reject(b"", source, reason, dedupe_key=refused_key)
            await self._to_error(name, claimed.path, reason, result.message_id)
            return
        try:
            raw, digest = await self._run(self.transport.fetch, claimed.path, self.config.max_file_bytes)
        except (FileTooLarge, PermissionError) as exc:
            reason = str(exc) if isinstance(exc, FileTooLarge) else "file cannot be read (permission denied)"
            refused_key = dedupe_key(name, claimed.size, claimed.mtime, "unread")
            result = await self._ctx.reject(b"", source, reason, dedupe_key=refused_key)
            await self._to_error(name, claimed.path, reason, result.message_id)
            return
        key = dedupe_key(name, len(raw), claimed.mtime, digest)
        result = await self._ctx.submit(raw, source, dedupe_key=key)
        del raw
        await self._answer(name, result)
        if result.accepted:
            await self._finish(name, claimed, result)
        else:
            reason = result.reason or f"the channel did not accept the message (status {result.status or 'ERROR'})"
            await self._to_error(name, claimed.path, reason, result.message_id)
        self.processed += 1

    async def _answer(self, name: str, result: SubmitResult) -> None:
        if self.layout.response is None or result.response is None:
            return
        target = posixpath.join(self.layout.response, posixpath.dirname(name))
        file_name = response_file_name(self.config.response_name, name, result.message_id)
        await self._ensure_dir(target)
        await self._run(self.transport.put_bytes, target, file_name, result.response)

    async def _finish(self, name: str, claimed: FileInfo, result: SubmitResult) -> None:
        fields = {"message_id": result.message_id, "status": result.status, "bytes": claimed.size}
        if self.config.after == "delete":
            await self._run(self.transport.remove, claimed.path)
            self._log.info("File processed and deleted.", extra=fields)
            return
        await self._move(claimed.path, posixpath.join(self.layout.archive, name))
        self._log.info("File processed and archived.", extra=fields)

    async def _to_error(self, name: str, work_path: str, reason: str, message_id: str) -> None:
        final = await self._move(work_path, posixpath.join(self.layout.error, name))
        text = (
            f"file: {name}\n"
            f"message_id: {message_id}\n"
            f"time: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
            f"reason: {reason}\n"
        )
        directory, base = posixpath.split(final)
        await self._run(self.transport.put_bytes, directory, base + REASON_SUFFIX, text.encode("utf-8"))
        self._log.warning("File refused; moved to the error folder.", extra={"message_id": message_id})

    async def _move(self, src: str, dst: str) -> str:
        await self._ensure_dir(posixpath.dirname(dst))

        def move() -> str:
            final = unique_name(dst, self.transport.exists)
            self.transport.rename(src, final)
            return final

        result: str = await self._run(move)
        return result

    async def _ensure_dir(self, path: str) -> None:
        if path in self._made:
            return
        await self._run(self.transport.makedirs, path)
        self._made.add(path)

    def forget_dirs(self) -> None:
        """Forget which directories exist (after a reconnect, they may have been removed)."""
        self._made.clear()

    def _fields(self, info: FileInfo) -> dict[str, Any]:
        fields: dict[str, Any] = {"bytes": info.size}
        if self._ctx.debug:
            fields["file"] = info.name
        return fields


class LocalTransport:
    """``Transport`` on the local filesystem (the folder source)."""

    def list_files(self, root: str, pattern: str, recursive: bool, skip_dirs: Collection[str]) -> list[FileInfo]:
        found: list[FileInfo] = []
        base = Path(root)
        stack = [base]
        while stack:
            directory = stack.pop()
            try:
                entries = list(directory.iterdir())
            except FileNotFoundError:
                continue
            for entry in entries:
                try:
                    st = entry.lstat()
                except FileNotFoundError:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    if recursive and not entry.name.startswith(".") and str(entry) not in skip_dirs:
                        stack.append(entry)
                    continue
                if not entry.is_file() or not fnmatch.fnmatchcase(entry.name, pattern):
                    continue
                name = entry.relative_to(base).as_posix()
                found.append(FileInfo(str(entry), name, st.st_size, str(st.st_mtime_ns)))
        return found

    def stat(self, path: str) -> FileInfo | None:
        try:
            st = Path(path).stat()
        except FileNotFoundError:
            return None
        return FileInfo(path, posixpath.basename(path), st.st_size, str(st.st_mtime_ns))

    def exists(self, path: str) -> bool:
        return Path(path).exists()

    def makedirs(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)

    def rename(self, src: str, dst: str) -> None:
        Path(src).rename(dst)

    def remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def fetch(self, path: str, size_limit: int) -> tuple[bytes, str]:
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        total = 0
        with open(path, "rb") as fh:
            while chunk := fh.read(READ_CHUNK):
                total += len(chunk)
                if total > size_limit:
                    raise FileTooLarge(f"file grew past max_file_bytes ({size_limit}) while being read")
                digest.update(chunk)
                chunks.append(chunk)
        return b"".join(chunks), digest.hexdigest()

    def put_bytes(self, directory: str, name: str, data: bytes) -> str:
        final = Path(directory) / name
        temp = Path(directory) / (name + ".part")
        with open(temp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        temp.replace(final)
        return str(final)
