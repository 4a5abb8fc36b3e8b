"""An owner decides from the links in the approval notification, in a real browser.

A link never decides by itself: it opens the request on the Approvals page, behind sign-in,
and the owner confirms. A tampered link, or one for a request already decided, changes nothing.

The demo runs as a user starts it (``python -m mesh demo``); requests are made through the
CLI against it, and the links are read from the notification outbox in its database.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from playwright.sync_api import Locator, Page, Route, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser_support import Demo, links_sent_for, started_demo

# A real browser against a real server: the sign-in cookie is written by a script frame a
# moment after sign-in (mesh/ui_signin.py), and a click made while a run is in progress can
# be lost; the helpers wait and click again. Each test has a demo of its own, so it can be
# tried again from scratch, up to twice; a failure in all three tries is a real failure.
pytestmark = [pytest.mark.browser, pytest.mark.flaky(reruns=2, reruns_delay=1)]

PROJECT = Path(__file__).resolve().parents[1]
PASSWORD = "mesh-demo"
OWNER = "sam"  # owner of 111111111111 (Sales, which owns sales_orders) in mesh/demo/users.yaml
COOKIE = "mesh_marketplace_auth"  # cookie.name in mesh/demo/users.yaml
UI_TIMEOUT_MS = 15_000


# Fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`python -m mesh demo` on free ports, whose links point back at it (MESH_BASE_URL)."""
    with started_demo(tmp_path_factory.mktemp("demo"), host="localhost") as running:
        yield running


# The CLI and the outbox ---------------------------------------------------------------------


def mesh_cli(demo: Demo, *args: str) -> object:
    """Run ``python -m mesh ARGS --json`` against the running demo; its JSON output."""
    done = subprocess.run(
        [sys.executable, "-m", "mesh", *args, "--json"],
        cwd=PROJECT,
        env=demo.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"mesh {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return json.loads(done.stdout)


def pending_pii_request(demo: Demo, *, requester: str, scope: str, account: str) -> str:
    """The id of a new request for a PII table of Sales (sam), which waits for the owner.

    Each test asks for its own table and account: an identical active request is refused.
    """
    database, table = scope.split(".")
    made = mesh_cli(
        demo,
        *("request", "--as", requester, "--database", database, "--table", table),
        *("--account", account, "--reason", f"browser link test ({requester})"),
    )
    assert isinstance(made, dict)
    assert made["status"] == "pending_approval", made
    return str(made["id"])


def status_of(demo: Demo, request_id: str) -> str:
    listed = mesh_cli(demo, "requests")
    assert isinstance(listed, list)
    statuses = {r["id"]: r["status"] for r in listed}
    assert request_id in statuses, f"{request_id} is not among the requests"
    return str(statuses[request_id])


def with_token_changed(url: str, part: str) -> str:
    """The link with one character of its token's payload or signature changed."""
    scheme, netloc, path, query, fragment = urlsplit(url)
    token = parse_qs(query)["link"][0]
    # itsdangerous tokens are payload.timestamp.signature; a first character carries six
    # full bits, whereas the last one of a part may only carry padding that decoding ignores.
    payload, timestamp, signature = token.rsplit(".", 2)
    parts = {"payload": payload, "signature": signature}
    original = parts[part]
    parts[part] = ("B" if original[0] == "A" else "A") + original[1:]
    changed = f"{parts['payload']}.{timestamp}.{parts['signature']}"
    assert changed != token
    return urlunsplit((scheme, netloc, path, urlencode({"link": changed}), fragment))


# Steps a person takes -----------------------------------------------------------------------


def wait_until_idle(page: Page) -> None:
    """Wait for the end of the script run in progress (Streamlit marks it on stApp)."""
    expect(page.get_by_test_id("stApp")).to_have_attribute(
        "data-test-script-state", "notRunning", timeout=UI_TIMEOUT_MS
    )


def fill_sign_in_form(page: Page, username: str) -> None:
    """Sign in on the form the current page shows."""
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=UI_TIMEOUT_MS)
    signed_in = signed_in_as(page, username)
    # A submit made while the page's first run is still going can be dropped: let it
    # settle, and submit again if the form stays.
    page.wait_for_timeout(2_000)
    for _ in range(3):
        wait_until_idle(page)
        page.get_by_role("textbox", name="Username").fill(username)
        # A "Show password" button shares the label, so ask for the textbox.
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        try:
            expect(signed_in).to_be_visible(timeout=5_000)
            break
        except AssertionError:
            wait_until_idle(page)
            if signed_in.is_visible():
                break
    expect(signed_in).to_be_visible()


def open_link_after_sign_in(page: Page) -> None:
    """After signing in from a link the app moves to its request by itself, or offers a
    button for it when the browser's cookie component has not answered yet."""
    resume = page.get_by_role("button", name="Open the request")
    try:
        expect(resume).to_be_visible(timeout=3_000)
    except AssertionError:
        return  # already moved on by itself
    wait_until_idle(page)
    if resume.is_visible():
        resume.click()


def signed_in_as(page: Page, username: str) -> Locator:
    return page.get_by_test_id("stSidebar").get_by_text(f"Signed in as {username}")


def login_cookie_written(page: Page) -> bool:
    """Whether the browser got the login cookie, which signs in the next page load."""
    # A script frame writes it in the browser a moment after sign-in.
    try:
        page.wait_for_function(f"document.cookie.includes('{COOKIE}=')", timeout=UI_TIMEOUT_MS)
    except PlaywrightTimeoutError:
        return False
    return True


def sign_in(page: Page, demo: Demo, username: str) -> None:
    """Sign in on the home page, so that following a link later opens it signed in."""
    page.goto(demo.url)
    fill_sign_in_form(page, username)
    assert login_cookie_written(page), "signing in on the home page wrote no login cookie"


def click_until(page: Page, button: Locator, done: Locator) -> None:
    """Click, and click again if the click was dropped: the button is still there, not done.

    A page load that signs in from the login cookie is rerun when the cookie component
    reports, a moment after the page shows, and that rerun can drop a click made before it.
    """
    for _ in range(3):
        wait_until_idle(page)
        button.click()
        try:
            expect(done).to_be_visible(timeout=5_000)
            return
        except AssertionError:
            wait_until_idle(page)
            if done.is_visible() or not button.is_visible():
                break
    expect(done).to_be_visible()


@contextmanager
def components_held_back(page: Page) -> Iterator[None]:
    """Hold the requests for custom components' frames, and let them load at the end."""
    pattern = "**/component/**"
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    page.route(pattern, hold)
    try:
        yield
    finally:
        page.unroute(pattern)  # the held requests continue, where their frame is still there


def follow(page: Page, url: str) -> None:
    page.goto(url)
    wait_until_idle(page)


def confirm_heading(page: Page, action: str, request_id: str) -> Locator:
    return page.get_by_role("heading", name=f"Confirm: {action} request {request_id}")


# Tests ------------------------------------------------------------------------------------


def test_approve_link_asks_owner_to_sign_in_then_to_confirm_and_grants_on_confirm(
    page: Page, demo: Demo
) -> None:
    # GIVEN carol's PII request, waiting for sam, and the links in the notification he got
    request_id = pending_pii_request(
        demo, requester="carol", scope="sales_orders.customers", account="444455556666"
    )
    links = links_sent_for(demo.db, request_id)

    # WHEN sam follows the approve link in a browser where nobody is signed in
    follow(page, links.approve)
    # THEN he is asked to sign in, not told that the page does not exist
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.get_by_text("Page not found")).to_have_count(0)
    # AND following the link decided nothing
    assert status_of(demo, request_id) == "pending_approval"

    # WHEN he signs in
    fill_sign_in_form(page, OWNER)
    open_link_after_sign_in(page)
    # THEN the Approvals page asks him to confirm approving that request, which still waits
    expect(confirm_heading(page, "approve", request_id)).to_be_visible(timeout=UI_TIMEOUT_MS)
    assert status_of(demo, request_id) == "pending_approval"

    # WHEN he confirms
    success = page.get_by_test_id("stAlertContentSuccess").filter(has_text=request_id)
    click_until(page, page.get_by_role("button", name="Confirm approve"), success)
    # THEN the page says the access is granted, and the request is granted
    expect(success).to_contain_text("granted")
    assert status_of(demo, request_id) == "granted"


@pytest.mark.parametrize(
    ("part", "scope"),
    [
        ("signature", "sales_orders.customers"),
        ("payload", "sales_crm.contacts"),
    ],
)
def test_tampered_approve_link_is_refused_and_request_stays_pending(
    page: Page, demo: Demo, part: str, scope: str
) -> None:
    # GIVEN dan's PII request, waiting for sam, who is signed in
    request_id = pending_pii_request(demo, requester="dan", scope=scope, account="777788889999")
    tampered = with_token_changed(links_sent_for(demo.db, request_id).approve, part)
    sign_in(page, demo, OWNER)

    # WHEN he follows the approve link with one character of its token changed
    follow(page, tampered)

    # THEN the page says the link is not valid, and offers nothing to confirm
    expect(page.get_by_test_id("stAlertContentError")).to_contain_text(
        "not valid", timeout=UI_TIMEOUT_MS
    )
    expect(page.get_by_role("button", name=re.compile("^Confirm"))).to_have_count(0)
    expect(page.get_by_role("heading", name=re.compile("^Confirm:"))).to_have_count(0)
    # AND the request still waits for a decision
    assert status_of(demo, request_id) == "pending_approval"


def test_used_approve_link_and_late_deny_link_change_nothing(page: Page, demo: Demo) -> None:
    # GIVEN mia's PII request, which sam, signed in, approved from its approve link
    request_id = pending_pii_request(
        demo, requester="mia", scope="sales_crm.contacts", account="444455556666"
    )
    links = links_sent_for(demo.db, request_id)
    sign_in(page, demo, OWNER)
    follow(page, links.approve)
    expect(confirm_heading(page, "approve", request_id)).to_be_visible(timeout=UI_TIMEOUT_MS)
    granted = page.get_by_test_id("stAlertContentSuccess").filter(has_text=request_id)
    click_until(page, page.get_by_role("button", name="Confirm approve"), granted)
    assert status_of(demo, request_id) == "granted"

    # WHEN he follows the same approve link again
    follow(page, links.approve)
    # THEN it is refused as used, and offers nothing to confirm
    expect(page.get_by_test_id("stAlertContentError")).to_contain_text(
        "already used", timeout=UI_TIMEOUT_MS
    )
    expect(page.get_by_role("button", name=re.compile("^Confirm"))).to_have_count(0)

    # WHEN he follows the deny link from the same notification
    follow(page, links.deny)
    # THEN the page says the request is already granted, and offers nothing to confirm
    expect(page.get_by_test_id("stAlertContentWarning")).to_contain_text(
        "already granted", timeout=UI_TIMEOUT_MS
    )
    expect(page.get_by_role("button", name=re.compile("^Confirm"))).to_have_count(0)
    # AND the request stays granted
    assert status_of(demo, request_id) == "granted"


def test_owner_who_signs_in_from_a_link_stays_signed_in_on_the_next_page_load(
    page: Page, demo: Demo
) -> None:
    # GIVEN dan's PII request, and its deny link opened at the home page's address, where
    # nobody is signed in. On a server's first visit the app itself moves a link from
    # /approvals?link=... to /?link=... before sign-in; either way, it comes back to the link
    # after sign-in.
    request_id = pending_pii_request(
        demo, requester="dan", scope="sales_crm.opportunities", account="777788889999"
    )
    deny = links_sent_for(demo.db, request_id).deny
    at_home = urlunsplit(urlsplit(deny)._replace(path="/"))
    follow(page, at_home)
    # WHEN he signs in, and the link's request opens (after the run that signs in has let the
    # login cookie be written: the app switches page only in the next run)
    fill_sign_in_form(page, OWNER)
    open_link_after_sign_in(page)
    expect(confirm_heading(page, "deny", request_id)).to_be_visible(timeout=UI_TIMEOUT_MS)

    # THEN the browser keeps his sign-in, as it does after signing in on the home page
    assert login_cookie_written(page), "signing in from a decision link wrote no login cookie"
    # AND a new page load opens signed in, without the password
    page.goto(f"{demo.url}/approvals")
    expect(signed_in_as(page, OWNER)).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_role("button", name="Sign in")).to_have_count(0)
