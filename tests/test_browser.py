"""A person in a real browser: sign in, request, approve, and Lake Formation holds the grants.

Playwright drives Debian's chromium against the demo started as a user starts it,
``python -m mesh demo``, which runs the moto stand-in and ``streamlit run`` in a subprocess.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser_support import Demo, started_demo

# A real browser against a real server: the sign-in cookie is written by a script frame a
# moment after sign-in (mesh/ui_signin.py), and a click made while a run is in progress can
# be lost; the helpers wait and click again. Each test has a demo of its own, so it can be
# tried again from scratch, up to twice; a failure in all three tries is a real failure.
pytestmark = [pytest.mark.browser, pytest.mark.flaky(reruns=2, reruns_delay=1)]

PROJECT = Path(__file__).resolve().parents[1]
PASSWORD = "mesh-demo"
CAROL_ACCOUNT = "444455556666"  # carol's only consumer account in mesh/demo/users.yaml
COOKIE = "mesh_marketplace_auth"  # cookie.name in mesh/demo/users.yaml
UI_TIMEOUT_MS = 30_000


# Fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`python -m mesh demo` on free ports, with its database and stand-in file in a tmp dir."""
    with started_demo(tmp_path_factory.mktemp("demo")) as running:
        yield running


# Steps a person takes -----------------------------------------------------------------------


def wait_until_idle(page: Page) -> None:
    """Wait for the end of the script run in progress (Streamlit marks it on stApp)."""
    expect(page.get_by_test_id("stApp")).to_have_attribute(
        "data-test-script-state", "notRunning", timeout=UI_TIMEOUT_MS
    )


def sign_in(page: Page, demo: Demo, username: str) -> None:
    page.goto(demo.url)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=UI_TIMEOUT_MS)
    signed_in = page.get_by_test_id("stSidebar").get_by_text(f"Signed in as {username}")
    # A submit made while the page's first run is still going can be dropped (with
    # streamlit-authenticator's widget the first submit often was): submit again if the form
    # stays.
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
    settle(page)


def settle(page: Page) -> None:
    """Let the sign-in cookie's script frame write the cookie and the run finish, so the next
    click is not dropped by a run in progress."""
    page.wait_for_function(f"document.cookie.includes('{COOKIE}=')", timeout=UI_TIMEOUT_MS)
    page.wait_for_timeout(1_500)
    wait_until_idle(page)


def open_table(page: Page, demo: Demo, database: str, table: str) -> None:
    """Open the table's page by its link; a new page load signs in from the login cookie."""
    # A script frame writes the cookie in the browser a moment after sign-in.
    page.wait_for_function(f"document.cookie.includes('{COOKIE}=')", timeout=UI_TIMEOUT_MS)
    page.goto(f"{demo.url}/table?db={database}&table={table}")
    expect(page.get_by_role("heading", name=f"{database}.{table}", exact=True)).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    settle(page)


def request_access(page: Page, reason: str) -> None:
    page.get_by_label(re.compile(r"^Reason")).fill(reason)
    page.get_by_role("button", name="Request access").click()


def outcome_for(page: Page, scope: str) -> Locator:
    """The message the request form shows for this scope (the page's own hints never name it)."""
    return page.get_by_test_id("stAlert").filter(has_text=scope)


def lake_formation_table_grants(
    endpoint: str, account: str
) -> dict[str, tuple[set[str], set[str]]]:
    """Table grants Lake Formation holds for ``account``: name -> (permissions, grantable)."""
    lf = boto3.client(
        "lakeformation",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    entries: list[dict[str, object]] = []
    params: dict[str, str] = {}
    while True:  # list_permissions has no paginator
        response = lf.list_permissions(**params)
        entries.extend(response["PrincipalResourcePermissions"])
        if not response.get("NextToken"):
            break
        params = {"NextToken": response["NextToken"]}
    return {
        f"{e['Resource']['Table']['DatabaseName']}.{e['Resource']['Table']['Name']}": (
            set(e["Permissions"]),
            set(e.get("PermissionsWithGrantOption", [])),
        )
        for e in entries
        if e["Principal"]["DataLakePrincipalIdentifier"] == account and "Table" in e["Resource"]
    }


# Tests ------------------------------------------------------------------------------------


def test_consumer_gets_clean_table_at_once_and_pii_table_after_owner_approves_in_browser(
    page: Page, demo: Demo
) -> None:
    # GIVEN carol, a consumer, signed in to the running demo
    sign_in(page, demo, "carol")

    # WHEN she requests a table with no PII
    open_table(page, demo, "sales_orders", "orders")
    request_access(page, "weekly revenue dashboard (browser test)")
    # THEN the page says it is granted at once
    expect(outcome_for(page, "sales_orders.orders")).to_contain_text(
        "granted", timeout=UI_TIMEOUT_MS
    )

    # WHEN she requests a table with PII columns
    open_table(page, demo, "sales_orders", "customers")
    request_access(page, "churn model (browser test)")
    # THEN the page says it waits for the owner's approval
    pending = outcome_for(page, "sales_orders.customers")
    expect(pending).to_contain_text("approval", timeout=UI_TIMEOUT_MS)
    expect(pending).not_to_contain_text("granted")

    # WHEN she signs out
    page.get_by_test_id("stSidebar").get_by_role("button", name="Sign out").click()
    # THEN the sign-in form is back, also after a new page load
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.reload()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=UI_TIMEOUT_MS)
    wait_until_idle(page)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.get_by_test_id("stSidebar")).to_have_count(0)

    # WHEN sam, the Sales owner, signs in and opens Approvals
    sign_in(page, demo, "sam")
    page.get_by_test_id("stSidebar").get_by_role("link", name="Approvals").click()
    # THEN carol's PII request is waiting for him, with her reason
    waiting = page.locator("[class*='st-key-pending-']").filter(
        has=page.get_by_role("heading", name="sales_orders.customers", exact=True)
    )
    expect(waiting).to_contain_text("carol", timeout=UI_TIMEOUT_MS)
    expect(waiting).to_contain_text("churn model (browser test)")

    # WHEN he approves it
    waiting.get_by_role("textbox").fill("ok for the churn model")
    waiting.get_by_role("button", name="Approve").click()
    # THEN the page says it is granted, and it no longer waits
    expect(outcome_for(page, "sales_orders.customers")).to_contain_text(
        "granted", timeout=UI_TIMEOUT_MS
    )
    expect(page.get_by_role("heading", name="sales_orders.customers", exact=True)).to_have_count(0)

    # THEN Lake Formation itself holds both table grants for carol's account
    grants = lake_formation_table_grants(demo.standin_endpoint(), CAROL_ACCOUNT)
    both = {"SELECT", "DESCRIBE"}
    assert grants.get("sales_orders.orders") == (both, both)
    assert grants.get("sales_orders.customers") == (both, both)


def test_request_without_reason_shows_a_clear_error_and_no_traceback(
    page: Page, demo: Demo
) -> None:
    # GIVEN carol, signed in, on a table page
    sign_in(page, demo, "carol")
    open_table(page, demo, "sales_orders", "order_lines")
    # WHEN she asks for access without a reason
    request_access(page, "")
    # THEN the page names the missing reason in an error, and shows no stack trace
    error = page.get_by_test_id("stAlertContentError")
    expect(error).to_contain_text(re.compile("reason", re.IGNORECASE), timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.locator("body")).not_to_contain_text("Traceback")
    expect(outcome_for(page, "sales_orders.order_lines")).to_have_count(0)
