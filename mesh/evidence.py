"""Evidence for a grant: the verified audit rows that explain why a request may hold access.

A row in ``requests`` says what a request is, but anyone who can write the database file can
forge one (``status='granted'``, no approval, no audit row). So before any grant is made
(a decision, a retry, the periodic job, ``reconcile --fix``), and before a granted request
may explain what Lake Formation holds, the request's own audit rows must show, each with a
MAC that holds (mesh/auditchain.py):

- its submission, by its requester, for its account and scope;
- the policy's verdict (the latest one, for a request judged again on retry);
- each approval that verdict required, step by step, by people other than the requester;
- and nothing that ended it (denied, cancelled, revoked, expired).

Otherwise the request is unexplained: nothing is granted for it, and it is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh.errors import Forbidden
from mesh.models import OWNER_STEP, AccessRequest, Action, AuditEvent, Step
from mesh.store import Store

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


def check(store: Store, request: AccessRequest, *, ending: bool = False) -> Evidence:
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


def require(store: Store, request: AccessRequest) -> None:
    """Raise ``Unexplained`` unless the evidence explains granting ``request``."""
    found = check(store, request)
    if not found.ok:
        raise found.refusal()


def explained(
    store: Store, requests: Sequence[AccessRequest], *, ending: bool = False
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
    return problems


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
        people = {
            e.actor
            for e in rows
            if e.id > verdict.id
            and e.action == Action.APPROVED.value
            and e.details.get("step") in ((number, None) if legacy else (number,))
            and e.actor != request.requester
        }
        need = step.quorum if isinstance(step.quorum, int) else 1
        if len(people) < need:
            problems.append(
                f"step {number} ({step.approvers}) needs {need} verified approval"
                f"{'s' if need != 1 else ''} and has {len(people)}"
            )
    return problems
