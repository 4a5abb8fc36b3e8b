"""The base of the use cases: ports, who acts, policy in force, events, shared checks.

Every permission check happens in the use cases, not only in the pages. When several
refusals apply, the first in this order wins: unknown user, malformed input, something
missing, unowned database, not allowed, wrong state or duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mesh import approval, policy
from mesh.approval import ApprovalPolicy, Verdict
from mesh.catalog_index import CatalogIndex, IndexedCatalog
from mesh.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PolicyMismatch,
)
from mesh.live import KnownOwners, LiveScopes
from mesh.models import (
    AccessRequest,
    Action,
    GrantSpec,
    Status,
    Step,
    User,
)
from mesh.moments import iso, utc_now
from mesh.ports import Catalog, Grants, Users
from mesh.store import (
    AnyStore,
    Approval,
    NewEvent,
    PolicyRecord,
)

if TYPE_CHECKING:
    from mesh.links import LinkSigner
    from mesh.outbox import Outbox

log = logging.getLogger(__name__)

POLICY_ACTOR = "policy"
NO_OWNER = "this data product has no owner; ask a catalog admin to set data_owner"


class UseCase:
    """What every use case works on: a store, a catalog, Lake Formation and the users."""

    def __init__(
        self,
        *,
        store: AnyStore,
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

    def record_refusal(self, actor: str, *, what: str, why: str, **details: Any) -> None:
        """Audit an action that was refused before it ran (a role that does not allow it,
        a session that has ended): one ``action_refused`` row, for the web app and the CLI."""
        self.store.append(
            NewEvent(
                at=iso(self.clock()),
                actor=actor or "(unknown)",
                action=Action.ACTION_REFUSED.value,
                request_id=None,
                scope="",
                details={"what": what, "why": why, **details},
            )
        )

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
        """The product's owner as Glue says now (decisions never trust the index)."""
        return self._live([request]).owner(request)

    def _live(self, requests: Iterable[AccessRequest] = ()) -> LiveScopes:
        """Glue read live for one action's scopes, each database once, refreshing the index."""
        return LiveScopes(self.catalog, self.index, now=self._now, requests=requests)

    def _known_owners(self) -> KnownOwners:
        """Owners for reads: the index's, else the request's; no Glue call."""
        return KnownOwners(self.index)

    def _catalog_view(self) -> Catalog:
        """Where explain reads the catalog: the index once synced, else Glue itself."""
        if self.index is None or self.index.judged_with() is None:
            return self.catalog
        return IndexedCatalog(self.index, catalog_id=self.catalog.catalog_id)

    def _moved_on(self, request_id: str, verb: str) -> Conflict:
        current = self.store.get(request_id)
        status = current.status.value if current else "gone"
        return Conflict(
            f"Request {request_id} cannot be {verb}: it is {status}, no longer pending approval."
        )

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

    def _is_stale(self, request: AccessRequest) -> bool:
        updated = datetime.fromisoformat(request.updated_at.replace("Z", "+00:00"))
        return self.clock() - updated > timedelta(seconds=self.stale_granting)

    def grant_plan(self, request: AccessRequest) -> tuple[GrantSpec, ...]:
        return policy.grants_for(
            request.scope, account=request.account, catalog_id=self.catalog.catalog_id
        )

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
