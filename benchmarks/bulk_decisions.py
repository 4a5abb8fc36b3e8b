"""Print Lake Formation calls for bulk approvals, and the approvals queue at 1k and 10k waiting.

Issue 9, section 2 and 3, against the demo stand-in (moto with the demo patches, over HTTP,
in a child process) and the real services:

- submits n PII requests (n = 1, 20, 100; each for its own account, so sam decides them),
  then approves them all with one ``Marketplace.decide_many`` call, counting every Lake
  Formation and Glue call with a botocore ``before-call`` hook on the adapters' clients;
  target: at most ceil(n/20) Lake Formation calls, and Glue read once per distinct scope
  (GetDatabase plus GetTable: 2 calls for 1, 20 or 100 requests on one table);
- seeds 1,000 and 10,000 waiting requests straight into a fresh store (one bulk insert of
  rows shaped as real submissions, 90% for sam's Sales products, 10% for hank's), then
  times ``Marketplace.pending_page`` for sam and a server-side run (AppTest) of
  pages/approvals.py signed in as sam, p50 and p95 over 20 runs each, and how many
  elements a run draws and how many SQL statements it runs (which, unlike the times, do not
  depend on the machine's load);
  target: a page run at most 300 ms at 10,000 waiting, the queue's read included.

Only the Approvals page runs in AppTest: the frame (sign-in, navigation) is replaced by the
real services and sam, as the app gives them to the page.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlite_utils

from benchmarks.standin_apart import standin_apart
from mesh.models import AccessRequest
from mesh.services import Services, build
from mesh.settings import load_settings
from mesh.store import _to_row

ROOT = Path(__file__).resolve().parent.parent
BULK_SIZES = (1, 20, 100)
QUEUE_SIZES = (1_000, 10_000)
RUNS = 20
BATCH = 20  # entries per BatchGrantPermissions call
TARGET_PAGE_MS = 300.0


class Statements:
    """SQL statements run on the store's connections opened from now on (any thread), but
    the savepoints sqlite-utils wraps each query in."""

    def __init__(self, services: Services) -> None:
        self.count = 0
        store = services.marketplace.store
        store.close()  # this thread's connection is opened again, traced
        opened = store._open

        def traced(**kwargs: Any) -> Any:
            db = opened(**kwargs)
            db.conn.set_trace_callback(self._seen)
            return db

        store._open = traced  # type: ignore[method-assign]

    def _seen(self, statement: str) -> None:
        if not statement.startswith(("SAVEPOINT", "RELEASE")):
            self.count += 1


class Calls:
    """Every AWS call the adapters' clients make, by service and operation."""

    def __init__(self, services: Services) -> None:
        self.seen: Counter[str] = Counter()
        for client in (services.lakeformation._lf, services.catalog.client):
            client.meta.events.register("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.seen[f"{model.service_model.service_name}:{model.name}"] += 1

    def of(self, service: str) -> Counter[str]:
        return Counter({k: v for k, v in self.seen.items() if k.startswith(service + ":")})


def services_on(endpoint: str, db: Path) -> Services:
    settings = load_settings(
        {
            "MESH_MODE": "demo",
            "MESH_DB": str(db),
            "MESH_NOTIFY": "off",
            "MESH_DEMO_ENDPOINT": endpoint,
        },
        {},
    )
    services = build(settings, endpoint=endpoint)
    assert services.sync.run(actor="benchmark").error is None  # as the demo does at start
    return services


_accounts = iter(range(10**6))


def account() -> str:
    return f"{800_000_000_000 + next(_accounts):012d}"


def submit(services: Services, database: str, table: str | None) -> AccessRequest:
    return services.marketplace.submit(
        "ada", database=database, table=table, account=account(), reason="bulk benchmark"
    )


# Part A: Lake Formation calls for n bulk approvals ---------------------------------------------


def bulk_calls(endpoint: str, workdir: Path) -> list[dict[str, Any]]:
    results = []
    for n in BULK_SIZES:
        services = services_on(endpoint, workdir / f"bulk-{n}.db")
        requests = [submit(services, "sales_orders", "customers") for _ in range(n)]
        ids = [r.id for r in requests]
        calls = Calls(services)
        start = time.perf_counter()
        outcomes = services.marketplace.decide_many(ids, "sam", verb="approve", comment="ok")
        seconds = time.perf_counter() - start
        granted = sum(
            o.request is not None and o.request.status.value == "granted" for o in outcomes
        )
        results.append(
            {
                "n": n,
                "granted": granted,
                "seconds": seconds,
                "lf": calls.of("lakeformation"),
                "glue": calls.of("glue"),
                "target": math.ceil(n / BATCH),
                "glue_target": glue_target(requests),
            }
        )
    return results


def glue_target(requests: list[AccessRequest]) -> int:
    """Glue calls when each distinct scope is read once: GetDatabase per database, plus
    GetTable per table asked for (or GetTables for a whole database)."""
    databases = {r.database for r in requests}
    return len(databases) + len({(r.database, r.table) for r in requests})


# Part B: the approvals queue at size -------------------------------------------------------------


def seed_queue(services: Services, size: int) -> None:
    """``size`` waiting requests, bulk inserted as rows shaped like real submissions."""
    templates = [
        submit(services, "sales_orders", "customers"),
        submit(services, "sales_crm", None),
        submit(services, "hr_people", "employees"),
    ]
    begin = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(size):
        template = templates[2] if i % 10 == 9 else templates[i % 2]
        at = (begin + timedelta(seconds=37 * i)).isoformat(timespec="milliseconds")
        request = replace(
            template,
            id=f"r-{i:08x}",
            account=account(),
            created_at=at,
            updated_at=at,
            step_started_at=at,
        )
        rows.append(_to_row(request))
    db = sqlite_utils.Database(str(services.settings.db_path))
    with db.conn:
        db["requests"].insert_all(rows, batch_size=1000)  # type: ignore[union-attr]
    db.close()


def percentiles(runs: list[float]) -> tuple[float, float, float]:
    """p50, p95 and the fastest run (what the run costs when nothing else competes)."""
    return statistics.median(runs), statistics.quantiles(runs, n=20)[-1], min(runs)


def queue_runs(endpoint: str, workdir: Path, size: int) -> dict[str, Any]:
    from streamlit.testing.v1 import AppTest

    import mesh.ui

    services = services_on(endpoint, workdir / f"queue-{size}.db")
    seed_queue(services, size)
    market = services.marketplace
    reads = []
    for _ in range(RUNS):
        start = time.perf_counter()
        items, total = market.pending_page("sam")
        reads.append((time.perf_counter() - start) * 1000)
    mesh.ui.services = lambda: services  # type: ignore[assignment]  # the frame's part, done
    mesh.ui.settle_heap()  # as the app does once its services are built
    calls = Calls(services)
    statements = Statements(services)
    at = AppTest.from_file(str(ROOT / "pages" / "approvals.py"), default_timeout=60)
    at.session_state["username"] = "sam"
    at.run()
    if at.exception:
        raise SystemExit(f"the page failed: {at.exception}")
    caption = next(c.value for c in at.caption if "waiting" in c.value)
    caption = caption.split(" oldest first")[0] + " oldest first"
    elements = len(list(at.main))  # every element and block the run drew; load-independent
    comment_boxes = sum(1 for t in at.text_input if str(t.key).startswith("comment-"))
    statements.count = 0
    at.run()
    per_run = statements.count
    runs = []
    full_collections = gc.get_stats()[2]["collections"]
    for _ in range(RUNS):
        start = time.perf_counter()
        at.run()
        runs.append((time.perf_counter() - start) * 1000)
    full_collections = gc.get_stats()[2]["collections"] - full_collections
    return {
        "size": size,
        "total": total,
        "shown": len(items),
        "caption": caption,
        "read": percentiles(reads),
        "page": percentiles(runs),
        "aws": sum(calls.seen.values()),
        "gc": full_collections,
        "elements": elements,
        "comment_boxes": comment_boxes,
        "statements": per_run,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mesh-bulk-bench-"))
    ok = True
    with standin_apart() as endpoint:
        if args.part in ("a", "both"):
            print("Bulk approvals (decide_many as sam), AWS calls counted on the clients:")
            for r in bulk_calls(endpoint, workdir):
                lf, glue = sum(r["lf"].values()), sum(r["glue"].values())
                ok &= lf <= r["target"] and glue <= r["glue_target"] and r["granted"] == r["n"]
                print(
                    f"  n={r['n']:>3}: {r['granted']} granted in {r['seconds']:.2f} s; "
                    f"Lake Formation calls {lf} {dict(r['lf'])} (target <= {r['target']}: "
                    f"{lf / r['target']:.2f}x); Glue calls {glue} {dict(r['glue'])} "
                    f"(each distinct scope read once, target <= {r['glue_target']}: "
                    f"{glue / r['glue_target']:.2f}x)"
                )
        if args.part in ("b", "both"):
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"Approvals queue for sam, {RUNS} runs each (p50 / p95; load average {load}):")
            for size in QUEUE_SIZES:
                r = queue_runs(endpoint, workdir, size)
                read50, read95, _ = r["read"]
                page50, page95, fastest = r["page"]
                ok &= size < QUEUE_SIZES[-1] or page95 <= TARGET_PAGE_MS
                print(
                    f"  {size:>6,} waiting ({r['total']:,} sam's, {r['shown']} a page; the page "
                    f"says {r['caption']!r}):\n"
                    f"    pending_page {read50:.1f} / {read95:.1f} ms; page run (AppTest) "
                    f"{page50:.1f} / {page95:.1f} ms, fastest {fastest:.1f} ms "
                    f"(target <= {TARGET_PAGE_MS:.0f} ms: "
                    f"{page95 / TARGET_PAGE_MS:.2f}x); AWS calls in {RUNS} page runs: {r['aws']}; "
                    f"Python's full garbage collections during them: {r['gc']}; "
                    f"elements drawn a run: {r['elements']}, comment boxes: "
                    f"{r['comment_boxes']}; SQL statements a run: {r['statements']}"
                )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
