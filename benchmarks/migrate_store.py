"""Time `mesh migrate-store` from a SQLite store to PostgreSQL at a size a team may have.

Makes a SQLite store with N requests (default 10,000) and M audit rows (default 100,000,
chained by the store's own append, so the copy must keep a real chain), then copies it into a
fresh database on the server MESH_TEST_PG_URL names (or one `scripts/pg` starts here), runs
the copy a second time, and verifies the chain on PostgreSQL with the same key. Prints:
building, first copy, second copy (nothing to copy), verify.

    .venv/bin/python benchmarks/migrate_store.py [--requests N] [--audit M]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mesh import auditlog  # noqa: E402
from mesh.migrate_store import migrate_store  # noqa: E402
from mesh.store import NewEvent, PgStore, Store  # noqa: E402
from tests import pgsupport  # noqa: E402

KEY = "bench-key-" + "Zq8" * 12


def build(path: Path, *, requests: int, audit: int) -> None:
    """A migrated store with ``requests`` requests and ``audit`` chained audit rows."""
    store = Store(path, audit_key=KEY)
    store.migrate(create=True)
    with store._write() as db:
        db.conn.executemany(
            "INSERT INTO requests (id, status, database, table_name, account, requester, "
            "reason, created_at, needs_approval, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (f"r-{i:08x}", "granted", "sales_orders", f"t{i % 50}", "444455556666",
                 f"user{i % 40}", "a report", f"2026-01-01T00:{i // 600 % 60:02d}:00+00:00",
                 0, 1)
                for i in range(requests)
            ),
        )  # fmt: skip
    batch = 5_000
    for start in range(0, audit, batch):
        events = [
            NewEvent(
                at="2026-01-01T00:00:00+00:00",
                actor=f"user{i % 40}",
                action="submitted",
                request_id=f"r-{i % max(requests, 1):08x}",
                scope="sales_orders.orders",
                details={"n": i},
            )
            for i in range(start, min(start + batch, audit))
        ]
        with store._write() as db:
            store._append(db, events)
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--audit", type=int, default=100_000)
    args = parser.parse_args()
    server, started_dir = os.environ.get(pgsupport.SERVER_URL_VARIABLE), None
    if not server:
        started_dir = tempfile.mkdtemp(prefix="mesh-pg-")
        os.rmdir(started_dir)
        server = subprocess.run(
            [str(ROOT / "scripts" / "pg"), "start", started_dir],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
    url = pgsupport.fresh_database(server, prefix="bench")
    try:
        with tempfile.TemporaryDirectory() as folder:
            source = Path(folder) / "mesh.db"
            t0 = time.perf_counter()
            build(source, requests=args.requests, audit=args.audit)
            size = source.stat().st_size / 1e6
            took = time.perf_counter() - t0
            print(f"built {args.requests} requests, {args.audit} audit rows in {took:.1f} s")
            print(f"  ({size:.0f} MB of SQLite)")
            first = migrate_store(source, url)
            print(f"first copy:  {first.seconds:.1f} s; mismatched: {len(first.mismatched)}")
            for count in first.counts:
                print(f"  {count.table:<18} {count.source:>8} -> {count.target:>8}")
            again = migrate_store(source, url)
            copied = sum(c.copied for c in again.counts)
            print(f"second copy: {again.seconds:.1f} s; rows copied: {copied}")
            t0 = time.perf_counter()
            store = PgStore(url, audit_key=KEY)
            found = auditlog.verify(store)
            store.close()
            print(f"verify on PostgreSQL: {'ok' if found.ok else found.problems[0]}, "
                  f"{found.rows} rows in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    finally:
        pgsupport.drop_database(url)
        pgsupport.close_admin_connections()
        if started_dir:
            subprocess.run([str(ROOT / "scripts" / "pg"), "stop", started_dir], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
