"""SQLite persistence (sqlite-utils): requests, the append-only audit log, sign-in sessions.

Each thread keeps one connection per store: sqlite3 connections belong to the thread that
made them, and Streamlit runs every session in a thread of its own. Keeping it open keeps the
WAL in place, so a write transaction costs one fdatasync instead of the checkpoint and WAL
removal that closing the last connection does. Every state change and its audit row are
written in one ``BEGIN IMMEDIATE`` transaction; AWS is never called inside one.
"""

from __future__ import annotations

import hmac
import json
import os
import random
import re
import sqlite3
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from mesh import auditchain, files
from mesh.errors import InvalidInput, SettingError, StorageError
from mesh.models import OWNER_STEP, AccessRequest, Action, AuditEvent, Status, Step

migrations = Migrations("mesh")

BUSY_TIMEOUT = 30.0
"""Seconds a connection waits for another process's write lock before giving up."""

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
# one in a file beside its database. Nothing else may: see Store.audit_key.
KEY_FILE_BESIDE_BY_DEFAULT = False


def key_file_beside(db: str | Path) -> Callable[[], str]:
    """The demo's audit key: the private file ``audit-key`` beside the database at ``db``,
    made on first use."""

    def find() -> str:
        from mesh.links import load_or_create_secret

        return load_or_create_secret(Path(db).parent / "audit-key")

    return find


class Store:
    """Requests, audit log and sessions in one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = BUSY_TIMEOUT,
        audit_key: str | Callable[[], str] | None = None,
        key_file_beside: bool = False,
    ) -> None:
        self.path = Path(path)
        self._key_beside = key_file_beside
        self.busy_timeout = busy_timeout
        self._local = threading.local()  # this thread's _Held connection to this store
        self._audit_key = auditchain.key_bytes(audit_key) if isinstance(audit_key, str) else None
        self._find_key = audit_key if callable(audit_key) else None

    @property
    def audit_key(self) -> bytes:
        """The key of the audit chain, read on first use (a store never written or verified
        never asks for it).

        ``audit_key`` is MESH_AUDIT_KEY, or a function that finds it (services.audit_key:
        the setting, else, in demo mode only, the private file beside MESH_DB; aws mode
        refuses to start without the setting). A store made without one has no key, and
        raises SettingError here, unless its maker asked for the key file beside the
        database (``key_file_beside``, as the demo, the tests and the benchmarks do): that
        file is readable by whoever can write the database, so it never protects aws mode.
        """
        if self._audit_key is None:
            if self._find_key is not None:
                secret = self._find_key()
            elif self._key_beside or KEY_FILE_BESIDE_BY_DEFAULT:
                secret = key_file_beside(self.path)()
            else:
                raise SettingError(
                    f"The store {self.path} was opened without the audit chain's key: set "
                    "MESH_AUDIT_KEY (see the README's settings)."
                )
            self._audit_key = auditchain.key_bytes(secret)
        return self._audit_key

    def close(self) -> None:
        """Close this thread's connection; the next operation opens a new one."""
        held: _Held | None = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None and held.pid == os.getpid():
            held.db.conn.close()

    def migrate(self, *, create: bool = True) -> list[str]:
        """Apply pending named migrations, and return the names of those applied now.

        One process at a time: the check and the migrations share one ``BEGIN IMMEDIATE``
        transaction, so processes starting together on a fresh file wait for each other and
        each later one finds the work done. With ``create=False`` (aws mode) a missing or
        empty file is refused: a store that was deleted must be restored from a backup or
        made again on purpose (``mesh init``), never replaced by an empty one unnoticed.
        """
        self._check_path(create=create)
        try:
            with self._connect(create=create, writing=True, cached=False) as db:
                if not create:  # before the journal mode is set, which writes to an empty file
                    self._check_is_mesh_store(db, create=False)
                self._retry_busy(db.conn, "PRAGMA journal_mode=WAL")
                self._retry_busy(db.conn, "BEGIN IMMEDIATE")
                try:
                    self._check_is_mesh_store(db, create=create)
                    pending = [migration.name for migration in migrations.pending(db)]
                    migrations.apply(db)
                    if AUDIT_CHAIN in pending:
                        self._chain_existing(db)
                except BaseException:
                    _rollback(db)
                    raise
                db.execute("COMMIT")
            files.tighten_database(self.path)  # -wal and -shm made before 0600 was the rule
        except StorageError as exc:
            if _error_code(exc.__cause__) in _NOT_A_FILE_CODES:
                raise SettingError(
                    f"MESH_DB points at {self.path}, which cannot be used as a SQLite file "
                    f"({exc.__cause__}); set MESH_DB to the path of a writable SQLite file."
                ) from exc
            raise
        return pending

    def _chain_existing(self, db: sqlite_utils.Database) -> None:
        """Chain the rows written before the chain existed, once, as migration 0013 runs.

        The update trigger is lifted for this one statement of the migration's transaction
        and put back before it commits; later, a row without a chain is a break.
        """
        rows = db.execute(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit ORDER BY id").fetchall()
        if not rows:
            return
        key, prev, chains = self.audit_key, auditchain.GENESIS, []
        for row in rows:
            prev = auditchain.row_mac(key, prev, row)
            chains.append((prev, row[0]))
        db.execute("DROP TRIGGER audit_no_update")
        db.conn.executemany("UPDATE audit SET chain = ? WHERE id = ?", chains)
        db.execute(
            "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
            f"BEGIN SELECT RAISE(ABORT, '{_AUDIT_IS_APPEND_ONLY}'); END"
        )

    def _check_path(self, *, create: bool) -> None:
        if self.path.is_dir():
            raise SettingError(
                f"MESH_DB points at {self.path}, which is a folder; set MESH_DB to the path "
                "of a SQLite file."
            )
        if not create and not self.path.exists():
            raise SettingError(
                f"MESH_DB points at {self.path}, where there is no database; run "
                "`python -m mesh init` to create it, or restore a backup there (see "
                "`python -m mesh backup`)."
            )
        if create:
            try:
                # 0700 and 0600 whatever the umask: sessions, reasons and live links live here
                files.private_dir(self.path.parent)
                files.private_file(self.path)
            except OSError as exc:
                raise SettingError(
                    f"MESH_DB points at {self.path}, whose folder cannot be created "
                    f"({exc.strerror}); set MESH_DB to the path of a writable file."
                ) from exc

    def _check_is_mesh_store(self, db: sqlite_utils.Database, *, create: bool) -> None:
        """Refuse a file that Mesh has never migrated, unless it is empty and may be made."""
        if migrations.applied(db):
            return
        if db.table_names():
            raise SettingError(
                f"MESH_DB points at {self.path}, a SQLite file that is not a Mesh store (it "
                "holds other tables); set MESH_DB to another file."
            )
        if not create:
            raise SettingError(
                f"MESH_DB points at {self.path}, an empty file that is not a Mesh store yet; "
                "run `python -m mesh init` to set it up, or restore a backup over it (see "
                "`python -m mesh backup`)."
            )

    def backup(self, target: str | Path, *, force: bool = False) -> dict[str, int]:
        """Copy the store to ``target`` with SQLite's online backup API; return row counts.

        The copy is consistent while other processes keep writing (it is one read
        transaction), and is written beside ``target`` first and renamed into place, so a
        failed backup never leaves half a file where a good one was. The copy is a single
        file (rollback journal, not WAL), ready to be copied over MESH_DB to restore it.
        """
        target = Path(target)
        self._check_path(create=False)
        if target.is_dir():
            raise InvalidInput(f"{target} is a folder; give the path of the backup file.")
        if target.exists() and target.resolve() == self.path.resolve():
            raise InvalidInput(f"{target} is MESH_DB itself; give another path for the backup.")
        if target.exists() and not force:
            raise InvalidInput(
                f"{target} already exists; choose another path, or pass --force to replace it."
            )
        try:
            fd, partial = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
            )
        except OSError as exc:
            raise StorageError(
                f"The backup {target} could not be written ({exc.strerror})."
            ) from exc
        os.close(fd)  # mkstemp made it 0600, whatever the umask: a backup is as secret as MESH_DB
        try:
            counts = self._backup_into(Path(partial), target=target)
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)
        return counts

    def _backup_into(self, partial: Path, *, target: Path) -> dict[str, int]:
        with self._connect() as db:
            self._check_is_mesh_store(db, create=False)
            copy = sqlite3.connect(partial, isolation_level=None)
            try:
                db.conn.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")
                (check,) = copy.execute("PRAGMA quick_check").fetchone()
                if check != "ok":
                    raise StorageError(f"The backup {target} failed its check: {check}.")
                return {
                    table: copy.execute(f"SELECT COUNT(*) FROM [{table}]").fetchone()[0]
                    for table in ("requests", "audit")
                }
            except sqlite3.Error as exc:
                raise StorageError(f"The backup {target} could not be written: {exc}.") from exc
            finally:
                copy.close()

    @contextmanager
    def _connect(
        self, *, create: bool = False, writing: bool = False, cached: bool = True
    ) -> Iterator[sqlite_utils.Database]:
        """This thread's connection to the existing file (never a new file, unless ``create``).

        A failure of the file itself (locked past the busy timeout, read-only, full, gone)
        becomes a StorageError that names MESH_DB and the cause, and drops the connection; a
        constraint failure or a mistake in SQL passes through unchanged. ``cached=False``
        opens a connection for this one use (migrate, which may create the file).
        """
        db = self._held_connection() if cached else None
        if db is None:
            # Before opening: a file replaced in between only costs a needless reopen later.
            file_id = _file_id(self.path)
            db = self._open(create=create, writing=writing)
            if cached:
                self._local.held = _Held(db=db, file_id=file_id, pid=os.getpid())
        try:
            yield db
        except sqlite3.DatabaseError as exc:
            if not _is_storage_failure(exc):
                raise
            if cached:
                self.close()
            raise self._storage_error(exc, writing=writing) from exc
        finally:
            if not cached:
                db.conn.close()

    def _held_connection(self) -> sqlite_utils.Database | None:
        """This thread's open connection, if it still reaches the file at MESH_DB.

        A file deleted or replaced while Mesh runs lives on for a connection that has it open,
        so each use compares the file's identity with the one opened: if it changed, the
        connection is dropped and a new one opens the path again, which fails as a
        missing file (mode=rw) or as a file without Mesh's tables.
        """
        held: _Held | None = getattr(self._local, "held", None)
        if held is None:
            return None
        if held.pid != os.getpid():  # forked: never use nor close the parent's connection
            _ABANDONED.append(held)
            self._local.held = None
            return None
        if held.file_id is None or held.file_id != _file_id(self.path):
            self.close()
            return None
        if held.db.conn.in_transaction:  # left open by an interrupted operation
            _rollback(held.db)
        return held.db

    def _open(self, *, create: bool, writing: bool) -> sqlite_utils.Database:
        # mode=rw: a file deleted while Mesh runs is an error, not an empty new database.
        mode = "rwc" if create else "rw"
        uri = f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode={mode}"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._storage_error(exc, writing=writing) from exc
        try:
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if not _is_storage_failure(exc):
                raise
            raise self._storage_error(exc, writing=writing) from exc
        return sqlite_utils.Database(conn)

    @contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction that takes the write lock up front (no upgrade deadlocks)."""
        with self._connect(writing=True) as db:
            self._retry_busy(db.conn, "BEGIN IMMEDIATE")
            try:
                # sqlite-utils creates a missing table on insert: a file emptied under a
                # running Mesh must fail here ("no such table"), not fill up anew.
                db.execute("SELECT 1 FROM _sqlite_migrations LIMIT 0")
                yield db
            except BaseException:
                _rollback(db)
                raise
            db.execute("COMMIT")

    def _retry_busy(self, conn: sqlite3.Connection, statement: str) -> None:
        """Run ``statement``, trying again while the file is busy, within the busy timeout.

        SQLite does not always wait in its busy handler: changing the journal mode of a
        fresh file that another process is setting up, or beginning while another
        connection recovers the WAL, fails at once with "database is locked".
        """
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.005
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            conn.execute(f"PRAGMA busy_timeout={int(remaining * 1000)}")
            try:
                conn.execute(statement)
                break
            except sqlite3.OperationalError as exc:
                if _error_code(exc) not in _BUSY_CODES or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.1)
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")

    def _storage_error(self, exc: sqlite3.Error, *, writing: bool) -> StorageError:
        where = f"The store MESH_DB ({self.path})"
        cause = str(exc)
        if not self.path.exists():
            message = (
                f"{where} is missing: it was deleted or moved while Mesh was running; stop "
                "Mesh, then restore a backup there or run `python -m mesh init`."
            )
        elif "no such table" in cause:
            message = (
                f"{where} has lost its tables ({cause}): it was replaced while Mesh was "
                "running; stop Mesh, then restore a backup there."
            )
        elif _error_code(exc) in _BUSY_CODES:
            message = (
                f"{where} stayed locked by another process for more than "
                f"{self.busy_timeout:g} seconds ({cause}); try again."
            )
        else:
            message = f"{where} could not be {'written' if writing else 'read'}: {cause}."
        return StorageError(message)

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
    def _active_duplicate(
        db: sqlite_utils.Database, request: AccessRequest
    ) -> AccessRequest | None:
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
        with self._write() as db:
            rows = list(
                db.query("SELECT status, step FROM requests WHERE id = ?", [approval.request_id])
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
            except sqlite3.IntegrityError as exc:
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
            db.execute(
                f"UPDATE requests SET {assignments} WHERE id = ?",
                [*[_column_value(v) for v in changes.values()], approval.request_id],
            )
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

    def approvals(self, request_id: str) -> list[Approval]:
        """Every approval of a request, in the order they were given."""
        return self.approvals_of([request_id]).get(request_id, [])

    def approvals_of(self, request_ids: Sequence[str]) -> dict[str, list[Approval]]:
        """The approvals of each of ``request_ids``, in the order given, in one query (the
        ids go in as one JSON parameter, so a page of any size is one statement)."""
        with self._connect() as db:
            rows = db.query(
                "SELECT * FROM approvals WHERE request_id IN (SELECT value FROM json_each(?)) "
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

    def get(self, request_id: str) -> AccessRequest | None:
        with self._connect() as db:
            rows = list(db.query("SELECT * FROM requests WHERE id = ?", [request_id]))
        return _from_row(rows[0]) if rows else None

    def requests(
        self,
        *,
        requester: str | None = None,
        statuses: Sequence[Status] | None = None,
        decided_since: str | None = None,
    ) -> list[AccessRequest]:
        """Requests, newest first, optionally of one requester, in some statuses, or decided
        by a person at or after ``decided_since``."""
        where, params = [], []
        if requester is not None:
            where.append("requester = ?")
            params.append(requester)
        if decided_since is not None:
            where.append("decided_at >= ? AND decided_by IS NOT NULL")
            params.append(decided_since)
        if statuses:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params.extend(s.value for s in statuses)
        sql = "SELECT * FROM requests"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC"
        with self._connect() as db:
            return [_from_row(row) for row in db.query(sql, params)]

    def pending_page(
        self,
        *,
        viewer: str,
        everything: bool,
        owner_of: Sequence[str] = (),
        groups: Sequence[str] = (),
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[PendingRow], int]:
        """A page of the requests waiting at a step ``viewer`` may act on, oldest first.

        One query over the requests, the current step of each (read from its stored plan),
        its approvals and its product's owner in the catalog index (the one stored on the
        request when the index does not know it), with the count of every match.
        ``everything`` (admins) takes every waiting request but the viewer's own; otherwise
        a request waits at a step whose approvers are the owners of an account in
        ``owner_of`` or a group in ``groups`` (or, once escalated, whose escalation group
        is; an "all" step takes only its named approvers), and the viewer has not
        approved it yet. The use case still judges each row (approval.may_act).
        """
        reach = (
            "1"
            if everything
            else (
                "NOT EXISTS (SELECT 1 FROM approvals a WHERE a.request_id = w.id "
                "AND a.username = :viewer) AND ("
                "(json_extract(w.cur, '$.approvers') = 'owner' AND w.owner_now IN "
                "(SELECT value FROM json_each(:owner_of))) "
                "OR json_extract(w.cur, '$.approvers') IN (SELECT value FROM json_each(:groups)) "
                "OR (w.escalated_at IS NOT NULL AND json_extract(w.cur, '$.quorum') IS NOT 'all' "
                "AND json_extract(w.cur, '$.escalate_to') IN "
                "(SELECT value FROM json_each(:groups))))"
            )
        )
        # Only the few columns the filter and the order need pass over every waiting row
        # (materialized, so each plan's JSON is read once); the page's 50 rows are then
        # joined back for the rest and their approvals. The window count runs over those
        # narrow rows: at 10,000 waiting this is about 25 ms, where counting whole rows
        # with their approvals took about 90.
        waiting = (
            "WITH w AS MATERIALIZED (SELECT r.id, r.created_at, r.escalated_at, "
            "r.rowid AS rid, json_extract(r.plan, '$[' || "
            "max(0, min(coalesce(r.step, 0), json_array_length(r.plan) - 1)) || ']') AS cur, "
            "coalesce(i.owner_account, r.owner_account) AS owner_now "
            "FROM requests r LEFT JOIN catalog_databases i ON i.name = r.database "
            "WHERE r.status = 'pending_approval' AND r.requester != :viewer) "
        )
        where = f"WHERE w.cur IS NOT NULL AND {reach} "
        sql = (
            waiting + ", p AS (SELECT w.rid, w.cur, w.owner_now, COUNT(*) OVER () AS total "
            "FROM w " + where + "ORDER BY w.created_at, w.rid LIMIT :limit OFFSET :offset) "
            "SELECT r.*, p.rid, p.cur, p.owner_now, p.total, "
            "coalesce(d.owner_name, '') AS owner_name_now, "
            "(SELECT json_group_array(json_array(a.step, a.username, a.acting_as, a.at, "
            "a.comment)) FROM (SELECT * FROM approvals WHERE request_id = r.id ORDER BY id) a) "
            "AS approvals_json "
            "FROM p JOIN requests r ON r.rowid = p.rid "
            "LEFT JOIN catalog_databases d ON d.name = r.database "
            "ORDER BY r.created_at, p.rid"
        )
        params = {
            "viewer": viewer,
            "owner_of": json.dumps(list(owner_of)),
            "groups": json.dumps(list(groups)),
            "limit": limit,
            "offset": offset,
        }
        with self._connect() as db:
            rows = list(db.query(sql, params))
            if not rows and offset:
                # past the last page: the window count came with no row
                count = waiting + "SELECT COUNT(*) AS total FROM w " + where
                total = next(iter(db.query(count, params)))["total"]
            else:
                total = rows[0]["total"] if rows else 0
        page = []
        for row in rows:
            request = _from_row({k: row[k] for k in row if k not in _PAGE_EXTRAS})
            approvals = [
                Approval(
                    request_id=request.id,
                    step=step,
                    username=username,
                    acting_as=acting_as or "",
                    at=at,
                    comment=comment or "",
                )
                for step, username, acting_as, at, comment in json.loads(row["approvals_json"])
            ]
            page.append(
                PendingRow(
                    request=request,
                    approvals=approvals,
                    owner_account=row["owner_now"],
                    owner_name=row["owner_name_now"],
                )
            )
        return page, int(total)

    def granted_page(
        self,
        *,
        everything: bool,
        owner_of: Sequence[str] = (),
        text: str = "",
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[AccessRequest], int]:
        """A page of the granted requests (and those whose revoke failed), newest first,
        with the count of every match.

        ``everything`` (admins) takes them all; otherwise those whose product's owner is
        an account in ``owner_of``: the catalog index's owner, else the one stored on the
        request. ``text`` narrows to requests whose requester, account, database or
        ``database.table`` contains it (case aside).
        """
        where = "r.status IN ('granted', 'revoke_failed')"
        if not everything:
            where += (
                " AND coalesce(i.owner_account, r.owner_account) IN "
                "(SELECT value FROM json_each(:owner_of))"
            )
        text = text.strip().lower()
        if text:
            where += (
                " AND (instr(lower(r.requester), :text) OR instr(r.account, :text) "
                "OR instr(lower(r.database || '.' || coalesce(r.table_name, '')), :text))"
            )
        base = (
            f"FROM requests r LEFT JOIN catalog_databases i ON i.name = r.database WHERE {where} "
        )
        # As in pending_page: order and count narrow rows, then read the page's whole rows.
        sql = (
            "WITH p AS (SELECT r.rowid AS rid, r.created_at, COUNT(*) OVER () AS total "
            + base
            + "ORDER BY r.created_at DESC, r.rowid DESC LIMIT :limit OFFSET :offset) "
            "SELECT r.*, p.total FROM p JOIN requests r ON r.rowid = p.rid "
            "ORDER BY p.created_at DESC, p.rid DESC"
        )
        params = {
            "owner_of": json.dumps(list(owner_of)),
            "text": text,
            "limit": limit,
            "offset": offset,
        }
        with self._connect() as db:
            rows = list(db.query(sql, params))
            if rows or not offset:
                total = rows[0]["total"] if rows else 0
            else:  # past the last page: the window count came with no row
                total = next(iter(db.query("SELECT COUNT(*) AS total " + base, params)))["total"]
        return [_from_row({k: row[k] for k in row if k != "total"}) for row in rows], int(total)

    # Audit ------------------------------------------------------------------------------

    def _append(self, db: sqlite_utils.Database, events: Sequence[NewEvent]) -> None:
        """Append rows to the chain: each MAC covers the row and the one before it.

        Called inside a write transaction (BEGIN IMMEDIATE), so appends are serialised and
        the chain never forks; only the last row is read, so an append costs the same at
        any size of the log.
        """
        if not events:
            return
        last = db.execute("SELECT id, chain FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        prev_id, prev = (last[0], last[1] or "") if last else (0, auditchain.GENESIS)
        key, rows = self.audit_key, []
        for offset, event in enumerate(events, start=1):
            row = {"id": prev_id + offset, **event.row()}
            prev = auditchain.row_mac(key, prev, [row[c] for c in AUDIT_COLUMNS])
            rows.append({**row, "chain": prev})
        insert = (
            f"INSERT INTO audit ({', '.join(AUDIT_COLUMNS)}, chain) "
            f"VALUES ({', '.join('?' for _ in range(len(AUDIT_COLUMNS) + 1))})"
        )
        for row in rows:
            db.execute(insert, [row[c] for c in (*AUDIT_COLUMNS, "chain")])

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
        where, params = _audit_where(filters)
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
        where, params = _audit_where(filters)
        page_where, page_params = list(where), list(params)
        if older_than is not None:
            at = "+at" if filters.request_id else "at"
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
        where, params = _audit_where(filters)
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
            present = {
                name
                for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            }
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

    # Sign-in sessions -------------------------------------------------------------------

    def open_session(
        self,
        token_id: str,
        username: str,
        *,
        at: str,
        expires_at: str | None = None,
        password_fp: str | None = None,
        client: str | None = None,
        events: Sequence[NewEvent] = (),
    ) -> None:
        """Record a session opened by a password sign-in, with its audit row."""
        with self._write() as db:
            db["sessions"].insert(  # type: ignore[union-attr]
                {
                    "token_id": token_id,
                    "username": username,
                    "created_at": at,
                    "revoked_at": None,
                    "expires_at": expires_at,
                    "last_seen_at": at,
                    "password_fp": password_fp,
                    "client": client,
                },
                replace=True,
            )
            self._append(db, events)

    def session(self, token_id: str) -> SessionRow | None:
        with self._connect() as db:
            rows = list(db.query("SELECT * FROM sessions WHERE token_id = ?", [token_id]))
        if not rows:
            return None
        row = rows[0]
        return SessionRow(
            token_id=row["token_id"],
            username=row["username"],
            created_at=row["created_at"],
            expires_at=row["expires_at"] or "",
            last_seen_at=row["last_seen_at"] or row["created_at"],
            password_fp=row["password_fp"] or "",
            revoked_at=row["revoked_at"] or "",
            ended_why=row["ended_why"] or "",
        )

    def touch_session(self, token_id: str, *, at: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE sessions SET last_seen_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                [at, token_id],
            )

    def end_session(
        self, token_id: str, *, at: str, why: str, events: Sequence[NewEvent] = ()
    ) -> None:
        """End a session (sign-out, expiry, a changed password), with its audit rows."""
        with self._write() as db:
            db.execute(
                "UPDATE sessions SET revoked_at = ?, ended_why = ? "
                "WHERE token_id = ? AND revoked_at IS NULL",
                [at, why, token_id],
            )
            self._append(db, events)

    # Sign-in throttling -----------------------------------------------------------------

    def claim_sign_in_attempt(
        self,
        limits: Mapping[str, int],
        *,
        at: str,
        forget_before: str,
        locked_until: str,
        locked_out: Callable[[], NewEvent],
    ) -> tuple[str | None, dict[str, int]]:
        """Count an attempt before its password is checked, in the transaction that reads
        the lockout, so that parallel attempts never get more checks than the limit.

        A subject locked at ``at`` refuses the attempt: it counts as refused, and only the
        first refusal of a lockout writes ``locked_out()`` to the audit log. Returns the end
        of the lockout (None when the attempt may go on) and each subject's count with this
        attempt; a subject that reaches its limit is locked until ``locked_until``.
        """
        with self._write() as db:
            marks = ", ".join("?" for _ in limits)
            rows = {
                row["subject"]: row
                for row in db.query(
                    f"SELECT * FROM sign_in_failures WHERE subject IN ({marks})", list(limits)
                )
            }
            locked = {s: r for s, r in rows.items() if r["locked_until"] and r["locked_until"] > at}
            if locked:
                first = any(not r["refused"] for r in locked.values())
                db.execute(
                    "UPDATE sign_in_failures SET refused = COALESCE(refused, 0) + 1 "
                    f"WHERE subject IN ({', '.join('?' for _ in locked)})",
                    list(locked),
                )
                if first:
                    self._append(db, [locked_out()])
                return max(r["locked_until"] for r in locked.values()), {}
            counts: dict[str, int] = {}
            for subject, limit in limits.items():
                old = rows.get(subject)
                stale = old is None or old["last_failed_at"] < forget_before or old["locked_until"]
                counts[subject] = 1 if stale or old is None else int(old["failures"]) + 1
                db["sign_in_failures"].insert(  # type: ignore[union-attr]
                    {
                        "subject": subject,
                        "failures": counts[subject],
                        "last_failed_at": at,
                        "locked_until": locked_until if counts[subject] >= limit else None,
                        "refused": 0,
                    },
                    replace=True,
                )
            return None, counts

    def release_sign_in_attempt(self, subject: str, *, limit: int) -> None:
        """Take back one counted attempt that succeeded (and the lockout it may have set)."""
        with self._write() as db:
            db.execute(
                "UPDATE sign_in_failures SET failures = MAX(failures - 1, 0), "
                "locked_until = CASE WHEN failures - 1 < ? THEN NULL ELSE locked_until END "
                "WHERE subject = ?",
                [limit, subject],
            )

    def note_refused_cookie(
        self, subject: str, *, at: str, window_ends: str, event: Callable[[int], NewEvent]
    ) -> bool:
        """Audit a refused cookie at most once per window per ``subject`` (a client address).

        The rest are counted in the subject's sign_in_failures row; the next audited row
        says, through ``event(count)``, how many went unaudited since the one before. True
        when this one was audited.
        """
        with self._write() as db:
            rows = list(db.query("SELECT * FROM sign_in_failures WHERE subject = ?", [subject]))
            old = rows[0] if rows else None
            if old is not None and old["locked_until"] and old["locked_until"] > at:
                db.execute(
                    "UPDATE sign_in_failures SET failures = failures + 1, last_failed_at = ? "
                    "WHERE subject = ?",
                    [at, subject],
                )
                return False
            unaudited = int(old["failures"]) - 1 if old is not None else 0
            db["sign_in_failures"].insert(  # type: ignore[union-attr]
                {"subject": subject, "failures": 1, "last_failed_at": at,
                 "locked_until": window_ends, "refused": 0},
                replace=True,
            )  # fmt: skip
            self._append(db, [event(unaudited)])
            return True

    def clear_sign_in_failures(self, subject: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM sign_in_failures WHERE subject = ?", [subject])

    def forget_sign_in_failures(self, *, at: str, forget_before: str) -> int:
        """Delete the counts that can no longer lock anyone out: no lockout in force at
        ``at`` and the last failure before ``forget_before``; return how many went.

        Without this the table keeps a row for every user name ever typed wrong.
        """
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM sign_in_failures WHERE last_failed_at < ? "
                "AND (locked_until IS NULL OR locked_until <= ?)",
                [forget_before, at],
            )
            return int(cursor.rowcount)


@dataclass(frozen=True, kw_only=True)
class _Held:
    """A thread's open connection, and the file and process it was opened in."""

    db: sqlite_utils.Database
    file_id: tuple[int, int] | None
    pid: int


# Connections a forked child inherited: closing one could checkpoint and remove the WAL
# under its parent, so they are kept, unused, until the child exits.
_ABANDONED: list[_Held] = []


def _file_id(path: Path) -> tuple[int, int] | None:
    """The device and inode of the file at ``path``, or None when there is none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


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


_LAST_ID = "SELECT MAX(id) FROM audit"


def _where(conditions: Sequence[str]) -> str:
    return " WHERE " + " AND ".join(conditions) if conditions else ""


def _audit_where(filters: AuditFilters) -> tuple[list[str], list[Any]]:
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
        usable = name == indexed or (name == "at" and indexed in ("actor", "action"))
        return name if usable else f"+{name}"

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
        where.append("(scope LIKE ? ESCAPE '\\' OR details LIKE ? ESCAPE '\\')")
        params += [pattern, pattern]
    return where, params


def _column_value(value: Any) -> Any:
    if isinstance(value, Status):
        return value.value
    if isinstance(value, (tuple, list)):
        return json.dumps([v.to_json() if isinstance(v, Step) else v for v in value])
    if isinstance(value, bool):
        return int(value)
    return value


_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
# At start, these mean MESH_DB names something that is not a usable SQLite file.
_NOT_A_FILE_CODES = {sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOTADB}
# Failures of the file, not of the SQL: busy, read-only, I/O, corrupt, full, gone.
_STORAGE_CODES = (
    _BUSY_CODES
    | _NOT_A_FILE_CODES
    | {
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_PROTOCOL,
    }
)


def _error_code(exc: BaseException | None) -> int | None:
    """SQLite's primary result code for ``exc``, or None when SQLite did not raise it."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _is_storage_failure(exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` is about the file (lock, disk, permissions, gone), not the SQL."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
        return False
    if "no such table" in str(exc):  # the file was replaced by an empty one
        return True
    code = _error_code(exc)
    # An error raised without a SQLite code (a stand-in in tests, a wrapper) is judged
    # by its class: OperationalError is SQLite's class for failures of the database.
    return code in _STORAGE_CODES if code is not None else True


def _rollback(db: sqlite_utils.Database) -> None:
    """Roll back if a transaction is still open, never hiding the failure that led here."""
    if db.conn.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # closing the connection rolls back too
