"""Print how a replica killed mid-grant is recovered by the other replica's tick.

Issue 11, section 2: replica A (a process with its own services, built as the app builds
them) approves a PII request as sam; A's Lake Formation grant is slow (a botocore hook in
A's process only sleeps ``--hang`` seconds), and A gets SIGKILL while the request is
``granting``: half the cycles before the grant call is sent (Lake Formation holds nothing),
half after Lake Formation applied it (the grant is made, not recorded). Replica B runs its
``tick`` loop (``MESH_STALE_GRANTING=1``), let loose only after the kill so that it never
takes over a grant that is still alive, and must take the request over: it ends
``granted``, Lake Formation holds each of its grants exactly once, the audit log has one
``taken_over`` row, B's tick reported the takeover, and the whole audit chain verifies.

Repeats ``--kills`` times (20 by default), each for its own account, and prints
recovered/total and the time from the kill to ``granted`` (p50 and max; it includes the
stale time of 1 s and B's tick interval, ``--tick-every``).
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import replicas_common as common

STALE = "1"
REASON = "replica kill"
GRANT_CALLS = ("GrantPermissions", "BatchGrantPermissions")


def replica_a(env: dict[str, str], request_id: str, when: str, hang: float, in_grant: Any) -> None:
    """Approve ``request_id`` as sam, hanging ``hang`` s before or after the grant call."""
    services = common.build_replica(env)
    events = services.lakeformation._lf.meta.events

    def slow(**_: Any) -> None:
        in_grant.set()
        time.sleep(hang)

    for operation in GRANT_CALLS:
        events.register(f"{when}-call.lakeformation.{operation}", slow)
    services.marketplace.approve(request_id, "sam", comment=REASON)


def replica_b(env: dict[str, str], loose: Any, stop: Any, every: float, reports: Any) -> None:
    """Tick every ``every`` s while ``loose`` is set; report what each tick took over."""
    try:
        services = common.build_replica(env)
    except Exception:  # noqa: BLE001 - told to the parent, with its traceback
        reports.put({"error": traceback.format_exc()})
        return
    services.lifecycle.tick()  # its first catalog sync, as a loop that has been running did
    reports.put({"ready": True})
    while not stop.is_set():
        if not loose.wait(timeout=0.2):
            continue
        try:
            report = services.lifecycle.tick()
        except Exception:  # noqa: BLE001 - a crash is a finding, reported with its traceback
            reports.put({"error": traceback.format_exc()})
            continue
        if report.taken_over or report.errors:
            reports.put(
                {"taken_over": list(report.taken_over), "errors": [str(e) for e in report.errors]}
            )
        time.sleep(every)


def status(mesh: common.Mesh, request_id: str) -> str | None:
    rows = common.sql(mesh.db_url, "SELECT status FROM requests WHERE id = %s", [request_id])
    return rows[0][0] if rows else None


def cycle(
    args: argparse.Namespace,
    mesh: common.Mesh,
    seeder: Any,
    n: int,
    ctx: Any,
    loose: Any,
) -> dict[str, Any]:
    """One kill: submit, approve on A, kill A mid-grant, let B recover it."""
    scopes = common.table_scopes(seeder, owner_account=common.SALES)
    database, table = scopes[n % len(scopes)]
    request = seeder.marketplace.submit(
        common.REQUESTER,
        database=database,
        table=table,
        account=common.account(args.first_account + n),
        reason=REASON,
    )
    when = ("before", "after")[n % 2]
    in_grant = ctx.Event()
    a = ctx.Process(
        target=replica_a, args=(mesh.replica_env(), request.id, when, args.hang, in_grant)
    )
    a.start()
    result: dict[str, Any] = {"id": request.id, "when": when, "account": request.account}
    if not in_grant.wait(timeout=120):
        a.kill()
        a.join()
        result["problem"] = f"replica A never reached the grant (exit {a.exitcode})"
        return result
    result["status_at_kill"] = status(mesh, request.id)
    assert a.pid is not None
    os.kill(a.pid, signal.SIGKILL)
    killed = time.monotonic()
    a.join()
    result["killed"] = a.exitcode == -signal.SIGKILL
    loose.set()
    recovered = common.wait_for(
        lambda: status(mesh, request.id) not in ("granting", "pending_approval"),
        timeout=args.timeout,
    )
    result["seconds"] = time.monotonic() - killed
    loose.clear()
    result["status"] = status(mesh, request.id)
    result["recovered"] = recovered and result["status"] == "granted"
    return result


def check(mesh: common.Mesh, seeder: Any, results: list[dict[str, Any]], by_b: set[str]) -> None:
    """Add each cycle's problems: Lake Formation's entries, the audit rows, B's reports."""
    from mesh.policy import resource_key

    lf = common.held(seeder)
    for result in results:
        if "problem" in result:
            continue
        problems = []
        request = seeder.marketplace.store.get(result["id"])
        plan = sorted(resource_key(s.resource) for s in seeder.marketplace.grant_plan(request))
        mine = Counter({key: c for (who, key), c in lf.items() if who == result["account"]})
        if sorted(mine) != plan or any(c != 1 for c in mine.values()):
            problems.append(f"Lake Formation holds {dict(mine)}, planned {plan}")
        actions = Counter(
            action
            for (action,) in common.sql(
                mesh.db_url, "SELECT action FROM audit WHERE request_id = %s", [result["id"]]
            )
        )
        if actions["taken_over"] != 1:
            problems.append(f"{actions['taken_over']} taken_over rows")
        if result["id"] not in by_b:
            problems.append("replica B's tick did not report taking it over")
        if result.get("status_at_kill") != "granting":
            problems.append(f"it was {result.get('status_at_kill')} at the kill")
        if not result.get("killed"):
            problems.append("replica A was not killed by SIGKILL")
        if not result["recovered"]:
            problems.append(f"it ended {result['status']}")
        result["found_held"] = actions["grant_found"] > 0
        if problems:
            result["problem"] = "; ".join(problems)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="cycles (default 20)")
    parser.add_argument(
        "--hang", type=float, default=30.0, help="seconds A's grant call hangs (default 30)"
    )
    parser.add_argument(
        "--tick-every", type=float, default=0.2, help="seconds between B's ticks (default 0.2)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds B may take to recover one"
    )
    common.add_pg_argument(parser)
    args = parser.parse_args(argv)
    args.first_account = common.first_account(5)
    with common.mesh(args, "kill") as mesh:
        env = mesh.replica_env(MESH_STALE_GRANTING=STALE)
        mesh = common.Mesh(mesh.db_url, mesh.endpoint, mesh.workdir, env)
        seeder = common.build_replica(env)
        if seeder.sync.run(actor="benchmark").error is not None:
            raise RuntimeError("the catalog sync failed")
        ctx = common.context()
        loose, stop, reports = ctx.Event(), ctx.Event(), ctx.Queue()
        b = ctx.Process(target=replica_b, args=(env, loose, stop, args.tick_every, reports))
        b.start()
        first = common.collect(reports, [b], timeout=300)[0]
        if "error" in first:
            print("replica B did not start:\n" + first["error"])
            return 1
        started = time.perf_counter()
        results = [cycle(args, mesh, seeder, n, ctx, loose) for n in range(args.kills)]
        took = time.perf_counter() - started
        stop.set()
        b.join(timeout=60)
        by_b: set[str] = set()
        b_errors: list[str] = []
        while True:
            try:
                report = reports.get(timeout=1)
            except queue.Empty:
                break
            by_b.update(report.get("taken_over", []))
            b_errors.extend(report.get("errors", []))
            if "error" in report:
                b_errors.append(report["error"])
        check(mesh, seeder, results, by_b)
        ok, rows, chain_problems = common.chain_verifies(seeder)
        recovered = [r for r in results if "problem" not in r]
        times = [r["seconds"] for r in recovered]
        common.figure("kills", len(results))
        common.figure("killed before the grant call", sum(r["when"] == "before" for r in results))
        common.figure(
            "killed after lake formation applied it", sum(r["when"] == "after" for r in results)
        )
        common.figure("recovered", f"{len(recovered)}/{len(results)}")
        common.figure("found held by the takeover", sum(bool(r.get("found_held")) for r in results))
        common.figure("tick errors", len(b_errors))
        common.figure("audit chain", f"{'verifies' if ok else 'BROKEN'} ({rows} rows)")
        if times:
            common.figure(
                "time to recover p50/max",
                f"{common.percentile(times, 50):.2f}/{max(times):.2f} s",
            )
        common.figure("time", f"{took:.1f} s")
        common.figure("load", common.load_note())
        for r in results:
            if "problem" in r:
                print(f"  {r['id']} ({r['when']}): {r['problem']}")
        for error in b_errors[:3]:
            print("  tick: " + error)
        if chain_problems:
            print("  chain: " + "; ".join(chain_problems))
        return 0 if ok and len(recovered) == len(results) and not b_errors else 1


if __name__ == "__main__":
    sys.exit(main())
