"""Evaluate declarative filter rules against a parsed document."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from engine.core.channel import FilterRule
from engine.core.contracts import Document

Predicate = Callable[[Document], bool]


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def compile_filter(rule: FilterRule | None) -> Predicate:
    """Turn a rule into a predicate once, at deploy time."""
    if rule is None:
        return lambda _doc: True
    if rule.all is not None:
        parts = [compile_filter(r) for r in rule.all]
        return lambda doc: all(p(doc) for p in parts)
    if rule.any is not None:
        parts = [compile_filter(r) for r in rule.any]
        return lambda doc: any(p(doc) for p in parts)
    if rule.not_ is not None:
        inner = compile_filter(rule.not_)
        return lambda doc: not inner(doc)
    path = rule.field or ""
    if rule.in_ is not None:
        allowed = frozenset(rule.in_)
        return lambda doc: doc.get(path) in allowed
    if rule.not_in is not None:
        refused = frozenset(rule.not_in)
        return lambda doc: doc.get(path) not in refused
    if rule.equals is not None:
        wanted = rule.equals
        return lambda doc: doc.get(path) == wanted
    if rule.matches is not None:
        regex = _regex(rule.matches)
        return lambda doc: regex.search(doc.get(path) or "") is not None
    present = bool(rule.exists)
    return lambda doc: (doc.get(path) not in (None, "")) is present
