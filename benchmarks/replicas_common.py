"""What the replica scripts share: a PostgreSQL database, a moto server, and replica services.

``benchmarks/replicas_races.py``, ``replicas_submissions.py`` and ``replicas_kill.py``
(issue 11, section 2) each run several app processes ("replicas") against one PostgreSQL
database and one moto server on loopback. Each replica builds its services exactly as the
app and the CLI do (``mesh.services.build`` over ``load_settings``), in aws mode with
``MESH_DB=postgresql://...``; only the tables of Lake Formation and Glue are moto's.

The PostgreSQL server is a throwaway cluster (``scripts/pg start``) unless ``--pg-url``
names one; either way each run gets a database of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from benchmarks.standin_apart import standin_apart
from tests import pgsupport
from tests.support import moto_env

ROOT = Path(__file__).resolve().parent.parent
SALES = "111111111111"  # the demo's Sales domain: sam owns it; the races add sara and sol
REQUESTER = "ada"  # an admin may request for any account, so each request gets its own
# Approvers the demo's users file lacks: two more owners of Sales and two more admins, so that
# a race can pit different people (or the same person twice) against each other.
EXTRA_USERS = {"sara": "sam", "sol": "sam", "alan": "ada", "ava": "ada"}
PRELOAD = ["mesh.services", "mesh.cli", "boto3", "botocore", "psycopg", "psycopg_pool"]


def add_pg_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pg-url",
        help="superuser URL of a running PostgreSQL server (default: start a throwaway "
        "cluster with scripts/pg); a database is made on it for the run and dropped after",
    )
    parser.add_argument(
        "--aws-endpoint",
        help="a running moto server already seeded with the demo mesh, as the tests' `aws` "
        "fixture leaves it (default: start the demo stand-in in a child process)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (logs, users file)"
    )


def context() -> Any:
    """Processes forked from a server that has imported the app once (cheap, and clean: none
    inherits this process's clients, pools or threads)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


# PostgreSQL ------------------------------------------------------------------------------------


@contextmanager
def postgres(server_url: str | None, workdir: Path) -> Iterator[str]:
    """A fresh database's URL, on ``server_url`` or on a throwaway cluster; dropped after."""
    cluster: Path | None = None
    if server_url is None:
        # scripts/pg wants a short, empty folder the postgres user can enter
        cluster = Path(tempfile.mkdtemp(prefix="mesh-pg-", dir="/tmp"))
        started = subprocess.run(
            [str(ROOT / "scripts" / "pg"), "start", str(cluster)],
            capture_output=True,
            text=True,
            check=False,
        )
        if started.returncode != 0:
            shutil.rmtree(cluster, ignore_errors=True)
            raise RuntimeError(f"scripts/pg start failed: {started.stderr.strip()}")
        server_url = started.stdout.strip().splitlines()[-1]
    try:
        url = pgsupport.fresh_database(server_url, prefix="replicas")
        try:
            yield url
        finally:
            pgsupport.drop_database(url)
            pgsupport.close_admin_connections()
    finally:
        if cluster is not None:
            subprocess.run([str(ROOT / "scripts" / "pg"), "stop", str(cluster)], check=False)


# moto ------------------------------------------------------------------------------------------


@contextmanager
def moto_server() -> Iterator[str]:
    """The demo's patched moto server on loopback, its Glue seeded with the demo mesh."""
    with standin_apart(env=clean_env()) as endpoint:
        yield endpoint


@contextmanager
def aws(endpoint: str | None) -> Iterator[str]:
    """``endpoint`` when given (left running), else a moto server of this run's own."""
    if endpoint is not None:
        yield endpoint
        return
    with moto_server() as started:
        yield started


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "AWS_"))}
    env.update(extra)
    return env


# The mesh the replicas share ----------------------------------------------------------------


@dataclass(frozen=True)
class Mesh:
    """Everything a replica needs to build its services: the settings' environment."""

    db_url: str
    endpoint: str
    workdir: Path
    env: dict[str, str]

    def replica_env(self, **extra: str) -> dict[str, str]:
        return {**self.env, **extra}


def users_file(workdir: Path) -> Path:
    """The demo's users file plus EXTRA_USERS (each a copy of the user it names)."""
    from mesh.settings import DEMO_USERS

    users = yaml.safe_load(DEMO_USERS.read_text(encoding="utf-8"))
    people = users["credentials"]["usernames"]
    for name, like in EXTRA_USERS.items():
        people[name] = {
            **people[like],
            "first_name": name.title(),
            "email": f"{name}@replicas.example.com",
        }
    path = workdir / "users.yaml"
    path.write_text(yaml.safe_dump(users, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def mesh(args: argparse.Namespace, prefix: str) -> Iterator[Mesh]:
    """PostgreSQL (migrated as `mesh init` does) and moto, for the length of a run."""
    workdir = Path(tempfile.mkdtemp(prefix=f"mesh-{prefix}-"))
    try:
        with postgres(args.pg_url, workdir) as db_url, aws(args.aws_endpoint) as endpoint:
            env = {
                "MESH_MODE": "aws",
                "MESH_DB": db_url,
                "MESH_USERS": str(users_file(workdir)),
                "MESH_AUDIT_KEY": secrets.token_urlsafe(32),
                "MESH_LINK_SECRET": secrets.token_urlsafe(32),
                "MESH_COOKIE_KEY": secrets.token_urlsafe(32),
                # The races count decisions and grants; notifications would add SNS calls to
                # topics the stand-in lacks (the outbox still records each one).
                "MESH_NOTIFY": "off",
                "MESH_AUDIT_ANCHOR": "off",
                **moto_env(endpoint),
            }
            from mesh.store import PgStore

            store = PgStore(db_url, audit_key=env["MESH_AUDIT_KEY"])
            store.migrate(create=True)  # as `mesh init` makes it
            store.close()
            yield Mesh(db_url=db_url, endpoint=endpoint, workdir=workdir, env=env)
    finally:
        if getattr(args, "keep", False):
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def build_replica(env: dict[str, str]) -> Any:
    """This process's services, built from ``env`` as the app builds them."""
    os.environ.update(env)  # boto3 reads AWS_ENDPOINT_URL and the credentials from here
    from mesh.services import build
    from mesh.settings import load_settings

    return build(load_settings(env, {}), by="replica")


def sql(db_url: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of one query, read straight from the database (not through the app)."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        return list(conn.execute(query, list(params)).fetchall())


def table_scopes(services: Any, *, owner_account: str | None = None) -> list[tuple[str, str]]:
    """(database, table) of every demo table, or of one owner's one-step PII tables."""
    from mesh.demo import data

    found = []
    for name, (_, params, tables) in data.DATABASES.items():
        if not params.get("data_owner"):
            continue
        if owner_account is not None and params.get("data_owner") != owner_account:
            continue
        for table in tables:
            if owner_account is None:
                found.append((name, table))
                continue
            verdict = services.marketplace.explain(
                database=name, table=table, account="100000000000"
            )
            if verdict.needs_approval and len(verdict.steps) == 1:
                found.append((name, table))
    return found


def account(n: int) -> str:
    return f"{n:012d}"


def first_account(digit: int) -> int:
    """The first consumer account of a run: ``digit`` then a random block of a million, so
    that runs against one moto server (``--aws-endpoint``) never share an account."""
    return digit * 10**11 + secrets.randbelow(10**5) * 10**6


class GrantCalls:
    """Lake Formation grants this process sends, as (account, resource key) -> calls."""

    def __init__(self, services: Any) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()
        events = services.lakeformation._lf.meta.events
        events.register("before-parameter-build.lakeformation", self._count)

    def _count(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        from mesh.policy import resource_key

        if model.name == "GrantPermissions":
            entries = [params]
        elif model.name == "BatchGrantPermissions":
            entries = list(params.get("Entries", []))
        else:
            return
        for entry in entries:
            who = entry.get("Principal", {}).get("DataLakePrincipalIdentifier", "")
            self.seen[(who, resource_key(entry["Resource"]))] += 1


def held(services: Any) -> Counter[tuple[str, str]]:
    """Lake Formation's entries, as (account, resource key) -> how many entries."""
    from mesh.policy import resource_key

    found: Counter[tuple[str, str]] = Counter()
    for entry in services.lakeformation.list_permissions():
        who = entry.get("Principal", {}).get("DataLakePrincipalIdentifier", "")
        found[(who, resource_key(entry["Resource"]))] += 1
    return found


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def millis(values: Sequence[float]) -> str:
    """p50/p95 of seconds, in milliseconds."""
    return f"{percentile(values, 50) * 1000:.0f}/{percentile(values, 95) * 1000:.0f} ms"


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


def figure(name: str, value: object) -> None:
    """One printed figure, ``name: value`` (tests/test_replicas_scripts.py reads them)."""
    print(f"{name}: {value}", flush=True)


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def chain_verifies(services: Any) -> tuple[bool, int, list[str]]:
    """Whether the whole audit chain verifies: (ok, rows, problems)."""
    from mesh import auditlog

    found = auditlog.verify(services.marketplace.store)
    return found.ok, found.rows, list(found.problems)


def collect(results: Any, processes: Sequence[Any], *, timeout: float) -> list[dict[str, Any]]:
    """One report from each process; a process that dies without one (a crash, the OOM
    killer) is reported as an error at once instead of after the whole timeout."""
    import queue

    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(reports) < len(processes):
        try:
            reports.append(results.get(timeout=1))
            continue
        except queue.Empty:
            pass
        dead = [p for p in processes if p.exitcode not in (None, 0)]
        if dead or time.monotonic() > deadline:
            for p in processes:
                if p.is_alive():
                    p.kill()
            why = f"exit {dead[0].exitcode}" if dead else f"no report in {timeout:g} s"
            reports.append({"error": f"a replica process ended without its report ({why})"})
            break
    return reports


def wait_for(condition: Any, *, timeout: float, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return bool(condition())
