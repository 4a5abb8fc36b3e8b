"""The SQLite store: named migrations, requests, conditional transitions, the append-only audit."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from mesh.models import AccessRequest, Status
from mesh.store import AuditFilters, NewEvent, Store, _audit_where

CAROL = "444455556666"


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store file with every migration applied, to copy (migrating each time is slow)."""
    store = Store(tmp_path_factory.mktemp("template") / "mesh.db")
    store.migrate()
    return store.path


@pytest.fixture
def fresh_store(migrated: Path, tmp_path: Path) -> Store:
    """An empty, migrated store of this test's own."""
    path = tmp_path / "mesh.db"
    shutil.copy(migrated, path)
    return Store(path)


def a_request(**changes: Any) -> AccessRequest:
    """Carol's pending request for sales_orders.customers, with ``changes``."""
    request = AccessRequest(
        id="r-0001",
        status=Status.PENDING_APPROVAL,
        database="sales_orders",
        table="customers",
        account=CAROL,
        requester="carol",
        reason="churn model",
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:00:00.000Z",
    )
    return dataclasses.replace(request, **changes)


def an_event(action: str = "request_submitted", **changes: Any) -> NewEvent:
    event = NewEvent(
        at="2026-01-01T00:00:00.000Z",
        actor="carol",
        action=action,
        request_id="r-0001",
        scope="sales_orders.customers",
        details={"reason": "churn model"},
    )
    return dataclasses.replace(event, **changes)


def applied(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as connection:
        return list(
            connection.execute(
                "SELECT migration_set, name, applied_at FROM _sqlite_migrations ORDER BY name"
            )
        )


# Migrations -----------------------------------------------------------------------------


def test_migrate_creates_the_tables_with_named_migrations_once(tmp_path: Path) -> None:
    # GIVEN no database file, not even its folder
    store = Store(tmp_path / "var" / "mesh.db")
    # WHEN it is migrated twice
    store.migrate()
    first = applied(store.path)
    store.migrate()
    # THEN each named migration was applied once, and the tables exist
    assert first and applied(store.path) == first
    assert len({name for _, name, _ in first}) == len(first)
    assert all(name for _, name, _ in first)
    with sqlite3.connect(store.path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"requests", "audit"} <= tables


# Connections: one per thread, kept open ------------------------------------------------


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, sqlite3.Connection]]:
    """Every connection opened from now on, with the thread that opened it."""
    opened: list[tuple[int, sqlite3.Connection]] = []
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = real(*args, **kwargs)
        opened.append((threading.get_ident(), connection))
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)
    return opened


def test_a_thread_reuses_one_connection_and_the_wal_stays_in_place(
    fresh_store: Store, connections: list[tuple[int, sqlite3.Connection]]
) -> None:
    # GIVEN a store used by one thread
    # WHEN it writes and reads several times
    for number in range(3):
        request = a_request(id=f"r-{number}", table=f"t{number}")
        fresh_store.add_request(request, [an_event(request_id=request.id)])
        fresh_store.get(f"r-{number}")
    fresh_store.audit()
    # THEN one connection served them all, and the WAL was not checkpointed away
    assert len(connections) == 1
    assert Path(f"{fresh_store.path}-wal").exists()
    assert [e.request_id for e in fresh_store.audit()] == ["r-0", "r-1", "r-2"]


def test_each_thread_has_a_connection_of_its_own(
    fresh_store: Store, connections: list[tuple[int, sqlite3.Connection]]
) -> None:
    # GIVEN a store shared by two threads, as Streamlit sessions share it
    both_started = threading.Barrier(2, timeout=10)

    def work(name: str) -> int:
        both_started.wait()
        for number in range(3):
            fresh_store.append(an_event(request_id=f"{name}-{number}"))
            fresh_store.audit(request_id=f"{name}-{number}")
        return threading.get_ident()

    # WHEN each writes and reads in its own thread
    with ThreadPoolExecutor(max_workers=2) as pool:
        idents = [future.result() for future in [pool.submit(work, n) for n in ("a", "b")]]
    # THEN neither used the other's connection (sqlite3 would refuse), and each opened one
    assert sorted(ident for ident, _ in connections) == sorted(idents)
    assert len(fresh_store.audit()) == 6


def test_a_restored_store_is_read_by_a_thread_that_held_the_old_file_open(
    fresh_store: Store, migrated: Path, tmp_path: Path
) -> None:
    # GIVEN a thread's open connection to a store, which is then restored from a backup as
    # the README says (its -wal and -shm removed, the backup moved over it: a new file)
    fresh_store.append(an_event(request_id="r-old"))
    for suffix in ("-wal", "-shm"):
        Path(f"{fresh_store.path}{suffix}").unlink(missing_ok=True)
    backup = tmp_path / "backup.db"
    shutil.copy(migrated, backup)
    os.replace(backup, fresh_store.path)
    # WHEN the same thread reads it
    events = fresh_store.audit()
    # THEN it reads the restored file, not the one its connection had open
    assert events == []


# Requests -------------------------------------------------------------------------------


def test_request_round_trips_with_every_field(fresh_store: Store) -> None:
    # GIVEN a request with every field set
    request = a_request(
        status=Status.FAILED,
        policy_reason="column email has pii_flag=TRUE",
        needs_approval=True,
        pii_columns=("full_name", "email"),
        owner_account="111111111111",
        decided_by="sam",
        decided_at="2026-01-01T00:01:00.000Z",
        comment="ok",
        error_code="AccessDeniedException",
        error="Lake Formation refused the grant.",
        grants_done=("database sales_orders",),
        attempts=2,
        updated_at="2026-01-01T00:02:00.000Z",
    )
    # WHEN it is stored and read back
    assert fresh_store.add_request(request, []) is None
    # THEN it comes back equal
    assert fresh_store.get(request.id) == request


def test_database_request_round_trips_with_no_table(fresh_store: Store) -> None:
    # GIVEN a request for a whole database
    request = a_request(table=None)
    # WHEN it is stored and read back
    fresh_store.add_request(request, [])
    # THEN its table is still None
    assert fresh_store.get(request.id) == request


def test_unknown_request_reads_as_none(fresh_store: Store) -> None:
    assert fresh_store.get("r-missing") is None


@pytest.mark.parametrize(
    "status",
    [
        # waiting for the owner
        Status.PENDING_APPROVAL,
        # approved, grants under way
        Status.GRANTING,
        # granted
        Status.GRANTED,
    ],
)
def test_identical_active_request_is_returned_and_nothing_written(
    fresh_store: Store, status: Status
) -> None:
    # GIVEN an active request
    existing = a_request(status=status)
    fresh_store.add_request(existing, [an_event()])
    # WHEN an identical request is added, by someone else with another reason
    again = a_request(id="r-0002", requester="mia", reason="other")
    found = fresh_store.add_request(again, [an_event(request_id="r-0002")])
    # THEN the existing request is returned, and neither the request nor its row is written
    assert found == existing
    assert fresh_store.get("r-0002") is None
    assert [e.request_id for e in fresh_store.audit()] == ["r-0001"]


@pytest.mark.parametrize(
    ("existing", "new"),
    [
        # the old request is over
        ({"status": Status.DENIED}, {}),
        ({"status": Status.CANCELLED}, {}),
        # another account
        ({}, {"account": "777788889999"}),
        # another table
        ({}, {"table": "orders"}),
        # the whole database, beside one of its tables
        ({}, {"table": None}),
        ({"table": None}, {}),
        # another database
        ({}, {"database": "sales_crm"}),
    ],
)
def test_request_that_is_not_an_active_duplicate_is_stored(
    fresh_store: Store, existing: dict[str, Any], new: dict[str, Any]
) -> None:
    # GIVEN an existing request
    fresh_store.add_request(a_request(**existing), [])
    # WHEN a request differing in status of the old one, scope or account is added
    request = a_request(id="r-0002", **new)
    # THEN it is stored
    assert fresh_store.add_request(request, []) is None
    assert fresh_store.get("r-0002") == request


def test_request_and_its_audit_rows_are_written_together_or_not_at_all(
    fresh_store: Store,
) -> None:
    # GIVEN an audit row that breaks a constraint (no actor)
    broken = an_event(actor=None)
    # WHEN a request is added with it
    with pytest.raises(sqlite3.IntegrityError):
        fresh_store.add_request(a_request(), [an_event(), broken])
    # THEN neither the request nor any row was written
    assert fresh_store.get("r-0001") is None
    assert fresh_store.audit() == []


def test_requests_are_listed_newest_first_and_filtered(fresh_store: Store) -> None:
    # GIVEN three requests made at different times by two users
    older = a_request(id="r-1", created_at="2026-01-01T00:00:00.000Z")
    newer = a_request(id="r-2", table="orders", created_at="2026-01-02T00:00:00.000Z")
    dans = a_request(
        id="r-3",
        requester="dan",
        table="stores",
        status=Status.GRANTED,
        created_at="2026-01-03T00:00:00.000Z",
    )
    for request in (older, dans, newer):
        fresh_store.add_request(request, [])
    # WHEN they are listed, all or filtered
    # THEN they come newest first, and filters keep only what matches
    assert [r.id for r in fresh_store.requests()] == ["r-3", "r-2", "r-1"]
    assert [r.id for r in fresh_store.requests(requester="carol")] == ["r-2", "r-1"]
    assert [r.id for r in fresh_store.requests(statuses=[Status.GRANTED])] == ["r-3"]
    assert fresh_store.requests(requester="carol", statuses=[Status.GRANTED]) == []


# Transitions ----------------------------------------------------------------------------


def test_transition_changes_the_request_and_writes_its_row(fresh_store: Store) -> None:
    # GIVEN a pending request
    fresh_store.add_request(a_request(), [])
    # WHEN it is approved from pending
    changed = fresh_store.transition(
        "r-0001",
        allowed_from=[Status.PENDING_APPROVAL],
        changes={"status": Status.GRANTING, "decided_by": "sam", "grants_done": ["x"]},
        events=[an_event("approved", actor="sam")],
    )
    # THEN the request changed, and the row was written
    assert changed == fresh_store.get("r-0001")
    assert (changed.status, changed.decided_by, changed.grants_done) == (
        Status.GRANTING,
        "sam",
        ("x",),
    )
    assert [(e.actor, e.action) for e in fresh_store.audit()] == [("sam", "approved")]


@pytest.mark.parametrize("status", [Status.GRANTED, Status.DENIED, Status.CANCELLED])
def test_transition_from_a_status_no_longer_held_changes_nothing(
    fresh_store: Store, status: Status
) -> None:
    # GIVEN a request that has moved on from pending
    fresh_store.add_request(a_request(status=status), [])
    # WHEN an approval from pending is attempted
    changed = fresh_store.transition(
        "r-0001",
        allowed_from=[Status.PENDING_APPROVAL],
        changes={"status": Status.GRANTING, "decided_by": "sam"},
        events=[an_event("approved", actor="sam")],
    )
    # THEN nothing changed and no row was written
    assert changed is None
    assert fresh_store.get("r-0001") == a_request(status=status)
    assert fresh_store.audit() == []


def test_second_of_two_identical_transitions_changes_nothing(fresh_store: Store) -> None:
    # GIVEN a pending request, approved once
    fresh_store.add_request(a_request(), [])
    move = {
        "allowed_from": [Status.PENDING_APPROVAL],
        "changes": {"status": Status.GRANTING},
        "events": [an_event("approved", actor="sam")],
    }
    assert fresh_store.transition("r-0001", **move) is not None
    # WHEN the same approval runs again
    # THEN it changes nothing and writes no second row
    assert fresh_store.transition("r-0001", **move) is None
    assert len(fresh_store.audit(action="approved")) == 1


def test_transition_and_its_audit_row_commit_together_or_not_at_all(fresh_store: Store) -> None:
    # GIVEN a pending request
    fresh_store.add_request(a_request(), [])
    # WHEN a transition is written with a broken audit row
    with pytest.raises(sqlite3.IntegrityError):
        fresh_store.transition(
            "r-0001",
            allowed_from=[Status.PENDING_APPROVAL],
            changes={"status": Status.DENIED},
            events=[an_event("denied", actor=None)],
        )
    # THEN the request did not change
    assert fresh_store.get("r-0001") == a_request()


# Audit ----------------------------------------------------------------------------------


def test_audit_rows_come_back_in_write_order_and_filtered(fresh_store: Store) -> None:
    # GIVEN rows appended for two requests by several actors
    fresh_store.append(
        an_event("request_submitted"),
        an_event("policy_evaluated", actor="policy", details={"needs_approval": True}),
        an_event("request_submitted", request_id="r-0002"),
    )
    fresh_store.append(an_event("approved", actor="sam"))
    # WHEN they are read, all or filtered
    every = fresh_store.audit()
    # THEN they come in write order with their details, and filters keep what matches
    assert [(e.actor, e.action, e.request_id) for e in every] == [
        ("carol", "request_submitted", "r-0001"),
        ("policy", "policy_evaluated", "r-0001"),
        ("carol", "request_submitted", "r-0002"),
        ("sam", "approved", "r-0001"),
    ]
    assert every[1].details == {"needs_approval": True}
    assert [e.action for e in fresh_store.audit(request_id="r-0002")] == ["request_submitted"]
    assert [e.request_id for e in fresh_store.audit(action="request_submitted")] == [
        "r-0001",
        "r-0002",
    ]
    assert [e.action for e in fresh_store.audit(actor="policy")] == ["policy_evaluated"]


def a_log(store: Store, count: int) -> list[NewEvent]:
    """``count`` rows, one a day from 2026-01-01: actors and actions in turn, 3 requests."""
    events = [
        an_event(
            ("request_submitted", "approved", "grant_succeeded")[n % 3],
            at=f"{date(2026, 1, 1) + timedelta(days=n)}T12:00:00.000Z",
            actor=("carol", "sam", "policy", "ada")[n % 4],
            request_id=f"r-{n % 3}",
            scope=f"db{n}.t",
        )
        for n in range(count)
    ]
    store.append(*events)
    return events


def test_audit_page_is_newest_first_a_page_at_a_time_with_the_total(fresh_store: Store) -> None:
    # GIVEN 250 rows
    a_log(fresh_store, 250)
    # WHEN they are read 100 at a time, each page after the last row of the one before
    pages, older_than = [], None
    for _ in range(3):
        rows, total = fresh_store.audit_page(AuditFilters(), limit=100, older_than=older_than)
        pages.append([e.id for e in rows])
        older_than = (rows[-1].at, rows[-1].id)
    # THEN the pages hold 100, 100 and 50 rows, newest first, none twice, and all 250 count
    assert [len(p) for p in pages] == [100, 100, 50]
    ids = [i for p in pages for i in p]
    assert ids == sorted(ids, reverse=True) == list(range(250, 0, -1))
    assert total == 250


def test_audit_page_orders_by_time_then_id(fresh_store: Store) -> None:
    # GIVEN a row written later with an earlier time (another process's clock)
    fresh_store.append(
        an_event(at="2026-01-02T00:00:00.000Z"), an_event(at="2026-01-01T00:00:00.000Z")
    )
    fresh_store.append(an_event(at="2026-01-02T00:00:00.000Z"))
    # WHEN the first page is read
    rows, _ = fresh_store.audit_page(AuditFilters())
    # THEN newest comes first, and rows of one instant newest written first
    assert [e.id for e in rows] == [3, 1, 2]


@pytest.mark.parametrize(
    ("filters", "keeps"),
    [
        # one field at a time
        (AuditFilters(request_id="r-1"), lambda n: n % 3 == 1),
        (AuditFilters(actors=("sam",)), lambda n: n % 4 == 1),
        (AuditFilters(actors=("sam", "ada")), lambda n: n % 4 in (1, 3)),
        (AuditFilters(actions=("approved",)), lambda n: n % 3 == 1),
        (AuditFilters(since="2026-02-01T00:00:00.000Z"), lambda n: n >= 31),
        (AuditFilters(before="2026-01-11T00:00:00.000Z"), lambda n: n < 10),
        (AuditFilters(text="db7."), lambda n: n == 7),
        (AuditFilters(text="CHURN"), lambda n: True),  # details, ASCII case ignored
        # together: every field narrows
        (
            AuditFilters(
                request_id="r-0",
                actors=("carol",),
                since="2026-01-10T00:00:00.000Z",
                before="2026-03-01T00:00:00.000Z",
            ),
            lambda n: n % 3 == 0 and n % 4 == 0 and 9 <= n < 59,
        ),
        (AuditFilters(actors=("sam",), actions=("grant_succeeded",)), lambda n: n % 12 == 5),
        # LIKE's wildcards are searched for, not used
        (AuditFilters(text="%"), lambda n: False),
        (AuditFilters(text="db_"), lambda n: False),
    ],
)
def test_audit_filters_keep_exactly_the_matching_rows(
    fresh_store: Store, filters: AuditFilters, keeps: Any
) -> None:
    # GIVEN 120 rows over four months
    events = a_log(fresh_store, 120)
    expected = [n + 1 for n in range(len(events)) if keeps(n)]
    # WHEN they are read with the filters, a page, all of them, and streamed
    rows, total = fresh_store.audit_page(filters, limit=1000)
    # THEN each way gives exactly the matching rows, and the count agrees
    assert [e.id for e in rows] == expected[::-1]
    assert total == len(expected)
    assert [e.id for e in fresh_store.audit(filters=filters)] == expected
    assert [row[0] for row in fresh_store.iter_audit(filters, chunk=7)] == expected


def test_audit_filters_use_an_index(fresh_store: Store) -> None:
    # GIVEN each kind of filter; WHEN SQLite plans the page's query
    # THEN it searches an index (never scans the log), the request id's when one is given
    cases = {
        AuditFilters(request_id="r-1", actors=("sam",)): "idx_audit_request_id",
        AuditFilters(actors=("sam",), since="2026-01-01"): "idx_audit_actor_at",
        AuditFilters(actions=("approved",), since="2026-01-01"): "idx_audit_action_at",
        AuditFilters(since="2026-01-01", before="2026-02-01"): "idx_audit_at",
    }
    connection = sqlite3.connect(fresh_store.path)
    for filters, index in cases.items():
        where, params = _audit_where(filters)
        plan = " ".join(
            row[-1]
            for row in connection.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM audit WHERE "
                + " AND ".join(where)
                + " ORDER BY at DESC, id DESC LIMIT 100",
                params,
            )
        )
        assert f"USING INDEX {index}" in plan, (filters, plan)
    connection.close()


def test_audit_lists_the_distinct_actors_and_actions(fresh_store: Store) -> None:
    # GIVEN 30 rows by four actors of three actions
    a_log(fresh_store, 30)
    # WHEN the distinct values are read, THEN each comes once, sorted
    assert fresh_store.audit_actions() == ["approved", "grant_succeeded", "request_submitted"]
    assert fresh_store.audit_actors() == ["ada", "carol", "policy", "sam"]
    assert Store(fresh_store.path).audit_actions() == fresh_store.audit_actions()


def test_an_empty_audit_log_has_no_page_and_no_actions(fresh_store: Store) -> None:
    assert fresh_store.audit_page(AuditFilters()) == ([], 0)
    assert fresh_store.audit_actions() == []
    assert list(fresh_store.iter_audit(AuditFilters())) == []


def test_a_stream_stopped_early_leaves_the_thread_reading_the_latest_rows(
    fresh_store: Store,
) -> None:
    # GIVEN an export that stopped after its first row
    a_log(fresh_store, 20)
    stream = fresh_store.iter_audit(AuditFilters(), chunk=5)
    next(stream)
    # WHEN the thread writes and reads on
    fresh_store.append(an_event(request_id="r-new"))
    # THEN it sees its own write (the export's read is no transaction of the thread's)
    assert fresh_store.audit_page(AuditFilters(request_id="r-new"))[1] == 1
    stream.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit SET actor = 'mallory'",
        "UPDATE audit SET details = '{}' WHERE id = 1",
        "DELETE FROM audit",
        "DELETE FROM audit WHERE id = 1",
    ],
)
def test_audit_table_refuses_updates_and_deletes(fresh_store: Store, statement: str) -> None:
    # GIVEN an audit row
    fresh_store.append(an_event())
    before = fresh_store.audit()
    # WHEN it is changed or deleted through sqlite3
    connection = sqlite3.connect(fresh_store.path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            connection.execute(statement)
        connection.commit()
    finally:
        connection.close()
    # THEN SQLite refuses, and the row is as it was
    assert fresh_store.audit() == before
