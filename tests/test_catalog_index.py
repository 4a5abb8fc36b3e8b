"""The catalog index: sync from Glue (paged, add/change/drop), FTS search and facets,
re-judging when the policy changes, the live read winning at submit, and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from mesh.approval import DEFAULT
from mesh.catalog import GlueCatalog
from mesh.catalog_index import CatalogIndex, Query
from mesh.services import Services, activate_policy, build
from mesh.settings import Settings, load_settings
from mesh.store import Store
from mesh.sync import CatalogSync
from tests.conftest import REGION, client
from tests.support import in_process_cli

CENTRAL = "123456789012"
CAROL = "444455556666"
STEWARDS = Path(__file__).parent.parent / "examples" / "policies" / "restricted-stewards.yaml"


def now() -> datetime:
    return datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def synced(services: Services) -> Services:
    """The demo mesh, synced into the index once."""
    done = services.sync.run(actor="test")
    assert done.error is None
    return services


# Paging, pinned with Stubber -------------------------------------------------------------


def _db(name: str) -> dict[str, Any]:
    return {"Name": name, "Parameters": {"data_owner": "111111111111"}}


def _table(database: str, name: str, *, flag: str | None = None) -> dict[str, Any]:
    params = {"pii_flag": flag} if flag else {}
    return {
        "DatabaseName": database,
        "Name": name,
        "StorageDescriptor": {"Columns": [{"Name": "id", "Type": "int", "Parameters": params}]},
    }


def test_sync_pages_glue_100_at_a_time_and_follows_every_next_token(tmp_path: Path) -> None:
    # GIVEN a Glue client whose databases come in two pages, and one database's tables too
    glue = boto3.client("glue", region_name=REGION)
    stub = Stubber(glue)
    stub.add_response(
        "get_databases",
        {"DatabaseList": [_db("a"), _db("b")], "NextToken": "next-db"},
        {"CatalogId": CENTRAL, "MaxResults": 100},
    )
    stub.add_response(
        "get_databases",
        {"DatabaseList": [_db("c")]},
        {"CatalogId": CENTRAL, "MaxResults": 100, "NextToken": "next-db"},
    )
    stub.add_response(
        "get_tables",
        {"TableList": [_table("a", "t1")], "NextToken": "next-a"},
        {"CatalogId": CENTRAL, "DatabaseName": "a", "MaxResults": 100},
    )
    stub.add_response(
        "get_tables",
        {"TableList": [_table("a", "t2", flag="TRUE")]},
        {"CatalogId": CENTRAL, "DatabaseName": "a", "MaxResults": 100, "NextToken": "next-a"},
    )
    for name in ("b", "c"):
        stub.add_response(
            "get_tables",
            {"TableList": [_table(name, "only")]},
            {"CatalogId": CENTRAL, "DatabaseName": name, "MaxResults": 100},
        )
    store = Store(tmp_path / "mesh.db")
    store.migrate()
    index = CatalogIndex(store, rules=DEFAULT, fingerprint="f1")
    # One reader and one database a batch: the calls come in the order the stub expects.
    sync = CatalogSync(
        GlueCatalog(glue, catalog_id=CENTRAL),
        index,
        clock=now,
        readers=1,
        batch=1,
        glue_client=glue,
    )
    # WHEN the catalog is synced
    with stub:
        done = sync.run(actor="test")
        stub.assert_no_pending_responses()
    # THEN every page was read, once, and the run is recorded with its counts
    assert done.error is None
    assert (done.databases, done.tables, done.added, done.glue_calls) == (3, 4, 7, 6)
    assert index.table_names("a") == ["t1", "t2"]
    assert index.table_entry("a", "t2").pii_columns == ("id",)  # type: ignore[union-attr]
    assert index.database_entry("a").needs_approval  # type: ignore[union-attr]


# Round trip on moto: add, change, drop -------------------------------------------------------


def test_sync_adds_changes_and_removes_what_glue_holds(aws: str, synced: Services) -> None:
    # GIVEN a synced demo mesh
    index = synced.index
    databases, tables = index.counts()
    assert (databases, tables) == (10, 44)
    assert not index.table_entry("sales_orders", "orders").needs_approval  # type: ignore[union-attr]
    # WHEN Glue gains a table, a column is flagged PII, and a database is dropped
    glue = client("glue", aws)
    glue.create_table(  # type: ignore[attr-defined]
        DatabaseName="sales_orders",
        TableInput={"Name": "gift_cards", "Description": "gift cards sold"},
    )
    orders = glue.get_table(DatabaseName="sales_orders", Name="orders")["Table"]  # type: ignore[attr-defined]
    columns = orders["StorageDescriptor"]["Columns"]
    columns[1]["Parameters"] = {"pii_flag": "yes"}
    glue.update_table(  # type: ignore[attr-defined]
        DatabaseName="sales_orders",
        TableInput={
            "Name": "orders",
            "StorageDescriptor": {**orders["StorageDescriptor"], "Columns": columns},
            "PartitionKeys": orders.get("PartitionKeys", []),
        },
    )
    glue.delete_database(Name="marketing_campaigns")  # type: ignore[attr-defined]
    dropped = 1 + len(index.table_names("marketing_campaigns"))
    done = synced.sync.run(actor="test")
    # THEN the index follows: one table added, one changed (and its database), one database
    # with its tables removed, and the new PII column now needs approval
    assert done.error is None
    assert done.added == 1
    assert done.changed >= 2
    assert done.removed >= dropped
    assert "marketing_campaigns" not in index.database_names()
    assert "gift_cards" in index.table_names("sales_orders")
    entry = index.table_entry("sales_orders", "orders")
    assert entry is not None and entry.needs_approval and entry.pii_columns == ("customer_id",)
    [last, first] = index.syncs(limit=2)
    assert (last.actor, first.actor) == ("test", "test")


def test_a_second_sync_of_an_unchanged_catalog_changes_nothing(synced: Services) -> None:
    # GIVEN a synced demo mesh
    # WHEN it is synced again with nothing changed in Glue
    done = synced.sync.run(actor="test")
    # THEN nothing was added, changed or removed
    assert (done.added, done.changed, done.removed) == (0, 0, 0)
    assert (done.databases, done.tables) == (10, 44)


# Search and facets -------------------------------------------------------------------------


def test_search_ranks_a_name_match_above_a_column_or_description_match(synced: Services) -> None:
    # GIVEN the synced demo mesh
    # WHEN people search for "customers"
    found = synced.index.search(Query(text="customers"))
    # THEN the table named customers comes first, and other matches follow it
    assert found.entries[0].name == "sales_orders.customers"
    assert found.total > 1


def test_search_matches_prefixes_columns_and_owner_names(synced: Services) -> None:
    # WHEN searching by a column name's prefix and by an owner's name
    by_column = {e.name for e in synced.index.search(Query(text="emai")).entries}
    by_owner = {e.database for e in synced.index.search(Query(text="marketing")).entries}
    # THEN tables with such columns, and the producer's products, are found
    assert "sales_orders.customers" in by_column
    assert "marketing_campaigns" in by_owner


def test_search_ignores_fts_syntax_in_what_people_type(synced: Services) -> None:
    # WHEN the text holds FTS5 operators and stray quotes
    found = synced.index.search(Query(text='"orders ^*( -'))
    # THEN it is searched as words, without an error
    assert any(e.database == "sales_orders" for e in found.entries)


def test_facets_narrow_by_owner_level_approval_pii_and_kind(synced: Services) -> None:
    index = synced.index
    every = index.search(Query(page_size=500))
    assert every.total == 10 + 44
    # needs approval: only entries that need it
    needing = index.search(Query(needs_approval=True, page_size=500)).entries
    assert needing and all(e.needs_approval for e in needing)
    # contains PII false: none holds PII
    clean = index.search(Query(contains_pii=False, page_size=500)).entries
    assert clean and not any(e.contains_pii for e in clean)
    # owner: only that producer's products
    sales = index.search(Query(owner="111111111111", page_size=500)).entries
    assert sales and {e.owner_account for e in sales} == {"111111111111"}
    # no owner
    orphans = index.search(Query(owner="", kind="database")).entries
    assert len(orphans) == 1 and orphans[0].no_owner
    # level and kind
    pii = index.search(Query(level="pii", kind="table", page_size=500)).entries
    assert pii and all(e.level == "pii" and e.table for e in pii)


def test_already_have_access_facet_keeps_granted_databases_and_tables(synced: Services) -> None:
    # GIVEN a grant of one table and of one whole database
    query = Query(
        granted_databases=frozenset({"hr_people"}),
        granted_tables=frozenset({("sales_orders", "orders")}),
        page_size=500,
    )
    # WHEN the facet is on
    names = {e.name for e in synced.index.search(query).entries}
    # THEN the database, its tables, and the one table are listed, and nothing else
    assert "hr_people" in names and "sales_orders.orders" in names
    assert all(n.startswith("hr_people") or n == "sales_orders.orders" for n in names)


def test_results_are_paged_50_at_a_time(synced: Services) -> None:
    first = synced.index.search(Query())
    second = synced.index.search(Query(page=1))
    assert (len(first.entries), len(second.entries), first.pages) == (50, 4, 2)
    assert not {e.name for e in first.entries} & {e.name for e in second.entries}


# Policy changes and live reads -----------------------------------------------------------------


def test_a_new_policy_judges_the_index_again_without_reading_glue(
    settings: Settings, synced: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the index judged under the built-in policy
    index = synced.index
    # WHEN the stewards policy is activated and a process starts with it, Glue unreachable
    from dataclasses import replace

    stewards = replace(settings, policy_path=STEWARDS)
    activate_policy(stewards, by="test")
    monkeypatch.setattr(GlueCatalog, "tables_with_times", lambda *a: pytest.fail("Glue was read"))
    again = build(stewards)
    # THEN the index carries the new policy's fingerprint and levels
    assert again.index.judged_with() == again.index.fingerprint != index.fingerprint
    levels = {e.level for e in again.index.search(Query(page_size=500)).entries}
    assert levels - {lv.name for lv in DEFAULT.levels}


def test_submit_reads_glue_live_and_says_when_the_index_was_stale(
    aws: str, synced: Services
) -> None:
    # GIVEN a synced index that says sales_orders.orders needs no approval
    glue = client("glue", aws)
    orders = glue.get_table(DatabaseName="sales_orders", Name="orders")["Table"]  # type: ignore[attr-defined]
    columns = orders["StorageDescriptor"]["Columns"]
    columns[0]["Parameters"] = {"pii_flag": "true"}
    # WHEN a column is flagged in Glue, and carol requests the table before any sync
    glue.update_table(  # type: ignore[attr-defined]
        DatabaseName="sales_orders",
        TableInput={
            "Name": "orders",
            "StorageDescriptor": {**orders["StorageDescriptor"], "Columns": columns},
            "PartitionKeys": orders.get("PartitionKeys", []),
        },
    )
    notes: list[str] = []
    request = synced.marketplace.submit(
        "carol",
        database="sales_orders",
        table="orders",
        account=CAROL,
        reason="weekly revenue report",
        on_catalog_change=notes.append,
    )
    # THEN the live read wins (it waits for approval), the note says the catalog had changed,
    # and the index now agrees
    assert request.needs_approval
    assert notes and "changed" in notes[0]
    entry = synced.index.table_entry("sales_orders", "orders")
    assert entry is not None and entry.needs_approval


def test_explain_reads_the_index_not_glue(
    synced: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a synced index, and a Glue that fails the test if read
    for name in ("database", "table", "tables"):
        monkeypatch.setattr(GlueCatalog, name, lambda *a, **k: pytest.fail("Glue was read"))
    # WHEN the policy is explained for a table and a database
    table = synced.marketplace.explain(database="sales_orders", table="customers", account=CAROL)
    whole = synced.marketplace.explain(database="hr_people", table=None, account=None)
    # THEN both come from the index
    assert table.needs_approval and whole.needs_approval


def test_tick_syncs_when_the_last_sync_is_older_than_mesh_sync_minutes(
    services: Services,
) -> None:
    # GIVEN a store never synced
    # WHEN tick runs twice
    first = services.lifecycle.tick()
    second = services.lifecycle.tick()
    # THEN the first synced the catalog, and the second found it fresh
    assert first.catalog_synced is not None and first.catalog_synced["tables"] == 44
    assert second.catalog_synced is None


# The command line ------------------------------------------------------------------------------


@pytest.fixture
def cli(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Any:
    for name, value in aws_env.items():
        monkeypatch.setenv(name, value)
    return in_process_cli(monkeypatch, capsys, lambda s: build(load_settings()))


def test_cli_sync_prints_the_run_as_json(cli: Any) -> None:
    result = cli("sync", "--json")
    assert result.code == 0, result.err
    run = json.loads(result.out)
    assert (run["databases"], run["tables"], run["error"]) == (10, 44, None)
    assert run["glue_calls"] == 11  # one GetDatabases page, one GetTables page per database


def test_cli_catalog_search_prints_ranked_matches(cli: Any) -> None:
    assert cli("sync").code == 0
    result = cli("catalog", "--search", "customers", "--json")
    assert result.code == 0, result.err
    found = json.loads(result.out)
    assert found[0]["database"] == "sales_orders" and found[0]["table"] == "customers"
    assert found[0]["sensitive"] is True
