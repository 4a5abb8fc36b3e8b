"""Notifications (the outbox), decision links, reconcile reports, the policy record."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mesh.models import AccessRequest
from mesh.store.base import StoreBase
from mesh.store.rows import NewEvent, PolicyRecord, _from_row, _policy_from_row


class NoticeRecords(StoreBase):
    """The outbox, links used once, reports and the approval policy in force."""

    # Notifications ----------------------------------------------------------------------

    def add_notification(self, row: Mapping[str, Any], events: Sequence[NewEvent]) -> int:
        with self._write() as db:
            table = db["notifications"]
            table.insert(dict(row))  # type: ignore[union-attr]
            self._append(db, events)
            return int(table.last_pk)  # type: ignore[union-attr, arg-type]

    def claim_notification(self, notification_id: int, *, at: str, stale_before: str) -> bool:
        """Take a notification to deliver; only one process can hold it at a time."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE notifications SET status = 'sending', updated_at = ? WHERE id = ? AND "
                "(status IN ('pending', 'failed') OR (status = 'sending' AND updated_at < ?))",
                [at, notification_id, stale_before],
            )
            return cursor.rowcount == 1

    def finish_notification(
        self, notification_id: int, changes: Mapping[str, Any], events: Sequence[NewEvent]
    ) -> None:
        assignments = ", ".join(f"[{column}] = ?" for column in changes)
        with self._write() as db:
            db.execute(
                f"UPDATE notifications SET {assignments} WHERE id = ?",
                [*changes.values(), notification_id],
            )
            self._append(db, events)

    def without_notice(self, *, idle_before: str) -> list[AccessRequest]:
        """Requests whose notice was never queued: the process stopped between the change
        and the outbox (the two are separate writes).

        A decision the requester has not seen, with no decision notice since it was made;
        a waiting step with no approval request since it began. Only requests unchanged
        since ``idle_before``, so a process about to queue the notice is left to do it.
        """
        sql = """
            SELECT r.* FROM requests r
            WHERE r.updated_at < :idle AND (
              (r.status IN ('granted', 'denied', 'revoked', 'expired') AND r.decision_seen = 0
               AND NOT (r.status = 'granted' AND r.warned_at IS NOT NULL)
               AND NOT EXISTS (
                 SELECT 1 FROM notifications n WHERE n.request_id = r.id
                 AND n.kind = 'decision' AND n.created_at >= COALESCE(
                   CASE r.status WHEN 'granted' THEN r.granted_at
                                 WHEN 'denied' THEN r.decided_at ELSE r.ended_at END,
                   r.created_at)))
              OR
              (r.status = 'pending_approval'
               AND NOT EXISTS (
                 SELECT 1 FROM notifications n WHERE n.request_id = r.id
                 AND n.kind = 'approval_request'
                 AND n.created_at >= COALESCE(r.step_started_at, r.created_at)))
            )
            ORDER BY r.created_at
        """
        with self._connect() as db:
            return [_from_row(row) for row in db.query(sql, {"idle": idle_before})]

    def notification_counts(self) -> dict[str, int]:
        """How many messages the outbox holds in each status."""
        with self._connect() as db:
            rows = db.execute("SELECT status, COUNT(*) FROM notifications GROUP BY status")
            return {status: int(count) for status, count in rows}

    def notifications(
        self,
        *,
        request_id: str | None = None,
        statuses: Sequence[str] | None = None,
        newest: int | None = None,
    ) -> list[dict[str, Any]]:
        """Outbox rows in the order written; with ``newest``, only that many, newest first."""
        where: list[str] = []
        params: list[Any] = []
        if request_id is not None:
            where.append("request_id = ?")
            params.append(request_id)
        if statuses:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params.extend(statuses)
        sql = "SELECT * FROM notifications"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if newest is not None:
            sql += " ORDER BY id DESC LIMIT ?"
            params.append(newest)
        else:
            sql += " ORDER BY id"
        with self._connect() as db:
            return [dict(row) for row in db.query(sql, params)]

    # Decision links and reconcile reports -----------------------------------------------

    def use_link(self, nonce: str, *, request_id: str, action: str, used_by: str, at: str) -> bool:
        """Record a link as used; False if it was used before."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO used_links (nonce, request_id, action, used_by, used_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [nonce, request_id, action, used_by, at],
            )
            return cursor.rowcount == 1

    def link_used(self, nonce: str) -> bool:
        with self._connect() as db:
            return bool(list(db.query("SELECT 1 FROM used_links WHERE nonce = ?", [nonce])))

    def add_report(
        self,
        *,
        at: str,
        actor: str,
        fixed: bool,
        report: Mapping[str, Any],
        events: Sequence[NewEvent],
    ) -> None:
        with self._write() as db:
            db["reconcile_reports"].insert(  # type: ignore[union-attr]
                {
                    "at": at,
                    "actor": actor,
                    "fixed": int(fixed),
                    "report": json.dumps(report, sort_keys=True, default=str),
                }
            )
            self._append(db, events)

    def last_report(self) -> dict[str, Any] | None:
        with self._connect() as db:
            rows = list(db.query("SELECT * FROM reconcile_reports ORDER BY id DESC LIMIT 1"))
        if not rows:
            return None
        return {
            **json.loads(rows[0]["report"]),
            "at": rows[0]["at"],
            "actor": rows[0]["actor"],
            "with_fix": bool(rows[0]["fixed"]),
        }

    # The approval policy in force ------------------------------------------------------

    def policy_in_force(self) -> PolicyRecord | None:
        """The newest activated policy, or None before any process recorded one."""
        with self._connect() as db:
            rows = list(db.query("SELECT * FROM policy_in_force ORDER BY id DESC LIMIT 1"))
        return _policy_from_row(rows[0]) if rows else None

    def record_policy(
        self, record: PolicyRecord, *, replacing: str | None, events: Sequence[NewEvent]
    ) -> PolicyRecord:
        """Make ``record`` the policy in force, and return the one in force afterwards.

        ``replacing`` None records it only when no policy is in force yet (the first process
        to run); otherwise only while the fingerprint in force is still ``replacing``, so of
        two activations at once one wins, and the other sees it.
        """
        with self._write() as db:
            rows = list(db.query("SELECT * FROM policy_in_force ORDER BY id DESC LIMIT 1"))
            current = _policy_from_row(rows[0]) if rows else None
            now_in_force = current.fingerprint if current else None
            if now_in_force != replacing:
                return current  # type: ignore[return-value]  # replacing None -> current set
            db["policy_in_force"].insert(  # type: ignore[union-attr]
                {
                    "fingerprint": record.fingerprint,
                    "source": record.source,
                    "text": record.text,
                    "activated_at": record.activated_at,
                    "activated_by": record.activated_by,
                }
            )
            self._append(db, events)
            return record
