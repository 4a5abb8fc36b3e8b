"""Single sign-on (MESH_AUTH=oidc): the session rules over a real store, then a real OpenID
provider (oidc-provider-mock) and Debian chromium against one app."""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from oidc_provider_mock import run_server_in_thread
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from mesh.models import Role
from mesh.oidc import COOKIE_NAME, OidcSignIn, OidcUsers
from mesh.rolemap import RoleMapFile
from mesh.signin import Rules, SignedIn
from mesh.store import PgStore, Store
from tests.browser_support import (
    PROJECT,
    chromium,
    free_ports,
    links_sent_for,
    stop,
    wait_until_up,
)
from tests.support import AUDIT_KEY

ROLE_MAP = """
groups:
  data-owners: {roles: [owner], owner_of: ["111122223333"]}
  analysts: {roles: [consumer], accounts: ["444455556666"]}
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def role_map(tmp_path: Path) -> Path:
    path = tmp_path / "rolemap.yaml"
    path.write_text(ROLE_MAP, encoding="utf-8")
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(tmp_path: Path, role_map: Path, clock: Clock) -> OidcSignIn:
    store = Store(tmp_path / "mesh.db")
    store.migrate()
    return OidcSignIn(store, OidcUsers(RoleMapFile(role_map), people=store), Rules(), clock=clock)


def claims(clock: Clock, sub: str = "s-olga", **more: Any) -> dict[str, Any]:
    issued = int(clock.now.timestamp())
    return {"iss": "http://idp", "sub": sub, "iat": issued, "nonce": sub + str(issued)} | more


def actions(auth: OidcSignIn) -> list[tuple[str, str, Any]]:
    rows = sorted(auth.store.audit(), key=lambda e: e.id)
    return [(e.action, e.actor, e.details.get("why")) for e in rows]


def test_a_fresh_id_token_opens_one_server_side_session_audited_with_its_sub(
    auth: OidcSignIn, clock: Clock
) -> None:
    # GIVEN an owner's fresh ID token WHEN it signs in
    token = claims(clock, email="Olga@Example.com", groups=["data-owners"])
    opened = auth.open_for(token, client="10.0.0.1")
    # THEN a session opens for the mapped user, audited with the sub and email
    assert isinstance(opened, SignedIn)
    assert opened.user.username == "olga@example.com" and opened.user.roles == {Role.OWNER}
    assert opened.expires_at == clock.now + Rules().session_lifetime
    assert auth.resume(opened.session_id, client="10.0.0.1") == opened.user
    event = next(e for e in auth.store.audit() if e.action == "signed_in")
    assert (event.details["sub"], event.details["email"]) == ("s-olga", "Olga@Example.com")


@pytest.mark.parametrize("adapter", ["sqlite", "postgresql"])
def test_a_session_opened_on_one_replica_resumes_on_another(
    adapter: str, request: pytest.FixtureRequest, tmp_path: Path, role_map: Path, clock: Clock
) -> None:
    # GIVEN two replicas, each with its own directory of people, over one store
    store: Store | PgStore
    if adapter == "sqlite":
        store = Store(tmp_path / "mesh.db")
    else:
        store = PgStore(request.getfixturevalue("pg_url"), audit_key=AUDIT_KEY)
    store.migrate()
    replica_a, replica_b = (
        OidcSignIn(store, OidcUsers(RoleMapFile(role_map), people=store), Rules(), clock=clock)
        for _ in range(2)
    )
    # WHEN olga signs in through the provider on replica A
    opened = replica_a.open_for(claims(clock, groups=["data-owners"]), client="c")
    assert isinstance(opened, SignedIn)
    # THEN replica B, which never saw her sign in, resumes her session as the same user
    assert replica_b.resume(opened.session_id, client="c") == opened.user
    assert "s-olga" in {c["sub"] for c in replica_b.users.people.people_claims()}
    assert replica_b.users.get(opened.user.username) == opened.user
    # AND a sign-out on B ends it for A too
    replica_b.sign_out(opened.session_id, opened.user.username, client="c")
    assert replica_a.resume(opened.session_id, client="c") == "already ended (signed out)"
    store.close()


def test_the_same_id_token_never_opens_a_second_session(auth: OidcSignIn, clock: Clock) -> None:
    # GIVEN an ID token that opened a session, which was then signed out
    token = claims(clock, groups=["analysts"])
    first = auth.open_for(token, client="c")
    assert isinstance(first, SignedIn)
    auth.sign_out(first.session_id, first.user.username, client="c")
    # WHEN the same claims (Streamlit's replayed identity cookie) try again
    again = auth.open_for(token, client="c")
    # THEN no session opens, the old one stays over, and both refusals are audited
    assert again == "used"
    assert auth.resume(first.session_id, client="c") == "already ended (signed out)"
    assert [a for a, _, _ in actions(auth)] == [
        "signed_in",
        "signed_out",
        "sign_in_failed",
        "session_refused",
    ]


def test_an_old_id_token_does_not_open_a_session(auth: OidcSignIn, clock: Clock) -> None:
    # GIVEN an ID token issued an hour ago WHEN it signs in THEN it is refused and audited
    token = claims(clock, groups=["analysts"])
    clock.now += timedelta(hours=1)
    assert auth.open_for(token, client="c") == "stale"
    assert actions(auth)[-1][2] == "the identity provider's sign-in is too old"


def test_claims_that_map_to_nothing_are_refused_with_the_no_access_sentence(
    auth: OidcSignIn, clock: Clock
) -> None:
    # GIVEN a person in no mapped group WHEN they sign in
    said = auth.open_for(claims(clock, email="x@y.z", groups=["sales"]), client="c")
    # THEN they are told what to ask for, and the refusal is audited with their groups
    assert said == (
        "No access yet: ask your platform team to add one of your groups (sales) to the role map."
    )
    refused = next(e for e in auth.store.audit() if e.action == "sign_in_failed")
    assert (refused.actor, refused.details["groups"]) == ("x@y.z", ["sales"])


def test_a_changed_role_map_takes_effect_on_the_next_lookup(
    auth: OidcSignIn, clock: Clock, role_map: Path
) -> None:
    # GIVEN an analyst signed in
    opened = auth.open_for(claims(clock, email="a@b.c", groups=["analysts"]), client="c")
    assert isinstance(opened, SignedIn)
    # WHEN the platform team maps the group to another account
    role_map.write_text(ROLE_MAP.replace("444455556666", "777788889999"), encoding="utf-8")
    os.utime(role_map, ns=(role_map.stat().st_mtime_ns + 10**9,) * 2)
    # THEN the next resume sees it; and removing the group ends the session
    resumed = auth.resume(opened.session_id, client="c")
    assert not isinstance(resumed, str) and resumed.accounts == ("777788889999",)
    role_map.write_text("groups:\n  others: {roles: [admin]}\n", encoding="utf-8")
    os.utime(role_map, ns=(role_map.stat().st_mtime_ns + 2 * 10**9,) * 2)
    assert auth.resume(opened.session_id, client="c") == "unknown user"


# A real OpenID provider, the app and Debian chromium ---------------------------------------

OWNER_SUB, CONSUMER_SUB, STRANGER_SUB = "olga-sub", "carl-sub", "stan-sub"
# In the demo mesh Sales (111111111111) owns sales_orders, whose customers table holds PII.
BROWSER_ROLE_MAP = """
groups:
  sales-owners: {roles: [owner], owner_of: ["111111111111"]}
  analysts: {roles: [consumer], accounts: ["444455556666"]}
"""
PEOPLE = {
    OWNER_SUB: {"email": "olga@example.com", "name": "Olga", "groups": ["sales-owners"]},
    CONSUMER_SUB: {"email": "carl@example.com", "name": "Carl", "groups": ["analysts"]},
    STRANGER_SUB: {"email": "stan@example.com", "name": "Stan", "groups": ["sales", "hr"]},
}
UI_TIMEOUT_MS = 20_000
DEMO = (sys.executable, "-m", "mesh", "demo")
REQUEST_ID = re.compile(r"\br-[0-9a-f]{8}\b")


@dataclass(frozen=True, kw_only=True)
class Sso:
    url: str
    folder: Path
    role_map: Path
    browser: Browser

    @property
    def db(self) -> Path:
        return self.folder / "demo.db"

    def standin_endpoint(self) -> str:
        return str(json.loads((self.folder / "demo-standin.json").read_text())["endpoint"])

    def audit(self, action: str) -> list[tuple[str, dict[str, Any]]]:
        with sqlite3.connect(self.db) as db:
            rows = db.execute(
                "SELECT actor, details FROM audit WHERE action = ? ORDER BY id", [action]
            ).fetchall()
        return [(actor, json.loads(details or "{}")) for actor, details in rows]


def put_user(provider: str, sub: str, claims: dict[str, Any]) -> None:
    """Set a user's claims through the provider's own HTTP API."""
    body = json.dumps(claims).encode()
    put = urllib.request.Request(
        f"{provider}/users/{sub}",
        data=body,
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(put, timeout=5) as answered:
        assert answered.status == 204


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sso]:
    """One provider (a thread), one app (`python -m mesh demo`, MESH_AUTH=oidc), one chromium."""
    folder = tmp_path_factory.mktemp("sso")
    role_map = folder / "rolemap.yaml"
    role_map.write_text(BROWSER_ROLE_MAP, encoding="utf-8")
    port, standin_port = free_ports(2)
    url = f"http://127.0.0.1:{port}"
    with run_server_in_thread() as server:
        provider = f"http://localhost:{server.server_port}"
        for sub, claims in PEOPLE.items():
            put_user(provider, sub, claims)
        secrets_file = folder / "secrets.toml"
        secrets_file.write_text(
            "[auth]\n"
            f'redirect_uri = "{url}/oauth2callback"\n'
            f'cookie_secret = "{secrets.token_urlsafe(32)}"\n'
            'client_id = "mesh-tests"\n'
            'client_secret = "mesh-tests-secret"\n'
            f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n',
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "AWS_"))}
        env |= {
            "MESH_DB": str(folder / "demo.db"),
            "MESH_BASE_URL": url,
            "MESH_AUTH": "oidc",
            "MESH_ROLE_MAP": str(role_map),
            "STREAMLIT_SECRETS_FILES": str(secrets_file),
        }
        log = folder / "demo.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*DEMO, "--port", str(port), "--standin-port", str(standin_port)],
                cwd=PROJECT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            with chromium() as browser:
                running = Sso(url=url, folder=folder, role_map=role_map, browser=browser)
                wait_until_up(process, running, log)
                yield running
        finally:
            stop(process)


@pytest.fixture
def page_for(sso: Sso) -> Iterator[Callable[[], Page]]:
    contexts: list[BrowserContext] = []

    def new_page() -> Page:
        context = sso.browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(UI_TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield new_page
    for context in contexts:
        context.close()


def wait_until_idle(page: Page) -> None:
    expect(page.get_by_test_id("stApp")).to_have_attribute(
        "data-test-script-state", "notRunning", timeout=UI_TIMEOUT_MS
    )


def through_provider(page: Page, sso: Sso, sub: str) -> None:
    """Sign in on the app's page, then on the provider's own form as ``sub``."""
    page.goto(sso.url)
    button = page.get_by_role("button", name="Sign in with your organisation")
    expect(button).to_be_visible()
    wait_until_idle(page)
    button.click()
    page.get_by_placeholder("sub").fill(sub)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(f"{sso.url}/**")


def signed_in_as(page: Page, username: str) -> Locator:
    return page.get_by_test_id("stSidebar").get_by_text(f"Signed in as {username}")


def session_cookie_written(page: Page) -> None:
    page.wait_for_function(f"document.cookie.includes('{COOKIE_NAME}=')", timeout=UI_TIMEOUT_MS)
    page.wait_for_timeout(1_000)
    wait_until_idle(page)


@pytest.mark.browser
def test_a_consumer_requests_and_an_owner_by_group_approves_through_the_provider(
    sso: Sso, page_for: Callable[[], Page]
) -> None:
    # GIVEN carl (group analysts) signed in through the provider's form
    # WHEN he asks for a table with PII
    request_id = carl_requests(sso, page_for(), "sales_orders", "customers")
    # AND olga, whose group sales-owners makes her the owner of Sales, approves it
    olga = page_for()
    through_provider(olga, sso, OWNER_SUB)
    expect(signed_in_as(olga, "olga@example.com")).to_be_visible()
    olga.get_by_test_id("stSidebar").get_by_role("link", name="Approvals").click()
    waiting = olga.locator(f"[class*='st-key-pending-{request_id}']")
    expect(waiting).to_contain_text("carl@example.com")
    waiting.get_by_role("button", name="Approve", exact=True).click()
    # THEN it is granted, and both sign-ins are audited with their sub
    expect(olga.get_by_test_id("stAlert").filter(has_text="granted")).to_be_visible()
    subs = {details.get("sub") for _, details in sso.audit("signed_in")}
    assert {OWNER_SUB, CONSUMER_SUB} <= subs


def carl_requests(sso: Sso, page: Page, database: str, table: str) -> str:
    """Carl, signed in through the provider, asks for a PII table; the request's id."""
    through_provider(page, sso, CONSUMER_SUB)
    expect(signed_in_as(page, "carl@example.com")).to_be_visible()
    session_cookie_written(page)
    page.goto(f"{sso.url}/table?db={database}&table={table}")
    expect(page.get_by_role("heading", name=f"{database}.{table}", exact=True)).to_be_visible()
    wait_until_idle(page)
    page.get_by_label(re.compile(r"^Reason")).fill("a decision link across the provider")
    page.get_by_role("button", name="Request access").click()
    outcome = page.get_by_test_id("stAlert").filter(has_text=f"{database}.{table}")
    expect(outcome).to_contain_text("waits for approval")
    found = REQUEST_ID.search(outcome.inner_text())
    assert found is not None
    return found.group(0)


@pytest.mark.browser
def test_a_decision_link_followed_while_signed_out_comes_back_after_the_providers_sign_in(
    sso: Sso, page_for: Callable[[], Page]
) -> None:
    # GIVEN carl's request for a table of Sales' PII database, and the approve link that
    # olga's notification holds
    request_id = carl_requests(sso, page_for(), "sales_crm", "contacts")
    link = links_sent_for(sso.db, request_id).approve
    # WHEN olga, signed out, follows it: the app asks her to sign in through the provider
    olga = page_for()
    olga.goto(link)
    button = olga.get_by_role("button", name="Sign in with your organisation")
    expect(button).to_be_visible()
    olga.wait_for_function("document.cookie.includes('mesh_pending_link=')")
    wait_until_idle(olga)
    button.click()
    olga.get_by_placeholder("sub").fill(OWNER_SUB)
    olga.get_by_role("button", name="Authorize").click()
    # THEN back from the provider (at the app's root), she is asked to confirm that link
    heading = olga.get_by_role("heading", name=f"Confirm: approve request {request_id}")
    expect(heading).to_be_visible()
    expect(signed_in_as(olga, "olga@example.com")).to_be_visible()
    # AND the kept link is gone from her browser once opened, so it opens only this once
    olga.wait_for_function("!document.cookie.includes('mesh_pending_link=')")
    # AND confirming approves it
    olga.get_by_role("button", name="Confirm approve").click()
    done = olga.get_by_test_id("stAlertContentSuccess").filter(has_text=request_id)
    expect(done).to_contain_text("granted")


@pytest.mark.browser
def test_a_person_in_no_mapped_group_sees_no_access_yet_and_is_audited(
    sso: Sso, page_for: Callable[[], Page]
) -> None:
    # GIVEN stan, whose groups (sales, hr) are not in the role map
    stan = page_for()
    # WHEN he signs in through the provider
    through_provider(stan, sso, STRANGER_SUB)
    # THEN he is told whom to ask and which groups he has, and sees no page of the app
    expect(
        stan.get_by_text(
            "No access yet: ask your platform team to add one of your groups (sales, hr) "
            "to the role map."
        )
    ).to_be_visible()
    expect(stan.get_by_test_id("stSidebarNav")).to_have_count(0)
    refused = [d for actor, d in sso.audit("sign_in_failed") if actor == "stan@example.com"]
    assert refused and refused[0]["why"] == "no mapped group"
    assert refused[0]["groups"] == ["sales", "hr"]


@pytest.mark.browser
def test_after_sign_out_the_old_cookies_replayed_are_refused(
    sso: Sso, page_for: Callable[[], Page]
) -> None:
    # GIVEN carl signed in, and a copy of every cookie his browser holds
    carl = page_for()
    through_provider(carl, sso, CONSUMER_SUB)
    expect(signed_in_as(carl, "carl@example.com")).to_be_visible()
    session_cookie_written(carl)
    stolen = carl.context.cookies()
    assert {COOKIE_NAME, "_streamlit_user"} <= {c["name"] for c in stolen}
    # WHEN he signs out, and another browser replays the copied cookies
    carl.get_by_role("button", name="Sign out").click()
    expect(signed_in_as(carl, "carl@example.com")).to_have_count(0)
    replay = page_for()
    replay.context.add_cookies(stolen)  # type: ignore[arg-type]
    replay.goto(sso.url)
    # THEN it is not signed in: the provider must be asked again, and the refusals are audited
    expect(replay.get_by_role("button", name="Sign in with your organisation")).to_be_visible()
    expect(signed_in_as(replay, "carl@example.com")).to_have_count(0)
    assert any(d.get("by_cookie") for _, d in sso.audit("session_refused"))
    whys = [d.get("why") for actor, d in sso.audit("sign_in_failed") if actor == "carl@example.com"]
    assert "the identity provider's sign-in was used before" in whys


@pytest.mark.browser
def test_a_changed_group_in_the_role_map_takes_effect_on_the_next_action(
    sso: Sso, page_for: Callable[[], Page]
) -> None:
    # GIVEN olga signed in as an owner, with the Approvals page
    olga = page_for()
    through_provider(olga, sso, OWNER_SUB)
    sidebar = olga.get_by_test_id("stSidebar")
    expect(sidebar.get_by_role("link", name="Approvals")).to_be_visible()
    wait_until_idle(olga)
    # WHEN the platform team maps sales-owners to consumers only
    try:
        sso.role_map.write_text(
            BROWSER_ROLE_MAP.replace(
                'roles: [owner], owner_of: ["111111111111"]',
                'roles: [consumer], accounts: ["777788889999"]',
            ),
            encoding="utf-8",
        )
        # AND she does the next thing (opens My requests)
        sidebar.get_by_role("link", name="My requests").click()
        # THEN she has lost the owner's page, without signing in again
        expect(sidebar.get_by_role("link", name="Approvals")).to_have_count(0)
        expect(signed_in_as(olga, "olga@example.com")).to_be_visible()
    finally:
        sso.role_map.write_text(BROWSER_ROLE_MAP, encoding="utf-8")
