"""Watched-folder source: files dropped in a local directory become messages.

watchdog's inotify observer (or its polling observer for network mounts) only wakes the
scanner; the work itself (completeness, claim, submit, archive) is the shared intake in
``engine.connectors.intake``, run on the event loop. A full scan also runs at start-up
and every ``rescan_secs``, because files already there produce no events and inotify
queues can overflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from engine.connectors.intake import Intake, IntakeConfig, IntakeLayout, LocalTransport, channel_name, is_ignored
from engine.core.contracts import SourceContext
from engine.core.spec import Example, source_spec

__all__ = ["FOLDER_SOURCE", "FolderSource", "FolderSourceConfig"]

MIN_SCAN_GAP_SECS = 0.05  # a burst of events causes one scan, not one per event
FAILURE_BACKOFF_SECS = 5.0
JOIN_SECS = 5.0


class FolderSourceConfig(IntakeConfig):
    """A local (or mounted) directory watched for new files."""

    path: str = Field(
        min_length=1, description="The watched directory, relative to the project root; created when missing."
    )
    rescan_secs: float = Field(30.0, gt=0, description="Full directory scan this often, besides file events.")
    polling: bool = Field(
        False, description="Poll instead of inotify (NFS, SMB and some container mounts send no events)."
    )


class FolderSource:
    """Watches ``path`` and submits each complete file once (claim, submit, archive or error).

    source = FolderSource(FolderSourceConfig(type="folder", path="var/inbox"), ctx)
    await source.start()   # scans at once, then on events and every rescan_secs
    await source.stop()
    """

    def __init__(self, config: FolderSourceConfig, ctx: SourceContext) -> None:
        self.config = config
        self._ctx = ctx
        self._log = ctx.log
        root = (ctx.base_dir / config.path).absolute()
        self.root = root
        self.layout = IntakeLayout.resolve(str(root), config)
        self.intake = Intake(config, self.layout, LocalTransport(), ctx, ctx.log, {"transport": "folder"})
        self._task: asyncio.Task[None] | None = None
        self._observer: Any = None
        self._wake = asyncio.Event()
        self._busy: dict[str, float] = {}  # name -> last write event (monotonic), until closed
        self._busy_secs = max(30.0, 4 * config.stable_secs)
        self.last_error: str | None = None

    @property
    def address(self) -> str | None:
        """The watched directory."""
        return str(self.root)

    async def start(self) -> None:
        """Create the directory, start the observer and the scanner (first scan at once)."""
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            self._problem("Watched folder cannot be created; retrying on each rescan.", exc)
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._start_observer, loop)
        self._task = asyncio.create_task(self._loop(), name=f"folder:{channel_name(self._ctx)}")
        self._log.info("Watching folder.", extra={"polling": self.config.polling, "recursive": self.config.recursive})

    async def stop(self) -> None:
        """Stop the scanner (a file in progress stays claimed and is finished on restart)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        observer, self._observer = self._observer, None
        if observer is not None:
            await asyncio.to_thread(_stop_observer, observer)
        self._log.info("Stopped watching folder.")

    # -- events (watchdog thread -> event loop) ----------------------------------------------

    def _start_observer(self, loop: asyncio.AbstractEventLoop) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        source = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory:
                    return
                path = event.dest_path if event.event_type == "moved" else event.src_path
                loop.call_soon_threadsafe(source._on_event, event.event_type, _text(path))

        logging.getLogger("watchdog.observers.inotify").addFilter(_STOP_RACE)  # idempotent
        observer = PollingObserver(timeout=min(self.config.rescan_secs, 2.0)) if self.config.polling else Observer()
        try:
            observer.schedule(Handler(), str(self.root), recursive=self.config.recursive)
            observer.start()
        except OSError as exc:
            self._problem("File events are unavailable; relying on periodic rescans.", exc)
            return
        self._observer = observer

    def _on_event(self, kind: str, path: str) -> None:
        """Runs on the event loop: note writers that have a file open, wake the scanner."""
        try:
            name = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return
        if name.startswith(".") or "/." in name or is_ignored(name, self.config.ignore):
            return
        if kind in ("created", "modified") and not self.config.polling:
            self._busy[name] = time.monotonic()
        elif kind in ("closed", "moved", "deleted"):
            self._busy.pop(name, None)
        self._wake.set()

    def _busy_names(self) -> set[str]:
        """Files a writer still has open (no close event yet), forgotten after a long silence."""
        now = time.monotonic()
        for name, seen in list(self._busy.items()):
            if now - seen > self._busy_secs:
                del self._busy[name]
        return set(self._busy)

    # -- the scanner -----------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                pending = await self.intake.scan(self._busy_names())
                self.last_error = None
                wait = min(self.config.rescan_secs, max(self.config.stable_secs, MIN_SCAN_GAP_SECS))
                wait = wait if pending else self.config.rescan_secs
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a scan failure must never stop the source
                self._problem("Folder scan failed; retrying.", exc)
                wait = min(self.config.rescan_secs, FAILURE_BACKOFF_SECS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(MIN_SCAN_GAP_SECS)

    def _problem(self, sentence: str, exc: BaseException) -> None:
        code = errno.errorcode.get(getattr(exc, "errno", None) or 0, "")
        self.last_error = f"{sentence} ({type(exc).__name__}{' ' + code if code else ''})"
        self._log.warning(sentence, extra={"error_type": type(exc).__name__, "errno": code})


class _StopRaceFilter(logging.Filter):
    """Drops the ERROR watchdog 7.1 logs when its inotify thread reads once more after a clean stop."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


_STOP_RACE = _StopRaceFilter()


def _text(path: str | bytes) -> str:
    return path.decode(errors="surrogateescape") if isinstance(path, bytes) else path


def _stop_observer(observer: Any) -> None:
    observer.unschedule_all()  # emitters first, so none reads inotify after the stop
    observer.stop()
    observer.join(JOIN_SECS)


FOLDER_SOURCE = source_spec(
    name="folder",
    summary="Take complete files from a watched directory (inotify plus rescans); claim, archive or error folder.",
    config=FolderSourceConfig,
    factory="engine.connectors.folder:FolderSource",
    capabilities=frozenset({"responds"}),
    examples=(
        Example("Purchase orders dropped by a partner", "type: folder\npath: var/inbox/po\nglob: '*.edi'\n"),
        Example(
            "Lab results on an NFS mount, 997s written back",
            "type: folder\n"
            "path: /mnt/exchange/lab\n"
            "polling: true\n"
            "rescan_secs: 10\n"
            "stable_secs: 5\n"
            "recursive: true\n"
            "ignore: ['*.lck']\n"
            "archive_dir: /mnt/exchange/lab-archive\n"
            "error_dir: /mnt/exchange/lab-error\n"
            "response_dir: /mnt/exchange/lab-out\n"
            "response_name: '{stem}.997'\n",
        ),
    ),
)
