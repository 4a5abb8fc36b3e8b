"""The store's named migrations (sqlite-utils), in the order they run.

The names are recorded in each database's ``_sqlite_migrations`` table: never rename one.
"""

from __future__ import annotations

import json

import sqlite_utils
from sqlite_utils.migrations import Migrations

from mesh.models import OWNER_STEP

migrations = Migrations("mesh")

_AUDIT_IS_APPEND_ONLY = "the audit log is append-only"


@migrations(name="0001_requests")
def _requests(db: sqlite_utils.Database) -> None:
    db["requests"].create(  # type: ignore[union-attr]
        {
            "id": str,
            "status": str,
            "database": str,
            "table_name": str,
            "account": str,
            "requester": str,
            "reason": str,
            "policy_reason": str,
            "needs_approval": int,
            "pii_columns": str,
            "owner_account": str,
            "decided_by": str,
            "decided_at": str,
            "comment": str,
            "error_code": str,
            "error": str,
            "grants_done": str,
            "attempts": int,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"status", "database", "account", "requester", "reason", "created_at"},
    )
    db["requests"].create_index(["requester"])  # type: ignore[union-attr]
    db["requests"].create_index(["status"])  # type: ignore[union-attr]
    db["requests"].create_index(["database", "table_name", "account"])  # type: ignore[union-attr]


@migrations(name="0002_audit_log")
def _audit(db: sqlite_utils.Database) -> None:
    db["audit"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "at": str,
            "actor": str,
            "action": str,
            "request_id": str,
            "scope": str,
            "details": str,
        },
        pk="id",
        not_null={"at", "actor", "action"},
    )
    db["audit"].create_index(["request_id"])  # type: ignore[union-attr]
    for verb in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER audit_no_{verb.lower()} BEFORE {verb} ON audit "
            f"BEGIN SELECT RAISE(ABORT, '{_AUDIT_IS_APPEND_ONLY}'); END"
        )


@migrations(name="0003_sign_in_sessions")
def _sessions(db: sqlite_utils.Database) -> None:
    db["sessions"].create(  # type: ignore[union-attr]
        {"token_id": str, "username": str, "created_at": str, "revoked_at": str},
        pk="token_id",
    )


@migrations(name="0004_request_lifecycle")
def _lifecycle(db: sqlite_utils.Database) -> None:
    requests = db["requests"]
    for column, kind in (
        ("duration_seconds", int),
        ("expires_on", str),
        ("granted_at", str),
        ("expires_at", str),
        ("warned_at", str),
        ("ended_by", str),
        ("ended_at", str),
        ("end_comment", str),
        ("end_target", str),
        ("revokes_done", str),
        ("decision_seen", int),
        ("reminders_sent", int),
    ):
        requests.add_column(column, kind)  # type: ignore[union-attr]
    db.execute("UPDATE requests SET decision_seen = 1, reminders_sent = 0")
    requests.create_index(["expires_at"])  # type: ignore[union-attr]


@migrations(name="0005_notifications")
def _notifications(db: sqlite_utils.Database) -> None:
    db["notifications"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "request_id": str,
            "kind": str,
            "channel": str,
            "target": str,
            "subject": str,
            "body": str,
            "status": str,
            "attempts": int,
            "error_code": str,
            "error": str,
            "message_id": str,
            "created_at": str,
            "updated_at": str,
            "sent_at": str,
        },
        pk="id",
        not_null={"kind", "channel", "status", "created_at"},
    )
    db["notifications"].create_index(["request_id"])  # type: ignore[union-attr]
    db["notifications"].create_index(["status"])  # type: ignore[union-attr]


@migrations(name="0006_used_links_and_reconcile_reports")
def _links_and_reports(db: sqlite_utils.Database) -> None:
    db["used_links"].create(  # type: ignore[union-attr]
        {"nonce": str, "request_id": str, "action": str, "used_by": str, "used_at": str},
        pk="nonce",
    )
    db["reconcile_reports"].create(  # type: ignore[union-attr]
        {"id": int, "at": str, "actor": str, "fixed": int, "report": str},
        pk="id",
    )


@migrations(name="0007_request_columns")
def _request_columns(db: sqlite_utils.Database) -> None:
    db["requests"].add_column("columns", str)  # type: ignore[union-attr]


@migrations(name="0008_approval_steps")
def _approval_steps(db: sqlite_utils.Database) -> None:
    requests = db["requests"]
    for column, kind in (
        ("level", str),
        ("plan", str),
        ("step", int),
        ("step_started_at", str),
        ("escalated_at", str),
    ):
        requests.add_column(column, kind)  # type: ignore[union-attr]
    # Requests from before policies had steps waited for one owner: that is their plan.
    db.execute(
        "UPDATE requests SET step = 0, step_started_at = created_at, plan = CASE WHEN "
        "needs_approval = 1 THEN ? ELSE '[]' END",
        [json.dumps([OWNER_STEP.to_json()])],
    )
    db["approvals"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "request_id": str,
            "step": int,
            "username": str,
            "acting_as": str,
            "at": str,
            "comment": str,
        },
        pk="id",
        not_null={"request_id", "step", "username", "at"},
    )
    # One person fills at most one place in a request's approvals.
    db["approvals"].create_index(["request_id", "username"], unique=True)  # type: ignore[union-attr]


@migrations(name="0009_policy_in_force")
def _policy_in_force(db: sqlite_utils.Database) -> None:
    # One row per activation; the newest is the approval policy every process must run.
    db["policy_in_force"].create(  # type: ignore[union-attr]
        {
            "id": int,
            "fingerprint": str,
            "source": str,
            "text": str,
            "activated_at": str,
            "activated_by": str,
        },
        pk="id",
        not_null={"fingerprint", "source", "text", "activated_at", "activated_by"},
    )


@migrations(name="0010_audit_indexes")
def _audit_indexes(db: sqlite_utils.Database) -> None:
    # The audit page and `mesh audit` filter by these and read newest first (at, then id):
    # an index ends in the rowid (id), so one actor or action, with or without a date
    # range, is read in that order without a sort. Request ids have their own (0002).
    audit = db["audit"]
    audit.create_index(["at"])  # type: ignore[union-attr]
    audit.create_index(["actor", "at"])  # type: ignore[union-attr]
    audit.create_index(["action", "at"])  # type: ignore[union-attr]


@migrations(name="0011_catalog_index")
def _catalog_index(db: sqlite_utils.Database) -> None:
    # The catalog as of the last sync (mesh/catalog_index.py writes and reads it).
    from mesh.catalog_index import SCHEMA

    for statement in SCHEMA:
        db.execute(statement)


@migrations(name="0012_sign_in_security")
def _sign_in_security(db: sqlite_utils.Database) -> None:
    # Sessions get a random id (the store keeps its SHA-256 in token_id), an absolute expiry,
    # the last time they were used (idle timeout), the user's password-hash fingerprint and
    # why they ended. Rows from before have no expiry, so they count as ended.
    sessions = db["sessions"]
    for column in ("expires_at", "last_seen_at", "password_fp", "client", "ended_why"):
        sessions.add_column(column, str)  # type: ignore[union-attr]
    # Failed sign-ins in a row, per subject ("user:NAME" or "address:IP"), and the lockout.
    db["sign_in_failures"].create(  # type: ignore[union-attr]
        {"subject": str, "failures": int, "last_failed_at": str, "locked_until": str},
        pk="subject",
        not_null={"failures", "last_failed_at"},
    )


AUDIT_CHAIN = "0013_audit_chain"


@migrations(name=AUDIT_CHAIN)
def _audit_chain(db: sqlite_utils.Database) -> None:
    # Each row's MAC over its content and the previous row's (mesh/auditchain.py); rows
    # written before this migration are chained by Store.migrate in the same transaction,
    # which holds the key (the migration itself only sees the database).
    db["audit"].add_column("chain", str)  # type: ignore[union-attr]
    # The heads verified so far: start-up and tick verify only the rows after the last.
    db["audit_checkpoints"].create(  # type: ignore[union-attr]
        {"id": int, "at": str, "row_id": int, "chain": str, "rows": int, "mac": str},
        pk="id",
        not_null={"at", "row_id", "chain", "mac"},
    )
    for table in ("reconcile_reports", "audit_checkpoints"):
        for verb in ("UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} are append-only'); END"
            )


@migrations(name="0014_sign_in_refusals")
def _sign_in_refusals(db: sqlite_utils.Database) -> None:
    # Attempts refused while a subject is locked out are counted, not each audited: only the
    # first of a lockout writes an audit row, so guessing on cannot grow the log.
    db["sign_in_failures"].add_column("refused", int)  # type: ignore[union-attr]


@migrations(name="0015_people")
def _people(db: sqlite_utils.Database) -> None:
    # Single sign-on's people, learned at sign-in and shared by every process (mesh/oidc.py).
    db["people"].create(  # type: ignore[union-attr]
        {"username": str, "claims": str, "seen_at": str},
        pk="username",
        not_null={"claims", "seen_at"},
    )


@migrations(name="0016_leases")
def _leases(db: sqlite_utils.Database) -> None:
    # A job one process of the cluster runs at a time (mesh/store/leases.py).
    db["leases"].create(  # type: ignore[union-attr]
        {"name": str, "holder": str, "until": str}, pk="name", not_null={"holder", "until"}
    )
