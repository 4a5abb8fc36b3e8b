"""Nothing stays granting or revoking: crashes, lost writes and faults end in a named state.

A process can stop anywhere between "approved" and "granted": after Lake Formation applied a
grant but before the store recorded it, or with the store refusing the write. These tests
stop it at those points (by making the next store write or AWS call fail as a crash would),
then let the periodic job take the request over once it is stale, against moto over HTTP.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mesh.errors import AwsUnavailable, Conflict, InFlight, InvalidInput, NotFound
from mesh.grants import LakeFormation
from mesh.lifecycle import TICK_ACTOR
from mesh.models import Action, GrantSpec, Status
from mesh.services import Services
from mesh.store import Store
from tests.support import one_by_one
from tests.test_lifecycle import (  # noqa: F401 - fixtures are found by name
    START,
    Clock,
    Rig,
    empty_lake_formation,
    fresh_account,
    holds,
    make_rig,
    moto_for_every_client,
    seeded,
    wired,
)

CLEAN = {"database": "supply_chain", "table": "inventory"}  # granted at once
PII = {"database": "sales_orders", "table": "customers"}  # waits for sam (Sales)


@dataclass
class CountingLakeFormation:
    """The real adapter, counting grants, and able to fail like a crash or a lost answer."""

    real: LakeFormation
    grants: list[str] = field(default_factory=list)
    timeout_after_apply: int = 0  # the next grants are applied, then their answer is lost
    throttle: int = 0  # the next grants are refused before anything is applied
    refuse_holds: int = 0  # the next reads of what is held fail

    def grant(self, spec: GrantSpec) -> dict[str, Any]:
        self.grants.append(spec.key)
        if self.throttle:
            self.throttle -= 1
            raise AwsUnavailable("Rate exceeded.", code="ThrottlingException")
        made = self.real.grant(spec)
        if self.timeout_after_apply:
            self.timeout_after_apply -= 1
            raise AwsUnavailable(
                "Lake Formation did not answer in time (read timeout).", code="ReadTimeoutError"
            )
        return made

    def revoke(self, spec: GrantSpec) -> dict[str, Any]:
        return self.real.revoke(spec)

    def batch_revoke(self, specs: Any) -> Any:
        return one_by_one(self.revoke, specs)

    def holds(self, spec: GrantSpec) -> bool:
        if self.refuse_holds:
            self.refuse_holds -= 1
            raise AwsUnavailable(
                "Lake Formation could not be reached.", code="EndpointConnectionError"
            )
        return self.real.holds(spec)

    def list_permissions(self, **filters: Any) -> list[dict[str, Any]]:
        return self.real.list_permissions(**filters)


@pytest.fixture
def lf(wired: Services) -> CountingLakeFormation:
    return CountingLakeFormation(real=wired.lakeformation)


@pytest.fixture
def rig(wired: Services, tmp_path: Path, lf: CountingLakeFormation) -> Rig:
    return make_rig(wired, tmp_path, account=fresh_account(), clock=Clock(START), grants=lf)


def crash_on_write(monkeypatch: pytest.MonkeyPatch, *, after: int = 0) -> None:
    """Make the store's request writes fail, after ``after`` of them succeed: a process that
    stopped, or a disk that filled, between Lake Formation's answer and the store."""
    real = Store.transition
    left = [after]

    def failing(self: Store, *args: Any, **kwargs: Any) -> Any:
        if left[0] <= 0:
            raise sqlite3.OperationalError("database or disk is full")
        left[0] -= 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "transition", failing)


def past_stale(rig: Rig) -> None:
    rig.clock.advance(timedelta(seconds=rig.market.stale_granting + 1))


def approve_with_lost_write(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> str:
    """sam approves carol's PII request; the grant is made, then the store write fails."""
    request = rig.submit(**PII)
    with monkeypatch.context() as patch:
        crash_on_write(patch)
        with pytest.raises(InFlight, match="still granting"):
            rig.market.approve(request.id, "sam")
    return request.id


# Takeover of a stale granting request --------------------------------------------------------


def test_approval_whose_grant_was_made_but_not_recorded_is_left_granting_with_a_sentence(
    rig: Rig, lf: CountingLakeFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN / WHEN the store cannot record the grant Lake Formation just made
    request_id = approve_with_lost_write(rig, monkeypatch)
    # THEN the request is still granting (for the job), and Lake Formation holds the grant
    assert rig.status(request_id) is Status.GRANTING
    assert lf.grants == ["table sales_orders.customers"]
    assert all(holds(spec) for spec in rig.market.grant_plan(rig.store.get(request_id)))  # type: ignore[arg-type]


def test_tick_leaves_a_granting_request_alone_until_it_is_stale(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id = approve_with_lost_write(rig, monkeypatch)
    # WHEN the job runs before MESH_STALE_GRANTING has passed
    report = rig.lifecycle.tick()
    # THEN it does not touch a grant that may still be under way
    assert report.taken_over == []
    assert rig.status(request_id) is Status.GRANTING


def test_tick_takes_over_a_stale_grant_records_what_is_held_and_grants_nothing_twice(
    rig: Rig, lf: CountingLakeFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a grant made in Lake Formation whose outcome was never recorded
    request_id = approve_with_lost_write(rig, monkeypatch)
    # WHEN the job runs once the request is stale
    past_stale(rig)
    report = rig.lifecycle.tick()
    # THEN it took the request over, found the grant held, and ended it granted
    assert report.taken_over == [request_id]
    assert report.errors == []
    ended = rig.store.get(request_id)
    assert ended is not None and ended.status is Status.GRANTED
    assert ended.grants_done == ("table sales_orders.customers",)
    assert lf.grants == ["table sales_orders.customers"]  # no second GrantPermissions
    actions = rig.actions(request_id)
    assert actions.count(Action.TAKEN_OVER.value) == 1
    assert Action.GRANT_FOUND.value in actions
    assert actions.index(Action.TAKEN_OVER.value) < actions.index(Action.GRANT_SUCCEEDED.value)


def test_tick_takes_over_a_stale_grant_that_was_never_made_and_makes_it(
    rig: Rig, lf: CountingLakeFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a whole-database request that stopped before any grant was made
    request = rig.submit(database="sales_orders")
    with monkeypatch.context() as patch:
        patch.setattr(LakeFormation, "grant", _killed)
        with pytest.raises(KeyboardInterrupt):
            rig.market.approve(request.id, "sam")
    assert rig.status(request.id) is Status.GRANTING
    # WHEN the job takes it over
    past_stale(rig)
    report = rig.lifecycle.tick()
    # THEN both grants are made once and the request is granted
    assert report.taken_over == [request.id]
    assert rig.status(request.id) is Status.GRANTED
    assert sorted(lf.grants) == [
        "database sales_orders",
        "database sales_orders",  # the killed attempt counted its call before it died
        "table sales_orders.*",
    ]


def _killed(self: LakeFormation, spec: GrantSpec) -> dict[str, Any]:
    raise KeyboardInterrupt  # the process is stopped in the middle of the call


def test_two_ticks_at_once_take_a_stale_grant_over_once(
    rig: Rig, wired: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id = approve_with_lost_write(rig, monkeypatch)
    past_stale(rig)
    other = make_rig(
        wired, tmp_path, account=rig.account, clock=rig.clock, grants=rig.market.grants
    )
    # WHEN two processes' jobs find the same stale request
    first, second = rig.lifecycle.tick(), other.lifecycle.tick()
    # THEN exactly one took it over
    assert sorted(first.taken_over + second.taken_over) == [request_id]
    assert rig.actions(request_id).count(Action.TAKEN_OVER.value) == 1


def test_takeover_that_cannot_read_lake_formation_fails_with_the_cause_and_is_retried(
    rig: Rig, lf: CountingLakeFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id = approve_with_lost_write(rig, monkeypatch)
    past_stale(rig)
    # WHEN Lake Formation cannot be read during the takeover, nor the retry that follows
    lf.refuse_holds = 2
    report = rig.lifecycle.tick()
    # THEN the request is failed with the cause, not left granting
    assert report.taken_over == report.grants_retried == [request_id]
    failed = rig.store.get(request_id)
    assert failed is not None
    assert (failed.status, failed.error_code) == (Status.FAILED, "EndpointConnectionError")
    # AND the next pass retries it (a transient cause) and finds the grant held
    rig.lifecycle.tick()
    assert rig.status(request_id) is Status.GRANTED
    assert lf.grants == ["table sales_orders.customers"]


# Timeouts after the call was applied, and faults during a retry --------------------------------


def test_grant_applied_but_timed_out_is_found_held_by_the_retry_and_not_made_twice(
    rig: Rig, lf: CountingLakeFormation
) -> None:
    # GIVEN a clean request whose grant Lake Formation applied, but whose answer was lost
    lf.timeout_after_apply = 1
    failed = rig.submit(**CLEAN)
    assert (failed.status, failed.error_code) == (Status.FAILED, "ReadTimeoutError")
    # WHEN the job retries it
    report = rig.lifecycle.tick()
    # THEN it records the grant as held and makes no second call
    assert report.grants_retried == [failed.id]
    assert rig.status(failed.id) is Status.GRANTED
    assert lf.grants == ["table supply_chain.inventory"]
    assert Action.GRANT_FOUND.value in rig.actions(failed.id)


def test_glue_fault_while_the_job_retries_a_grant_leaves_it_failed_not_granting(
    rig: Rig, lf: CountingLakeFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    lf.throttle = 1  # refused before it was applied: the retry asks the policy again
    failed = rig.submit(**CLEAN)

    def glue_down(*args: Any, **kwargs: Any) -> Any:
        raise AwsUnavailable("Glue could not be reached.", code="EndpointConnectionError")

    # WHEN Glue fails while the job re-reads the catalog for the retry
    with monkeypatch.context() as patch:
        patch.setattr(rig.market.catalog, "database", glue_down)
        report = rig.lifecycle.tick()
    # THEN the job goes on, and the request is failed with Glue's cause, not granting
    assert report.errors == []
    after = rig.store.get(failed.id)
    assert after is not None
    assert (after.status, after.error_code) == (Status.FAILED, "EndpointConnectionError")
    # AND once Glue is back the next pass grants it
    rig.lifecycle.tick()
    assert rig.status(failed.id) is Status.GRANTED


def test_failure_in_one_part_of_the_job_is_reported_and_the_rest_still_runs(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    expiring = rig.submit(**CLEAN, duration=timedelta(days=1))
    rig.clock.advance(timedelta(days=2))

    def broken(*args: Any, **kwargs: Any) -> None:
        raise NotFound("The escalation rules could not be read.")

    monkeypatch.setattr(rig.lifecycle, "_escalate", broken)
    # WHEN one part of the job fails
    report = rig.lifecycle.tick()
    # THEN it is reported with its sentence, and expiry still ran
    assert report.errors == ["escalate: The escalation rules could not be read."]
    assert report.expired == [expiring.id]


# Revokes that stop half-way ------------------------------------------------------------------


def test_revoke_whose_outcome_was_not_recorded_is_finished_by_the_job(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    granted = rig.submit(**CLEAN)
    with monkeypatch.context() as patch:
        crash_on_write(patch, after=1)  # the claim is written, the outcome is not
        with pytest.raises(InFlight, match="still revoking"):
            rig.lifecycle.revoke(granted.id, "sam", comment="project over")
    assert rig.status(granted.id) is Status.REVOKING
    # WHEN the job runs after the stale time
    past_stale(rig)
    report = rig.lifecycle.tick()
    # THEN the revoke is finished, and Lake Formation holds nothing for it
    assert report.taken_over == [granted.id]
    assert rig.status(granted.id) is Status.REVOKED
    assert not any(holds(spec) for spec in rig.market.grant_plan(granted))


def test_owner_can_revoke_again_a_stale_revoking_request(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    granted = rig.submit(**CLEAN)
    with monkeypatch.context() as patch:
        crash_on_write(patch, after=1)
        with pytest.raises(InFlight):
            rig.lifecycle.revoke(granted.id, "sam", comment="project over")
    with pytest.raises(Conflict):  # still fresh: another process may be revoking it
        rig.lifecycle.revoke(granted.id, "sam", comment="again")
    past_stale(rig)
    assert rig.lifecycle.revoke(granted.id, "sam", comment="again").status is Status.REVOKED


# Resubmission and drift ------------------------------------------------------------------------


def test_resubmitting_a_request_stuck_granting_finishes_the_stuck_one_instead_of_refusing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_id = approve_with_lost_write(rig, monkeypatch)
    past_stale(rig)
    # WHEN carol asks again for the same table
    with pytest.raises(Conflict, match="already granted") as refused:
        rig.submit(**PII)
    # THEN the stuck twin was finished, and she is told it is granted (not "granting")
    assert request_id in refused.value.message
    assert rig.status(request_id) is Status.GRANTED


def test_reconcile_counts_grants_of_requests_in_flight_apart_from_unexplained_ones(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, empty_lake_formation: None
) -> None:
    request_id = approve_with_lost_write(rig, monkeypatch)
    # WHEN drift is checked while the request is still granting
    report = rig.lifecycle.reconcile(fix=False)
    # THEN its grant is in flight, not unexplained
    assert report["unexplained"] == []
    assert [(i["request_id"], i["status"]) for i in report["in_flight"]] == [
        (request_id, "granting")
    ]


def test_tick_actor_is_recorded_on_a_takeover(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    request_id = approve_with_lost_write(rig, monkeypatch)
    past_stale(rig)
    rig.lifecycle.tick()
    taken = rig.market.audit(request_id=request_id, action=Action.TAKEN_OVER.value)
    assert [e.actor for e in taken] == [TICK_ACTOR]
    assert taken[0].details["status"] == "granting"


# Target accounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "says"),
    [("123456789012", "central catalog's own account"), ("000000000000", "not a real AWS")],
)
def test_admin_cannot_grant_to_the_central_account_or_to_all_zeros(
    rig: Rig, account: str, says: str
) -> None:
    # GIVEN ada, an admin, who may type any account id
    # WHEN she asks for the central catalog's account or 000000000000
    with pytest.raises(InvalidInput, match=says):
        rig.submit("ada", **CLEAN, account=account)
    # THEN nothing is stored
    assert rig.store.requests() == []


# Notices a stopped process never queued ----------------------------------------------------------


def kinds(rig: Rig, request_id: str) -> list[str]:
    return [n["kind"] for n in rig.store.notifications(request_id=request_id)]


def test_decision_notice_lost_to_a_crash_is_queued_by_the_job_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, wired: Services, tmp_path: Path
) -> None:
    # GIVEN sam approves, and the process stops after the grant, before queueing the notice
    request = rig.submit(**PII)
    with monkeypatch.context() as patch:
        patch.setattr(rig.outbox, "decision", _killed_notice)
        with pytest.raises(KeyboardInterrupt):
            rig.market.approve(request.id, "sam", comment="fine")
    assert rig.status(request.id) is Status.GRANTED
    assert "decision" not in kinds(rig, request.id)
    # WHEN two jobs run after the stale time
    assert rig.lifecycle.tick().notices_recovered == []  # too fresh: the process may still
    past_stale(rig)
    other = make_rig(
        wired, tmp_path, account=rig.account, clock=rig.clock, grants=rig.market.grants
    )
    recovered = rig.lifecycle.tick().notices_recovered + other.lifecycle.tick().notices_recovered
    # THEN the decision notice is queued exactly once, and audited
    assert recovered == [request.id]
    assert kinds(rig, request.id).count("decision") == 1
    assert Action.NOTICE_RECOVERED.value in rig.actions(request.id)
    assert rig.lifecycle.tick().notices_recovered == []


def test_approval_request_lost_to_a_crash_is_queued_by_the_job(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(rig.outbox, "approval_request", _killed_notice)
        with pytest.raises(KeyboardInterrupt):
            rig.submit(**PII)
    [waiting] = rig.store.requests()
    assert kinds(rig, waiting.id) == []
    past_stale(rig)
    assert rig.lifecycle.tick().notices_recovered == [waiting.id]
    assert kinds(rig, waiting.id) == ["approval_request"]


def _killed_notice(*args: Any, **kwargs: Any) -> int:
    raise KeyboardInterrupt  # the process stops between the change and the outbox
