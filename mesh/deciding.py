"""Use cases that decide: approve, deny, decide in bulk, and decision links."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mesh import approval
from mesh.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MeshError,
)
from mesh.granting import Granting
from mesh.live import LiveScopes, Owners
from mesh.models import (
    OWNER_STEP,
    AccessRequest,
    Action,
    Status,
    User,
)
from mesh.store import (
    AlreadyApproved,
    Approval,
)
from mesh.usecase import POLICY_ACTOR, _clean_comment

if TYPE_CHECKING:
    from mesh.links import LinkClaim


@dataclass(frozen=True, kw_only=True)
class DecisionOutcome:
    """What one decision of a bulk decision did: the request as it ended, or the refusal.

    ``exit_code`` is the refusal's (the CLI's table), 1 for a grant that failed, else 0.
    """

    request_id: str
    request: AccessRequest | None
    error: str | None = None
    exit_code: int = 0


DECIDED = "this decision was made"


class Deciding(Granting):
    """Approve or deny one request or several, directly or through a signed link."""

    # Decisions ------------------------------------------------------------------------

    def _authorise_decision(
        self, user: User, request_id: str, *, verb: str = "approve", owners: Owners
    ) -> tuple[AccessRequest, str | None]:
        """The pending request ``user`` may decide now, and its owner as ``owners`` says.

        A decision passes ``LiveScopes`` (Glue, now); only ``may_decide``, which decides
        nothing, passes the index's owners.
        """
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
        owner = owners.owner(request)
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

    def approve(
        self,
        request_id: str,
        username: str,
        *,
        comment: str = "",
        on_catalog_change: Callable[[str], None] | None = None,
    ) -> AccessRequest:
        """Add an approval to the current step; the last one needed grants the request.

        The approval, the count and the move to the next step (or to granting) happen in one
        transaction, so of two approvers at once exactly one completes the step. Glue is
        read live for the request's scope and refreshes the index; ``on_catalog_change``
        hears how the index had differed.
        """
        user = self._user(username)
        comment = _clean_comment(comment)
        live = self._live()
        try:
            return self._approve(user, request_id, comment, live)
        finally:
            live.tell(on_catalog_change, what=DECIDED)

    def _approve(
        self, user: User, request_id: str, comment: str, live: LiveScopes
    ) -> AccessRequest:
        updated, ready = self._record_approval(user, request_id, comment, live)
        if ready:
            return self._grant(updated, actor=user.username)
        return updated

    def _record_approval(
        self, user: User, request_id: str, comment: str, owners: Owners
    ) -> tuple[AccessRequest, bool]:
        """Record one approval; True when it completed the last step (the request is granting).

        The approval, the count and the move to the next step (or to granting) happen in one
        transaction, so of two approvers at once exactly one completes the step.
        """
        request, owner = self._authorise_decision(user, request_id, owners=owners)
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

    def deny(
        self,
        request_id: str,
        username: str,
        *,
        comment: str,
        on_catalog_change: Callable[[str], None] | None = None,
    ) -> AccessRequest:
        """Deny a waiting request with a comment for the requester (Glue read as in approve)."""
        user = self._user(username)
        comment = _clean_comment(comment)
        if not comment:
            raise InvalidInput("A denial needs a comment that tells the requester why.")
        live = self._live()
        try:
            return self._deny(user, request_id, comment, live)
        finally:
            live.tell(on_catalog_change, what=DECIDED)

    def _deny(self, user: User, request_id: str, comment: str, owners: Owners) -> AccessRequest:
        request, _ = self._authorise_decision(user, request_id, verb="deny", owners=owners)
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
        self,
        request_ids: Sequence[str],
        username: str,
        *,
        verb: str,
        comment: str = "",
        on_catalog_change: Callable[[str], None] | None = None,
    ) -> list[DecisionOutcome]:
        """Approve or deny several requests with one comment; one outcome per request, in order.

        Each decision is its own exactly-once transaction, as in approve and deny, and a
        refusal of one never stops the others. The requests whose last step these approvals
        complete are granted together (see ``_grant_many``): n approvals make about n/20
        Lake Formation calls instead of n. Glue is read live once per distinct database
        (with the tables asked for, see ``LiveScopes``), not once per request, and
        ``on_catalog_change`` hears once how the index had differed.
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
        live = self._live(r for r in map(self.store.get, filter(None, ids)) if r is not None)
        try:
            return self._decide_each(ids, user, verb=verb, comment=comment, live=live)
        finally:
            live.tell(on_catalog_change, what=DECIDED)

    def _decide_each(
        self, ids: Sequence[str], user: User, *, verb: str, comment: str, live: LiveScopes
    ) -> list[DecisionOutcome]:
        results: dict[str, DecisionOutcome] = {}
        granting: list[AccessRequest] = []
        for request_id in ids:
            try:
                if verb == "deny":
                    decided = self._deny(user, request_id, comment, live)
                else:
                    decided, ready = self._record_approval(user, request_id, comment, live)
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

    # Decision links -------------------------------------------------------------------------

    def open_link(
        self, token: str, username: str, *, record: bool = True
    ) -> tuple[LinkClaim, AccessRequest]:
        """Read a decision link for ``username``; it decides nothing by itself.

        Only a person who may decide the request sees it (requester, account and reason are
        not for another owner or a bystander who got hold of the link). ``record`` audits
        the opening; a page shown again in the same session passes False.
        """
        from mesh.links import InvalidLink

        user = self._user(username)
        if self.links is None:
            raise InvalidLink("Decision links are not enabled on this server.")
        claim = self.links.read(token)
        request = self._request(claim.request_id)
        if not self._could_decide(user, request):
            raise Forbidden(
                f"You cannot {claim.action.value} this request: user {user.username} may not "
                f"decide request {request.id}, so its decision link shows them nothing."
            )
        if self.store.link_used(claim.nonce):
            raise InvalidLink(
                "This decision link was already used; open the request from the "
                "Approvals page instead."
            )
        if record:
            self.store.append(
                self._event(
                    user.username, Action.LINK_OPENED, request, link_action=claim.action.value
                )
            )
        return claim, request

    def _could_decide(self, user: User, request: AccessRequest) -> bool:
        """Whether ``user`` is among the deciders of the step the request is at, whatever
        its state (any admin may deny); never its requester. Reads the index's owner."""
        if user.username == request.requester:
            return False
        waiting = replace(
            request, status=Status.PENDING_APPROVAL, plan=request.plan or (OWNER_STEP,)
        )
        owner = self._known_owners().owner(request)
        return user.is_admin or approval.in_step(self.rules, user, waiting, owner)

    def may_decide(self, username: str, request_id: str, *, verb: str = "approve") -> str | None:
        """Why ``username`` may not ``verb`` the request now, or None when they may.

        Reads only, and no Glue call (the owner is the index's): a page asks before it offers
        to confirm a decision link, so the wrong person is told at once instead of after the
        click; the decision itself reads the owner from Glue.
        """
        user = self._user(username)
        try:
            self._authorise_decision(user, request_id, verb=verb, owners=self._known_owners())
        except (Forbidden, Conflict) as exc:
            return exc.message
        return None

    def decide_by_link(
        self,
        token: str,
        username: str,
        *,
        action: str,
        comment: str = "",
        on_catalog_change: Callable[[str], None] | None = None,
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
        live = self._live([request])
        try:
            self._authorise_decision(user, request.id, verb=action, owners=live)
            if not self.store.use_link(
                claim.nonce,
                request_id=request.id,
                action=action,
                used_by=user.username,
                at=self._now(),
            ):
                raise InvalidLink("This decision link was already used; nothing was changed.")
            if action == "approve":
                return self._approve(user, request.id, comment, live)
            return self._deny(user, request.id, comment, live)
        finally:
            live.tell(on_catalog_change, what=DECIDED)

    def mark_seen(self, username: str, request_ids: Sequence[str]) -> int:
        """Clear the "new" marker of decisions the requester has now seen (her own only)."""
        user = self._user(username)
        found = (self.store.get(i) for i in request_ids)
        others = sorted({r.id for r in found if r is not None and r.requester != user.username})
        if others:
            raise Forbidden(
                f"User {user.username} did not make request {', '.join(others)}; only a "
                "request's requester marks its decision as seen."
            )
        return self.store.mark_seen(user.username, request_ids)
