"""Core pieces: ids, retry policy, filters, YAML loading with positions and ${VAR}."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.channel import FilterRule, RetryPolicy
from engine.core.errors import ConfigError
from engine.core.loader import load_yaml
from engine.core.message import new_id
from engine.runtime.filters import compile_filter


class Doc:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, path: str) -> str | None:
        return self.values.get(path)

    def get_all(self, path: str) -> list[str]:
        return [self.values[path]] if path in self.values else []

    def to_data(self) -> object:
        return self.values


def test_ids_are_unique_and_time_sortable() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == 2000
    assert all(len(i) == 26 for i in ids)
    assert ids[0][:10] <= ids[-1][:10]


@given(attempts=st.integers(min_value=1, max_value=60), seed=st.integers())
def test_retry_delay_grows_and_is_capped(attempts: int, seed: int) -> None:
    policy = RetryPolicy(backoff_secs=0.5, multiplier=2, max_backoff_secs=30, jitter=0.2)
    delay = policy.delay(attempts, random.Random(seed))
    base = min(0.5 * 2 ** (attempts - 1), 30)
    assert base * 0.8 <= delay <= base * 1.2


def test_retry_gives_up_only_when_bounded() -> None:
    assert RetryPolicy(max_attempts=3).gives_up(3)
    assert not RetryPolicy(max_attempts=3).gives_up(2)
    assert not RetryPolicy(max_attempts=0).gives_up(10_000)


@pytest.mark.parametrize(
    ("rule", "values", "expected"),
    [
        ({"field": "MSH-9.1", "in": ["ADT", "DFT"]}, {"MSH-9.1": "DFT"}, True),
        ({"field": "MSH-9.1", "in": ["ADT"]}, {"MSH-9.1": "ORU"}, False),
        ({"field": "MSH-9.1", "not_in": ["ADT"]}, {"MSH-9.1": "ORU"}, True),
        ({"field": "PV1-2", "equals": "I"}, {"PV1-2": "I"}, True),
        ({"field": "PID-3.1", "matches": "^MRN"}, {"PID-3.1": "MRN1"}, True),
        ({"field": "PID-3.1", "matches": "^MRN"}, {}, False),
        ({"field": "ZPI-1", "exists": True}, {}, False),
        ({"field": "ZPI-1", "exists": False}, {}, True),
        ({"all": [{"field": "A", "equals": "1"}, {"field": "B", "equals": "2"}]}, {"A": "1", "B": "2"}, True),
        ({"any": [{"field": "A", "equals": "9"}, {"field": "B", "equals": "2"}]}, {"A": "1", "B": "2"}, True),
        ({"not": {"field": "A", "equals": "1"}}, {"A": "1"}, False),
    ],
)
def test_filters(rule: dict[str, object], values: dict[str, str], expected: bool) -> None:
    assert compile_filter(FilterRule.model_validate(rule))(Doc(values)) is expected


@pytest.mark.parametrize(
    "rule",
    [
        {"field": "A"},
        {"in": ["x"]},
        {"field": "A", "in": ["x"], "equals": "x"},
        {"field": "A", "matches": "("},
        {"all": [], "field": "A"},
    ],
)
def test_bad_filters_are_refused(rule: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FilterRule.model_validate(rule)


def test_env_substitution_defaults_and_escapes(tmp_path: Path) -> None:
    text = "a: ${J_A}\nb: ${J_B:-fallback}\nc: cost $$5\nd: ${J_A}-${J_B:-x}\ne: 7\n"
    doc = load_yaml(tmp_path / "x.yaml", {"J_A": "alpha"}, text=text)
    assert not doc.problems
    assert doc.data == {"a": "alpha", "b": "fallback", "c": "cost $5", "d": "alpha-x", "e": 7}
    assert ("a",) in doc.from_env and ("b",) not in doc.from_env


def test_unset_variable_is_reported_with_position(tmp_path: Path) -> None:
    doc = load_yaml(tmp_path / "x.yaml", {}, text="key:\n  secret: ${J_NOPE}\n")
    assert [str(p) for p in doc.problems] == [
        f"{tmp_path / 'x.yaml'}:2:11: error: key.secret: environment variable J_NOPE is not set "
        "(set it, or write ${J_NOPE:-default})"
    ]


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    doc = load_yaml(tmp_path / "x.yaml", {}, text="a: 1\nb: 2\na: 3\n")
    assert len(doc.problems) == 1
    assert "3:1: error: a: duplicate key" in str(doc.problems[0])


def test_config_error_lists_all_diagnostics() -> None:
    from engine.core.errors import Diagnostic, Location

    err = ConfigError([Diagnostic(Location("f", 1, 2), "a", "x"), Diagnostic(Location("f", 3, 4), "b", "y", "hint")])
    assert str(err) == "f:1:2: error: a: x\nf:3:4: error: b: y (hint)"
