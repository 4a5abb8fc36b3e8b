"""What evidence a grant needs: the request's verified audit rows (mesh/evidence.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mesh import evidence
from mesh.models import AccessRequest, Status, Step
from mesh.store import NewEvent, Store

KEY = "audit-evidence-tests-key-Rt5Yu8Io2Pa4Sd7Fg1Hj3K"
REQUEST = AccessRequest(
    id="r-0000abcd",
    status=Status.GRANTING,
    database="sales_orders",
    table="customers",
    account="444455556666",
    requester="carol",
    reason="churn study",
    created_at="2026-01-01T00:00:00.000Z",
    updated_at="2026-01-01T00:00:00.000Z",
)
TWO_STEPS = [
    Step(approvers="owner").to_json(),
    Step(approvers="privacy-office", quorum=2).to_json(),
]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    made = Store(tmp_path / "mesh.db", audit_key=KEY)
    made.migrate()
    return made


def row(actor: str, action: str, request: AccessRequest = REQUEST, **details: Any) -> NewEvent:
    return NewEvent(
        at="2026-01-01T00:00:00.000Z",
        actor=actor,
        action=action,
        request_id=request.id,
        scope=str(request.scope),
        details=details,
    )


def submitted(store: Store, *, needs_approval: bool, **verdict: Any) -> None:
    store.append(
        row("carol", "request_submitted", account=REQUEST.account, reason=REQUEST.reason),
        row("policy", "policy_evaluated", needs_approval=needs_approval, **verdict),
    )


# What explains a grant ------------------------------------------------------------------


def test_a_submission_and_a_verdict_without_approval_explain_a_grant_at_once(
    store: Store,
) -> None:
    submitted(store, needs_approval=False, steps=[])
    assert evidence.check(store, REQUEST).ok


def test_each_step_needs_its_quorum_of_verified_approvals_by_others(store: Store) -> None:
    # GIVEN a verdict with two steps, the second needing two people
    submitted(store, needs_approval=True, steps=TWO_STEPS)
    # WHEN only the owner and one privacy officer approved (and carol approved herself)
    store.append(
        row("sam", "approved", step=1),
        row("priya", "approved", step=2),
        row("carol", "approved", step=2),
    )
    # THEN step 2 is short by one
    found = evidence.check(store, REQUEST)
    assert found.problems == ["step 2 (privacy-office) needs 2 verified approvals and has 1"]
    # WHEN a second privacy officer approves, THEN the grant is explained
    store.append(row("pia", "approved", step=2))
    assert evidence.check(store, REQUEST).ok


def test_a_verdict_from_before_approval_steps_needs_one_approval(store: Store) -> None:
    # GIVEN a verdict without steps (as written before migration 0008), and an approval
    # that names no step
    submitted(store, needs_approval=True)
    assert not evidence.check(store, REQUEST).ok
    store.append(row("sam", "approved"))
    assert evidence.check(store, REQUEST).ok


# What does not ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changed", "problem"),
    [
        ({"requester": "dan"}, "submitted by carol, not dan"),
        ({"account": "777788889999"}, "submitted for account 444455556666"),
        ({"database": "hr_people"}, "submitted for sales_orders.customers, not hr_people"),
    ],
)
def test_a_request_that_differs_from_its_submission_is_unexplained(
    store: Store, changed: dict[str, str], problem: str
) -> None:
    # GIVEN carol's submission and verdict, and the stored request changed since
    submitted(store, needs_approval=False, steps=[])
    forged = AccessRequest(**{**REQUEST.__dict__, **changed})
    # THEN the evidence does not explain it, and says why
    found = evidence.check(store, forged)
    assert not found.ok and any(problem in p for p in found.problems)


def test_no_rows_at_all_is_unexplained_and_the_refusal_says_what_is_missing(
    store: Store,
) -> None:
    found = evidence.check(store, REQUEST)
    assert found.problems == [
        "no verified audit row records its submission",
        "no verified audit row records the policy's verdict",
    ]
    with pytest.raises(evidence.Unexplained, match="nothing was granted"):
        evidence.require(store, REQUEST)


def test_a_request_that_was_revoked_explains_no_new_grant_but_explains_its_revoke(
    store: Store,
) -> None:
    # GIVEN a granted request that was then revoked
    submitted(store, needs_approval=False, steps=[])
    store.append(row("sam", "revoke_requested", comment="no longer needed"))
    # THEN a grant is unexplained, and a revoke under way is explained
    assert any("revoke requested" in p for p in evidence.check(store, REQUEST).problems)
    assert evidence.check(store, REQUEST, ending=True).ok


def test_a_row_whose_mac_fails_is_no_evidence(store: Store) -> None:
    # GIVEN a verdict without approval, and a forged approval added without the key
    submitted(store, needs_approval=True, steps=[Step(approvers="owner").to_json()])
    with sqlite3.connect(store.path, isolation_level=None) as connection:
        connection.execute(
            "INSERT INTO audit (at, actor, action, request_id, scope, details, chain) "
            "VALUES ('t', 'sam', 'approved', ?, ?, '{\"step\": 1}', ?)",
            [REQUEST.id, str(REQUEST.scope), "00" * 32],
        )
    # THEN the forged row counts for nothing and is named
    found = evidence.check(store, REQUEST)
    assert "audit row 3 (approved) fails its chain" in found.problems
    assert "step 1 (owner) needs 1 verified approval and has 0" in found.problems


def test_another_requests_rows_are_no_evidence_for_this_one(store: Store) -> None:
    # GIVEN a full record for another request of carol's
    other = AccessRequest(**{**REQUEST.__dict__, "id": "r-0000ffff"})
    store.append(
        row("carol", "request_submitted", other, account=other.account),
        row("policy", "policy_evaluated", other, needs_approval=False, steps=[]),
    )
    # THEN this request is still unexplained
    assert not evidence.check(store, REQUEST).ok


# Quorum "all" and n: the count the store used -------------------------------------------

ALL_STEP = [Step(approvers="privacy-office", quorum="all").to_json()]


def test_an_all_step_needs_as_many_approvers_as_its_approvals_recorded(store: Store) -> None:
    # GIVEN a verdict whose one step needs everyone in privacy-office (three people then)
    submitted(store, needs_approval=True, steps=ALL_STEP)
    # WHEN one of the three approved
    store.append(row("priya", "approved", step=1, needed=3))
    # THEN one approval does not explain a grant
    found = evidence.check(store, REQUEST)
    assert found.problems == ["step 1 (privacy-office) needs 3 verified approvals and has 1"]
    # WHEN the other two approve, THEN it does
    store.append(row("pia", "approved", step=1, needed=3), row("pat", "approved", step=1, needed=3))
    assert evidence.check(store, REQUEST).ok


def test_an_all_step_whose_approvals_record_no_count_is_unexplained(store: Store) -> None:
    # GIVEN an "all" step and an approval that does not say how many were needed
    submitted(store, needs_approval=True, steps=ALL_STEP)
    store.append(row("priya", "approved", step=1))
    # THEN nothing shows that everyone approved
    found = evidence.check(store, REQUEST)
    assert found.problems == [
        "step 1 (privacy-office) needs all its approvers, and no verified approval records "
        "how many they are"
    ]


def test_a_quorum_of_two_is_not_filled_by_one_approval_however_often_it_is_recorded(
    store: Store,
) -> None:
    submitted(store, needs_approval=True, steps=[Step(approvers="owner", quorum=2).to_json()])
    store.append(row("sam", "approved", step=1, needed=1), row("sam", "approved", step=1))
    found = evidence.check(store, REQUEST)
    assert found.problems == ["step 1 (owner) needs 2 verified approvals and has 1"]


# How long: the duration and end date submitted --------------------------------------------


@pytest.mark.parametrize(
    ("submitted_with", "stored"),
    [
        ({"duration_seconds": 86400, "expires_on": None}, {"duration_seconds": None}),
        ({"duration_seconds": 86400, "expires_on": None}, {"duration_seconds": 10**9}),
        ({"duration_seconds": None, "expires_on": "2026-02-01"}, {"expires_on": None}),
        ({"duration_seconds": None, "expires_on": "2026-02-01"}, {"expires_on": "2099-01-01"}),
    ],
)
def test_a_request_whose_duration_differs_from_its_submission_is_unexplained(
    store: Store, submitted_with: dict[str, Any], stored: dict[str, Any]
) -> None:
    # GIVEN a time-boxed submission, and the stored request made longer or permanent since
    timed = AccessRequest(**{**REQUEST.__dict__, **submitted_with})
    store.append(
        row("carol", "request_submitted", account=REQUEST.account, **submitted_with),
        row("policy", "policy_evaluated", needs_approval=False, steps=[]),
    )
    assert evidence.check(store, timed).ok
    forged = AccessRequest(**{**timed.__dict__, **stored})
    # THEN the evidence refuses it and names the difference
    found = evidence.check(store, forged)
    assert not found.ok and "it was submitted with" in found.problems[0]


def test_a_granted_request_whose_expiry_was_moved_later_or_cleared_is_unexplained(
    store: Store,
) -> None:
    # GIVEN a day's access, granted until 2 January
    timed = AccessRequest(**{**REQUEST.__dict__, "duration_seconds": 86400})
    store.append(
        row("carol", "request_submitted", account=REQUEST.account, duration_seconds=86400),
        row("policy", "policy_evaluated", needs_approval=False, steps=[]),
        row("policy", "grant_succeeded", expires_at="2026-01-02T00:00:00.000Z"),
    )
    granted = AccessRequest(**{**timed.__dict__, "expires_at": "2026-01-02T00:00:00.000Z"})
    assert evidence.check(store, granted, ending=True).ok
    # THEN the same request stored with a later expiry, or none, is unexplained
    for expires_at in ("2099-01-01T00:00:00.000Z", None):
        moved = AccessRequest(**{**granted.__dict__, "expires_at": expires_at})
        found = evidence.check(store, moved, ending=True)
        assert any("audit row 3 granted it until 2026-01-02" in p for p in found.problems)
