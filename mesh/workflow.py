"""Use cases: submit, approve, deny, cancel, retry, and the reads the pages and CLI need.

Every permission check happens here, not only in the pages. When several refusals apply,
the first in this order wins: unknown user, malformed input, something missing, unowned
database, not allowed, wrong state or duplicate.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from mesh import approval, policy
from mesh.approval import ApprovalPolicy, Verdict
from mesh.catalog_index import CatalogIndex, IndexedCatalog
from mesh.errors import (
    AwsFailure,
    Conflict,
    Forbidden,
    InFlight,
    InvalidInput,
    MeshError,
    NotFound,
    PolicyMismatch,
    failure_of,
    in_flight,
)
from mesh.models import (
    OWNER_STEP,
    AccessRequest,
    Action,
    AuditEvent,
    Database,
    EntryOutcome,
    GrantSpec,
    Scope,
    Status,
    Step,
    Table,
    User,
)
from mesh.store import (
    AlreadyApproved,
    Approval,
    AuditFilters,
    AuditRow,
    NewEvent,
    PendingRow,
    PolicyRecord,
    Store,
)

if TYPE_CHECKING:
    from mesh.links import LinkClaim, LinkSigner
    from mesh.outbox import Outbox

log = logging.getLogger(__name__)

POLICY_ACTOR = "policy"
NO_OWNER = "this data product has no owner; ask a catalog admin to set data_owner"


class Catalog(Protocol):
    catalog_id: str

    def database(self, name: str) -> Database: ...
    def table(self, database: str, name: str) -> Table: ...
    def tables(self, database: str) -> list[Table]: ...


class Grants(Protocol):
    def grant(self, spec: GrantSpec) -> dict[str, Any]: ...
    def batch_grant(self, specs: Sequence[GrantSpec]) -> list[EntryOutcome]: ...
    def batch_revoke(self, specs: Sequence[GrantSpec]) -> list[EntryOutcome]: ...
    def holds(self, spec: GrantSpec) -> bool: ...
    def revoke(self, spec: GrantSpec) -> dict[str, Any]: ...
    def list_permissions(
        self, *, principal: str | None = None, resource: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]: ...


class Users(Protocol):
    def get(self, username: str | None) -> User | None: ...
    def everyone(self) -> list[User]: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_request_id() -> str:
    return "r-" + secrets.token_hex(4)


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
class DecisionOutcome:
    """What one decision of a bulk decision did: the request as it ended, or the refusal.

    ``exit_code`` is the refusal's (the CLI's table), 1 for a grant that failed, else 0.
    """

    request_id: str
    request: AccessRequest | None
    error: str | None = None
    exit_code: int = 0


class Marketplace:
    """The marketplace's use cases over a store, a catalog, Lake Formation and the users."""

    def __init__(
        self,
        *,
        store: Store,
        catalog: Catalog,
        grants: Grants,
        users: Users,
        clock: Callable[[], datetime] = utc_now,
        stale_granting: int = 300,
        outbox: Outbox | None = None,
        rules: ApprovalPolicy | None = None,
        links: LinkSigner | None = None,
        policy: PolicyRecord | None = None,
        index: CatalogIndex | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.index = index  # the catalog as last synced: explain and the pages read it
        self.grants = grants
        self.users = users
        self.clock = clock
        self.stale_granting = stale_granting
        self.outbox = outbox
        self.rules = rules or approval.DEFAULT
        self.links = links
        self.policy = policy  # this process's policy, as the store records policies

    def check_policy(self) -> None:
        """Refuse to change requests unless this process runs the policy in force.

        Two processes on one store with different policies would judge one request two
        ways; the store records the policy in force, and only it may act. Reads still work.
        """
        if self.policy is None:
            return
        in_force = self.store.policy_in_force()
        if in_force is None or in_force.fingerprint == self.policy.fingerprint:
            return
        since = f", activated by {in_force.activated_by} at {in_force.activated_at}"
        raise PolicyMismatch(
            f"This process runs approval policy {self.policy.source} ({self.policy.fingerprint}), "
            f"but the policy in force is {in_force.source} ({in_force.fingerprint}{since}), "
            "so it may read but not submit, decide, retry or run the periodic job: start it "
            "with MESH_POLICY set to the policy in force, or switch deliberately with "
            "`mesh policy activate`."
        )

    def _notify(self, kind: str, request: AccessRequest, **options: Any) -> None:
        """Hand a message to the outbox; a failure there never undoes the request."""
        if self.outbox is None:
            return
        try:
            getattr(self.outbox, kind)(request, **options)
        except Exception:  # the outbox records causes; this is the last guard
            log.exception("could not queue a %s notification for %s", kind, request.id)

    # Helpers --------------------------------------------------------------------------

    def _user(self, username: str | None) -> User:
        user = self.users.get(username)
        if user is None:
            raise Forbidden(f"There is no user {username!r} in the users file.")
        return user

    def _now(self) -> str:
        return iso(self.clock())

    def _event(
        self, actor: str, action: Action, request: AccessRequest, **details: Any
    ) -> NewEvent:
        return NewEvent(
            at=self._now(),
            actor=actor,
            action=action.value,
            request_id=request.id,
            scope=str(request.scope),
            details=details,
        )

    def _request(self, request_id: str) -> AccessRequest:
        if not (request_id or "").strip():
            raise InvalidInput("Name the request (its id, such as r-1a2b3c4d).")
        request = self.store.get(request_id.strip())
        if request is None:
            raise NotFound(f"There is no request {request_id!r}.")
        return request

    def _owner_now(self, request: AccessRequest) -> str | None:
        """The product's owner as the catalog says now (decisions never trust a cache)."""
        try:
            return self.catalog.database(request.database).owner_account
        except NotFound:
            return None

    def _catalog_view(self) -> Catalog:
        """Where explain reads the catalog: the index once synced, else Glue itself."""
        if self.index is None or self.index.judged_with() is None:
            return self.catalog
        return IndexedCatalog(self.index, catalog_id=self.catalog.catalog_id)

    def _refresh_index(
        self, database: Database, tables: Sequence[Table], *, whole: bool
    ) -> list[str]:
        """Put a live read of one scope into the index; what it changed there, if anything.

        The live read has decided already; a failure to write the index is only logged.
        """
        if self.index is None or self.index.judged_with() is None:
            return []
        try:
            return self.index.refresh_scope(database, tables, whole=whole, at=self._now())
        except Exception:  # the index catches up at the next sync
            log.exception("could not refresh the catalog index for %s", database.name)
            return []

    def _moved_on(self, request_id: str, verb: str) -> Conflict:
        current = self.store.get(request_id)
        status = current.status.value if current else "gone"
        return Conflict(
            f"Request {request_id} cannot be {verb}: it is {status}, no longer pending approval."
        )

    # Submit ---------------------------------------------------------------------------

    def submit(
        self,
        username: str,
        *,
        database: str,
        table: str | None,
        account: str,
        reason: str,
        duration: timedelta | None = None,
        until: date | None = None,
        columns: Sequence[str] | None = None,
        on_catalog_change: Callable[[str], None] | None = None,
    ) -> AccessRequest:
        """Validate a request, evaluate the policy, store it, and grant at once if allowed.

        ``duration`` or ``until`` bound the access in time; it is revoked when it expires.
        Glue is read live for the scope, and wins over the catalog index; that read then
        refreshes the index, and ``on_catalog_change`` hears how the index had differed.
        """
        user = self._user(username)
        self.check_policy()
        database, table, account, reason = _clean_scope(database, table, account, reason)
        policy.check_period(duration, until, today=self.clock().date())
        if account == self.catalog.catalog_id or set(account) == {"0"}:
            what = (
                "the central catalog's own account, which owns the catalog and needs no grant"
                if account == self.catalog.catalog_id
                else "not a real AWS account"
            )
            raise InvalidInput(
                f"Account {account} is {what}; request access for a consumer account."
            )
        if columns is not None and table is None:
            raise InvalidInput("A whole-database request cannot name columns; request a table.")
        db = self.catalog.database(database)
        tables = [self.catalog.table(database, table)] if table else self.catalog.tables(database)
        changed = self._refresh_index(db, tables, whole=table is None)
        if changed and on_catalog_change is not None:
            on_catalog_change(
                "The catalog had changed since it was last synced, and this request was "
                "judged on what Glue says now: " + "; ".join(changed) + "."
            )
        subset = policy.check_columns(tables[0], columns) if columns is not None else None
        if db.owner_account is None:
            raise InvalidInput(NO_OWNER[0].upper() + NO_OWNER[1:] + ".")
        if not user.can_request:
            raise Forbidden(
                f"User {user.username} has no consumer accounts to request for; ask "
                "an admin to add accounts to your user."
            )
        if not policy.may_request_for(user, account):
            raise Forbidden(
                f"Account {account} is not one of your consumer accounts "
                f"({', '.join(user.accounts) or 'none'})."
            )
        # Glue matches names case-insensitively: store them as the catalog spells them.
        database, table = db.name, (tables[0].name if table else None)
        scope = Scope(database=database, table=table, columns=subset)
        verdict = approval.evaluate(self.rules, scope, db, tables, account=account)
        approval.check_request(
            verdict, duration=duration, until=until, reason=reason, today=self.clock().date()
        )
        stuck = approval.unfillable(
            verdict.steps,
            requester=user.username,
            users=self.users.everyone(),
            owner=db.owner_account,
        )
        if stuck is not None:
            raise InvalidInput(
                f"This request could never be approved: {stuck}. Nothing was stored; ask a "
                "platform admin to fix the approval policy's groups or the users file."
            )
        now = self._now()
        request = AccessRequest(
            id=new_request_id(),
            status=Status.PENDING_APPROVAL if verdict.needs_approval else Status.GRANTING,
            database=database,
            table=table,
            account=account,
            requester=user.username,
            reason=reason,
            policy_reason=verdict.reason,
            needs_approval=verdict.needs_approval,
            pii_columns=verdict.sensitive_columns,
            owner_account=db.owner_account,
            level=verdict.level,
            plan=verdict.steps,
            step_started_at=now,
            created_at=now,
            updated_at=now,
            duration_seconds=int(duration.total_seconds()) if duration else None,
            expires_on=until.isoformat() if until else None,
            columns=subset,
        )
        events = [
            self._event(
                user.username,
                Action.REQUEST_SUBMITTED,
                request,
                account=account,
                reason=reason,
                owner_account=db.owner_account,
            ),
            self._policy_event(request, verdict),
        ]
        existing = self.store.add_request(request, events)
        if existing is not None and self.take_over(existing, actor=user.username) is not None:
            # The twin was stuck granting after a crash: finished now, it is either granted
            # (and refuses this one) or failed (and makes way for it).
            existing = self.store.add_request(request, events)
        if existing is not None:
            raise Conflict(
                f"An identical request is already {existing.status.value}: {existing.id}."
            )
        if verdict.needs_approval:
            self._notify("approval_request", request)
            return request
        return self._grant(request, actor=POLICY_ACTOR)

    def _policy_event(self, request: AccessRequest, verdict: Verdict, **more: Any) -> NewEvent:
        return self._event(
            POLICY_ACTOR,
            Action.POLICY_EVALUATED,
            request,
            needs_approval=verdict.needs_approval,
            reason=verdict.reason,
            pii_columns=list(verdict.sensitive_columns),
            level=verdict.level,
            steps=[step.to_json() for step in verdict.steps],
            **more,
        )

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

    # Decisions ------------------------------------------------------------------------

    def _authorise_decision(
        self, user: User, request_id: str, *, verb: str = "approve"
    ) -> tuple[AccessRequest, str | None]:
        """The pending request ``user`` may decide now, and its owner as the catalog says."""
        self.check_policy()
        request = self._request(request_id)
        if user.username == request.requester:
            raise Forbidden(f"You cannot decide your own request {request.id}.")
        # "Not allowed" comes before "wrong state": judge a decided request as if it waited
        # at the step it was at.
        waiting = replace(
            request, status=Status.PENDING_APPROVAL, plan=request.plan or (OWNER_STEP,)
        )
        # Any deny ends a request: an admin may always deny, as a way out of a stuck one.
        owner = self._owner_now(request)
        allowed = approval.in_step(self.rules, user, waiting, owner) or (
            verb == "deny" and user.is_admin
        )
        if not allowed:
            where = (
                self.progress(waiting)
                if request.status is Status.PENDING_APPROVAL
                else f"only its approvers could, and it is {request.status.value} now"
            )
            raise Forbidden(f"User {user.username} may not decide request {request.id}: {where}.")
        if request.status is not Status.PENDING_APPROVAL:
            raise self._moved_on(request.id, "decided")
        if verb == "approve" and any(
            a.username == user.username for a in self.store.approvals(request.id)
        ):
            raise Conflict(
                f"You have already approved request {request.id}; one person fills one "
                "place, so someone else must give the next approval."
            )
        return request, owner

    def needed(self, request: AccessRequest, step: Step, owner: str | None) -> int:
        """How many approvals fill ``step`` now; "all" counts the approvers but the requester."""
        return approval.needed(
            step, requester=request.requester, users=self.users.everyone(), owner=owner
        )

    def progress(self, request: AccessRequest, done: Sequence[Approval] | None = None) -> str:
        """Where a request stands, such as "step 2 of 2: owner approved (sam); waiting for
        privacy-office, 0 of 1"."""
        step = request.current_step
        if step is None:
            return request.status.value.replace("_", " ")
        done = self.store.approvals(request.id) if done is None else done
        parts = [f"step {request.step + 1} of {len(request.plan)}"]
        before = [
            f"{s.approvers} approved ({', '.join(a.label for a in done if a.step == i)})"
            for i, s in enumerate(request.plan[: request.step])
        ]
        have = len([a for a in done if a.step == request.step])
        need = self.needed(request, step, request.owner_account)
        waiting = f"waiting for {step.approvers}, {have} of {need}"
        if request.escalated_at is not None and step.escalate_to:
            waiting += f" (escalated to {step.escalate_to} too)"
        return f"{parts[0]}: " + "; ".join([*before, waiting])

    def approve(self, request_id: str, username: str, *, comment: str = "") -> AccessRequest:
        """Add an approval to the current step; the last one needed grants the request.

        The approval, the count and the move to the next step (or to granting) happen in one
        transaction, so of two approvers at once exactly one completes the step.
        """
        user = self._user(username)
        updated, ready = self._record_approval(user, request_id, _clean_comment(comment))
        if ready:
            return self._grant(updated, actor=user.username)
        return updated

    def _record_approval(
        self, user: User, request_id: str, comment: str
    ) -> tuple[AccessRequest, bool]:
        """Record one approval; True when it completed the last step (the request is granting).

        The approval, the count and the move to the next step (or to granting) happen in one
        transaction, so of two approvers at once exactly one completes the step.
        """
        request, owner = self._authorise_decision(user, request_id)
        step = request.current_step
        if step is None:  # _authorise_decision saw it pending; a legacy row without a plan
            raise self._moved_on(request.id, "approved")
        now = self._now()
        last = request.step >= len(request.plan) - 1
        needed = self.needed(request, step, owner)
        acting_as = approval.capacity(user, request, owner)
        done = self.store.approvals(request.id)
        this = Approval(request_id=request.id, step=request.step, username=user.username, at=now)
        stuck = approval.unfillable(
            request.plan,
            requester=request.requester,
            users=self.users.everyone(),
            owner=owner,
            step=request.step,
            done=[*done, this],
        )
        if stuck is not None:
            raise Conflict(
                f"Your approval would leave request {request.id} with nobody to finish it: "
                f"{stuck}. Let another approver of this step approve it."
            )
        where = {
            "step": request.step + 1,
            "of": len(request.plan),
            "approvers": step.approvers,
            "as": acting_as,
        }
        try:
            outcome = self.store.record_approval(
                Approval(
                    request_id=request.id,
                    step=request.step,
                    username=user.username,
                    at=now,
                    comment=comment,
                    acting_as=acting_as,
                ),
                needed=needed,
                last_step=last,
                granting={
                    "status": Status.GRANTING,
                    "decided_by": user.username,
                    "decided_at": now,
                    "comment": comment,
                    "updated_at": now,
                },
                events=[
                    self._event(user.username, Action.APPROVED, request, comment=comment, **where)
                ],
                # The last step's completion shows as the grant that follows it.
                step_events=[]
                if last
                else [self._event(POLICY_ACTOR, Action.STEP_COMPLETED, request, **where)],
            )
        except AlreadyApproved:
            raise Conflict(
                f"You have already approved request {request.id}; one person fills one place."
            ) from None
        if outcome is None:
            current = self.store.get(request.id)
            if current is not None and current.status is Status.PENDING_APPROVAL:
                raise Conflict(
                    f"Request {request.id} moved on while you approved it: another approver "
                    f"completed step {request.step + 1}; look at it again "
                    f"({self.progress(current)})."
                )
            raise self._moved_on(request.id, "approved")
        updated, completed = outcome
        if completed and not last:
            self._notify("approval_request", updated)
        return updated, completed and last

    def deny(self, request_id: str, username: str, *, comment: str) -> AccessRequest:
        user = self._user(username)
        comment = _clean_comment(comment)
        if not comment:
            raise InvalidInput("A denial needs a comment that tells the requester why.")
        request, _ = self._authorise_decision(user, request_id, verb="deny")
        now = self._now()
        decided = self.store.transition(
            request.id,
            allowed_from=[Status.PENDING_APPROVAL],
            changes={
                "status": Status.DENIED,
                "decided_by": user.username,
                "decided_at": now,
                "comment": comment,
                "updated_at": now,
                "decision_seen": False,
            },
            events=[self._event(user.username, Action.DENIED, request, comment=comment)],
        )
        if decided is None:
            raise self._moved_on(request.id, "denied")
        self._notify("decision", decided)
        return decided

    def decide_many(
        self, request_ids: Sequence[str], username: str, *, verb: str, comment: str = ""
    ) -> list[DecisionOutcome]:
        """Approve or deny several requests with one comment; one outcome per request, in order.

        Each decision is its own exactly-once transaction, as in approve and deny, and a
        refusal of one never stops the others. The requests whose last step these approvals
        complete are granted together (see ``_grant_many``): n approvals make about n/20
        Lake Formation calls instead of n.
        """
        if verb not in ("approve", "deny"):
            raise InvalidInput(f"{verb!r} is not a decision; use approve or deny.")
        user = self._user(username)
        comment = _clean_comment(comment)
        if verb == "deny" and not comment:
            raise InvalidInput("A denial needs a comment that tells the requester why.")
        ids = list(dict.fromkeys((i or "").strip() for i in request_ids))
        if not ids:
            raise InvalidInput("Name at least one request (its id, such as r-1a2b3c4d).")
        results: dict[str, DecisionOutcome] = {}
        granting: list[AccessRequest] = []
        for request_id in ids:
            try:
                if verb == "deny":
                    decided = self.deny(request_id, user.username, comment=comment)
                else:
                    decided, ready = self._record_approval(user, request_id, comment)
                    if ready:
                        granting.append(decided)
            except MeshError as exc:
                results[request_id] = DecisionOutcome(
                    request_id=request_id, request=None, error=exc.message, exit_code=exc.exit_code
                )
                continue
            results[request_id] = DecisionOutcome(request_id=request_id, request=decided)
        for request_id, ended in self._grant_many(granting, actor=user.username).items():
            if isinstance(ended, MeshError):
                results[request_id] = DecisionOutcome(
                    request_id=request_id,
                    request=self.store.get(request_id),
                    error=ended.message,
                    exit_code=ended.exit_code,
                )
            else:
                failed = ended.status is Status.FAILED
                results[request_id] = DecisionOutcome(
                    request_id=request_id,
                    request=ended,
                    error=ended.error if failed else None,
                    exit_code=1 if failed else 0,
                )
        return [results[i] for i in ids]

    def cancel(self, request_id: str, username: str) -> AccessRequest:
        user = self._user(username)
        request = self._request(request_id)
        if user.username != request.requester:
            raise Forbidden(
                f"Only {request.requester}, who made request {request.id}, can cancel it."
            )
        if request.status is not Status.PENDING_APPROVAL:
            raise self._moved_on(request.id, "cancelled")
        cancelled = self.store.transition(
            request.id,
            allowed_from=[Status.PENDING_APPROVAL],
            changes={"status": Status.CANCELLED, "updated_at": self._now()},
            events=[self._event(user.username, Action.CANCELLED, request)],
        )
        if cancelled is None:
            raise self._moved_on(request.id, "cancelled")
        return cancelled

    def retry(self, request_id: str, username: str) -> AccessRequest:
        """Re-run an approved request's remaining grants; it never asks for approval again."""
        user = self._user(username)
        self.check_policy()
        request = self._request(request_id)
        if not policy.may_retry(user, request, self._owner_now(request)):
            raise Forbidden(
                f"User {user.username} may not retry request {request.id}: the "
                "requester, an owner of the product or an admin can."
            )
        retryable = [Status.FAILED]
        if request.status is Status.GRANTING and self._is_stale(request):
            retryable.append(Status.GRANTING)
        if request.status not in retryable:
            wait = (
                f" A request stuck granting can be retried {self.stale_granting} seconds "
                "after its last update."
                if request.status is Status.GRANTING
                else ""
            )
            raise Conflict(
                f"Request {request.id} is {request.status.value}; only a failed "
                f"request (or one stuck granting) can be retried.{wait}"
            )
        resumed = self.store.transition(
            request.id,
            allowed_from=retryable,
            unchanged_since=request.updated_at,
            changes={"status": Status.GRANTING, "updated_at": self._now()},
            events=[
                self._event(
                    user.username,
                    Action.RETRY_REQUESTED,
                    request,
                    previous_error=request.error_code,
                    already_granted=list(request.grants_done),
                )
            ],
        )
        if resumed is None:
            raise Conflict(f"Request {request.id} changed while retrying; look at it again.")
        return self._grant(resumed, actor=user.username, recheck=True, verify=True)

    def _is_stale(self, request: AccessRequest) -> bool:
        updated = datetime.fromisoformat(request.updated_at.replace("Z", "+00:00"))
        return self.clock() - updated > timedelta(seconds=self.stale_granting)

    # Granting -------------------------------------------------------------------------

    def grant_plan(self, request: AccessRequest) -> tuple[GrantSpec, ...]:
        return policy.grants_for(
            request.scope, account=request.account, catalog_id=self.catalog.catalog_id
        )

    def take_over(self, request: AccessRequest, *, actor: str) -> AccessRequest | None:
        """Finish a grant whose process stopped (a crash, a kill, a lost store write).

        The stale ``granting`` request is claimed with a conditional update, so of two
        processes only one takes it. Lake Formation is then read for each planned grant:
        what it already holds is recorded as done, only the rest is made, and the request
        ends ``granted`` or ``failed`` with its cause. None when it was not stale, or
        someone else claimed it first.
        """
        if request.status is not Status.GRANTING or not self._is_stale(request):
            return None
        claimed = self.store.transition(
            request.id,
            allowed_from=[Status.GRANTING],
            unchanged_since=request.updated_at,
            changes={"updated_at": self._now()},
            events=[
                self._event(
                    actor,
                    Action.TAKEN_OVER,
                    request,
                    status=request.status.value,
                    idle_since=request.updated_at,
                    grants_done=list(request.grants_done),
                )
            ],
        )
        if claimed is None:
            return None
        return self._grant(claimed, actor=actor, recheck=True, verify=True)

    def _found_held(
        self, request: AccessRequest, done: list[str], *, actor: str
    ) -> AccessRequest | None:
        """Record as done the planned grants Lake Formation already holds.

        Returns the failed request when Lake Formation cannot be read (the job tries again
        later), or None when ``done`` is up to date.
        """
        for spec in self.grant_plan(request):
            if spec.key in done:
                continue
            try:
                held = self.grants.holds(spec)
            except Exception as exc:  # noqa: BLE001 - any failure must leave a named state
                return self._fail(request, actor=actor, exc=exc, done=done, made=[], call={})
            if held:
                done.append(spec.key)
                self.store.transition(
                    request.id,
                    allowed_from=[Status.GRANTING],
                    changes={"grants_done": done, "updated_at": self._now()},
                    events=[self._event(actor, Action.GRANT_FOUND, request, call=spec.to_api())],
                )
        return None

    def _grant(
        self,
        request: AccessRequest,
        *,
        actor: str,
        recheck: bool = False,
        verify: bool = False,
    ) -> AccessRequest:
        """Make the grants not yet done, recording intent before each call and outcome after.

        A database request needs two calls. Each success is recorded at once, so a failure
        of the second leaves an exact record of what was granted, and retry completes it.
        ``verify`` first records what Lake Formation already holds (a grant made just before
        a crash, or a call that timed out after it was applied), so only the rest is made.
        A failure to record an outcome leaves the request ``granting``, for the periodic
        job's takeover; it is raised as ``InFlight``, never as a bare failure.
        """
        try:
            return self._grant_steps(request, actor=actor, recheck=recheck, verify=verify)
        except InFlight:
            raise
        except Exception as exc:
            raise in_flight(
                request.id,
                exc,
                doing="granting",
                after=self.stale_granting,
                then="it reads Lake Formation first, and you can also retry it then",
            ) from exc

    def _grant_steps(
        self, request: AccessRequest, *, actor: str, recheck: bool, verify: bool
    ) -> AccessRequest:
        done = list(request.grants_done)
        if verify:
            failed = self._found_held(request, done, actor=actor)
            if failed is not None:
                return failed
        if recheck and not request.needs_approval and not done:
            rechecked = self._recheck_policy(request, actor=actor)
            if rechecked is not None:
                return rechecked
        made: list[dict[str, Any]] = []
        for spec in self.grant_plan(request):
            if spec.key in done:
                continue
            self.store.append(
                self._event(
                    actor,
                    Action.GRANT_ATTEMPTED,
                    request,
                    call=spec.to_api(),
                    attempt=request.attempts + 1,
                )
            )
            try:
                made.append(self.grants.grant(spec))
            except Exception as exc:  # noqa: BLE001 - any failure must leave a named state
                return self._fail(
                    request, actor=actor, exc=exc, done=done, made=made, call=spec.to_api()
                )
            done.append(spec.key)
            self.store.transition(
                request.id,
                allowed_from=[Status.GRANTING],
                changes={"grants_done": done, "updated_at": self._now()},
                events=[],
            )
        return self._granted(request, done=done, made=made, actor=actor)

    def _granted(
        self, request: AccessRequest, *, done: list[str], made: list[dict[str, Any]], actor: str
    ) -> AccessRequest:
        """Record a request whose grants are all made as granted, with its expiry."""
        now = self.clock()
        expires = policy.expiry(now, request.duration_seconds, request.expires_on)
        seen = actor in (POLICY_ACTOR, request.requester)
        granted = self.store.transition(
            request.id,
            allowed_from=[Status.GRANTING],
            changes={
                "status": Status.GRANTED,
                "grants_done": done,
                "error_code": None,
                "error": None,
                "attempts": request.attempts + 1,
                "updated_at": iso(now),
                "granted_at": request.granted_at or iso(now),
                "expires_at": request.expires_at or (iso(expires) if expires else None),
                "decision_seen": seen,
            },
            events=[
                self._event(
                    actor,
                    Action.GRANT_SUCCEEDED,
                    request,
                    calls=made,
                    grants=done,
                    expires_at=iso(expires) if expires else None,
                )
            ],
        )
        if granted is not None and not seen:
            self._notify("decision", granted)
        return granted or self._request(request.id)

    def _grant_many(
        self, requests: Sequence[AccessRequest], *, actor: str
    ) -> dict[str, AccessRequest | MeshError]:
        """Make freshly approved requests' grants together, in batch calls of 20 entries.

        Every request's intent (a ``grant_attempted`` row per call) is recorded before the
        batch, and each request's outcome after it, on its own: an entry Lake Formation
        refused fails its own request with the entry's error code, the others are granted.
        No call is made inside a transaction. A request whose outcome could not be recorded
        stays ``granting`` and comes back as ``InFlight`` (the periodic job's takeover reads
        Lake Formation before granting again); retries and takeovers use ``_grant``.
        """
        plans = {
            r.id: [spec for spec in self.grant_plan(r) if spec.key not in r.grants_done]
            for r in requests
        }
        ended: dict[str, AccessRequest | MeshError] = {}
        try:
            self.store.append(
                *(
                    self._event(
                        actor,
                        Action.GRANT_ATTEMPTED,
                        r,
                        call=spec.to_api(),
                        attempt=r.attempts + 1,
                        via="BatchGrantPermissions",
                    )
                    for r in requests
                    for spec in plans[r.id]
                )
            )
        except Exception as exc:  # noqa: BLE001 - nothing was sent: each waits for the job
            return {r.id: self._in_flight(r.id, exc) for r in requests}
        specs = [spec for r in requests for spec in plans[r.id]]
        outcomes: list[tuple[GrantSpec, Exception | None]]
        try:
            outcomes = (
                [(o.spec, o.failure) for o in self.grants.batch_grant(specs)] if specs else []
            )
        except Exception as exc:  # noqa: BLE001 - the adapter reports AWS failures per entry
            outcomes = [(spec, exc) for spec in specs]
        at = 0
        for request in requests:
            mine, at = outcomes[at : at + len(plans[request.id])], at + len(plans[request.id])
            try:
                ended[request.id] = self._after_batch(request, mine, actor=actor)
            except Exception as exc:  # noqa: BLE001 - the outcome could not be recorded
                ended[request.id] = self._in_flight(request.id, exc)
        return ended

    def _after_batch(
        self,
        request: AccessRequest,
        outcomes: Sequence[tuple[GrantSpec, Exception | None]],
        *,
        actor: str,
    ) -> AccessRequest:
        done = [*request.grants_done, *(spec.key for spec, failure in outcomes if failure is None)]
        made = [spec.to_api() for spec, failure in outcomes if failure is None]
        for spec, failure in outcomes:
            if failure is not None:
                return self._fail(
                    request, actor=actor, exc=failure, done=done, made=made, call=spec.to_api()
                )
        return self._granted(request, done=done, made=made, actor=actor)

    def _in_flight(self, request_id: str, exc: Exception) -> InFlight:
        if isinstance(exc, InFlight):
            return exc
        return in_flight(
            request_id,
            exc,
            doing="granting",
            after=self.stale_granting,
            then="it reads Lake Formation first, and you can also retry it then",
        )

    def _recheck_policy(self, request: AccessRequest, *, actor: str) -> AccessRequest | None:
        """Before re-running a grant nobody approved, ask the policy again.

        The catalog may have changed since the policy granted it at once (a column flagged as
        PII since); such a request now waits for an owner instead of being shared.
        """
        try:
            db = self.catalog.database(request.database)
            tables = (
                [self.catalog.table(request.database, request.table)]
                if request.table
                else self.catalog.tables(request.database)
            )
        except NotFound:
            return None  # the grant itself will fail and say what is missing
        except MeshError as exc:  # Glue could not be read: fail with the cause, retry later
            return self._fail(request, actor=actor, exc=exc, done=[], made=[], call={})
        self._refresh_index(db, tables, whole=request.table is None)
        verdict = approval.evaluate(self.rules, request.scope, db, tables, account=request.account)
        if not verdict.needs_approval:
            return None
        problem = self._unmet(request, verdict, owner=db.owner_account)
        if problem is not None:
            return self._policy_refused(request, verdict, problem, actor=actor)
        pending = self.store.transition(
            request.id,
            allowed_from=[Status.GRANTING],
            changes={
                "status": Status.PENDING_APPROVAL,
                "needs_approval": True,
                "policy_reason": verdict.reason,
                "pii_columns": verdict.sensitive_columns,
                "owner_account": db.owner_account,
                "level": verdict.level,
                "plan": verdict.steps,
                "step": 0,
                "step_started_at": self._now(),
                "escalated_at": None,
                "error_code": None,
                "error": None,
                "updated_at": self._now(),
            },
            events=[self._policy_event(request, verdict, on_retry_by=actor)],
        )
        if pending is not None:
            self._notify("approval_request", pending)
        return pending

    def _unmet(self, request: AccessRequest, verdict: Verdict, *, owner: str | None) -> str | None:
        """What keeps an existing request from the approval the policy now asks for."""
        try:
            approval.check_request(
                verdict,
                duration=timedelta(seconds=request.duration_seconds)
                if request.duration_seconds
                else None,
                until=date.fromisoformat(request.expires_on) if request.expires_on else None,
                reason=request.reason,
                today=self.clock().date(),
            )
        except InvalidInput as exc:
            return exc.message
        stuck = approval.unfillable(
            verdict.steps, requester=request.requester, users=self.users.everyone(), owner=owner
        )
        return f"It could never be approved: {stuck}." if stuck else None

    def _policy_refused(
        self, request: AccessRequest, verdict: Verdict, problem: str, *, actor: str
    ) -> AccessRequest:
        message = (
            f"The approval policy now puts this scope at level {verdict.level} and asks for "
            f"approval, which this request cannot get. {problem} Make a new request."
        )
        failed = self.store.transition(
            request.id,
            allowed_from=[Status.GRANTING],
            changes={
                "status": Status.FAILED,
                "error_code": "PolicyChanged",
                "error": message,
                "updated_at": self._now(),
            },
            events=[self._policy_event(request, verdict, on_retry_by=actor, refused=message)],
        )
        return failed or self._request(request.id)

    def _fail(
        self,
        request: AccessRequest,
        *,
        actor: str,
        exc: Exception,
        done: list[str],
        made: list[dict[str, Any]],
        call: dict[str, Any],
    ) -> AccessRequest:
        code, message = failure_of(exc, f"An unexpected error stopped the grant ({exc}).")
        if isinstance(exc, AwsFailure) or not isinstance(exc, MeshError):
            message += " Fix the cause, then retry the request."
        failed = self.store.transition(
            request.id,
            allowed_from=[Status.GRANTING],
            changes={
                "status": Status.FAILED,
                "grants_done": done,
                "error_code": code,
                "error": message,
                "attempts": request.attempts + 1,
                "updated_at": self._now(),
                "decision_seen": actor in (POLICY_ACTOR, request.requester),
            },
            events=[
                self._event(
                    actor,
                    Action.GRANT_FAILED,
                    request,
                    error_code=code,
                    error=message,
                    failed_call=call,
                    calls=made,
                    granted_so_far=done,
                )
            ],
        )
        return failed or self._request(request.id)

    # Decision links -------------------------------------------------------------------------

    def open_link(
        self, token: str, username: str, *, record: bool = True
    ) -> tuple[LinkClaim, AccessRequest]:
        """Read a decision link for ``username``; it decides nothing by itself.

        ``record`` audits the opening; a page shown again in the same session passes False.
        """
        from mesh.links import InvalidLink

        user = self._user(username)
        if self.links is None:
            raise InvalidLink("Decision links are not enabled on this server.")
        claim = self.links.read(token)
        if self.store.link_used(claim.nonce):
            raise InvalidLink(
                "This decision link was already used; open the request from the "
                "Approvals page instead."
            )
        request = self._request(claim.request_id)
        if record:
            self.store.append(
                self._event(
                    user.username, Action.LINK_OPENED, request, link_action=claim.action.value
                )
            )
        return claim, request

    def may_decide(self, username: str, request_id: str, *, verb: str = "approve") -> str | None:
        """Why ``username`` may not ``verb`` the request now, or None when they may.

        Reads only: a page asks before it offers to confirm a decision link, so the wrong
        person is told at once instead of after the click.
        """
        user = self._user(username)
        try:
            self._authorise_decision(user, request_id, verb=verb)
        except (Forbidden, Conflict) as exc:
            return exc.message
        return None

    def decide_by_link(
        self, token: str, username: str, *, action: str, comment: str = ""
    ) -> AccessRequest:
        """Confirm the decision a link proposes: same checks as any decision, once per link."""
        from mesh.links import InvalidLink

        user = self._user(username)
        comment = _clean_comment(comment)
        claim, request = self.open_link(token, username, record=False)
        if claim.action.value != action:
            raise InvalidLink(
                f"This link is for {claim.action.value}, not {action}; nothing was changed."
            )
        if action == "deny" and not comment:
            raise InvalidInput("A denial needs a comment that tells the requester why.")
        self._authorise_decision(user, request.id, verb=action)
        if not self.store.use_link(
            claim.nonce, request_id=request.id, action=action, used_by=user.username, at=self._now()
        ):
            raise InvalidLink("This decision link was already used; nothing was changed.")
        if action == "approve":
            return self.approve(request.id, user.username, comment=comment)
        return self.deny(request.id, user.username, comment=comment)

    def mark_seen(self, username: str, request_ids: Sequence[str]) -> int:
        """Clear the "new" marker of decisions the requester has now seen."""
        return self.store.mark_seen(self._user(username).username, request_ids)

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
        """Failed requests of products ``username`` owns (all, for admins), to retry."""
        user = self._user(username)
        failed = self.store.requests(statuses=[Status.FAILED])
        owners: dict[str, str | None] = {}
        mine = []
        for request in failed:
            if request.database not in owners:
                owners[request.database] = self._owner_now(request)
            if user.is_admin or policy.owns(user, owners[request.database]):
                mine.append(request)
        return mine

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
        """One request, for its requester, an owner of its product or an admin."""
        user = self._user(username)
        request = self._request(request_id)
        if not policy.may_retry(user, request, self._owner_now(request)):
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

    def _auditor(self, username: str) -> None:
        user = self._user(username)
        if not user.is_admin:
            raise Forbidden(
                f"User {user.username} is not an admin; only admins read the audit log."
            )


def _status(raw: str) -> Status:
    try:
        return Status(raw.strip().lower())
    except ValueError:
        names = ", ".join(s.value for s in Status)
        raise InvalidInput(f"{raw!r} is not a status; use one of {names}.") from None


def _clean_scope(
    database: str, table: str | None, account: str, reason: str
) -> tuple[str, str | None, str, str]:
    database = (database or "").strip()
    table = (table or "").strip() or None
    account = (account or "").strip()
    reason = (reason or "").strip()
    if not database:
        raise InvalidInput("Name the database to request.")
    if not policy.is_valid_account(account):
        raise InvalidInput(
            f"The account {account!r} is not an AWS account id: it must be exactly 12 digits."
        )
    if not reason:
        raise InvalidInput("Give a reason for the request; the data owner reads it.")
    if len(reason) > policy.MAX_REASON:
        raise InvalidInput(
            f"The reason has {len(reason):,} characters, {len(reason) - policy.MAX_REASON:,} "
            f"more than the {policy.MAX_REASON:,} allowed; shorten it."
        )
    return database, table, account, reason


def _clean_comment(comment: str | None) -> str:
    comment = (comment or "").strip()
    if len(comment) > policy.MAX_REASON:
        raise InvalidInput(
            f"The comment has {len(comment)} characters; keep it to {policy.MAX_REASON} at most."
        )
    return comment
