"""Reference tables of one folder, shared by every mapping that reads it.

The engine keeps one ``TableSet`` per folder in its shared resources, so that
``junction table load`` or ``reload`` swaps the tables of every channel at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.mapping.tables import Tables, UnknownTable


class TableSet:
    """Implements ``engine.core.contracts.ReferenceTables`` over ``Tables``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.tables = Tables.from_dir(directory) if directory.is_dir() else Tables()

    @classmethod
    def shared(cls, shared: dict[str, Any], directory: Path) -> TableSet:
        """The set for ``directory`` in the engine's shared resources, created on first use."""
        key = f"tables:{directory.resolve()}"
        found = shared.get(key)
        if not isinstance(found, cls):
            found = shared[key] = cls(directory)
        return found

    def reload(self) -> dict[str, str]:
        """Re-read every table at once (the old ones stay if any file is invalid)."""
        self.tables.load_dir(self.directory)
        return self.versions()

    def versions(self) -> dict[str, str]:
        return self.tables.versions()

    def rows(self, name: str) -> tuple[list[str], list[dict[str, str]]]:
        try:
            table = self.tables.get(name)
        except UnknownTable as exc:
            raise LookupError(str(exc)) from None
        return list(table.columns), [dict(row) for row in table.rows]
