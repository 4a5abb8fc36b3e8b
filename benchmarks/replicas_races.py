"""Print double decisions and double grants under approval races across two replicas.

Issue 11, section 2: two replicas (two processes, each with its own services built as the
app builds them) on one PostgreSQL database and one moto server. Each race is one PII
request of ada's, waiting for Sales's owners (sam, sara, sol: any one of them, or an
admin). Its approvers, split between the two replicas (one thread each, as the app serves
each browser session in a thread), wait at a ``multiprocessing`` barrier, then decide at
once. The races rotate through four kinds: two owners approve; an owner approves while an
admin denies (each way round); the same owner approves on both replicas (a double click
through two load-balanced tabs). ``--approvers N`` adds more deciders to every race.

Afterwards it counts from the database (the audit log, the approvals table, each request's
status) and from Lake Formation (moto's ``list_permissions``, and every grant call each
replica sent, seen by a botocore hook):
- a double decision is a request with more than one decision audit row (approved or
  denied), more approvals than its quorum, or more than one decider told "done";
- a double grant is a (request, resource) granted by more than one call, or held by more
  than one Lake Formation entry, or a request with more than one grant_succeeded row;
- a mismatch is a granted request that Lake Formation does not hold, or a denied one it does.
Targets: 0 double decisions, 0 double grants, 0 mismatches, every race decided.
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
REASON = "replica race"
# Each kind: the deciders in slot order; slot j runs on replica j % 2.
KINDS = (
    (("approve", "sam"), ("approve", "sara")),
    (("approve", "sam"), ("deny", "alan")),
    (("deny", "alan"), ("approve", "sara")),
    (("approve", "sam"), ("approve", "sam")),
)
EXTRA = (("approve", "sol"), ("deny", "ava"), ("approve", "alan"), ("approve", "sara"))
# --quorum 2: the stewards group (sam, sara, sol) must give two approvals; three decide.
QUORUM_KINDS = (
    (("approve", "sam"), ("approve", "sara"), ("approve", "sol")),
    (("approve", "sam"), ("approve", "sara"), ("deny", "alan")),
    (("deny", "alan"), ("approve", "sol"), ("approve", "sam")),
    (("approve", "sam"), ("approve", "sol"), ("approve", "sam")),
)
QUORUM_EXTRA = (("approve", "sara"), ("deny", "ava"), ("approve", "sol"), ("approve", "sam"))
QUORUM_POLICY = """\
# replicas_races.py --quorum N: PII needs N approvals from the stewards group.
version: 1
levels:
  - name: public
    match:
      pii_flag: [false, no, "0", n, ""]
  - name: pii
    match:
      pii_flag: [true, yes, "1", y]
groups:
  stewards:
    members: [sam, sara, sol]
admins_approve: false
rules:
  public:
    auto_approve: true
  pii:
    steps:
      - approvers: stewards
        quorum: {quorum}
"""


def plan(races: int, approvers: int, *, quorum: int = 1) -> list[list[tuple[str, str]]]:
    """The deciders of each race, by slot."""
    kinds, extra = (KINDS, EXTRA) if quorum == 1 else (QUORUM_KINDS, QUORUM_EXTRA)
    plans = []
    for i in range(races):
        deciders = list(kinds[i % len(kinds)])
        for k in range(approvers - len(deciders)):
            deciders.append(extra[(i + k) % len(extra)])
        plans.append(deciders)
    return plans


# A replica --------------------------------------------------------------------------------------


def replica(
    number: int,
    env: dict[str, str],
    request_ids: list[str],
    plans: list[list[tuple[str, str]]],
    barrier: Any,
    results: Any,
) -> None:
    """Build this replica's services, then decide its slots of every race at the barrier."""
    try:
        services = common.build_replica(env)
        calls = common.GrantCalls(services)
    except Exception:  # noqa: BLE001 - told to the parent, with its traceback
        barrier.abort()
        results.put({"replica": number, "error": traceback.format_exc()})
        return
    slots = [j for j in range(len(plans[0])) if j % REPLICAS == number]
    outcomes: list[dict[str, Any]] = []
    lock = threading.Lock()

    def run_slot(slot: int) -> None:
        for race, request_id in enumerate(request_ids):
            verb, who = plans[race][slot]
            try:
                barrier.wait(timeout=120)
            except threading.BrokenBarrierError:
                return
            started, at = time.perf_counter(), time.time()
            outcome = decide(services, verb, request_id, who)
            outcome.update(
                race=race,
                slot=slot,
                replica=number,
                verb=verb,
                who=who,
                seconds=time.perf_counter() - started,
                at=at,
                ended=time.time(),
            )
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=run_slot, args=(slot,)) for slot in slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put({"replica": number, "outcomes": outcomes, "grants": list(calls.seen.items())})


def decide(services: Any, verb: str, request_id: str, who: str) -> dict[str, Any]:
    from mesh.errors import MeshError

    market = services.marketplace
    try:
        if verb == "approve":
            ended = market.approve(request_id, who, comment=REASON)
        else:
            ended = market.deny(request_id, who, comment=REASON)
    except MeshError as exc:
        return {"ok": False, "refusal": type(exc).__name__, "message": exc.message}
    except Exception:  # noqa: BLE001 - a crash is a finding, reported with its traceback
        return {"ok": False, "crash": traceback.format_exc()}
    return {"ok": True, "status": ended.status.value}


# The run ----------------------------------------------------------------------------------------


def submit_all(services: Any, races: int, first: int) -> list[str]:
    scopes = common.table_scopes(services, owner_account=common.SALES)
    ids = []
    for i in range(races):
        database, table = scopes[i % len(scopes)]
        request = services.marketplace.submit(
            common.REQUESTER,
            database=database,
            table=table,
            account=common.account(first + i),
            reason=REASON,
        )
        if request.status.value != "pending_approval":
            raise RuntimeError(f"{request.id} is {request.status}, expected pending_approval")
        ids.append(request.id)
    return ids


def race(args: argparse.Namespace) -> int:
    with common.mesh(args, "races") as mesh:
        if args.quorum > 1:
            policy = mesh.workdir / "quorum.yaml"
            policy.write_text(QUORUM_POLICY.format(quorum=args.quorum), encoding="utf-8")
            mesh = common.Mesh(
                mesh.db_url, mesh.endpoint, mesh.workdir, mesh.replica_env(MESH_POLICY=str(policy))
            )
        seeder = common.build_replica(mesh.env)
        if seeder.sync.run(actor="benchmark").error is not None:
            raise RuntimeError("the catalog sync failed")
        started = time.perf_counter()
        ids = submit_all(seeder, args.races, common.first_account(9))
        print(f"submitted {len(ids)} PII requests in {time.perf_counter() - started:.1f} s")
        plans = plan(args.races, args.approvers, quorum=args.quorum)
        ctx = common.context()
        barrier = ctx.Barrier(args.approvers)
        results = ctx.Queue()
        processes = [
            ctx.Process(
                daemon=True,
                target=replica,
                args=(n, mesh.replica_env(), ids, plans, barrier, results),
            )
            for n in range(REPLICAS)
        ]
        for process in processes:
            process.start()
        reports = common.collect(results, processes, timeout=600 + 2 * args.races)
        for process in processes:
            process.join(timeout=60)
        errors = [r["error"] for r in reports if "error" in r]
        if errors:
            print("a replica did not start:\n" + "\n".join(errors))
            return 1
        outcomes = [o for r in reports for o in r["outcomes"]]
        grant_calls: Counter[tuple[str, str]] = Counter()
        for report in reports:
            for key, count in report["grants"]:
                grant_calls[tuple(key)] += count  # type: ignore[index]
        return count_and_print(args, mesh, seeder, ids, outcomes, grant_calls)


def count_and_print(
    args: argparse.Namespace,
    mesh: common.Mesh,
    seeder: Any,
    ids: list[str],
    outcomes: list[dict[str, Any]],
    grant_calls: Counter[tuple[str, str]],
) -> int:
    rows = common.sql(
        mesh.db_url,
        "SELECT request_id, action, count(*) FROM audit WHERE request_id = ANY(%s) "
        "GROUP BY request_id, action",
        [ids],
    )
    actions: dict[str, Counter[str]] = {i: Counter() for i in ids}
    for request_id, action, count in rows:
        actions[request_id][action] = count
    approvals = dict(
        common.sql(
            mesh.db_url,
            "SELECT request_id, count(*) FROM approvals WHERE request_id = ANY(%s) "
            "GROUP BY request_id",
            [ids],
        )
    )
    statuses = dict(
        common.sql(mesh.db_url, "SELECT id, status FROM requests WHERE id = ANY(%s)", [ids])
    )
    accounts = dict(
        common.sql(mesh.db_url, "SELECT id, account FROM requests WHERE id = ANY(%s)", [ids])
    )
    # A decider is told the request is decided when the call ends it (granted, denied,
    # failed); under a quorum, an approval that does not complete it leaves it pending.
    told_done = Counter(
        o["race"] for o in outcomes if o["ok"] and o["status"] != "pending_approval"
    )
    crashes = [o for o in outcomes if "crash" in o]
    lf = common.held(seeder)
    plans = {i: planned(seeder, i) for i in ids}

    double_decisions, double_grants, mismatched = [], [], []
    for n, request_id in enumerate(ids):
        approved, denied = actions[request_id]["approved"], actions[request_id]["denied"]
        if (
            approved > args.quorum
            or approvals.get(request_id, 0) > args.quorum
            or denied > 1
            or (denied and approved >= args.quorum)
            or told_done[n] > 1
        ):
            double_decisions.append(request_id)
        mine = {key: c for (who, key), c in lf.items() if who == accounts[request_id]}
        calls = {key: c for (who, key), c in grant_calls.items() if who == accounts[request_id]}
        if (
            any(c > 1 for c in mine.values())
            or any(c > 1 for c in calls.values())
            or actions[request_id]["grant_succeeded"] > 1
        ):
            double_grants.append(request_id)
        status = statuses.get(request_id)
        if status == "granted" and sorted(mine) != sorted(plans[request_id]):
            mismatched.append(request_id)
        if status == "denied" and (mine or approvals.get(request_id, 0) >= args.quorum):
            mismatched.append(request_id)
    ended = Counter(statuses.values())
    decisions = sum(1 for s in statuses.values() if s in ("granted", "denied", "failed"))
    winners = [o["seconds"] for o in outcomes if o["ok"]]
    everyone = [o["seconds"] for o in outcomes]
    starts = [o["at"] for o in outcomes]
    ends = [o["ended"] for o in outcomes]
    ok, chain_rows, problems = common.chain_verifies(seeder)

    common.figure("races", len(ids))
    common.figure("approvers per race", args.approvers)
    common.figure("quorum", args.quorum)
    common.figure("replicas", REPLICAS)
    common.figure("decision calls", len(outcomes))
    common.figure("decisions", decisions)
    common.figure("granted", ended["granted"])
    common.figure("denied", ended["denied"])
    common.figure("failed", ended["failed"])
    others = sum(c for s, c in ended.items() if s not in ("granted", "denied", "failed"))
    common.figure("other statuses", others)
    common.figure(
        "refusals",
        Counter(o.get("refusal", "") for o in outcomes if not o["ok"] and "refusal" in o),
    )
    common.figure("double decisions", len(double_decisions))
    common.figure("grants", sum(grant_calls.values()))
    common.figure("double grants", len(double_grants))
    common.figure("mismatched with lake formation", len(mismatched))
    common.figure("crashes", len(crashes))
    common.figure("audit chain", f"{'verifies' if ok else 'BROKEN'} ({chain_rows} rows)")
    common.figure("time", f"{max(ends) - min(starts):.1f} s" if outcomes else "n/a")
    common.figure("decision latency p50/p95", common.millis(winners))
    common.figure("start spread within a race p50/max", spread(outcomes))
    common.figure("all calls latency p50/p95", common.millis(everyone))
    common.figure("load", common.load_note())
    for request_id in (double_decisions + double_grants + mismatched)[:10]:
        print(f"  {request_id}: {statuses.get(request_id)} {dict(actions[request_id])}")
    for crash in crashes[:3]:
        print(crash["crash"])
    if problems:
        print("  chain: " + "; ".join(problems))
    broken = (
        double_decisions
        or double_grants
        or mismatched
        or crashes
        or not ok
        or decisions != len(ids)
        or ended["failed"]
        or len(outcomes) != len(ids) * args.approvers
    )
    return 1 if broken else 0


def spread(outcomes: list[dict[str, Any]]) -> str:
    """How far apart a race's deciders started after the barrier (wall clock, both
    processes): the races are only races if this is small beside a decision's latency."""
    starts: dict[int, list[float]] = {}
    for o in outcomes:
        starts.setdefault(o["race"], []).append(o["at"])
    gaps = [max(s) - min(s) for s in starts.values()]
    if not gaps:
        return "n/a"
    return f"{common.percentile(gaps, 50) * 1000:.1f}/{max(gaps) * 1000:.1f} ms"


def planned(services: Any, request_id: str) -> list[str]:
    """The resource keys (as ``common.held`` names them) a request's grants cover."""
    from mesh.policy import resource_key

    request = services.marketplace.store.get(request_id)
    return [resource_key(spec.resource) for spec in services.marketplace.grant_plan(request)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--races", type=int, default=500, help="races to run (default 500)")
    parser.add_argument(
        "--approvers", type=int, default=2, help="deciders in each race, split over the replicas"
    )
    parser.add_argument(
        "--quorum",
        type=int,
        default=1,
        choices=(1, 2),
        help="approvals a request needs: 1, the built-in policy (an owner of Sales, or an "
        "admin); 2, two of the stewards group sam, sara and sol (at least 3 approvers)",
    )
    common.add_pg_argument(parser)
    args = parser.parse_args(argv)
    if args.quorum > 1:
        args.approvers = max(args.approvers, args.quorum + 1)
    if args.approvers < 2 or args.races < 1:
        parser.error("a race needs at least 2 approvers, and there must be a race")
    return race(args)


if __name__ == "__main__":
    sys.exit(main())
