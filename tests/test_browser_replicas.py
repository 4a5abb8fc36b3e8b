"""Two replicas on one PostgreSQL store, in a real browser (issue 11, several replicas).

Replica A and replica B are two ``streamlit run app.py`` processes on two ports with the same
settings: aws mode against one moto server, one ``MESH_DB=postgresql://...`` database, one
cookie key, link secret and audit key, one users file. Two tick loops (``python -m mesh tick``
run again and again, as cron would on two hosts) run beside them. A person signs in on one
replica and goes on on the other; a decision link made on one decides once on the other.

Both replicas listen on 127.0.0.1 and the browser reaches them as ``localhost``. A cookie
belongs to a host, not to a port (RFC 6265, 8.5), so the login cookie written on A's port is
sent to B's too: the browser sees one site, as it does behind a load balancer with one host
name. The balancer's sticky sessions keep a websocket on one replica; a new page load may land
on either, which is what opening the other port does here.

Everything asserted is what the pages show, except that the decision link is read from the
notification outbox and the decision is counted in the audit log, both in the shared database.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import boto3
import psycopg
import pytest
from playwright.sync_api import Browser, Cookie, Locator, Page, expect

from mesh.aws import ClientFactory
from mesh.demo import data
from mesh.settings import DEMO_USERS
from tests import pgsupport
from tests.browser_support import PROJECT, free_ports, fresh_page, stop, wait_until_up
from tests.conftest import REGION, reset_moto
from tests.support import AUDIT_KEY, COOKIE_KEY, LINK_SECRET, run_mesh
from tests.test_browser import COOKIE, request_access, settle, wait_until_idle
from tests.test_browser_journeys import (
    REQUEST_ID,
    expect_not_broken,
    read_request,
    sign_in,
    word,
)
from tests.test_browser_links import click_until, confirm_heading, follow

# A click lost to the login cookie's rerun is retried from scratch, as in the other browser
# tests: a retry gets fresh replicas and fresh people (see ``mesh``).
pytestmark = [pytest.mark.browser, pytest.mark.flaky(reruns=2, reruns_delay=1)]

UI_TIMEOUT_MS = 20_000
TICK_PAUSE_S = 2  # between one tick loop's passes (cron would wait a minute)
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


@dataclass(frozen=True, kw_only=True)
class Replica:
    """One app process (and, beside it, one tick loop)."""

    name: str
    url: str
    moto: str

    def standin_endpoint(self) -> str:  # browser_support.wait_until_up checks it answers
        return self.moto

    def at(self, path: str) -> str:
        return f"{self.url}{path}"

    def same_path(self, url: str) -> str:
        """``url`` (a link made for another replica's address) at this replica's address."""
        mine = urlsplit(self.url)
        return urlunsplit(urlsplit(url)._replace(scheme=mine.scheme, netloc=mine.netloc))


@dataclass(frozen=True, kw_only=True)
class Cluster:
    a: Replica
    b: Replica
    db: str  # the shared store's URL
    folder: Path  # logs of the app processes and the tick loops


@dataclass(frozen=True, kw_only=True)
class Mesh:
    """The cluster, with carol (a consumer) and sam (the Sales owner) signed in on A."""

    cluster: Cluster
    carol: Page
    sam: Page


# The cluster ------------------------------------------------------------------------------


def cluster_env(*, db: str, moto: str, base_url: str, folder: Path) -> dict[str, str]:
    """The settings every process of the cluster shares."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "AWS_"))}
    return {
        **env,
        "MESH_MODE": "aws",
        "MESH_DB": db,
        "MESH_USERS": str(DEMO_USERS),
        "MESH_COOKIE_KEY": COOKIE_KEY,
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
        # One anchor for the cluster, as on a disk both hosts mount.
        "MESH_AUDIT_ANCHOR": f"file:{folder / 'audit-anchor.json'}",
        # The address people use: the load balancer's, here replica A's.
        "MESH_BASE_URL": base_url,
        "AWS_ENDPOINT_URL": moto,
        **FAKE_CREDENTIALS,
        # uvicorn leaves a loopback peer alone (as mesh.demo.launcher.app_environment does).
        "FORWARDED_ALLOW_IPS": "",
    }


def mesh_cli(env: dict[str, str], *args: str) -> str:
    done = run_mesh(*args, env=env)
    assert done.returncode == 0, f"mesh {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def seed_moto(moto: str) -> None:
    """The demo mesh's catalog and the producers' topics, on a freshly reset moto server."""
    reset_moto(moto)
    with pytest.MonkeyPatch.context() as patch:  # a module's fixtures run before the test's
        for name, value in FAKE_CREDENTIALS.items():
            patch.setenv(name, value)
        data.seed(boto3.client("glue", region_name=REGION, endpoint_url=moto))
        data.seed_topics(ClientFactory(demo_endpoint=moto).client)


def start_app(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "streamlit", "run", str(PROJECT / "app.py")),
                *("--server.port", str(port), "--server.address", "127.0.0.1"),
                *("--server.headless", "true", "--browser.gatherUsageStats", "false"),
            ],
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


# Each pass's report and errors go to files of their own; ``passes`` gets "N EXIT_CODE".
TICK_LOOP = """
n=0
while :; do
  n=$((n + 1))
  "$PYTHON" -m mesh tick --json > "$DIR/tick-$n.json" 2> "$DIR/tick-$n.err"
  echo "$n $?" >> "$DIR/passes"
  sleep "$PAUSE"
done
"""


def start_tick_loop(env: dict[str, str], folder: Path) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    loop_env = {**env, "PYTHON": sys.executable, "DIR": str(folder), "PAUSE": str(TICK_PAUSE_S)}
    return subprocess.Popen(
        ["bash", "-c", TICK_LOOP],
        cwd=PROJECT,
        env=loop_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def tick_passes(folder: Path) -> list[tuple[int, int]]:
    """The passes a tick loop finished: (number, exit code)."""
    try:
        lines = (folder / "passes").read_text().split("\n")
    except FileNotFoundError:
        return []
    return [(int(n), int(code)) for n, code in (line.split() for line in lines if line)]


@contextmanager
def started_cluster(server_url: str, moto: str, folder: Path) -> Iterator[Cluster]:
    """A fresh database, `mesh init` and `mesh sync`, then two apps and two tick loops."""
    seed_moto(moto)
    port_a, port_b = free_ports(2)
    a = Replica(name="A", url=f"http://localhost:{port_a}", moto=moto)
    b = Replica(name="B", url=f"http://localhost:{port_b}", moto=moto)
    with pgsupport.temporary_database(server_url, prefix="replicas") as db, ExitStack() as stack:
        env = cluster_env(db=db, moto=moto, base_url=a.url, folder=folder)
        mesh_cli(env, "init")  # aws mode never makes its store by itself
        mesh_cli(env, "sync")  # pages read the catalog index; they never sync
        processes = []
        for replica, port in ((a, port_a), (b, port_b)):
            app = start_app(env, port, folder / f"app-{replica.name}.log")
            processes.append((app, replica))
            stack.callback(stop, app)
            stack.callback(stop, start_tick_loop(env, folder / f"tick-{replica.name}"))
        for app, replica in processes:
            wait_until_up(app, replica, folder / f"app-{replica.name}.log")
        yield Cluster(a=a, b=b, db=db, folder=folder)


@contextmanager
def person_on(
    browser: Browser, request: pytest.FixtureRequest, folder: Path, replica: Replica, name: str
) -> Iterator[Page]:
    """A browser context of this person's own, signed in on ``replica``."""
    with fresh_page(browser, request, folder / name, timeout_ms=UI_TIMEOUT_MS) as page:
        sign_in(page, replica, name)  # it reads .url only
        yield page


@contextmanager
def started_mesh(
    browser: Browser, request: pytest.FixtureRequest, server_url: str, moto: str, folder: Path
) -> Iterator[Mesh]:
    with started_cluster(server_url, moto, folder) as cluster, ExitStack() as people:
        carol = people.enter_context(person_on(browser, request, folder, cluster.a, "carol"))
        sam = people.enter_context(person_on(browser, request, folder, cluster.a, "sam"))
        yield Mesh(cluster=cluster, carol=carol, sam=sam)


@pytest.fixture(scope="module")
def shared_mesh(
    browser: Browser,
    request: pytest.FixtureRequest,
    pg_server_url: str,
    moto_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mesh]:
    folder = tmp_path_factory.mktemp("replicas")
    with started_mesh(browser, request, pg_server_url, moto_endpoint, folder) as mesh:
        yield mesh


@pytest.fixture
def mesh(
    shared_mesh: Mesh,
    browser: Browser,
    request: pytest.FixtureRequest,
    pg_server_url: str,
    moto_endpoint: str,
    tmp_path: Path,
) -> Iterator[Mesh]:
    """The shared cluster on a first try; on a retry a fresh cluster and fresh people (the
    same requests again would be refused as duplicates)."""
    if getattr(request.node, "execution_count", 1) <= 1:
        yield shared_mesh
        return
    with started_mesh(browser, request, pg_server_url, moto_endpoint, tmp_path) as fresh:
        yield fresh


# The shared store ---------------------------------------------------------------------------


def approve_link_sent_for(db: str, request_id: str) -> str:
    """The approve link in the owner's approval notification (its outbox row)."""
    deadline = time.monotonic() + 10
    with psycopg.connect(db) as conn:
        while True:
            rows = conn.execute(
                "SELECT body FROM notifications "
                "WHERE request_id = %s AND kind = 'approval_request'",
                [request_id],
            ).fetchall()
            conn.commit()
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the outbox row is written with the submission
    assert len(rows) == 1, f"expected one approval notification for {request_id}, got {rows}"
    approve = re.search(r"^Approve:\s*(\S+)\s*$", str(rows[0][0]), re.MULTILINE)
    assert approve, f"no approve link in:\n{rows[0][0]}"
    return approve.group(1)


def audit_actions(db: str, request_id: str) -> list[str]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT action FROM audit WHERE request_id = %s ORDER BY id", [request_id]
        ).fetchall()
    return [str(action) for (action,) in rows]


# Steps a person takes -----------------------------------------------------------------------


def signed_in_as(page: Page, username: str) -> Locator:
    return page.get_by_test_id("stSidebar").get_by_text(f"Signed in as {username}")


def open_on(page: Page, replica: Replica, path: str) -> None:
    """A page load on ``replica``: the login cookie signs in there, or the form shows."""
    page.goto(replica.at(path))
    wait_until_idle(page)


def submit_on(page: Page, replica: Replica, database: str, table: str, reason: str) -> str:
    """Ask for a table on ``replica``'s table page; the id of the request, which waits."""
    open_on(page, replica, f"/table?db={database}&table={table}")
    expect(page.get_by_role("heading", name=f"{database}.{table}", exact=True)).to_be_visible()
    settle(page)
    request_access(page, reason)
    outcome = page.get_by_test_id("stAlert").filter(has_text=f"{database}.{table}")
    expect(outcome).to_contain_text("waits for approval")
    found = REQUEST_ID.search(outcome.inner_text())
    assert found is not None, outcome.inner_text()
    return found.group(0)


def open_my_requests_on(page: Page, replica: Replica) -> None:
    open_on(page, replica, "/my-requests")
    expect(page.get_by_role("heading", name="My requests", exact=True)).to_be_visible()
    expect_not_broken(page)


def approve_on(owner: Page, replica: Replica, request_id: str, comment: str) -> Locator:
    """On ``replica``'s Approvals, open the request's card (unless it is the oldest, open
    already), comment, and approve it; the message the page shows about it."""
    open_on(owner, replica, "/approvals")
    expect(owner.get_by_role("heading", name="Pending approvals", exact=True)).to_be_visible()
    settle(owner)  # the login cookie's rerun can drop a click made before it
    card = owner.locator(f".st-key-pending-{request_id}")
    expect(card).to_contain_text("carol")
    comment_box = card.get_by_role("textbox", name=re.compile("^Comment"))
    if not comment_box.is_visible():  # not the oldest waiting: open its card first
        click_until(owner, card.get_by_role("button", name="Review and decide"), comment_box)
    comment_box.fill(comment)
    said = owner.get_by_test_id("stAlert").filter(has_text=request_id)
    click_until(owner, card.get_by_role("button", name="Approve", exact=True), said)
    return said


@contextmanager
def replayed(
    browser: Browser,
    request: pytest.FixtureRequest,
    folder: Path,
    replica: Replica,
    cookies: list[Cookie],
) -> Iterator[Page]:
    """A new browser given a copy of someone's cookies, after a page load on ``replica``."""
    with fresh_page(browser, request, folder, timeout_ms=UI_TIMEOUT_MS) as page:
        page.context.add_cookies(cookies)  # type: ignore[arg-type]  # a Cookie sets as it reads
        page.goto(replica.url)
        yield page


# Tests ------------------------------------------------------------------------------------


def test_signed_in_on_a_the_browser_is_signed_in_on_b_and_a_request_made_there_shows_on_a(
    mesh: Mesh, browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    a, b = mesh.cluster.a, mesh.cluster.b
    with fresh_page(browser, request, tmp_path, timeout_ms=UI_TIMEOUT_MS) as mia:
        # GIVEN mia (a consumer of one account) signed in on replica A
        sign_in(mia, a, "mia")
        # WHEN the same browser opens replica B (the cookie is the host's, whatever the port)
        open_on(mia, b, "/")
        # THEN B shows him signed in, and no sign-in form
        expect(signed_in_as(mia, "mia")).to_be_visible()
        expect(mia.get_by_role("button", name="Sign in")).to_have_count(0)
        expect_not_broken(mia)

        # WHEN he asks on B for a table with PII columns
        request_id = submit_on(
            mia, b, "sales_orders", "customers", "churn model, asked on replica B"
        )
        # THEN A's My requests shows it, waiting for its owner
        open_my_requests_on(mia, a)
        expect(signed_in_as(mia, "mia")).to_be_visible()
        read_request(mia, request_id, "pending|waiting", word("customers"))


def test_owner_approves_on_a_and_the_requester_reads_granted_on_b(mesh: Mesh) -> None:
    a, b, carol, sam = mesh.cluster.a, mesh.cluster.b, mesh.carol, mesh.sam
    comment = "approved on replica A"
    # GIVEN carol, signed in on A, asks on B for a table of sales_crm (PII as a whole)
    request_id = submit_on(carol, b, "sales_crm", "contacts", "campaign reach, replica B")

    # WHEN sam approves it on A's pending approvals
    said = approve_on(sam, a, request_id, comment)
    # THEN A says it is granted
    expect(said).to_contain_text("granted")
    expect_not_broken(sam)

    # THEN carol's My requests on B says granted, by sam, with his comment
    open_my_requests_on(carol, b)
    read_request(carol, request_id, word("granted"), word("sam"), re.escape(comment), timeout_s=10)


def test_a_decision_link_made_on_a_decides_once_on_b_and_is_used_on_a(mesh: Mesh) -> None:
    a, b, carol, sam = mesh.cluster.a, mesh.cluster.b, mesh.carol, mesh.sam
    # GIVEN carol's request made on A, and the approve link A's outbox sent to sam
    request_id = submit_on(carol, a, "sales_crm", "opportunities", "pipeline, asked on A")
    link = approve_link_sent_for(mesh.cluster.db, request_id)
    assert link.startswith(f"{a.url}/approvals?link="), link

    # WHEN sam opens it on replica B, and confirms there
    follow(sam, b.same_path(link))
    expect(confirm_heading(sam, "approve", request_id)).to_be_visible()
    success = sam.get_by_test_id("stAlertContentSuccess").filter(has_text=request_id)
    click_until(sam, sam.get_by_role("button", name="Confirm approve"), success)
    # THEN B says the access is granted
    expect(success).to_contain_text("granted")

    # WHEN he opens the same link on replica A
    follow(sam, link)
    # THEN A refuses it as used, and offers nothing to confirm
    expect(sam.get_by_test_id("stAlertContentError")).to_contain_text("already used")
    expect(sam.get_by_role("button", name=re.compile("^Confirm"))).to_have_count(0)
    # AND the request was approved and granted once
    actions = audit_actions(mesh.cluster.db, request_id)
    assert actions.count("approved") == 1, actions
    assert actions.count("grant_succeeded") == 1, actions


def test_signed_out_on_b_the_old_cookie_replayed_on_a_shows_the_sign_in_form(
    mesh: Mesh, browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    a, b = mesh.cluster.a, mesh.cluster.b
    with fresh_page(browser, request, tmp_path / "dan", timeout_ms=UI_TIMEOUT_MS) as dan:
        # GIVEN dan signed in on A and then on B, and a copy of his login cookie
        sign_in(dan, a, "dan")
        open_on(dan, b, "/my-requests")
        expect(signed_in_as(dan, "dan")).to_be_visible()
        stolen = [c for c in dan.context.cookies() if c["name"] == COOKIE]
        assert stolen, "no login cookie to copy"
        # AND the copy signs another browser in on A while his session is open
        with replayed(browser, request, tmp_path / "before", a, stolen) as before:
            expect(signed_in_as(before, "dan")).to_be_visible()

        # WHEN he signs out on B
        settle(dan)
        dan.get_by_test_id("stSidebar").get_by_role("button", name="Sign out").click()
        # THEN B shows the sign-in form
        expect(dan.get_by_role("button", name="Sign in")).to_be_visible()

    # WHEN another browser replays the old cookie on A
    with replayed(browser, request, tmp_path / "after", a, stolen) as after:
        # THEN A shows the sign-in form, and nobody is signed in
        expect(after.get_by_role("button", name="Sign in")).to_be_visible()
        wait_until_idle(after)
        expect(after.get_by_text("Signed in as")).to_have_count(0)
        expect_not_broken(after)


def test_both_tick_loops_ran_passes_on_the_shared_store_without_errors(mesh: Mesh) -> None:
    # GIVEN the cluster's two tick loops, run beside the journeys above
    # WHEN both have finished a few passes (they run every TICK_PAUSE_S seconds)
    folder = mesh.cluster.folder
    deadline = time.monotonic() + 60
    while min(len(tick_passes(folder / f"tick-{n}")) for n in "AB") < 2:
        assert time.monotonic() < deadline, "a tick loop finished fewer than 2 passes in 60 s"
        time.sleep(0.5)  # waiting on real processes
    # THEN every pass of each ended with exit code 0 (no error in its report)
    for name in "AB":
        loop = folder / f"tick-{name}"
        failed = [n for n, code in tick_passes(loop) if code != 0]
        assert not failed, "\n".join(
            f"tick {name} pass {n}: {(loop / f'tick-{n}.err').read_text()}" for n in failed
        )
