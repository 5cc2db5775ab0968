"""Threshold alerts of a channel: errors within a sliding window, destination queue depth and age.

``ThresholdAlerts`` holds the logic and no I/O: the channel counts errors into it as they
happen, and its monitor task hands it the queue figures read from the store every
``check_secs``. Each condition is raised once when it starts to hold and cleared once when
it stops; in between, the current value is only updated (no alert storm).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.core.channel import AlertsDef

ALERT_CHECK_SECS = 5.0  # how often thresholds are checked; the engine setting alerts.check_secs
WINDOW_BUCKETS = 600  # an error window keeps at most this many counts, whatever the error rate

ERRORS = "errors"
QUEUE_DEPTH = "queue-depth"
QUEUE_AGE = "queue-age"


@dataclass
class Alert:
    """One raised threshold alert. ``value`` is the latest figure; queue age is in minutes."""

    event: str
    destination: str | None
    value: float
    threshold: float
    since: float  # epoch seconds when it was raised
    window_minutes: float | None = None  # errors: the window the count is taken over

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": self.event,
            "destination": self.destination,
            "value": self.value,
            "threshold": self.threshold,
            "since": self.since,
        }
        if self.window_minutes is not None:
            out["window_minutes"] = self.window_minutes
        return out


@dataclass
class AlertChange:
    """An alert that was just raised or cleared (``alert.value``: the figure at that moment)."""

    alert: Alert
    cleared: bool

    @property
    def event(self) -> str:
        return f"{self.alert.event}-cleared" if self.cleared else self.alert.event


@dataclass
class QueueFigures:
    """One destination's queue as the store reports it."""

    depth: int
    oldest_age_secs: float | None = None  # None: nothing waits, or the age was not read


class ErrorWindow:
    """How many errors happened in the last ``minutes``, in memory.

    Counts go into buckets of at least a second (a window up to 10 minutes: 1 s buckets),
    so memory stays bounded under an error storm; an error leaves the window up to one
    bucket late.
    """

    def __init__(self, minutes: float) -> None:
        self.span = minutes * 60.0
        self.width = max(1.0, self.span / WINDOW_BUCKETS)
        self._buckets: deque[list[int]] = deque()  # [bucket number, errors]
        self._total = 0

    def add(self, now: float, count: int = 1) -> None:
        key = int(now // self.width)
        if self._buckets and self._buckets[-1][0] >= key:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([key, count])
        self._total += count

    def count(self, now: float) -> int:
        """Errors in the window ending ``now`` (buckets wholly older than the window drop)."""
        horizon = now - self.span
        while self._buckets and (self._buckets[0][0] + 1) * self.width <= horizon:
            self._total -= self._buckets.popleft()[1]
        return self._total


class ThresholdAlerts:
    """The raised/cleared state of a channel's ``alerts.errors`` and ``alerts.queue``.

    ``clock`` is monotonic (the error window), ``wall`` gives the epoch times reported.
    """

    def __init__(
        self,
        config: AlertsDef,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.wall = wall
        self.window = ErrorWindow(config.errors.minutes) if config.errors is not None else None
        self._raised: dict[tuple[str, str | None], Alert] = {}

    @property
    def watches_queues(self) -> bool:
        return self.config.queue is not None

    @property
    def watches_age(self) -> bool:
        return self.config.queue is not None and self.config.queue.age_minutes is not None

    def record_errors(self, count: int = 1) -> None:
        if self.window is not None and count > 0:
            self.window.add(self.clock(), count)

    def raised(self) -> list[Alert]:
        """The alerts raised now, errors first, then by destination and event."""
        return sorted(self._raised.values(), key=lambda a: (a.destination or "", a.event))

    def carry_over(self, previous: ThresholdAlerts) -> None:
        """A redeploy goes on where the previous deployment stopped: its raised alerts (the
        next check clears those no longer watched, or no longer holding) and, if the window
        is unchanged, its error count. Nothing is raised twice."""
        self._raised = {key: Alert(**vars(alert)) for key, alert in previous._raised.items()}
        if self.window is not None and previous.window is not None and previous.window.span == self.window.span:
            self.window = previous.window

    def check(self, queues: Mapping[str, QueueFigures] | None) -> list[AlertChange]:
        """Compare the figures with the thresholds; return what was raised or cleared now.

        ``queues``: every destination's figures, or None when they could not be read (the
        queue alerts then stay as they are). A raised alert nothing watches any more (a
        threshold or destination removed by a redeploy) is cleared.
        """
        changes: list[AlertChange] = []
        watched: set[tuple[str, str | None]] = set()
        errors = self.config.errors
        if errors is not None and self.window is not None:
            count = self.window.count(self.clock())
            self._update(changes, watched, ERRORS, None, count, errors.count, window=errors.minutes)
        queue = self.config.queue
        if queue is not None and queues is not None:
            for destination, figures in queues.items():
                if queue.depth is not None:
                    self._update(changes, watched, QUEUE_DEPTH, destination, figures.depth, queue.depth)
                if queue.age_minutes is not None:
                    age = (figures.oldest_age_secs or 0.0) / 60.0 if figures.depth > 0 else 0.0
                    self._update(changes, watched, QUEUE_AGE, destination, round(age, 2), queue.age_minutes)
        for key in [k for k in self._raised if k not in watched]:
            if key[1] is not None and queue is not None and queues is None:
                continue  # not read this time: as it was
            changes.append(AlertChange(self._raised.pop(key), cleared=True))
        return changes

    def _update(
        self,
        changes: list[AlertChange],
        watched: set[tuple[str, str | None]],
        event: str,
        destination: str | None,
        value: float,
        threshold: float,
        *,
        window: float | None = None,
    ) -> None:
        key = (event, destination)
        watched.add(key)
        alert = self._raised.get(key)
        if value >= threshold:
            if alert is None:
                alert = Alert(event, destination, value, threshold, self.wall(), window)
                self._raised[key] = alert
                changes.append(AlertChange(Alert(**vars(alert)), cleared=False))
            else:
                alert.value, alert.threshold, alert.window_minutes = value, threshold, window
        elif alert is not None:
            del self._raised[key]
            alert.value, alert.threshold, alert.window_minutes = value, threshold, window
            changes.append(AlertChange(alert, cleared=True))
