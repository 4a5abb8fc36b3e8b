"""Print the throughput of submit + approve + grant through the use cases, over HTTP."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh.demo import data, standin
from mesh.services import build
from mesh.settings import load_settings

TARGET_PER_SECOND = 5.0
ROUNDS = 60
OWNERS = {
    "111111111111": "sam",
    "222222222222": "mia",
    "333333333333": "hank",
    "555555555555": "fiona",
}


def main() -> int:
    server, endpoint = standin.serve()
    workdir = Path(tempfile.mkdtemp(prefix="mesh-bench-"))
    settings = load_settings({"MESH_MODE": "demo", "MESH_DB": str(workdir / "demo.db")}, {})
    services = build(settings, endpoint=endpoint)
    from mesh.aws import ClientFactory

    data.seed(ClientFactory(demo_endpoint=endpoint).client("glue"))
    market = services.marketplace
    tables = [
        (db, t) for db, (_, _, ts) in data.DATABASES.items() if db != "legacy_exports" for t in ts
    ]
    start = time.perf_counter()
    decided = 0
    for i in range(ROUNDS):
        db, table = tables[i % len(tables)]
        account = f"{100000000000 + i:012d}"
        request = market.submit(
            "ada", database=db, table=table, account=account, reason="benchmark"
        )
        if request.status.value == "pending_approval":
            owner = OWNERS[data.DATABASES[db][1]["data_owner"]]
            outcome = market.approve(request.id, owner, comment="benchmark")
            if outcome.status.value != "granted":
                print(f"unexpected outcome {outcome.status}: {outcome.error}")
                return 1
            decided += 1
    elapsed = time.perf_counter() - start
    rate = ROUNDS / elapsed
    print(
        f"{ROUNDS} requests ({decided} needing approval) submitted and decided in "
        f"{elapsed:.2f} s: {rate:.1f} a second (target > {TARGET_PER_SECOND})"
    )
    server.stop()
    return 0 if rate > TARGET_PER_SECOND else 1


if __name__ == "__main__":
    sys.exit(main())
