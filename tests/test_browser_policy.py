"""The approval policy in a real browser: a two-step approval, and a column-subset request.

The demo runs as a user runs it, with MESH_POLICY naming the shipped two-step example.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from playwright.sync_api import Browser, Page, expect

from mesh.demo import data
from tests.browser_support import PROJECT, Demo, fresh_page, started_demo
from tests.test_browser import (
    UI_TIMEOUT_MS,
    lake_formation_table_grants,
    open_table,
    outcome_for,
    request_access,
    sign_in,
    wait_until_idle,
)

# As in test_browser.py: a click lost to the login cookie's rerun is retried from scratch.
pytestmark = [pytest.mark.browser, pytest.mark.flaky(reruns=2, reruns_delay=1)]

TWO_STEP = PROJECT / "examples" / "policies" / "two-step-pii.yaml"
CAROL_ACCOUNT = "444455556666"
REASON = "churn model for the retention team (browser test)"


@pytest.fixture
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    folder: Path = tmp_path_factory.mktemp("demo")
    with started_demo(folder, env={"MESH_POLICY": str(TWO_STEP)}) as running:
        yield running


def column_grants(endpoint: str, account: str) -> dict[str, set[str]]:
    """Column grants Lake Formation holds for ``account``: table -> column names."""
    lf = boto3.client(
        "lakeformation",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    entries = lf.list_permissions()["PrincipalResourcePermissions"]
    return {
        f"{e['Resource']['TableWithColumns']['DatabaseName']}."
        f"{e['Resource']['TableWithColumns']['Name']}": set(
            e["Resource"]["TableWithColumns"]["ColumnNames"]
        )
        for e in entries
        if e["Principal"]["DataLakePrincipalIdentifier"] == account
        and "TableWithColumns" in e["Resource"]
    }


def choose(page: Page, label: str, option: str) -> None:
    """Pick an option of a select box, as a person does: type it, click the option."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=label)
    field = box.get_by_role("combobox")
    field.click()
    field.fill(option)  # the combobox opens its list as one types
    page.get_by_role("option", name=option, exact=True).click()
    expect(field).to_have_value(option)


def not_pii(database: str, table: str) -> set[str]:
    """The demo table's columns (and partition keys) that carry no pii_flag."""
    _, columns, keys, _ = data.DATABASES[database][2][table]
    return {c["Name"] for c in [*columns, *keys] if "pii_flag" not in c.get("Parameters", {})}


def approve_on_approvals_page(page: Page, demo: Demo, username: str, progress: str) -> None:
    """Sign in, open Approvals, check the request's progress, and approve it."""
    sign_in(page, demo, username)
    page.get_by_test_id("stSidebar").get_by_role("link", name="Approvals").click()
    waiting = page.locator("[class*='st-key-pending-']").filter(
        has=page.get_by_role("heading", name="sales_orders.customers", exact=True)
    )
    expect(waiting).to_contain_text(progress, timeout=UI_TIMEOUT_MS)
    waiting.get_by_role("button", name="Approve").click()


def test_column_subset_without_pii_is_granted_at_once_in_browser(page: Page, demo: Demo) -> None:
    # GIVEN carol on the customers table, which has PII columns
    sign_in(page, demo, "carol")
    open_table(page, demo, "sales_orders", "customers")
    expect(page.get_by_test_id("stAlert").filter(has_text="waits for approval")).to_be_visible()
    # WHEN she picks "all columns except PII" in one click and requests them
    chosen = page.get_by_test_id("stMultiSelect").filter(has_text="Columns")
    for _ in range(3):  # a click can land in the login cookie's rerun and be lost
        page.get_by_role("button", name="Select all columns except PII").click()
        wait_until_idle(page)
        if "customer_id" in chosen.inner_text():
            break
    for name in sorted(not_pii("sales_orders", "customers")):
        expect(chosen).to_contain_text(name)
    expect(chosen).not_to_contain_text("email")
    expect(page.get_by_text(re.compile("That leaves out: full_name, email, phone"))).to_be_visible()
    request_access(page, "regional customer counts (browser test)")
    # THEN it is granted at once: what remains is public under the policy
    expect(outcome_for(page, "sales_orders.customers(")).to_contain_text(
        "granted", timeout=UI_TIMEOUT_MS
    )
    # AND Lake Formation holds SELECT on exactly those columns, and no whole-table grant
    columns = column_grants(demo.standin_endpoint(), CAROL_ACCOUNT)
    assert columns["sales_orders.customers"] == not_pii("sales_orders", "customers")
    assert "sales_orders.customers" not in {
        name for name, (perms, _) in lake_formation_table_grants(
            demo.standin_endpoint(), CAROL_ACCOUNT
        ).items() if "SELECT" in perms
    }  # fmt: skip


def test_two_step_approval_owner_then_privacy_office_in_browser(
    page: Page, demo: Demo, browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # GIVEN carol requests the whole customers table for 30 days
    sign_in(page, demo, "carol")
    open_table(page, demo, "sales_orders", "customers")
    choose(page, "How long", "30 days")
    wait_until_idle(page)
    request_access(page, REASON)
    pending = outcome_for(page, "sales_orders.customers")
    expect(pending).to_contain_text("waits for approval", timeout=UI_TIMEOUT_MS)

    # WHEN sam, the Sales owner, approves step 1 in his own browser
    with fresh_page(browser, request, tmp_path / "sam", timeout_ms=UI_TIMEOUT_MS) as sams:
        approve_on_approvals_page(sams, demo, "sam", "step 1 of 2: waiting for owner, 0 of 1")
        # THEN his approval is recorded and the request waits for the privacy office
        recorded = sams.get_by_test_id("stAlert").filter(has_text="is recorded")
        expect(recorded).to_contain_text(
            "waiting for privacy-office, 0 of 1", timeout=UI_TIMEOUT_MS
        )
    assert "sales_orders.customers" not in lake_formation_table_grants(
        demo.standin_endpoint(), CAROL_ACCOUNT
    )

    # WHEN priya, of the privacy office, approves step 2 in hers
    with fresh_page(browser, request, tmp_path / "priya", timeout_ms=UI_TIMEOUT_MS) as priyas:
        approve_on_approvals_page(
            priyas,
            demo,
            "priya",
            "step 2 of 2: owner approved (sam); waiting for privacy-office, 0 of 1",
        )
        # THEN it is granted
        expect(outcome_for(priyas, "sales_orders.customers")).to_contain_text(
            "granted", timeout=UI_TIMEOUT_MS
        )
    # AND Lake Formation holds the table grant for carol's account
    both = {"SELECT", "DESCRIBE"}
    grants = lake_formation_table_grants(demo.standin_endpoint(), CAROL_ACCOUNT)
    assert grants.get("sales_orders.customers") == (both, both)
