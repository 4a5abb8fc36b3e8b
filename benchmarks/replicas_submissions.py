"""Print lost submissions when 8 processes across two replicas submit at once.

Issue 11, section 2: 1,000 submissions (``--submissions``) from 8 processes
(``--processes``), 4 for each of two replicas, on one PostgreSQL database and one moto
server. Each process builds its own services as the app builds them, waits at a
``multiprocessing`` barrier with the others, then submits its share as fast as it can.

- distinct: every submission is its own (table, account): ada, an admin, asks for each
  demo table in turn, each time for a new account. PII tables wait for their owner; the
  others are granted at once through Lake Formation, as a submission is. Lost = submissions
  - requests stored with a ``request_submitted`` audit row; a submission refused with an
  error counts as lost too.
- same scope: in each round every process submits the same (table, account) at the same
  moment (a barrier per round); exactly one request may be stored per round, and every
  other process must be told it is a duplicate.

Prints throughput (submissions a second, from the first submission to the last), p50/p95
latency of a submission, and the counts. Targets: 0 lost; exactly one request per scope.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import replicas_common as common

REPLICAS = 2
REASON = "replica submissions"


Job = tuple[str, str, str]  # database, table, account
Phase = tuple[list[Job], bool]  # the jobs, and whether each waits at the barrier first


def worker(
    number: int, env: dict[str, str], phases: list[Phase], barrier: Any, results: Any
) -> None:
    """Build services, then run each phase's jobs once every process is ready for it."""
    try:
        services = common.build_replica(env)
    except Exception:  # noqa: BLE001 - told to the parent, with its traceback
        barrier.abort()
        results.put({"worker": number, "error": traceback.format_exc()})
        return
    done: list[list[dict[str, Any]]] = []
    for jobs, per_round in phases:
        try:
            barrier.wait(timeout=300)
        except threading.BrokenBarrierError:
            results.put({"worker": number, "error": "the barrier broke"})
            return
        done.append(submit_each(services, jobs, barrier if per_round else None))
    results.put({"worker": number, "replica": number % REPLICAS, "phases": done})


def submit_each(services: Any, jobs: list[Job], barrier: Any) -> list[dict[str, Any]]:
    """Submit each job (after the barrier, when there is one); one outcome each."""
    from mesh.errors import MeshError

    outcomes: list[dict[str, Any]] = []
    for n, (database, table, account) in enumerate(jobs):
        if barrier is not None and n:
            try:
                barrier.wait(timeout=120)
            except threading.BrokenBarrierError:
                break
        started, at = time.perf_counter(), time.time()
        outcome: dict[str, Any] = {"scope": (database, table, account)}
        try:
            made = services.marketplace.submit(
                common.REQUESTER, database=database, table=table, account=account, reason=REASON
            )
            outcome.update(ok=True, id=made.id, status=made.status.value)
        except MeshError as exc:
            outcome.update(ok=False, refusal=type(exc).__name__, message=exc.message)
        except Exception:  # noqa: BLE001 - a crash is a finding, reported with its traceback
            outcome.update(ok=False, crash=traceback.format_exc())
        outcome.update(seconds=time.perf_counter() - started, at=at, ended=time.time())
        outcomes.append(outcome)
    return outcomes


def run_workers(mesh: common.Mesh, phases: list[list[Phase]]) -> list[list[dict[str, Any]]] | str:
    """Run one process for each worker's phases; the outcomes of each phase, all workers'."""
    ctx = common.context()
    barrier = ctx.Barrier(len(phases))
    results = ctx.Queue()
    processes = [
        ctx.Process(
            daemon=True, target=worker, args=(n, mesh.replica_env(), mine, barrier, results)
        )
        for n, mine in enumerate(phases)
    ]
    for process in processes:
        process.start()
    reports = common.collect(results, processes, timeout=1800)
    for process in processes:
        process.join(timeout=60)
    errors = [r["error"] for r in reports if "error" in r]
    if errors:
        return "a process failed:\n" + "\n".join(errors)
    return [[o for r in reports for o in r["phases"][k]] for k in range(len(phases[0]))]


def timing(outcomes: list[dict[str, Any]]) -> None:
    took = max(o["ended"] for o in outcomes) - min(o["at"] for o in outcomes)
    common.figure("time", f"{took:.1f} s")
    common.figure("throughput", f"{len(outcomes) / took:.1f} submissions/s")
    common.figure("submit latency p50/p95", common.millis([o["seconds"] for o in outcomes]))


def distinct_jobs(args: argparse.Namespace, seeder: Any) -> list[Job]:
    """Every submission its own (table, account)."""
    scopes = common.table_scopes(seeder)
    return [
        (*scopes[i % len(scopes)], common.account(args.first_account + i))
        for i in range(args.submissions)
    ]


def same_jobs(args: argparse.Namespace, seeder: Any) -> list[Job]:
    """One (table, account) a round, which every process submits."""
    scopes = common.table_scopes(seeder)
    return [
        (*scopes[i % len(scopes)], common.account(args.first_account + 500_000 + i))
        for i in range(args.rounds)
    ]


def distinct(
    args: argparse.Namespace, mesh: common.Mesh, jobs: list[Job], got: list[dict[str, Any]]
) -> bool:
    accounts = [account for _, _, account in jobs]
    stored = common.sql(
        mesh.db_url,
        "SELECT id, status FROM requests WHERE account = ANY(%s) AND reason = %s",
        [accounts, REASON],
    )
    submitted = common.sql(
        mesh.db_url,
        "SELECT count(DISTINCT a.request_id) FROM audit a JOIN requests r ON r.id = a.request_id "
        "WHERE a.action = 'request_submitted' AND r.account = ANY(%s)",
        [accounts],
    )[0][0]
    told = {o["id"] for o in got if o["ok"]}
    stored_ids = {i for i, _ in stored}
    refused = [o for o in got if not o["ok"]]
    lost = args.submissions - len(stored_ids & told)
    print("distinct scopes")
    common.figure("submissions", len(got))
    common.figure("processes", f"{args.processes} ({args.processes // REPLICAS} a replica)")
    common.figure("stored", len(stored_ids))
    common.figure("submitted audit rows", submitted)
    common.figure("refused", len(refused))
    common.figure("told stored but missing", len(told - stored_ids))
    common.figure("lost", lost)
    common.figure("statuses", dict(Counter(s for _, s in stored)))
    timing(got)
    for o in refused[:5]:
        print("  " + (o.get("message") or o.get("crash", "")))
    return lost == 0 and submitted == len(stored_ids) == args.submissions and not refused


def same_scope(
    args: argparse.Namespace, mesh: common.Mesh, rounds: list[Job], got: list[dict[str, Any]]
) -> bool:
    accounts = [account for _, _, account in rounds]
    per_scope = Counter(
        (database, table, account)
        for database, table, account in common.sql(
            mesh.db_url,
            "SELECT database, table_name, account FROM requests WHERE account = ANY(%s)",
            [accounts],
        )
    )
    doubled = [scope for scope in rounds if per_scope[scope] > 1]
    missing = [scope for scope in rounds if per_scope[scope] == 0]
    accepted = Counter(o["scope"] for o in got if o["ok"])
    duplicates_told = sum(
        1 for o in got if not o["ok"] and "identical request" in o.get("message", "")
    )
    other = [o for o in got if not o["ok"] and "identical request" not in o.get("message", "")]
    print("same scope")
    common.figure("rounds", len(rounds))
    common.figure("submissions", len(got))
    common.figure("requests stored", sum(per_scope.values()))
    common.figure("scopes with more than one request", len(doubled))
    common.figure("scopes with none", len(missing))
    common.figure("accepted more than once", sum(1 for c in accepted.values() if c > 1))
    common.figure("told duplicate", duplicates_told)
    common.figure("other refusals", len(other))
    timing(got)
    for o in other[:5]:
        print("  " + (o.get("message") or o.get("crash", "")))
    return (
        not doubled
        and not missing
        and all(c == 1 for c in accepted.values())
        and len(accepted) == len(rounds)
        and duplicates_told == len(rounds) * (args.processes - 1)
        and not other
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=1000, help="default 1000")
    parser.add_argument(
        "--processes", type=int, default=8, help="submitting processes, half a replica each"
    )
    parser.add_argument("--rounds", type=int, default=100, help="same-scope rounds (default 100)")
    parser.add_argument(
        "--part", choices=("both", "distinct", "same"), default="both", help="default both"
    )
    common.add_pg_argument(parser)
    args = parser.parse_args(argv)
    args.first_account = common.first_account(7)
    if not (0 < args.submissions <= 500_000 and 0 <= args.rounds <= 500_000):
        parser.error("--submissions must be 1 to 500,000 and --rounds at most 500,000")
    if args.processes < 2 or args.processes % REPLICAS:
        parser.error("--processes must be even and at least 2: half of them on each replica")
    with common.mesh(args, "submissions") as mesh:
        seeder = common.build_replica(mesh.env)
        if seeder.sync.run(actor="benchmark").error is not None:
            raise RuntimeError("the catalog sync failed")
        jobs = distinct_jobs(args, seeder) if args.part in ("both", "distinct") else []
        rounds = same_jobs(args, seeder) if args.part in ("both", "same") else []
        phases = [
            [(jobs[p :: args.processes], False), (list(rounds), True)]
            for p in range(args.processes)
        ]
        got = run_workers(mesh, phases)
        if isinstance(got, str):
            print(got)
            return 1
        good = True
        if jobs:
            good = distinct(args, mesh, jobs, got[0]) and good
        if rounds:
            good = same_scope(args, mesh, rounds, got[1]) and good
        ok, rows, problems = common.chain_verifies(seeder)
        common.figure("audit chain", f"{'verifies' if ok else 'BROKEN'} ({rows} rows)")
        common.figure("load", common.load_note())
        if problems:
            print("  chain: " + "; ".join(problems))
        return 0 if good and ok else 1


if __name__ == "__main__":
    sys.exit(main())
