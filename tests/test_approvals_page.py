"""The Approvals page at size, through AppTest: decisions in bulk, the paged queue, and
granted access paged and searched with one revoke form.

In aws mode against the seeded moto server, signed in through the real login form (see
tests/test_pages.py, whose fixtures these are).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from mesh.models import AccessRequest, Status
from mesh.services import Services, build
from mesh.settings import load_settings
from mesh.workflow import Marketplace
from tests.conftest import client, lake_formation_entries
from tests.support import APP, COOKIE_KEY, flag_column_in_glue, labelled, sign_in, texts
from tests.test_pages import CAROLS_ACCOUNT, app, open_page, web_env
from tests.test_policy_pages import TWO_STEP
from tests.test_workflow import fresh_account

__all__ = ["app", "web_env"]  # the fixtures this module borrows


def waiting(market: Marketplace, count: int) -> list[AccessRequest]:
    """``count`` requests by ada for sales_orders.customers (PII: sam decides), each for a
    fresh account, oldest first."""
    return [
        market.submit(
            "ada",
            database="sales_orders",
            table="customers",
            account=fresh_account(),
            reason="quarterly churn review",
        )
        for _ in range(count)
    ]


def tick(at: AppTest, requests: list[AccessRequest]) -> AppTest:
    for request in requests:
        at.checkbox(key=f"select-{request.id}").check()
    return at.run()


def pending_cards(at: AppTest) -> list[str]:
    return [c.key.removeprefix("pending-") for c in containers(at, "pending-")]


def containers(at: AppTest, prefix: str) -> list[Any]:
    """Every container whose key starts with ``prefix``, in page order."""
    return [c for c in at.container if isinstance(c.key, str) and c.key.startswith(prefix)]


# Decisions in bulk ---------------------------------------------------------------------------


def test_bulk_approval_of_three_requests_reports_each_and_grants_them(
    app: AppTest, market: Marketplace, aws: str
) -> None:
    # GIVEN three requests waiting for sam, ticked on his Approvals page
    requests = waiting(market, 3)
    sign_in(app, "sam")
    open_page(app, "approvals")
    tick(app, requests)
    bar = app.container(key="bulk")
    assert any("3 ticked on this page" in m for m in texts(bar.markdown))
    # WHEN he approves the ticked requests with one comment
    app.text_input(key="bulk-comment").input("quarterly review")
    labelled(bar.button, "Approve selected").click().run()
    # THEN the bar reports one outcome per request, each granted
    assert not app.exception
    outcomes = texts(app.container(key="bulk").success)
    assert len(outcomes) == 3
    for request in requests:
        [line] = [o for o in outcomes if request.id in o]
        assert "granted" in line
    # AND each is granted in the store, by sam with his comment, and in Lake Formation
    for request in requests:
        stored = market.store.get(request.id)
        assert stored is not None and stored.status is Status.GRANTED
        assert (stored.decided_by, stored.comment) == ("sam", "quarterly review")
        assert lake_formation_entries(aws, request.account)
    # AND the queue is empty
    assert "Nothing is waiting for your decision." in texts(app.info)
    assert pending_cards(app) == []


def test_bulk_approval_reports_a_request_decided_meanwhile_and_grants_the_others(
    app: AppTest, market: Marketplace
) -> None:
    # GIVEN two requests ticked on sam's page, carol's and ada's; ada denies carol's before
    # he clicks
    first = market.submit(
        "carol",
        database="sales_orders",
        table="customers",
        account=CAROLS_ACCOUNT,
        reason="churn model",
    )
    [second] = waiting(market, 1)
    sign_in(app, "sam")
    open_page(app, "approvals")
    tick(app, [first, second])
    market.deny(first.id, "ada", comment="duplicate of another request")
    # WHEN he approves the ticked requests
    labelled(app.container(key="bulk").button, "Approve selected").click().run()
    # THEN the one decided meanwhile is reported refused, with why, and the other is granted
    assert not app.exception
    bar = app.container(key="bulk")
    [refused] = texts(bar.error)
    assert first.id in refused and "refused" in refused
    [granted] = texts(bar.success)
    assert second.id in granted
    assert market.store.get(second.id).status is Status.GRANTED  # type: ignore[union-attr]


def test_bulk_denial_needs_a_comment_shown_in_the_bar(app: AppTest, market: Marketplace) -> None:
    # GIVEN two requests ticked on sam's page
    requests = waiting(market, 2)
    sign_in(app, "sam")
    open_page(app, "approvals")
    tick(app, requests)
    # WHEN he denies them without a comment
    labelled(app.container(key="bulk").button, "Deny selected").click().run()
    # THEN the bar, and only the bar, asks for a comment, and both still wait
    assert not app.exception
    [error] = texts(app.container(key="bulk").error)
    assert "comment" in error
    assert len(app.error) == 1
    assert {market.store.get(r.id).status for r in requests} == {Status.PENDING_APPROVAL}  # type: ignore[union-attr]
    # AND nothing he did is lost: both are still ticked
    assert all(app.checkbox(key=f"select-{r.id}").value for r in requests)
    assert any("2 ticked on this page" in m for m in texts(app.container(key="bulk").markdown))
    # WHEN he gives one and denies again
    app.text_input(key="bulk-comment").input("use the aggregated table instead")
    labelled(app.container(key="bulk").button, "Deny selected").click().run()
    # THEN both are denied with it, each reported
    assert not app.exception
    assert len(texts(app.container(key="bulk").info)) == 2
    for request in requests:
        stored = market.store.get(request.id)
        assert stored is not None and stored.status is Status.DENIED
        assert stored.comment == "use the aggregated table instead"


def test_bulk_decision_with_nothing_ticked_says_so_in_the_bar(
    app: AppTest, market: Marketplace
) -> None:
    waiting(market, 1)
    sign_in(app, "sam")
    open_page(app, "approvals")
    labelled(app.container(key="bulk").button, "Approve selected").click().run()
    assert texts(app.container(key="bulk").error) == ["Tick one or more requests first."]


# The queue, paged ----------------------------------------------------------------------------


def test_queue_shows_fifty_oldest_first_then_the_rest_with_the_count(
    app: AppTest, market: Marketplace
) -> None:
    # GIVEN 55 requests waiting for sam
    requests = waiting(market, 55)
    sign_in(app, "sam")
    # WHEN he opens Approvals
    open_page(app, "approvals")
    # THEN he sees the count of all and the oldest 50
    assert not app.exception
    assert any(c.startswith("**55 waiting** · 1–50 shown") for c in texts(app.caption))
    assert pending_cards(app) == [r.id for r in requests[:50]]
    assert labelled(app.button, "← Older").disabled
    # WHEN he moves to the next page
    labelled(app.button, "Newer →").click().run()
    # THEN he sees the other 5, and can go back
    assert any(c.startswith("**55 waiting** · 51–55 shown") for c in texts(app.caption))
    assert pending_cards(app) == [r.id for r in requests[50:]]
    assert labelled(app.button, "Newer →").disabled
    labelled(app.button, "← Older").click().run()
    assert pending_cards(app) == [r.id for r in requests[:50]]


def comment_boxes(at: AppTest) -> list[str]:
    return [t.key for t in at.text_input if str(t.key).startswith("comment-")]


def test_one_card_is_open_for_a_decision_the_others_are_brief(
    app: AppTest, market: Marketplace
) -> None:
    # GIVEN four requests waiting for sam, the newest with a long reason of two paragraphs
    long_reason = "churn model " * 20 + "\n\nthe tail that only the open card shows"
    requests = [
        *waiting(market, 3),
        market.submit(
            "ada",
            database="sales_orders",
            table="customers",
            account=fresh_account(),
            reason=long_reason,
        ),
    ]
    sign_in(app, "sam")
    # WHEN he opens Approvals
    open_page(app, "approvals")
    # THEN only the oldest card is open, with the one comment box and Approve and Deny of
    # the queue; each other card says what it is, who asks and why, with a button to open it
    assert not app.exception
    oldest = requests[0]
    assert comment_boxes(app) == [f"comment-{oldest.id}"]
    assert [b.label for b in app.container(key=f"pending-{oldest.id}").button] == [
        "Approve",
        "Deny",
    ]
    assert len([b for b in app.button if b.label in ("Approve", "Deny")]) == 2
    brief = app.container(key=f"pending-{requests[1].id}")
    [text] = texts(brief.markdown)
    for shown in (requests[1].id, "ada", "quarterly churn review", "sales_orders.customers"):
        assert shown in text
    assert [b.label for b in brief.button] == ["Review and decide"]
    # AND a long reason is one shortened line there
    [text] = texts(app.container(key=f"pending-{requests[3].id}").markdown)
    shown = text.split("**Reason** ")[1].split("  \n")[0]
    assert shown.startswith("churn model churn model") and shown.endswith("…")
    assert len(shown) <= 160 and "the tail" not in text
    # AND every card has its Select box
    assert [c.key for c in app.checkbox] == [f"select-{r.id}" for r in requests]


def test_review_and_decide_opens_a_card_whose_denial_is_recorded_then_the_oldest_is_open(
    app: AppTest, market: Marketplace
) -> None:
    # GIVEN three requests waiting for sam
    requests = waiting(market, 3)
    sign_in(app, "sam")
    open_page(app, "approvals")
    third = requests[2]
    # WHEN he opens the newest with Review and decide
    labelled(app.container(key=f"pending-{third.id}").button, "Review and decide").click().run()
    # THEN it is the open card, with the reason, the policy's reason and the grant preview
    assert not app.exception
    assert comment_boxes(app) == [f"comment-{third.id}"]
    box = app.container(key=f"pending-{third.id}")
    assert third.reason in [t.value for t in box.text]
    assert box.json
    # WHEN he denies it without a comment
    labelled(box.button, "Deny").click().run()
    # THEN the open card says a comment is needed, it stays open, and nothing is decided
    [error] = texts(app.container(key=f"pending-{third.id}").error)
    assert "comment" in error
    assert comment_boxes(app) == [f"comment-{third.id}"]
    assert market.store.get(third.id).status is Status.PENDING_APPROVAL  # type: ignore[union-attr]
    # WHEN he writes one and denies it
    app.text_input(key=f"comment-{third.id}").input("use the aggregated table instead")
    labelled(app.container(key=f"pending-{third.id}").button, "Deny").click().run()
    # THEN the page says so in words, only that request is denied, and the oldest is open
    assert not app.exception
    assert f"Request {third.id} is denied." in texts(app.info)
    stored = market.store.get(third.id)
    assert stored is not None and stored.status is Status.DENIED
    assert stored.comment == "use the aggregated table instead"
    assert pending_cards(app) == [r.id for r in requests[:2]]
    assert comment_boxes(app) == [f"comment-{requests[0].id}"]


def test_approving_the_open_card_opens_the_next_in_line(app: AppTest, market: Marketplace) -> None:
    # GIVEN two requests waiting for sam, the oldest open
    first, second = waiting(market, 2)
    sign_in(app, "sam")
    open_page(app, "approvals")
    # WHEN he approves it with a comment
    app.text_input(key=f"comment-{first.id}").input("fine for the review")
    labelled(app.container(key=f"pending-{first.id}").button, "Approve").click().run()
    # THEN the page says it is granted, and the next request is the open card
    assert not app.exception
    assert [m for m in texts(app.success) if first.id in m and "granted" in m]
    stored = market.store.get(first.id)
    assert stored is not None and (stored.status, stored.comment) == (
        Status.GRANTED,
        "fine for the review",
    )
    assert pending_cards(app) == [second.id]
    assert comment_boxes(app) == [f"comment-{second.id}"]


def test_tick_all_then_the_bar_decides_only_the_ticked_requests_of_the_page_shown(
    app: AppTest, market: Marketplace
) -> None:
    # GIVEN 53 requests waiting for sam, all 50 of the first page ticked
    requests = waiting(market, 53)
    sign_in(app, "sam")
    open_page(app, "approvals")
    labelled(app.button, "Tick all on this page").click().run()
    assert any("50 ticked on this page" in m for m in texts(app.container(key="bulk").markdown))
    # WHEN he moves to the next page, ticks all three there and approves them
    labelled(app.button, "Newer →").click().run()
    assert pending_cards(app) == [r.id for r in requests[50:]]
    labelled(app.button, "Tick all on this page").click().run()
    assert any("3 ticked on this page" in m for m in texts(app.container(key="bulk").markdown))
    app.text_input(key="bulk-comment").input("batch of three")
    labelled(app.container(key="bulk").button, "Approve selected").click().run()
    # THEN those three are granted, each reported, and the 50 of the first page still wait
    assert not app.exception
    assert len(texts(app.container(key="bulk").success)) == 3
    statuses = [market.store.get(r.id).status for r in requests]  # type: ignore[union-attr]
    assert statuses == [Status.PENDING_APPROVAL] * 50 + [Status.GRANTED] * 3
    # AND the page, past the end of a queue now 50 long, shows its last page
    assert any(c.startswith("**50 waiting** · 1–50 shown") for c in texts(app.caption))


# Granted access, searched, one revoke form -----------------------------------------------------


@pytest.fixture
def grants(market: Marketplace) -> dict[str, AccessRequest]:
    """Three grants of sam's products made at once (no PII): two to carol, one to ada."""
    made = {
        "orders": market.submit(
            "carol",
            database="sales_orders",
            table="orders",
            account=CAROLS_ACCOUNT,
            reason="kpis",
        ),
        "order_lines": market.submit(
            "carol",
            database="sales_orders",
            table="order_lines",
            account=CAROLS_ACCOUNT,
            reason="basket sizes",
        ),
        "stores": market.submit(
            "ada",
            database="sales_orders",
            table="stores",
            account=fresh_account(),
            reason="store map",
        ),
    }
    assert {r.status for r in made.values()} == {Status.GRANTED}
    return made


def granted_cards(at: AppTest) -> list[str]:
    return [c.key.removeprefix("granted-") for c in containers(at, "granted-")]


def test_granted_search_narrows_the_list_and_the_picked_grant_is_revoked(
    app: AppTest, market: Marketplace, grants: dict[str, AccessRequest], aws: str
) -> None:
    # GIVEN sam on Approvals, with three grants of his products, newest first
    sign_in(app, "sam")
    open_page(app, "approvals")
    assert granted_cards(app) == [r.id for r in reversed(grants.values())]
    assert len([b for b in app.button if b.label == "Revoke access"]) == 1
    # WHEN he searches for a table
    app.text_input(key="granted-search").input("order_lines").run()
    # THEN only that grant shows; WHEN he searches for a requester, THEN only hers
    target = grants["order_lines"]
    assert granted_cards(app) == [target.id]
    app.text_input(key="granted-search").input("carol").run()
    assert set(granted_cards(app)) == {grants["orders"].id, target.id}
    # WHEN he picks one of them in the revoke form and revokes it, saying why
    app.selectbox(key="revoke-pick").select(target.id)
    app.text_input(key="revoke-comment").input("project ended")
    labelled(app.container(key="revoke").button, "Revoke access").click().run()
    # THEN it is revoked, and only it; Lake Formation no longer holds its table for carol
    assert not app.exception
    assert [m for m in texts(app.success) if target.id in m and "revoked" in m]
    stored = market.store.get(target.id)
    assert stored is not None and stored.status is Status.REVOKED
    assert stored.end_comment == "project ended"
    assert market.store.get(grants["orders"].id).status is Status.GRANTED  # type: ignore[union-attr]
    held = {e["Resource"]["Table"]["Name"] for e in lake_formation_entries(aws, CAROLS_ACCOUNT)}  # type: ignore[index]
    assert "order_lines" not in held and "orders" in held
    assert granted_cards(app) == [grants["orders"].id]


def test_granted_access_pages_fifty_newest_first_with_the_count(
    app: AppTest, market: Marketplace
) -> None:
    # GIVEN 52 grants of sam's products (no PII: granted at once), each for its own account
    made = [
        market.submit(
            "ada",
            database="sales_orders",
            table="stores",
            account=fresh_account(),
            reason="store map",
        )
        for _ in range(52)
    ]
    assert {r.status for r in made} == {Status.GRANTED}
    newest_first = [r.id for r in reversed(made)]
    sign_in(app, "sam")
    # WHEN he opens Approvals
    open_page(app, "approvals")
    # THEN Granted access shows the count and the newest 50, with one revoke form
    assert not app.exception
    assert any(c.startswith("**52 granted** · 1–50 shown") for c in texts(app.caption))
    assert granted_cards(app) == newest_first[:50]
    assert len([b for b in app.button if b.label == "Revoke access"]) == 1
    # WHEN he moves to the older ones
    labelled(app.button, "Older →").click().run()
    # THEN he sees the last two, and the revoke form offers those two
    assert any(c.startswith("**52 granted** · 51–52 shown") for c in texts(app.caption))
    assert granted_cards(app) == newest_first[50:]
    offered = [o.split(" · ")[0] for o in app.selectbox(key="revoke-pick").options]
    assert offered == newest_first[50:]


def test_revoke_with_no_grant_picked_says_so_in_the_form(
    app: AppTest, grants: dict[str, AccessRequest]
) -> None:
    sign_in(app, "sam")
    open_page(app, "approvals")
    app.text_input(key="revoke-comment").input("project ended")
    labelled(app.container(key="revoke").button, "Revoke access").click().run()
    assert texts(app.container(key="revoke").error) == ["Choose the grant to revoke first."]


def test_granted_search_matching_nothing_says_so(
    app: AppTest, grants: dict[str, AccessRequest]
) -> None:
    sign_in(app, "sam")
    open_page(app, "approvals")
    app.text_input(key="granted-search").input("no such thing").run()
    assert granted_cards(app) == []
    assert "No granted access matches the search." in texts(app.info)


def test_granted_access_is_read_without_glue(
    market: Marketplace, grants: dict[str, AccessRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a catalog that fails any read
    def no_glue(*_: Any) -> Any:
        raise AssertionError("the granted list read Glue")

    monkeypatch.setattr(market.catalog, "database", no_glue)
    # WHEN sam (Sales), hank (People) and ada (admin) read what they may revoke
    mine, total = market.revocable_page("sam", search="CAROL")
    # THEN the owner comes from the store, and the search ignores case
    assert total == 2 and {r.id for r in mine} == {grants["orders"].id, grants["order_lines"].id}
    assert market.revocable_for("hank") == []
    assert market.revocable_page("ada")[1] == 3
    assert market.revocable_page("carol") == ([], 0)


def test_admin_bulk_approval_reports_the_step_admins_may_not_approve(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, running_server: None
) -> None:
    # GIVEN the two-step policy, whose first step admins may not approve, and carol's
    # request at that step, ticked on ada's Approvals page (admins see it, with Deny)
    env = {**aws_env, "MESH_COOKIE_KEY": COOKIE_KEY, "MESH_POLICY": str(TWO_STEP)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    services = build(load_settings(env, {}))
    assert services.sync.run(actor="test").error is None
    request = services.marketplace.submit(
        "carol",
        database="sales_orders",
        table="customers",
        account=CAROLS_ACCOUNT,
        reason="churn model for the retention team",
        duration=timedelta(days=30),
    )
    ada = sign_in(AppTest.from_file(APP, default_timeout=30), "ada")
    open_page(ada, "approvals")
    tick(ada, [request])
    # WHEN she approves the ticked requests
    labelled(ada.container(key="bulk").button, "Approve selected").click().run()
    # THEN the bar reports that request as refused, with why, and it still waits
    assert not ada.exception
    [refused] = texts(ada.container(key="bulk").error)
    assert request.id in refused and "refused" in refused
    stored = services.marketplace.store.get(request.id)
    assert stored is not None and stored.status is Status.PENDING_APPROVAL


# The catalog changed since the last sync -------------------------------------------------

MARKETING = "222222222222"  # mia's product account in the demo catalog


def hand_over(aws: str, database: str, owner: str) -> None:
    """Give a product to another owner in Glue, as its producer would, without a sync."""
    glue: Any = client("glue", aws)
    found = glue.get_database(Name=database)["Database"]
    glue.update_database(
        Name=database,
        DatabaseInput={
            "Name": database,
            "Description": found.get("Description", ""),
            "Parameters": {**found.get("Parameters", {}), "data_owner": owner},
        },
    )


def flag_column(aws: str, database: str, table: str, column: str) -> None:
    """Flag one column as PII in Glue, without a sync."""
    flag_column_in_glue(client("glue", aws), database, table, column)


def test_approval_after_glue_changed_owner_uses_glue_and_says_the_catalog_changed(
    app: AppTest, market: Marketplace, aws: str
) -> None:
    # GIVEN carol's request for sales_orders.customers on sam's page, then Glue hands the
    # product to Marketing (mia) after the last sync, so the index still names sam
    [request] = waiting(market, 1)
    sign_in(app, "sam")
    open_page(app, "approvals")
    assert pending_cards(app) == [request.id]
    hand_over(aws, "sales_orders", MARKETING)
    # WHEN sam approves it on the page
    labelled(app.container(key=f"pending-{request.id}").button, "Approve").click().run()
    # THEN the decision followed Glue, not the index: sam is refused, it still waits
    assert not app.exception
    stored = market.store.get(request.id)
    assert stored is not None and stored.status is Status.PENDING_APPROVAL
    assert any("may not" in e or "cannot" in e for e in texts(app.error)), texts(app.error)
    # AND the page says the catalog had changed since the last sync, naming the table
    [note] = [i for i in texts(app.info) if "catalog had changed" in i]
    assert "sales_orders.customers" in note and "Glue" in note
    # AND says what changed: the owner Glue names now
    assert f"its owner is now account {MARKETING}" in note, note
    # AND the index now names Marketing, so the request left sam's queue for mia's
    assert market.index is not None
    assert market.index.database("sales_orders").owner_account == MARKETING  # type: ignore[union-attr]
    assert pending_cards(app.run()) == []
    assert not [i for i in texts(app.info) if "catalog had changed" in i]  # said once


def test_bulk_approval_after_glue_flagged_a_column_grants_and_says_the_catalog_changed(
    app: AppTest, market: Marketplace, aws: str
) -> None:
    # GIVEN two requests ticked on sam's page, then a column of their table is flagged as
    # PII in Glue after the last sync
    requests = waiting(market, 2)
    sign_in(app, "sam")
    open_page(app, "approvals")
    tick(app, requests)
    assert market.index is not None
    before = market.index.table_entry("sales_orders", "customers")
    assert before is not None and "country" not in before.pii_columns
    flag_column(aws, "sales_orders", "customers", "country")
    # WHEN he approves the ticked requests
    labelled(app.container(key="bulk").button, "Approve selected").click().run()
    # THEN both are granted, and the page says once that the catalog had changed
    assert not app.exception
    assert len(texts(app.container(key="bulk").success)) == 2
    notes = [i for i in texts(app.info) if "catalog had changed" in i]
    assert len(notes) == 1 and "sales_orders.customers" in notes[0]
    assert "its PII is now" in notes[0] and "country" in notes[0], notes[0]
    # AND the index took Glue's live read
    after = market.index.table_entry("sales_orders", "customers")
    assert after is not None and "country" in after.pii_columns


# Owners not notified, for a page of the queue ----------------------------------------------


def set_notice(services: Services, request: AccessRequest, status: str, error: str | None) -> None:
    """Give the approval request the request's submit recorded this status and error."""
    [row] = [
        r
        for r in services.marketplace.store.notifications(request_id=request.id)
        if r["kind"] == "approval_request"
    ]
    services.marketplace.store.finish_notification(
        row["id"], {"status": status, "error": error}, []
    )


def test_owners_not_notified_of_a_page_are_read_in_one_query_with_each_cause(
    services: Services, market: Marketplace
) -> None:
    # GIVEN four waiting requests: one whose owner got the message, one whose message
    # failed, one still pending, and one whose message went out before its current step
    # began (a new step asks new approvers)
    sent, failed, pending, old_step = waiting(market, 4)
    set_notice(services, sent, "sent", None)
    set_notice(services, failed, "failed", "AccessDenied: no ProducerWorkflowRole")
    set_notice(services, pending, "pending", None)
    set_notice(services, old_step, "sent", None)
    with services.marketplace.store._write() as db:
        db.execute(
            "UPDATE requests SET step_started_at = '9999-01-01T00:00:00+00:00' WHERE id = ?",
            [old_step.id],
        )
    unknown = "r-00000000"
    # WHEN the page asks about all of them, and a request id the store does not know
    statements: list[str] = []
    with services.marketplace.store._connect() as db:
        db.conn.set_trace_callback(statements.append)
    try:
        causes = services.outbox.owner_not_notified(
            [sent.id, failed.id, pending.id, old_step.id, unknown]
        )
    finally:
        with services.marketplace.store._connect() as db:
            db.conn.set_trace_callback(None)
    # THEN each cause is as before, and the one notified is left out
    assert causes == {
        failed.id: "failed: AccessDenied: no ProducerWorkflowRole",
        pending.id: "pending: not delivered yet",
        old_step.id: "no notification recorded",
        unknown: "no notification recorded",
    }
    # AND it took one query, not two per request (sqlite-utils wraps it in a savepoint)
    queries = [s for s in statements if not s.startswith(("SAVEPOINT", "RELEASE"))]
    assert len(queries) == 1, queries
