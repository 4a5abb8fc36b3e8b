"""Each person in turn, in a browser of their own: the README's journeys end to end.

Carol asks for access in her browser; an owner decides, or revokes, in his; then carol goes
back to My requests and reads what happened, who decided and why. Nothing is read from a
data frame: it draws on a canvas, whose text a person cannot select and Playwright cannot
read, so the outcome must be in the page's own text.

The journeys under the default policy share one demo, each on a table of its own, and one
browser context each for carol and sam, who stay signed in as people do. A retry gets a
fresh demo and fresh people, so a journey half done in the failed try cannot get in its
way. The two-step journey has a demo of its own, started with MESH_POLICY.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser_support import PROJECT, Demo, fresh_page, started_demo
from tests.test_browser import (
    COOKIE,
    PASSWORD,
    UI_TIMEOUT_MS,
    lake_formation_table_grants,
    outcome_for,
    request_access,
    settle,
    wait_until_idle,
)
from tests.test_browser_policy import choose

# As in test_browser.py: a click lost to the login cookie's rerun is retried from scratch.
pytestmark = [pytest.mark.browser, pytest.mark.flaky(reruns=2, reruns_delay=1)]

CAROL_ACCOUNT = "444455556666"  # carol's only consumer account in mesh/demo/users.yaml
# In mesh/demo/users.yaml sam owns Sales (111111111111): sales_orders (PII in customers),
# sales_crm (PII as a whole database) and supply_chain (no PII at all).
SHORT_MINUTES = 1
QUICK = {"MESH_DEMO_DURATION_MINUTES": str(SHORT_MINUTES), "MESH_TICK_SECONDS": "2"}
SHORT_PERIOD = "1 minute (demo, to watch expiry)"  # as mesh/ui.py words SHORT_MINUTES = 1
SHORT_TABLE = ("supply_chain", "inventory")
EXPIRY_GRACE_S = 60  # after the minute is up: ticks, the revoke calls, a loaded machine
TWO_STEP = PROJECT / "examples" / "policies" / "two-step-pii.yaml"
REQUEST_ID = re.compile(r"\br-[0-9a-f]{8}\b")
BROKEN = re.compile("Something went wrong")
NEW = re.compile(r"\bnew\b", re.IGNORECASE)

# The text of the smallest element of the main area that is about this request alone (it
# names no other request id) and matches every pattern, or null. innerText has only what is
# rendered: no collapsed expander, no hidden element, no canvas fallback.
READ_REQUEST = """
([id, patterns]) => {
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main) return null;
  const wanted = patterns.map((p) => new RegExp(p, "i"));
  let found = null;
  for (const el of main.querySelectorAll("*")) {
    if (el.closest('[data-testid="stDataFrame"], canvas')) continue;
    const text = el.innerText || "";
    if (!text.includes(id)) continue;
    if ((text.match(/\\br-[0-9a-f]{8}\\b/g) || []).some((other) => other !== id)) continue;
    if (wanted.every((re) => re.test(text))) found = el;
  }
  return found ? found.innerText : null;
}
"""
MAIN_TEXT = "() => document.querySelector('[data-testid=\"stMain\"]')?.innerText ?? ''"


@dataclass(frozen=True, kw_only=True)
class Submitted:
    """A request carol made, and when (time.monotonic)."""

    id: str
    at: float


@dataclass(frozen=True, kw_only=True)
class Mesh:
    """A running demo with carol and sam signed in, each in a browser context of their own;
    ``minute`` is carol's one-minute grant, if one is already running there."""

    demo: Demo
    carol: Page
    sam: Page
    minute: Submitted | None = None


# Fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_mesh(
    browser: Browser, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    """The demo for the default-policy journeys, with a one-minute duration and a 2 s tick.

    Carol asks for her one-minute grant first, so that its minute runs while the other
    journeys do."""
    folder = tmp_path_factory.mktemp("journeys")
    with started_demo(folder, env=QUICK) as demo, ExitStack() as people:
        carol = people.enter_context(person(browser, request, folder, demo, "carol"))
        minute = submit_short_grant(carol, demo)
        sam = people.enter_context(person(browser, request, folder, demo, "sam"))
        yield Mesh(demo=demo, carol=carol, sam=sam, minute=minute)


@pytest.fixture
def mesh(
    shared_mesh: Mesh, browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Mesh]:
    """The shared mesh on a first try; on a retry a fresh demo, carol and sam."""
    if getattr(request.node, "execution_count", 1) <= 1:
        yield shared_mesh
        return
    with started_demo(tmp_path, env=QUICK) as demo, ExitStack() as people:
        carol = people.enter_context(person(browser, request, tmp_path, demo, "carol"))
        sam = people.enter_context(person(browser, request, tmp_path, demo, "sam"))
        yield Mesh(demo=demo, carol=carol, sam=sam)


@pytest.fixture
def two_step_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    folder = tmp_path_factory.mktemp("two-step")
    with started_demo(folder, env={"MESH_POLICY": str(TWO_STEP)}) as running:
        yield running


# Steps a person takes -----------------------------------------------------------------------


def sign_in(page: Page, demo: Demo, username: str) -> None:
    """Sign in as test_browser.sign_in does, but quicker and steadier for a journey of
    several people: a submit lost to the login cookie's rerun is made again after 2 s rather
    than 5, and when the login cookie is never written (it happens, and a later page load
    would then show the sign-in form) sign in again from a new page load."""
    signed_in = page.get_by_test_id("stSidebar").get_by_text(f"Signed in as {username}")
    for _ in range(3):
        page.goto(demo.url)
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        for _ in range(3):
            wait_until_idle(page)
            page.get_by_role("textbox", name="Username").fill(username)
            # A "Show password" button shares the label, so ask for the textbox.
            page.get_by_role("textbox", name="Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            try:
                expect(signed_in).to_be_visible(timeout=2_000)
                break
            except AssertionError:
                wait_until_idle(page)
                if signed_in.is_visible():
                    break
        expect(signed_in).to_be_visible()
        try:
            page.wait_for_function(f"document.cookie.includes('{COOKIE}=')", timeout=5_000)
        except PlaywrightTimeoutError:
            continue
        page.wait_for_timeout(1_000)  # the cookie component's rerun, as in settle()
        wait_until_idle(page)
        return
    pytest.fail(f"the login cookie of {username} was never written, in three sign-ins")


@contextmanager
def person(
    browser: Browser,
    request: pytest.FixtureRequest,
    folder: Path,
    demo: Demo,
    username: str,
) -> Iterator[Page]:
    """A browser context of this person's own, signed in; a screenshot lands in
    ``folder/username`` if a test fails meanwhile."""
    with fresh_page(browser, request, folder / username, timeout_ms=UI_TIMEOUT_MS) as page:
        sign_in(page, demo, username)
        yield page


def submit(
    page: Page,
    demo: Demo,
    database: str,
    table: str,
    reason: str,
    *,
    says: str,
    period: str = "",
) -> str:
    """Open the table's page by its address (a page load: the login cookie signs in), ask
    for it for ``period``, check that the form ``says`` so, and return the request's id."""
    page.goto(f"{demo.url}/table?db={database}&table={table}")
    expect(page.get_by_role("heading", name=f"{database}.{table}", exact=True)).to_be_visible()
    settle(page)
    if period:
        choose(page, "How long", period)
        wait_until_idle(page)
    request_access(page, reason)
    outcome = outcome_for(page, f"{database}.{table}")
    expect(outcome).to_contain_text(says)
    expect(outcome).to_contain_text(REQUEST_ID)
    found = REQUEST_ID.search(outcome.inner_text())
    assert found is not None
    return found.group(0)


def submit_short_grant(carol: Page, demo: Demo) -> Submitted:
    """SHORT_TABLE has no PII: the policy grants it at once, for one minute."""
    request_id = submit(
        carol,
        demo,
        *SHORT_TABLE,
        "stock levels for a one-minute look (browser journey)",
        says="granted",
        period=SHORT_PERIOD,
    )
    return Submitted(id=request_id, at=time.monotonic())


def go_to(page: Page, link: str, heading: str) -> None:
    page.get_by_test_id("stSidebar").get_by_role("link", name=link).click()
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    wait_until_idle(page)
    expect_not_broken(page)


def open_my_requests(page: Page) -> None:
    go_to(page, "My requests", "My requests")


def expect_not_broken(page: Page) -> None:
    """No "Something went wrong" message and no stack trace."""
    broken = f"{page.url} says something went wrong"
    expect(page.get_by_text(BROKEN), broken).to_have_count(0)
    expect(page.get_by_test_id("stException"), f"{page.url} shows a stack trace").to_have_count(0)


def decide(
    owner: Page, request_id: str, verb: str, comment: str = "", *, progress: str = ""
) -> None:
    """On Approvals, find carol's request (at this step), comment, and approve or deny it."""
    go_to(owner, "Approvals", "Pending approvals")
    waiting = owner.locator(f"[class*='st-key-pending-{request_id}']")
    expect(waiting).to_contain_text("carol")
    if progress:
        expect(waiting).to_contain_text(progress)
    waiting.get_by_role("textbox", name=re.compile("^Comment")).fill(comment)
    waiting.get_by_role("button", name=verb, exact=True).click()


def revoke(owner: Page, request_id: str, comment: str) -> None:
    go_to(owner, "Approvals", "Pending approvals")
    granted = owner.locator(f"[class*='st-key-granted-{request_id}']")
    expect(granted).to_contain_text("carol")
    # one revoke form for the grant picked in it: type the request id, click its option
    form = owner.locator(".st-key-revoke")
    pick = form.get_by_role("combobox")
    pick.click()
    pick.fill(request_id)
    owner.get_by_role("option", name=re.compile(re.escape(request_id))).click()
    form.get_by_role("textbox", name="Why revoke").fill(comment)
    form.get_by_role("button", name="Revoke access").click()


def read_request(page: Page, request_id: str, *patterns: str, timeout_s: float = 5) -> str:
    """What My requests says about this request, once it matches every pattern (case aside);
    fail with what the page says instead."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = page.evaluate(READ_REQUEST, [request_id, list(patterns)])
        if text is not None:
            return str(text)
        if time.monotonic() > deadline:
            pytest.fail(
                f"My requests shows no text about {request_id} alone that matches "
                f"{list(patterns)}; the page reads:\n{page.evaluate(MAIN_TEXT)}"
            )
        page.wait_for_timeout(250)


def word(text: str) -> str:
    return rf"\b{re.escape(text)}\b"


def mark_seen(carol: Page) -> None:
    """Click "Mark these as seen"; the "new" notice goes, also after a new page load."""
    assert NEW.search(carol.evaluate(MAIN_TEXT)), "My requests shows nothing new"
    carol.get_by_role("button", name="Mark these as seen").click()
    expect(carol.get_by_role("button", name="Mark these as seen")).to_have_count(0)
    wait_until_idle(carol)
    expect_not_broken(carol)
    assert not NEW.search(shown := carol.evaluate(MAIN_TEXT)), shown
    carol.reload()
    expect(carol.get_by_role("heading", name="My requests", exact=True)).to_be_visible()
    settle(carol)
    expect_not_broken(carol)
    expect(carol.get_by_role("button", name="Mark these as seen")).to_have_count(0)
    assert not NEW.search(shown := carol.evaluate(MAIN_TEXT)), shown


# Journeys ---------------------------------------------------------------------------------


def test_requester_reads_the_owners_approval_and_comment_on_my_requests(mesh: Mesh) -> None:
    carol, sam, comment = mesh.carol, mesh.sam, "approved for the churn model, journey one"
    # GIVEN carol asks for a table with PII columns, which waits for its owner
    request_id = submit(
        carol,
        mesh.demo,
        "sales_orders",
        "customers",
        "churn model (browser journey)",
        says="waits for approval",
    )
    # WHEN sam, the Sales owner, approves it with a comment in his own browser
    decide(sam, request_id, "Approve", comment)
    expect(outcome_for(sam, "sales_orders.customers")).to_contain_text("granted")
    expect_not_broken(sam)
    # THEN carol, back on My requests, reads that it is granted, by sam, and why
    open_my_requests(carol)
    read_request(carol, request_id, word("granted"), word("sam"), re.escape(comment))
    expect_not_broken(carol)
    # AND Lake Formation holds the grant
    both = {"SELECT", "DESCRIBE"}
    grants = lake_formation_table_grants(mesh.demo.standin_endpoint(), CAROL_ACCOUNT)
    assert grants.get("sales_orders.customers") == (both, both)


def test_requester_reads_the_owners_denial_and_comment_on_my_requests(mesh: Mesh) -> None:
    carol, sam, comment = mesh.carol, mesh.sam, "contacts stay in Sales, journey two"
    # GIVEN carol asks for a table of sales_crm, a database flagged PII as a whole
    request_id = submit(
        carol,
        mesh.demo,
        "sales_crm",
        "contacts",
        "campaign reach (browser journey)",
        says="waits for approval",
    )
    # WHEN sam denies it with a comment
    decide(sam, request_id, "Deny", comment)
    expect(sam.get_by_test_id("stAlert").filter(has_text=request_id)).to_contain_text("denied")
    expect_not_broken(sam)
    # THEN carol reads that it is denied, by sam, and why
    open_my_requests(carol)
    read_request(carol, request_id, word("denied"), word("sam"), re.escape(comment))
    expect_not_broken(carol)
    # AND Lake Formation holds nothing for it
    grants = lake_formation_table_grants(mesh.demo.standin_endpoint(), CAROL_ACCOUNT)
    assert "sales_crm.contacts" not in grants


def test_requester_reads_who_revoked_her_access_and_why_on_my_requests(mesh: Mesh) -> None:
    carol, sam = mesh.carol, mesh.sam
    comment = "shipments move to the partner feed, journey three"
    # GIVEN carol holds a table the policy granted at once (it has no PII)
    request_id = submit(
        carol,
        mesh.demo,
        "supply_chain",
        "shipments",
        "carrier delays (browser journey)",
        says="granted",
    )
    grants = lake_formation_table_grants(mesh.demo.standin_endpoint(), CAROL_ACCOUNT)
    assert "supply_chain.shipments" in grants
    # WHEN sam revokes it with a comment
    revoke(sam, request_id, comment)
    expect(sam.get_by_test_id("stAlert").filter(has_text=request_id)).to_contain_text("revoked")
    # THEN it is gone from his granted list
    expect(sam.locator(f"[class*='st-key-granted-{request_id}']")).to_have_count(0)
    expect_not_broken(sam)
    # AND carol reads that it is revoked, by sam, and why
    open_my_requests(carol)
    read_request(carol, request_id, word("revoked"), word("sam"), re.escape(comment))
    expect_not_broken(carol)
    # AND Lake Formation no longer holds it
    grants = lake_formation_table_grants(mesh.demo.standin_endpoint(), CAROL_ACCOUNT)
    assert "supply_chain.shipments" not in grants


def test_requester_reads_granted_with_both_approvers_after_two_steps(
    two_step_demo: Demo, browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    demo = two_step_demo
    with person(browser, request, tmp_path, demo, "carol") as carol:
        # GIVEN carol asks for the customers table for 30 days under the two-step policy
        request_id = submit(
            carol,
            demo,
            "sales_orders",
            "customers",
            "churn model for the retention team (browser journey)",
            says="waits for approval",
            period="30 days",
        )
        # WHEN sam approves step 1 in his browser
        with person(browser, request, tmp_path, demo, "sam") as sam:
            decide(sam, request_id, "Approve", progress="step 1 of 2: waiting for owner, 0 of 1")
            recorded = sam.get_by_test_id("stAlert").filter(has_text="is recorded")
            expect(recorded).to_contain_text("waiting for privacy-office")
            expect_not_broken(sam)
        # THEN carol reads that it still waits
        open_my_requests(carol)
        read_request(carol, request_id, "pending|waiting")
        # WHEN priya, of the privacy office, approves step 2 in hers
        with person(browser, request, tmp_path, demo, "priya") as priya:
            step_2 = "step 2 of 2: owner approved (sam); waiting for privacy-office, 0 of 1"
            decide(priya, request_id, "Approve", progress=step_2)
            expect(outcome_for(priya, "sales_orders.customers")).to_contain_text("granted")
            expect_not_broken(priya)
        # THEN carol reads that it is granted, and by whom: sam, then priya
        open_my_requests(carol)
        read_request(carol, request_id, word("granted"), word("sam"), word("priya"))
        expect_not_broken(carol)
        # WHEN she marks it as seen THEN the "new" notice goes, and it still reads granted
        mark_seen(carol)
        read_request(carol, request_id, word("granted"))


def test_requester_reads_expired_after_the_background_job_ends_a_short_grant(
    mesh: Mesh,
) -> None:
    carol = mesh.carol
    # GIVEN carol's one-minute grant of supply_chain.inventory (asked for as the demo started)
    minute = mesh.minute or submit_short_grant(carol, mesh.demo)
    open_my_requests(carol)
    # WHEN the minute is up and the background job has run
    time.sleep(max(0.0, minute.at + SHORT_MINUTES * 60 - time.monotonic()))
    deadline = minute.at + SHORT_MINUTES * 60 + EXPIRY_GRACE_S
    while carol.evaluate(READ_REQUEST, [minute.id, [word("expired")]]) is None:
        if time.monotonic() > deadline:
            break
        carol.wait_for_timeout(2_000)
        carol.reload()  # My requests shows what the store held when it was drawn
        expect(carol.get_by_role("heading", name="My requests", exact=True)).to_be_visible()
        wait_until_idle(carol)
        expect_not_broken(carol)
    # THEN My requests says it expired
    read_request(carol, minute.id, word("expired"))
    expect_not_broken(carol)
    # WHEN she marks it as seen THEN the "new" notice goes, and it still reads expired
    settle(carol)  # after a page load, the login cookie's rerun could drop the click
    mark_seen(carol)
    read_request(carol, minute.id, word("expired"))
    # AND Lake Formation no longer holds it
    grants = lake_formation_table_grants(mesh.demo.standin_endpoint(), CAROL_ACCOUNT)
    assert "supply_chain.inventory" not in grants
