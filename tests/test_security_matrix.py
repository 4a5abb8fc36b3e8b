"""Who may do what: the authorisation truth table, every role x action x page.

One explicit table below says who may do what; it is written from the README (demo users,
roles and pages), never derived from the code under test. Each use case is called as a page
or the CLI calls it, with a user of the demo users file:

- carol: the requester (a consumer of 444455556666);
- sam: an owner of the producer whose product carol asks for (Sales, 111111111111);
- hank: an owner of another producer (People), so a non-owner of carol's product;
- priya: no role, only the approver group `privacy-office`, which the built-in policy does
  not use (so with it she is a user with no role); the two-step policy's step 2 is hers;
- ada: an admin;
- nobody: a name that is not in the users file.

A refusal must be a domain error (``Forbidden``) that changes nothing: no request, approval
or report written, no Lake Formation grant made or removed (read from moto), no audit row
that claims an action happened. A read the user may not make lists nothing of the request.

Every page is opened for every role through navigation, as tests/test_pages.py does: a page
not registered for a role cannot be reached, and the same page script run directly (as
Streamlit runs a pages/ file on its own) refuses without showing data.

Every case records what it observed in a module-scoped recorder; when the module's cases
have run (all of them, or any subset: one test, a -k selection, a split run), the recorder
prints the summary (cases, allowed-when-should-deny, denied-when-should-allow) and fails
the run if anything was allowed that should be denied, or refused that should be allowed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from streamlit.testing.v1 import AppTest

from mesh import cli
from mesh.errors import AwsFailure, Forbidden, MeshError
from mesh.links import LinkAction
from mesh.metrics import Period
from mesh.models import GrantSpec, Status, User
from mesh.services import Services, activate_policy, build
from mesh.settings import load_settings
from mesh.store import AuditFilters
from tests.conftest import REGION, dumps
from tests.support import (
    APP,
    COOKIE_KEY,
    Outcome,
    assert_one_sentence_on_stderr,
    sign_in,
    texts,
)

PROJECT = Path(__file__).resolve().parent.parent
TWO_STEP = PROJECT / "examples" / "policies" / "two-step-pii.yaml"
CAROL = "444455556666"  # carol's consumer account
PARTNER = "777788889999"  # dan's account: someone else's for everyone but dan and admins
USERS = ("carol", "sam", "hank", "priya", "ada", "nobody")
SIGNED_IN = ("carol", "sam", "hank", "priya", "ada")  # nobody cannot sign in

# What each case observed, for the summary: (case, should be allowed, observed).
Results = list[tuple[str, bool, str]]


# The truth table: use cases ------------------------------------------------------------------

ALLOW: dict[str, set[str]] = {
    # requesting: for one's own consumer account (444455556666 is carol's); admins for any
    "submit for own account": {"carol", "ada"},
    # ... and for someone else's account (777788889999 is dan's)
    "submit for someone else's account": {"ada"},
    # deciding carol's pending request for sales_orders.customers (PII, Sales owns it):
    # its owner or an admin; never the requester herself, another owner, or a bystander
    "approve": {"sam", "ada"},
    "deny": {"sam", "ada"},
    "bulk approve": {"sam", "ada"},
    "bulk deny": {"sam", "ada"},
    "open decision link": {"sam", "ada"},
    "confirm decision link": {"sam", "ada"},
    # withdrawing: only the requester cancels her own pending request
    "cancel": {"carol"},
    # ending and mending access: the owner or an admin revokes; retry is also the requester's
    "revoke": {"sam", "ada"},
    "retry": {"carol", "sam", "ada"},
    # one request and its Lake Formation grants: the requester, its owner, an admin
    "see a request": {"carol", "sam", "ada"},
    "see a request's grants": {"carol", "sam", "ada"},
    # the approvals page's lists: only those who may act on the request see it there
    "queue lists it": {"sam", "ada"},
    "granted list lists it": {"sam", "ada"},
    "failed list lists it": {"sam", "ada"},
    # the requester's own notices: nobody marks someone else's decisions as seen
    "mark notices seen": {"carol"},
    # administration: admins only
    "reconcile": {"ada"},
    "reconcile --fix": {"ada"},
    "audit read": {"ada"},
    "audit filters": {"ada"},
    "audit CSV export": {"ada"},
    "policy activate": {"ada"},
    "sync": {"ada"},
    # what the admin pages read: the outbox (live decision links), the drift report, the
    # audit chain's last verification
    "notification log": {"ada"},
    "notification counts": {"ada"},
    "drift report": {"ada"},
    "audit chain status": {"ada"},
    # the dashboard: owners, approvers and admins have one; it counts carol's pending
    # request only for its owner (sam) and admins (hank and priya get one without it)
    "dashboard counts it": {"sam", "ada"},
}
# The two-step policy (owner, then privacy-office; admins_approve: false): step 2, after
# sam approved step 1, is approved by priya (her group) only; an admin may still deny, as
# a way out of a stuck request; sam already filled a place, and carol is the requester.
ALLOW_TWO_STEP: dict[str, set[str]] = {
    "approve step 2": {"priya"},
    "deny step 2": {"priya", "ada"},
}

# Holes whose fix belongs to a file another helper owns: case -> reason (xfail, strict).
HOLES: dict[tuple[str, str], str] = {}


def table(allow: dict[str, set[str]]) -> list[Any]:
    rows = []
    for action, allowed in allow.items():
        for user in USERS:
            marks = []
            if (action, user) in HOLES:
                marks.append(pytest.mark.xfail(strict=True, reason=HOLES[action, user]))
            rows.append(
                pytest.param(action, user, user in allowed, marks=marks, id=f"{action}-{user}")
            )
    return rows


# Fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_env(module_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """conftest's aws-mode settings for this module, with notifications off."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MESH_NOTIFY", "off")
        yield {**module_env, "MESH_NOTIFY": "off"}


def lake_formation(endpoint: str) -> Any:
    return boto3.client("lakeformation", region_name=REGION, endpoint_url=endpoint)


def clear_lake_formation(endpoint: str) -> None:
    """Revoke everything moto's Lake Formation holds, so each case starts with no grant."""
    lf = lake_formation(endpoint)
    for entry in lf.list_permissions()["PrincipalResourcePermissions"]:
        lf.revoke_permissions(
            Principal=entry["Principal"],
            Resource=entry["Resource"],
            Permissions=entry["Permissions"],
            PermissionsWithGrantOption=entry.get("PermissionsWithGrantOption", []),
        )


def mesh_with(
    env: dict[str, str],
    path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    policy: Path | None = None,
) -> Services:
    """The services as the app builds them, over a fresh store and an empty Lake Formation;
    the environment is set to the same settings (the app and boto3 read it)."""
    clear_lake_formation(env["AWS_ENDPOINT_URL"])
    shutil.copy(env["MESH_DB"], path)  # already migrated, and never written to
    settings = {**env, "MESH_DB": str(path)}
    if policy is not None:
        settings["MESH_POLICY"] = str(policy)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return build(load_settings(settings, {}))


@pytest.fixture
def mesh(
    seeded: str, module_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Services:
    return mesh_with(module_env, tmp_path / "mesh.db", monkeypatch)


@pytest.fixture
def two_step(
    seeded: str, module_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Services:
    return mesh_with(module_env, tmp_path / "mesh.db", monkeypatch, policy=TWO_STEP)


# What a refusal must leave alone -------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Everything an action could change: requests, approvals, links, reports, policy,
    catalog sync and Lake Formation (read from moto itself), and the audit log's length."""

    requests: str
    approvals: str
    reports: str
    policy: str
    sync: str
    lake_formation: str
    audit_rows: int


def snapshot(mesh: Services) -> Snapshot:
    store = mesh.marketplace.store
    requests = store.requests()
    entries = lake_formation(endpoint_of(mesh)).list_permissions()
    in_force = store.policy_in_force()
    return Snapshot(
        requests=dumps([r.to_json() for r in requests]),
        approvals=dumps({r.id: [a.username for a in store.approvals(r.id)] for r in requests}),
        reports=dumps(store.last_report()),
        policy=in_force.fingerprint if in_force else "",
        sync=repr(mesh.index.last_sync()),
        lake_formation=dumps(sorted(dumps(e) for e in entries["PrincipalResourcePermissions"])),
        audit_rows=len(store.audit()),
    )


def refusal_rows_only(mesh: Services, before: Snapshot) -> list[str]:
    """Audit rows written since ``before`` that are not records of a refusal."""
    rows = mesh.marketplace.store.audit()[before.audit_rows :]
    return [r.action for r in rows if "refus" not in r.action and "forbid" not in r.action]


def changes(before: Snapshot, after: Snapshot, mesh: Services) -> list[str]:
    changed = [
        name
        for name in ("requests", "approvals", "reports", "policy", "sync", "lake_formation")
        if getattr(before, name) != getattr(after, name)
    ]
    claimed = refusal_rows_only(mesh, before)
    if claimed:
        changed.append(f"audit rows {claimed}")
    return changed


# Preparing what each action acts on ----------------------------------------------------------


def endpoint_of(mesh: Services) -> str:
    """The moto server the services talk to (mesh_with set the environment to it)."""
    return os.environ["AWS_ENDPOINT_URL"]


def pending(mesh: Services) -> str:
    """carol's request for sales_orders.customers (PII columns): waits for Sales (sam)."""
    request = mesh.marketplace.submit(
        "carol",
        database="sales_orders",
        table="customers",
        account=CAROL,
        reason="churn model for the retention team",
    )
    assert request.status is Status.PENDING_APPROVAL
    return request.id


def granted(mesh: Services) -> str:
    """carol's request for sales_orders.orders (no PII): granted at once."""
    request = mesh.marketplace.submit(
        "carol", database="sales_orders", table="orders", account=CAROL, reason="order volumes"
    )
    assert request.status is Status.GRANTED
    return request.id


class RefusingLakeFormation:
    """Lake Formation that refuses every grant, to leave a request failed."""

    def grant(self, spec: GrantSpec) -> dict[str, Any]:
        raise AwsFailure("Insufficient Lake Formation permission.", code="AccessDeniedException")


def failed(mesh: Services) -> str:
    """carol's request for sales_orders.order_lines, failed at its grant."""
    market = mesh.marketplace
    real, market.grants = market.grants, RefusingLakeFormation()  # type: ignore[assignment]
    try:
        request = market.submit(
            "carol",
            database="sales_orders",
            table="order_lines",
            account=CAROL,
            reason="basket analysis",
        )
    finally:
        market.grants = real
    assert request.status is Status.FAILED
    return request.id


def denied(mesh: Services) -> str:
    """carol's pending request, denied by sam: a decision she has not seen yet."""
    request_id = pending(mesh)
    decided = mesh.marketplace.deny(request_id, "sam", comment="not for churn models")
    assert not decided.decision_seen
    return request_id


def missing_grant(mesh: Services) -> str:
    """carol's granted request whose Lake Formation grant was removed by hand since."""
    request_id = granted(mesh)
    clear_lake_formation(endpoint_of(mesh))
    return request_id


# Calling the use cases as the pages and the CLI call them ------------------------------------


def status(mesh: Services, request_id: str) -> Status:
    request = mesh.marketplace.store.get(request_id)
    assert request is not None
    return request.status


def bulk(mesh: Services, user: str, request_id: str, verb: str) -> Any:
    """decide_many as the Approvals bar calls it; a refusal comes back per request."""
    [outcome] = mesh.marketplace.decide_many(
        [request_id], user, verb=verb, comment="decided in bulk"
    )
    if outcome.exit_code == Forbidden.exit_code:
        raise Forbidden(outcome.error or "refused")
    return outcome


def reconcile(mesh: Services, user: str, *, fix: bool) -> Any:
    """Lifecycle.reconcile for the signed-in user, as the drift page passes ctx.user (a name
    the users file no longer knows comes as a bare User)."""
    acting = mesh.users.get(user) or User(username=user)
    return mesh.lifecycle.reconcile(acting, fix=fix)


def sync(mesh: Services, user: str) -> Any:
    """The admins' Sync now, through the use case that checks the role."""
    return mesh.lifecycle.sync_catalog(user)


def activate(mesh: Services, user: str) -> Any:
    """`mesh policy activate FILE --as USER` for the two-step policy."""
    chosen = replace(mesh.settings, policy_path=TWO_STEP)
    return activate_policy(chosen, by=f"{user} (mesh policy activate)", user=user)


def link(mesh: Services, request_id: str) -> str:
    assert mesh.marketplace.links is not None
    return mesh.marketplace.links.token(request_id, LinkAction.APPROVE)


def listed(items: Any, request_id: str) -> bool:
    ids = [getattr(i, "request", i).id for i in items]
    return request_id in ids


@dataclass(frozen=True)
class Case:
    """An action: what it acts on, the call, and whether the allowed effect happened.

    ``read``: a read whose refusal may also be an empty answer (it lists nothing of it).
    """

    prepare: Callable[[Services], str]
    act: Callable[[Services, str, str], Any]
    done: Callable[[Services, str, Any], bool]
    read: bool = False


M = Services  # shorter lambdas below

CASES: dict[str, Case] = {
    "submit for own account": Case(
        lambda m: "",
        lambda m, u, _: m.marketplace.submit(
            u, database="sales_orders", table="orders", account=CAROL, reason="order volumes"
        ),
        lambda m, _, r: r.status is Status.GRANTED,
    ),
    "submit for someone else's account": Case(
        lambda m: "",
        lambda m, u, _: m.marketplace.submit(
            u, database="sales_orders", table="orders", account=PARTNER, reason="order volumes"
        ),
        lambda m, _, r: r.status is Status.GRANTED,
    ),
    "approve": Case(
        pending,
        lambda m, u, r: m.marketplace.approve(r, u, comment="fine"),
        lambda m, r, _: status(m, r) is Status.GRANTED,
    ),
    "deny": Case(
        pending,
        lambda m, u, r: m.marketplace.deny(r, u, comment="no"),
        lambda m, r, _: status(m, r) is Status.DENIED,
    ),
    "bulk approve": Case(
        pending,
        lambda m, u, r: bulk(m, u, r, "approve"),
        lambda m, r, _: status(m, r) is Status.GRANTED,
    ),
    "bulk deny": Case(
        pending,
        lambda m, u, r: bulk(m, u, r, "deny"),
        lambda m, r, _: status(m, r) is Status.DENIED,
    ),
    "open decision link": Case(
        pending,
        lambda m, u, r: m.marketplace.open_link(link(m, r), u),
        lambda m, r, opened: opened[1].id == r,
    ),
    "confirm decision link": Case(
        pending,
        lambda m, u, r: m.marketplace.decide_by_link(link(m, r), u, action="approve"),
        lambda m, r, _: status(m, r) is Status.GRANTED,
    ),
    "cancel": Case(
        pending,
        lambda m, u, r: m.marketplace.cancel(r, u),
        lambda m, r, _: status(m, r) is Status.CANCELLED,
    ),
    "revoke": Case(
        granted,
        lambda m, u, r: m.lifecycle.revoke(r, u, comment="no longer needed"),
        lambda m, r, _: status(m, r) is Status.REVOKED,
    ),
    "retry": Case(
        failed,
        lambda m, u, r: m.marketplace.retry(r, u),
        lambda m, r, _: status(m, r) is Status.GRANTED,
    ),
    "see a request": Case(
        pending,
        lambda m, u, r: m.marketplace.request_for(r, u),
        lambda m, r, found: found.id == r,
    ),
    "see a request's grants": Case(
        granted,
        lambda m, u, r: m.marketplace.lake_formation_view(r, u),
        lambda m, r, found: bool(found),
    ),
    "queue lists it": Case(
        pending,
        lambda m, u, r: m.marketplace.pending_page(u)[0],
        lambda m, r, items: listed(items, r),
        read=True,
    ),
    "granted list lists it": Case(
        granted,
        lambda m, u, r: m.marketplace.revocable_page(u)[0],
        lambda m, r, items: listed(items, r),
        read=True,
    ),
    "failed list lists it": Case(
        failed,
        lambda m, u, r: m.marketplace.failed_for(u),
        lambda m, r, items: listed(items, r),
        read=True,
    ),
    "mark notices seen": Case(
        denied,
        lambda m, u, r: m.marketplace.mark_seen(u, [r]),
        lambda m, r, _: bool(getattr(m.marketplace.store.get(r), "decision_seen", False)),
    ),
    "reconcile": Case(
        missing_grant,
        lambda m, u, r: reconcile(m, u, fix=False),
        lambda m, r, report: [i["request_id"] for i in report["missing"]] == [r],
    ),
    "reconcile --fix": Case(
        missing_grant,
        lambda m, u, r: reconcile(m, u, fix=True),
        lambda m, r, report: (
            [f["fixed"] for f in report["fixed"]] == [True]
            and bool(
                lake_formation(endpoint_of(m)).list_permissions()["PrincipalResourcePermissions"]
            )
        ),
    ),
    "audit read": Case(
        pending,
        lambda m, u, r: m.marketplace.audit_page_for(u, AuditFilters())[0],
        lambda m, r, rows: r in {e.request_id for e in rows},
        read=True,
    ),
    "audit filters": Case(
        pending,
        lambda m, u, r: m.marketplace.audit_choices_for(u),
        lambda m, r, choices: "carol" in choices[0],
        read=True,
    ),
    "audit CSV export": Case(
        pending,
        lambda m, u, r: list(m.marketplace.audit_export_for(u, AuditFilters())),
        lambda m, r, rows: any(r in str(row) for row in rows),
        read=True,
    ),
    "policy activate": Case(
        lambda m: "",
        lambda m, u, _: activate(m, u),
        lambda m, _, record: str(record.source).endswith("two-step-pii.yaml"),
    ),
    "sync": Case(
        lambda m: "",
        lambda m, u, _: sync(m, u),
        lambda m, _, done: done.error is None and m.index.last_sync() is not None,
    ),
    "notification log": Case(
        pending,
        lambda m, u, r: m.marketplace.notifications_for(u),
        lambda m, r, rows: isinstance(rows, list),
        read=True,
    ),
    "notification counts": Case(
        pending,
        lambda m, u, r: m.marketplace.notification_counts_for(u),
        lambda m, r, counts: isinstance(counts, dict),
        read=True,
    ),
    "drift report": Case(
        lambda m: str(m.lifecycle.reconcile(fix=False)["checked_at"]),
        lambda m, u, r: m.marketplace.last_report_for(u),
        lambda m, r, report: report is not None and report["checked_at"] == r,
        read=True,
    ),
    "audit chain status": Case(
        pending,
        lambda m, u, r: m.marketplace.audit_chain_for(u),
        lambda m, r, status: status.head_id > 0,
        read=True,
    ),
    "dashboard counts it": Case(
        pending,
        lambda m, u, r: m.marketplace.dashboard_for(u, period=Period.DAY, days=None),
        lambda m, r, board: board.headline.pending == 1,
        read=True,
    ),
}


def step_two(mesh: Services) -> str:
    """carol's two-step request (sales_orders.customers), step 1 approved by sam."""
    request = mesh.marketplace.submit(
        "carol",
        database="sales_orders",
        table="customers",
        account=CAROL,
        reason="churn model for the retention team, reviewed quarterly",
        duration=timedelta(days=30),
    )
    after = mesh.marketplace.approve(request.id, "sam", comment="step one")
    assert after.status is Status.PENDING_APPROVAL and after.step == 1
    return request.id


TWO_STEP_CASES: dict[str, Case] = {
    "approve step 2": Case(
        step_two,
        lambda m, u, r: m.marketplace.approve(r, u, comment="privacy ok"),
        lambda m, r, _: status(m, r) is Status.GRANTED,
    ),
    "deny step 2": Case(
        step_two,
        lambda m, u, r: m.marketplace.deny(r, u, comment="privacy says no"),
        lambda m, r, _: status(m, r) is Status.DENIED,
    ),
}


def observe(mesh: Services, case: Case, user: str) -> tuple[str, list[str]]:
    """What happened: allowed, refused (Forbidden), silent (nothing and no error), or the
    other error's class; and what changed."""
    target = case.prepare(mesh)
    before = snapshot(mesh)
    try:
        result = case.act(mesh, user, target)
    except Forbidden:
        observed = "refused"
    except MeshError as exc:
        observed = type(exc).__name__
    else:
        if case.done(mesh, target, result):
            observed = "allowed"
        else:
            observed = "refused" if case.read else "silent"
    changed = changes(before, snapshot(mesh), mesh)
    if observed == "refused" and changed:
        observed = "refused but changed " + ", ".join(changed)
    return observed, changed


def check(
    results: Results, name: str, mesh: Services, case: Case, user: str, allowed: bool
) -> None:
    observed, changed = observe(mesh, case, user)
    results.append((name, allowed, observed))
    if allowed:
        assert observed == "allowed", f"{user} should be allowed to {name}, got {observed}"
    else:
        assert observed == "refused", f"{user} should be refused {name}, got {observed}"
        assert not changed


# The use cases, role by role -----------------------------------------------------------------


@pytest.mark.parametrize(("action", "user", "allowed"), table(ALLOW))
def test_use_case_allows_exactly_the_roles_of_the_truth_table(
    matrix: Results, mesh: Services, action: str, user: str, allowed: bool
) -> None:
    # GIVEN what the action acts on (made by carol, decided by sam where needed)
    # WHEN the user does it, as a page or the CLI calls the use case
    # THEN it is done when the table allows it, else refused with nothing changed
    check(matrix, f"{action}-{user}", mesh, CASES[action], user, allowed)


@pytest.mark.parametrize(("action", "user", "allowed"), table(ALLOW_TWO_STEP))
def test_two_step_second_step_is_decided_by_its_group_and_denied_by_admins(
    matrix: Results, two_step: Services, action: str, user: str, allowed: bool
) -> None:
    # GIVEN the two-step policy and carol's request at step 2 (privacy-office)
    # WHEN the user decides it
    # THEN only a member of the step's group approves it; an admin may only deny it
    check(matrix, f"{action}-{user}", two_step, TWO_STEP_CASES[action], user, allowed)


@pytest.mark.parametrize(("user", "code"), [("carol", Forbidden.exit_code), ("ada", 0)])
def test_cli_policy_activate_checks_the_role_of_its_as_user(
    mesh: Services, capsys: pytest.CaptureFixture[str], user: str, code: int
) -> None:
    # GIVEN the built-in policy in force
    before = snapshot(mesh)
    # WHEN `mesh policy activate FILE --as USER` names a consumer, or an admin
    exit_code = cli.main(["policy", "activate", str(TWO_STEP), "--as", user])
    outcome = Outcome(exit_code, *capsys.readouterr())
    # THEN the consumer is refused in one sentence and nothing changes; the admin switches
    assert outcome.code == code, outcome.err
    if code:
        assert_one_sentence_on_stderr(outcome)
        assert changes(before, snapshot(mesh), mesh) == []
    else:
        assert "two-step-pii.yaml" in outcome.out


# The truth table: pages ----------------------------------------------------------------------

EVERYONE = set(SIGNED_IN)
APPROVERS = {"sam", "hank", "priya", "ada"}  # owners, admins and approver-group members
PAGES: dict[str, set[str]] = {
    # the catalog and one's own requests: everyone signed in
    "databases": EVERYONE,
    "database": EVERYONE,
    "table": EVERYONE,
    "my_requests": EVERYONE,
    # deciding: owners, admins and approver groups
    "approvals": APPROVERS,
    "dashboard": APPROVERS,
    # administration: admins only
    "audit": {"ada"},
    "drift": {"ada"},
    "notifications": {"ada"},
}
TITLES = {
    "databases": "Data products",
    "database": "sales_orders",
    "table": "sales_orders.orders",
    "my_requests": "My requests",
    "approvals": "Pending approvals",
    "dashboard": "Dashboard",
    "audit": "Audit log",
    "drift": "Lake Formation drift",
    "notifications": "Notifications",
}
# Page holes whose fix belongs to a page's owner: (page, user) -> reason (xfail, strict).
PAGE_HOLES: dict[tuple[str, str], str] = {}


@pytest.fixture
def web(
    seeded: str, module_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Services]:
    """The web app's settings over a fresh store holding data a refusing page must not show:
    carol's pending, granted and failed requests, a reconcile report, a synced catalog."""
    mesh = mesh_with(module_env, tmp_path / "mesh.db", monkeypatch)
    assert mesh.sync.run(actor="test").error is None
    pending(mesh)
    granted(mesh)
    failed(mesh)
    mesh.lifecycle.reconcile(fix=False)
    monkeypatch.setenv("MESH_COOKIE_KEY", COOKIE_KEY)
    yield mesh


def page_file(name: str) -> str:
    return f"pages/{name}.py"


def open_page(at: AppTest, name: str) -> AppTest:
    at.query_params = {"db": "sales_orders", "table": "orders"}  # the detail pages' scope
    return at.switch_page(page_file(name)).run()


def shows_data(at: AppTest, mesh: Services) -> list[str]:
    """What a refusing page must not show: tables, metrics, charts, downloads, decision
    buttons, or any request id, requester or account."""
    shown = []
    for kind in ("dataframe", "table", "metric", "vega_lite_chart", "download_button"):
        if list(at.get(kind)):
            shown.append(kind)
    if [b for b in at.button if b.label in ("Approve", "Deny", "Revoke", "Retry", "Cancel")]:
        shown.append("decision buttons")
    words = texts(at.markdown) + texts(at.caption) + [t.value for t in at.text]
    secrets = [r.id for r in mesh.marketplace.store.requests()] + [CAROL]
    shown += [s for s in secrets if any(s in w for w in words)]
    return shown


@pytest.mark.parametrize("user", SIGNED_IN)
def test_navigation_reaches_exactly_the_pages_of_the_truth_table(
    matrix: Results, web: Services, running_server: None, user: str
) -> None:
    # GIVEN the user signed in through the login form
    at = AppTest.from_file(APP, default_timeout=30)
    sign_in(at, user)
    wrong = []
    for name, allowed in PAGES.items():
        # WHEN they open each page through navigation
        try:
            open_page(at, name)
        except ValueError as exc:
            assert "Could not find a navigation page" in str(exc)
            observed = "refused"
        else:
            ok = not at.exception and texts(at.title)[:1] == [TITLES[name]]
            seen = at.exception or texts(at.title) + texts(at.error)
            observed = "allowed" if ok else f"broken: {seen}"
        matrix.append((f"page {name}-{user}", user in allowed, observed))
        # THEN exactly the pages registered for their roles are reached, and they run
        if observed != ("allowed" if user in allowed else "refused"):
            wrong.append(f"{name}: {observed}")
    assert not wrong, f"{user}: {wrong}"


@pytest.mark.parametrize(
    ("name", "user"),
    [
        pytest.param(
            name,
            user,
            marks=[pytest.mark.xfail(strict=True, reason=PAGE_HOLES[name, user])]
            if (name, user) in PAGE_HOLES
            else [],
            id=f"{name}-{user}",
        )
        for name, allowed in PAGES.items()
        for user in SIGNED_IN
        if user not in allowed
    ],
)
def test_page_run_directly_refuses_without_showing_data(
    matrix: Results, web: Services, name: str, user: str
) -> None:
    # GIVEN a page not registered for the user's roles, run on its own (as Streamlit runs a
    # pages/ file by itself), in the session of the signed-in user
    at = AppTest.from_file(str(PROJECT / page_file(name)), default_timeout=30)
    at.session_state["username"] = user
    at.query_params = {"db": "sales_orders", "table": "orders"}
    # WHEN it runs
    at.run()
    # THEN it says no, shows nothing of the data, and no stack trace
    shown = shows_data(at, web)
    refused = not at.exception and bool(at.error) and not shown
    matrix.append((f"direct {name}-{user}", False, "refused" if refused else "allowed"))
    assert not at.exception, at.exception
    assert at.error, f"{name} run directly for {user} says nothing"
    assert not shown, f"{name} run directly for {user} shows {shown}"


# The summary ---------------------------------------------------------------------------------


def summarise(results: Results) -> tuple[str, list[str]]:
    """The summary line of ``results``, and each case that went wrong but for the known
    holes (xfail): done (or changed something) when the table says no; refused, done
    silently or failed otherwise when the table says yes; denied without a domain error."""
    leaks = [
        case
        for case, allowed, seen in results
        if not allowed and (seen == "allowed" or seen.startswith("refused but changed"))
    ]
    unsaid = [
        f"{case}: {seen}"
        for case, allowed, seen in results
        if not allowed and seen != "refused" and case not in leaks
    ]
    blocked = [
        f"{case}: {seen}" for case, allowed, seen in results if allowed and seen != "allowed"
    ]
    known = {f"{a}-{u}" for a, u in HOLES} | {f"direct {p}-{u}" for p, u in PAGE_HOLES}
    summary = (
        f"security matrix: {len(results)} cases; allowed-when-should-deny {len(leaks)} "
        f"({len([c for c in leaks if c in known])} of them known holes in other owners' "
        f"files, xfail); denied without a domain error {len(unsaid)}; "
        f"denied-when-should-allow {len(blocked)}"
    )
    wrong = [f"allowed-when-should-deny: {c}" for c in leaks if c not in known]
    wrong += [f"denied without a domain error: {c}" for c in unsaid if c.split(":")[0] not in known]
    wrong += [f"denied-when-should-allow: {c}" for c in blocked]
    return summary, wrong


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest) -> Iterator[Results]:
    """Where each case of this module records what it observed; once the module's cases have
    run (all or some), print the summary and fail if anything went wrong.

    The summary counts exactly the cases that ran in this process, so it holds for one test,
    a -k selection or a split run alike (a module-global list and a last test that read it
    skipped, or summed nothing, when the module was not run whole and in order).
    """
    results: Results = []
    yield results
    if not results:
        return
    summary, wrong = summarise(results)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + summary)
        for line in wrong:
            print(f"  wrong: {line}")
    # THEN nothing was allowed that should be denied, every refusal said so, and nothing
    # was refused that should be allowed, but for the holes listed as xfail
    assert wrong == [], summary


# The summary's own rules -------------------------------------------------------------------


def test_summary_counts_a_leak_a_silent_refusal_and_a_block_and_passes_a_clean_run() -> None:
    # GIVEN results with one case of each kind of wrong, and a clean set
    dirty: Results = [
        ("approve-carol", False, "allowed"),
        ("revoke-hank", False, "refused but changed lake formation"),
        ("cancel-sam", False, "silent"),
        ("approve-sam", True, "refused"),
        ("submit-carol", True, "allowed"),
        ("deny-carol", False, "refused"),
    ]
    clean = [r for r in dirty if r[0] in ("submit-carol", "deny-carol")]
    # WHEN each is summarised
    summary, wrong = summarise(dirty)
    clean_summary, clean_wrong = summarise(clean)
    # THEN the dirty one counts 2 leaks, 1 silent refusal and 1 block; the clean one nothing
    assert "6 cases; allowed-when-should-deny 2 (0 of them" in summary
    assert "denied without a domain error 1; denied-when-should-allow 1" in summary
    assert wrong == [
        "allowed-when-should-deny: approve-carol",
        "allowed-when-should-deny: revoke-hank",
        "denied without a domain error: cancel-sam: silent",
        "denied-when-should-allow: approve-sam: refused",
    ]
    assert "allowed-when-should-deny 0" in clean_summary and clean_wrong == []
