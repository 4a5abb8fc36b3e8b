"""Print the Audit page's run time and the CSV export's time and memory at 1,000,000 rows.

Builds a store of plausible audit rows over three years (bulk inserted with sqlite3 after
the migrations, so the indexes are the real ones), then:

- runs pages/audit.py server-side with AppTest, signed in as ada, 20 times for each filter
  (a request id, an actor, a month, and none), and prints p50 and p95;
- exports every row as the page does (streamed from SQL into the CSV download's bytes) and
  as `mesh audit --format csv` does (streamed to a file), each in a fresh process, and
  prints the time and the process's peak RSS;
- verifies the whole hash chain as `mesh audit verify` does, in a fresh process, and prints
  the time and peak RSS;
- times one append (its own write transaction) with the chain and as it was before the
  chain (a plain insert), at the full size of the log.

``--chain-only`` skips the page runs and the CSV exports.

Only the Audit page runs: the frame (sign-in, navigation) is replaced by a context that
gives the page the real Marketplace over this store and ada.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh import auditchain
from mesh.models import Role, User
from mesh.store import AuditFilters, NewEvent, Store

ROOT = Path(__file__).resolve().parent.parent

ROWS = 1_000_000
KEY = "audit-scale-benchmark-key-Vb7Qm2Xr9Lp4Kt8Wz3Nc6"
APPENDS = 200
RUNS = 20
TARGET_RUN_P95_MS = 100.0
TARGET_CSV_SECONDS = 15.0
TARGET_CSV_MB = 300.0
START = datetime(2023, 6, 1, tzinfo=UTC)
YEARS = 3
ADA = User(username="ada", roles=frozenset({Role.ADMIN}))

CONSUMERS = [f"user{n:03d}" for n in range(300)]
OWNERS = ["sam", "mia", "hank", "fiona", *(f"owner{n:02d}" for n in range(26))]
ADMINS = ["ada", "root", "ops", "audit-bot", "sec"]
# What follows a submission: granted at once, or notified, decided and (if approved) granted.
STORIES = [
    (("policy", "grant_attempted"), ("policy", "grant_succeeded")),
    (("policy", "grant_attempted"), ("policy", "grant_succeeded")),
    (
        ("policy", "notification_queued"),
        ("policy", "notification_sent"),
        ("owner", "request_approved"),
        ("owner", "grant_attempted"),
        ("owner", "grant_succeeded"),
    ),
    (("policy", "notification_queued"), ("policy", "notification_failed"), ("owner", "denied")),
    (("policy", "grant_attempted"), ("policy", "grant_failed"), ("admin", "retried")),
    (
        ("policy", "grant_attempted"),
        ("policy", "grant_succeeded"),
        ("consumer", "access_expired"),
    ),
]


class OneUser:
    def get(self, username: str | None) -> User | None:
        return ADA if username == "ada" else None

    def everyone(self) -> list[User]:
        return [ADA]


def build_store(path: Path, rows: int, *, seed: int = 9) -> dict[str, Any]:
    """Migrate a store at ``path`` and fill its audit log with ``rows`` plausible rows."""
    Store(path, audit_key=KEY).migrate()
    key, chain = KEY.encode(), auditchain.GENESIS
    rng = random.Random(seed)
    span = YEARS * 365 * 86400
    step = span / rows
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN")
    batch: list[tuple[Any, ...]] = []
    written, request = 0, 0
    samples: dict[str, Any] = {}
    while written < rows:
        request += 1
        rid = f"r-{request:08x}"
        consumer = rng.choice(CONSUMERS)
        owner = rng.choice(OWNERS)
        scope = f"db_{rng.randrange(1000):03d}.table_{rng.randrange(100):02d}"
        story = (("consumer", "request_submitted"), ("policy", "policy_evaluated"))
        story += rng.choice(STORIES)
        for who, action in story:
            if written >= rows:
                break
            actor = {
                "consumer": consumer,
                "owner": owner,
                "admin": rng.choice(ADMINS),
                "policy": "policy",
            }[who]
            at = START + timedelta(seconds=written * step + rng.random() * step)
            details = json.dumps(
                {"account": f"{rng.randrange(10**12):012d}", "reason": "quarterly report"},
                sort_keys=True,
            )
            stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            row = (written + 1, stamp, actor, action, rid, scope, details)
            chain = auditchain.row_mac(key, chain, row)
            batch.append((*row, chain))
            written += 1
            if written == rows // 2:
                samples = {"request_id": rid, "actor": consumer}
        if len(batch) >= 50_000:
            connection.executemany(
                "INSERT INTO audit (id, at, actor, action, request_id, scope, details, chain) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                batch,
            )
            batch.clear()
    connection.executemany(
        "INSERT INTO audit (id, at, actor, action, request_id, scope, details, chain) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        batch,
    )
    connection.execute("COMMIT")
    connection.close()
    return samples


def page_runs(path: Path, samples: dict[str, Any]) -> dict[str, list[float]]:
    """Time RUNS server-side runs of pages/audit.py for each filter, in milliseconds."""
    from streamlit.testing.v1 import AppTest

    import mesh.ui
    from mesh.workflow import Marketplace

    store = Store(path, audit_key=KEY)
    market = Marketplace(store=store, catalog=None, grants=None, users=OneUser())  # type: ignore[arg-type]
    services = SimpleNamespace(marketplace=market, users=OneUser())
    mesh.ui.services = lambda: services  # type: ignore[assignment]  # the frame's part, done

    month = (date(2025, 3, 1), date(2025, 3, 31))
    filters = {
        "none (the page as it opens)": lambda at: None,
        f"request id {samples['request_id']}": lambda at: at.text_input(key="audit_request").input(
            samples["request_id"]
        ),
        f"actor {samples['actor']}": lambda at: at.multiselect(key="audit_actor").select(
            samples["actor"]
        ),
        "actor policy (six rows in ten)": lambda at: at.multiselect(key="audit_actor").select(
            "policy"
        ),
        f"dates {month[0]} to {month[1]}": lambda at: at.date_input(key="audit_dates").set_value(
            month
        ),
    }
    timings: dict[str, list[float]] = {}
    for name, set_filter in filters.items():
        at = AppTest.from_file(str(ROOT / "pages" / "audit.py"), default_timeout=60)
        at.session_state["username"] = "ada"
        at.run()
        set_filter(at)
        at.run()
        if at.exception:
            raise SystemExit(f"the page failed: {at.exception}")
        runs = []
        for _ in range(RUNS):
            start = time.perf_counter()
            at.run()
            runs.append((time.perf_counter() - start) * 1000)
        caption = next(c.value for c in at.caption if "matching" in c.value)
        timings[f"{name}: {caption}"] = runs
    return timings


def store_runs(path: Path, samples: dict[str, Any]) -> dict[str, list[float]]:
    """Time what the page asks the store on each run (one page, its count, the choices)."""
    store = Store(path, audit_key=KEY)
    filters = {
        "none": AuditFilters(),
        "request id": AuditFilters(request_id=samples["request_id"]),
        "actor": AuditFilters(actors=(samples["actor"],)),
        "actor policy": AuditFilters(actors=("policy",)),
        "a month": AuditFilters(
            since="2025-03-01T00:00:00.000Z", before="2025-04-01T00:00:00.000Z"
        ),
    }
    timings = {}
    for name, chosen in filters.items():
        runs = []
        for _ in range(RUNS):
            start = time.perf_counter()
            store.audit_page(chosen, limit=100)
            store.audit_actors(), store.audit_actions()
            runs.append((time.perf_counter() - start) * 1000)
        timings[name] = runs
    return timings


def export(path: str, how: str, out: str) -> None:
    """In a fresh process: export every row as the page or the CLI does, or verify the
    chain as `mesh audit verify` does; print figures."""
    from mesh import auditlog

    store = Store(path, audit_key=KEY)
    before = _high_water_mb()
    start = time.perf_counter()
    if how == "verify":
        found = auditlog.verify(store)
        if not found.ok:
            raise SystemExit(f"the chain does not verify: {found.problems}")
        size = found.rows
    elif how == "page":
        data = auditlog.csv_bytes(store.iter_audit(AuditFilters()))
        size = len(data)
    else:
        with open(out, "w", encoding="utf-8", newline="") as file:
            auditlog.write_csv(store.iter_audit(AuditFilters()), file)
        size = Path(out).stat().st_size
    seconds = time.perf_counter() - start
    peak = _high_water_mb()
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "start_mb": before, "bytes": size}))


def _high_water_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_export(path: Path, how: str) -> dict[str, float]:
    out = path.with_suffix(".csv")
    result = subprocess.run(
        [sys.executable, __file__, "--export", how, str(path), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    out.unlink(missing_ok=True)
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def append_costs(path: Path) -> dict[str, list[float]]:
    """Milliseconds per append of one row in its own write transaction, with the chain
    (Store.append) and as before it (a plain insert of the same row, no chain read)."""
    store = Store(path, audit_key=KEY)

    def row(n: int) -> NewEvent:
        return NewEvent(
            at="2026-06-01T00:00:00.000Z",
            actor="bench",
            action="request_submitted",
            request_id=f"r-b{n:07d}",
            scope="db_001.table_01",
            details={"account": "444455556666", "reason": "quarterly report"},
        )

    def plain(n: int) -> None:
        with store._write() as db:
            db["audit"].insert_all([row(n).row()])  # type: ignore[union-attr]

    timings: dict[str, list[float]] = {"chained": [], "plain (before the chain)": []}
    for n in range(APPENDS):  # interleaved, so both see the same disk and cache
        for name, do in (
            ("chained", lambda n=n: store.append(row(n))),
            ("plain (before the chain)", lambda n=n: plain(n)),
        ):
            start = time.perf_counter()
            do()
            timings[name].append((time.perf_counter() - start) * 1000)
    return timings


def percentiles(runs: list[float]) -> tuple[float, float]:
    ms = sorted(runs)
    return statistics.median(ms), ms[int(len(ms) * 0.95) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS, help="audit rows to build")
    parser.add_argument("--export", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument(
        "--chain-only", action="store_true", help="only the chain: verify and append figures"
    )
    args = parser.parse_args()
    if args.export:
        export(args.export[1], args.export[0], args.export[2])
        return 0

    folder = Path(tempfile.mkdtemp(prefix="mesh-audit-"))
    ok = True
    try:
        path = folder / "mesh.db"
        start = time.perf_counter()
        samples = build_store(path, args.rows)
        size = path.stat().st_size / 2**20
        print(
            f"built {args.rows:,} audit rows in {time.perf_counter() - start:.1f} s ({size:.0f} MB)"
        )

        f = measure_export(path, "verify")
        print(
            f"audit verify of all {f['bytes']:,.0f} rows (streamed, fresh process): "
            f"{f['seconds']:.1f} s, {f['bytes'] / f['seconds'] / 1000:,.0f}k rows/s; peak RSS "
            f"{f['peak_mb']:.0f} MB, {f['start_mb']:.0f} MB before it began"
        )
        if not args.chain_only:
            ok &= _page_and_csv(path, samples, args.rows)
        print(f"One append in its own write transaction, {APPENDS} each, at {args.rows:,} rows:")
        for name, runs in append_costs(path).items():
            p50, p95 = percentiles(runs)
            print(f"  {name}: p50 {p50:.2f} ms, p95 {p95:.2f} ms")
    finally:
        shutil.rmtree(folder)
    return 0 if ok else 1


def _page_and_csv(path: Path, samples: dict[str, Any], rows: int) -> bool:
    ok = True
    print(f"The store's part of a page run (page, count, actors, actions), {RUNS} runs each:")
    for name, runs in store_runs(path, samples).items():
        p50, p95 = percentiles(runs)
        print(f"  {name}: p50 {p50:.2f} ms, p95 {p95:.2f} ms")
    print(f"Audit page, server-side run (AppTest), {RUNS} runs each:")
    for name, runs in page_runs(path, samples).items():
        p50, p95 = percentiles(runs)
        ok &= p95 <= TARGET_RUN_P95_MS
        print(
            f"  {name}\n    p50 {p50:.1f} ms, p95 {p95:.1f} ms "
            f"(target p95 <= {TARGET_RUN_P95_MS:g} ms: ratio {p95 / TARGET_RUN_P95_MS:.2f})"
        )

    for how, what in (
        ("page", "the page's CSV download (bytes in memory)"),
        ("cli", "mesh audit --format csv (streamed to a file)"),
    ):
        f = measure_export(path, how)
        ok &= f["seconds"] <= TARGET_CSV_SECONDS and f["peak_mb"] <= TARGET_CSV_MB
        print(
            f"CSV of all {rows:,} rows, {what}: {f['bytes'] / 2**20:.0f} MB in "
            f"{f['seconds']:.1f} s (target <= {TARGET_CSV_SECONDS:g} s: ratio "
            f"{f['seconds'] / TARGET_CSV_SECONDS:.2f}); peak RSS {f['peak_mb']:.0f} MB, "
            f"{f['start_mb']:.0f} MB before it began (target <= {TARGET_CSV_MB:g} MB: "
            f"ratio {f['peak_mb'] / TARGET_CSV_MB:.2f})"
        )
    return ok


if __name__ == "__main__":
    sys.exit(main())
