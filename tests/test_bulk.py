"""Decisions in bulk: several approvals or denials in one action, their grants in batches.

Each request keeps its exactly-once decision; the grants of every request the approvals
complete go out together in BatchGrantPermissions calls of at most 20 entries, and an entry
Lake Formation refuses fails only its own request, with its cause.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mesh.catalog_index import CatalogIndex
from mesh.demo.data import col, pii
from mesh.errors import AwsFailure
from mesh.models import AccessRequest, EntryOutcome, GrantSpec, Status
from mesh.services import Services
from mesh.workflow import Marketplace
from tests import test_workflow as wf
from tests.test_workflow import fresh_account, marketplace, race, rows, submit

# The workflow tests' fixtures (module_env and seeded come from conftest): the demo mesh
# seeded once per module, a fresh store per test.
mesh, market = wf.mesh, wf.market
glue, new_product = wf.glue, wf.new_product


class BatchRecorder:
    """The real Lake Formation adapter, recording each batch call and refusing some entries.

    ``refuse`` names the accounts whose entries Lake Formation answers with a Failure.
    """

    def __init__(self, real: Any, *, refuse: Sequence[str] = ()) -> None:
        self.real = real
        self.refuse = set(refuse)
        self.batches: list[list[GrantSpec]] = []
        self.single: list[GrantSpec] = []
        self._lock = threading.Lock()

    def batch_grant(self, specs: Sequence[GrantSpec]) -> list[EntryOutcome]:
        with self._lock:
            self.batches.append(list(specs))
        allowed = [s for s in specs if s.principal not in self.refuse]
        made = iter(self.real.batch_grant(allowed))
        refusal = AwsFailure(
            "Lake Formation BatchGrantPermissions was refused (AccessDeniedException: "
            "no grant option).",
            code="AccessDeniedException",
        )
        return [
            EntryOutcome(spec=s, failure=refusal) if s.principal in self.refuse else next(made)
            for s in specs
        ]

    def batch_revoke(self, specs: Sequence[GrantSpec]) -> list[EntryOutcome]:
        return list(self.real.batch_revoke(specs))

    def grant(self, spec: GrantSpec) -> dict[str, Any]:
        self.single.append(spec)
        return dict(self.real.grant(spec))

    def holds(self, spec: GrantSpec) -> bool:
        return bool(self.real.holds(spec))

    def revoke(self, spec: GrantSpec) -> dict[str, Any]:
        return dict(self.real.revoke(spec))

    def list_permissions(self, **kwargs: Any) -> list[dict[str, Any]]:
        return list(self.real.list_permissions(**kwargs))


def waiting(market: Marketplace, count: int, **scope: Any) -> list[AccessRequest]:
    """``count`` requests by ada, each for a fresh account; sales_orders.customers by default."""
    return [submit(market, "ada", account=fresh_account(), **scope) for _ in range(count)]


# Mixed outcomes ------------------------------------------------------------------------------


def test_bulk_approval_reports_each_request_and_fails_only_the_refused_entry(
    mesh: Services, tmp_path: Path
) -> None:
    # GIVEN four requests sam may approve, one he may not (hank's product), one already
    # denied, and Lake Formation refusing the entry of the third request's account
    recorder = BatchRecorder(mesh.lakeformation)
    market = marketplace(mesh, tmp_path / "mesh.db", grants=recorder)
    mine = waiting(market, 4)
    whole_db = waiting(market, 1, table=None)[0]
    hanks = waiting(market, 1, database="hr_people", table="employees")[0]
    decided = waiting(market, 1)[0]
    market.deny(decided.id, "sam", comment="not now")
    recorder.refuse = {mine[2].account}
    ids = [mine[0].id, hanks.id, mine[1].id, decided.id, mine[2].id, mine[3].id, whole_db.id]
    # WHEN sam approves all of them at once with one comment
    outcomes = market.decide_many(ids, "sam", verb="approve", comment="quarterly review")
    # THEN there is one outcome per request, in the order asked
    assert [o.request_id for o in outcomes] == ids
    by_id = {o.request_id: o for o in outcomes}
    # AND the refusals name their cause, with the CLI's exit codes
    assert by_id[hanks.id].request is None and by_id[hanks.id].exit_code == 3
    assert "may not decide" in (by_id[hanks.id].error or "")
    assert by_id[decided.id].request is None and by_id[decided.id].exit_code == 5
    # AND the refused entry failed its own request with the entry's error code
    failed = by_id[mine[2].id]
    assert failed.request is not None and failed.request.status is Status.FAILED
    assert failed.request.error_code == "AccessDeniedException"
    assert failed.exit_code == 1 and "no grant option" in (failed.error or "")
    # AND the others are granted, the whole database with both of its grants
    for request in (mine[0], mine[1], mine[3], whole_db):
        outcome = by_id[request.id]
        assert outcome.error is None and outcome.exit_code == 0
        assert outcome.request is not None and outcome.request.status is Status.GRANTED
        assert outcome.request.comment == "quarterly review"
    assert len(market.store.get(whole_db.id).grants_done) == 2  # type: ignore[union-attr]
    # AND every grant went out in one batch call, none one by one
    assert len(recorder.batches) == 1 and len(recorder.batches[0]) == 6
    assert recorder.single == []
    # AND each request recorded intent before and outcome after
    for request in (mine[0], whole_db):
        actions = [e.action for e in market.audit(request_id=request.id)]
        assert actions.index("grant_attempted") < actions.index("grant_succeeded")
    assert len(rows(market, mine[2].id, "grant_failed")) == 1
    assert rows(market, mine[2].id, "grant_failed")[0].details["error_code"] == (
        "AccessDeniedException"
    )


def test_bulk_denial_denies_each_with_the_one_comment(market: Marketplace) -> None:
    # GIVEN three waiting requests
    requests = waiting(market, 3)
    # WHEN sam denies them together
    outcomes = market.decide_many(
        [r.id for r in requests], "sam", verb="deny", comment="no churn models"
    )
    # THEN each is denied with the comment
    assert all(o.request and o.request.status is Status.DENIED for o in outcomes)
    assert {o.request.comment for o in outcomes if o.request} == {"no churn models"}


@pytest.mark.parametrize(
    ("verb", "comment", "message"),
    [("deny", "  ", "needs a comment"), ("shrug", "x", "not a decision")],
)
def test_bulk_decision_without_what_it_needs_changes_nothing(
    market: Marketplace, verb: str, comment: str, message: str
) -> None:
    request = waiting(market, 1)[0]
    with pytest.raises(Exception, match=message):
        market.decide_many([request.id], "sam", verb=verb, comment=comment)
    assert market.store.get(request.id).status is Status.PENDING_APPROVAL  # type: ignore[union-attr]


def test_a_hundred_approvals_make_five_lake_formation_calls(mesh: Services, tmp_path: Path) -> None:
    # GIVEN 100 waiting table requests
    recorder = BatchRecorder(mesh.lakeformation)
    market = marketplace(mesh, tmp_path / "mesh.db", grants=recorder)
    requests = waiting(market, 100)
    # WHEN sam approves them all at once
    outcomes = market.decide_many([r.id for r in requests], "sam", verb="approve")
    # THEN all are granted through one batch of 100 entries, which the adapter sends as 5
    assert all(o.request and o.request.status is Status.GRANTED for o in outcomes)
    assert [len(b) for b in recorder.batches] == [100]


# Exactly once ------------------------------------------------------------------------------


def test_two_bulk_approvals_at_once_grant_each_request_once(mesh: Services, tmp_path: Path) -> None:
    for trial in range(5):
        # GIVEN five waiting requests
        recorder = BatchRecorder(mesh.lakeformation)
        market = marketplace(mesh, tmp_path / f"trial-{trial}.db", grants=recorder)
        ids = [r.id for r in waiting(market, 5)]
        # WHEN sam and ada approve all of them at the same moment
        results = race(
            lambda user, m=market, i=ids: m.decide_many(i, user, verb="approve"),  # type: ignore[misc]
            ["sam", "ada"],
        )
        # THEN each request was approved once and granted once, by whichever came first
        for request_id in ids:
            won = [o for r in results for o in r if o.request_id == request_id and not o.error]
            assert len(won) == 1, f"trial {trial}: {results}"
            assert len(rows(market, request_id, "approved")) == 1
            assert len(rows(market, request_id, "grant_succeeded")) == 1
            assert market.store.get(request_id).status is Status.GRANTED  # type: ignore[union-attr]
        granted = [s.principal for batch in recorder.batches for s in batch]
        assert sorted(granted) == sorted({s for s in granted}), f"trial {trial}"


# The approvals queue, paged ------------------------------------------------------------------


def test_queue_pages_fifty_oldest_first_with_the_count_of_everything_waiting(
    market: Marketplace,
) -> None:
    # GIVEN 60 waiting requests for sam's product, and one that only hank may decide
    requests = waiting(market, 60)
    waiting(market, 1, database="hr_people", table="employees")
    # WHEN sam reads the first and second pages, and a page past the end
    first, total = market.pending_page("sam")
    second, _ = market.pending_page("sam", offset=50)
    beyond, total_beyond = market.pending_page("sam", offset=100)
    # THEN he sees his 60, oldest first, 50 then 10, and the count on every page
    assert total == total_beyond == 60
    assert [i.request.id for i in first + second] == [r.id for r in requests]
    assert (len(first), len(second), beyond) == (50, 10, [])
    # AND an admin sees all 61 (ada's own excepted: she made them, so she sees none),
    # while the owner of another product sees only his own
    assert market.pending_page("hank")[1] == 1
    assert market.pending_page("ada")[1] == 0


def test_queue_reads_no_glue(market: Marketplace, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN waiting requests, and a catalog that fails any read
    waiting(market, 3)

    def no_glue(*_: Any) -> Any:
        raise AssertionError("the queue read Glue")

    monkeypatch.setattr(market.catalog, "database", no_glue)
    # WHEN sam reads his queue
    items, total = market.pending_page("sam")
    # THEN it came from the store alone, with the owner stored on each request
    assert total == 3 and {i.owner_account for i in items} == {"111111111111"}


# Glue read live, each scope once per action ---------------------------------------------------


class GlueCalls:
    """Count the Glue API calls made on a client, by operation (botocore's before-call event)."""

    def __init__(self, glue: Any) -> None:
        self.glue = glue
        self.made: list[str] = []

    def _count(self, model: Any, **_: Any) -> None:
        self.made.append(model.name)

    def __enter__(self) -> GlueCalls:
        self.glue.meta.events.register("before-call.glue", self._count, unique_id=id(self))
        return self

    def __exit__(self, *_: object) -> None:
        self.glue.meta.events.unregister("before-call.glue", unique_id=id(self))

    def by_operation(self) -> dict[str, int]:
        return {name: self.made.count(name) for name in sorted(set(self.made))}


def indexed(mesh: Services, path: Path) -> Marketplace:
    """A marketplace with a catalog index (judged, as after a sync), filled as submits read."""
    market = marketplace(mesh, path)
    market.index = CatalogIndex(market.store, rules=market.rules, fingerprint="test")
    market.index.set_fingerprint()
    return market


@pytest.mark.parametrize("count", [1, 20, 100])
def test_bulk_approval_on_one_table_reads_its_scope_from_glue_once(
    mesh: Services, tmp_path: Path, count: int
) -> None:
    # GIVEN `count` waiting requests for sales_orders.customers, with a catalog index
    market = indexed(mesh, tmp_path / "mesh.db")
    ids = [r.id for r in waiting(market, count)]
    # WHEN sam approves them all at once
    with GlueCalls(market.catalog.client) as glue:  # type: ignore[attr-defined]
        outcomes = market.decide_many(ids, "sam", verb="approve")
    # THEN all are granted, and Glue was read once for the database and once for the table
    assert all(o.request and o.request.status is Status.GRANTED for o in outcomes)
    assert glue.by_operation() == {"GetDatabase": 1, "GetTable": 1}


def test_bulk_decision_over_several_databases_reads_each_once(
    mesh: Services, tmp_path: Path
) -> None:
    # GIVEN ten waiting table requests on sales_orders and ten whole-database requests on
    # sales_crm, both Sales products, interleaved
    market = indexed(mesh, tmp_path / "mesh.db")
    tables = waiting(market, 10)
    wholes = waiting(market, 10, database="sales_crm", table=None)
    ids = [r.id for pair in zip(tables, wholes, strict=True) for r in pair]
    # WHEN sam denies them all at once
    with GlueCalls(market.catalog.client) as glue:  # type: ignore[attr-defined]
        outcomes = market.decide_many(ids, "sam", verb="deny", comment="not this quarter")
    # THEN all are denied, and each database was read once, with its tables once
    assert all(o.request and o.request.status is Status.DENIED for o in outcomes)
    assert glue.by_operation() == {"GetDatabase": 2, "GetTable": 1, "GetTables": 1}


def test_bulk_decision_takes_the_owner_from_glue_and_refreshes_the_index(
    mesh: Services, tmp_path: Path, glue: Any, new_product: Any
) -> None:
    # GIVEN three waiting requests on a Sales product, the index agreeing with Glue
    market = indexed(mesh, tmp_path / "mesh.db")
    database = new_product({"people": ([col("id", "int"), pii("email")], [])}, owner=wf.SALES)
    ids = [r.id for r in waiting(market, 3, database=database, table="people")]
    assert [p.request.id for p in market.pending_for("sam")] == ids
    # WHEN the catalog hands the product to Marketing, and sam approves them all at once
    glue.update_database(
        Name=database,
        DatabaseInput={"Name": database, "Parameters": {"data_owner": wf.MARKETING}},
    )
    notes: list[str] = []
    outcomes = market.decide_many(ids, "sam", verb="approve", on_catalog_change=notes.append)
    # THEN the live read wins: each is refused, and the note says the catalog had changed
    assert all(o.request is None and "may not decide" in (o.error or "") for o in outcomes)
    assert len(notes) == 1 and "catalog had changed" in notes[0] and database in notes[0]
    # AND the index now names the new owner, so the queues follow it without Glue
    entry = market.index.database(database)  # type: ignore[union-attr]
    assert entry is not None and entry.owner_account == wf.MARKETING
    assert market.pending_for("sam") == []
    assert [p.request.id for p in market.pending_for("mia")] == ids
