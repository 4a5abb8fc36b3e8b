"""The catalog search and the audit filters in a real browser (issue 9).

One demo, started as a user starts it. Carol searches the catalog index and opens the best
match with one click on its row; ada, an admin, narrows the audit log to carol's request and
to one action, and prepares its CSV.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser_support import Demo, started_demo
from tests.test_browser import UI_TIMEOUT_MS, wait_until_idle
from tests.test_browser_journeys import expect_not_broken, go_to, person, submit

pytestmark = [pytest.mark.browser, pytest.mark.flaky(reruns=2, reruns_delay=1)]


@pytest.fixture
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with started_demo(tmp_path_factory.mktemp("catalog")) as running:
        yield running


def caption(page: Page, pattern: str) -> str:
    found = page.get_by_test_id("stCaptionContainer").filter(has_text=re.compile(pattern))
    expect(found.first).to_be_visible(timeout=UI_TIMEOUT_MS)
    return found.first.inner_text()


def test_search_finds_a_table_and_one_click_on_its_row_opens_it(
    browser: Browser, request: pytest.FixtureRequest, tmp_path: Path, demo: Demo
) -> None:
    with person(browser, request, tmp_path, demo, "carol") as carol:
        # GIVEN the Data products page, its search box first
        expect(carol.get_by_role("heading", name="Data products")).to_be_visible()
        expect_not_broken(carol)
        everything = caption(carol, r"entries")
        # WHEN carol searches for "inventory"
        box = carol.get_by_role("textbox", name="Search")
        box.fill("inventory")
        box.press("Enter")
        wait_until_idle(carol)
        # THEN fewer entries match, best first
        narrowed = caption(carol, r"match(es)?, best first")  # a caption only a search shows
        assert int(re.sub(r"\D", "", narrowed.split()[0])) < int(
            re.sub(r"\D", "", everything.split()[0])
        )
        # AND one click on the best match's row opens that table
        grid = carol.get_by_test_id("stDataFrame").first
        area = grid.bounding_box()
        assert area is not None
        carol.mouse.click(area["x"] + 150, area["y"] + 55)
        expect(
            carol.get_by_role("heading", name="supply_chain.inventory", exact=True)
        ).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect_not_broken(carol)


def test_admin_narrows_the_audit_log_to_one_request_and_one_action(
    browser: Browser, request: pytest.FixtureRequest, tmp_path: Path, demo: Demo
) -> None:
    with person(browser, request, tmp_path, demo, "carol") as carol:
        request_id = submit(
            carol, demo, "supply_chain", "shipments", "delivery times (browser test)",
            says="granted",
        )  # fmt: skip
    with person(browser, request, tmp_path, demo, "ada") as ada:
        # GIVEN the audit log, newest first
        go_to(ada, "Audit log", "Audit log")
        everything = caption(ada, r"matching, newest first")
        # WHEN ada types carol's request id
        box = ada.get_by_role("textbox", name="Request id")
        box.fill(request_id)
        box.press("Enter")
        wait_until_idle(ada)
        # THEN only that request's rows are counted
        counted = ada.get_by_test_id("stCaptionContainer").filter(has_text="matching, newest")
        expect(counted.first).not_to_have_text(everything, timeout=UI_TIMEOUT_MS)
        one_request = caption(ada, r"matching, newest first")
        matching = int(re.search(r"of (\d+) matching", one_request).group(1))  # type: ignore[union-attr]
        assert 3 <= matching < int(re.search(r"of (\d+) matching", everything).group(1))  # type: ignore[union-attr]
        # WHEN she also picks the action request_submitted
        actions = ada.get_by_test_id("stMultiSelect").filter(has_text="Action")
        actions.get_by_role("combobox").click()
        ada.get_by_role("option", name="request_submitted", exact=True).click()
        ada.keyboard.press("Escape")
        wait_until_idle(ada)
        # THEN exactly one row matches
        caption(ada, r"rows 1–1 of 1 matching")
        # AND the CSV is prepared only on request, for those rows
        ada.get_by_role("button", name=re.compile("Prepare a CSV of all 1 matching")).click()
        expect(ada.get_by_role("button", name=re.compile("Download"))).to_be_visible(
            timeout=UI_TIMEOUT_MS
        )
        expect_not_broken(ada)
