"""Use cases that a requester drives: submit, cancel and retry."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING

from mesh import approval, policy
from mesh.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
)
from mesh.granting import Granting
from mesh.models import (
    AccessRequest,
    Action,
    Scope,
    Status,
)
from mesh.usecase import NO_OWNER, POLICY_ACTOR, _clean_scope

if TYPE_CHECKING:
    pass


def new_request_id() -> str:
    return "r-" + secrets.token_hex(4)


class Requesting(Granting):
    """Submit a request (granted at once when the policy allows), cancel it, retry it."""

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
        live = self._live()
        db, tables = live.read(database, table)
        live.tell(on_catalog_change, what="this request was judged")
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
                duration_seconds=request.duration_seconds,
                expires_on=request.expires_on,
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
                f"An identical request is already {existing.status.value.replace('_', ' ')}: "
                f"{existing.id}."
            )
        if verdict.needs_approval:
            self._notify("approval_request", request)
            return request
        return self._grant(request, actor=POLICY_ACTOR)

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

    def retry(
        self,
        request_id: str,
        username: str,
        *,
        on_catalog_change: Callable[[str], None] | None = None,
    ) -> AccessRequest:
        """Re-run an approved request's remaining grants; it never asks for approval again.

        Glue is read live for the scope, once (the owner, and the policy's second look at a
        request nobody approved), and refreshes the index; ``on_catalog_change`` hears how
        the index had differed.
        """
        user = self._user(username)
        self.check_policy()
        request = self._request(request_id)
        live = self._live([request])
        if not policy.may_retry(user, request, live.owner(request)):
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
        try:
            return self._grant(resumed, actor=user.username, recheck=True, verify=True, live=live)
        finally:
            live.tell(on_catalog_change, what="this retry was judged")
