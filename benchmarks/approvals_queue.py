"""Print how long the Approvals page's queue takes under a multi-step policy.

Stores many pending two-step requests (half of them past step 1), then times
`pending_for` (every waiting request) for an owner and for a privacy-office member, a
server-side run (AppTest) of pages/approvals.py for each of them (p50 and p95 over 20
runs, and the elements a run draws), and judging every table of the demo mesh under the
policy. Everything but Glue (read once, over HTTP, from the moto stand-in) is the real
code path. benchmarks/bulk_decisions.py measures the page at 10,000 waiting.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh import approval
from mesh.demo import data, standin
from mesh.models import Scope
from mesh.services import Services, build
from mesh.settings import load_settings

PENDING = 1_000
TARGET_SECONDS = 2.0  # every waiting request of one approver
TARGET_PAGE_MS = 300.0  # a page run (issue 9's target at 10,000 waiting)
RUNS = 20
ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "policies" / "two-step-pii.yaml"


def main() -> int:
    server, endpoint = standin.serve()
    workdir = Path(tempfile.mkdtemp(prefix="mesh-bench-"))
    settings = load_settings(
        {"MESH_MODE": "demo", "MESH_DB": str(workdir / "demo.db"), "MESH_POLICY": str(POLICY),
         "MESH_NOTIFY": "off"},
        {},
    )  # fmt: skip
    from mesh.aws import ClientFactory

    data.seed(ClientFactory(demo_endpoint=endpoint).client("glue"))
    services = build(settings, endpoint=endpoint)
    market = services.marketplace
    start = time.perf_counter()
    for i in range(PENDING):
        request = market.submit(
            "ada",
            database="sales_orders",
            table="customers",
            account=f"{100000000000 + i:012d}",
            reason="benchmark of the approvals queue",
            duration=timedelta(days=30),
        )
        if i % 2:
            market.approve(request.id, "sam")
    filled = time.perf_counter() - start
    timings = {}
    for who in ("sam", "priya"):
        start = time.perf_counter()
        queue = market.pending_for(who)
        timings[who] = (time.perf_counter() - start, len(queue))
    pages = {who: page_runs(services, who) for who in ("sam", "priya")}
    snapshot = services.catalog.snapshot()
    start = time.perf_counter()
    judged = 0
    for database in snapshot.databases:
        for table in snapshot.tables.get(database.name, ()):
            scope = Scope(database=database.name, table=table.name)
            approval.evaluate(market.rules, scope, database, [table], account=None)
            judged += 1
    judging = time.perf_counter() - start
    server.stop()
    print(f"{PENDING} pending two-step requests stored (half past step 1) in {filled:.1f} s")
    for who, (seconds, count) in timings.items():
        print(
            f"pending_for({who}): {count} requests in {seconds:.2f} s (target < {TARGET_SECONDS})"
        )
    for who, (p50, p95, elements) in pages.items():
        print(
            f"Approvals page run (AppTest) as {who}: p50 {p50:.1f} ms, p95 {p95:.1f} ms "
            f"(target <= {TARGET_PAGE_MS:.0f} ms: {p95 / TARGET_PAGE_MS:.2f}x); "
            f"elements drawn a run: {elements}"
        )
    print(f"judged {judged} tables under the policy in {judging * 1000:.1f} ms")
    ok = all(s < TARGET_SECONDS for s, _ in timings.values())
    return 0 if ok and all(p95 <= TARGET_PAGE_MS for _, p95, _ in pages.values()) else 1


def page_runs(services: Services, who: str) -> tuple[float, float, int]:
    """p50 and p95 of a server-side run of the Approvals page as ``who``, and the elements
    it draws; the frame (sign-in, navigation) replaced by these services, as bulk_decisions.py
    does."""
    from streamlit.testing.v1 import AppTest

    import mesh.ui

    mesh.ui.services = lambda: services  # type: ignore[assignment]
    mesh.ui.settle_heap()  # as the app does once its services are built
    at = AppTest.from_file(str(ROOT / "pages" / "approvals.py"), default_timeout=60)
    at.session_state["username"] = who
    at.run()
    if at.exception:
        raise SystemExit(f"the page failed for {who}: {at.exception}")
    runs = []
    for _ in range(RUNS):
        start = time.perf_counter()
        at.run()
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs), statistics.quantiles(runs, n=20)[-1], len(list(at.main))


if __name__ == "__main__":
    raise SystemExit(main())
