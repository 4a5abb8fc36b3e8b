"""What the store keeps, as objects, and the mapping between them and rows."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mesh.models import AccessRequest, AuditEvent, Status, Step


@dataclass(frozen=True, kw_only=True)
class Approval:
    """One person's approval of one step of a request."""

    request_id: str
    step: int
    username: str
    at: str
    comment: str = ""
    acting_as: str = ""  # the step's approvers, "admin", or the escalation group

    @property
    def label(self) -> str:
        """The approver, and the capacity when it was not the step's own approvers."""
        return f"{self.username} as {self.acting_as}" if self.acting_as else self.username


@dataclass(frozen=True, kw_only=True)
class PolicyRecord:
    """An approval policy as the store records it: what every process must run."""

    fingerprint: str
    source: str  # the file it was read from, or "(built-in default)"
    text: str
    activated_at: str = ""
    activated_by: str = ""


def _policy_from_row(row: Mapping[str, Any]) -> PolicyRecord:
    return PolicyRecord(
        fingerprint=row["fingerprint"],
        source=row["source"],
        text=row["text"],
        activated_at=row["activated_at"],
        activated_by=row["activated_by"],
    )


@dataclass(frozen=True, kw_only=True)
class PendingRow:
    """A waiting request with its approvals and its product's owner name (catalog index)."""

    request: AccessRequest
    approvals: list[Approval]
    owner_account: str | None = None  # as the catalog index says, else as stored on submit
    owner_name: str = ""


@dataclass(frozen=True, kw_only=True)
class SessionRow:
    """A sign-in session as stored: ``token_id`` is the SHA-256 of the cookie's session id."""

    token_id: str
    username: str
    created_at: str
    expires_at: str
    last_seen_at: str
    password_fp: str
    revoked_at: str
    ended_why: str


_PAGE_EXTRAS = frozenset({"rid", "cur", "owner_now", "owner_name_now", "approvals_json", "total"})


class AlreadyApproved(Exception):
    """This person has already approved this request (at this or an earlier step)."""


@dataclass(frozen=True, kw_only=True)
class NewEvent:
    """An audit row to append; ``id`` is assigned by SQLite."""

    at: str
    actor: str
    action: str
    request_id: str | None
    scope: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "request_id": self.request_id,
            "scope": self.scope,
            "details": json.dumps(self.details, sort_keys=True, default=str),
        }


def _to_row(request: AccessRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "status": request.status.value,
        "database": request.database,
        "table_name": request.table,
        "account": request.account,
        "requester": request.requester,
        "reason": request.reason,
        "policy_reason": request.policy_reason,
        "needs_approval": int(request.needs_approval),
        "pii_columns": json.dumps(list(request.pii_columns)),
        "owner_account": request.owner_account,
        "decided_by": request.decided_by,
        "decided_at": request.decided_at,
        "comment": request.comment,
        "error_code": request.error_code,
        "error": request.error,
        "grants_done": json.dumps(list(request.grants_done)),
        "attempts": request.attempts,
        "created_at": request.created_at,
        "updated_at": request.updated_at,
        "duration_seconds": request.duration_seconds,
        "expires_on": request.expires_on,
        "granted_at": request.granted_at,
        "expires_at": request.expires_at,
        "warned_at": request.warned_at,
        "ended_by": request.ended_by,
        "ended_at": request.ended_at,
        "end_comment": request.end_comment,
        "end_target": request.end_target,
        "revokes_done": json.dumps(list(request.revokes_done)),
        "decision_seen": int(request.decision_seen),
        "reminders_sent": request.reminders_sent,
        "columns": json.dumps(list(request.columns)) if request.columns is not None else None,
        "level": request.level,
        "plan": json.dumps([s.to_json() for s in request.plan]),
        "step": request.step,
        "step_started_at": request.step_started_at,
        "escalated_at": request.escalated_at,
    }


def _from_row(row: Mapping[str, Any]) -> AccessRequest:
    return AccessRequest(
        id=row["id"],
        status=Status(row["status"]),
        database=row["database"],
        table=row["table_name"],
        account=row["account"],
        requester=row["requester"],
        reason=row["reason"],
        policy_reason=row["policy_reason"] or "",
        needs_approval=bool(row["needs_approval"]),
        pii_columns=tuple(json.loads(row["pii_columns"] or "[]")),
        owner_account=row["owner_account"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        comment=row["comment"] or "",
        error_code=row["error_code"],
        error=row["error"],
        grants_done=tuple(json.loads(row["grants_done"] or "[]")),
        attempts=row["attempts"] or 0,
        created_at=row["created_at"],
        updated_at=row["updated_at"] or row["created_at"],
        duration_seconds=row["duration_seconds"],
        expires_on=row["expires_on"],
        granted_at=row["granted_at"],
        expires_at=row["expires_at"],
        warned_at=row["warned_at"],
        ended_by=row["ended_by"],
        ended_at=row["ended_at"],
        end_comment=row["end_comment"] or "",
        end_target=row["end_target"],
        revokes_done=tuple(json.loads(row["revokes_done"] or "[]")),
        decision_seen=bool(row["decision_seen"] if row["decision_seen"] is not None else 1),
        reminders_sent=row["reminders_sent"] or 0,
        columns=tuple(json.loads(row["columns"])) if row["columns"] is not None else None,
        level=row["level"] or "",
        plan=tuple(Step.from_json(s) for s in json.loads(row["plan"] or "[]")),
        step=row["step"] or 0,
        step_started_at=row["step_started_at"],
        escalated_at=row["escalated_at"],
    )


def _event_from_row(row: Mapping[str, Any]) -> AuditEvent:
    return AuditEvent(
        id=row["id"],
        at=row["at"],
        actor=row["actor"],
        action=row["action"],
        request_id=row["request_id"],
        scope=row["scope"] or "",
        details=json.loads(row["details"] or "{}"),
    )


# The test suite sets this (tests/conftest.py): a store it makes without an audit key keeps

AUDIT_COLUMNS = ("id", "at", "actor", "action", "request_id", "scope", "details")
AuditRow = tuple[int, str, str, str, str | None, str | None, str | None]
"""An audit row as stored, in AUDIT_COLUMNS order (details is JSON text)."""


@dataclass(frozen=True, kw_only=True)
class AuditFilters:
    """Which audit rows to read: each field set narrows, and an empty one keeps all."""

    request_id: str | None = None
    actors: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    since: str | None = None  # UTC ISO-8601 as the log writes it, inclusive
    before: str | None = None  # exclusive
    text: str | None = None  # in the scope or the details, ASCII case ignored

    def narrowed(
        self, *, request_id: str | None, actor: str | None, action: str | None
    ) -> AuditFilters:
        """These filters with one more request id, actor or action (the older arguments)."""
        changes: dict[str, Any] = {}
        if request_id is not None:
            changes["request_id"] = request_id
        if actor is not None:
            changes["actors"] = (actor,)
        if action is not None:
            changes["actions"] = (action,)
        return replace(self, **changes) if changes else self


def _column_value(value: Any) -> Any:
    if isinstance(value, Status):
        return value.value
    if isinstance(value, (tuple, list)):
        return json.dumps([v.to_json() if isinstance(v, Step) else v for v in value])
    if isinstance(value, bool):
        return int(value)
    return value
