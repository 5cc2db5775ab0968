"""Small helpers for reading produced JSON data (canonical objects) by dotted paths."""

from __future__ import annotations

import re
from typing import Any

_PART = re.compile(r"[^.\[\]]+|\[\d+\]")


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted path with ``[n]`` indexes (``lines[0].item.number``), or None.

    >>> lookup({"lines": [{"item": {"number": "A-1"}}]}, "lines[0].item.number")
    'A-1'
    >>> lookup({"lines": []}, "lines[0].item") is None
    True
    """
    current = data
    for part in _PART.findall(path):
        if part.startswith("["):
            index = int(part[1:-1])
            current = current[index] if isinstance(current, list) and index < len(current) else None
        elif isinstance(current, dict):
            current = current.get(part)
        else:
            return None
        if current is None:
            return None
    return current
