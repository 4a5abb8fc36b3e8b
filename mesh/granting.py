"""Granting: make an approved request's Lake Formation grants, exactly once.

Intent is recorded before each call and the outcome after it, never inside a transaction;
a request whose outcome could not be recorded stays ``granting`` for the periodic job.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from mesh import approval, evidence, policy
from mesh.approval import Verdict
from mesh.errors import (
    AwsFailure,
    InFlight,
    InvalidInput,
    MeshError,
    NotFound,
    failure_of,
    in_flight,
)
from mesh.live import LiveScopes
from mesh.models import (
    AccessRequest,
    Action,
    GrantSpec,
    Status,
)
from mesh.moments import iso
from mesh.usecase import POLICY_ACTOR, UseCase

if TYPE_CHECKING:
    pass


class Granting(UseCase):
    """Grant, grant in batches, take over a stopped grant, and fail with the cause."""

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
        live: LiveScopes | None = None,
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
            return self._grant_steps(
                request, actor=actor, recheck=recheck, verify=verify, live=live
            )
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
        self,
        request: AccessRequest,
        *,
        actor: str,
        recheck: bool,
        verify: bool,
        live: LiveScopes | None = None,
    ) -> AccessRequest:
        unexplained = self._unexplained(request, actor=actor)
        if unexplained is not None:
            return unexplained
        done = list(request.grants_done)
        if verify:
            failed = self._found_held(request, done, actor=actor)
            if failed is not None:
                return failed
        if recheck and not request.needs_approval and not done:
            rechecked = self._recheck_policy(request, actor=actor, live=live)
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
                # The first grant computes the expiry from the submitted (verified) duration:
                # evidence refuses a request whose expiry was set before it. A later grant
                # keeps the first's (evidence holds the column to it).
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
        ended: dict[str, AccessRequest | MeshError] = {}
        explained = []
        for r in requests:
            try:
                refused = self._unexplained(r, actor=actor)
            except Exception as exc:  # noqa: BLE001 - the refusal could not be recorded
                ended[r.id] = self._in_flight(r.id, exc)
                continue
            if refused is None:
                explained.append(r)
            else:
                ended[r.id] = refused
        requests = explained
        plans = {
            r.id: [spec for spec in self.grant_plan(r) if spec.key not in r.grants_done]
            for r in requests
        }
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
            return {**ended, **{r.id: self._in_flight(r.id, exc) for r in requests}}
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

    def _recheck_policy(
        self, request: AccessRequest, *, actor: str, live: LiveScopes | None = None
    ) -> AccessRequest | None:
        """Before re-running a grant nobody approved, ask the policy again.

        The catalog may have changed since the policy granted it at once (a column flagged as
        PII since); such a request now waits for an owner instead of being shared.
        """
        try:
            db, tables = (live or self._live([request])).read(request.database, request.table)
        except NotFound:
            return None  # the grant itself will fail and say what is missing
        except MeshError as exc:  # Glue could not be read: fail with the cause, retry later
            return self._fail(request, actor=actor, exc=exc, done=[], made=[], call={})
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

    def _unexplained(self, request: AccessRequest, *, actor: str) -> AccessRequest | None:
        """Fail ``request`` unless its verified audit rows explain a grant (mesh/evidence.py).

        Every grant passes here first (a decision, a retry, the job's retry and takeover),
        so a request forged in the database, or one whose rows were tampered with, fails
        as ``Unexplained`` and nothing is granted for it.
        """
        found = evidence.check(self.store, request)
        if found.ok:
            return None
        return self._fail(
            request,
            actor=actor,
            exc=found.refusal(),
            done=list(request.grants_done),
            made=[],
            call={},
        )

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
        # A person reads this on the request's card: a sentence, never the exception's text
        # (which may hold a repr, an ARN or worse); failure_of logs it in full, masked.
        code, message = failure_of(
            exc, "An unexpected error stopped the grant; the details are in the server log."
        )
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
