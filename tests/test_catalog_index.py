"""The catalog index: sync from Glue (paged, add/change/drop), FTS search and facets,
re-judging when the policy changes, the live read winning at submit, and the CLI.

The tests of the index's own SQL (sync, search, facets, re-judging) run on both store
adapters: SQLite, and the real PostgreSQL server that `scripts/dev test` starts, each test
on a copy of a migrated template database (as the store contract suite does). One test
holds the two to the same matches over a generated catalog of a few thousand tables.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from streamlit.testing.v1 import AppTest

from mesh import catalog_search
from mesh.approval import DEFAULT
from mesh.catalog import GlueCatalog
from mesh.catalog_index import CatalogIndex, Query
from mesh.models import Column, Database, Table
from mesh.services import Services, activate_policy, build, load_policy
from mesh.settings import Settings, load_settings
from mesh.store import AnyStore, PgStore, Store
from mesh.sync import CatalogSync
from tests import pgsupport
from tests.conftest import REGION, client
from tests.support import APP, AUDIT_KEY, COOKIE_KEY, in_process_cli, sign_in, texts

CENTRAL = "123456789012"
CAROL = "444455556666"
STEWARDS = Path(__file__).parent.parent / "examples" / "policies" / "restricted-stewards.yaml"


def now() -> datetime:
    return datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


ADAPTERS = ["sqlite", "postgresql"]


@pytest.fixture
def synced(services: Services) -> Services:
    """The demo mesh, synced into the index once (the app's services: SQLite)."""
    done = services.sync.run(actor="test")
    assert done.error is None
    return services


# Stores on both adapters ---------------------------------------------------------------------


def _stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[Callable[[str], AnyStore], Callable[[], None]]:
    """Make migrated stores (copies of the module's templates), and close and drop them."""
    made: list[AnyStore] = []
    urls: list[str] = []

    def make(adapter: str) -> AnyStore:
        store: AnyStore
        if adapter == "sqlite":
            path = tmp_path / f"mesh{len(made)}.db"
            shutil.copy(request.getfixturevalue("sqlite_template"), path)
            store = Store(path, audit_key=AUDIT_KEY)
        else:
            template = pgsupport.database_name(request.getfixturevalue("pg_template"))
            server = request.getfixturevalue("pg_server_url")
            urls.append(pgsupport.fresh_database(server, template=template))
            store = PgStore(urls[-1], audit_key=AUDIT_KEY)
        made.append(store)
        return store

    def done() -> None:
        for store in made:
            store.close()
        for url in urls:
            pgsupport.drop_database(url)

    return make, done


@pytest.fixture(params=ADAPTERS)
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], AnyStore]]:
    """Make migrated stores on the test's adapter, each a fresh copy of the template."""
    make, done = _stores(request, tmp_path)
    yield lambda: make(request.param)
    done()


@pytest.fixture
def sync(aws: str, new_store: Callable[[], AnyStore]) -> CatalogSync:
    """The demo mesh synced once into a catalog index on the test's adapter."""
    glue = client("glue", aws)
    index = CatalogIndex(new_store(), rules=DEFAULT, fingerprint="f1")
    sync = CatalogSync(GlueCatalog(glue, catalog_id=CENTRAL), index, clock=now, glue_client=glue)
    assert sync.run(actor="test").error is None
    return sync


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


def test_sync_pages_glue_100_at_a_time_and_follows_every_next_token(
    new_store: Callable[[], AnyStore],
) -> None:
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
    index = CatalogIndex(new_store(), rules=DEFAULT, fingerprint="f1")
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


def test_sync_adds_changes_and_removes_what_glue_holds(aws: str, sync: CatalogSync) -> None:
    # GIVEN a synced demo mesh
    index = sync.index
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
    done = sync.run(actor="test")
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


def test_a_second_sync_of_an_unchanged_catalog_changes_nothing(sync: CatalogSync) -> None:
    # GIVEN a synced demo mesh
    # WHEN it is synced again with nothing changed in Glue
    done = sync.run(actor="test")
    # THEN nothing was added, changed or removed
    assert (done.added, done.changed, done.removed) == (0, 0, 0)
    assert (done.databases, done.tables) == (10, 44)


# Search and facets -------------------------------------------------------------------------


def test_search_ranks_a_name_match_above_a_column_or_description_match(sync: CatalogSync) -> None:
    # GIVEN the synced demo mesh
    # WHEN people search for "customers"
    found = sync.index.search(Query(text="customers"))
    # THEN the table named customers comes first, and other matches follow it
    assert found.entries[0].name == "sales_orders.customers"
    assert found.total > 1


def test_search_matches_prefixes_columns_and_owner_names(sync: CatalogSync) -> None:
    # WHEN searching by a column name's prefix and by an owner's name
    by_column = {e.name for e in sync.index.search(Query(text="emai")).entries}
    by_owner = {e.database for e in sync.index.search(Query(text="marketing")).entries}
    # THEN tables with such columns, and the producer's products, are found
    assert "sales_orders.customers" in by_column
    assert "marketing_campaigns" in by_owner


def test_search_ignores_fts_syntax_in_what_people_type(sync: CatalogSync) -> None:
    # WHEN the text holds FTS5 operators and stray quotes
    found = sync.index.search(Query(text='"orders ^*( -'))
    # THEN it is searched as words, without an error
    assert any(e.database == "sales_orders" for e in found.entries)


def test_a_postgresql_query_holds_only_words_as_sqlite_splits_them() -> None:
    # WHEN text with tsquery operators, underscores, accents and capitals becomes a tsquery
    text = "a&b | !Café:* sales_orders 'x' <-> ___"
    # THEN each word is required, a word's parts are a phrase, the last part a prefix, and
    # nothing typed is tsquery syntax; in names only, each part is weight A
    assert catalog_search.ts_query(text) == (
        "('a':*) & ('b':*) & ('cafe':*) & ('sales' <-> 'orders':*) & ('x':*)"
    )
    assert catalog_search.ts_query("sales_orders", prefix=False, names=True) == (
        "('sales':A <-> 'orders':A)"
    )
    assert catalog_search.ts_query("___ !") == ""


def test_facets_narrow_by_owner_level_approval_pii_and_kind(sync: CatalogSync) -> None:
    index = sync.index
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


def test_already_have_access_facet_keeps_granted_databases_and_tables(sync: CatalogSync) -> None:
    # GIVEN a grant of one table and of one whole database
    query = Query(
        granted_databases=frozenset({"hr_people"}),
        granted_tables=frozenset({("sales_orders", "orders")}),
        page_size=500,
    )
    # WHEN the facet is on
    names = {e.name for e in sync.index.search(query).entries}
    # THEN the database, its tables, and the one table are listed, and nothing else
    assert "hr_people" in names and "sales_orders.orders" in names
    assert all(n.startswith("hr_people") or n == "sales_orders.orders" for n in names)


def test_results_are_paged_50_at_a_time(sync: CatalogSync) -> None:
    first = sync.index.search(Query())
    second = sync.index.search(Query(page=1))
    assert (len(first.entries), len(second.entries), first.pages) == (50, 4, 2)
    assert not {e.name for e in first.entries} & {e.name for e in second.entries}


def test_a_search_under_the_cap_counts_every_match_exactly(sync: CatalogSync) -> None:
    # WHEN a search matches fewer entries than the cap
    found = sync.index.search(Query(text="orders", page_size=500))
    # THEN every match is counted and shown, and the count has no "+"
    assert 1 < found.total == len(found.entries)
    assert not found.capped and found.count == str(found.total)


def test_a_search_beyond_the_cap_ranks_the_name_matches_and_says_more_matched(
    sync: CatalogSync,
) -> None:
    # GIVEN every entry matching "orders", and those whose names hold the word
    every = sync.index.search(Query(text="orders", page_size=500)).entries
    named = [e for e in every if "orders" in e.name.replace(".", "_").split("_")]
    assert 0 < len(named) < len(every)
    # WHEN the cap is as many as the name matches
    found = sync.index.search(Query(text="orders", page_size=500), cap=len(named))
    # THEN the name matches are the ones ranked, in the order of the full ranking,
    # and the count says that more matched
    assert [e.name for e in found.entries] == [e.name for e in named]
    assert found.capped and found.total == len(named) and found.count == f"{len(named)}+"


def test_a_capped_search_pages_within_the_cap(sync: CatalogSync) -> None:
    # GIVEN a search for a word that names many entries, capped at 7, 3 a page
    query = Query(text="sales", page_size=3)
    # WHEN each page is read, and one beyond the last
    pages = [sync.index.search(Query(text="sales", page_size=3, page=n), cap=7) for n in range(4)]
    # THEN 3 pages hold the 7 ranked entries once each, and the page beyond shows the last
    assert [len(p.entries) for p in pages] == [3, 3, 1, 1]
    assert all(p.capped and p.pages == 3 for p in pages)
    names = [e.name for p in pages[:3] for e in p.entries]
    assert len(set(names)) == 7 and pages[3].page == 2
    assert sync.index.search(query, cap=7).entries == pages[0].entries


def test_a_prefix_finds_what_whole_words_do_not(sync: CatalogSync) -> None:
    # WHEN a word is typed in part, in two words
    found = sync.index.search(Query(text="sales custom"))
    # THEN the whole words it begins are found (whole words are tried first)
    assert "sales_orders.customers" in {e.name for e in found.entries}


def test_owner_facet_with_text_keeps_only_that_owners_matches(sync: CatalogSync) -> None:
    # GIVEN the matches for "orders" of every owner
    every = sync.index.search(Query(text="orders", page_size=500)).entries
    # WHEN the owner facet is set too
    owner = every[0].owner_account
    assert owner is not None
    found = sync.index.search(Query(text="orders", owner=owner, page_size=500)).entries
    # THEN exactly that owner's matches remain, in the same order
    assert [e.name for e in found] == [e.name for e in every if e.owner_account == owner]


# The same matches on both adapters ---------------------------------------------------------

# 62 words; a table's 13 words hit one word in about one table in five.
VOCAB = [
    f"{head}{tail}"
    for head in ("cust", "ord", "rev", "reg", "ledg", "sal", "ship", "ret", "inv", "pay")
    for tail in ("omer", "ers", "ant", "ing", "ix", "o")
] + ["café", "naïve"]
OWNERS = [f"{200000000000 + i:012d}" for i in range(8)]


def _generated_catalog(
    databases: int = 40, tables: int = 60
) -> list[tuple[Database, list[tuple[Table, str | None]]]]:
    """``databases`` x ``tables`` tables of words from VOCAB; every fifth table's name holds
    "events", and every table's column comments do; a ninth of the databases have no owner."""
    rng = random.Random(20261202)
    batch = []
    for d in range(databases):
        name = f"{VOCAB[d % len(VOCAB)]}_{rng.choice(VOCAB)}_{d:03d}"
        params = {"data_owner_name": f"Producer {d % 8}"}
        if d % 9:
            params["data_owner"] = OWNERS[d % 8]
        if d % 17 == 0:
            params["pii_flag"] = "true"
        description = f"{rng.choice(VOCAB)} and {rng.choice(VOCAB)} data-set v1.{d}"
        rows: list[tuple[Table, str | None]] = []
        for t in range(tables):
            columns = tuple(
                Column(
                    name=f"{rng.choice(VOCAB)}_{c}",
                    type="string",
                    comment=f"the {rng.choice(VOCAB)} events",
                    parameters={"pii_flag": "true"} if rng.random() < 0.02 else {},
                )
                for c in range(4)
            )
            word = "events" if t % 5 == 0 else rng.choice(VOCAB)
            table = Table(
                database=name,
                name=f"t_{word}_{t:03d}",
                description=f"{rng.choice(VOCAB)} facts for {rng.choice(VOCAB)}@example.com",
                columns=columns,
            )
            rows.append((table, None))
        batch.append((Database(name=name, description=description, parameters=params), rows))
    return batch


@pytest.fixture
def both(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, CatalogIndex]]:
    """The generated catalog's index on SQLite and on PostgreSQL."""
    make, done = _stores(request, tmp_path)
    batch = _generated_catalog()
    indexes = {}
    for adapter in ADAPTERS:
        index = CatalogIndex(make(adapter), rules=DEFAULT, fingerprint="f1")
        index.put(batch, at="2025-01-02T03:04:05Z")
        indexes[adapter] = index
    yield indexes
    done()


def test_both_adapters_find_the_same_matches_in_a_generated_catalog(
    both: dict[str, CatalogIndex],
) -> None:
    # GIVEN 2,440 databases and tables in the index on SQLite and on PostgreSQL
    sqlite, pg = both["sqlite"], both["postgresql"]
    assert sqlite.counts() == pg.counts() == (40, 2400)
    every = catalog_search.CAP
    queries = [
        Query(text="ordix"),  # one word
        Query(text="ordix salers"),  # two words
        Query(text="payan"),  # a prefix of one word
        Query(text="custo revi"),  # prefixes of two
        Query(text="CAFE naive"),  # without accents, in capitals
        Query(text="example.com ledgix"),  # split as words
        Query(text="t_events_005"),  # a name's parts, as a phrase
        Query(text="invo", owner=OWNERS[3]),  # the owner facet
        Query(text="invo", owner=""),  # no owner
        Query(text="regers", contains_pii=True),  # the PII facet
        Query(text="regers", kind="database"),  # the kind facet
        Query(text="reg", kind="table", needs_approval=True),
    ]
    for query in queries:
        # WHEN each is searched on both, every match on one page
        found = {a: i.search(replace(query, page_size=every)) for a, i in both.items()}
        # THEN both find the same matches, all of them, and say no more matched
        names = {a: {e.name for e in page.entries} for a, page in found.items()}
        assert names["sqlite"] == names["postgresql"], query
        assert 0 < found["sqlite"].total == found["postgresql"].total == len(names["sqlite"])
        assert not found["sqlite"].capped and not found["postgresql"].capped, query
    # AND a word beyond the cap is capped on both, with the entries whose names hold it
    over = {a: i.search(Query(text="events", page_size=every)) for a, i in both.items()}
    named = {
        a: {e.name for e in page.entries if "events" in e.name.replace(".", "_").split("_")}
        for a, page in over.items()
    }
    assert all(page.capped and page.total == every for page in over.values())
    assert len(named["sqlite"]) == 480 and named["sqlite"] == named["postgresql"]
    # AND the listing without text is the same, in the same order, with its exact count
    for query in (Query(page_size=every), Query(owner=OWNERS[2], page_size=every)):
        listed = {a: i.search(query) for a, i in both.items()}
        assert [e.name for e in listed["sqlite"].entries] == [
            e.name for e in listed["postgresql"].entries
        ]
        assert listed["sqlite"].total == listed["postgresql"].total > 0


@pytest.fixture
def catalog_page(
    aws_env: dict[str, str], synced: Services, running_server: None, monkeypatch: Any
) -> AppTest:
    """The app over the synced demo mesh, not yet run."""
    for name, value in {**aws_env, "MESH_COOKIE_KEY": COOKIE_KEY}.items():
        monkeypatch.setenv(name, value)
    return AppTest.from_file(APP, default_timeout=30)


def test_databases_page_says_when_more_matched_than_a_search_ranks(
    catalog_page: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a search that ranks at most 3 matches, and carol on the Data products page
    monkeypatch.setattr(catalog_search, "CAP", 3)
    sign_in(catalog_page, "carol")
    # WHEN she searches for a word more entries hold
    catalog_page.text_input(key="catalog_search").input("sales").run()
    # THEN 3 are shown, and the page says more matched and how to narrow it
    assert not catalog_page.exception
    [table] = [d for d in catalog_page.dataframe if d.key == "databases_table"]
    assert len(table.value) == 3
    assert [c for c in texts(catalog_page.caption) if "matches" in c] == [
        "3+ matches, best first among the first 3 found (names that hold every word come "
        "first); add words to narrow it; page 1 of 1"
    ]
    # AND a search one entry matches says "1 match"
    catalog_page.text_input(key="catalog_search").input("candidates").run()
    assert [c for c in texts(catalog_page.caption) if "match" in c] == [
        "1 match, best first; page 1 of 1"
    ]


# Policy changes and live reads -----------------------------------------------------------------


def test_a_new_policy_judges_the_index_again_without_reading_glue(
    settings: Settings, synced: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the index judged under the built-in policy
    index = synced.index
    # WHEN the stewards policy is activated and a process starts with it, Glue unreachable

    stewards = replace(settings, policy_path=STEWARDS)
    activate_policy(stewards, by="test")
    monkeypatch.setattr(GlueCatalog, "tables_with_times", lambda *a: pytest.fail("Glue was read"))
    again = build(stewards)
    # THEN the index carries the new policy's fingerprint and levels
    assert again.index.judged_with() == again.index.fingerprint != index.fingerprint
    levels = {e.level for e in again.index.search(Query(page_size=500)).entries}
    assert levels - {lv.name for lv in DEFAULT.levels}


def _index_rows(index: CatalogIndex) -> tuple[list[Any], ...]:
    """Everything the index holds but ids and sync times, in a stable order."""
    with index.store._connect() as db:
        tables = db.execute(
            "SELECT database, name, description, owner_account, owner_name, domain, parameters, "
            "update_time, pii, pii_columns, level, needs_approval, reason, contains_pii, "
            "pii_summary, hash FROM catalog_tables ORDER BY database, name"
        ).fetchall()
        databases = [
            # A database's reason names its tables in the order they were read: by name
            # from the index, in Glue's order from Glue.
            (*row[:-1], row[-1].partition(": ")[0], sorted(row[-1].partition(": ")[2].split("; ")))
            for row in db.execute(
                "SELECT name, description, owner_account, owner_name, domain, parameters, pii, "
                "level, needs_approval, contains_pii, pii_summary, tables, hash, reason "
                "FROM catalog_databases ORDER BY name"
            )
        ]
        columns = db.execute(
            "SELECT * FROM catalog_columns ORDER BY database, table_name, position"
        ).fetchall()
        fts = sorted(
            db.execute("SELECT name, description, columns, owner, domain FROM catalog_fts")
        )
    return tables, databases, columns, fts


def test_judging_again_leaves_the_index_as_a_sync_under_the_new_policy_would(
    settings: Settings,
    sync: CatalogSync,
    new_store: Callable[[], AnyStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN the demo mesh synced under the built-in policy, and the stewards policy

    rules = load_policy(replace(settings, policy_path=STEWARDS))
    verdicts_only = []
    original = CatalogIndex._rejudge_table

    def spy(self: CatalogIndex, *args: Any, **kwargs: Any) -> None:
        verdicts_only.append(args[2])
        original(self, *args, **kwargs)

    monkeypatch.setattr(CatalogIndex, "_rejudge_table", spy)
    # WHEN the index is judged again under it
    judged = CatalogIndex(sync.index.store, rules=rules, fingerprint="stewards")
    assert judged.rejudge(at="2025-01-02T03:04:05Z") == 10
    # THEN it holds what a fresh sync under the stewards policy makes, though some tables
    # had only their verdicts rewritten
    again = CatalogIndex(new_store(), rules=rules, fingerprint="stewards")
    assert CatalogSync(sync.catalog, again, clock=now).run(actor="test").error is None
    assert _index_rows(judged) == _index_rows(again)
    assert verdicts_only


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


def test_cli_catalog_search_says_when_more_matched_than_it_ranks(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a search that ranks at most 3 matches
    assert cli("sync").code == 0
    monkeypatch.setattr(catalog_search, "CAP", 3)
    # WHEN the CLI searches for a word more entries hold, 100 a page
    result = cli("catalog", "--search", "sales")
    # THEN it prints the 3 ranked, and says that more matched
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 3
    assert "... 3+ matched; search for more words to narrow it." in result.err
