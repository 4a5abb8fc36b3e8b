"""Print fdatasync per write transaction and the app's own time from submit to granted.

Lake Formation and Glue are in-memory fakes, so only the app's overhead counts: the policy,
the store's write transactions and their audit rows. fsync and fdatasync are counted with
``strace -f -c`` when strace is installed (``apt-get install -y strace``): the script runs
itself twice under strace, with N submits and with none, and divides the difference by the
number of write transactions the N submits made.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh.models import Database, GrantSpec, Role, Status, Table, User
from mesh.store import Store
from mesh.workflow import Marketplace

TARGET_P50_MS = 10.0
CENTRAL = "123456789012"
PRODUCER = "111111111111"
ADA = User(username="ada", roles=frozenset({Role.ADMIN}))


class FakeCatalog:
    """One database of ten tables without PII: every request is granted at once."""

    catalog_id = CENTRAL

    def database(self, name: str) -> Database:
        return Database(name=name, parameters={"data_owner": PRODUCER})

    def table(self, database: str, name: str) -> Table:
        return Table(database=database, name=name)

    def tables(self, database: str) -> list[Table]:
        return [Table(database=database, name=f"t{i}") for i in range(10)]


class FakeGrants:
    def grant(self, spec: GrantSpec) -> dict[str, Any]:
        return spec.to_api()

    def revoke(self, spec: GrantSpec) -> dict[str, Any]:
        return spec.to_api()

    def holds(self, spec: GrantSpec) -> bool:
        return False

    def list_permissions(self, **_: Any) -> list[dict[str, Any]]:
        return []


class OneUser:
    def get(self, username: str | None) -> User | None:
        return ADA if username == "ada" else None

    def everyone(self) -> list[User]:
        return [ADA]


@contextmanager
def counting_writes(store: Store) -> Iterator[list[int]]:
    """Count the store's write transactions (each ``_write`` is one BEGIN IMMEDIATE)."""
    count = [0]
    real = store._write

    @contextmanager
    def counted() -> Iterator[Any]:
        count[0] += 1
        with real() as db:
            yield db

    store._write = counted  # type: ignore[method-assign]
    try:
        yield count
    finally:
        store._write = real  # type: ignore[method-assign]


def submits(folder: Path, n: int) -> tuple[list[float], int]:
    """Submit ``n`` requests that are granted at once; their times (s) and write count."""
    store = Store(folder / "mesh.db", key_file_beside=True)  # the demo's key file
    store.migrate()
    market = Marketplace(store=store, catalog=FakeCatalog(), grants=FakeGrants(), users=OneUser())
    times = []
    with counting_writes(store) as writes:
        for i in range(n):
            start = time.perf_counter()
            request = market.submit(
                "ada",
                database="shop",
                table=f"t{i % 10}",
                account=f"{200000000000 + i:012d}",
                reason="benchmark",
            )
            times.append(time.perf_counter() - start)
            if request.status is not Status.GRANTED:
                raise SystemExit(f"unexpected status {request.status}: {request.error}")
    return times, writes[0]


def child(n: int) -> int:
    folder = Path(tempfile.mkdtemp(prefix="mesh-writes-"))
    try:
        _, writes = submits(folder, n)
    finally:
        shutil.rmtree(folder)
    print(json.dumps({"writes": writes}))
    return 0


def syncs_under_strace(n: int) -> tuple[int, int]:
    """fsync + fdatasync calls of a child doing ``n`` submits, and its write transactions."""
    with tempfile.NamedTemporaryFile(suffix=".strace") as summary:
        out = subprocess.run(
            [
                "strace", "-f", "-c", "-e", "trace=fdatasync,fsync", "-o", summary.name,
                sys.executable, __file__, "--child", str(n),
            ],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        calls = 0
        for line in Path(summary.name).read_text().splitlines():
            fields = line.split()
            if fields and fields[-1] in ("fsync", "fdatasync"):
                calls += int(fields[3])  # % time, seconds, usecs/call, calls, [errors,] name
    return calls, json.loads(out.stdout.strip().splitlines()[-1])["writes"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=200, help="requests to submit")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return child(args.child)

    if shutil.which("strace"):
        base, _ = syncs_under_strace(0)
        calls, writes = syncs_under_strace(args.submits)
        per_write = (calls - base) / writes
        print(
            f"fsync+fdatasync: {calls - base} for {writes} write transactions of "
            f"{args.submits} submits: {per_write:.2f} per write transaction "
            f"({(calls - base) / args.submits:.2f} per submit; start-up's {base} not counted)"
        )
    else:
        print("strace is not installed: fdatasync per write not measured")

    folder = Path(tempfile.mkdtemp(prefix="mesh-writes-"))
    try:
        submits(folder / "warm", 20)  # imports and first-run caches
        times, writes = submits(folder / "run", args.submits)
    finally:
        shutil.rmtree(folder)
    ms = sorted(t * 1000 for t in times)
    p50 = statistics.median(ms)
    p95 = ms[int(len(ms) * 0.95) - 1]
    print(
        f"submit -> granted, app overhead over {args.submits} submits ({writes} write "
        f"transactions): p50 {p50:.2f} ms, p95 {p95:.2f} ms, "
        f"{sum(ms) / writes:.2f} ms per write transaction; "
        f"target p50 <= {TARGET_P50_MS:g} ms (ratio {p50 / TARGET_P50_MS:.2f})"
    )
    return 0 if p50 <= TARGET_P50_MS else 1


if __name__ == "__main__":
    sys.exit(main())
