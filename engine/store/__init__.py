"""Message store engines: implementations of ``engine.core.store.MessageStore``.

Engines are picked by name from ``config/`` through the registry (``store: {type: sqlite}``);
the runtime never imports them directly. Every engine passes the conformance suite in
``engine.testing.store_conformance``.

Portable error contract (what the conformance suite checks):

- a write that breaks a uniqueness rule (a message id stored twice) raises ``ValueError``;
- a write naming a message or destination row that does not exist raises ``LookupError``;
- failures of the engine itself (I/O, schema) raise ``StoreError``.
"""

from __future__ import annotations

from engine.core.errors import JunctionError


class StoreError(JunctionError):
    """The store cannot work: the database is unreadable, locked, full or of another version."""


class SchemaVersionError(StoreError):
    """The database was written by a newer Junction than this one."""
