"""Print how long the Approvals page's queue takes under a multi-step policy.

Stores many pending two-step requests (half of them past step 1), then times
`pending_for` for an owner and for a privacy-office member, which is what the Approvals
page calls on every run, and times judging every table of the demo mesh under the policy.
Everything but Glue (read once, over HTTP, from the moto stand-in) is the real code path.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh import approval
from mesh.demo import data, standin
from mesh.models import Scope
from mesh.services import build
from mesh.settings import load_settings

PENDING = 1_000
TARGET_SECONDS = 2.0  # the queue of one approver, read on every rerun of the page
POLICY = Path(__file__).resolve().parent.parent / "examples" / "policies" / "two-step-pii.yaml"


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
    print(f"judged {judged} tables under the policy in {judging * 1000:.1f} ms")
    return 0 if all(s < TARGET_SECONDS for s, _ in timings.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
