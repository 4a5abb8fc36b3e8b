"""The store contract: what every store adapter promises (mesh/store/port.py, StorePort).

Every test takes the ``store`` fixture, parametrized over the adapters, and uses only the
port's methods; ``raw`` is the one way round it, a connection of the app's own to the same
database, to show what the database itself refuses. The PostgreSQL adapter runs on the real
server that `scripts/dev test` starts (tests/pgsupport.py): each test gets a copy of a
migrated template database.
The catalog index (mesh.catalog_index) is tested through its public API over the store.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mesh import auditchain
from mesh.approval import DEFAULT
from mesh.catalog_index import CatalogIndex
from mesh.catalog_rows import Query
from mesh.models import OWNER_STEP, AccessRequest, Column, Database, Status, Table
from mesh.store import (
    AlreadyApproved,
    Approval,
    AuditFilters,
    NewEvent,
    PgStore,
    PolicyRecord,
    Store,
    StorePort,
)
from tests import pgsupport
from tests.support import AUDIT_KEY

ADAPTERS = ["sqlite", "postgresql"]
CAROL = "444455556666"
OWNER = "111122223333"
T0 = "2026-01-01T00:00:00.000Z"
T1 = "2026-01-01T00:05:00.000Z"
T2 = "2026-01-01T00:10:00.000Z"
T3 = "2026-01-01T00:15:00.000Z"
RACERS = 8


# Adapters -------------------------------------------------------------------------------


@dataclasses.dataclass
class Raw:
    """The adapter's database reached directly: ``execute`` runs one statement in its own
    transaction; ``error`` is the class the database raises when it refuses one."""

    execute: Callable[[str], None]
    error: type[Exception]


@pytest.fixture(params=ADAPTERS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened: Any
    if request.param == "sqlite":
        path = tmp_path / "mesh.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        opened = Store(path, audit_key=AUDIT_KEY)
        yield opened
        opened.close()
    else:
        template = request.getfixturevalue("pg_template")
        server = request.getfixturevalue("pg_server_url")
        url = pgsupport.fresh_database(server, template=pgsupport.database_name(template))
        opened = PgStore(url, audit_key=AUDIT_KEY)
        yield opened
        opened.close()
        pgsupport.drop_database(url)


@pytest.fixture(params=ADAPTERS)
def new_handle(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Open another handle (an unmigrated store object) on one fresh, empty database."""
    opened: list[Any] = []
    fresh: list[str] = []  # the one PostgreSQL database every handle opens

    def open_one() -> Any:
        if request.param == "sqlite":
            handle = Store(tmp_path / "fresh" / "mesh.db", audit_key=AUDIT_KEY)
        else:
            if not fresh:
                fresh.append(pgsupport.fresh_database(request.getfixturevalue("pg_server_url")))
            handle = PgStore(fresh[0], audit_key=AUDIT_KEY)
        opened.append(handle)
        return handle

    yield open_one
    for handle in opened:
        handle.close()
    for url in fresh:
        pgsupport.drop_database(url)


@pytest.fixture
def raw(store: Any) -> Raw:
    if isinstance(store, Store):

        def execute(statement: str) -> None:
            connection = sqlite3.connect(store.path)
            try:
                with connection:
                    connection.execute(statement)
            finally:
                connection.close()

        return Raw(execute=execute, error=sqlite3.DatabaseError)
    if isinstance(store, PgStore):

        def execute_pg(statement: str) -> None:
            with psycopg.connect(store.url, autocommit=True) as connection:
                connection.execute(statement)  # type: ignore[call-overload]

        return Raw(execute=execute_pg, error=psycopg.Error)
    raise AssertionError(f"no raw access to {store!r}")


# Helpers --------------------------------------------------------------------------------


def a_request(request_id: str = "r-1", **changes: Any) -> AccessRequest:
    """Carol's request for sales_orders.<request_id>, pending, with ``changes``."""
    request = AccessRequest(
        id=request_id,
        status=Status.PENDING_APPROVAL,
        database="sales_orders",
        table=f"t_{request_id.replace('-', '_')}",
        account=CAROL,
        requester="carol",
        reason="churn model",
        created_at=T0,
        updated_at=T0,
    )
    return dataclasses.replace(request, **changes)


def an_event(action: str, request_id: str | None = "r-1", actor: str = "carol") -> NewEvent:
    return NewEvent(
        at=T1,
        actor=actor,
        action=action,
        request_id=request_id,
        scope="sales_orders.customers",
        details={"why": action},
    )


def stored(store: StorePort, request_id: str = "r-1", **changes: Any) -> AccessRequest:
    """Add a request in the given state, with its submitted row; return it as stored."""
    assert (
        store.add_request(a_request(request_id, **changes), [an_event("submitted", request_id)])
        is None
    )
    found = store.get(request_id)
    assert found is not None
    return found


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once, each from a thread of its own; their results in call order."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def chain_is_whole(store: StorePort) -> int:
    """Check every audit row's MAC against the one before; return how many rows."""
    rows, last_id, last_chain, broken = auditchain.walk(store.audit_key, store.iter_chain())
    assert broken is None, broken
    assert (last_id, last_chain) == store.audit_head()
    return rows


# Migrations -----------------------------------------------------------------------------


def test_processes_starting_together_migrate_a_fresh_database_once(
    new_handle: Callable[[], StorePort],
) -> None:
    # GIVEN a fresh database and several processes starting on it at once
    handles = [new_handle() for _ in range(4)]
    # WHEN each migrates it
    applied = race(*[handle.migrate for handle in handles])
    # THEN one applied every named migration, the others found them done
    winners = [names for names in applied if names]
    assert len(winners) == 1 and winners[0] == sorted(winners[0])
    assert applied.count([]) == len(handles) - 1
    assert new_handle().migrate() == []
    # AND the store works from any of them
    stored(handles[0])
    assert handles[-1].get("r-1") is not None


# Request state transitions ------------------------------------------------------------

# Every change of status the use cases make, as (from, to): submit/decide (deciding,
# requesting), grant (granting), retry and take over (requesting), revoke and expire
# (lifecycle).
EDGES = [
    (Status.PENDING_APPROVAL, Status.GRANTING),
    (Status.PENDING_APPROVAL, Status.DENIED),
    (Status.PENDING_APPROVAL, Status.CANCELLED),
    (Status.GRANTING, Status.GRANTED),
    (Status.GRANTING, Status.FAILED),
    (Status.GRANTING, Status.GRANTING),
    (Status.FAILED, Status.GRANTING),
    (Status.FAILED, Status.REVOKING),
    (Status.GRANTED, Status.REVOKING),
    (Status.REVOKE_FAILED, Status.REVOKING),
    (Status.REVOKING, Status.REVOKED),
    (Status.REVOKING, Status.EXPIRED),
    (Status.REVOKING, Status.REVOKE_FAILED),
]


@pytest.mark.parametrize(("source", "target"), EDGES, ids=lambda s: s.value)
def test_a_transition_changes_a_request_in_its_source_status_and_no_other(
    store: StorePort, source: Status, target: Status
) -> None:
    # GIVEN one request in each status
    requests = {s: stored(store, f"r-{s.value}", status=s) for s in Status}
    before = len(store.audit())
    # WHEN each is moved from ``source`` to ``target``
    moved = {
        s: store.transition(
            r.id,
            allowed_from=[source],
            changes={"status": target, "updated_at": T2},
            events=[an_event(f"to_{target.value}", r.id)],
        )
        for s, r in requests.items()
    }
    # THEN only the one in ``source`` changed, with its audit row; the others were refused
    # and are as they were, without one
    assert moved[source] is not None and moved[source].status is target
    assert moved[source].updated_at == T2
    for s, request in requests.items():
        if s is not source:
            assert moved[s] is None
            assert store.get(request.id) == request
    assert [e.request_id for e in store.audit()[before:]] == [requests[source].id]
    chain_is_whole(store)


def test_a_transition_of_an_unknown_request_is_refused(store: StorePort) -> None:
    assert (
        store.transition(
            "r-none",
            allowed_from=list(Status),
            changes={"status": Status.DENIED},
            events=[an_event("denied", "r-none")],
        )
        is None
    )
    assert store.audit() == []


def test_two_decisions_racing_from_two_threads_one_wins(store: StorePort) -> None:
    # GIVEN pending requests, each approved and denied at the same moment by two threads
    outcomes = []
    for n in range(10):
        request = stored(store, f"r-{n}")

        def decide(target: Status, actor: str, request: AccessRequest = request) -> Any:
            return store.transition(
                request.id,
                allowed_from=[Status.PENDING_APPROVAL],
                changes={"status": target, "decided_by": actor, "updated_at": T2},
                events=[an_event(f"decided_{target.value}", request.id, actor)],
            )

        outcomes.append(
            race(
                lambda d=decide: d(Status.GRANTING, "ann"), lambda d=decide: d(Status.DENIED, "bob")
            )
        )
    # THEN for each exactly one decision took, and only the winner's row was written
    for n, pair in enumerate(outcomes):
        winners = [o for o in pair if o is not None]
        assert len(winners) == 1
        rows = [e for e in store.audit(request_id=f"r-{n}") if e.action.startswith("decided")]
        assert [r.actor for r in rows] == [winners[0].decided_by]
        assert store.get(f"r-{n}") == winners[0]
    chain_is_whole(store)


def test_a_stale_request_is_taken_over_once(store: StorePort) -> None:
    # GIVEN a request left in granting since T0, and several processes taking it over
    request = stored(store, status=Status.GRANTING)

    def take_over() -> AccessRequest | None:
        return store.transition(
            request.id,
            allowed_from=[Status.GRANTING],
            changes={"status": Status.GRANTING, "updated_at": T2},
            events=[an_event("taken_over")],
            unchanged_since=request.updated_at,
        )

    # WHEN they claim it at once, each on the updated_at it read
    taken = race(*[take_over] * RACERS)
    # THEN one got it
    assert sum(t is not None for t in taken) == 1
    assert [e.action for e in store.audit()].count("taken_over") == 1


# Approvals ------------------------------------------------------------------------------


def approve(
    store: StorePort, who: str, *, step: int = 0, needed: int = 1, last_step: bool = True
) -> tuple[AccessRequest, bool] | None:
    return store.record_approval(
        Approval(request_id="r-1", step=step, username=who, at=T2, acting_as="owners"),
        needed=needed,
        last_step=last_step,
        granting={"status": Status.GRANTING, "decided_by": who, "updated_at": T2},
        events=[an_event("approved", actor=who)],
        step_events=[an_event("step_completed", actor=who)],
    )


def test_approvals_fill_a_step_then_the_last_step_moves_the_request_to_granting(
    store: StorePort,
) -> None:
    stored(store)
    # WHEN the first of two needed approvals comes
    first = approve(store, "ann", needed=2, last_step=False)
    assert first is not None and first[1] is False and first[0].step == 0
    # THEN the same person cannot fill the second place
    with pytest.raises(AlreadyApproved):
        approve(store, "ann", needed=2, last_step=False)
    # WHEN a second person approves, the step is complete and the next one begins
    second = approve(store, "bob", needed=2, last_step=False)
    assert second is not None and second[1] is True
    assert second[0].step == 1 and second[0].status is Status.PENDING_APPROVAL
    # THEN an approval for the step that is over is refused
    assert approve(store, "cat", step=0, needed=2, last_step=False) is None
    # WHEN the last step's approver approves, the request takes the granting changes
    last = approve(store, "dan", step=1, needed=1, last_step=True)
    assert last is not None and last[0].status is Status.GRANTING and last[0].decided_by == "dan"
    assert [a.username for a in store.approvals("r-1")] == ["ann", "bob", "dan"]
    assert [a.username for a in store.approvals_of(["r-1"])["r-1"]] == ["ann", "bob", "dan"]
    assert [e.action for e in store.audit(request_id="r-1")] == [
        "submitted",
        "approved",
        "approved",
        "step_completed",
        "approved",
        "step_completed",
    ]
    # AND a request no longer pending takes no approval
    assert approve(store, "eve", step=1) is None


def test_two_approvals_racing_from_two_threads_one_wins(store: StorePort) -> None:
    # GIVEN a pending request that needs one approval
    stored(store)
    # WHEN approvers approve at once
    results = race(*[lambda who=f"approver{n}": approve(store, who) for n in range(RACERS)])
    # THEN exactly one approval was recorded and decided it
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0][1] is True
    request = store.get("r-1")
    assert request is not None and request.status is Status.GRANTING
    assert [a.username for a in store.approvals("r-1")] == [request.decided_by]
    assert [e.action for e in store.audit(request_id="r-1")].count("approved") == 1
    chain_is_whole(store)


# Claims (conditional updates) ---------------------------------------------------------


def test_each_claim_is_taken_once_among_racing_passes(store: StorePort) -> None:
    stored(store, "r-p")
    stored(store, "r-g", status=Status.GRANTED)
    escalations = race(
        *[
            lambda: store.claim_escalation(
                "r-p", step=0, at=T2, events=[an_event("escalated", "r-p")]
            )
        ]
        * RACERS
    )
    reminders = race(
        *[lambda: store.claim_reminder("r-p", was=0, level=1, events=[an_event("reminded", "r-p")])]
        * RACERS
    )
    warnings = race(
        *[lambda: store.claim_warning("r-g", at=T2, events=[an_event("warned", "r-g")])] * RACERS
    )
    for claims in (escalations, reminders, warnings):
        assert sum(c is not None for c in claims) == 1
    actions = [e.action for e in store.audit()]
    assert (actions.count("escalated"), actions.count("reminded"), actions.count("warned")) == (
        1,
        1,
        1,
    )
    pending, granted = store.get("r-p"), store.get("r-g")
    assert pending is not None and pending.escalated_at == T2 and pending.reminders_sent == 1
    assert granted is not None and granted.warned_at == T2 and not granted.decision_seen
    # THEN the next level is claimed from the level reached, not from the old one
    assert store.claim_reminder("r-p", was=0, level=2, events=[]) is None
    assert store.claim_reminder("r-p", was=1, level=2, events=[]) is not None


def test_claims_refuse_a_request_in_another_status(store: StorePort) -> None:
    stored(store, "r-g", status=Status.GRANTED)
    stored(store, "r-p")
    assert store.claim_escalation("r-g", step=0, at=T2, events=[an_event("x")]) is None
    assert store.claim_reminder("r-g", was=0, level=1, events=[an_event("x")]) is None
    assert store.claim_warning("r-p", at=T2, events=[an_event("x")]) is None
    assert store.claim_escalation("r-p", step=1, at=T2, events=[an_event("x")]) is None
    assert "x" not in [e.action for e in store.audit()]


# The audit log and its chain ---------------------------------------------------------


def test_the_audit_log_keeps_the_order_written_and_chains_every_row(store: StorePort) -> None:
    stored(store)
    store.append(an_event("grant_attempted"), an_event("grant_succeeded"))
    race(*[lambda n=n: store.append(an_event(f"parallel_{n}", None)) for n in range(RACERS)])
    events = store.audit()
    assert [e.action for e in events[:3]] == ["submitted", "grant_attempted", "grant_succeeded"]
    assert sorted(e.action for e in events[3:]) == sorted(f"parallel_{n}" for n in range(RACERS))
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert events[1].details == {"why": "grant_attempted"}
    assert chain_is_whole(store) == 3 + RACERS


def test_audit_filters_narrow_alike_and_page_back_with_case_ignored(store: StorePort) -> None:
    # GIVEN two requests' rows by two actors, one row's details in mixed case
    stored(store, "r-1")
    stored(store, "r-2")
    store.append(
        an_event("approved", "r-1", actor="sam"),
        dataclasses.replace(an_event("denied", "r-2", actor="sam"), details={"why": "Mixed Case"}),
        dataclasses.replace(an_event("comment", "r-1"), at=T2),
    )

    def ids(**filters: Any) -> list[int]:
        events, total = store.audit_page(AuditFilters(**filters), limit=10)
        assert total == len(events)
        return [e.id for e in events]

    # WHEN the page is filtered by request and dates, actor and action, or text
    # THEN each keeps exactly its rows, newest first
    assert ids(request_id="r-1", since=T1, before=T3) == [5, 3, 1]
    assert ids(request_id="r-1", before=T2) == [3, 1]
    assert ids(request_id="r-1", since=T2) == [5]
    assert ids(actors=("sam",), actions=("denied",)) == [4]
    assert ids(actors=("sam",), since=T1) == [4, 3]
    assert ids(text="mixed case") == ids(text="MIXED") == [4]
    # AND the next page of one request's rows starts below the last one shown
    older, total = store.audit_page(AuditFilters(request_id="r-1"), limit=1, older_than=(T2, 5))
    assert ([e.id for e in older], total) == ([3], 3)
    # AND the export streams the same rows, in id order
    exported = [row[0] for row in store.iter_audit(AuditFilters(actors=("sam",), since=T1))]
    assert exported == [3, 4]


def test_a_negative_limit_reads_every_waiting_request(store: StorePort) -> None:
    # GIVEN three waiting requests WHEN an admin's queue is read whole (limit -1)
    for n in range(3):
        stored(store, f"r-{n}", plan=(OWNER_STEP,), created_at=f"2026-01-01T00:0{n}:00.000Z")
    rows, total = store.pending_page(viewer="admin", everything=True, limit=-1)
    # THEN all three come, oldest first
    assert total == 3 and [r.request.id for r in rows] == ["r-0", "r-1", "r-2"]


def test_text_with_a_nul_character_finds_nothing_and_breaks_nothing(store: StorePort) -> None:
    stored(store)
    assert store.get("r-1\x00") is None
    assert store.audit_page(AuditFilters(text="why\x00"), limit=5) == ([], 0)
    assert store.session("\x00") is None


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit SET actor = 'mallory'", "DELETE FROM audit", "UPDATE audit SET chain = NULL"],
)
def test_the_database_refuses_to_change_or_delete_audit_rows(
    store: StorePort, raw: Raw, statement: str
) -> None:
    stored(store)
    before = store.audit()
    with pytest.raises(raw.error, match="append-only"):
        raw.execute(statement)
    assert store.audit() == before
    chain_is_whole(store)


# Sessions -------------------------------------------------------------------------------


def test_a_session_keeps_its_expiry_is_touched_while_open_and_ends_once(store: StorePort) -> None:
    store.open_session(
        "tok-1",
        "carol",
        at=T0,
        expires_at=T3,
        password_fp="fp",
        client="127.0.0.1",
        events=[an_event("signed_in", None)],
    )
    session = store.session("tok-1")
    assert session is not None
    assert (session.username, session.created_at, session.expires_at) == ("carol", T0, T3)
    assert (session.last_seen_at, session.password_fp, session.revoked_at) == (T0, "fp", "")
    store.touch_session("tok-1", at=T1)
    touched = store.session("tok-1")
    assert touched is not None and touched.last_seen_at == T1
    # WHEN it ends (expired), then is ended again and touched
    store.end_session("tok-1", at=T2, why="expired", events=[an_event("session_expired", None)])
    store.end_session("tok-1", at=T3, why="signed_out")
    store.touch_session("tok-1", at=T3)
    # THEN the first end holds, and a touch no longer moves it
    ended = store.session("tok-1")
    assert ended is not None
    assert (ended.revoked_at, ended.ended_why, ended.last_seen_at) == (T2, "expired", T1)
    assert store.session("tok-unknown") is None
    assert [e.action for e in store.audit()] == ["signed_in", "session_expired"]


# Sign-in throttling ---------------------------------------------------------------------


def attempt(store: StorePort, *, at: str = T1, limit: int = 3) -> tuple[str | None, dict[str, int]]:
    return store.claim_sign_in_attempt(
        {"user:carol": limit, "address:10.0.0.1": 100},
        at=at,
        forget_before=T0,
        locked_until=T3,
        locked_out=lambda: an_event("locked_out", None),
    )


def test_sign_in_attempts_are_counted_and_lock_out_at_the_limit(store: StorePort) -> None:
    assert attempt(store) == (None, {"user:carol": 1, "address:10.0.0.1": 1})
    assert attempt(store) == (None, {"user:carol": 2, "address:10.0.0.1": 2})
    assert attempt(store) == (None, {"user:carol": 3, "address:10.0.0.1": 3})
    # THEN the next ones are refused until the lockout ends, audited only the first time
    assert attempt(store) == (T3, {})
    assert attempt(store, at=T2) == (T3, {})
    assert [e.action for e in store.audit()] == ["locked_out"]
    # AND after it, counting starts again
    assert attempt(store, at=T3)[0] is None


def test_parallel_sign_in_attempts_never_get_more_checks_than_the_limit(store: StorePort) -> None:
    results = race(*[lambda: attempt(store)] * RACERS)
    assert sum(locked is None for locked, _ in results) == 3
    assert sorted(c["user:carol"] for locked, c in results if locked is None) == [1, 2, 3]


def test_a_released_attempt_lifts_its_lockout_and_cleared_failures_start_again(
    store: StorePort,
) -> None:
    for _ in range(3):
        attempt(store)
    store.release_sign_in_attempt("user:carol", limit=3)  # the third one signed in
    store.release_sign_in_attempt("address:10.0.0.1", limit=100)
    assert attempt(store) == (None, {"user:carol": 3, "address:10.0.0.1": 3})
    store.clear_sign_in_failures("user:carol")
    store.clear_sign_in_failures("address:10.0.0.1")
    assert attempt(store) == (None, {"user:carol": 1, "address:10.0.0.1": 1})


def test_old_failures_are_forgotten_but_a_lockout_in_force_is_kept(store: StorePort) -> None:
    for _ in range(3):
        attempt(store)  # carol locked until T3; the address counted 3
    store.claim_sign_in_attempt(
        {"user:dave": 3}, at=T1, forget_before=T0, locked_until=T3, locked_out=lambda: an_event("x")
    )
    assert store.forget_sign_in_failures(at=T2, forget_before=T2) == 2  # the address, dave
    assert attempt(store, at=T2) == (T3, {})


def test_a_refused_cookie_is_audited_once_a_window_with_the_count_between(store: StorePort) -> None:
    def note(at: str, ends: str) -> bool:
        return store.note_refused_cookie(
            "address:10.0.0.9",
            at=at,
            window_ends=ends,
            event=lambda unaudited: dataclasses.replace(
                an_event("cookie_refused", None), details={"unaudited": unaudited}
            ),
        )

    assert note(T0, T1) is True
    assert note(T0, T1) is False
    assert note(T0, T1) is False
    assert note(T2, T3) is True
    assert [e.details for e in store.audit()] == [{"unaudited": 0}, {"unaudited": 2}]


# The outbox -----------------------------------------------------------------------------


def a_notification(store: StorePort) -> int:
    row = {
        "request_id": "r-1",
        "kind": "decision",
        "channel": "sns",
        "target": "arn:aws:sns:us-east-1:444455556666:carol",
        "subject": "Granted",
        "body": "Your request was granted.",
        "status": "pending",
        "attempts": 0,
        "created_at": T0,
        "updated_at": T0,
    }
    return store.add_notification(row, [an_event("notification_queued")])


def test_a_notification_is_claimed_by_one_sender_and_finished(store: StorePort) -> None:
    stored(store)
    nid = a_notification(store)
    # WHEN senders claim it at once
    claims = race(*[lambda: store.claim_notification(nid, at=T1, stale_before=T0)] * RACERS)
    # THEN one holds it, and no one else while it is not stale
    assert claims.count(True) == 1
    assert store.claim_notification(nid, at=T1, stale_before=T0) is False
    # WHEN the holder stopped, a later pass takes it over once its claim is stale
    assert store.claim_notification(nid, at=T3, stale_before=T2) is True
    store.finish_notification(
        nid, {"status": "sent", "sent_at": T3, "attempts": 1}, [an_event("notification_sent")]
    )
    # THEN a sent message is never claimed again
    assert store.claim_notification(nid, at=T3, stale_before=T3) is False
    found = store.notification(nid)
    assert found is not None and (found["status"], found["attempts"]) == ("sent", 1)
    assert store.notification_counts() == {"sent": 1}
    assert [n["id"] for n in store.notifications(request_id="r-1", statuses=["sent"])] == [nid]
    assert [e.action for e in store.audit()][-2:] == ["notification_queued", "notification_sent"]


def test_a_failed_notification_can_be_claimed_again(store: StorePort) -> None:
    stored(store)
    nid = a_notification(store)
    assert store.claim_notification(nid, at=T1, stale_before=T0)
    store.finish_notification(nid, {"status": "failed", "attempts": 1}, [])
    assert store.claim_notification(nid, at=T2, stale_before=T0) is True


# Decision links ----------------------------------------------------------------------


def test_a_link_is_used_once_even_when_clicked_at_once(store: StorePort) -> None:
    assert store.link_used("n-1") is False
    used = race(
        *[
            lambda who=f"owner{n}": store.use_link(
                "n-1", request_id="r-1", action="approve", used_by=who, at=T1
            )
            for n in range(RACERS)
        ]
    )
    assert used.count(True) == 1
    assert store.link_used("n-1") is True
    assert store.use_link("n-2", request_id="r-1", action="deny", used_by="ann", at=T1) is True


# The policy record -----------------------------------------------------------------------


def a_policy(fingerprint: str) -> PolicyRecord:
    return PolicyRecord(
        fingerprint=fingerprint,
        source="policy.yaml",
        text=f"# {fingerprint}",
        activated_at=T1,
        activated_by="admin",
    )


def test_the_first_policy_is_recorded_once_and_a_change_replaces_only_what_it_read(
    store: StorePort,
) -> None:
    assert store.policy_in_force() is None
    # WHEN processes start at once, each with its own policy and none in force
    firsts = race(
        *[
            lambda n=n: store.record_policy(
                a_policy(f"p{n}"), replacing=None, events=[an_event("policy_activated", None)]
            )
            for n in range(RACERS)
        ]
    )
    # THEN one was recorded, and every process was told that one
    in_force = store.policy_in_force()
    assert in_force is not None and all(f == in_force for f in firsts)
    # WHEN two activations replace it at once, and a third replaces one it never read
    changes = race(
        lambda: store.record_policy(a_policy("a"), replacing=in_force.fingerprint, events=[]),
        lambda: store.record_policy(a_policy("b"), replacing=in_force.fingerprint, events=[]),
    )
    assert (
        store.record_policy(a_policy("c"), replacing="stale", events=[]) == store.policy_in_force()
    )
    # THEN one of the two won, both see it, and the stale one changed nothing
    now = store.policy_in_force()
    assert now is not None and now.fingerprint in ("a", "b")
    assert changes == [now, now]
    assert [e.action for e in store.audit()] == ["policy_activated"]


# People known from single sign-on -----------------------------------------------------------


def test_a_persons_claims_are_kept_and_replaced_by_the_next_sign_in(store: StorePort) -> None:
    # GIVEN nobody has signed in
    assert store.person_claims("dana") is None and store.people_claims() == []
    # WHEN dana signs in twice, her groups changed in between, and erin once
    store.remember_person("dana", {"sub": "d-1", "groups": ["sales"]}, at=T0)
    store.remember_person("erin", {"sub": "e-1", "groups": []}, at=T0)
    store.remember_person("dana", {"sub": "d-1", "groups": ["sales", "hr"]}, at=T1)
    # THEN each is known by the last claims, once
    assert store.person_claims("dana") == {"sub": "d-1", "groups": ["sales", "hr"]}
    assert [c["sub"] for c in store.people_claims()] == ["d-1", "e-1"]


# Leases -------------------------------------------------------------------------------------


def test_a_lease_is_held_by_one_until_released_or_run_out(store: StorePort) -> None:
    # GIVEN two ticks racing for the catalog sync's lease
    won = race(
        *[
            lambda who=who: store.claim_lease("sync", holder=who, now=T0, until=T2)
            for who in ("a", "b", "c")
        ]
    )
    # THEN one holds it; the others are refused while it runs
    assert won.count(True) == 1
    holder = "abc"[won.index(True)]
    other = "a" if holder != "a" else "b"
    assert not store.claim_lease("sync", holder=other, now=T1, until=T3)
    # AND its holder may take it again (a long sync extending it)
    assert store.claim_lease("sync", holder=holder, now=T1, until=T3)
    # WHEN it is released by someone else nothing changes; by its holder it is free
    store.release_lease("sync", holder=other)
    assert not store.claim_lease("sync", holder=other, now=T1, until=T3)
    store.release_lease("sync", holder=holder)
    assert store.claim_lease("sync", holder=other, now=T1, until=T2)
    # AND a lease whose holder died runs out at its time
    assert store.claim_lease("sync", holder=holder, now=T2, until=T3)


# The catalog index ------------------------------------------------------------------------


def test_the_catalog_index_stores_and_finds_databases_and_tables(store: StorePort) -> None:
    index = CatalogIndex(store, rules=DEFAULT, fingerprint="f1")
    sales = Database(
        name="sales_orders",
        description="Orders and their customers",
        parameters={"data_owner": OWNER, "data_owner_name": "Sales team"},
    )
    tables = [
        (Table(database="sales_orders", name="customers", columns=(Column(name="email"),)), None),
        (Table(database="sales_orders", name="invoices", description="Billing lines"), None),
    ]
    hr = Database(name="hr_core", description="People", parameters={"data_owner": OWNER})
    index.put([(sales, tables), (hr, [])], at=T1)
    assert index.database_names() == ["hr_core", "sales_orders"]
    assert index.table_names("sales_orders") == ["customers", "invoices"]
    # THEN a search finds by name prefix, description and owner name, names ranked first
    found = index.search(Query(text="custom"))
    assert [(e.database, e.table) for e in found.entries] == [
        ("sales_orders", "customers"),  # by its name, ranked above
        ("sales_orders", None),  # its database, by its description
    ]
    assert [e.table for e in index.search(Query(text="billing")).entries] == ["invoices"]
    by_owner = index.search(Query(text="sales team", kind="database"))
    assert [e.database for e in by_owner.entries] == ["sales_orders"]
    # AND a database gone from Glue goes from the index with its tables
    assert index.remove_except({"sales_orders"}) == 1
    assert index.search(Query(text="people")).entries == []
    assert index.counts() == (1, 2)
