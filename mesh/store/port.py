"""The store's interface: what the use cases, the tick and the pages call on a store.

``mesh.store.Store`` (SQLite) implements it; a PostgreSQL adapter (issue 11) is to implement
the same, and the contract tests (tests/contract/test_store_contract.py) run against each.
The promises each method makes are written on the SQLite adapter's methods; the ones every
adapter must keep:

- a state change and its audit rows are written in one transaction, or neither is;
- ``transition``, ``record_approval`` and the ``claim_*`` methods are conditional updates:
  of two callers racing on one row, exactly one gets the row back, the other None;
- the audit log is append-only, enforced by the database itself (UPDATE and DELETE fail),
  and each row carries a keyed MAC chaining it to the row before (mesh/auditchain.py);
- ``use_link`` is true once per nonce; ``claim_notification`` once per claim window;
- ``migrate`` applies named migrations once, also when several processes start together.

Not behind this interface yet: the catalog index (mesh/catalog_index.py,
mesh/catalog_query.py, mesh/catalog_search.py) runs its own SQL (FTS5) on the store's
connection (``_connect``, ``_write``); a second adapter needs a catalog index of its own.
``path`` is used by mesh/auditlog.py for the default place of its checkpoint file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from mesh import auditchain
from mesh.models import AccessRequest, AuditEvent, Status
from mesh.store.rows import (
    Approval,
    AuditFilters,
    AuditRow,
    NewEvent,
    PendingRow,
    PolicyRecord,
    SessionRow,
)


class StorePort(Protocol):
    """Requests, approvals, the audit log and its chain, the outbox, links, reports, the
    policy record, sessions and sign-in throttling."""

    path: Path

    # Requests: adding, state transitions, approvals, claims ----------------------------------

    def add_request(
        self, request: AccessRequest, events: Sequence[NewEvent]
    ) -> AccessRequest | None:
        """Insert a request and its audit rows unless an identical active request exists."""
        ...

    def transition(
        self,
        request_id: str,
        *,
        allowed_from: Sequence[Status],
        changes: Mapping[str, Any],
        events: Sequence[NewEvent],
        unchanged_since: str | None = None,
    ) -> AccessRequest | None:
        """Change a request only if its status is still one of ``allowed_from``."""
        ...

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
        """Add one approval to the request's current step, and advance it if that fills
        it."""
        ...

    def approvals(self, request_id: str) -> list[Approval]:
        """Every approval of a request, in the order they were given."""
        ...

    def approvals_of(self, request_ids: Sequence[str]) -> dict[str, list[Approval]]:
        """The approvals of each of ``request_ids``, in the order given, in one query (the
        ids go in as one JSON parameter, so a page of any size is one statement)."""
        ...

    def claim_escalation(
        self, request_id: str, *, step: int, at: str, events: Sequence[NewEvent]
    ) -> AccessRequest | None:
        """Mark a waiting step as escalated; None if it moved on or another pass did it."""
        ...

    def claim_reminder(
        self, request_id: str, *, was: int, level: int, events: Sequence[NewEvent]
    ) -> AccessRequest | None:
        """Raise a pending request's reminder level from ``was``; None if another pass
        did."""
        ...

    def claim_warning(
        self, request_id: str, *, at: str, events: Sequence[NewEvent]
    ) -> AccessRequest | None:
        """Mark a granted request as warned of its expiry; None if another pass did."""
        ...

    def mark_seen(self, requester: str, request_ids: Sequence[str]) -> int:
        """The requester has seen the decisions on these requests (and only these)."""
        ...

    def notification(self, notification_id: int) -> dict[str, Any] | None: ...

    def step_notifications(
        self, request_ids: Iterable[str], *, kinds: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """The notifications of ``kinds`` written since each request's current step began,
        in the order written, by request id (a request without any is left out)."""
        ...

    def owner_accounts(self, request_ids: Iterable[str]) -> dict[str, str | None]:
        """Each known request's product owner account, by request id."""
        ...

    # Requests as pages and lists read them ---------------------------------------------------

    def get(self, request_id: str) -> AccessRequest | None: ...

    def requests(
        self,
        *,
        requester: str | None = None,
        statuses: Sequence[Status] | None = None,
        decided_since: str | None = None,
    ) -> list[AccessRequest]:
        """Requests, newest first, optionally of one requester, in some statuses, or decided
        by a person at or after ``decided_since``."""
        ...

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
        """A page of the requests waiting at a step ``viewer`` may act on, oldest first."""
        ...

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
        with the count of every match."""
        ...

    # The append-only audit log and its hash chain --------------------------------------------

    def append(self, *events: NewEvent) -> None:
        """Append audit rows on their own, such as the intent recorded before an AWS
        call."""
        ...

    def audit(
        self,
        *,
        request_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        filters: AuditFilters | None = None,
    ) -> list[AuditEvent]:
        """Audit rows in the order they were written, optionally filtered."""
        ...

    def audit_page(
        self,
        filters: AuditFilters,
        *,
        limit: int = 100,
        older_than: tuple[str, int] | None = None,
    ) -> tuple[list[AuditEvent], int]:
        """One page of matching rows, newest first, and how many rows match in all."""
        ...

    def iter_audit(self, filters: AuditFilters, *, chunk: int = 5000) -> Iterator[AuditRow]:
        """Every matching row in id order, as stored (details as JSON text), for export."""
        ...

    def audit_head(self) -> tuple[int, str]:
        """The last row's id and chain: (0, GENESIS) for an empty log."""
        ...

    def audit_chain_at(self, row_id: int) -> str | None: ...

    def iter_chain(self, *, after: int = 0, chunk: int = 10000) -> Iterator[auditchain.ChainedRow]:
        """Every row after id ``after``, with its chain, in id order (streamed, own
        connection)."""
        ...

    def missing_triggers(self) -> tuple[str, ...]:
        """The append-only triggers that are not in the file (dropped by hand)."""
        ...

    def last_checkpoint(self) -> tuple[int, str] | None:
        """The newest checkpoint whose MAC holds: the head verified last, or None."""
        ...

    def checkpoint_status(self) -> tuple[dict[str, Any] | None, int]:
        """The newest checkpoint whose MAC holds (its row, time and rows checked), or None,
        and the log's last row id: what a page says about the chain without verifying it."""
        ...

    def add_checkpoint(self, *, row_id: int, chain: str, rows: int, at: str) -> None: ...

    def add_published(self, *, row_id: int, chain: str, at: str, where: str) -> None:
        """Note that the head was published to the anchor at ``where``: a checkpoints row
        (``rows`` -1) whose MAC covers ``where``, so a missing anchor is a break, not a
        first run (FileAnchor.last)."""
        ...

    def last_published(self, where: str) -> dict[str, Any] | None:
        """The newest note whose MAC holds that the head was published to ``where``."""
        ...

    def verified_rows(self, request_id: str) -> list[tuple[AuditEvent, bool]]:
        """A request's audit rows in order, each with whether its MAC holds."""
        ...

    def audit_actions(self) -> list[str]:
        """The distinct actions in the log, sorted, read from the action index."""
        ...

    def audit_actors(self) -> list[str]:
        """The distinct actors in the log, sorted, read from the actor index."""
        ...

    # The outbox, links used once, reconcile reports, the approval policy in force ------------

    def add_notification(self, row: Mapping[str, Any], events: Sequence[NewEvent]) -> int: ...

    def claim_notification(self, notification_id: int, *, at: str, stale_before: str) -> bool:
        """Take a notification to deliver; only one process can hold it at a time."""
        ...

    def finish_notification(
        self, notification_id: int, changes: Mapping[str, Any], events: Sequence[NewEvent]
    ) -> None: ...

    def without_notice(self, *, idle_before: str) -> list[AccessRequest]:
        """Requests whose notice was never queued: the process stopped between the change
        and the outbox (the two are separate writes)."""
        ...

    def notification_counts(self) -> dict[str, int]:
        """How many messages the outbox holds in each status."""
        ...

    def notifications(
        self,
        *,
        request_id: str | None = None,
        statuses: Sequence[str] | None = None,
        newest: int | None = None,
    ) -> list[dict[str, Any]]:
        """Outbox rows in the order written; with ``newest``, only that many, newest
        first."""
        ...

    def use_link(self, nonce: str, *, request_id: str, action: str, used_by: str, at: str) -> bool:
        """Record a link as used; False if it was used before."""
        ...

    def link_used(self, nonce: str) -> bool: ...

    def add_report(
        self,
        *,
        at: str,
        actor: str,
        fixed: bool,
        report: Mapping[str, Any],
        events: Sequence[NewEvent],
    ) -> None: ...

    def last_report(self) -> dict[str, Any] | None: ...

    def policy_in_force(self) -> PolicyRecord | None:
        """The newest activated policy, or None before any process recorded one."""
        ...

    def record_policy(
        self, record: PolicyRecord, *, replacing: str | None, events: Sequence[NewEvent]
    ) -> PolicyRecord:
        """Make ``record`` the policy in force, and return the one in force afterwards."""
        ...

    # Sign-in sessions and sign-in throttling -------------------------------------------------

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
        ...

    def session(self, token_id: str) -> SessionRow | None: ...

    def touch_session(self, token_id: str, *, at: str) -> None: ...

    def end_session(
        self, token_id: str, *, at: str, why: str, events: Sequence[NewEvent] = ()
    ) -> None:
        """End a session (sign-out, expiry, a changed password), with its audit rows."""
        ...

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
        the lockout, so that parallel attempts never get more checks than the limit."""
        ...

    def release_sign_in_attempt(self, subject: str, *, limit: int) -> None:
        """Take back one counted attempt that succeeded (and the lockout it may have
        set)."""
        ...

    def note_refused_cookie(
        self, subject: str, *, at: str, window_ends: str, event: Callable[[int], NewEvent]
    ) -> bool:
        """Audit a refused cookie at most once per window per ``subject`` (a client
        address)."""
        ...

    def clear_sign_in_failures(self, subject: str) -> None: ...

    def forget_sign_in_failures(self, *, at: str, forget_before: str) -> int:
        """Delete the counts that can no longer lock anyone out: no lockout in force at
        ``at`` and the last failure before ``forget_before``; return how many went."""
        ...

    # People known from single sign-on (mesh/oidc.py) -----------------------------------------

    def remember_person(self, username: str, claims: Mapping[str, Any], *, at: str) -> None:
        """Keep ``claims`` as what ``username`` last signed in with."""
        ...

    def person_claims(self, username: str) -> dict[str, Any] | None: ...

    def people_claims(self) -> list[dict[str, Any]]:
        """Everyone's last claims, by user name."""
        ...

    # Leases: a job one process of the cluster runs at a time (mesh/store/leases.py) --------

    def claim_lease(self, name: str, *, holder: str, now: str, until: str) -> bool:
        """Take the lease ``name`` until ``until`` unless someone else holds it at ``now``."""
        ...

    def release_lease(self, name: str, *, holder: str) -> None:
        """End the lease ``name`` if ``holder`` still holds it."""
        ...

    # The store itself ------------------------------------------------------------------------

    @property
    def audit_key(self) -> bytes:
        """The key of the audit chain, read on first use (a store never written or verified
        never asks for it)."""
        ...

    def close(self) -> None:
        """Close this thread's connection; the next operation opens a new one."""
        ...

    def migrate(self, *, create: bool = True) -> list[str]:
        """Apply pending named migrations, and return the names of those applied now."""
        ...

    def backup(self, target: str | Path, *, force: bool = False) -> dict[str, int]:
        """Copy the store to ``target`` with SQLite's online backup API; return row
        counts."""
        ...
