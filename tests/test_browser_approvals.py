"""Approvals at size in a real browser (issue 9): decisions in bulk, the paged queues, and the
note when Glue changed after the last sync.

One demo, started as a user starts it, and one browser context each for sam (the Sales
owner), carol and dan, who stay signed in as people do. The requests are made through the
Marketplace use cases in this process, against the demo's own database and stand-in, and
the 50-odd waiting ones for paging are copies of a real submission put in through the store:
a person would not click 50 times first, and neither does the test. Everything asserted is
what the page shows. A retry gets a fresh demo and fresh people, as in
test_browser_journeys.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from mesh.models import AccessRequest
from mesh.services import Services, build
from mesh.settings import load_settings
from tests.browser_support import Demo, started_demo
from tests.support import flag_column_in_glue
from tests.test_browser import wait_until_idle
from tests.test_browser_journeys import (
    MAIN_TEXT,
    expect_not_broken,
    go_to,
    open_my_requests,
    person,
    read_request,
    word,
)

pytestmark = [pytest.mark.browser, pytest.mark.flaky(reruns=2, reruns_delay=1)]

CAROLS_ACCOUNT = "444455556666"  # carol's (and dan's second) account in mesh/demo/users.yaml
DANS_ACCOUNT = "777788889999"


@dataclass(frozen=True, kw_only=True)
class Mesh:
    """A running demo, its services in this process, and sam, carol and dan signed in."""

    demo: Demo
    services: Services
    sam: Page
    carol: Page
    dan: Page


@pytest.fixture(scope="module")
def shared_mesh(
    browser: Browser, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    folder = tmp_path_factory.mktemp("approvals")
    with started_demo(folder) as demo, ExitStack() as people:
        yield signed_in(demo, browser, request, folder, people)


@pytest.fixture
def mesh(
    shared_mesh: Mesh, browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Mesh]:
    """The shared mesh on a first try; on a retry a fresh demo and fresh people."""
    if getattr(request.node, "execution_count", 1) <= 1:
        yield shared_mesh
        return
    with started_demo(tmp_path) as demo, ExitStack() as people:
        yield signed_in(demo, browser, request, tmp_path, people)


def signed_in(
    demo: Demo, browser: Browser, request: pytest.FixtureRequest, folder: Path, people: ExitStack
) -> Mesh:
    settings = load_settings(demo.cli_env(), {})
    return Mesh(
        demo=demo,
        services=build(settings, endpoint=demo.standin_endpoint(), by="browser test"),
        sam=people.enter_context(person(browser, request, folder, demo, "sam")),
        carol=people.enter_context(person(browser, request, folder, demo, "carol")),
        dan=people.enter_context(person(browser, request, folder, demo, "dan")),
    )


# Seeding ------------------------------------------------------------------------------------

_accounts = iter(range(10**6))
_ids = iter(range(10**6))


def fresh_account() -> str:
    """An account no other request of this module uses (only an admin may request for it)."""
    return f"{860_000_000_000 + next(_accounts):012d}"


def ask(mesh: Mesh, who: str, scope: str, account: str, reason: str) -> AccessRequest:
    database, _, table = scope.partition(".")
    return mesh.services.marketplace.submit(
        who, database=database, table=table or None, account=account, reason=reason
    )


def queue_copies(mesh: Mesh, count: int) -> list[AccessRequest]:
    """``count`` waiting requests for sam, copies of one real submission by ada (each for its
    own account), put in through the store, older than anything else: oldest first."""
    template = ask(mesh, "ada", "sales_orders.customers", fresh_account(), "paging copy")
    start = datetime.now(UTC) - timedelta(days=30)
    copies = []
    for i in range(count):
        at = (start + timedelta(minutes=i)).isoformat(timespec="milliseconds")
        copy = replace(
            template,
            id=f"r-{0xC0000000 + next(_ids):08x}",
            account=fresh_account(),
            reason=f"paging copy {i:02d}",
            created_at=at,
            updated_at=at,
            step_started_at=at,
        )
        mesh.services.marketplace.store.add_request(copy, [])
        copies.append(copy)
    return copies


# Steps sam takes ------------------------------------------------------------------------------


def open_approvals(sam: Page) -> None:
    go_to(sam, "Approvals", "Pending approvals")
    wait_until_idle(sam)
    expect_not_broken(sam)


def card(sam: Page, request_id: str) -> Locator:
    return sam.locator(f".st-key-pending-{request_id}")


def tick(sam: Page, request_id: str) -> None:
    box = card(sam, request_id).get_by_test_id("stCheckbox")
    box.locator("label").click()
    expect(box.get_by_role("checkbox")).to_be_checked()
    wait_until_idle(sam)


def bar(sam: Page) -> Locator:
    return sam.locator(".st-key-bulk")


def cards_shown(sam: Page) -> list[str]:
    """The ids of the waiting requests' cards, in page order."""
    found = sam.evaluate(
        """() => [...document.querySelectorAll('[class*="st-key-pending-"]')].map(
            (el) => [...el.classList].find((c) => c.startsWith('st-key-pending-')))"""
    )
    return [str(c).removeprefix("st-key-pending-") for c in found]


def caption(page: Page, pattern: str) -> str:
    found = page.get_by_test_id("stCaptionContainer").filter(has_text=re.compile(pattern))
    expect(found.first).to_be_visible()
    return found.first.inner_text()


# Decisions in bulk ----------------------------------------------------------------------------


def test_owner_approves_ticked_requests_with_one_comment_and_each_requester_reads_it(
    mesh: Mesh,
) -> None:
    sam, comment = mesh.sam, "approved together for the quarterly review"
    # GIVEN three PII requests waiting for sam: carol's, and two of dan's
    mine = [
        ask(mesh, "carol", "sales_orders.customers", CAROLS_ACCOUNT, "churn model (bulk)"),
        ask(mesh, "dan", "sales_crm", CAROLS_ACCOUNT, "pipeline review (bulk)"),
        ask(mesh, "dan", "sales_orders.customers", DANS_ACCOUNT, "partner churn (bulk)"),
    ]
    assert {r.status.value for r in mine} == {"pending_approval"}
    # WHEN sam ticks the three on Approvals and approves them with one comment
    open_approvals(sam)
    for request in mine:
        expect(card(sam, request.id)).to_contain_text(request.requester)
        tick(sam, request.id)
    expect(bar(sam)).to_contain_text("3 ticked on this page")
    bar(sam).get_by_role("textbox", name=re.compile("^Comment for all")).fill(comment)
    bar(sam).get_by_role("button", name="Approve selected").click()
    # THEN the bar says, for each, that it is granted, and none of them waits any more
    expect(bar(sam)).to_contain_text("Decided 3: 3 granted")
    for request in mine:
        expect(bar(sam).get_by_test_id("stAlert").filter(has_text=request.id)).to_contain_text(
            "granted"
        )
        expect(card(sam, request.id)).to_have_count(0)
    expect_not_broken(sam)
    # AND carol and dan each read on My requests that sam granted theirs, with his comment
    for page, request in ((mesh.carol, mine[0]), (mesh.dan, mine[1]), (mesh.dan, mine[2])):
        open_my_requests(page)
        read_request(page, request.id, word("granted"), word("sam"), re.escape(comment))
        expect_not_broken(page)


def test_bulk_deny_without_a_comment_is_refused_and_nothing_is_lost(mesh: Mesh) -> None:
    sam = mesh.sam
    # GIVEN two requests waiting for sam, both ticked
    waiting = [
        ask(mesh, "ada", "sales_orders.customers", fresh_account(), "deny check one"),
        ask(mesh, "ada", "sales_orders.customers", fresh_account(), "deny check two"),
    ]
    open_approvals(sam)
    for request in waiting:
        tick(sam, request.id)
    # WHEN he presses Deny selected with no comment
    bar(sam).get_by_role("button", name="Deny selected").click()
    # THEN the bar says a comment is needed, both still wait, still ticked
    refusal = bar(sam).get_by_test_id("stAlert").filter(has_text="comment")
    expect(refusal).to_contain_text("A denial needs a comment")
    for request in waiting:
        expect(card(sam, request.id).get_by_role("checkbox")).to_be_checked()
    expect(bar(sam)).to_contain_text("2 ticked on this page")
    expect_not_broken(sam)
    statuses = {mesh.services.marketplace.store.get(r.id).status.value for r in waiting}  # type: ignore[union-attr]
    assert statuses == {"pending_approval"}
    # WHEN he writes one and denies again
    bar(sam).get_by_role("textbox", name=re.compile("^Comment for all")).fill("duplicates")
    bar(sam).get_by_role("button", name="Deny selected").click()
    # THEN each is denied, in words
    expect(bar(sam)).to_contain_text("Decided 2:")
    for request in waiting:
        expect(bar(sam).get_by_test_id("stAlert").filter(has_text=request.id)).to_contain_text(
            "denied"
        )


# The catalog changed since the last sync ------------------------------------------------------


def flag_in_glue(mesh: Mesh, database: str, table: str, column: str) -> None:
    """Flag one column as PII in the stand-in's Glue, as its producer would, with no sync."""
    flag_column_in_glue(mesh.services.catalog.client, database, table, column)


def test_approval_after_glue_changed_says_the_catalog_changed_and_grants(mesh: Mesh) -> None:
    sam, market = mesh.sam, mesh.services.marketplace
    # GIVEN ada's request for sales_orders.customers waiting for sam, then a column of the
    # table is flagged as PII in Glue after the last sync
    request = ask(mesh, "ada", "sales_orders.customers", fresh_account(), "segment study")
    assert market.index is not None
    before = market.index.table_entry("sales_orders", "customers")
    assert before is not None and "segment" not in before.pii_columns
    flag_in_glue(mesh, "sales_orders", "customers", "segment")
    # WHEN sam opens its card on Approvals and approves it
    open_approvals(sam)
    expect(card(sam, request.id)).to_contain_text(request.id)
    review = card(sam, request.id).get_by_role("button", name="Review and decide")
    if review.count():  # not the oldest waiting: open its card first
        review.click()
        wait_until_idle(sam)
    card(sam, request.id).get_by_role("button", name="Approve", exact=True).click()
    # THEN the page says the catalog had changed and the decision went on what Glue says now
    note = sam.get_by_test_id("stAlert").filter(has_text="catalog had changed")
    expect(note).to_contain_text("sales_orders.customers")
    expect(note).to_contain_text("Glue says now")
    expect_not_broken(sam)
    # AND it is granted, and the index took Glue's read
    stored = market.store.get(request.id)
    assert stored is not None and stored.status.value == "granted"
    after = market.index.table_entry("sales_orders", "customers")
    assert after is not None and "segment" in after.pii_columns


# The queues, paged --------------------------------------------------------------------------


def test_more_than_fifty_waiting_pages_oldest_first_with_the_count(mesh: Mesh) -> None:
    sam, market = mesh.sam, mesh.services.marketplace
    # GIVEN more than 50 requests waiting for sam
    queue_copies(mesh, 53)
    first, waiting = market.pending_page("sam")
    second, _ = market.pending_page("sam", offset=50)
    assert waiting > 50 and second
    # WHEN he opens Approvals
    open_approvals(sam)
    # THEN he reads the count and sees the 50 oldest, oldest first
    caption(sam, rf"{waiting:,} waiting · 1–50 shown, oldest first")
    assert cards_shown(sam) == [i.request.id for i in first]
    expect(card(sam, first[0].request.id)).to_contain_text(first[0].request.reason)
    # WHEN he moves to the newer ones
    sam.get_by_role("button", name="Newer →").click()
    # THEN he sees the next page's requests, oldest first, and the count again
    caption(sam, rf"{waiting:,} waiting · 51–{50 + len(second)} shown")
    wait_until_idle(sam)
    assert cards_shown(sam) == [i.request.id for i in second]
    expect_not_broken(sam)
    # AND Older brings the first page back
    sam.get_by_role("button", name="← Older").click()
    caption(sam, rf"{waiting:,} waiting · 1–50 shown")
    wait_until_idle(sam)
    assert cards_shown(sam) == [i.request.id for i in first]


def test_granted_access_search_narrows_and_one_revoke_reaches_the_requester(
    mesh: Mesh,
) -> None:
    sam, carol = mesh.sam, mesh.carol
    # GIVEN grants of sam's products made at once: carol's, dan's and ada's
    carols = ask(mesh, "carol", "sales_orders.order_lines", CAROLS_ACCOUNT, "basket sizes")
    ask(mesh, "dan", "sales_orders.orders", DANS_ACCOUNT, "partner kpis")
    ask(mesh, "ada", "sales_orders.stores", fresh_account(), "store map")
    market = mesh.services.marketplace
    _, granted = market.revocable_page("sam")
    _, hers = market.revocable_page("sam", search="carol")
    assert 0 < hers < granted
    # WHEN sam searches Granted access for carol
    open_approvals(sam)
    caption(sam, rf"^{granted:,} granted · 1–")
    search = sam.get_by_role("textbox", name="Search granted access")
    search.fill("carol")
    search.press("Enter")
    # THEN the count narrows to hers, and only carol's grants show
    caption(sam, rf"^{hers:,} granted · 1–{hers} shown")
    wait_until_idle(sam)
    shown = sam.evaluate(
        """() => [...document.querySelectorAll('[class*="st-key-granted-r-"]')].map(
            (el) => el.innerText)"""
    )
    assert len(shown) == hers, shown
    assert all("carol" in text for text in shown), shown
    assert any(carols.id in text for text in shown), shown
    # WHEN he picks her order_lines grant in the revoke form and revokes it, saying why
    form = sam.locator(".st-key-revoke")
    pick = form.get_by_role("combobox")
    pick.click()
    pick.fill(carols.id)
    sam.get_by_role("option", name=re.compile(re.escape(carols.id))).click()
    form.get_by_role("textbox", name="Why revoke").fill("project ended (bulk browser test)")
    form.get_by_role("button", name="Revoke access").click()
    # THEN the page says it is revoked
    revoked = sam.get_by_test_id("stAlert").filter(has_text=f"Request {carols.id} is revoked")
    expect(revoked).to_be_visible()
    expect_not_broken(sam)
    # AND carol reads on My requests that sam revoked it, and why
    open_my_requests(carol)
    read_request(carol, carols.id, word("revoked"), word("sam"), re.escape("project ended (bulk"))
    assert "Something went wrong" not in carol.evaluate(MAIN_TEXT)
