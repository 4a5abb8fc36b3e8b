"""Requests, their state transitions, approvals and conditional claims."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from mesh.models import AccessRequest, Action, Status
from mesh.store.base import StoreBase
from mesh.store.db import INTEGRITY_ERRORS, Db, in_json_list
from mesh.store.rows import AlreadyApproved, Approval, NewEvent, _column_value, _from_row, _to_row


class _MovedOn(Exception):
    """The request left the approval's step inside the transaction: roll it back."""


class RequestRecords(StoreBase):
    """Requests: adding, transitions, approvals, claims."""

    # Requests ---------------------------------------------------------------------------

    def add_request(
        self, request: AccessRequest, events: Sequence[NewEvent]
    ) -> AccessRequest | None:
        """Insert a request and its audit rows unless an identical active request exists.

        Returns the existing active request when there is one (nothing is written then), or
        None when the new one was stored. The check and the insert share one transaction, so
        two identical submissions at once cannot both get in.
        """
        with self._write() as db:
            existing = self._active_duplicate(db, request)
            if existing is not None:
                return existing
            db["requests"].insert(_to_row(request))  # type: ignore[union-attr]
            self._append(db, events)
        return None

    @staticmethod
    def _active_duplicate(db: Db, request: AccessRequest) -> AccessRequest | None:
        # A request still ending (revoking) counts too: a twin granted now would lose its
        # access to the revoke that is under way.
        active = [
            Status.PENDING_APPROVAL,
            Status.GRANTING,
            Status.GRANTED,
            Status.REVOKING,
            Status.REVOKE_FAILED,
        ]
        rows = list(
            db.query(
                "SELECT * FROM requests WHERE database = ? AND account = ? "
                "AND table_name IS ? AND columns IS ? AND status IN (?, ?, ?, ?, ?) "
                "ORDER BY created_at LIMIT 1",
                [
                    request.database,
                    request.account,
                    request.table,
                    json.dumps(list(request.columns)) if request.columns is not None else None,
                    *active,
                ],
            )
        )
        return _from_row(rows[0]) if rows else None

    def transition(
        self,
        request_id: str,
        *,
        allowed_from: Sequence[Status],
        changes: Mapping[str, Any],
        events: Sequence[NewEvent],
        unchanged_since: str | None = None,
    ) -> AccessRequest | None:
        """Change a request only if its status is still one of ``allowed_from``.

        ``unchanged_since`` also requires its ``updated_at`` to be that value: how two
        processes taking over the same stale request are told apart.

        This conditional UPDATE is what makes a decision happen exactly once: of two
        approvers clicking together, one UPDATE matches and the other matches no row.
        Returns the updated request, or None if the status had already moved on.
        """
        row_changes = {
            ("table_name" if k == "table" else k): _column_value(v) for k, v in changes.items()
        }
        assignments = ", ".join(f"[{column}] = ?" for column in row_changes)
        marks = ", ".join("?" for _ in allowed_from)
        since = " AND updated_at = ?" if unchanged_since is not None else ""
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE requests SET {assignments} WHERE id = ? AND status IN ({marks}){since}",
                [
                    *row_changes.values(),
                    request_id,
                    *[s.value for s in allowed_from],
                    *([unchanged_since] if unchanged_since is not None else []),
                ],
            )
            if cursor.rowcount != 1:
                return None
            self._append(db, events)
            return _from_row(db["requests"].get(request_id))  # type: ignore[union-attr]

    def record_approval(
        self,
        approval: Approval,
        *,
        needed: int,
        last_step: bool,
        granting: Mapping[str, Any],
        events: Sequence[NewEvent],
        step_events: Sequence[NewEvent],
    ) -> tuple[AccessRequest, bool] | None:
        """Add one approval to the request's current step, and advance it if that fills it.

        One transaction: the request must still be pending at ``approval.step``; the
        approval is inserted (a second one by the same person raises AlreadyApproved); when
        the step now has ``needed`` approvals, the request moves to the next step, or, after
        the last, takes the ``granting`` changes. Returns the request and whether the step
        was completed, or None when the request had moved on.
        """
        try:
            with self._write() as db:
                rows = list(
                    db.query(
                        "SELECT status, step FROM requests WHERE id = ?", [approval.request_id]
                    )
                )
                if not rows or rows[0]["status"] != Status.PENDING_APPROVAL.value:
                    return None
                if (rows[0]["step"] or 0) != approval.step:
                    return None
                try:
                    db["approvals"].insert(  # type: ignore[union-attr]
                        {
                            "request_id": approval.request_id,
                            "step": approval.step,
                            "username": approval.username,
                            "acting_as": approval.acting_as,
                            "at": approval.at,
                            "comment": approval.comment,
                        }
                    )
                except INTEGRITY_ERRORS as exc:
                    raise AlreadyApproved(approval.username) from exc
                count = next(
                    iter(
                        db.query(
                            "SELECT COUNT(*) AS n FROM approvals WHERE request_id = ? AND step = ?",
                            [approval.request_id, approval.step],
                        )
                    )
                )["n"]
                complete = count >= needed
                if not complete:
                    changes: Mapping[str, Any] = {"updated_at": approval.at}
                elif last_step:
                    changes = dict(granting)
                else:
                    changes = {
                        "step": approval.step + 1,
                        "step_started_at": approval.at,
                        "escalated_at": None,
                        "reminders_sent": 0,
                        "updated_at": approval.at,
                    }
                assignments = ", ".join(f"[{column}] = ?" for column in changes)
                # Conditional too, though the write lock already keeps another decision out
                # between the read above and here: should a writer ever bypass it, this
                # approval is rolled back rather than move a request that has moved on.
                moved = db.execute(
                    f"UPDATE requests SET {assignments} WHERE id = ? AND status = ? "
                    "AND coalesce(step, 0) = ?",
                    [
                        *[_column_value(v) for v in changes.values()],
                        approval.request_id,
                        Status.PENDING_APPROVAL.value,
                        approval.step,
                    ],
                )
                if moved.rowcount != 1:
                    raise _MovedOn
                # Each approval records the quorum it was counted against ("all" is who was in
                # the group then), so the evidence for a grant can count against it too.
                counted = [
                    replace(e, details={**e.details, "needed": needed})
                    if e.action == Action.APPROVED.value
                    else e
                    for e in events
                ]
                self._append(db, [*counted, *(step_events if complete else [])])
                request = _from_row(db["requests"].get(approval.request_id))  # type: ignore[union-attr]
                return request, complete
        except _MovedOn:  # rolled back
            return None

    def approvals(self, request_id: str) -> list[Approval]:
        """Every approval of a request, in the order they were given."""
        return self.approvals_of([request_id]).get(request_id, [])

    def approvals_of(self, request_ids: Sequence[str]) -> dict[str, list[Approval]]:
        """The approvals of each of ``request_ids``, in the order given, in one query (the
        ids go in as one JSON parameter, so a page of any size is one statement)."""
        with self._connect() as db:
            rows = db.query(
                f"SELECT * FROM approvals WHERE request_id IN {in_json_list(self.dialect, '?')} "
                "ORDER BY id",
                [json.dumps(list(request_ids))],
            )
            found: dict[str, list[Approval]] = {}
            for row in rows:
                found.setdefault(row["request_id"], []).append(
                    Approval(
                        request_id=row["request_id"],
                        step=row["step"],
                        username=row["username"],
                        acting_as=row["acting_as"] or "",
                        at=row["at"],
                        comment=row["comment"] or "",
                    )
                )
            return found

    def claim_escalation(
        self, request_id: str, *, step: int, at: str, events: Sequence[NewEvent]
    ) -> AccessRequest | None:
        """Mark a waiting step as escalated; None if it moved on or another pass did it."""
        return self._update_if(
            request_id,
            "status = 'pending_approval' AND step = ? AND escalated_at IS NULL",
            [step],
            {"escalated_at": at},
            events,
        )

    def claim_reminder(
        self, request_id: str, *, was: int, level: int, events: Sequence[NewEvent]
    ) -> AccessRequest | None:
        """Raise a pending request's reminder level from ``was``; None if another pass did."""
        return self._update_if(
            request_id,
            "status = 'pending_approval' AND reminders_sent = ?",
            [was],
            {"reminders_sent": level},
            events,
        )

    def claim_warning(
        self, request_id: str, *, at: str, events: Sequence[NewEvent]
    ) -> AccessRequest | None:
        """Mark a granted request as warned of its expiry; None if another pass did."""
        return self._update_if(
            request_id,
            "status = 'granted' AND warned_at IS NULL",
            [],
            {"warned_at": at, "decision_seen": 0},
            events,
        )

    def mark_seen(self, requester: str, request_ids: Sequence[str]) -> int:
        """The requester has seen the decisions on these requests (and only these)."""
        if not request_ids:
            return 0
        marks = ", ".join("?" for _ in request_ids)
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE requests SET decision_seen = 1 WHERE requester = ? AND id IN ({marks})",
                [requester, *request_ids],
            )
            return int(cursor.rowcount)

    def _update_if(
        self,
        request_id: str,
        condition: str,
        params: list[Any],
        changes: Mapping[str, Any],
        events: Sequence[NewEvent],
    ) -> AccessRequest | None:
        assignments = ", ".join(f"[{column}] = ?" for column in changes)
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE requests SET {assignments} WHERE id = ? AND {condition}",
                [*[_column_value(v) for v in changes.values()], request_id, *params],
            )
            if cursor.rowcount != 1:
                return None
            self._append(db, events)
            return _from_row(db["requests"].get(request_id))  # type: ignore[union-attr]

    def notification(self, notification_id: int) -> dict[str, Any] | None:
        with self._connect() as db:
            rows = list(db.query("SELECT * FROM notifications WHERE id = ?", [notification_id]))
        return dict(rows[0]) if rows else None

    def step_notifications(
        self, request_ids: Iterable[str], *, kinds: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """The notifications of ``kinds`` written since each request's current step began,
        in the order written, by request id (a request without any is left out).

        One query for a page of requests; a request the store does not know counts all
        of its rows.
        """
        ids = sorted(set(request_ids))
        found: dict[str, list[dict[str, Any]]] = {}
        kind_marks = ", ".join("?" for _ in kinds)
        with self._connect() as db:
            for start in range(0, len(ids), 500):  # SQLite's limit on parameters
                chunk = ids[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                rows = db.query(
                    "SELECT n.* FROM notifications n LEFT JOIN requests r ON r.id = n.request_id "
                    f"WHERE n.request_id IN ({marks}) AND n.kind IN ({kind_marks}) "
                    "AND n.created_at >= coalesce(r.step_started_at, '') ORDER BY n.id",
                    [*chunk, *kinds],
                )
                for row in rows:
                    found.setdefault(row["request_id"], []).append(dict(row))
        return found

    def owner_accounts(self, request_ids: Iterable[str]) -> dict[str, str | None]:
        """Each known request's product owner account, by request id."""
        ids = sorted(set(request_ids))
        found: dict[str, str | None] = {}
        with self._connect() as db:
            for start in range(0, len(ids), 500):  # SQLite's limit on parameters
                chunk = ids[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                rows = db.execute(
                    f"SELECT id, owner_account FROM requests WHERE id IN ({marks})", chunk
                )
                found.update({row[0]: row[1] for row in rows})
        return found
