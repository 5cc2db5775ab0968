"""Threshold alerts: the error window, raise once then clear once, per destination and kind,
and the validation of the ``alerts:`` block."""

from __future__ import annotations

import textwrap

import pytest

from engine.core.channel import AlertsDef
from engine.core.errors import ConfigError
from engine.core.loader import load_channel
from engine.runtime.alerts import WINDOW_BUCKETS, ErrorWindow, QueueFigures, ThresholdAlerts


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def thresholds(config: dict[str, object], clock: Clock) -> ThresholdAlerts:
    return ThresholdAlerts(AlertsDef.model_validate(config), clock=clock, wall=lambda: 1_700_000_000.0 + clock.now)


def events(changes: list) -> list[tuple[str, str | None, float]]:  # type: ignore[type-arg]
    return [(c.event, c.alert.destination, c.alert.value) for c in changes]


def test_error_window_counts_only_the_last_minutes() -> None:
    window = ErrorWindow(minutes=5)
    window.add(100.0)
    window.add(100.4, 2)
    window.add(250.0)
    assert window.count(250.0) == 4
    assert window.count(400.5) == 4  # 300.5 s after the first: within one 1 s bucket of the edge
    assert window.count(401.5) == 1  # the first three left the window
    assert window.count(551.5) == 0


def test_error_window_memory_is_bounded_under_a_storm() -> None:
    window = ErrorWindow(minutes=60)
    for i in range(100_000):
        window.add(i * 0.1)  # ten errors a second for almost three hours
    assert window.count(9_999.9) == pytest.approx(36_000, rel=0.01)
    assert len(window._buckets) <= WINDOW_BUCKETS + 1


def test_errors_raise_once_then_clear_once_then_raise_again() -> None:
    clock = Clock()
    alerts = thresholds({"errors": {"count": 3, "minutes": 1}}, clock)
    alerts.record_errors(2)
    assert alerts.check(None) == []
    alerts.record_errors()
    raised = alerts.check(None)
    assert events(raised) == [("errors", None, 3)]
    assert raised[0].alert.window_minutes == 1
    assert raised[0].alert.since == 1_700_000_000.0 + 1000.0
    alerts.record_errors(5)
    clock.now += 10
    assert alerts.check(None) == []  # still above: no second alert
    (current,) = alerts.raised()
    assert (current.event, current.value) == ("errors", 8)  # the status shows the latest count
    clock.now += 61
    cleared = alerts.check(None)
    assert events(cleared) == [("errors-cleared", None, 0)]
    assert cleared[0].alert.since == 1_700_000_000.0 + 1000.0  # when it was raised
    assert alerts.raised() == []
    assert alerts.check(None) == []  # cleared once
    alerts.record_errors(3)
    assert events(alerts.check(None)) == [("errors", None, 3)]


def test_queue_depth_and_age_are_separate_alerts_per_destination() -> None:
    clock = Clock()
    alerts = thresholds({"queue": {"depth": 100, "age_minutes": 30}}, clock)
    quiet = {"erp": QueueFigures(0), "archive": QueueFigures(5, 60.0)}
    assert alerts.check(quiet) == []
    deep = {"erp": QueueFigures(150, 120.0), "archive": QueueFigures(5, 31 * 60.0)}
    assert sorted(events(alerts.check(deep))) == [
        ("queue-age", "archive", 31.0),
        ("queue-depth", "erp", 150),
    ]
    deeper = {"erp": QueueFigures(400, 31 * 60.0), "archive": QueueFigures(6, 32 * 60.0)}
    assert events(alerts.check(deeper)) == [("queue-age", "erp", 31.0)]  # only what is new
    assert [(a.event, a.destination, a.value) for a in alerts.raised()] == [
        ("queue-age", "archive", 32.0),
        ("queue-age", "erp", 31.0),
        ("queue-depth", "erp", 400),
    ]
    drained = {"erp": QueueFigures(0), "archive": QueueFigures(6, 33 * 60.0)}
    assert sorted(events(alerts.check(drained))) == [
        ("queue-age-cleared", "erp", 0.0),  # nothing waits: no age
        ("queue-depth-cleared", "erp", 0),
    ]
    assert [(a.event, a.destination) for a in alerts.raised()] == [("queue-age", "archive")]


def test_unknown_queue_figures_leave_queue_alerts_as_they_are() -> None:
    clock = Clock()
    alerts = thresholds({"queue": {"depth": 10}, "errors": {"count": 1, "minutes": 1}}, clock)
    assert events(alerts.check({"erp": QueueFigures(10)})) == [("queue-depth", "erp", 10)]
    alerts.record_errors()
    assert events(alerts.check(None)) == [("errors", None, 1)]  # the store did not answer
    assert [a.event for a in alerts.raised()] == ["errors", "queue-depth"]
    assert events(alerts.check({"erp": QueueFigures(9)})) == [("queue-depth-cleared", "erp", 9)]


def test_queue_alerts_without_an_age_threshold_never_report_one() -> None:
    alerts = thresholds({"queue": {"depth": 10}}, Clock())
    assert events(alerts.check({"erp": QueueFigures(3, 10_000.0)})) == []
    assert not alerts.watches_age


def test_a_redeploy_carries_raised_alerts_and_the_error_count_over() -> None:
    clock = Clock()
    before = thresholds({"errors": {"count": 2, "minutes": 1}, "queue": {"depth": 10}}, clock)
    before.record_errors(2)
    assert len(before.check({"erp": QueueFigures(10), "archive": QueueFigures(10)})) == 3
    # same window, one more error, depth raised to 20, the archive destination removed
    after = thresholds({"errors": {"count": 2, "minutes": 1}, "queue": {"depth": 20}}, clock)
    after.carry_over(before)
    after.record_errors()
    changes = after.check({"erp": QueueFigures(15)})
    assert sorted(events(changes)) == [
        ("queue-depth-cleared", "archive", 10),  # no longer watched
        ("queue-depth-cleared", "erp", 15),  # below the new threshold
    ]
    (errors,) = after.raised()
    assert (errors.event, errors.value, errors.since) == ("errors", 3, 1_700_000_000.0 + 1000.0)  # not raised again


def test_a_redeploy_without_the_threshold_clears_its_alert() -> None:
    clock = Clock()
    before = thresholds({"errors": {"count": 1, "minutes": 1}, "queue": {"depth": 1}}, clock)
    before.record_errors()
    before.check({"erp": QueueFigures(1)})
    after = thresholds({"queue": {"depth": 1}}, clock)
    after.carry_over(before)
    assert events(after.check(None)) == [("errors-cleared", None, 1)]  # queue figures unknown: kept
    assert [a.event for a in after.raised()] == ["queue-depth"]
    assert after.check({"erp": QueueFigures(1)}) == []


CHANNEL = """
    name: alerting
    source: {type: mllp, listen: 127.0.0.1:0}
    pipeline: {datatype: hl7v2}
    destinations:
      - {name: erp, type: http, url: http://127.0.0.1:9/x}
    alerts:
"""


def _load(alerts: str) -> object:
    text = textwrap.dedent(CHANNEL) + textwrap.indent(textwrap.dedent(alerts), "  ")
    return load_channel("alerting.yaml", text=text)


def test_alert_thresholds_load() -> None:
    channel = _load(
        """
        webhook: {type: http, url: http://127.0.0.1:9/alerts}
        errors: {count: 10, minutes: 5}
        queue: {depth: 1000, age_minutes: 30}
        """
    )
    alerts = channel.alerts  # type: ignore[attr-defined]
    assert (alerts.errors.count, alerts.errors.minutes) == (10, 5)
    assert (alerts.queue.depth, alerts.queue.age_minutes) == (1000, 30)
    assert _load("queue: {age_minutes: 0.5}").alerts.queue.depth is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        ("queue: {}", "queue alerts need depth, age_minutes or both"),
        ("errors: {count: 0, minutes: 5}", "alerts.errors.count: expected a number greater than 0"),
        ("errors: {count: 10}", "alerts.errors.minutes: required field is missing"),
        ("errors: {count: 10, minutes: 5, window: 3}", "alerts.errors.window: unknown key"),
        ("queue: {depth: 100, age_mins: 3}", 'alerts.queue.age_mins: unknown key (did you mean "age_minutes"?)'),
        ("queue: {depth: lots}", "alerts.queue.depth: expected an integer"),
        ("eror: {count: 1, minutes: 1}", 'alerts.eror: unknown key (did you mean "errors"?)'),
    ],
)
def test_invalid_alert_thresholds_are_clear_errors(alerts: str, expected: str) -> None:
    with pytest.raises(ConfigError) as failed:
        _load(alerts)
    text = "\n".join(str(d) for d in failed.value.diagnostics)
    assert expected in text, text
