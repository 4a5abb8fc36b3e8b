"""Evidence for a grant: the verified audit rows that explain why a request may hold access.

A row in ``requests`` says what a request is, but anyone who can write the database file can
forge one (``status='granted'``, no approval, no audit row). So before any grant is made
(a decision, a retry, the periodic job, ``reconcile --fix``), and before a granted request
may explain what Lake Formation holds, the request's own audit rows must show, each with a
MAC that holds (mesh/auditchain.py):

- its submission, by its requester, for its account, scope (columns included) and duration
  or end date;
- the policy's verdict (the latest one, for a request judged again on retry);
- each approval that verdict required, step by step, by people other than the requester;
- no expiry before its first grant (the grant computes it from the submitted duration),
  and after it one no later than the first grant recorded;
- and nothing that ended it (denied, cancelled, revoked, expired).

Otherwise the request is unexplained: nothing is granted for it, and it is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh.errors import Forbidden
from mesh.models import OWNER_STEP, AccessRequest, Action, AuditEvent, Step
from mesh.store import AnyStore

POLICY_ACTOR = "policy"

# Rows after which a request may never hold access again.
_ENDINGS = frozenset(
    {
        Action.DENIED.value,
        Action.CANCELLED.value,
        Action.REVOKE_REQUESTED.value,
        Action.EXPIRY_DUE.value,
        Action.REVOKE_SUCCEEDED.value,
    }
)


class Unexplained(Forbidden):
    """A grant refused: the request's verified audit rows do not explain it."""


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """Whether a request's verified audit rows explain a grant, and if not, why not."""

    request_id: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "ok": self.ok, "problems": self.problems}

    def refusal(self) -> Unexplained:
        return Unexplained(
            f"Request {self.request_id} is unexplained, so nothing was granted for it: "
            + "; ".join(self.problems)
            + ". Run `python -m mesh audit verify` and compare the store with a backup."
        )


def check(store: AnyStore, request: AccessRequest, *, ending: bool = False) -> Evidence:
    """The evidence for granting ``request`` now (see the module's docstring).

    ``ending`` judges a request on its way out (revoking): a row that ended it is expected.
    """
    rows = store.verified_rows(request.id)
    problems = [
        f"audit row {event.id} ({event.action}) fails its chain" for event, ok in rows if not ok
    ]
    good = [event for event, ok in rows if ok]
    submitted = next((e for e in good if e.action == Action.REQUEST_SUBMITTED.value), None)
    if submitted is None:
        problems.append("no verified audit row records its submission")
    else:
        problems += _submission_problems(submitted, request)
    problems += _expiry_problems(good, request)
    verdicts = [
        e for e in good if e.action == Action.POLICY_EVALUATED.value and e.actor == POLICY_ACTOR
    ]
    if not verdicts:
        problems.append("no verified audit row records the policy's verdict")
    else:
        problems += _approval_problems(verdicts[-1], good, request)
    ended = next((e for e in good if e.action in _ENDINGS), None)
    if ended is not None and not ending:
        problems.append(
            f"audit row {ended.id} records that it was {ended.action.replace('_', ' ')}"
        )
    return Evidence(request_id=request.id, problems=problems)


def require(store: AnyStore, request: AccessRequest) -> None:
    """Raise ``Unexplained`` unless the evidence explains granting ``request``."""
    found = check(store, request)
    if not found.ok:
        raise found.refusal()


def explained(
    store: AnyStore, requests: Sequence[AccessRequest], *, ending: bool = False
) -> tuple[list[AccessRequest], list[Evidence]]:
    """Split ``requests`` into those the evidence explains, and the evidence of the others."""
    good, bad = [], []
    for request in requests:
        found = check(store, request, ending=ending)
        if found.ok:
            good.append(request)
        else:
            bad.append(found)
    return good, bad


def _submission_problems(row: AuditEvent, request: AccessRequest) -> list[str]:
    problems = []
    if row.actor != request.requester:
        problems.append(f"it was submitted by {row.actor}, not {request.requester}")
    if row.details.get("account") != request.account:
        problems.append(f"it was submitted for account {row.details.get('account')}")
    if row.scope != str(request.scope):
        problems.append(f"it was submitted for {row.scope}, not {request.scope}")
    # How long: recorded since 2026-12 (a submission row from before names neither, and the
    # request's own columns are all there is).
    for key, value in (
        ("duration_seconds", request.duration_seconds),
        ("expires_on", request.expires_on),
    ):
        if key in row.details and row.details[key] != value:
            problems.append(
                f"it was submitted with {key.replace('_', ' ')} {row.details[key]}, not {value}"
            )
    return problems


def _expiry_problems(rows: Sequence[AuditEvent], request: AccessRequest) -> list[str]:
    """An expiry later than (or cleared from) the one the first verified grant recorded.

    A grant keeps the expiry it was first given (granting.py), so the first row is the one
    the request's column must match; later grants of the same request record their own.
    """
    first = next((e for e in rows if e.action == Action.GRANT_SUCCEEDED.value), None)
    if first is None:
        # Before the first grant the expiry is not set: the grant computes it from the
        # submitted duration, so a value here was written behind the app's back.
        if request.expires_at is not None:
            return [f"it expires {request.expires_at}, though no verified grant gave it one"]
        return []
    recorded = first.details.get("expires_at")
    if not isinstance(recorded, str):
        return []
    if request.expires_at is None or request.expires_at > recorded:
        return [
            f"it expires {'never' if request.expires_at is None else request.expires_at}, "
            f"and audit row {first.id} granted it until {recorded}"
        ]
    return []


def granted_until(store: AnyStore, request: AccessRequest) -> str | None:
    """The expiry the request's first verified grant recorded, or None (none recorded).

    The expiry job ends access at the earlier of this and the request's column, so a
    later date written into the column is never enforced.
    """
    for event, ok in store.verified_rows(request.id):
        if ok and event.action == Action.GRANT_SUCCEEDED.value:
            recorded = event.details.get("expires_at")
            return recorded if isinstance(recorded, str) else None
    return None


def ends_at(store: AnyStore, request: AccessRequest) -> str | None:
    """When the request's access ends: the earlier of its column and its verified grant."""
    recorded = granted_until(store, request)
    found = [at for at in (request.expires_at, recorded) if at]
    return min(found) if found else None


def _approval_problems(
    verdict: AuditEvent, rows: Sequence[AuditEvent], request: AccessRequest
) -> list[str]:
    """What approvals the verdict required and the verified rows lack."""
    if not verdict.details.get("needs_approval"):
        return []
    if "steps" not in verdict.details:
        # A verdict from before approval steps (migration 0008): one owner approved, and
        # approvals then named no step.
        steps, legacy = [OWNER_STEP], True
    else:
        legacy = False
        try:
            steps = [Step.from_json(raw) for raw in verdict.details.get("steps") or []]
        except (KeyError, TypeError, ValueError):
            return [f"the verdict in audit row {verdict.id} has unreadable steps"]
    if not steps:
        return [f"the verdict in audit row {verdict.id} needs approval but names no step"]
    problems = []
    for number, step in enumerate(steps, start=1):
        approvals = [
            e
            for e in rows
            if e.id > verdict.id
            and e.action == Action.APPROVED.value
            and e.details.get("step") in ((number, None) if legacy else (number,))
            and e.actor != request.requester
        ]
        people = {e.actor for e in approvals}
        need = _quorum(step, approvals)
        if need is None:
            problems.append(
                f"step {number} ({step.approvers}) needs all its approvers, and no verified "
                "approval records how many they are"
            )
        elif len(people) < need:
            problems.append(
                f"step {number} ({step.approvers}) needs {need} verified approval"
                f"{'s' if need != 1 else ''} and has {len(people)}"
            )
    return problems


def _quorum(step: Step, approvals: Sequence[AuditEvent]) -> int | None:
    """How many distinct approvers fill ``step``: any is one, n is n, and "all" what the
    store counted against when it recorded the step's latest approval (``needed``: who was
    in the group then, but the requester). None for an "all" step whose approvals do not
    record it: none yet, or approvals written before they recorded it, which cannot show
    that everyone approved."""
    if step.quorum == "any":
        return 1
    if isinstance(step.quorum, int) and not isinstance(step.quorum, bool):
        return max(1, step.quorum)
    if step.quorum != "all":
        try:
            return max(1, int(step.quorum))  # a quorum read back as text: "2"
        except (TypeError, ValueError):
            return None
    recorded = [e.details.get("needed") for e in approvals]
    counted = [n for n in recorded if isinstance(n, int) and not isinstance(n, bool)]
    return max(1, counted[-1]) if counted else None
