"""Value objects of the marketplace: catalog entries, users, requests, grants, audit events."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mesh.errors import MeshError


class Role(StrEnum):
    CONSUMER = "consumer"
    OWNER = "owner"
    ADMIN = "admin"


class Status(StrEnum):
    """Lifecycle of an access request; README's status table describes each one."""

    PENDING_APPROVAL = "pending_approval"
    GRANTING = "granting"
    GRANTED = "granted"
    DENIED = "denied"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REVOKING = "revoking"
    REVOKE_FAILED = "revoke_failed"
    REVOKED = "revoked"
    EXPIRED = "expired"


ACTIVE_STATUSES = frozenset({Status.PENDING_APPROVAL, Status.GRANTING, Status.GRANTED})
# Statuses in which Lake Formation may hold (some of) a request's grants.
HOLDS_GRANTS = frozenset({Status.GRANTING, Status.GRANTED, Status.REVOKING, Status.REVOKE_FAILED})
DECISIONS = frozenset(
    {Status.GRANTED, Status.DENIED, Status.FAILED, Status.REVOKED, Status.EXPIRED}
)


class Action(StrEnum):
    """What an audit row records."""

    REQUEST_SUBMITTED = "request_submitted"
    POLICY_EVALUATED = "policy_evaluated"
    APPROVED = "approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
    RETRY_REQUESTED = "retry_requested"
    GRANT_ATTEMPTED = "grant_attempted"
    GRANT_SUCCEEDED = "grant_succeeded"
    GRANT_FAILED = "grant_failed"
    REVOKE_REQUESTED = "revoke_requested"
    EXPIRY_DUE = "expiry_due"
    REVOKE_ATTEMPTED = "revoke_attempted"
    REVOKE_SKIPPED = "revoke_skipped"
    REVOKE_SUCCEEDED = "revoke_succeeded"
    REVOKE_FAILED = "revoke_failed"
    NOTIFICATION_QUEUED = "notification_queued"
    NOTIFICATION_SENT = "notification_sent"
    NOTIFICATION_FAILED = "notification_failed"
    REMINDER_DUE = "reminder_due"
    EXPIRY_WARNING_DUE = "expiry_warning_due"
    LINK_OPENED = "link_opened"
    STEP_COMPLETED = "step_completed"
    STEP_ESCALATED = "step_escalated"
    RECONCILE_MISSING = "reconcile_missing"
    RECONCILE_UNEXPLAINED = "reconcile_unexplained"
    RECONCILE_FIXED = "reconcile_fixed"
    TAKEN_OVER = "taken_over"
    GRANT_FOUND = "grant_found"
    POLICY_ACTIVATED = "policy_activated"
    NOTICE_RECOVERED = "notice_recovered"
    SIGNED_IN = "signed_in"
    SIGN_IN_FAILED = "sign_in_failed"
    SIGN_IN_LOCKED = "sign_in_locked"
    SIGNED_OUT = "signed_out"
    SESSION_REFUSED = "session_refused"  # a cookie or session that no longer signs in
    ACTION_REFUSED = "action_refused"  # someone asked for what their roles do not allow


class Permission(StrEnum):
    SELECT = "SELECT"
    DESCRIBE = "DESCRIBE"


class FlagState(StrEnum):
    """How a ``pii_flag`` value reads; ``UNRECOGNISED`` counts as set (fail closed)."""

    SET = "set"
    UNSET = "unset"
    UNRECOGNISED = "unrecognised"

    @property
    def truthy(self) -> bool:
        return self is not FlagState.UNSET


@dataclass(frozen=True, kw_only=True)
class Column:
    name: str
    type: str = ""
    comment: str = ""
    parameters: dict[str, str] = field(default_factory=dict)
    is_partition_key: bool = False


@dataclass(frozen=True, kw_only=True)
class Table:
    database: str
    name: str
    description: str = ""
    parameters: dict[str, str] = field(default_factory=dict)
    columns: tuple[Column, ...] = ()
    partition_keys: tuple[Column, ...] = ()

    @property
    def all_columns(self) -> tuple[Column, ...]:
        """Columns in order, then partition keys in order."""
        return self.columns + self.partition_keys


@dataclass(frozen=True, kw_only=True)
class Database:
    name: str
    description: str = ""
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def owner_account(self) -> str | None:
        """The producer account id, or None when data_owner is absent or not 12 digits."""
        value = (self.parameters.get("data_owner") or "").strip()
        return value if len(value) == 12 and value.isascii() and value.isdigit() else None

    @property
    def owner_name(self) -> str:
        return (self.parameters.get("data_owner_name") or "").strip()


@dataclass(frozen=True, kw_only=True)
class User:
    username: str
    name: str = ""
    email: str = ""
    roles: frozenset[Role] = frozenset()
    accounts: tuple[str, ...] = ()
    owner_of: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    @property
    def is_owner(self) -> bool:
        return Role.OWNER in self.roles

    @property
    def can_request(self) -> bool:
        return self.is_admin or bool(self.accounts)

    @property
    def can_approve(self) -> bool:
        """Owners, admins and members of an approver group may have something to decide."""
        return self.is_admin or self.is_owner or bool(self.groups)


@dataclass(frozen=True, kw_only=True)
class Scope:
    """What a request asks for: a whole database, one table, or some columns of a table."""

    database: str
    table: str | None = None
    columns: tuple[str, ...] | None = None

    def __str__(self) -> str:
        if self.table is None:
            return f"{self.database}.*"
        if self.columns is not None:
            return f"{self.database}.{self.table}({', '.join(self.columns)})"
        return f"{self.database}.{self.table}"


@dataclass(frozen=True, kw_only=True)
class Step:
    """One approval step of a request: who approves, how many, and where it escalates.

    ``approvers`` is ``owner`` (the owners of the producer account) or a group's name. A
    request stores its steps when it is submitted (whether admins may fill them included),
    so a policy edited later never changes the steps of a request already waiting; who is
    in a group is read from the users and policy files at the time of each decision.
    """

    approvers: str
    quorum: int | str = "any"
    escalate_after_hours: float | None = None
    escalate_to: str | None = None
    admins: bool = True  # admins may fill a place (the policy's admins_approve, when stored)

    def describe(self) -> str:
        who = "an owner of the product" if self.approvers == "owner" else self.approvers
        if self.quorum == "any":
            text = f"{who}: any one"
        elif self.quorum == "all":
            text = f"{who}: all of them"
        else:
            text = f"{who}: {self.quorum} different people"
        if self.admins and self.quorum != "all":
            text += ", or an admin"
        if self.escalate_to and self.quorum != "all":
            text += f"; after {self.escalate_after_hours:g} h also {self.escalate_to}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "approvers": self.approvers,
            "quorum": self.quorum,
            "escalate_after_hours": self.escalate_after_hours,
            "escalate_to": self.escalate_to,
            "admins": self.admins,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Step:
        return cls(
            approvers=str(raw["approvers"]),
            quorum=raw.get("quorum", "any"),
            escalate_after_hours=raw.get("escalate_after_hours"),
            escalate_to=raw.get("escalate_to"),
            admins=bool(raw.get("admins", True)),
        )


OWNER_STEP = Step(approvers="owner", quorum="any")


@dataclass(frozen=True, kw_only=True)
class GrantSpec:
    """One Lake Formation ``grant_permissions`` call for a principal on a resource."""

    principal: str
    resource: dict[str, Any]
    permissions: tuple[Permission, ...]
    grantable: tuple[Permission, ...]

    @property
    def key(self) -> str:
        """A stable, readable name for this grant, used to record which grants are done."""
        if "Database" in self.resource:
            return f"database {self.resource['Database']['Name']}"
        if "TableWithColumns" in self.resource:
            subset = self.resource["TableWithColumns"]
            return f"columns {subset['DatabaseName']}.{subset['Name']}"
        table = self.resource["Table"]
        return f"table {table['DatabaseName']}.{table.get('Name', '*')}"

    def to_api(self) -> dict[str, Any]:
        """The keyword arguments of ``lakeformation.grant_permissions``."""
        return {
            "Principal": {"DataLakePrincipalIdentifier": self.principal},
            "Resource": self.resource,
            "Permissions": [p.value for p in self.permissions],
            "PermissionsWithGrantOption": [p.value for p in self.grantable],
        }


@dataclass(frozen=True, kw_only=True)
class EntryOutcome:
    """What Lake Formation did with one entry of a batch grant or revoke.

    ``failure`` is the entry's own error (its ``ErrorCode`` as the code), or the error of
    the whole call when the call itself failed; None when the entry succeeded.
    """

    spec: GrantSpec
    failure: MeshError | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True, kw_only=True)
class AccessRequest:
    id: str
    status: Status
    database: str
    table: str | None
    account: str
    requester: str
    reason: str
    policy_reason: str = ""
    needs_approval: bool = False
    pii_columns: tuple[str, ...] = ()
    owner_account: str | None = None
    decided_by: str | None = None
    decided_at: str | None = None
    comment: str = ""
    error_code: str | None = None
    error: str | None = None
    grants_done: tuple[str, ...] = ()
    attempts: int = 0
    created_at: str = ""
    updated_at: str = ""
    duration_seconds: int | None = None
    expires_on: str | None = None
    granted_at: str | None = None
    expires_at: str | None = None
    warned_at: str | None = None
    ended_by: str | None = None
    ended_at: str | None = None
    end_comment: str = ""
    end_target: str | None = None
    revokes_done: tuple[str, ...] = ()
    decision_seen: bool = True
    reminders_sent: int = 0
    columns: tuple[str, ...] | None = None
    level: str = ""
    plan: tuple[Step, ...] = ()
    step: int = 0
    step_started_at: str | None = None
    escalated_at: str | None = None

    @property
    def scope(self) -> Scope:
        return Scope(database=self.database, table=self.table, columns=self.columns)

    @property
    def current_step(self) -> Step | None:
        """The step waiting for approvers, while the request is pending approval."""
        if self.status is not Status.PENDING_APPROVAL or not self.plan:
            return None
        return self.plan[min(self.step, len(self.plan) - 1)]

    def to_json(self) -> dict[str, Any]:
        """The public JSON shape of a request (the CLI contract)."""
        return {
            "id": self.id,
            "status": self.status.value,
            "database": self.database,
            "table": self.table,
            "account": self.account,
            "requester": self.requester,
            "reason": self.reason,
            "policy_reason": self.policy_reason,
            "decided_by": self.decided_by,
            "comment": self.comment,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
            "columns": list(self.columns) if self.columns is not None else None,
            "level": self.level or None,
            "steps": [s.to_json() for s in self.plan],
            "step": self.step + 1 if self.current_step is not None else None,
        }


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    id: int
    at: str
    actor: str
    action: str
    request_id: str | None
    scope: str
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "request_id": self.request_id,
            "scope": self.scope,
            "details": self.details,
        }
