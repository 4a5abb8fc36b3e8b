"""Reads that the pages and the CLI need: queues, histories, the audit log, explain.

No read here calls Glue: the catalog index answers, else what the request stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from mesh import approval, policy
from mesh.approval import Verdict
from mesh.errors import (
    Forbidden,
    InvalidInput,
)
from mesh.models import (
    AccessRequest,
    Action,
    AuditEvent,
    Scope,
    Status,
    User,
)
from mesh.moments import iso
from mesh.store import (
    Approval,
    AuditFilters,
    AuditRow,
    PendingRow,
)
from mesh.usecase import UseCase, _status

if TYPE_CHECKING:
    from mesh import metrics

# The audit rows the dashboard counts: outcomes and failed notifications.
DASHBOARD_ACTIONS = (
    Action.GRANT_SUCCEEDED.value,
    Action.DENIED.value,
    Action.REVOKE_SUCCEEDED.value,
    Action.NOTIFICATION_FAILED.value,
)


@dataclass(frozen=True, kw_only=True)
class ChainStatus:
    """What the last verification of the audit chain found, read without verifying again.

    ``checkpoint`` is the newest verified head (row id, time, rows checked), None before
    any; ``head_id`` is the log's last row, so rows after the checkpoint are not verified
    yet (the periodic job verifies them).
    """

    checkpoint: dict[str, Any] | None
    head_id: int


@dataclass(frozen=True, kw_only=True)
class PendingItem:
    """A request awaiting a decision, with what an approver needs to see."""

    request: AccessRequest
    owner_account: str | None
    owner_name: str
    grants: tuple[dict[str, Any], ...]
    progress: str = ""
    # Admins may always deny; approving is open to them only where the step lets them.
    may_approve: bool = True
    why_not_approve: str = ""


@dataclass(frozen=True, kw_only=True)
class RequestView:
    """One of a requester's requests with its approvals (and, while it waits, where it
    stands), for the My requests page."""

    request: AccessRequest
    approvals: list[Approval]
    progress: str = ""


class Reads(UseCase):
    """The approvals queue, failed and granted access, one request, the audit log, and
    what the policy says about a scope."""

    def explain(
        self,
        *,
        database: str,
        table: str | None,
        account: str | None,
        columns: Sequence[str] | None = None,
    ) -> Verdict:
        """What the policy says about a request for this scope, without creating anything.

        ``account`` None judges it as if for an account no auto-approval condition names.
        """
        database = (database or "").strip()
        table = (table or "").strip() or None
        if not database:
            raise InvalidInput("Name the database to explain.")
        if account is not None and not policy.is_valid_account(account.strip()):
            raise InvalidInput(
                f"The account {account!r} is not an AWS account id: it must be exactly 12 digits."
            )
        if columns is not None and table is None:
            raise InvalidInput("A whole-database request cannot name columns; request a table.")
        catalog = self._catalog_view()
        db = catalog.database(database)
        tables = [catalog.table(database, table)] if table else catalog.tables(database)
        subset = policy.check_columns(tables[0], columns) if columns is not None else None
        if db.owner_account is None:
            raise InvalidInput(
                "This data product has no owner, so it cannot be requested; ask a catalog "
                "admin to set data_owner."
            )
        scope = Scope(database=db.name, table=tables[0].name if table else None, columns=subset)
        return approval.evaluate(
            self.rules, scope, db, tables, account=account.strip() if account else None
        )

    def never_approvable(self, username: str, database: str, verdict: Verdict) -> str | None:
        """Why a request by ``username`` with this verdict could never be approved, if so."""
        if not verdict.needs_approval:
            return None
        return approval.unfillable(
            verdict.steps,
            requester=self._user(username).username,
            users=self.users.everyone(),
            owner=self._catalog_view().database(database).owner_account,
        )

    # Reads ----------------------------------------------------------------------------

    def requests(
        self, *, username: str | None = None, status: str | None = None
    ) -> list[AccessRequest]:
        """All requests, or those ``username`` made, optionally in one status."""
        if username is not None:
            self._user(username)
        statuses = [_status(status)] if status else None
        return self.store.requests(
            requester=username and username.strip().lower(), statuses=statuses
        )

    def my_requests(self, username: str) -> list[RequestView]:
        """Every request ``username`` made, with their approvals read in one query."""
        mine = self.requests(username=username)
        approvals = self.store.approvals_of([r.id for r in mine])
        return [
            RequestView(
                request=r,
                approvals=approvals.get(r.id, []),
                progress=(
                    self.progress(r, approvals.get(r.id, []))
                    if r.status is Status.PENDING_APPROVAL
                    else ""
                ),
            )
            for r in mine
        ]

    def pending_for(self, username: str) -> list[PendingItem]:
        """Every pending request ``username`` may decide now, oldest first (see pending_page)."""
        return self.pending_page(username, limit=-1)[0]

    def pending_page(
        self, username: str, *, offset: int = 0, limit: int = 50
    ) -> tuple[list[PendingItem], int]:
        """A page of the pending requests ``username`` may decide now, oldest first, and
        how many there are in all (``limit`` -1: every one).

        An admin gets every waiting request but their own: any admin may deny one, as a way
        out of a stuck request, even where the policy does not let admins approve it. One
        store query reads the page with its approvals; no Glue call is made: the owner is
        the catalog index's (as last synced or refreshed), else the one stored on the
        request; a decision reads it from Glue again.
        """
        user = self._user(username)
        if not user.can_approve:
            raise Forbidden(
                f"User {user.username} is neither an owner, an admin nor in an approver "
                "group, so has nothing to approve."
            )
        rows, total = self.store.pending_page(
            viewer=user.username,
            everything=user.is_admin,
            owner_of=sorted(user.owner_of) if user.is_owner else [],
            groups=sorted(user.groups),
            limit=limit,
            offset=offset,
        )
        items = [self._pending_item(user, row) for row in rows]
        return [item for item in items if item is not None], total

    def _pending_item(self, user: User, row: PendingRow) -> PendingItem | None:
        request, done, owner = row.request, row.approvals, row.owner_account
        may_approve = approval.may_act(self.rules, user, request, owner, done)
        if not may_approve and not (user.is_admin and user.username != request.requester):
            return None
        why_not = ""
        if not may_approve:
            why_not = (
                "you have already approved it; someone else must give the next approval"
                if any(a.username == user.username for a in done)
                else "the approval policy does not let admins approve this step"
            )
        return PendingItem(
            request=request,
            owner_account=owner,
            owner_name=row.owner_name,
            grants=tuple(spec.to_api() for spec in self.grant_plan(request)),
            progress=self.progress(request, done),
            may_approve=may_approve,
            why_not_approve=why_not,
        )

    def failed_for(self, username: str) -> list[AccessRequest]:
        """Failed requests of products ``username`` owns (all, for admins), to retry.

        No Glue call: the owner is the catalog index's, else the one stored on the request
        (as in the approvals queue); retry reads it from Glue again.
        """
        user = self._user(username)
        failed = self.store.requests(statuses=[Status.FAILED])
        if user.is_admin:
            return failed
        owners = self._known_owners()
        return [r for r in failed if policy.owns(user, owners.owner(r))]

    def revocable_for(
        self, username: str, *, search: str = "", offset: int = 0, limit: int = -1
    ) -> list[AccessRequest]:
        """Granted access to products ``username`` owns (all, for admins), newest first."""
        return self.revocable_page(username, search=search, offset=offset, limit=limit)[0]

    def revocable_page(
        self, username: str, *, search: str = "", offset: int = 0, limit: int = 50
    ) -> tuple[list[AccessRequest], int]:
        """A page of the granted access ``username`` may revoke, and how many match in all.

        ``search`` narrows to requester, account or database/table text. One store query,
        no Glue call: the owner is the catalog index's, else the one stored on the request;
        revoke reads it from Glue again.
        """
        user = self._user(username)
        owner_of = sorted(user.owner_of) if user.is_owner else []
        if not (user.is_admin or owner_of):
            return [], 0
        return self.store.granted_page(
            everything=user.is_admin, owner_of=owner_of, text=search, limit=limit, offset=offset
        )

    def request_for(self, request_id: str, username: str) -> AccessRequest:
        """One request, for its requester, an owner of its product or an admin.

        No Glue call: the owner is the catalog index's, else the one stored on the request.
        """
        user = self._user(username)
        request = self._request(request_id)
        if not policy.may_retry(user, request, self._known_owners().owner(request)):
            raise Forbidden(f"User {user.username} may not see request {request.id}.")
        return request

    def lake_formation_view(self, request_id: str, username: str) -> list[dict[str, Any]]:
        """What Lake Formation holds now for a request's account on its resources."""
        request = self.request_for(request_id, username)
        wanted = {policy.resource_key(spec.resource) for spec in self.grant_plan(request)}
        # Listing everything and filtering here also covers column grants, which cannot be
        # used as a list_permissions filter.
        return [
            entry
            for entry in self.grants.list_permissions()
            if entry.get("Principal", {}).get("DataLakePrincipalIdentifier") == request.account
            and policy.resource_key(entry.get("Resource", {})) in wanted
        ]

    def audit_for(self, username: str, **filters: Any) -> list[AuditEvent]:
        """The audit log, for admins only (the CLI, which needs server access, uses audit)."""
        self._auditor(username)
        return self.audit(**filters)

    def audit(
        self,
        *,
        request_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        filters: AuditFilters | None = None,
    ) -> list[AuditEvent]:
        """Matching audit rows in the order they were written."""
        filters = (filters or AuditFilters()).narrowed(
            request_id=request_id, actor=actor, action=action
        )
        if filters.request_id is not None:
            # an unknown request is "not found", not an empty log
            self._request(filters.request_id)
        return self.store.audit(filters=filters)

    def audit_page_for(
        self,
        username: str,
        filters: AuditFilters,
        *,
        limit: int = 100,
        older_than: tuple[str, int] | None = None,
    ) -> tuple[list[AuditEvent], int]:
        """One page of the audit log for an admin, newest first, and the matching total."""
        self._auditor(username)
        return self.store.audit_page(filters, limit=limit, older_than=older_than)

    def audit_choices_for(self, username: str) -> tuple[list[str], list[str]]:
        """The actors and the actions the audit log holds, for an admin's filters."""
        self._auditor(username)
        return self.store.audit_actors(), self.store.audit_actions()

    def audit_export_for(self, username: str, filters: AuditFilters) -> Iterator[AuditRow]:
        """Every matching row in write order, streamed, for an admin's CSV."""
        self._auditor(username)
        return self.store.iter_audit(filters)

    def audit_export(self, filters: AuditFilters) -> Iterator[AuditRow]:
        """Every matching row in write order, streamed (the CLI: server access suffices)."""
        if filters.request_id is not None:
            self._request(filters.request_id)
        return self.store.iter_audit(filters)

    def audit_chain_for(self, username: str) -> ChainStatus:
        """The last verified head of the audit chain and the log's last row, for an admin."""
        self._auditor(username)
        checkpoint, head = self.store.checkpoint_status()
        return ChainStatus(checkpoint=checkpoint, head_id=head)

    def notification_counts_for(self, username: str) -> dict[str, int]:
        """How many outbox messages are in each status, for an admin."""
        self._admin(username, "only admins read the notification log")
        return self.store.notification_counts()

    def notifications_for(
        self, username: str, *, statuses: Sequence[str] = (), newest: int = 200
    ) -> list[dict[str, Any]]:
        """The newest outbox messages (in ``statuses``, if any), newest first, for an admin:
        the outbox holds live decision links."""
        self._admin(username, "only admins read the notification log")
        return self.store.notifications(statuses=list(statuses) or None, newest=newest)

    def last_report_for(self, username: str) -> dict[str, Any] | None:
        """The last drift check's report, for an admin."""
        self._admin(username, "only admins read the drift report")
        return self.store.last_report()

    def dashboard_for(
        self,
        username: str,
        *,
        period: metrics.Period,
        days: int | None,
        owner_names: Mapping[str, str] | None = None,
    ) -> metrics.Dashboard:
        """The dashboard of an owner, approver or admin over the last ``days`` (None: all).

        It reads what it charts, not the whole store: the pending requests, those a person
        decided in the window, the outcome and failure rows of the window, and the failed
        messages; owners see those about their products, admins all.
        """
        from mesh import metrics

        user = self._user(username)
        if not user.can_approve:
            raise Forbidden(
                f"User {user.username} is not an owner, approver or admin; only they have "
                "a dashboard."
            )
        now = self.clock()
        since = now - timedelta(days=days) if days else None
        after = iso(since) if since is not None else None
        pending = self.store.requests(statuses=[Status.PENDING_APPROVAL])
        decided = self.store.requests(decided_since=after or "")
        events = self.store.audit(filters=AuditFilters(actions=DASHBOARD_ACTIONS, since=after))
        failed = self.store.notifications(statuses=["failed"])
        visible = self._visible_ids(user, [e.request_id for e in events], failed)
        pending = metrics.visible_requests(pending, user)
        decided = metrics.visible_requests(decided, user)
        mine = [e for e in events if e.request_id is not None and visible(e.request_id)]
        by_product = metrics.pending_by_product(pending, now=now)
        return metrics.Dashboard(
            headline=metrics.Headline(
                pending=int(by_product["pending"].sum()),
                oldest_pending_hours=(
                    None if by_product.empty else float(by_product["oldest_hours"].max())
                ),
                median_decision_hours=metrics.median_decision_hours(decided, since=since),
                failing_notifications=sum(
                    1 for n in failed if n["request_id"] and visible(n["request_id"])
                ),
            ),
            pending_by_product=by_product,
            pending_by_owner=metrics.pending_by_owner(pending, now=now, owner_names=owner_names),
            time_to_decision=metrics.time_to_decision(decided, period=period, since=since),
            outcomes=metrics.outcomes_over_time(mine, period=period, now=now, since=since),
            notification_failures=metrics.notification_failures(
                mine, period=period, now=now, since=since
            ),
        )

    def _visible_ids(
        self, user: User, event_ids: Sequence[str | None], failed: Sequence[dict[str, Any]]
    ) -> Callable[[str], bool]:
        """Whether a request id is about a product ``user`` owns (admins: every request)."""
        if user.is_admin:
            return lambda _: True
        ids = {i for i in event_ids if i} | {n["request_id"] for n in failed if n["request_id"]}
        owners = self.store.owner_accounts(ids)
        return lambda request_id: policy.owns(user, owners.get(request_id))

    def _admin(self, username: str, why: str) -> None:
        user = self._user(username)
        if not user.is_admin:
            raise Forbidden(f"User {user.username} is not an admin; {why}.")

    def _auditor(self, username: str) -> None:
        user = self._user(username)
        if not user.is_admin:
            raise Forbidden(
                f"User {user.username} is not an admin; only admins read the audit log."
            )
