"""The append-only audit log and its hash chain."""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator, Sequence
from typing import Any

from mesh import auditchain
from mesh.models import AuditEvent
from mesh.store.base import StoreBase
from mesh.store.rows import AUDIT_COLUMNS, AuditFilters, AuditRow, NewEvent, _event_from_row


class AuditRecords(StoreBase):
    """The audit log: reads, the chain's head, checkpoints and publication."""

    # Audit ------------------------------------------------------------------------------

    def append(self, *events: NewEvent) -> None:
        """Append audit rows on their own, such as the intent recorded before an AWS call."""
        with self._write() as db:
            self._append(db, events)

    def audit(
        self,
        *,
        request_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        filters: AuditFilters | None = None,
    ) -> list[AuditEvent]:
        """Audit rows in the order they were written, optionally filtered."""
        filters = (filters or AuditFilters()).narrowed(
            request_id=request_id, actor=actor, action=action
        )
        where, params = _audit_where(filters, self.dialect)
        with self._connect() as db:
            rows = db.query(f"SELECT * FROM audit{_where(where)} ORDER BY id", params)
            return [_event_from_row(row) for row in rows]

    def audit_page(
        self,
        filters: AuditFilters,
        *,
        limit: int = 100,
        older_than: tuple[str, int] | None = None,
    ) -> tuple[list[AuditEvent], int]:
        """One page of matching rows, newest first, and how many rows match in all.

        Newest is by ``at`` then ``id``. ``older_than`` is the (at, id) of the last row of
        the page before (keyset paging: a page deep in the log costs what the first does).
        """
        where, params = _audit_where(filters, self.dialect)
        page_where, page_params = list(where), list(params)
        if older_than is not None:
            # SQLite: not the date index when one request's index is used (see _audit_where)
            at = "+at" if filters.request_id and self.dialect == "sqlite" else "at"
            page_where.append(f"({at}, id) < (?, ?)")
            page_params += [older_than[0], older_than[1]]
        with self._connect() as db:
            rows = db.query(
                f"SELECT * FROM audit{_where(page_where)} ORDER BY at DESC, id DESC LIMIT ?",
                [*page_params, limit],
            )
            events = [_event_from_row(row) for row in rows]
            # Unfiltered, the count is the last id: rows are never deleted (triggers refuse
            # it) and SQLite gives each new row the last id plus one, so ids run 1..N. That
            # is one index seek instead of a pass over a million rows on every page run.
            count = f"SELECT COUNT(*) FROM audit{_where(where)}" if where else _LAST_ID
            (total,) = db.execute(count, params).fetchone()
        return events, int(total or 0)

    def iter_audit(self, filters: AuditFilters, *, chunk: int = 5000) -> Iterator[AuditRow]:
        """Every matching row in id order, as stored (details as JSON text), for export.

        One query on a connection of its own, read ``chunk`` rows at a time: memory stays
        flat whatever the log's size, the rows are one consistent moment of the log, and
        a reader that stops early leaves no open statement on the thread's connection.
        """
        where, params = _audit_where(filters, self.dialect)
        with self._connect(cached=False) as db:
            columns = ", ".join(AUDIT_COLUMNS)
            cursor = db.execute(f"SELECT {columns} FROM audit{_where(where)} ORDER BY id", params)
            while rows := cursor.fetchmany(chunk):
                yield from rows

    # The audit chain --------------------------------------------------------------------

    def audit_head(self) -> tuple[int, str]:
        """The last row's id and chain: (0, GENESIS) for an empty log."""
        with self._connect() as db:
            row = db.execute("SELECT id, chain FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        return (int(row[0]), row[1] or "") if row else (0, auditchain.GENESIS)

    def audit_chain_at(self, row_id: int) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT chain FROM audit WHERE id = ?", [row_id]).fetchone()
        return row[0] if row else None

    def iter_chain(self, *, after: int = 0, chunk: int = 10000) -> Iterator[auditchain.ChainedRow]:
        """Every row after id ``after``, with its chain, in id order (streamed, own connection)."""
        with self._connect(cached=False) as db:
            cursor = db.execute(
                f"SELECT {', '.join(AUDIT_COLUMNS)}, chain FROM audit WHERE id > ? ORDER BY id",
                [after],
            )
            while rows := cursor.fetchmany(chunk):
                yield from rows

    def missing_triggers(self) -> tuple[str, ...]:
        """The append-only triggers that are not in the file (dropped by hand)."""
        with self._connect() as db:
            if self.dialect == "postgresql":
                listed = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled != 'D'"
            else:
                listed = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
            present = {name for (name,) in db.execute(listed)}
        return tuple(name for name in auditchain.TRIGGERS if name not in present)

    def last_checkpoint(self) -> tuple[int, str] | None:
        """The newest checkpoint whose MAC holds: the head verified last, or None."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT row_id, chain, at, mac FROM audit_checkpoints ORDER BY id DESC LIMIT 20"
            ).fetchall()
        for row_id, chain, at, mac in rows:
            if mac == auditchain.checkpoint_mac(self.audit_key, row_id=row_id, chain=chain, at=at):
                return int(row_id), chain
        return None

    def checkpoint_status(self) -> tuple[dict[str, Any] | None, int]:
        """The newest checkpoint whose MAC holds (its row, time and rows checked), or None,
        and the log's last row id: what a page says about the chain without verifying it."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT row_id, chain, at, mac, rows FROM audit_checkpoints "
                "ORDER BY id DESC LIMIT 20"
            ).fetchall()
            (head,) = db.execute(_LAST_ID).fetchone()
        for row_id, chain, at, mac, count in rows:
            if mac == auditchain.checkpoint_mac(self.audit_key, row_id=row_id, chain=chain, at=at):
                return {"row_id": int(row_id), "at": at, "rows": count}, int(head or 0)
        return None, int(head or 0)

    def add_checkpoint(self, *, row_id: int, chain: str, rows: int, at: str) -> None:
        mac = auditchain.checkpoint_mac(self.audit_key, row_id=row_id, chain=chain, at=at)
        with self._write() as db:
            db["audit_checkpoints"].insert(  # type: ignore[union-attr]
                {"at": at, "row_id": row_id, "chain": chain, "rows": rows, "mac": mac}
            )

    def add_published(self, *, row_id: int, chain: str, at: str, where: str) -> None:
        """Note that the head was published to the anchor at ``where``: a checkpoints row
        (``rows`` -1) whose MAC covers ``where``, so a missing anchor is a break, not a
        first run (FileAnchor.last)."""
        mac = auditchain.published_mac(
            self.audit_key, row_id=row_id, chain=chain, at=at, where=where
        )
        with self._write() as db:
            db["audit_checkpoints"].insert(  # type: ignore[union-attr]
                {"at": at, "row_id": row_id, "chain": chain, "rows": -1, "mac": mac}
            )

    def last_published(self, where: str) -> dict[str, Any] | None:
        """The newest note whose MAC holds that the head was published to ``where``."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT row_id, chain, at, mac FROM audit_checkpoints WHERE rows = -1 "
                "ORDER BY id DESC LIMIT 20"
            ).fetchall()
        for row_id, chain, at, mac in rows:
            expected = auditchain.published_mac(
                self.audit_key, row_id=row_id, chain=chain, at=at, where=where
            )
            if hmac.compare_digest(mac, expected):
                return {"row_id": int(row_id), "at": at}
        return None

    def verified_rows(self, request_id: str) -> list[tuple[AuditEvent, bool]]:
        """A request's audit rows in order, each with whether its MAC holds.

        A row is checked against the chain of the row stored before it, so one request's
        evidence costs its own rows, not a pass over the log.
        """
        key = self.audit_key
        columns = ", ".join(AUDIT_COLUMNS)
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {columns}, chain FROM audit WHERE request_id = ? ORDER BY id",
                [request_id],
            ).fetchall()
            found = []
            for row in rows:
                before = db.execute(
                    "SELECT chain FROM audit WHERE id < ? ORDER BY id DESC LIMIT 1", [row[0]]
                ).fetchone()
                prev = before[0] if before else auditchain.GENESIS
                ok = (
                    row[7] is not None
                    and prev is not None
                    and (before is not None or row[0] == 1)
                    and auditchain.row_mac(key, prev, row[:7]) == row[7]
                )
                found.append((_event_from_row(dict(zip(AUDIT_COLUMNS, row[:7], strict=True))), ok))
        return found

    def audit_actions(self) -> list[str]:
        """The distinct actions in the log, sorted, read from the action index."""
        return self._distinct("action")

    def audit_actors(self) -> list[str]:
        """The distinct actors in the log, sorted, read from the actor index."""
        return self._distinct("actor")

    def _distinct(self, column: str) -> list[str]:
        # A skip scan: one index seek per distinct value, not a pass over every row.
        sql = (
            f"WITH RECURSIVE seen(value) AS (SELECT MIN({column}) FROM audit UNION ALL "
            f"SELECT (SELECT MIN({column}) FROM audit WHERE {column} > seen.value) FROM seen "
            "WHERE seen.value IS NOT NULL) SELECT value FROM seen WHERE value IS NOT NULL"
        )
        with self._connect() as db:
            return [value for (value,) in db.execute(sql).fetchall()]


_LAST_ID = "SELECT MAX(id) FROM audit"


def _where(conditions: Sequence[str]) -> str:
    return " WHERE " + " AND ".join(conditions) if conditions else ""


def _audit_where(filters: AuditFilters, dialect: str = "sqlite") -> tuple[list[str], list[Any]]:
    """The conditions and parameters for ``filters`` (none when nothing narrows).

    Without statistics SQLite cannot tell a request id (a few rows) from an actor (maybe
    a quarter of the log), so the planner is told: a unary ``+`` keeps a column's index out
    of the choice. A request id uses its own index; else an actor, else an action, each
    with the date range in the same index; else the date range alone.
    """
    where: list[str] = []
    params: list[Any] = []
    indexed = (
        "request_id"
        if filters.request_id
        else "actor"
        if filters.actors
        else "action"
        if filters.actions
        else "at"
    )

    def column(name: str) -> str:
        # SQLite's planner takes a unary + as "not this index"; PostgreSQL's plans by cost
        usable = name == indexed or (name == "at" and indexed in ("actor", "action"))
        return name if usable or dialect == "postgresql" else f"+{name}"

    if filters.request_id:
        where.append("request_id = ?")
        params.append(filters.request_id)
    for name, values in (("actor", filters.actors), ("action", filters.actions)):
        if values:
            where.append(f"{column(name)} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
    if filters.since:
        where.append(f"{column('at')} >= ?")
        params.append(filters.since)
    if filters.before:
        where.append(f"{column('at')} < ?")
        params.append(filters.before)
    if filters.text:
        pattern = "%" + re.sub(r"([\\%_])", r"\\\1", filters.text) + "%"
        like = "ILIKE" if dialect == "postgresql" else "LIKE"  # SQLite's ignores ASCII case
        where.append(f"(scope {like} ? ESCAPE '\\' OR details {like} ? ESCAPE '\\')")
        params += [pattern, pattern]
    return where, params
