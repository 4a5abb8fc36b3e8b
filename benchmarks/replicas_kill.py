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

Then ``--random-kills`` (20) more, with no hang: A is killed 0 to ``--window`` seconds after
its approve starts (by default 1.5 times the median approve of 3 uncrashed runs), so kills
land before the decision (possibly inside its write transaction, holding the store's
advisory write lock), while granting, after the grant, or not at all. Each must end undecided with
nothing of the decision written (no approval row, no audit row, no grant), or granted with
each grant held once (by B's takeover when it was left granting); and the write lock must
come free at once (it prints how soon, polled with ``pg_try_advisory_xact_lock``).

Last, ``--tx-kills`` (10) kills inside the decision's write transaction, found there for
sure: A's process hangs after ``record_approval``'s statements and before the commit, and
the script checks that the advisory lock is held before it kills. The decision must vanish
whole (the request pending, no approval row, no ``approved`` row), the lock come free, and
the request still be decidable: sara approves it afterwards and it is granted.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import replicas_common as common

STALE = "1"
REASON = "replica kill"
GRANT_CALLS = ("GrantPermissions", "BatchGrantPermissions")
CALIBRATION_RUNS = 3


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


def replica_a_at_random(
    env: dict[str, str], request_id: str, ready: Any, go: Any, took: Any
) -> None:
    """Approve ``request_id`` as sam when told to, at full speed (the kill comes at random);
    ``took`` gets the seconds from ``go`` to the approve's return."""
    services = common.build_replica(env)
    ready.set()
    go.wait(timeout=120)
    started = time.perf_counter()
    services.marketplace.approve(request_id, "sam", comment=REASON)
    took.value = time.perf_counter() - started


def replica_a_in_transaction(env: dict[str, str], request_id: str, hang: float, in_tx: Any) -> None:
    """Approve ``request_id`` as sam, hanging inside the approval's write transaction (its
    statements run, the advisory write lock held, the commit not yet made)."""
    from contextlib import contextmanager

    services = common.build_replica(env)
    store = services.marketplace.store
    real_write, real_record = type(store)._write, store.record_approval
    armed: list[bool] = []

    def hanging(self: Any) -> Iterator[Any]:
        with real_write(self) as db:
            yield db
            if armed:
                in_tx.set()
                time.sleep(hang)

    def record(*args: Any, **kwargs: Any) -> Any:
        armed.append(True)
        try:
            return real_record(*args, **kwargs)
        finally:
            armed.clear()

    type(store)._write = contextmanager(hanging)  # in A's process only
    store.record_approval = record
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


def submit(args: argparse.Namespace, seeder: Any, n: int, *, accounts: int = 0) -> Any:
    """Submit a kind's n-th request: one of sam's PII tables, for an account of its own
    (each kind of kill numbers its accounts from its own ``accounts`` offset)."""
    scopes = common.table_scopes(seeder, owner_account=common.SALES)
    database, table = scopes[n % len(scopes)]
    return seeder.marketplace.submit(
        common.REQUESTER,
        database=database,
        table=table,
        account=common.account(args.first_account + accounts + n),
        reason=REASON,
    )


def unreached(a: Any, event: Any, problem: str) -> str | None:
    """None once replica A has set ``event``; else A killed, and ``problem`` with its exit."""
    if event.wait(timeout=120):
        return None
    a.kill()
    a.join()
    return f"replica A {problem} (exit {a.exitcode})"


def cycle(
    args: argparse.Namespace,
    mesh: common.Mesh,
    seeder: Any,
    n: int,
    ctx: Any,
    loose: Any,
) -> dict[str, Any]:
    """One kill: submit, approve on A, kill A mid-grant, let B recover it."""
    request = submit(args, seeder, n)
    when = ("before", "after")[n % 2]
    in_grant = ctx.Event()
    a = ctx.Process(
        daemon=True,
        target=replica_a,
        args=(mesh.replica_env(), request.id, when, args.hang, in_grant),
    )
    a.start()
    result: dict[str, Any] = {"id": request.id, "when": when, "account": request.account}
    if problem := unreached(a, in_grant, "never reached the grant"):
        return {**result, "problem": problem}
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


def lock_free_after(mesh: common.Mesh, *, timeout: float = 10.0) -> float | None:
    """Seconds until the store's write lock can be taken (None: not within ``timeout``).

    A replica killed inside a write transaction holds the advisory lock until PostgreSQL
    sees its connection close; until then every replica's writes wait.
    """
    from mesh.store import postgres

    started = time.monotonic()
    free = common.wait_for(
        lambda: common.sql(
            mesh.db_url, "SELECT pg_try_advisory_xact_lock(%s)", [postgres._WRITE_LOCK]
        )[0][0],
        timeout=timeout,
        every=0.005,
    )
    return time.monotonic() - started if free else None


def random_cycle(
    args: argparse.Namespace,
    mesh: common.Mesh,
    seeder: Any,
    n: int,
    ctx: Any,
    loose: Any,
    rng: random.Random,
    window: float | None,
) -> dict[str, Any]:
    """One kill at a random moment of approve -> grant, with no hang anywhere."""
    request = submit(args, seeder, n, accounts=100_000)
    ready, go, took = ctx.Event(), ctx.Event(), ctx.Value("d", 0.0)
    a = ctx.Process(
        daemon=True,
        target=replica_a_at_random,
        args=(mesh.replica_env(), request.id, ready, go, took),
    )
    a.start()
    result: dict[str, Any] = {"id": request.id, "when": "random", "account": request.account}
    if problem := unreached(a, ready, "did not start"):
        return {**result, "problem": problem}
    delay = rng.uniform(0, window) if window is not None else None
    go.set()
    if delay is None:  # calibration: let it run to the end
        a.join(timeout=120)
        return {**result, "ran": took.value}
    time.sleep(delay)
    assert a.pid is not None
    try:
        os.kill(a.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # A had finished (its parent, the fork server, has already reaped it)
    killed = time.monotonic()
    a.join()
    result.update(delay=delay, killed=a.exitcode == -signal.SIGKILL)
    result["lock_free"] = lock_free_after(mesh)
    result["status_at_kill"] = status(mesh, request.id)
    if result["status_at_kill"] == "granting":
        loose.set()
        common.wait_for(lambda: status(mesh, request.id) != "granting", timeout=args.timeout)
        result["seconds"] = time.monotonic() - killed
        loose.clear()
    result["status"] = status(mesh, request.id)
    result["recovered"] = result["status"] in ("granted", "pending_approval")
    return result


def calibrate(
    args: argparse.Namespace,
    mesh: common.Mesh,
    seeder: Any,
    ctx: Any,
    loose: Any,
    rng: random.Random,
) -> float:
    """The random kills' window: 1.5 times the median approve (to granted, timed in A) of a
    few uncrashed runs, so that kills land before, during and after it."""
    runs = [
        random_cycle(args, mesh, seeder, 90_000 + n, ctx, loose, rng, None)["ran"]
        for n in range(CALIBRATION_RUNS)
    ]
    window = 1.5 * common.percentile(runs, 50)
    common.figure("random kill window", f"{window * 1000:.0f} ms (1.5 x median approve to granted)")
    return window


def transaction_cycle(
    args: argparse.Namespace, mesh: common.Mesh, seeder: Any, n: int, ctx: Any
) -> dict[str, Any]:
    """One kill inside the decision's write transaction: the decision must vanish whole,
    the lock come free, and the request stay decidable (sara approves it after)."""
    from mesh.store import postgres

    request = submit(args, seeder, n, accounts=200_000)
    in_tx = ctx.Event()
    a = ctx.Process(
        daemon=True,
        target=replica_a_in_transaction,
        args=(mesh.replica_env(), request.id, args.hang, in_tx),
    )
    a.start()
    result: dict[str, Any] = {"id": request.id, "when": "in transaction"}
    if problem := unreached(a, in_tx, "never reached the transaction"):
        return {**result, "problem": problem}
    taken = common.sql(mesh.db_url, "SELECT pg_try_advisory_xact_lock(%s)", [postgres._WRITE_LOCK])[
        0
    ][0]
    result["lock_held"] = not taken
    assert a.pid is not None
    os.kill(a.pid, signal.SIGKILL)
    a.join()
    result["lock_free"] = lock_free_after(mesh)
    problems = []
    written = common.sql(
        mesh.db_url,
        "SELECT (SELECT count(*) FROM approvals WHERE request_id = %s), "
        "(SELECT count(*) FROM audit WHERE request_id = %s AND action = 'approved')",
        [request.id, request.id],
    )[0]
    if status(mesh, request.id) != "pending_approval" or any(written):
        problems.append(f"half a decision: {status(mesh, request.id)}, {written}")
    if not result["lock_held"]:
        problems.append("the write lock was not held inside the transaction")
    if result["lock_free"] is None:
        problems.append("the write lock was still held 10 s after the kill")
    try:
        ended = seeder.marketplace.approve(request.id, "sara", comment=REASON)
        if ended.status.value != "granted":
            problems.append(f"sara's approval after the kill ended it {ended.status.value}")
    except Exception as exc:  # noqa: BLE001 - any refusal here is the finding
        problems.append(f"sara could not approve it after the kill: {exc}")
    if problems:
        result["problem"] = "; ".join(problems)
    return result


def check_random(mesh: common.Mesh, seeder: Any, result: dict[str, Any], by_b: set[str]) -> None:
    """A random kill left the request undecided with nothing of the decision written, or
    granted (by A, or by B's takeover) with each grant held once; the lock came free."""
    from mesh.policy import resource_key

    problems = []
    request = seeder.marketplace.store.get(result["id"])
    actions = Counter(
        action
        for (action,) in common.sql(
            mesh.db_url, "SELECT action FROM audit WHERE request_id = %s", [result["id"]]
        )
    )
    approvals = common.sql(
        mesh.db_url, "SELECT count(*) FROM approvals WHERE request_id = %s", [result["id"]]
    )[0][0]
    mine = Counter(
        {key: c for (who, key), c in common.held(seeder).items() if who == result["account"]}
    )
    if result["lock_free"] is None:
        problems.append("the write lock was still held 10 s after the kill")
    if result["status"] == "pending_approval":
        result["phase"] = "before the decision"
        if approvals or actions["approved"] or mine:
            problems.append(
                f"half a decision: {approvals} approvals, {dict(actions)}, {dict(mine)}"
            )
    elif result["status"] == "granted":
        plan = sorted(resource_key(s.resource) for s in seeder.marketplace.grant_plan(request))
        if sorted(mine) != plan or any(c != 1 for c in mine.values()):
            problems.append(f"Lake Formation holds {dict(mine)}, planned {plan}")
        if result["status_at_kill"] == "granting":
            result["phase"] = "granting"
            if actions["taken_over"] != 1 or result["id"] not in by_b:
                problems.append("granted without one takeover by replica B")
        else:
            result["phase"] = "after the grant" if result["killed"] else "finished before it"
    else:
        result["phase"] = result["status"]
        problems.append(f"it ended {result['status']}")
    if problems:
        result["problem"] = "; ".join(problems)


def check(mesh: common.Mesh, seeder: Any, results: list[dict[str, Any]], by_b: set[str]) -> None:
    """Add each cycle's problems: Lake Formation's entries, the audit rows, B's reports."""
    from mesh.policy import resource_key

    lf = common.held(seeder)
    for result in results:
        if "problem" in result:
            continue
        if result["when"] == "random":
            check_random(mesh, seeder, result, by_b)
            continue
        if result["when"] == "in transaction":
            continue  # checked as it ran
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
    parser.add_argument(
        "--random-kills",
        type=int,
        default=20,
        help="then this many kills at a random moment of approve -> grant (default 20)",
    )
    parser.add_argument(
        "--window",
        type=float,
        help="a random kill comes 0 to this many seconds after approve starts (default: 1.5 "
        "times the median of 3 uncrashed approves)",
    )
    parser.add_argument(
        "--tx-kills",
        type=int,
        default=10,
        help="then this many kills inside the decision's write transaction (default 10)",
    )
    parser.add_argument("--seed", type=int, default=11, help="seed of the random kill times")
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
        b = ctx.Process(
            daemon=True, target=replica_b, args=(env, loose, stop, args.tick_every, reports)
        )
        b.start()
        first = common.collect(reports, [b], timeout=300)[0]
        if "error" in first:
            print("replica B did not start:\n" + first["error"])
            return 1
        started = time.perf_counter()
        try:
            results = [cycle(args, mesh, seeder, n, ctx, loose) for n in range(args.kills)]
            rng = random.Random(args.seed)
            window = args.window
            if window is None and args.random_kills:
                window = calibrate(args, mesh, seeder, ctx, loose, rng)
            results += [
                random_cycle(args, mesh, seeder, n, ctx, loose, rng, window)
                for n in range(args.random_kills)
            ]
            results += [transaction_cycle(args, mesh, seeder, n, ctx) for n in range(args.tx_kills)]
            took = time.perf_counter() - started
        finally:
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
        mid = [r for r in results if r["when"] in ("before", "after")]
        in_tx = [r for r in results if r["when"] == "in transaction"]
        at_random = [r for r in results if r["when"] == "random"]
        recovered = [r for r in mid if "problem" not in r]
        times = [r["seconds"] for r in recovered]
        common.figure("kills", len(mid))
        common.figure("killed before the grant call", sum(r["when"] == "before" for r in mid))
        common.figure(
            "killed after lake formation applied it", sum(r["when"] == "after" for r in mid)
        )
        common.figure("recovered", f"{len(recovered)}/{len(mid)}")
        common.figure("found held by the takeover", sum(bool(r.get("found_held")) for r in mid))
        if times:
            common.figure(
                "time to recover p50/max",
                f"{common.percentile(times, 50):.2f}/{max(times):.2f} s",
            )
        if at_random:
            fine = [r for r in at_random if "problem" not in r]
            common.figure("random kills", len(at_random))
            common.figure("random kills by phase", dict(Counter(r.get("phase") for r in at_random)))
            common.figure("random kills recovered", f"{len(fine)}/{len(at_random)}")
            free = [r["lock_free"] for r in at_random if r.get("lock_free") is not None]
            common.figure("write lock free after a kill p50/max", common.millis(free))
        if in_tx:
            whole = [r for r in in_tx if "problem" not in r]
            common.figure("kills inside the decision's transaction", len(in_tx))
            common.figure("lock held at the kill", sum(bool(r.get("lock_held")) for r in in_tx))
            common.figure("rolled back whole and decided after", f"{len(whole)}/{len(in_tx)}")
            free = [r["lock_free"] for r in in_tx if r.get("lock_free") is not None]
            common.figure("write lock free after those kills p50/max", common.millis(free))
        common.figure("tick errors", len(b_errors))
        common.figure("audit chain", f"{'verifies' if ok else 'BROKEN'} ({rows} rows)")
        common.figure("time", f"{took:.1f} s")
        common.figure("load", common.load_note())
        for r in results:
            if "problem" in r:
                print(f"  {r['id']} ({r['when']}): {r['problem']}")
        for error in b_errors[:3]:
            print("  tick: " + error)
        if chain_problems:
            print("  chain: " + "; ".join(chain_problems))
        good = all("problem" not in r for r in results)
        return 0 if ok and good and not b_errors else 1


if __name__ == "__main__":
    sys.exit(main())
