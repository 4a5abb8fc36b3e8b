"""Print the catalog index's figures at 10k and 100k tables (issue 9, sections 1 and 4).

For each size a moto server runs in a child process, its Glue backend seeded directly (not
through the API, which would take minutes), so that this process's peak RSS is the app's
own. Then, in this process: one sync (time, Glue calls, peak RSS); AppTest runs of the
Databases, Database and Table pages (p50/p95 over 20 runs); search p50/p95 over 100 broad
and 100 selective queries; the Glue calls of page views by 20 users, next to the reference
design's pattern on the same views (GetDatabases for the home list, GetDatabase + GetTables
for a database view, GetDatabase + GetTable for a table view, each paged 100 at a time as
real Glue pages); and how long judging the whole index again takes after a policy change.
Wall-clock figures are printed with the machine's load average.

    .venv/bin/python benchmarks/catalog_scale.py [--sizes 100x100,1000x100] [--views 1000]
        [--db postgresql://USER:PASS@HOST:PORT/postgres] [--parts sync,pages,search,views,rejudge]

``--db`` runs the store on PostgreSQL: each size gets a new database on that server (the URL's
role must be allowed to create databases; `scripts/pg start DIR` prints such a URL), dropped
afterwards. Without it the store is a SQLite file in a temporary folder. ``--parts`` picks what
is measured after the sync (all by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGE_P50_MS, PAGE_P95_MS, SEARCH_P95_MS, RSS_MB = 200.0, 400.0, 100.0, 400.0
COLUMNS = 6
USERS = ["carol", "dan", "sam", "mia", "ada"]  # demo users; 20 sessions cycle through them
WORDS = ["customer", "email", "orders", "revenue", "region", "events", "ledger", "sales"]


# The moto child: seed its backend directly, then serve -------------------------------------


def serve(databases: int, tables: int) -> None:
    from moto.backends import get_backend

    from mesh.demo import standin

    server, endpoint = standin.serve()
    glue = get_backend("glue")["123456789012"]["us-east-1"]  # type: ignore[index]
    rng = random.Random(7)
    owners = [f"{100000000000 + i:012d}" for i in range(20)]
    for d in range(databases):
        name = f"{WORDS[d % len(WORDS)]}_db_{d:05d}"
        owner = owners[d % len(owners)]
        params = {"data_owner": owner, "data_owner_name": f"Producer {owner[-2:]}"}
        if d % 50 == 0:
            params["pii_flag"] = "true"
        glue.create_database(
            name, {"Name": name, "Description": f"{WORDS[d % 5]} data", "Parameters": params}
        )
        for t in range(tables):
            columns = [
                {
                    "Name": f"{WORDS[(t + c) % len(WORDS)]}_{c}",
                    "Type": "string",
                    "Comment": f"the {WORDS[(d + c) % len(WORDS)]} field",
                    "Parameters": {"pii_flag": "true"} if rng.random() < 0.03 else {},
                }
                for c in range(COLUMNS)
            ]
            table = f"t_{WORDS[t % len(WORDS)]}_{t:03d}"
            glue.create_table(
                name,
                table,
                {
                    "Name": table,
                    "Description": f"{WORDS[(d + t) % len(WORDS)]} facts",
                    "StorageDescriptor": {"Columns": columns},
                },
            )
    print(endpoint, flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin
    finally:
        server.stop()


# Helpers ------------------------------------------------------------------------------------


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def load() -> str:
    """The machine's load, to read a wall-clock figure by (others may share the cores)."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} {five:.1f} {fifteen:.1f}"


def ratio(value: float, target: float) -> str:
    return f"{value / target:.2f}x target {'(met)' if value <= target else '(MISSED)'}"


def environment(endpoint: str, db: Path | str) -> None:
    from tests.support import AUDIT_KEY, COOKIE_KEY, LINK_SECRET

    os.environ.update(
        {
            "MESH_MODE": "aws",
            "MESH_DB": str(db),
            "MESH_USERS": str(ROOT / "mesh" / "demo" / "users.yaml"),
            "MESH_COOKIE_KEY": COOKIE_KEY,
            "MESH_AUDIT_KEY": AUDIT_KEY,
            "MESH_LINK_SECRET": LINK_SECRET,
            "MESH_NOTIFY": "off",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    # No audit is measured here: the store is not started by `mesh init`, so no anchor.
    os.environ["MESH_AUDIT_ANCHOR"] = "off"


def route_pages_as_a_running_server() -> None:
    """As tests/conftest.py's running_server: page routing after app.py's first run."""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def without_page_folder(self: PagesManager, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = without_page_folder  # type: ignore[method-assign]


def count_glue_reads() -> list[str]:
    from mesh.catalog import GlueCatalog

    reads: list[str] = []
    for name in ("databases", "tables_with_times", "database", "table"):
        original = getattr(GlueCatalog, name)

        def counted(self: Any, *args: Any, _name: str = name, _f: Any = original) -> Any:
            reads.append(_name)
            return _f(self, *args)

        setattr(GlueCatalog, name, counted)
    return reads


# One size -----------------------------------------------------------------------------------


def measure(
    databases: int, tables: int, views: int, db_server: str | None, parts: set[str]
) -> dict[str, float]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", f"{databases}x{tables}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        seeded = time.perf_counter()
        endpoint = (child.stdout.readline() if child.stdout else "").strip()
        print(f"\n== {databases:,} databases x {tables} tables = {databases * tables:,} tables")
        print(f"moto backend seeded directly in {time.perf_counter() - seeded:.0f} s")
        if db_server:
            from tests import pgsupport

            url = pgsupport.fresh_database(db_server, prefix="bench")
            try:
                return _measure(endpoint, url, databases, tables, views, parts)
            finally:
                pgsupport.drop_database(url)
        with tempfile.TemporaryDirectory() as tmp:
            return _measure(endpoint, Path(tmp) / "mesh.db", databases, tables, views, parts)
    finally:
        if child.stdin:
            child.stdin.close()
        child.wait(timeout=60)


def _measure(
    endpoint: str, db: Path | str, databases: int, tables: int, views: int, parts: set[str]
) -> dict[str, float]:
    from mesh.services import build
    from mesh.settings import load_settings
    from mesh.store import open_at
    from tests.support import AUDIT_KEY

    environment(endpoint, db)
    store = open_at(db, audit_key=AUDIT_KEY)
    store.migrate(create=True)
    store.close()
    print(f"store: {store.describe()}")
    before = rss_mb()
    services = build(load_settings())
    done = services.sync.run(actor="bench")
    assert done.error is None, done.error
    peak = rss_mb()
    real_pages = math.ceil(databases / 100) + databases * math.ceil(tables / 100)
    print(
        f"sync: {done.duration_ms / 1000:.1f} s, {done.glue_calls:,} Glue calls on moto "
        f"(which does not page; real Glue at 100 a page: {real_pages:,}), peak RSS "
        f"{peak:.0f} MB (before {before:.0f} MB): {ratio(peak, RSS_MB)}"
    )
    again = services.sync.run(actor="bench")
    print(
        f"second sync, nothing changed: {again.duration_ms / 1000:.1f} s, {again.changed} changed"
    )
    figures = {"sync_s": done.duration_ms / 1000, "rss_mb": peak}
    if "pages" in parts:
        figures |= pages(services)
    if "search" in parts:
        figures |= search(services, databases)
    if "views" in parts and views:
        figures |= glue_for_views(services, views)
    if "rejudge" in parts:  # last: it leaves the index judged under another policy
        figures |= rejudge(services)
    return figures


def pages(services: Any) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    from tests.support import APP, sign_in

    route_pages_as_a_running_server()
    names = services.index.database_names()
    database = names[len(names) // 2]
    table = services.index.table_names(database)[0]
    at = sign_in(AppTest.from_file(APP, default_timeout=120), "carol")
    figures: dict[str, float] = {}
    for page, query in (
        ("databases", {}),
        ("database", {"db": database}),
        ("table", {"db": database, "table": table}),
    ):
        at.query_params = query
        at.switch_page(f"pages/{page}.py").run()
        runs = []
        for _ in range(20):
            start = time.perf_counter()
            at.run()
            runs.append((time.perf_counter() - start) * 1000)
            assert not at.exception, at.exception
        p50, p95 = statistics.median(runs), pct(runs, 95)
        figures[f"{page}_p50"], figures[f"{page}_p95"] = p50, p95
        print(
            f"{page} page run: p50 {p50:.0f} ms ({ratio(p50, PAGE_P50_MS)}), "
            f"p95 {p95:.0f} ms ({ratio(p95, PAGE_P95_MS)}); {load()}"
        )
    return figures


def search(services: Any, databases: int) -> dict[str, float]:
    """Search over 100 queries of the benchmark's 8 words (each in most entries: the worst
    case, where a search ranks only its first 1,000 matches), then over 100 selective ones
    (a database's number, a table's name and a database's number, an owner's name and a
    table's name: 1 to about 100 matches each)."""
    from mesh.catalog_index import Query

    rng = random.Random(11)
    owners = [a for a, _ in services.index.owners() if a]
    broad = []
    for n in range(100):
        words = " ".join(rng.sample(WORDS, 1 + n % 2))
        broad.append(
            Query(
                text=words if n % 10 else "",
                owner=rng.choice(owners) if n % 3 == 0 else None,
                needs_approval=True if n % 4 == 0 else None,
                page=rng.randrange(3),
            )
        )
    selective = []
    for n in range(100):
        d = rng.randrange(databases)
        t = rng.randrange(100)
        text = [
            f"{d:05d}",
            f"t_{WORDS[t % len(WORDS)]}_{t:03d} {d:05d}",
            f"producer {rng.randrange(20):02d} t_{WORDS[t % len(WORDS)]}_{t:03d}",
        ][n % 3]
        selective.append(Query(text=text, needs_approval=True if n % 4 == 0 else None))
    figures: dict[str, float] = {}
    for label, queries in (("broad", broad), ("selective", selective)):
        times, cpu, capped = [], [], 0
        for query in queries:
            start, used = time.perf_counter(), time.process_time()
            capped += services.index.search(query).capped
            times.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - used) * 1000)
        p50, p95 = statistics.median(times), pct(times, 95)
        # CPU time is what the search costs; wall time also waits for the cores others use.
        print(
            f"search over 100 {label} queries: p50 {p50:.0f} ms, p95 {p95:.0f} ms "
            f"({ratio(p95, SEARCH_P95_MS)}); CPU p50 {statistics.median(cpu):.0f} ms, "
            f"p95 {pct(cpu, 95):.0f} ms; {capped} said more matched than they rank; {load()}"
        )
        figures[f"search_{label}_p50"], figures[f"search_{label}_p95"] = p50, p95
        figures[f"search_{label}_cpu_p95"] = pct(cpu, 95)
    return figures


def rejudge(services: Any) -> dict[str, float]:
    """Judge the whole index again, as start-up does after a policy change (no Glue read)."""
    from mesh.catalog_index import CatalogIndex
    from mesh.sync import CatalogSync

    index = CatalogIndex(
        services.index.store, rules=services.index.rules, fingerprint="another-policy"
    )
    sync = CatalogSync(services.sync.catalog, index, clock=services.sync.clock)
    start = time.perf_counter()
    judged = sync.ensure_judged()
    spent = time.perf_counter() - start
    print(
        f"re-judging the index after a policy change: {spent:.1f} s for {judged:,} databases "
        f"and their tables, peak RSS {rss_mb():.0f} MB; {load()}"
    )
    return {"rejudge_s": spent}


def glue_for_views(services: Any, views: int) -> dict[str, float]:
    """Page views by 20 sessions cycling home -> database -> table, and the Glue they cost."""
    from streamlit.testing.v1 import AppTest

    from tests.support import APP, sign_in

    rng = random.Random(5)
    names = services.index.database_names()
    sessions = [
        sign_in(AppTest.from_file(APP, default_timeout=120), USERS[i % 5]) for i in range(20)
    ]
    reads = count_glue_reads()
    reference = 0
    start = time.perf_counter()
    for view in range(views):
        at = sessions[view % 20]
        kind = (view // 20) % 3
        database = rng.choice(names)
        tables = len(services.index.table_names(database))
        if kind == 0:
            at.query_params = {}
            at.switch_page("pages/databases.py").run()
            reference += math.ceil(len(names) / 100)  # GetDatabases, 100 a page
        elif kind == 1:
            at.query_params = {"db": database}
            at.switch_page("pages/database.py").run()
            reference += 1 + max(1, math.ceil(tables / 100))  # GetDatabase + GetTables
        else:
            at.query_params = {"db": database, "table": services.index.table_names(database)[0]}
            at.switch_page("pages/table.py").run()
            reference += 2  # GetDatabase + GetTable
        assert not at.exception, at.exception
    spent = time.perf_counter() - start
    print(
        f"Glue calls for {views:,} page views by 20 users: {len(reads)} "
        f"(reference design's pattern on the same views: {reference:,}; target at most a "
        f"tenth of it, {reference // 10:,}: {'met' if len(reads) <= reference / 10 else 'MISSED'})"
        f"; {spent / views * 1000:.0f} ms a view"
    )
    return {"view_glue_calls": len(reads), "reference_calls": reference}


def main() -> int:
    logging.disable(logging.WARNING)  # AppTest's bare-mode warnings, one per run
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="100x100,1000x100", help="DATABASESxTABLES,...")
    parser.add_argument("--views", type=int, default=1000)
    parser.add_argument("--db", help="a PostgreSQL server's URL: the store on it, not SQLite")
    parser.add_argument("--parts", default="sync,pages,search,views,rejudge")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if args.serve:
        serve(*(int(n) for n in args.serve.split("x")))
        return 0
    sizes = args.sizes.split(",")
    if len(sizes) == 1:
        databases, tables = (int(n) for n in sizes[0].split("x"))
        figures = measure(databases, tables, args.views, args.db, parts)
        print("FIGURES " + json.dumps(figures), flush=True)
        return 0
    found: dict[int, dict[str, float]] = {}
    for size in sizes:  # each size in a fresh process, so its peak RSS is its own
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                *("--sizes", size, "--views", str(args.views), "--parts", args.parts),
                *(("--db", args.db) if args.db else ()),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for line in child.stdout or []:
            if line.startswith("FIGURES "):
                databases, tables = (int(n) for n in size.split("x"))
                found[databases * tables] = json.loads(line[len("FIGURES ") :])
            else:
                print(line, end="", flush=True)
        if child.wait() != 0:
            return 1
    small, big = min(found), max(found)
    if small != big:
        print(f"\n== growth from {small:,} to {big:,} tables ({big / small:.0f}x the tables)")
        for key in found[small]:
            a, b = found[small][key], found[big][key]
            print(f"{key}: {a:.1f} -> {b:.1f} ({b / a:.2f}x)" if a else f"{key}: {a} -> {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
