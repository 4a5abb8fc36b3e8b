"""Print how requests recover from crashes and AWS faults (issue 8, section 2).

A. Crash recovery: ``python -m mesh approve`` is killed with SIGKILL at a random point of
   approve -> grant, once per cycle, each time for another PII request; then, past the stale
   time, ONE ``python -m mesh tick`` and ``python -m mesh reconcile --json`` run. It prints
   how many requests are not terminal and how many disagree with Lake Formation.
B. AWS fault matrix: each fault x each operation, injected with botocore event hooks on every
   client the services build (a ``before-send`` hook answers in place of AWS, or raises the
   network error botocore would, so botocore's own retries run as they would against AWS).
   The path that uses the operation runs, the fault is removed, the clock passes the stale
   time, ``tick`` runs and, when that is not enough, the manual step the README documents.

Each part runs against its own demo stand-in (``python -m mesh demo --no-app``) with its own
temporary MESH_DB folder. Targets: 0 not terminal, 0 mismatched, 0 fault cells stuck.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import botocore.loaders
import botocore.session
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from botocore.httpsession import URLLib3Session

from mesh.aws import ClientFactory
from mesh.demo import data
from mesh.errors import MeshError
from mesh.models import AccessRequest, Status
from mesh.policy import resource_key
from mesh.services import Services, build
from mesh.settings import load_settings
from mesh.workflow import Marketplace, utc_now

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = frozenset(
    {"granted", "failed", "denied", "cancelled", "revoked", "expired", "revoke_failed"}
)
OWNERS = {
    "111111111111": "sam",
    "222222222222": "mia",
    "333333333333": "hank",
    "555555555555": "fiona",
}
REQUESTER = "ada"  # an admin may request for any account, so every request gets its own
REASON = "recovery benchmark"
WINDOW_FACTOR = 1.5  # the kill window: this many times the median time to a grant's end
REDOS = 3  # times a cycle runs again when its approve finished before the kill
STALE = 1  # MESH_STALE_GRANTING for part A's children and its tick
# How an approving process runs. Either way it does `python -m mesh`'s start-up (imports,
# settings, services) first, then runs `approve` through mesh.cli.main exactly as
# `python -m mesh approve ...` does, and the kill delay counts from the end of start-up, so it
# lands inside approve -> grant and not in interpreter start-up.
# --fresh: a new interpreter per cycle ("ready", then its command line on stdin).
FRESH = """
import json, sys
import mesh.cli
from mesh.settings import load_settings
services = mesh.cli.build(load_settings())
mesh.cli.build = lambda settings: services
print("ready", flush=True)
sys.exit(mesh.cli.main(json.loads(sys.stdin.readline())))
"""
# Default: a fork server that has imported mesh.cli and read botocore's data files once; per
# job it forks a child that builds its own services (clients, store) and runs the command,
# while the server sleeps the delay, SIGKILLs the child, and reports. Single-threaded, so
# forking is safe; the children hold nothing of the server's but imported modules.
FORK_SERVER = """
import functools, json, os, signal, sys, time
import botocore.loaders, botocore.session
botocore.session.create_loader = functools.cache(botocore.loaders.create_loader)
import mesh.cli
from mesh.aws import ClientFactory
from mesh.settings import load_settings
for service in ("sts", "glue", "lakeformation", "sns"):
    ClientFactory(demo_endpoint="http://127.0.0.1:9").client(service)
print("ready", flush=True)
while line := sys.stdin.readline():
    job = json.loads(line)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        os.dup2(os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        code = 70
        try:
            services = mesh.cli.build(load_settings())
            mesh.cli.build = lambda settings: services
            os.write(ready_w, b"r")
            code = mesh.cli.main(job["argv"])
        except BaseException as exc:
            print(repr(exc), file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.close(ready_w)
    ready = os.read(ready_r, 1) == b"r"
    os.close(ready_r)
    go_at, started = time.time(), time.monotonic()
    if ready and job["delay"] is not None:
        time.sleep(job["delay"])
        os.kill(pid, signal.SIGKILL)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    ran = time.monotonic() - started
    answer = {"ready": ready, "code": code, "go_at": go_at, "ran": ran}
    print(json.dumps(answer), flush=True)
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "AWS_"))}
    env.update(extra)
    return env


# The stand-in ---------------------------------------------------------------------------------


@dataclass
class StandIn:
    process: subprocess.Popen[bytes]
    endpoint: str
    db: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_standin(folder: Path) -> StandIn:
    """`python -m mesh demo --no-app` with its own MESH_DB; returns once it is seeded."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "demo.db"
    with (folder / "standin.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mesh", "demo", "--no-app"],
            cwd=ROOT,
            env=_clean_env(MESH_MODE="demo", MESH_DB=str(db)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    state = folder / "demo-standin.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the demo stand-in exited; see {folder / 'standin.log'}")
        try:
            return StandIn(process, json.loads(state.read_text())["endpoint"], db)
        except (OSError, ValueError, KeyError):
            time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError("the demo stand-in did not start within 120 s")


def build_services(db: Path, endpoint: str, **env: str) -> Services:
    settings = load_settings({"MESH_MODE": "demo", "MESH_DB": str(db), **env}, {})
    return build(settings, endpoint=endpoint)


Held = dict[str, dict[str, set[str]]]  # account -> resource key -> permissions


def held_by_account(services: Services) -> Held:
    """Lake Formation's permissions, as account -> resource key -> permissions."""
    held: Held = {}
    for entry in services.lakeformation.list_permissions():
        account = entry.get("Principal", {}).get("DataLakePrincipalIdentifier", "")
        perms = held.setdefault(account, {}).setdefault(resource_key(entry["Resource"]), set())
        perms.update(entry.get("Permissions", []))
    return held


def holds(services: Services, request: AccessRequest, held: Held) -> list[tuple[str, bool]]:
    """For each planned grant of ``request``: (its key, whether Lake Formation holds it)."""
    mine = held.get(request.account, {})
    return [
        (
            spec.key,
            {p.value for p in spec.permissions} <= mine.get(resource_key(spec.resource), set()),
        )
        for spec in services.marketplace.grant_plan(request)
    ]


# A. Crash recovery ----------------------------------------------------------------------------


@dataclass
class Run:
    """One approving child: how long it ran after its command, and how it ended."""

    request_id: str
    delay: float | None
    go_at: float = 0.0  # wall clock when the command was sent, for the audit log's timestamps
    ran: float = 0.0
    code: int | None = None
    killed: bool = False
    status_after: str = ""
    error: str = ""


def _argv(run: Run, owner: str) -> list[str]:
    return ["approve", run.request_id, "--as", owner, "--comment", REASON]


class ForkServer:
    """One fork server; run() is called by one thread at a time."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.logs = logs
        self.process = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError("the fork server did not start")

    def run(self, run: Run, owner: str) -> Run:
        assert self.process.stdin is not None and self.process.stdout is not None
        stderr = self.logs / f"{run.request_id}.err"
        job = {"argv": _argv(run, owner), "delay": run.delay, "stderr": str(stderr)}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        run.go_at, run.ran, run.code = answer["go_at"], answer["ran"], answer["code"]
        run.killed = run.code == -signal.SIGKILL
        if not answer["ready"] or (not run.killed and run.code != 0):
            run.error = stderr.read_text(errors="replace")[-300:]
        return run

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def fresh_child(run: Run, owner: str, env: dict[str, str]) -> Run:
    """A new interpreter: once it is ready, send the command; kill it after ``run.delay``."""
    child = subprocess.Popen(
        [sys.executable, "-c", FRESH],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        line = child.stdout.readline()
        if line.strip() != b"ready":
            _, err = child.communicate(timeout=60)
            run.code, run.error = child.returncode, (line + err).decode(errors="replace")[-300:]
            return run
        child.stdin.write(json.dumps(_argv(run, owner)).encode() + b"\n")
        child.stdin.flush()
        started = time.monotonic()
        run.go_at = time.time()
        if run.delay is not None:
            time.sleep(run.delay)
            child.send_signal(signal.SIGKILL)  # a no-op if it has already exited
        _, err = child.communicate(timeout=120)
        run.ran = time.monotonic() - started
        run.code = child.returncode
        run.killed = child.returncode == -signal.SIGKILL
        if not run.killed and child.returncode != 0:
            run.error = err.decode(errors="replace")[-300:]
        return run
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


class Runners:
    """Runs approving processes, ``workers`` at a time, forked (default) or fresh."""

    def __init__(self, env: dict[str, str], logs: Path, *, workers: int, fresh: bool) -> None:
        self.env, self.workers, self.fresh = env, workers, fresh
        logs.mkdir(parents=True, exist_ok=True)
        self.idle: queue.Queue[ForkServer] = queue.Queue()
        self.servers = [] if fresh else [ForkServer(env, logs) for _ in range(workers)]
        for server in self.servers:
            self.idle.put(server)

    def run(self, run: Run, owner: str) -> Run:
        if self.fresh:
            return fresh_child(run, owner, self.env)
        server = self.idle.get()
        try:
            return server.run(run, owner)
        finally:
            self.idle.put(server)

    def run_all(self, jobs: list[tuple[Run, str]]) -> list[Run]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda job: self.run(*job), jobs))

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def pii_scopes(services: Services) -> list[tuple[str, str | None, str]]:
    """(database, table or None, owner's username) for every one-step PII scope of the demo."""
    scopes = []
    for name, (_, params, tables) in data.DATABASES.items():
        owner = OWNERS.get(params.get("data_owner", ""))
        if owner is None:
            continue
        for table in [None, *tables]:
            verdict = services.marketplace.explain(
                database=name, table=table, account="100000000000"
            )
            if verdict.needs_approval and len(verdict.steps) == 1:
                scopes.append((name, table, owner))
    return scopes


def submit_pending(services: Services, count: int, *, first_account: int) -> list[tuple[str, str]]:
    """Submit ``count`` PII requests, each for its own account; returns (id, owner) pairs."""
    scopes = pii_scopes(services)
    made = []
    for i in range(count):
        database, table, owner = scopes[i % len(scopes)]
        request = services.marketplace.submit(
            REQUESTER,
            database=database,
            table=table,
            account=f"{first_account + i:012d}",
            reason=REASON,
        )
        if request.status is not Status.PENDING_APPROVAL:
            raise RuntimeError(f"{request.id} is {request.status}, expected pending_approval")
        made.append((request.id, owner))
    return made


def _moment(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def calibrate(
    services: Services, pending: list[tuple[str, str]], runners: Runners
) -> tuple[float, str]:
    """Run approves to the end; returns the kill window (seconds) and what it measured.

    The window is WINDOW_FACTOR times the median time to the grant's end (a long tail of slow
    runs would otherwise put most kills after it), at most the median run, so kills land all
    along approve -> grant, some before the decision and some after the grant (the decision
    notice, the exit).
    """
    runs = runners.run_all([(Run(rid, None), owner) for rid, owner in pending])
    runs = runs[len(runs) // 2 :]  # the first ones warm up the fork servers and the stand-in
    approved, granted = [], []
    for run in runs:
        request = services.marketplace.store.get(run.request_id)
        if run.code != 0 or request is None or request.status is not Status.GRANTED:
            raise RuntimeError(f"an uncrashed approve did not grant {run.request_id}: {run.error}")
        for event in services.marketplace.audit(request_id=run.request_id):
            if event.action == "approved":
                approved.append(_moment(event.at) - run.go_at)
            elif event.action == "grant_succeeded":
                granted.append(_moment(event.at) - run.go_at)
    gone = statistics.median(r.ran for r in runs)
    window = max(min(WINDOW_FACTOR * statistics.median(granted), gone), 0.05)

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f}"

    text = (
        f"{len(runs)} uncrashed approves, medians after start-up: approval recorded "
        f"at {ms(approved)} ms, grant done at {ms(granted)} ms (slowest {max(granted) * 1000:.0f}"
        f" ms), process gone at {ms([r.ran for r in runs])} ms"
    )
    return window, text


def run_cli(verb: list[str], env: dict[str, str]) -> tuple[int, str, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mesh", *verb],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def crash_recovery(
    workdir: Path, *, cycles: int, workers: int, seed: int, fresh: bool
) -> dict[str, int]:
    print(f"\n== A. Crash recovery: {cycles} cycles of kill -9 during approve -> grant ==")
    began = time.monotonic()
    standin = start_standin(workdir / "crash")
    runners = None
    try:
        env = _clean_env(
            MESH_MODE="demo",
            MESH_DB=str(standin.db),
            MESH_DEMO_ENDPOINT=standin.endpoint,
            MESH_STALE_GRANTING=str(STALE),
        )
        services = build_services(standin.db, standin.endpoint)
        runners = Runners(env, workdir / "crash" / "children", workers=workers, fresh=fresh)
        print(
            f"stand-in {standin.endpoint}; approving processes: "
            + ("a fresh interpreter each" if fresh else "forked from a warmed-up fork server")
            + f", {workers} at a time"
        )
        runs = _kill_cycles(services, runners, cycles=cycles, seed=seed)
        _report_kills(services, runs)
        figures = _tick_and_check(services, env, {r.request_id: r.status_after for r in runs})
    finally:
        if runners is not None:
            runners.stop()
        standin.stop()
    print(f"part A took {time.monotonic() - began:.1f} s in all")
    return figures


def _kill_cycles(services: Services, runners: Runners, *, cycles: int, seed: int) -> list[Run]:
    """Submit the requests, time uncrashed approves, then approve and kill, once per cycle.

    An approve that finishes before its kill is not a cycle: the cycle runs again on a spare
    request, with a delay drawn below that run's own duration (at most REDOS times).
    """
    store = services.marketplace.store
    calibration_count = max(8, 4 * runners.workers)
    started = time.monotonic()
    # One spare request per cycle, for cycles whose approve finished before the kill.
    pending = submit_pending(
        services, calibration_count + 2 * cycles, first_account=210_000_000_000
    )
    print(
        f"{len(pending)} PII requests submitted in {time.monotonic() - started:.1f} s, each for "
        "its own account"
    )
    window, described = calibrate(services, pending[:calibration_count], runners)
    print(described)
    print(f"kill delay: uniform in 0..{window * 1000:.0f} ms after start-up")
    spares = iter(pending[calibration_count + cycles :])
    lock = threading.Lock()

    def cycle(n: int, rid: str, owner: str) -> list[Run]:
        rng = random.Random(f"{seed}-{n}")
        delay, runs = rng.uniform(0, window), []
        for _ in range(REDOS + 1):
            run = runners.run(Run(rid, delay), owner)
            now = store.get(run.request_id)
            run.status_after = now.status.value if now else "gone"
            runs.append(run)
            with lock:
                spare = None if run.killed else next(spares, None)
            if spare is None:
                break
            (rid, owner), delay = spare, rng.uniform(0, run.ran)
        return runs

    started = time.monotonic()
    firsts = pending[calibration_count : calibration_count + cycles]
    with ThreadPoolExecutor(max_workers=runners.workers) as pool:
        done = pool.map(lambda job: cycle(job[0], *job[1]), enumerate(firsts))
        runs = [run for runs in done for run in runs]
    redone = len(runs) - len(firsts)
    print(
        f"{len(firsts)} cycles in {time.monotonic() - started:.1f} s ({redone} approves finished "
        "before their kill; their cycle ran again on a spare request, with a shorter delay)"
    )
    return runs


def _report_kills(services: Services, runs: list[Run]) -> None:
    store = services.marketplace.store
    killed = [r for r in runs if r.killed]
    finished = [r for r in runs if not r.killed]
    broken = [r for r in finished if r.code != 0]
    print(
        f"  killed {len(killed)}, finished before the kill {len(finished)}"
        + (f" ({len(broken)} with an error, e.g. {broken[0].error!r})" if broken else "")
    )
    at_kill = Counter(r.status_after for r in killed)
    print(
        "  state right after each kill: "
        + ", ".join(f"{status} {n}" for status, n in sorted(at_kill.items()))
    )
    mid_flight = [r for r in killed if r.status_after == Status.GRANTING.value]
    held = held_by_account(services)
    recorded: Counter[str] = Counter()
    unrecorded = 0
    for run in mid_flight:
        request = store.get(run.request_id)
        assert request is not None
        state = holds(services, request, held)
        recorded[f"{len(request.grants_done)} of {len(state)}"] += 1
        unrecorded += any(ok and key not in request.grants_done for key, ok in state)
    print(
        f"  killed mid-flight (approval recorded, not yet granted): {len(mid_flight)}; grants "
        "recorded: "
        + ", ".join(f"{k}: {n}" for k, n in sorted(recorded.items()))
        + f"; holding a grant in Lake Formation that the store had not recorded: {unrecorded}"
    )


def _tick_and_check(
    services: Services, env: dict[str, str], at_kill: dict[str, str]
) -> dict[str, int]:
    """Past the stale time, one tick and one reconcile (as the CLI); then count.

    ``at_kill``: each request's status right after its process ended.
    """
    ids = list(at_kill)
    store = services.marketplace.store
    time.sleep(STALE + 1.0)
    code, out, err, took = run_cli(["tick", "--json"], env)
    tick = json.loads(out) if code == 0 else {}
    print(
        f"one `python -m mesh tick` (MESH_STALE_GRANTING={STALE}, {STALE + 1} s after the last "
        f"kill): exit {code} in {took:.1f} s" + (f": {err.strip()[-300:]}" if code else "")
    )
    if tick:
        shown = {k: (len(v) if isinstance(v, list) else v) for k, v in tick.items()}
        print(f"  tick report (counts): {shown}")
    if "taken_over" in tick:
        left = [
            rid
            for rid, status in at_kill.items()
            if status == Status.GRANTING.value and rid not in tick["taken_over"]
        ]
        print(
            f"  granting after a kill but not in the tick's taken_over: {len(left)}"
            + (f" ({', '.join(left[:5])})" if left else "")
        )
    code, out, err, _ = run_cli(["reconcile", "--json"], env)
    drift = json.loads(out) if code == 0 else {}
    if code:
        print(f"reconcile failed: exit {code}: {err.strip()[-300:]}")
    final = [r for r in (store.get(rid) for rid in ids) if r is not None]
    statuses = Counter(r.status.value for r in final)
    untouched = [
        r.id for r in final if r.status is Status.PENDING_APPROVAL and not store.approvals(r.id)
    ]
    not_terminal = [
        r.id for r in final if r.status.value not in TERMINAL and r.id not in untouched
    ] + ["gone"] * (len(ids) - len(final))
    print("after the tick: " + ", ".join(f"{s} {n}" for s, n in sorted(statuses.items())))
    print(f"  pending_approval, no approval recorded (killed before deciding): {len(untouched)}")
    print(
        f"  not terminal: {len(not_terminal)}"
        + (f" (e.g. {', '.join(not_terminal[:5])})" if not_terminal else "")
    )
    unnoticed = [
        r.id
        for r in final
        if r.status is Status.GRANTED
        and not any(n["kind"] == "decision" for n in store.notifications(request_id=r.id))
    ]
    where = Counter(at_kill[rid] for rid in unnoticed)
    print(
        f"  granted with no decision notice recorded for the requester: {len(unnoticed)}"
        + "".join(f"; {n} of them {status} right after the kill" for status, n in where.items())
    )
    lists = {k: len(v) for k, v in drift.items() if isinstance(v, list)}
    print(
        f"reconcile --json: {drift.get('granted_requests', '?')} granted requests checked; "
        + ", ".join(f"{k} {n}" for k, n in lists.items())
    )
    print(f"own check, request by request against Lake Formation: {own_check(services, final)}")
    mismatched = lists.get("missing", 0) + lists.get("unexplained", 0) if drift else len(ids)
    return {"not_terminal": len(not_terminal), "mismatched": mismatched}


def own_check(services: Services, requests: list[AccessRequest]) -> str:
    """Granted requests lacking a grant, and requests in any other status holding one."""
    held = held_by_account(services)
    lacking, holding = [], []
    for request in requests:
        state = holds(services, request, held)
        if request.status is Status.GRANTED and not all(ok for _, ok in state):
            lacking.append(request.id)
        elif request.status is not Status.GRANTED and any(ok for _, ok in state):
            holding.append(f"{request.id} ({request.status.value})")
    text = f"{len(lacking)} granted but lacking a grant, {len(holding)} not granted but holding one"
    shown = lacking[:3] + holding[:3]
    return text + (f" (e.g. {', '.join(shown)})" if shown else "")


# B. The AWS fault matrix ----------------------------------------------------------------------

PROTOCOL = {"glue": "json", "lakeformation": "json", "sts": "query", "sns": "query"}


@dataclass(frozen=True)
class Fault:
    name: str
    kind: str  # "error" (an AWS error answer), "refused", "reset", "timeout", "applied"
    # protocol family -> (error code, HTTP status), as each service spells it
    codes: dict[str, tuple[str, int]] = field(default_factory=dict)
    sts: tuple[str, int] | None = None
    sns: tuple[str, int] | None = None

    def code_for(self, service: str) -> tuple[str, int]:
        special = {"sts": self.sts, "sns": self.sns}.get(service)
        return special or self.codes["json"]


FAULTS = [
    Fault(
        "AccessDenied",
        "error",
        {"json": ("AccessDeniedException", 400)},
        sts=("AccessDenied", 403),
        sns=("AuthorizationError", 403),
    ),
    Fault(
        "Throttling",
        "error",
        {"json": ("ThrottlingException", 400)},
        sts=("Throttling", 400),
        sns=("Throttled", 429),
    ),
    Fault(
        "InternalService",
        "error",
        {"json": ("InternalServiceException", 500)},
        sts=("InternalFailure", 500),
        sns=("InternalError", 500),
    ),
    Fault(
        "ConcurrentModification",
        "error",
        {"json": ("ConcurrentModificationException", 400)},
        sts=("ConcurrentModification", 400),
        sns=("ConcurrentAccess", 400),
    ),
    Fault(
        "EntityNotFound",
        "error",
        {"json": ("EntityNotFoundException", 400)},
        sts=("NoSuchEntity", 404),
        sns=("NotFound", 404),
    ),
    Fault(
        "InvalidInput",
        "error",
        {"json": ("InvalidInputException", 400)},
        sts=("ValidationError", 400),
        sns=("InvalidParameter", 400),
    ),
    Fault("connection refused", "refused"),
    Fault("connection reset", "reset"),
    Fault("read timeout", "timeout"),
    Fault("timeout after applied", "applied"),
]


class _Body:
    def __init__(self, content: bytes) -> None:
        self.content = content

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.content


def _error_answer(url: str, service: str, code: str, status: int) -> AWSResponse:
    message = "injected by benchmarks/recovery.py"
    if PROTOCOL[service] == "json":
        body = json.dumps({"__type": code, "Message": message}).encode()
        headers = {"x-amzn-ErrorType": code, "Content-Type": "application/x-amz-json-1.1"}
    else:
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>bench</RequestId></ErrorResponse>"
        ).encode()
        headers = {"Content-Type": "text/xml"}
    return AWSResponse(url, status, headers, _Body(body))  # type: ignore[arg-type]


class Injector:
    """A ``before-send`` hook on every client: when armed for (service, operation), it
    answers or fails in place of AWS; botocore handles that exactly as a real one."""

    def __init__(self) -> None:
        self.target: tuple[str, str] | None = None
        self.fault: Fault | None = None
        self.hits = 0
        self.applied_status: list[int] = []
        self.applied_errors: list[str] = []
        self._http = URLLib3Session()

    @contextmanager
    def armed(self, service: str, operation: str, fault: Fault) -> Iterator[None]:
        self.target, self.fault = (service, operation), fault
        try:
            yield
        finally:
            self.target = self.fault = None

    def before_send(self, request: Any, event_name: str, **kwargs: Any) -> AWSResponse | None:
        _, service, operation = event_name.split(".", 2)
        fault = self.fault
        if fault is None or (service, operation) != self.target:
            return None
        self.hits += 1
        if fault.kind == "refused":
            raise EndpointConnectionError(endpoint_url=request.url, error="Connection refused")
        if fault.kind == "reset":
            raise ConnectionClosedError(endpoint_url=request.url)
        if fault.kind == "timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        if fault.kind == "applied":
            answer = self._http.send(request)  # the stand-in applies the call; the answer is lost
            self.applied_status.append(answer.status_code)
            if answer.status_code != 200:
                self.applied_errors.append(answer.content.decode(errors="replace")[:200])
            raise ReadTimeoutError(endpoint_url=request.url)
        code, status = fault.code_for(service)
        return _error_answer(request.url, service, code, status)

    def install(self) -> None:
        """Hook every client that the one client factory makes from now on."""
        original = ClientFactory.client
        hook = self.before_send

        def client(factory: ClientFactory, service: str, **credentials: str) -> Any:
            made = original(factory, service, **credentials)
            made.meta.events.register("before-send", hook)
            return made

        ClientFactory.client = client  # type: ignore[method-assign,assignment]


class Clock:
    """A clock the matrix moves by hand (never a sleep)."""

    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Ctx:
    services: Services
    clock: Clock
    account: str
    injector: Injector

    @property
    def market(self) -> Marketplace:
        return self.services.marketplace

    def request(self) -> AccessRequest | None:
        found = self.market.store.requests()
        return found[0] if found else None

    def submit(self, database: str, table: str | None, **options: Any) -> None:
        self.market.submit(
            REQUESTER,
            database=database,
            table=table,
            account=self.account,
            reason=REASON,
            **options,
        )

    def tick(self) -> None:
        self.services.lifecycle.tick()


def _approve(ctx: Ctx) -> None:
    request = ctx.request()
    assert request is not None
    ctx.market.approve(request.id, "sam", comment=REASON)


def _revoke(ctx: Ctx) -> None:
    request = ctx.request()
    assert request is not None
    ctx.services.lifecycle.revoke(request.id, "sam", comment=REASON)


def _retry(ctx: Ctx) -> None:
    request = ctx.request()
    assert request is not None
    ctx.market.retry(request.id, REQUESTER)


def _failed_at_once_grant(ctx: Ctx) -> None:
    transient = next(f for f in FAULTS if f.name == "ConcurrentModification")
    with ctx.injector.armed("lakeformation", "GrantPermissions", transient):
        ctx.submit("sales_orders", "orders")


def _granted_expiring(ctx: Ctx) -> None:
    ctx.submit("sales_orders", "orders", duration=timedelta(days=1))
    ctx.clock.advance(days=2)


@dataclass(frozen=True)
class Row:
    service: str
    operation: str
    path: str
    act: Callable[[Ctx], None]
    goal: frozenset[str]
    setup: Callable[[Ctx], None] | None = None
    notice: bool = False  # the goal includes the owner's approval request being sent


def _submit_database(ctx: Ctx) -> None:
    ctx.submit("marketing_campaigns", None)  # no PII: granted at once, two grants


def _submit_table(ctx: Ctx) -> None:
    ctx.submit("sales_orders", "orders")  # no PII: granted at once


def _submit_pii(ctx: Ctx) -> None:
    ctx.submit("sales_orders", "customers")  # PII: waits for sam (Sales, which has a topic)


GRANTED = frozenset({"granted"})
ENDED = frozenset({"expired", "revoked"})
WAITING = frozenset({"pending_approval"})
ROWS = [
    Row("glue", "GetDatabase", "approve PII table -> grant", _approve, GRANTED, _submit_pii),
    Row("glue", "GetTables", "submit non-PII database -> grant", _submit_database, GRANTED),
    Row("glue", "GetTable", "submit non-PII table -> grant", _submit_table, GRANTED),
    Row("glue", "GetTable", "requester retries a failed at-once grant", _retry, GRANTED,
        _failed_at_once_grant),
    Row("glue", "GetTable", "tick retries a failed at-once grant", Ctx.tick, GRANTED,
        _failed_at_once_grant),
    Row("lakeformation", "GrantPermissions", "submit non-PII database -> grant",
        _submit_database, GRANTED),
    Row("lakeformation", "GrantPermissions", "approve PII table -> grant", _approve, GRANTED,
        _submit_pii),
    Row("lakeformation", "RevokePermissions", "owner revokes", _revoke, frozenset({"revoked"}),
        _submit_table),
    Row("lakeformation", "RevokePermissions", "tick expires a grant", Ctx.tick, ENDED,
        _granted_expiring),
    Row("sts", "AssumeRole", "notify the owner (submit PII table)", _submit_pii, WAITING,
        notice=True),
    Row("sns", "Publish", "notify the owner (submit PII table)", _submit_pii, WAITING,
        notice=True),
]  # fmt: skip


@dataclass
class CellResult:
    row: Row
    fault: Fault
    call: str = ""
    after_fault: str = ""
    after_recovery: str = ""
    recovered_by: str = ""
    stuck: bool = False
    hits: int = 0
    notes: list[str] = field(default_factory=list)


class Collect(logging.Handler):
    """Keeps the ERROR records the product logs (unexpected failures) for the cell's notes."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage()[:120])


def _state(ctx: Ctx, row: Row) -> str:
    request = ctx.request()
    if request is None:
        return "no request stored"
    text = request.status.value + (f" ({request.error_code})" if request.error_code else "")
    if row.notice:
        text += "; owner notice " + _notice(ctx, request)
    return text


def _notice(ctx: Ctx, request: AccessRequest) -> str:
    rows = [
        n
        for n in ctx.market.store.notifications(request_id=request.id)
        if n["kind"] == "approval_request"
    ]
    if not rows:
        return "none"
    last = rows[-1]
    return str(last["status"]) + (f" ({last['error_code']})" if last.get("error_code") else "")


def _good(ctx: Ctx, row: Row) -> bool:
    request = ctx.request()
    if request is None or request.status.value not in row.goal:
        return False
    if row.notice and not _notice(ctx, request).startswith("sent"):
        return False
    state = holds(ctx.services, request, held_by_account(ctx.services))
    if request.status is Status.GRANTED:
        return all(ok for _, ok in state)
    return not any(ok for _, ok in state) or request.status is Status.PENDING_APPROVAL


def _attempt(ctx: Ctx, step: Callable[[Ctx], None], what: str) -> str:
    """Run one step; returns how it ended, as the table shows it."""
    try:
        step(ctx)
    except MeshError as exc:
        ended = f"{type(exc).__name__}({exc.code})" if exc.code else type(exc).__name__
        return f"TICK RAISED {ended}" if what == "tick" else f"refused: {ended}"
    except Exception as exc:  # noqa: BLE001 - a crash of the product is a finding, not an end
        return f"CRASHED {type(exc).__name__}: {str(exc)[:60]}"
    return "returned"


def _manual(ctx: Ctx, row: Row) -> tuple[str, Callable[[Ctx], None]] | None:
    """The manual step the README documents for the state the request is in."""
    request = ctx.request()
    if request is None:
        return "submit again", row.act
    status = request.status
    if status is Status.PENDING_APPROVAL and row.act is _approve:
        return "approve again", _approve
    if status in (Status.FAILED, Status.GRANTING):
        return "retry", _retry
    if status in (Status.REVOKE_FAILED, Status.GRANTED) and "granted" not in row.goal:
        return "revoke again", _revoke
    return None


def run_cell(
    n: int, row: Row, fault: Fault, folder: Path, endpoint: str, injector: Injector, attempts: int
) -> CellResult:
    result = CellResult(row, fault)
    services = build_services(
        folder / f"cell-{n:03d}.db", endpoint, MESH_AWS_MAX_ATTEMPTS=str(attempts)
    )
    clock = Clock()
    services.marketplace.clock = clock
    services.outbox.clock = clock
    ctx = Ctx(services, clock, f"{310_000_000_000 + n:012d}", injector)
    if row.setup is not None:
        row.setup(ctx)
    hits = injector.hits
    with injector.armed(row.service, row.operation, fault):
        result.call = _attempt(ctx, row.act, "tick" if row.act is Ctx.tick else "step")
    result.hits = injector.hits - hits
    result.after_fault = _state(ctx, row)
    if _good(ctx, row):
        result.recovered_by = "not needed"
        result.after_recovery = result.after_fault
        return result
    clock.advance(seconds=services.settings.stale_granting + 60)
    ended = _attempt(ctx, Ctx.tick, "tick")
    if ended != "returned":
        result.notes.append(f"recovery tick: {ended}")
    if _good(ctx, row):
        result.recovered_by = "tick"
    else:
        manual = _manual(ctx, row)
        if manual is not None:
            ended = _attempt(ctx, manual[1], manual[0])
            if ended != "returned":
                result.notes.append(f"{manual[0]}: {ended}")
        if manual is not None and _good(ctx, row):
            result.recovered_by = f"manual: {manual[0]}"
        else:
            result.stuck = True
            result.recovered_by = "-"
    result.after_recovery = _state(ctx, row)
    return result


def fault_matrix(workdir: Path, *, attempts: int) -> tuple[int, int]:
    print(f"\n== B. AWS fault matrix: {len(ROWS)} operation paths x {len(FAULTS)} faults ==")
    began = time.monotonic()
    # Every cell builds its services afresh; share botocore's read-only data loader.
    botocore.session.create_loader = functools.cache(botocore.loaders.create_loader)  # type: ignore[assignment]
    injector = Injector()
    injector.install()
    collect = Collect()
    logger = logging.getLogger("mesh")
    logger.addHandler(collect)
    logger.propagate = False
    standin = start_standin(workdir / "faults")
    results = []
    try:
        print(
            f"stand-in {standin.endpoint}; MESH_AWS_MAX_ATTEMPTS={attempts} (botocore "
            "retries run against the injected fault); a fake clock passes the stale time"
        )
        n = 0
        for row in ROWS:
            group = []
            for fault in FAULTS:
                n += 1
                collect.records.clear()
                result = run_cell(
                    n, row, fault, workdir / "faults", standin.endpoint, injector, attempts
                )
                result.notes += [f"logged: {r}" for r in collect.records]
                group.append(result)
            _print_group(group)
            results += group
    finally:
        standin.stop()
        logger.removeHandler(collect)
        logger.propagate = True
    stuck = [r for r in results if r.stuck]
    never_hit = [r for r in results if r.hits == 0]
    raised = [r for r in results if "RAISED" in r.call or "CRASHED" in r.call or r.notes]
    applied = Counter(injector.applied_status)
    for error in injector.applied_errors:
        print(f"an 'after applied' call failed at the stand-in: {error}")
    print(
        f"\ncells: {len(results)}; stuck: {len(stuck)}; fault never reached the operation: "
        f"{len(never_hit)}; a tick raised, something crashed, or a manual step failed: "
        f"{len(raised)}; 'after applied' calls answered {dict(applied)} by the stand-in"
    )
    print(f"part B took {time.monotonic() - began:.1f} s")
    return len(stuck), len(results)


def _code(r: CellResult) -> str:
    if r.fault.kind == "error":
        return "{} ({})".format(*r.fault.code_for(r.row.service))
    names = {"refused": "EndpointConnectionError", "reset": "ConnectionClosedError"}
    return names.get(r.fault.kind, "ReadTimeoutError")


def _print_group(results: list[CellResult]) -> None:
    """One table per operation path; notes (what raised, what was logged) below it."""
    row = results[0].row
    print(f"\n{row.operation} ({row.service}) @ {row.path}")
    header = (
        "fault",
        "answer",
        "the call",
        "right after the fault",
        "after recovery",
        "recovered by",
        "stuck",
    )
    lines = [
        (
            r.fault.name,
            _code(r),
            r.call,
            r.after_fault,
            r.after_recovery,
            r.recovered_by,
            ("STUCK" if r.stuck else "no") + (" (fault never hit)" if r.hits == 0 else ""),
        )
        for r in results
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    for line in [header, *lines]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    for r in results:
        for note in r.notes:
            print(f"    {r.fault.name}: {note}")


# Main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200, help="kill cycles (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="approving processes at a time")
    parser.add_argument(
        "--fresh", action="store_true", help="a new interpreter per cycle (slower; no fork server)"
    )
    parser.add_argument("--part", choices=["a", "b", "all"], default="all")
    parser.add_argument("--seed", type=int, default=8, help="seed of the kill delays")
    parser.add_argument(
        "--aws-attempts", type=int, default=2, help="MESH_AWS_MAX_ATTEMPTS in the matrix"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    logging.getLogger("botocore").setLevel(logging.CRITICAL)
    logging.getLogger("mesh").setLevel(logging.ERROR)  # AWS failures are expected here
    workdir = Path(tempfile.mkdtemp(prefix="mesh-recovery-"))
    began = time.monotonic()
    summary: list[str] = []
    ok = True
    try:
        if args.part in ("a", "all"):
            figures = crash_recovery(
                workdir, cycles=args.cycles, workers=args.workers, seed=args.seed, fresh=args.fresh
            )
            summary += [
                f"not terminal after tick: {figures['not_terminal']}",
                f"mismatched with Lake Formation: {figures['mismatched']}",
            ]
            ok = ok and not any(figures.values())
        if args.part in ("b", "all"):
            stuck, cells = fault_matrix(workdir, attempts=args.aws_attempts)
            summary.append(f"fault cells stuck: {stuck} of {cells}")
            ok = ok and stuck == 0
    finally:
        if args.keep:
            print(f"(state kept in {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n== Summary ({time.monotonic() - began:.0f} s; targets: 0, 0, 0) ==")
    print("\n".join(summary))
    print("all targets met" if ok else "A TARGET WAS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
