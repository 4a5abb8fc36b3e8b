"""Tampering with the database file: ten ways, each detected, none of them a grant.

Someone with write access to MESH_DB (but not MESH_AUDIT_KEY) drops the triggers, edits,
deletes, reorders, inserts and renumbers audit rows, forges a request or an approval, cuts
the log's tail, or swaps the file for an older copy. Each case checks that it is detected
(``audit verify``, the anchor, or the evidence a grant needs) and that after ``reconcile
--fix``, ``tick`` and ``retry`` Lake Formation holds exactly what it held before (moto).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from mesh import auditlog, evidence
from mesh.errors import MeshError
from mesh.models import AccessRequest, Status
from mesh.services import Services, build
from mesh.settings import load_settings
from mesh.store import Store
from tests.conftest import REGION, dumps, lake_formation_entries
from tests.support import AUDIT_KEY

CAROL = "444455556666"
LONG_AGO = "2020-01-01T00:00:00.000Z"  # stale: the periodic job takes such a request over


@dataclass
class World:
    services: Services
    db: Path
    endpoint: str
    granted: AccessRequest  # carol's sales_orders.orders, granted at once
    waiting: AccessRequest  # carol's sales_orders.customers (PII), waiting for sam

    def raw(self) -> sqlite3.Connection:
        """The file as an attacker opens it: plain SQLite, no key."""
        return sqlite3.connect(self.db, isolation_level=None)

    def verify(self) -> auditlog.auditchain.Verification:
        store = self.services.marketplace.store
        anchor = auditlog.FileAnchor().last(store)
        return auditlog.verify(store, anchor=anchor)

    def lake_formation(self) -> list[str]:
        return sorted(dumps(e) for e in lake_formation_entries(self.endpoint))


def make_world(env: dict[str, str], endpoint: str) -> World:
    """Services in aws mode with an audit key, a granted and a waiting request, then a tick
    (which checks the log and publishes its head beside the store)."""
    services = build(load_settings({**env, "MESH_AUDIT_KEY": AUDIT_KEY}, {}))
    m = services.marketplace
    granted = m.submit(
        "carol", database="sales_orders", table="orders", account=CAROL, reason="weekly report"
    )
    waiting = m.submit(
        "carol", database="sales_orders", table="customers", account=CAROL, reason="churn study"
    )
    assert (granted.status, waiting.status) == (Status.GRANTED, Status.PENDING_APPROVAL)
    report = services.lifecycle.tick()
    assert not report.errors, report.errors
    made = World(
        services=services,
        db=Path(env["MESH_DB"]),
        endpoint=endpoint,
        granted=granted,
        waiting=waiting,
    )
    assert made.verify().ok
    return made


@pytest.fixture
def world(aws_env: dict[str, str], aws: str) -> World:
    return make_world(aws_env, aws)


def without_triggers(connection: sqlite3.Connection, work: Callable[[], Any]) -> None:
    """Drop the append-only triggers, do ``work``, and put them back as they were."""
    triggers = connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'"
    ).fetchall()
    for name, _ in triggers:
        connection.execute(f"DROP TRIGGER {name}")
    work()
    for _, sql in triggers:
        connection.execute(sql)


def row_ids(world: World, request_id: str) -> list[int]:
    with world.raw() as connection:
        return [
            row_id
            for (row_id,) in connection.execute(
                "SELECT id FROM audit WHERE request_id = ? ORDER BY id", [request_id]
            )
        ]


def try_every_grant_path(world: World, *request_ids: str) -> None:
    """reconcile --fix, the periodic job, and a retry by carol (refusals are expected)."""
    services = world.services
    services.lifecycle.reconcile(fix=True)
    services.lifecycle.tick()
    for request_id in request_ids:
        try:
            services.marketplace.retry(request_id, "carol")
        except MeshError:
            pass


# The ten ways ----------------------------------------------------------------------------


def edit(world: World) -> list[str]:
    # the submission of carol's granted request now names another account
    first = row_ids(world, world.granted.id)[0]
    with world.raw() as c:
        without_triggers(
            c,
            lambda: c.execute(
                "UPDATE audit SET details = replace(details, ?, '777788889999') WHERE id = ?",
                [CAROL, first],
            ),
        )
    return [world.granted.id]


def delete(world: World) -> list[str]:
    # the policy's verdict on the waiting request disappears from the middle of the log
    verdict = row_ids(world, world.waiting.id)[1]
    with world.raw() as c:
        without_triggers(c, lambda: c.execute("DELETE FROM audit WHERE id = ?", [verdict]))
    return [world.waiting.id]


def reorder(world: World) -> list[str]:
    # two rows swap places (content and chain together)
    a, b = row_ids(world, world.granted.id)[:2]
    with world.raw() as c:
        rows = {
            r[0]: r[1:]
            for r in c.execute(
                "SELECT id, at, actor, action, request_id, scope, details, chain FROM audit "
                "WHERE id IN (?, ?)",
                [a, b],
            )
        }

        def swap() -> None:
            for target, source in ((a, b), (b, a)):
                c.execute(
                    "UPDATE audit SET at = ?, actor = ?, action = ?, request_id = ?, scope = ?, "
                    "details = ?, chain = ? WHERE id = ?",
                    [*rows[source], target],
                )

        without_triggers(c, swap)
    return [world.granted.id]


def insert(world: World) -> list[str]:
    # a forged "approved by sam" row (the triggers allow an insert), and the request moved
    # on to granting long ago, so the periodic job would take it over
    waiting = world.waiting
    with world.raw() as c:
        c.execute(
            "INSERT INTO audit (at, actor, action, request_id, scope, details, chain) "
            "VALUES (?, 'sam', 'approved', ?, ?, ?, ?)",
            [
                LONG_AGO,
                waiting.id,
                str(waiting.scope),
                json.dumps({"step": 1, "of": 1, "approvers": "owner", "comment": ""}),
                "ab" * 32,
            ],
        )
        c.execute(
            "UPDATE requests SET status = 'granting', decided_by = 'sam', updated_at = ? "
            "WHERE id = ?",
            [LONG_AGO, waiting.id],
        )
    return [waiting.id]


def renumber(world: World) -> list[str]:
    # every row from the granted request's first on moves up by 1,000
    first = row_ids(world, world.granted.id)[0]
    with world.raw() as c:
        without_triggers(
            c,
            lambda: c.execute("UPDATE audit SET id = id + 1000 WHERE id >= ?", [first]),
        )
    return [world.granted.id]


def triggers_dropped(world: World) -> list[str]:
    # the append-only triggers are dropped and left so
    with world.raw() as c:
        c.execute("DROP TRIGGER audit_no_update")
        c.execute("DROP TRIGGER audit_no_delete")
    return []


def forged_request(world: World) -> list[str]:
    # a granted request on the PII database hr_people, with no approval and no audit row,
    # and a failed one for a retry to "finish"
    with world.raw() as c:
        for request_id, table, status in (
            ("r-f0f0f0f0", "salaries", "granted"),
            ("r-f1f1f1f1", "employees", "failed"),
        ):
            c.execute(
                "INSERT INTO requests (id, status, database, table_name, account, requester, "
                "reason, needs_approval, pii_columns, grants_done, attempts, created_at, "
                "updated_at, plan, step, decision_seen) VALUES (?, ?, 'hr_people', ?, ?, "
                "'carol', 'forged', 0, '[]', '[]', 1, ?, ?, '[]', 0, 1)",
                [request_id, status, table, CAROL, LONG_AGO, LONG_AGO],
            )
    return ["r-f0f0f0f0", "r-f1f1f1f1"]


def grant_by_hand(world: World) -> None:
    lf = boto3.client("lakeformation", region_name=REGION, endpoint_url=world.endpoint)
    central = world.services.central_account
    lf.grant_permissions(
        Principal={"DataLakePrincipalIdentifier": CAROL},
        Resource={"Table": {"CatalogId": central, "DatabaseName": "hr_people", "Name": "salaries"}},
        Permissions=["SELECT", "DESCRIBE"],
        PermissionsWithGrantOption=["SELECT", "DESCRIBE"],
    )


def forged_approval(world: World) -> list[str]:
    # sam's approval in the approvals table, and the request moved on to granting
    waiting = world.waiting
    with world.raw() as c:
        c.execute(
            "INSERT INTO approvals (request_id, step, username, acting_as, at, comment) "
            "VALUES (?, 0, 'sam', '', ?, '')",
            [waiting.id, LONG_AGO],
        )
        c.execute(
            "UPDATE requests SET status = 'granting', decided_by = 'sam', updated_at = ? "
            "WHERE id = ?",
            [LONG_AGO, waiting.id],
        )
    return [waiting.id]


def truncated_tail(world: World) -> list[str]:
    # the last rows (the waiting request's) are deleted: what is left is a whole chain
    first = row_ids(world, world.waiting.id)[0]
    with world.raw() as c:
        without_triggers(c, lambda: c.execute("DELETE FROM audit WHERE id >= ?", [first]))
    return []


def swapped_file(world: World) -> list[str]:
    # the file is replaced by a copy taken before the last request and tick
    store = world.services.marketplace.store
    older = world.db.parent / "older.db"
    store.backup(older)
    m = world.services.marketplace
    later = m.submit(
        "carol", database="supply_chain", table="inventory", account=CAROL, reason="stock"
    )
    assert later.status is Status.GRANTED
    assert not world.services.lifecycle.tick().errors
    for suffix in ("-wal", "-shm"):
        Path(f"{world.db}{suffix}").unlink(missing_ok=True)
    store.close()
    shutil.copy(older, world.db)
    return []


WAYS: dict[str, Callable[[World], list[str]]] = {
    "edit": edit,
    "delete": delete,
    "reorder": reorder,
    "insert": insert,
    "renumber": renumber,
    "triggers dropped": triggers_dropped,
    "forged request row": forged_request,
    "forged approval": forged_approval,
    "truncated tail": truncated_tail,
    "swapped file": swapped_file,
}


def detected(world: World, forged: list[str]) -> list[str]:
    """Every way the tampering shows: verify's problems, and each forged request's refusal."""
    store = world.services.marketplace.store
    found = list(world.verify().problems)
    for request_id in forged:
        request = store.get(request_id)
        if request is not None and not evidence.check(store, request).ok:
            found.append(f"{request_id} has no evidence")
    return found


@pytest.mark.parametrize("way", list(WAYS))
def test_tampering_with_the_file_is_detected_and_never_becomes_a_grant(
    world: World, way: str
) -> None:
    # GIVEN what Lake Formation holds before
    before = world.lake_formation()
    if way == "swapped file":
        WAYS[way](world)
        before = world.lake_formation()  # the later grant was real; the swap must add none
        forged: list[str] = []
    else:
        # WHEN the file is tampered with this way
        forged = WAYS[way](world)
    # THEN it is detected
    assert detected(world, forged), f"{way} went unnoticed"
    # AND reconcile --fix, the periodic job and a retry grant nothing
    try_every_grant_path(world, *forged)
    assert world.lake_formation() == before
    # AND the periodic job reports the break, or the forged request stays unexplained
    store = world.services.marketplace.store
    report = world.services.lifecycle.tick()
    unexplained = [
        request_id
        for request_id in forged
        if (r := store.get(request_id)) is not None
        and (r.error_code == "Unexplained" or not evidence.check(store, r).ok)
    ]
    assert any(e.startswith("audit log:") for e in report.errors) or unexplained == forged


def test_a_forged_granted_row_neither_hides_a_hand_made_grant_nor_gets_one_reapplied(
    world: World,
) -> None:
    # GIVEN a grant made by hand on hr_people.salaries and a forged granted request for it
    grant_by_hand(world)
    forged_request(world)
    # WHEN the drift check runs with fix
    report = world.services.lifecycle.reconcile(fix=True)
    # THEN the hand-made grant is reported as unexplained, the forged request as a request
    # without evidence, and nothing was fixed for it
    assert [u["resource"]["Table"]["Name"] for u in report["unexplained"]] == ["salaries"]
    assert sorted(u["request_id"] for u in report["unexplained_requests"]) == [
        "r-f0f0f0f0",
        "r-f1f1f1f1",
    ]
    assert report["fixed"] == []


def test_all_ten_ways_are_detected(aws_env: dict[str, str], aws: str) -> None:
    # GIVEN a fresh world for each of the ten ways
    # WHEN each is tried, THEN each is detected: 10 of 10
    caught = []
    for name, way in WAYS.items():
        folder = Path(aws_env["MESH_DB"]).parent / name.replace(" ", "-")
        folder.mkdir()
        fresh = Store(folder / "mesh.db", audit_key=AUDIT_KEY)  # as `mesh init` makes it
        fresh.migrate(create=True)
        auditlog.initialise_anchor(fresh, auditlog.FileAnchor(), by="cli init", at=LONG_AGO)
        w = make_world({**aws_env, "MESH_DB": str(folder / "mesh.db")}, aws)
        forged = way(w)
        if detected(w, forged):
            caught.append(name)
    assert len(caught) == 10, sorted(set(WAYS) - set(caught))


ALL_OF_THEM = """\
version: 1
levels:
  - name: public
    match: {pii_flag: [false, no, "0", n, ""]}
  - name: pii
    match: {pii_flag: [true, yes, "1", y]}
groups:
  stewards: {members: [sam, hank]}
admins_approve: false
rules:
  public: {auto_approve: true}
  pii:
    steps:
      - {approvers: stewards, quorum: all}
"""


def test_a_forged_status_after_one_of_two_approvals_of_an_all_step_grants_nothing(
    aws_env: dict[str, str], aws: str, tmp_path: Path
) -> None:
    # GIVEN a PII request whose one step needs both stewards, and one of them approved
    policy = tmp_path / "all-of-them.yaml"
    policy.write_text(ALL_OF_THEM)
    world = make_world({**aws_env, "MESH_POLICY": str(policy)}, aws)
    market = world.services.marketplace
    assert market.approve(world.waiting.id, "sam").status is Status.PENDING_APPROVAL
    before = world.lake_formation()
    # WHEN the stored request is moved on to granting by hand, as if the step were full
    with world.raw() as c:
        c.execute(
            "UPDATE requests SET status = 'granting', decided_by = 'sam', updated_at = ? "
            "WHERE id = ?",
            [LONG_AGO, world.waiting.id],
        )
    # THEN the chain holds, but the evidence counts one approval of the two the step needed
    assert world.verify().ok
    forged = market.store.get(world.waiting.id)
    assert forged is not None
    assert "step 1 (stewards) needs 2 verified approvals and has 1" in (
        evidence.check(market.store, forged).problems
    )
    # AND reconcile --fix, the periodic job and a retry grant nothing
    try_every_grant_path(world, world.waiting.id)
    assert world.lake_formation() == before


def test_a_time_boxed_grant_made_permanent_in_the_file_is_unexplained(world: World) -> None:
    # GIVEN carol's week on the PII table, submitted with its duration and approved by sam
    market = world.services.marketplace
    with world.raw() as c:  # the waiting request (no end) makes way for a time-boxed one
        c.execute("UPDATE requests SET status = 'cancelled' WHERE id = ?", [world.waiting.id])
    week = market.submit(
        "carol",
        database="sales_orders",
        table="customers",
        account=CAROL,
        reason="churn study",
        duration=timedelta(days=7),
    )
    granted = market.approve(week.id, "sam")
    assert granted.status is Status.GRANTED and granted.expires_at
    store = market.store
    assert evidence.check(store, granted, ending=True).ok
    # WHEN the file is edited so it never expires
    with world.raw() as c:
        c.execute(
            "UPDATE requests SET duration_seconds = NULL, expires_at = NULL WHERE id = ?",
            [week.id],
        )
    # THEN the evidence refuses it, naming the duration submitted and the expiry granted
    forged = store.get(week.id)
    assert forged is not None and forged.expires_at is None
    problems = evidence.check(store, forged, ending=True).problems
    assert any("submitted with duration seconds 604800, not None" in p for p in problems)
    assert any(f"granted it until {granted.expires_at}" in p for p in problems)
    # AND the drift check reports it as a request without evidence
    report = world.services.lifecycle.reconcile(fix=True)
    assert week.id in [u["request_id"] for u in report["unexplained_requests"]]


def week_for_carol(world: World) -> AccessRequest:
    """Carol's week on the PII table, waiting for sam (the fixture's waiting one cancelled)."""
    with world.raw() as c:
        c.execute("UPDATE requests SET status = 'cancelled' WHERE id = ?", [world.waiting.id])
    return world.services.marketplace.submit(
        "carol",
        database="sales_orders",
        table="customers",
        account=CAROL,
        reason="churn study",
        duration=timedelta(days=7),
    )


def test_an_expiry_written_into_a_waiting_request_is_never_granted(world: World) -> None:
    # GIVEN a week's access waiting for sam
    market = world.services.marketplace
    week = week_for_carol(world)
    before = world.lake_formation()
    # WHEN the file is edited so that it would run until 2099 once granted
    with world.raw() as c:
        c.execute(
            "UPDATE requests SET expires_at = '2099-01-01T00:00:00.000Z' WHERE id = ?", [week.id]
        )
    forged = market.store.get(week.id)
    assert forged is not None
    # THEN the evidence refuses it: no grant has given it an expiry yet
    assert any(
        "expires 2099-01-01T00:00:00.000Z, though no verified grant gave it one" in p
        for p in evidence.check(market.store, forged).problems
    )
    # AND sam's approval grants nothing, and no request holds the forged expiry
    try:
        market.approve(week.id, "sam")
    except MeshError:
        pass  # refused outright, or recorded as a failed grant: either way nothing granted
    after = market.store.get(week.id)
    assert after is not None and after.status is not Status.GRANTED, after
    assert after.error_code == "Unexplained" or after.status is Status.PENDING_APPROVAL, after
    assert world.lake_formation() == before


def test_an_expiry_moved_later_after_the_grant_is_not_enforced(world: World) -> None:
    # GIVEN a week's access approved and granted
    market = world.services.marketplace
    week = week_for_carol(world)
    granted = market.approve(week.id, "sam")
    assert granted.status is Status.GRANTED and granted.expires_at
    assert any("customers" in e for e in world.lake_formation())
    # WHEN the file is edited so it runs until 2099, and eight days pass
    with world.raw() as c:
        c.execute(
            "UPDATE requests SET expires_at = '2099-01-01T00:00:00.000Z' WHERE id = ?", [week.id]
        )
    real = market.clock
    market.clock = lambda: real() + timedelta(days=8)
    report = world.services.lifecycle.tick()
    # THEN the periodic job expires it at the week the grant recorded
    assert week.id in report.expired, report
    ended = market.store.get(week.id)
    assert ended is not None and ended.status is Status.EXPIRED
    assert not any("customers" in e for e in world.lake_formation())
    expiry = [e for e in market.store.audit(request_id=week.id) if e.action == "expiry_due"]
    assert expiry and expiry[0].details["expires_at"] == granted.expires_at
