"""Ending access and keeping it honest: revoke, expiry, the periodic job, drift.

Nothing here can grant, keep or remove access except as a request, its decision and the
policy say: revoke removes exactly what the request granted, minus what another live request
still justifies; expiry does the same when the time is up; reconcile re-applies only grants
that a granted request explains, and never touches grants nobody asked for.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from mesh import auditchain, auditlog, aws, evidence, policy
from mesh.catalog_index import SyncRecord
from mesh.errors import (
    AwsFailure,
    Conflict,
    Forbidden,
    InFlight,
    InvalidInput,
    MeshError,
    failure_of,
    in_flight,
)
from mesh.models import (
    HOLDS_GRANTS,
    AccessRequest,
    Action,
    GrantSpec,
    Permission,
    Status,
    User,
)
from mesh.store import NewEvent
from mesh.sync import CatalogSync
from mesh.workflow import Marketplace, _clean_comment, iso

SYNC_LEASE_NAME = "catalog-sync"
SYNC_LEASE = timedelta(minutes=30)
"""How long a catalog sync's lease lasts when its holder never releases it (a 100k-table
sync takes about 70 seconds)."""

EXPIRY_ACTOR = "expiry"
TICK_ACTOR = "tick"
RECONCILE_ACTOR = "reconcile"
RECONCILE_RAN = "reconcile_ran"  # one per run, with its counts, also when it found nothing
# What the job retries: AWS's passing faults, a lost connection, and a crash of our own.
TRANSIENT_CODES = aws.TRANSIENT_CODES | {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "Unexpected",
}


_resource_key = policy.resource_key


@dataclass(frozen=True, kw_only=True)
class TickReport:
    expired: list[str] = field(default_factory=list)
    expiry_failed: list[str] = field(default_factory=list)
    owner_reminders: list[str] = field(default_factory=list)
    admin_reminders: list[str] = field(default_factory=list)
    expiry_warnings: list[str] = field(default_factory=list)
    notifications_sent: int = 0
    notifications_failing: int = 0
    grants_retried: list[str] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)
    taken_over: list[str] = field(default_factory=list)
    notices_recovered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    catalog_synced: dict[str, Any] | None = None  # the sync this pass ran, if it was due
    audit_log: dict[str, Any] | None = None  # the check of the rows since the last one
    sign_in_failures_forgotten: int = 0  # failure counts past the lockout window, deleted

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _since_step(request: AccessRequest) -> datetime:
    """When the request's current step began to wait (its submission, for the first)."""
    started = request.step_started_at or request.created_at
    return datetime.fromisoformat(started.replace("Z", "+00:00"))


def _already_revoked(exc: AwsFailure) -> bool:
    return exc.code == "InvalidInputException" and "no permissions revoked" in exc.message.lower()


class Lifecycle:
    """Revoke, expire, remind, retry and reconcile over the marketplace's parts."""

    def __init__(
        self,
        market: Marketplace,
        *,
        remind_after: timedelta,
        warn_before: timedelta,
        grant_retry_limit: int,
        sync: CatalogSync | None = None,
        sync_minutes: int = 15,
        anchor: auditlog.Anchor | None = None,
        signin_lockout: timedelta = timedelta(minutes=15),
    ) -> None:
        self.market = market
        self.signin_lockout = signin_lockout  # failures older (and not locking) are forgotten
        # the last check of the audit chain that found rows or a break (pages show it)
        self.audit_checked: auditchain.Verification | None = None
        self.anchor = anchor  # where tick publishes the audit chain's head
        self.remind_after = remind_after
        self.warn_before = warn_before
        self.grant_retry_limit = grant_retry_limit
        self.sync = sync
        self.sync_minutes = sync_minutes
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"  # for leases

    # Revoke -------------------------------------------------------------------------------

    def revoke(self, request_id: str, username: str, *, comment: str) -> AccessRequest:
        """End a granted request's access; only an owner of the product or an admin may."""
        m = self.market
        user = m._user(username)
        comment = _clean_comment(comment)
        if not comment:
            raise InvalidInput("A revocation needs a comment that tells the requester why.")
        request = m._request(request_id)
        if not (user.is_admin or policy.owns(user, m._owner_now(request))):
            raise Forbidden(
                f"User {user.username} may not revoke request {request.id}: only "
                "an owner of the data product or an admin can."
            )
        resumable = [Status.GRANTED, Status.REVOKE_FAILED]
        if request.status is Status.FAILED and request.grants_done:
            resumable.append(Status.FAILED)  # a half-made grant can be taken back too
        if request.status is Status.REVOKING and m._is_stale(request):
            resumable.append(Status.REVOKING)  # the process revoking it stopped
        if request.status not in resumable:
            raise Conflict(
                f"Request {request.id} is {request.status.value}; only granted "
                "access can be revoked."
            )
        claimed = m.store.transition(
            request.id,
            allowed_from=resumable,
            unchanged_since=request.updated_at,
            changes={
                "status": Status.REVOKING,
                "ended_by": user.username,
                "end_comment": comment,
                "end_target": Status.REVOKED.value,
                "updated_at": m._now(),
            },
            events=[m._event(user.username, Action.REVOKE_REQUESTED, request, comment=comment)],
        )
        if claimed is None:
            raise Conflict(f"Request {request.id} changed while revoking; look at it again.")
        return self._revoke(claimed, actor=user.username)

    def _justified(
        self, request: AccessRequest, live: Sequence[AccessRequest] | None = None
    ) -> dict[str, tuple[set[str], set[str], list[str]]]:
        """Per resource, what other live requests for the same account still justify.

        ``live``: the requests holding grants, when the caller has read them already.
        """
        kept: dict[str, tuple[set[str], set[str], list[str]]] = {}
        if live is None:
            live = self.market.store.requests(statuses=list(HOLDS_GRANTS))
        for other in live:
            if other.id == request.id or other.account != request.account:
                continue
            if other.status in (Status.REVOKING, Status.REVOKE_FAILED):
                continue  # access that is ending justifies nothing
            for spec in self.market.grant_plan(other):
                perms, grantable, ids = kept.setdefault(
                    _resource_key(spec.resource), (set(), set(), [])
                )
                perms.update(p.value for p in spec.permissions)
                grantable.update(p.value for p in spec.grantable)
                ids.append(other.id)
        return kept

    def _revoke(self, request: AccessRequest, *, actor: str) -> AccessRequest:
        """Revoke what is left of a request's grants, recording each step.

        A failure to record an outcome leaves the request ``revoking`` for the periodic
        job, which resumes it once stale; it is raised as ``InFlight``.
        """
        try:
            return self._revoke_steps(request, actor=actor)
        except Exception as exc:
            raise in_flight(
                request.id,
                exc,
                doing="revoking",
                after=self.market.stale_granting,
                then="you can also revoke it again then",
            ) from exc

    def _revoke_steps(self, request: AccessRequest, *, actor: str) -> AccessRequest:
        m = self.market
        done = list(request.revokes_done)
        made: list[dict[str, Any]] = []
        justified = self._justified(request)
        for spec in m.grant_plan(request):
            if spec.key in done or spec.key not in request.grants_done:
                continue
            perms, grantable, ids = justified.get(_resource_key(spec.resource), (set(), set(), []))
            narrowed = replace(
                spec,
                permissions=tuple(p for p in spec.permissions if p.value not in perms),
                grantable=tuple(p for p in spec.grantable if p.value not in grantable),
            )
            if not narrowed.permissions and not narrowed.grantable:
                m.store.append(
                    m._event(
                        actor,
                        Action.REVOKE_SKIPPED,
                        request,
                        grant=spec.key,
                        kept_for=sorted(set(ids)),
                    )
                )
            else:
                m.store.append(
                    m._event(
                        actor,
                        Action.REVOKE_ATTEMPTED,
                        request,
                        call=narrowed.to_api(),
                        kept_for=sorted(set(ids)),
                    )
                )
                try:
                    made.append(m.grants.revoke(narrowed))
                except AwsFailure as exc:
                    if not _already_revoked(exc):
                        return self._revoke_failed(
                            request, actor=actor, exc=exc, done=done, call=narrowed.to_api()
                        )
                    # Lake Formation refuses to revoke what is not held (removed by hand, or
                    # revoked before a crash): the permission is gone, which is the goal.
                except Exception as exc:  # noqa: BLE001 - leaves revoke_failed with its cause
                    return self._revoke_failed(
                        request, actor=actor, exc=exc, done=done, call=narrowed.to_api()
                    )
            done.append(spec.key)
            m.store.transition(
                request.id,
                allowed_from=[Status.REVOKING],
                changes={"revokes_done": done, "updated_at": m._now()},
                events=[],
            )
        return self._ended(request, done=done, made=made, actor=actor)

    def _ended(
        self, request: AccessRequest, *, done: list[str], made: list[dict[str, Any]], actor: str
    ) -> AccessRequest:
        """Record a request whose grants are all revoked (or kept for another) as ended."""
        m = self.market
        target = Status(request.end_target or Status.REVOKED.value)
        now = m._now()
        ended = m.store.transition(
            request.id,
            allowed_from=[Status.REVOKING],
            changes={
                "status": target,
                "revokes_done": done,
                "ended_at": now,
                "updated_at": now,
                "error_code": None,
                "error": None,
                "decision_seen": False,
            },
            events=[
                m._event(
                    actor,
                    Action.REVOKE_SUCCEEDED,
                    request,
                    calls=made,
                    revoked=done,
                    status=target.value,
                )
            ],
        )
        if ended is not None:
            m._notify("decision", ended)
        return ended or m._request(request.id)

    def _revoke_many(
        self, requests: Sequence[tuple[AccessRequest, str]]
    ) -> dict[str, AccessRequest | MeshError]:
        """Revoke what is left of several claimed requests' grants in batch calls of 20.

        As ``_revoke``, per request: what another live request still justifies is kept
        (``revoke_skipped``), the intent is recorded before the batch and the outcome after
        it; an entry Lake Formation refused leaves its own request ``revoke_failed`` with
        that error, and an entry already gone counts as revoked. ``requests`` pairs each
        request with its actor. A request whose outcome could not be recorded stays
        ``revoking`` and comes back as ``InFlight``.
        """
        m = self.market
        live = m.store.requests(statuses=list(HOLDS_GRANTS))
        plans: dict[str, list[tuple[GrantSpec, GrantSpec | None]]] = {}
        intents: list[NewEvent] = []
        for request, actor in requests:
            justified = self._justified(request, live)
            plans[request.id] = []
            for spec in m.grant_plan(request):
                if spec.key in request.revokes_done or spec.key not in request.grants_done:
                    continue
                perms, grantable, ids = justified.get(
                    _resource_key(spec.resource), (set(), set(), [])
                )
                narrowed: GrantSpec | None = replace(
                    spec,
                    permissions=tuple(p for p in spec.permissions if p.value not in perms),
                    grantable=tuple(p for p in spec.grantable if p.value not in grantable),
                )
                if narrowed is not None and not narrowed.permissions and not narrowed.grantable:
                    narrowed = None
                plans[request.id].append((spec, narrowed))
                intents.append(
                    m._event(
                        actor,
                        Action.REVOKE_ATTEMPTED if narrowed else Action.REVOKE_SKIPPED,
                        request,
                        **(
                            {"call": narrowed.to_api(), "via": "BatchRevokePermissions"}
                            if narrowed
                            else {"grant": spec.key}
                        ),
                        kept_for=sorted(set(ids)),
                    )
                )
        try:
            m.store.append(*intents)
        except Exception as exc:  # noqa: BLE001 - nothing was sent: each waits for the job
            return {r.id: self._still_revoking(r.id, exc) for r, _ in requests}
        sent = [n for r, _ in requests for _, n in plans[r.id] if n is not None]
        failures: list[Exception | None]
        try:
            failures = [o.failure for o in m.grants.batch_revoke(sent)] if sent else []
        except Exception as exc:  # noqa: BLE001 - the adapter reports AWS failures per entry
            failures = [exc for _ in sent]
        ended: dict[str, AccessRequest | MeshError] = {}
        at = 0
        for request, actor in requests:
            outcomes = []
            for spec, narrowed in plans[request.id]:
                failure = None
                if narrowed is not None:
                    failure, at = failures[at], at + 1
                    if isinstance(failure, AwsFailure) and _already_revoked(failure):
                        failure = None  # not held any more, which is the goal
                outcomes.append((spec, narrowed, failure))
            try:
                ended[request.id] = self._after_batch(request, outcomes, actor=actor)
            except Exception as exc:  # noqa: BLE001 - the outcome could not be recorded
                ended[request.id] = self._still_revoking(request.id, exc)
        return ended

    def _after_batch(
        self,
        request: AccessRequest,
        outcomes: Sequence[tuple[GrantSpec, GrantSpec | None, Exception | None]],
        *,
        actor: str,
    ) -> AccessRequest:
        done = list(request.revokes_done)
        made: list[dict[str, Any]] = []
        for spec, narrowed, failure in outcomes:
            if failure is not None and narrowed is not None:
                return self._revoke_failed(
                    request, actor=actor, exc=failure, done=done, call=narrowed.to_api()
                )
            done.append(spec.key)
            if narrowed is not None:
                made.append(narrowed.to_api())
        return self._ended(request, done=done, made=made, actor=actor)

    def _still_revoking(self, request_id: str, exc: Exception) -> InFlight:
        if isinstance(exc, InFlight):
            return exc
        return in_flight(
            request_id,
            exc,
            doing="revoking",
            after=self.market.stale_granting,
            then="you can also revoke it again then",
        )

    def _revoke_failed(
        self,
        request: AccessRequest,
        *,
        actor: str,
        exc: Exception,
        done: list[str],
        call: dict[str, Any],
    ) -> AccessRequest:
        m = self.market
        code, message = failure_of(
            exc, "An unexpected error stopped the revoke; the details are in the server log."
        )
        failed = m.store.transition(
            request.id,
            allowed_from=[Status.REVOKING],
            changes={
                "status": Status.REVOKE_FAILED,
                "revokes_done": done,
                "error_code": code,
                "error": message + " Revoke again (or let the periodic job retry).",
                "updated_at": m._now(),
            },
            events=[
                m._event(
                    actor,
                    Action.REVOKE_FAILED,
                    request,
                    error_code=code,
                    error=message,
                    failed_call=call,
                    revoked_so_far=done,
                )
            ],
        )
        return failed or m._request(request.id)

    # The periodic job ---------------------------------------------------------------------

    def tick(self) -> TickReport:
        """One idempotent pass; two at once, or two in a row, do no harm.

        Every step claims its work with a conditional update first, so a second pass running
        at the same moment finds nothing left to claim.
        """
        self.market.check_policy()
        report = TickReport()
        for name, part in (
            ("take over", self._take_over_grants),
            ("expire", self._expire_due),
            ("escalate", self._escalate),
            ("remind", self._remind),
            ("warn", self._warn_expiring),
            ("retry", self._retry_transient),
            ("lost notices", self._queue_lost_notices),
        ):
            self._guarded(report, name, lambda p=part: p(report))
        forgotten: list[int] = []
        self._guarded(report, "sign-in failures", lambda: forgotten.append(self._forget_failures()))
        if forgotten:
            report = replace(report, sign_in_failures_forgotten=forgotten[0])
        if self.market.outbox is not None:
            outbox = self.market.outbox
            counts: list[tuple[int, int]] = []
            self._guarded(report, "notifications", lambda: counts.append(outbox.retry_failed()))
            if counts:
                sent, failing = counts[0]
                report = replace(report, notifications_sent=sent, notifications_failing=failing)
        if self.sync is not None:
            synced: list[dict[str, Any]] = []
            self._guarded(report, "catalog sync", lambda: self._sync_if_due(report, synced))
            if synced:
                report = replace(report, catalog_synced=synced[0])
        checked: list[dict[str, Any]] = []
        self._guarded(report, "audit log", lambda: self._check_audit(report, checked))
        if checked:
            report = replace(report, audit_log=checked[0])
        return report

    def _forget_failures(self) -> int:
        """Delete failed sign-in counts past the lockout window whose lockout has ended."""
        now = self.market.clock()
        return self.market.store.forget_sign_in_failures(
            at=iso(now), forget_before=iso(now - self.signin_lockout)
        )

    def _check_audit(self, report: TickReport, checked: list[dict[str, Any]]) -> None:
        """Verify the audit rows written since the last check, then publish the head.

        A break is reported on every pass until someone looks (no checkpoint is recorded
        past it), and a broken chain's head is never published.
        """
        m = self.market
        last = self.anchor.last(m.store) if self.anchor is not None else None
        found = auditlog.verify_tail(m.store, at=m._now(), anchor=last)
        if found.rows or not found.ok:  # a pass that found nothing new says nothing
            checked.append(found.to_json())
            self.audit_checked = found
        if not found.ok:
            report.errors.append("audit log: " + "; ".join(found.problems))
            return
        if self.anchor is not None and (last is None or last.get("row_id") != found.head_id):
            self.anchor.publish(
                m.store,
                auditlog.head_record(m.store, at=m._now(), head=(found.head_id, found.head_chain)),
            )

    def sync_catalog(self, username: str) -> SyncRecord:
        """Sync the catalog index from Glue now, for an admin (the pages' Sync now).

        A whole sync reads every database and table of the catalog, so only admins may
        start one; the periodic job syncs on its own when the index is older than
        MESH_SYNC_MINUTES.
        """
        user = self.market._user(username)
        if not user.is_admin:
            raise Forbidden(
                f"User {user.username} is not an admin; only admins sync the catalog now."
            )
        if self.sync is None:
            raise InvalidInput("This process has no catalog sync configured.")
        return self.sync.run(actor=user.username)

    def _sync_if_due(self, report: TickReport, synced: list[dict[str, Any]]) -> None:
        """Sync the catalog index when its last sync is older than MESH_SYNC_MINUTES.

        A whole sync has no request to claim, so it holds the store's lease ``catalog-sync``
        while it runs: another pass (on another host, or overlapping this one) skips it, and
        the lease runs out after SYNC_LEASE should this process die mid-sync.
        """
        if self.sync is None or not self.sync.due(self.sync_minutes):
            return
        store, now = self.market.store, self.market.clock()
        if not store.claim_lease(
            SYNC_LEASE_NAME, holder=self._holder, now=iso(now), until=iso(now + SYNC_LEASE)
        ):
            return
        try:
            if not self.sync.due(self.sync_minutes):  # another pass finished one meanwhile
                return
            done = self.sync.run(actor=TICK_ACTOR)
        finally:
            store.release_lease(SYNC_LEASE_NAME, holder=self._holder)
        synced.append(done.to_json())
        if done.error:
            report.errors.append(f"catalog sync: {done.error}")

    @staticmethod
    def _guarded(report: TickReport, what: str, work: Any) -> None:
        """Run one piece of the job; a failure is reported and the rest still runs.

        Whatever fails leaves its request in a named state or stale for the next pass.
        """
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - one failure never stops the whole pass
            _, message = failure_of(exc, "an unexpected error; the details are in the log")
            report.errors.append(f"{what}: {message}")

    def _take_over_grants(self, report: TickReport) -> None:
        """Finish grants whose process stopped: stale ``granting`` requests."""
        m = self.market
        for request in m.store.requests(statuses=[Status.GRANTING]):
            if not m._is_stale(request):
                continue
            self._guarded(
                report,
                f"take over {request.id}",
                lambda r=request: self._took_over(report, m.take_over(r, actor=TICK_ACTOR), r),
            )

    def _queue_lost_notices(self, report: TickReport) -> None:
        """Queue the notices a stopped process never queued (a decision, an approval request).

        Each request is claimed first (a conditional update on updated_at), so two passes
        at once queue one notice.
        """
        m = self.market
        if m.outbox is None:
            return
        idle = iso(m.clock() - timedelta(seconds=m.stale_granting))
        for request in m.store.without_notice(idle_before=idle):
            kind = "approval_request" if request.status is Status.PENDING_APPROVAL else "decision"
            claimed = m.store.transition(
                request.id,
                allowed_from=[request.status],
                unchanged_since=request.updated_at,
                changes={"updated_at": m._now()},
                events=[m._event(TICK_ACTOR, Action.NOTICE_RECOVERED, request, kind=kind)],
            )
            if claimed is not None:
                m._notify(kind, claimed)
                report.notices_recovered.append(request.id)

    @staticmethod
    def _took_over(report: TickReport, ended: AccessRequest | None, request: AccessRequest) -> None:
        if ended is not None:
            report.taken_over.append(request.id)

    def _expire_due(self, report: TickReport) -> None:
        """Start the revokes of expired grants, and finish revokes that were interrupted."""
        m = self.market
        now = m.clock()
        due: list[tuple[AccessRequest, str]] = []
        for request in m.store.requests(
            statuses=[Status.GRANTED, Status.REVOKE_FAILED, Status.REVOKING]
        ):
            if request.status is Status.GRANTED:
                # The column alone could have been moved later behind the app's back: the
                # verified grant's expiry bounds it (read only when the column says not yet).
                ends = request.expires_at
                if not ends or ends > iso(now):
                    ends = evidence.ends_at(m.store, request)
                if not ends or ends > iso(now):
                    continue
                changes = {"ended_by": EXPIRY_ACTOR, "end_target": Status.EXPIRED.value}
                event = m._event(EXPIRY_ACTOR, Action.EXPIRY_DUE, request, expires_at=ends)
            elif self._resumable(request):
                changes = {}
                event = m._event(
                    TICK_ACTOR,
                    Action.REVOKE_REQUESTED,
                    request,
                    resumed=True,
                    previous_error=request.error_code,
                )
            else:
                continue
            claimed = m.store.transition(
                request.id,
                allowed_from=[request.status],
                changes={"status": Status.REVOKING, "updated_at": iso(now), **changes},
                events=[event],
                unchanged_since=request.updated_at,
            )
            if claimed is None:
                continue
            actor = EXPIRY_ACTOR if claimed.end_target == Status.EXPIRED.value else TICK_ACTOR
            if request.status is Status.REVOKING:
                report.taken_over.append(request.id)
            due.append((claimed, actor))
        # Every claimed revoke goes out together, in batch calls of 20 entries.
        for request_id, ended in self._revoke_many(due).items():
            if isinstance(ended, MeshError):
                report.errors.append(ended.message)
            elif ended.status is Status.EXPIRED:
                report.expired.append(request_id)
            elif ended.status is Status.REVOKE_FAILED:
                report.expiry_failed.append(request_id)

    def _resumable(self, request: AccessRequest) -> bool:
        """A revoke the job should finish: interrupted, expiring, or failed for a passing cause."""
        if request.status is Status.REVOKING:
            return self.market._is_stale(request)
        return request.end_target == Status.EXPIRED.value or request.error_code in TRANSIENT_CODES

    def _escalate(self, report: TickReport) -> None:
        """Open a step that has waited its escalation delay to its escalation group too."""
        m = self.market
        now = m.clock()
        for request in m.store.requests(statuses=[Status.PENDING_APPROVAL]):
            step = request.current_step
            if step is None or not step.escalate_to or step.escalate_after_hours is None:
                continue
            if request.escalated_at is not None:
                continue
            if now - _since_step(request) < timedelta(hours=step.escalate_after_hours):
                continue
            claimed = m.store.claim_escalation(
                request.id,
                step=request.step,
                at=iso(now),
                events=[
                    m._event(
                        TICK_ACTOR,
                        Action.STEP_ESCALATED,
                        request,
                        step=request.step + 1,
                        approvers=step.approvers,
                        to=step.escalate_to,
                        after_hours=step.escalate_after_hours,
                    )
                ],
            )
            if claimed is None:
                continue
            m._notify("approval_request", claimed, escalated=True)
            report.escalated.append(request.id)

    def _remind(self, report: TickReport) -> None:
        m = self.market
        now = m.clock()
        for request in m.store.requests(statuses=[Status.PENDING_APPROVAL]):
            waited = now - _since_step(request)
            level = (
                2 if waited >= 2 * self.remind_after else (1 if waited >= self.remind_after else 0)
            )
            if level <= request.reminders_sent:
                continue
            claimed = m.store.claim_reminder(
                request.id,
                was=request.reminders_sent,
                level=level,
                events=[
                    m._event(
                        TICK_ACTOR,
                        Action.REMINDER_DUE,
                        request,
                        level=level,
                        waited_hours=round(waited.total_seconds() / 3600, 1),
                    )
                ],
            )
            if claimed is None:
                continue
            # Admins are asked only when they may fill a place; otherwise the step's own
            # approvers are reminded again.
            step = claimed.current_step
            to_admins = level == 2 and (step is None or step.admins)
            m._notify("approval_request", claimed, reminder=True, to_admins=to_admins)
            if claimed.escalated_at is not None and not to_admins:
                m._notify("approval_request", claimed, reminder=True, escalated=True)
            (report.admin_reminders if to_admins else report.owner_reminders).append(request.id)

    def _warn_expiring(self, report: TickReport) -> None:
        m = self.market
        now = m.clock()
        for request in m.store.requests(statuses=[Status.GRANTED]):
            if request.warned_at or not request.expires_at:
                continue
            if request.expires_at > iso(now + self.warn_before):
                continue
            claimed = m.store.claim_warning(
                request.id,
                at=iso(now),
                events=[
                    m._event(
                        TICK_ACTOR,
                        Action.EXPIRY_WARNING_DUE,
                        request,
                        expires_at=request.expires_at,
                    )
                ],
            )
            if claimed is None:
                continue
            m._notify("expiry_warning", claimed)
            report.expiry_warnings.append(request.id)

    def _retry_transient(self, report: TickReport) -> None:
        m = self.market
        for request in m.store.requests(statuses=[Status.FAILED]):
            if request.error_code not in TRANSIENT_CODES:
                continue
            if request.attempts > self.grant_retry_limit:  # the first attempt was not the job's
                continue
            resumed = m.store.transition(
                request.id,
                allowed_from=[Status.FAILED],
                changes={"status": Status.GRANTING, "updated_at": m._now()},
                events=[
                    m._event(
                        TICK_ACTOR,
                        Action.RETRY_REQUESTED,
                        request,
                        previous_error=request.error_code,
                        attempt=request.attempts + 1,
                    )
                ],
            )
            if resumed is not None:
                report.grants_retried.append(request.id)
                try:
                    m._grant(resumed, actor=TICK_ACTOR, recheck=True, verify=True)
                except InFlight as exc:
                    report.errors.append(exc.message)

    # Drift --------------------------------------------------------------------------------

    def reconcile(
        self, user: User | None = None, *, fix: bool, actor: str | None = None
    ) -> dict[str, Any]:
        """Compare granted requests with what Lake Formation holds; re-apply missing grants.

        ``user`` is the admin who runs it (checked here, whatever the page showed); None is
        the system (the CLI without --as, the periodic job), audited as ``actor`` or
        "reconcile". Unexplained grants (to consumer accounts, on this catalog, that no
        request explains) are reported and never touched. A request explains grants only
        with evidence (mesh/evidence.py): verified audit rows of its submission, verdict and
        approvals; one without is reported as unexplained, and nothing is re-applied for it.
        Every run leaves an audit row, also when it finds nothing.
        """
        m = self.market
        if user is not None:
            current = m._user(user.username)  # the users file as it is now
            if not current.is_admin:
                raise Forbidden(
                    f"User {current.username} may not run the drift check: only an admin can."
                )
            actor = current.username
        actor = actor or RECONCILE_ACTOR
        if fix:
            m.check_policy()
        central = m.catalog.catalog_id
        held: dict[tuple[str, str], tuple[set[str], set[str], dict[str, Any]]] = {}
        for entry in m.grants.list_permissions():
            principal = entry.get("Principal", {}).get("DataLakePrincipalIdentifier", "")
            resource = entry.get("Resource", {})
            if not policy.is_valid_account(principal) or principal == central:
                continue
            body: Any = next(iter(resource.values()), {}) if resource else {}
            if not isinstance(body, dict) or body.get("CatalogId", central) != central:
                continue
            perms, grantable, _ = held.setdefault(
                (principal, _resource_key(resource)), (set(), set(), resource)
            )
            perms.update(entry.get("Permissions", []))
            grantable.update(entry.get("PermissionsWithGrantOption", []))
        expected: dict[tuple[str, str], tuple[set[str], set[str]]] = {}
        missing: list[dict[str, Any]] = []
        granted = m.store.requests(statuses=[Status.GRANTED])
        explained, without = evidence.explained(m.store, granted)
        for request in explained:
            for spec in m.grant_plan(request):
                key = (spec.principal, _resource_key(spec.resource))
                want = {p.value for p in spec.permissions}
                want_grantable = {p.value for p in spec.grantable}
                exp = expected.setdefault(key, (set(), set()))
                exp[0].update(want)
                exp[1].update(want_grantable)
                have, have_grantable, _ = held.get(key, (set(), set(), {}))
                if not (want <= have and want_grantable <= have_grantable):
                    missing.append(
                        {
                            "request_id": request.id,
                            "account": request.account,
                            "grant": spec.to_api(),
                            "lacking": sorted(want - have),
                            "lacking_grant_option": sorted(want_grantable - have_grantable),
                        }
                    )
        in_flight = self._in_flight(expected, held, without)
        unexplained = []
        for (principal, found), (have, have_grantable, resource) in sorted(held.items()):
            exp_perms, exp_grantable = expected.get((principal, found), (set(), set()))
            extra, extra_grantable = have - exp_perms, have_grantable - exp_grantable
            if extra or extra_grantable:
                unexplained.append(
                    {
                        "account": principal,
                        "resource": resource,
                        "permissions": sorted(extra),
                        "grant_option": sorted(extra_grantable),
                    }
                )
        fixed = self._fix(missing, actor=actor) if fix else []
        unexplained_requests = [found.to_json() for found in without]
        report = {
            "checked_at": m._now(),
            "granted_requests": len(granted),
            "missing": missing,
            "unexplained": unexplained,
            "unexplained_requests": unexplained_requests,
            "in_flight": in_flight,
            "fixed": fixed,
        }

        def event(action: str, request_id: str | None, details: dict[str, Any]) -> NewEvent:
            return NewEvent(
                at=m._now(),
                actor=actor,
                action=action,
                request_id=request_id,
                scope="",
                details=details,
            )

        unexplained_action = Action.RECONCILE_UNEXPLAINED.value
        events = [
            event(Action.RECONCILE_MISSING.value, item["request_id"], item) for item in missing
        ]
        if unexplained:
            events.append(event(unexplained_action, None, {"unexplained": unexplained}))
        events += [
            event(
                unexplained_action,
                found["request_id"],
                {"request_without_evidence": found["problems"]},
            )
            for found in unexplained_requests
        ]
        events.append(
            event(
                RECONCILE_RAN,
                None,
                {
                    "fix": fix,
                    "granted_requests": len(granted),
                    "missing": len(missing),
                    "unexplained": len(unexplained),
                    "unexplained_requests": len(unexplained_requests),
                    "in_flight": len(in_flight),
                    "fixed": len([f for f in fixed if f.get("fixed")]),
                },
            )
        )
        m.store.add_report(at=m._now(), actor=actor, fixed=fix, report=report, events=events)
        return report

    def _in_flight(
        self,
        expected: dict[tuple[str, str], tuple[set[str], set[str]]],
        held: dict[tuple[str, str], tuple[set[str], set[str], dict[str, Any]]],
        without: list[evidence.Evidence],
    ) -> list[dict[str, Any]]:
        """Grants held for requests still granting, partly granted, or being revoked.

        They are explained by a request on its way (the periodic job finishes it), so they
        count as expected and are listed apart, never as unexplained; a request without
        evidence explains nothing, and is added to ``without``.
        """
        m = self.market
        found = []
        going = m.store.requests(statuses=[Status.GRANTING, Status.FAILED])
        ending = m.store.requests(statuses=[Status.REVOKING, Status.REVOKE_FAILED])
        coming, bad = evidence.explained(m.store, going)
        leaving, bad_ending = evidence.explained(m.store, ending, ending=True)
        without += bad + bad_ending
        for request in [*coming, *leaving]:
            for spec in m.grant_plan(request):
                key = (spec.principal, _resource_key(spec.resource))
                have, have_grantable, _ = held.get(key, (set(), set(), {}))
                want = {p.value for p in spec.permissions} & have
                want_grantable = {p.value for p in spec.grantable} & have_grantable
                if not want and not want_grantable:
                    continue
                exp = expected.setdefault(key, (set(), set()))
                exp[0].update(want)
                exp[1].update(want_grantable)
                found.append(
                    {
                        "request_id": request.id,
                        "status": request.status.value,
                        "account": request.account,
                        "grant": spec.to_api(),
                        "held": sorted(want),
                    }
                )
        return found

    def _fix(self, missing: list[dict[str, Any]], *, actor: str) -> list[dict[str, Any]]:
        m = self.market
        fixed = []
        for item in missing:
            current = m.store.get(item["request_id"])
            if current is None or current.status is not Status.GRANTED:
                fixed.append(
                    {
                        **item,
                        "fixed": False,
                        "error": "the request is no longer granted; nothing was re-applied",
                    }
                )
                continue
            found = evidence.check(m.store, current)  # again: the store may have changed
            if not found.ok:
                fixed.append({**item, "fixed": False, "error": found.refusal().message})
                continue
            api = item["grant"]
            spec = GrantSpec(
                principal=api["Principal"]["DataLakePrincipalIdentifier"],
                resource=api["Resource"],
                permissions=tuple(Permission(p) for p in api["Permissions"]),
                grantable=tuple(Permission(p) for p in api["PermissionsWithGrantOption"]),
            )
            try:
                m.grants.grant(spec)
            except MeshError as exc:
                fixed.append({**item, "fixed": False, "error": exc.message})
                continue
            fixed.append({**item, "fixed": True})
            m.store.append(
                NewEvent(
                    at=m._now(),
                    actor=actor,
                    action=Action.RECONCILE_FIXED.value,
                    request_id=item["request_id"],
                    scope="",
                    details={"call": api},
                )
            )
        return fixed
