"""What the store's parts need from an adapter: connections, write transactions, the key.

The parts (requests, queues, audit, notices, sessions) write their SQL once, in SQLite's
spelling; each adapter (mesh/store/sqlite.py, mesh/store/postgres.py) supplies
``_connect``, ``_write`` and the audit key, and the PostgreSQL one translates the few
spellings that differ (mesh/store/db.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal

from mesh import auditchain
from mesh.store.db import Db
from mesh.store.rows import AUDIT_COLUMNS, NewEvent


class StoreBase:
    """The adapter's side of the store: every part of the store is written against this."""

    dialect: Literal["sqlite", "postgresql"]
    path: Path
    """Where files that belong beside the store go (the audit anchor's default place)."""

    @property
    def audit_key(self) -> bytes:
        raise NotImplementedError

    def describe(self) -> str:
        """The store as named in messages (never with a password)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def migrate(self, *, create: bool = True) -> list[str]:
        raise NotImplementedError

    def backup(self, target: str | Path, *, force: bool = False) -> dict[str, int]:
        raise NotImplementedError

    def _connect(
        self, *, create: bool = False, writing: bool = False, cached: bool = True
    ) -> AbstractContextManager[Db]:
        """A connection for reads (each statement sees the latest commit).

        ``cached=False`` asks for one of its own, for a long streamed read that must not
        hold up the thread's connection.
        """
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Db]:
        """One write transaction; writers are serialised, so conditional updates and the
        audit chain's appends never interleave."""
        raise NotImplementedError

    def _append(self, db: Db, events: Sequence[NewEvent]) -> None:
        """Append rows to the chain: each MAC covers the row and the one before it.

        Called inside a write transaction, so appends are serialised and the chain never
        forks; only the last row is read, so an append costs the same at any size of the
        log. Ids run 1..N with no gaps (the audit page counts on it).
        """
        if not events:
            return
        last = db.execute("SELECT id, chain FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        prev_id, prev = (last[0], last[1] or "") if last else (0, auditchain.GENESIS)
        key = self.audit_key
        insert = (
            f"INSERT INTO audit ({', '.join(AUDIT_COLUMNS)}, chain) "
            f"VALUES ({', '.join('?' for _ in range(len(AUDIT_COLUMNS) + 1))})"
        )
        for offset, event in enumerate(events, start=1):
            row = {"id": prev_id + offset, **event.row()}
            prev = auditchain.row_mac(key, prev, [row[c] for c in AUDIT_COLUMNS])
            db.execute(insert, [*(row[c] for c in AUDIT_COLUMNS), prev])
