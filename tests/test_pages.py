"""The web app through Streamlit's AppTest, in aws mode against the seeded moto server.

Each test signs in through the real login form, moves between the pages registered for the
user's roles, and checks what a person sees and what the store and Lake Formation then hold.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from mesh import ui
from mesh.catalog import GlueCatalog
from mesh.errors import StorageError
from mesh.links import LinkAction
from mesh.models import AccessRequest, Action, Role, Status, User
from mesh.services import Services
from mesh.settings import DEMO_USERS
from mesh.signin import token_id
from mesh.store import Store
from mesh.workflow import Marketplace
from tests.conftest import lake_formation_entries
from tests.support import APP, AUDIT_KEY, COOKIE_KEY, LINK_SECRET, labelled, sign_in, texts

CAROLS_ACCOUNT = "444455556666"

# What each page shows as its title. The database and table pages are opened on
# sales_orders.orders (see open_page), so their title names it.
TITLES = {
    "databases": "Data products",
    "database": "sales_orders",
    "table": "sales_orders.orders",
    "my_requests": "My requests",
    "approvals": "Pending approvals",
    "audit": "Audit log",
}

CATALOG_PAGES = ("databases", "database", "table", "my_requests")
PAGES_BY_USER = {
    # a consumer: the catalog and their own requests
    "carol": CATALOG_PAGES,
    # an owner: also approvals
    "sam": (*CATALOG_PAGES, "approvals"),
    # an owner who also consumes
    "mia": (*CATALOG_PAGES, "approvals"),
    # an admin: everything, the audit log included
    "ada": (*CATALOG_PAGES, "approvals", "audit"),
}


# Fixtures --------------------------------------------------------------------------------


@pytest.fixture
def web_env(
    aws_env: dict[str, str], services: Services, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The web app's environment in aws mode: the seeded moto server plus a cookie key,
    with the catalog index synced (as `mesh sync` or tick does; pages never sync)."""
    assert services.sync.run(actor="test").error is None
    env = {**aws_env, "MESH_COOKIE_KEY": COOKIE_KEY}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def settings_env(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid web settings in aws mode against the moto server, left unseeded, for start-up."""
    Store(tmp_path / "mesh.db").migrate(create=True)  # as `mesh init` makes it
    env = {
        "MESH_MODE": "aws",
        "MESH_DB": str(tmp_path / "mesh.db"),
        "MESH_USERS": str(DEMO_USERS),
        "MESH_COOKIE_KEY": COOKIE_KEY,
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
        "AWS_ENDPOINT_URL": moto_endpoint,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def app(web_env: dict[str, str], running_server: None) -> AppTest:
    """The app, not yet run."""
    return AppTest.from_file(APP, default_timeout=30)


@pytest.fixture
def glue_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Glue read the app makes, by the adapter method that made it, in order."""
    reads: list[str] = []
    for name in ("databases", "tables_with_times", "database", "table"):
        original = getattr(GlueCatalog, name)

        def counted(self: GlueCatalog, *args: Any, _name: str = name, _f: Any = original) -> Any:
            reads.append(_name)
            return _f(self, *args)

        monkeypatch.setattr(GlueCatalog, name, counted)
    return reads


@pytest.fixture
def pending_pii_request(market: Marketplace) -> AccessRequest:
    """Carol's request for a table with PII columns, waiting for Sam (Sales owner)."""
    request = market.submit(
        "carol",
        database="sales_orders",
        table="customers",
        account=CAROLS_ACCOUNT,
        reason="churn model for the retention team",
    )
    assert request.status is Status.PENDING_APPROVAL
    return request


# Helpers ---------------------------------------------------------------------------------


def page(name: str) -> str:
    return f"{ui.PAGES_DIR}/{name}.py"


def open_page(at: AppTest, name: str, *, database: str = "sales_orders", table: str = "orders"):
    """Switch to a page; the database and table pages take their scope from the query."""
    at.query_params = {"db": database, "table": table} if name in ("database", "table") else {}
    return at.switch_page(page(name)).run()


def titles(at: AppTest) -> list[str]:
    return texts(at.title)


def submit_request(at: AppTest, database: str, table: str, *, reason: str) -> AppTest:
    key = f"request-{database}-{table}"
    at.text_area(key=f"{key}-reason").input(reason)
    return labelled(at.button, "Request access").click().run()


def store_requests(market: Marketplace, username: str) -> list[AccessRequest]:
    return market.requests(username=username)


def click_row(at: AppTest, key: str, column: str, value: str) -> AppTest:
    """Click the row of the keyed table whose ``column`` holds ``value``, as a person does."""
    [table] = [d for d in at.dataframe if d.key == key]
    row = list(table.value[column]).index(value)
    at.session_state[key] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    return at.run()


# Sign-in ---------------------------------------------------------------------------------


def test_demo_user_signs_in_through_the_login_form(app: AppTest) -> None:
    # GIVEN the login form
    app.run()
    assert not titles(app)
    # WHEN carol signs in with the demo password
    sign_in(app, "carol")
    # THEN the default page runs, with her name and a sign-out button in the sidebar
    assert titles(app) == [TITLES["databases"]]
    assert any("carol" in c.value for c in app.sidebar.caption)
    assert app.sidebar.button(key="sign_out")


def test_wrong_password_shows_an_error_and_no_page(app: AppTest) -> None:
    # WHEN carol signs in with a wrong password
    sign_in(app, "carol", password="not-the-password")
    # THEN an error shows, the form stays and no page runs
    assert len(app.error) == 1
    assert labelled(app.text_input, "Username")
    assert not titles(app)


def test_a_store_that_fails_during_sign_in_shows_its_sentence_not_a_trace(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the store's server gone away after the app started
    down = StorageError("The store MESH_DB (postgresql://db/mesh) could not be reached.")

    def gone(*args: Any, **kwargs: Any) -> Any:
        raise down

    monkeypatch.setattr(Store, "claim_sign_in_attempt", gone)
    # WHEN carol signs in
    app.run()
    labelled(app.text_input, "Username").input("carol")
    labelled(app.text_input, "Password").input("mesh-demo")
    labelled(app.button, "Sign in").click().run()
    # THEN she reads the store's sentence, with no page and no exception
    assert not app.exception
    assert texts(app.error) == [down.message]
    assert not titles(app)


def test_sign_out_revokes_the_server_side_session(app: AppTest, market: Marketplace) -> None:
    # GIVEN carol signed in, with an open server-side session
    sign_in(app, "carol")
    token = token_id(app.session_state[ui.Keys.SESSION_TOKEN])
    assert not market.store.session(token).revoked_at  # type: ignore[union-attr]
    # WHEN she clicks Sign out
    app.sidebar.button(key="sign_out").click().run()
    # THEN the session is revoked and the login form is back
    assert not app.exception
    assert market.store.session(token).ended_why == "signed out"  # type: ignore[union-attr]
    assert ui.Keys.SESSION_TOKEN not in app.session_state
    assert labelled(app.text_input, "Username")
    assert not titles(app)


# A click in a session that has ended ----------------------------------------------------
# Widget callbacks run before the script (and so before the frame's session check): each
# write checks the server-side session itself.

LONG_AGO = "2000-01-01T00:00:00+00:00"
ENDINGS = {  # the column that ends it, and its value
    "expired": ("expires_at", LONG_AGO),
    "signed out elsewhere": ("revoked_at", LONG_AGO),
    "idle": ("last_seen_at", LONG_AGO),
    "password changed": ("password_fp", "0" * 32),
}


def end_session(app: AppTest, market: Marketplace, how: str) -> None:
    """End this tab's session in the store, as another tab, the clock or a new password would."""
    column, value = ENDINGS[how]
    token = token_id(app.session_state[ui.Keys.SESSION_TOKEN])
    with market.store._write() as db:
        db.execute(f"UPDATE sessions SET {column} = ? WHERE token_id = ?", [value, token])


def refusals(market: Marketplace, actor: str) -> list[dict[str, Any]]:
    return [e.details for e in market.store.audit(actor=actor, action=Action.ACTION_REFUSED.value)]


@pytest.mark.parametrize("how", list(ENDINGS))
def test_approve_in_a_session_that_has_ended_changes_nothing(
    app: AppTest, market: Marketplace, pending_pii_request: AccessRequest, how: str
) -> None:
    # GIVEN sam on the Approvals page, then his session ends on the server
    sign_in(app, "sam")
    open_page(app, "approvals")
    box = app.container(key=f"pending-{pending_pii_request.id}")
    end_session(app, market, how)
    # WHEN he clicks Approve in the tab he still has open
    labelled(box.button, "Approve").click().run()
    # THEN nothing is decided, the refusal is audited, and the sign-in form is back
    assert not app.exception
    assert market.store.get(pending_pii_request.id).status is Status.PENDING_APPROVAL
    assert not market.store.approvals(pending_pii_request.id)
    [refusal] = refusals(market, "sam")
    assert refusal["what"] == "approve" and refusal["why"].startswith("the session is over")
    assert labelled(app.text_input, "Username")
    assert "Your session has ended; sign in again." in texts(app.warning)
    assert ui.Keys.SESSION_TOKEN not in app.session_state


def test_approve_selected_in_a_session_that_has_ended_changes_nothing(
    app: AppTest, market: Marketplace, pending_pii_request: AccessRequest
) -> None:
    # GIVEN sam has ticked a request in the bulk bar, then signs out in another tab
    sign_in(app, "sam")
    open_page(app, "approvals")
    app.checkbox(key=f"select-{pending_pii_request.id}").check().run()
    end_session(app, market, "signed out elsewhere")
    # WHEN he clicks Approve selected
    labelled(app.container(key="bulk").button, "Approve selected").click().run()
    # THEN nothing is decided and the refusal is audited
    assert not app.exception
    assert market.store.get(pending_pii_request.id).status is Status.PENDING_APPROVAL
    [refusal] = refusals(market, "sam")
    assert refusal["what"] == "bulk approve" and "already ended" in refusal["why"]
    assert labelled(app.text_input, "Username")


def test_cancel_in_a_session_that_has_ended_changes_nothing(
    app: AppTest, market: Marketplace, pending_pii_request: AccessRequest
) -> None:
    # GIVEN carol on My requests, then her session expires on the server
    sign_in(app, "carol")
    open_page(app, "my_requests")
    end_session(app, market, "expired")
    # WHEN she clicks Cancel request
    app.button(key=f"cancel-{pending_pii_request.id}").click().run()
    # THEN the request still waits, the refusal is audited, and the form is back
    assert not app.exception
    assert market.store.get(pending_pii_request.id).status is Status.PENDING_APPROVAL
    [refusal] = refusals(market, "carol")
    assert refusal["what"] == "cancel" and "expired" in refusal["why"]
    assert labelled(app.text_input, "Username")


# Every page, every role ------------------------------------------------------------------


@pytest.mark.parametrize("username", list(PAGES_BY_USER))
def test_every_page_of_every_role_runs_cleanly(app: AppTest, username: str) -> None:
    # GIVEN a signed-in user
    sign_in(app, username)
    for name in PAGES_BY_USER[username]:
        # WHEN they open each page their roles get
        open_page(app, name)
        # THEN it runs without exception or error and shows its title
        assert not app.exception, f"{username} on {name}: {app.exception}"
        assert not app.error, f"{username} on {name}: {texts(app.error)}"
        assert titles(app) == [TITLES[name]], f"{username} on {name}"


# Role gating -----------------------------------------------------------------------------

GATING = [
    # a consumer: neither approvals nor audit
    ("carol", "approvals", False),
    ("carol", "audit", False),
    # owners: approvals, not audit
    ("sam", "approvals", True),
    ("sam", "audit", False),
    ("mia", "approvals", True),
    ("mia", "audit", False),
    # an admin: both
    ("ada", "approvals", True),
    ("ada", "audit", True),
]


@pytest.mark.parametrize(("username", "name", "allowed"), GATING)
def test_page_opened_by_its_url_runs_only_for_roles_that_have_it(
    app: AppTest, username: str, name: str, allowed: bool
) -> None:
    # GIVEN the page's URL is opened before signing in (a bookmark, a shared link)
    app.switch_page(page(name))
    # WHEN the user signs in
    sign_in(app, username)
    # THEN the page runs if their roles register it
    assert not app.exception
    if allowed:
        assert titles(app) == [TITLES[name]]
        return
    # ELSE the default page runs instead, none of the page's content shows,
    # and navigation does not know the page at all
    assert titles(app) == [TITLES["databases"]]
    assert not [b for b in app.button if b.label in ("Approve", "Deny")]
    assert not app.download_button
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        app.switch_page(page(name))


def test_page_url_on_a_fresh_server_shows_the_sign_in_form(settings_env: None) -> None:
    # GIVEN a server that has not yet run app.py (no running_server fixture here)
    at = AppTest.from_file(APP, default_timeout=30)
    # WHEN the first request opens the audit page's URL
    at.switch_page(page("audit")).run()
    # THEN the frame runs: the login form shows, not the page script on its own
    assert not at.exception
    assert [w.label for w in at.text_input] == ["Username", "Password"]
    assert TITLES["audit"] not in titles(at)


# Requests on the table page --------------------------------------------------------------


def test_non_pii_table_request_is_granted_at_once(app: AppTest, market: Marketplace) -> None:
    # GIVEN carol on a table without PII
    sign_in(app, "carol")
    open_page(app, "table", database="sales_orders", table="orders")
    # WHEN she requests it with a reason
    submit_request(app, "sales_orders", "orders", reason="weekly revenue dashboard")
    # THEN she is told it is granted, and the store agrees
    assert not app.exception
    [stored] = store_requests(market, "carol")
    assert stored.status is Status.GRANTED
    assert [m for m in texts(app.success) if "granted" in m and stored.id in m]


def test_pii_table_request_says_it_waits_for_the_owner(app: AppTest, market: Marketplace) -> None:
    # GIVEN carol on a table with PII columns
    sign_in(app, "carol")
    open_page(app, "table", database="sales_orders", table="customers")
    # WHEN she requests it
    submit_request(app, "sales_orders", "customers", reason="churn model")
    # THEN she is told it needs the owner's approval, and why
    assert not app.exception
    [stored] = store_requests(market, "carol")
    assert stored.status is Status.PENDING_APPROVAL
    [message] = [m for m in texts(app.info) if stored.id in m]
    assert "approval" in message
    assert stored.policy_reason in message
    assert not app.success


INVALID_REQUESTS = [
    # a consumer who gives only blanks as a reason
    ("carol", None, "   ", "reason"),
    # an admin who types an account id that is not 12 digits
    ("ada", "12345", "quarterly access review", "12 digits"),
]


@pytest.mark.parametrize(("username", "account", "reason", "explains"), INVALID_REQUESTS)
def test_invalid_request_shows_an_error_and_keeps_what_was_typed(
    app: AppTest,
    market: Marketplace,
    username: str,
    account: str | None,
    reason: str,
    explains: str,
) -> None:
    # GIVEN a user on a table page
    sign_in(app, username)
    open_page(app, "table", database="sales_orders", table="orders")
    key = "request-sales_orders-orders"
    if account is not None:
        app.text_input(key=f"{key}-account").input(account)
    # WHEN they submit an invalid request
    submit_request(app, "sales_orders", "orders", reason=reason)
    # THEN one clear error says what is wrong, nothing is stored, and the form keeps its values
    assert not app.exception
    [error] = texts(app.error)
    assert explains in error
    assert not store_requests(market, username)
    assert app.text_area(key=f"{key}-reason").value == reason
    if account is not None:
        assert app.text_input(key=f"{key}-account").value == account


def test_duplicate_request_error_names_the_existing_request(
    app: AppTest, market: Marketplace
) -> None:
    # GIVEN carol already holds access to a table
    first = market.submit(
        "carol", database="sales_orders", table="orders", account=CAROLS_ACCOUNT, reason="v1"
    )
    sign_in(app, "carol")
    open_page(app, "table", database="sales_orders", table="orders")
    # WHEN she requests the same table again
    submit_request(app, "sales_orders", "orders", reason="second dashboard")
    # THEN the error names the existing request and her reason stays in the form
    assert not app.exception
    [error] = texts(app.error)
    assert first.id in error
    assert [r.id for r in store_requests(market, "carol")] == [first.id]
    assert app.text_area(key="request-sales_orders-orders-reason").value == "second dashboard"


# Approvals -------------------------------------------------------------------------------


def test_owner_sees_what_a_pending_request_needs_and_approves_it(
    app: AppTest, market: Marketplace, pending_pii_request: AccessRequest, aws: str
) -> None:
    request = pending_pii_request
    # GIVEN sam, the Sales owner, on the Approvals page
    sign_in(app, "sam")
    open_page(app, "approvals")
    # THEN he sees the request with its reason, the policy's reason and the PII columns
    assert not app.exception
    box = app.container(key=f"pending-{request.id}")
    assert request.reason in [t.value for t in box.text]
    assert request.policy_reason in [t.value for t in box.text]
    markdown = " ".join(texts(box.markdown))
    assert request.id in markdown
    assert request.pii_columns
    assert all(column in markdown for column in request.pii_columns)
    # AND a preview of the table grant for carol's account, with grant option
    [preview] = [json.loads(j.value) for j in box.json]
    [grant] = preview
    assert grant["Principal"] == {"DataLakePrincipalIdentifier": CAROLS_ACCOUNT}
    assert grant["Resource"]["Table"]["DatabaseName"] == "sales_orders"
    assert grant["Resource"]["Table"]["Name"] == "customers"
    assert sorted(grant["Permissions"]) == sorted(grant["PermissionsWithGrantOption"])
    assert sorted(grant["Permissions"]) == ["DESCRIBE", "SELECT"]
    # WHEN he approves it
    labelled(box.button, "Approve").click().run()
    # THEN it is granted, by sam, in the store and in Lake Formation, and leaves the page
    assert not app.exception
    [stored] = store_requests(market, "carol")
    assert stored.status is Status.GRANTED
    assert stored.decided_by == "sam"
    assert [m for m in texts(app.success) if "granted" in m and request.id in m]
    tables = {e["Resource"]["Table"]["Name"] for e in lake_formation_entries(aws, CAROLS_ACCOUNT)}
    assert tables == {"customers"}
    assert not [b for b in app.button if b.label == "Approve"]


def test_deny_without_a_comment_shows_an_error_and_leaves_it_pending(
    app: AppTest, market: Marketplace, pending_pii_request: AccessRequest
) -> None:
    # GIVEN sam on the Approvals page with carol's pending request
    sign_in(app, "sam")
    open_page(app, "approvals")
    box = app.container(key=f"pending-{pending_pii_request.id}")
    # WHEN he denies it without a comment
    labelled(box.button, "Deny").click().run()
    # THEN an error in that request's card asks for a comment, none shows at the top of the
    # page, and the request is still pending
    assert not app.exception
    [error] = texts(app.container(key=f"pending-{pending_pii_request.id}").error)
    assert "comment" in error
    assert len(app.error) == 1
    [stored] = store_requests(market, "carol")
    assert stored.status is Status.PENDING_APPROVAL


def test_deny_with_a_comment_records_the_denial(
    app: AppTest, market: Marketplace, pending_pii_request: AccessRequest
) -> None:
    # GIVEN sam on the Approvals page with carol's pending request
    sign_in(app, "sam")
    open_page(app, "approvals")
    request_id = pending_pii_request.id
    # WHEN he denies it with a comment
    app.text_input(key=f"comment-{request_id}").input("use the aggregated table instead")
    labelled(app.container(key=f"pending-{request_id}").button, "Deny").click().run()
    # THEN it is denied with that comment
    assert not app.exception
    [stored] = store_requests(market, "carol")
    assert stored.status is Status.DENIED
    assert stored.comment == "use the aggregated table instead"
    assert not app.error


# My requests -----------------------------------------------------------------------------


def test_requester_cancels_a_pending_request(
    app: AppTest, market: Marketplace, pending_pii_request: AccessRequest
) -> None:
    # GIVEN carol on My requests with a pending request
    sign_in(app, "carol")
    open_page(app, "my_requests")
    # WHEN she cancels it
    app.button(key=f"cancel-{pending_pii_request.id}").click().run()
    # THEN it is cancelled and offers no cancel button any more
    assert not app.exception
    [stored] = store_requests(market, "carol")
    assert stored.status is Status.CANCELLED
    assert [m for m in texts(app.success) if pending_pii_request.id in m]
    assert not [b for b in app.button if b.label == "Cancel request"]


# Audit -----------------------------------------------------------------------------------


def shown_audit(at: AppTest) -> pd.DataFrame:
    [table] = at.dataframe
    frame: pd.DataFrame = table.value
    return frame


def test_admin_reads_filters_and_downloads_the_audit_log(
    app: AppTest, market: Marketplace, pending_pii_request: AccessRequest
) -> None:
    # GIVEN one granted and one pending request
    market.submit(
        "carol", database="sales_orders", table="orders", account=CAROLS_ACCOUNT, reason="kpis"
    )
    # WHEN ada signs in (an audit row of its own) and opens the audit log
    sign_in(app, "ada")
    events = market.audit()
    open_page(app, "audit")
    # THEN every row shows
    assert not app.exception
    assert sorted(shown_audit(app)["id"]) == sorted(e.id for e in events)
    # WHEN she filters on one action
    wanted = Action.GRANT_SUCCEEDED.value
    app.multiselect(key="audit_action").select(wanted).run()
    # THEN only those rows show
    shown = shown_audit(app)
    assert set(shown["action"]) == {wanted}
    assert sorted(shown["id"]) == sorted(e.id for e in events if e.action == wanted)
    # AND she can download them as CSV, once she asks for it
    app.button(key="audit_csv_prepare").click().run()
    assert "CSV" in app.download_button(key="audit_csv").label


def test_audit_request_filter_shows_one_requests_rows(
    app: AppTest, market: Marketplace, pending_pii_request: AccessRequest
) -> None:
    # GIVEN a second request beside carol's pending one
    market.submit(
        "carol", database="sales_orders", table="orders", account=CAROLS_ACCOUNT, reason="kpis"
    )
    sign_in(app, "ada")
    open_page(app, "audit")
    # WHEN ada filters on the pending request's id
    app.text_input(key="audit_request").input(pending_pii_request.id).run()
    # THEN only its rows show
    shown = shown_audit(app)
    assert set(shown["request_id"]) == {pending_pii_request.id}
    expected = [e.id for e in market.audit() if e.request_id == pending_pii_request.id]
    assert sorted(shown["id"]) == sorted(expected)


# Catalog caching -------------------------------------------------------------------------


def click_through_the_catalog(at: AppTest) -> None:
    """Reruns and page switches a person makes while browsing."""
    at.run()
    at.text_input(key="catalog_search").input("sales").run()
    click_row(at, "databases_table", "name", "sales_orders")
    assert titles(at) == ["sales_orders"]
    click_row(at, "tables_table", "name", "customers")
    assert titles(at) == ["sales_orders.customers"]
    open_page(at, "my_requests")
    open_page(at, "databases")


def test_page_views_read_glue_zero_times(app: AppTest, glue_reads: list[str]) -> None:
    # GIVEN mia (an owner with accounts, so the policy note is judged for each) signed in
    sign_in(app, "mia")
    # WHEN she clicks around the catalog pages
    click_through_the_catalog(app)
    # THEN every page came from the catalog index: Glue was never read
    assert not app.exception
    assert glue_reads == []


def test_catalog_pages_show_the_catalog_age_and_admins_sync_now(
    app: AppTest, glue_reads: list[str]
) -> None:
    # GIVEN carol on the databases page: she reads how old the catalog is, with no button
    sign_in(app, "carol")
    assert any("Catalog synced just now" in c for c in texts(app.caption))
    assert not [b for b in app.button if b.key == "sync_catalog"]
    # WHEN ada, an admin, clicks Sync now
    admin = AppTest.from_file(APP, default_timeout=30)
    sign_in(admin, "ada")
    admin.button(key="sync_catalog").click().run()
    # THEN Glue is read in full, once, and the page says what the sync found
    assert not admin.exception
    assert glue_reads.count("databases") == 1
    assert any("Synced 10 databases and 44 tables" in s for s in texts(admin.success))


# The Databases page: search first, facets, pages ----------------------------------------


def shown_names(at: AppTest) -> list[str]:
    [table] = [d for d in at.dataframe if d.key == "databases_table"]
    return list(table.value["name"]) if "name" in table.value else []


def test_databases_page_search_is_first_and_ranks_the_best_match_first(app: AppTest) -> None:
    # GIVEN carol on the databases page, whose first widget is the search box
    sign_in(app, "carol")
    assert next(t.key for t in app.main.text_input if t.form_id != "login") == "catalog_search"
    # WHEN she searches for customers
    app.text_input(key="catalog_search").input("customers").run()
    # THEN the table named so comes first, among tables whose columns or text match
    names = shown_names(app)
    assert names[0] == "sales_orders.customers"
    assert any("best first" in c for c in texts(app.caption))
    # WHEN she clicks it
    click_row(app, "databases_table", "name", "sales_orders.customers")
    # THEN its table page opens, in one click
    assert titles(app) == ["sales_orders.customers"]


def test_databases_page_facets_narrow_the_results(app: AppTest) -> None:
    # GIVEN carol on the databases page
    sign_in(app, "carol")
    # WHEN she keeps only databases that need no approval
    app.selectbox(key="catalog_kind").set_value("Databases").run()
    app.selectbox(key="catalog_needs_approval").set_value("no").run()
    [table] = [d for d in app.dataframe if d.key == "databases_table"]
    # THEN only such databases show
    assert set(table.value["kind"]) == {"database"}
    assert not table.value["needs_approval"].any()
    # WHEN she keeps what she already has access to (nothing yet)
    app.checkbox(key="catalog_mine").check().run()
    # THEN nothing shows
    assert shown_names(app) == []


def test_databases_page_pages_50_at_a_time(app: AppTest) -> None:
    # GIVEN carol on the databases page: 54 entries (10 databases, 44 tables)
    sign_in(app, "carol")
    first = shown_names(app)
    assert len(first) == 50
    # WHEN she turns to page 2
    app.number_input(key="catalog_page").set_value(2).run()
    # THEN the last 4 show
    assert len(shown_names(app)) == 4
    assert not set(shown_names(app)) & set(first)


# Bad settings ----------------------------------------------------------------------------

BAD_SETTINGS = [
    # an unknown mode
    ("MESH_MODE", "bogus"),
    # a cookie key too short for the web app in aws mode
    ("MESH_COOKIE_KEY", "short"),
    # a users file that does not exist
    ("MESH_USERS", "/nonexistent/users.yaml"),
    # a cache lifetime that is not a number
    ("MESH_CATALOG_TTL", "soon"),
    # an approval policy that cannot be read, or that is broken
    ("MESH_POLICY", "/nonexistent/policy.yaml"),
    ("MESH_POLICY", "examples/policies/../../README.md"),
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_bad_setting_stops_the_app_with_one_sentence(
    settings_env: None, running_server: None, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    # GIVEN one bad setting
    monkeypatch.setenv(name, value)
    # WHEN the app starts
    app = AppTest.from_file(APP, default_timeout=30).run()
    # THEN one error names the setting, without a stack trace, and nothing else runs
    assert not app.exception
    [error] = texts(app.error)
    assert name in error
    assert "Traceback" not in error
    assert not app.text_input
    assert not titles(app)


# Catalog: one PII badge, rows open what they name ----------------------------------------


def test_databases_page_shows_where_pii_is_in_one_column(app: AppTest) -> None:
    # GIVEN carol on the databases page
    sign_in(app, "carol")
    # THEN one PII column says where the PII is: the two databases flagged as a whole say so
    # (no second "contains PII" column can read as disagreeing), others count their tables
    [table] = [d for d in app.dataframe if d.key == "databases_table"]
    pii = table.value.set_index("name")["pii_summary"].to_dict()
    assert pii["sales_crm"] == pii["hr_people"] == "whole database"
    assert pii["sales_orders"] == "in 1 of 6 tables"
    assert pii["marketing_campaigns"] == "none"
    order = list(table.proto.column_order)
    assert "pii_summary" in order
    assert "pii" not in order and "contains_pii" not in order


def test_clicking_a_row_opens_the_database_then_the_table(app: AppTest) -> None:
    # GIVEN carol on the databases page, which has no "open" select box any more
    sign_in(app, "carol")
    assert not [s for s in app.selectbox if s.key == "open_database"]
    # WHEN she clicks hr_people's row
    click_row(app, "databases_table", "name", "hr_people")
    # THEN its page opens, saying the whole database is PII, as each of its tables
    assert not app.exception
    assert titles(app) == ["hr_people"]
    assert any("**PII** whole database" in m for m in texts(app.markdown))
    [tables] = [d for d in app.dataframe if d.key == "tables_table"]
    assert set(tables.value["pii_summary"]) == {"whole database"}
    # WHEN she clicks a table's row
    click_row(app, "tables_table", "name", "employees")
    # THEN that table's page opens
    assert titles(app) == ["hr_people.employees"]


# The request form ------------------------------------------------------------------------


def test_too_long_reason_is_kept_and_the_error_says_by_how_much(
    app: AppTest, market: Marketplace
) -> None:
    # GIVEN carol on a table page
    sign_in(app, "carol")
    open_page(app, "table", database="sales_orders", table="orders")
    # WHEN she pastes a reason of 1,234 characters and submits
    reason = "r" * 1234
    submit_request(app, "sales_orders", "orders", reason=reason)
    # THEN the box keeps all of it, the error says it is 234 characters too long, and
    # nothing is stored
    assert not app.exception
    assert app.text_area(key="request-sales_orders-orders-reason").value == reason
    [error] = texts(app.error)
    assert "too long" in error
    assert "1,234 characters, 234 more than the 1,000 allowed" in error
    assert not store_requests(market, "carol")


def test_consumer_with_several_accounts_picks_one_then_gets_the_last_one_used(
    app: AppTest, market: Marketplace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN dan, who has the partner and the Analytics account, with names for both
    monkeypatch.setenv("MESH_ACCOUNT_NAMES", "444455556666=Analytics,777788889999=Partner")
    sign_in(app, "dan")
    open_page(app, "table", database="sales_orders", table="orders")
    key = "request-sales_orders-orders-account"
    # THEN no account is picked for him, and the picker names the accounts
    picker = app.selectbox(key=key)
    assert picker.value is None
    assert picker.options == ["Partner (777788889999)", "Analytics (444455556666)"]
    # WHEN he submits without picking one, THEN he is asked to, and nothing is stored
    submit_request(app, "sales_orders", "orders", reason="partner revenue share")
    assert "Pick the consumer account the access is for." in texts(app.error)
    assert not store_requests(market, "dan")
    # WHEN he picks Analytics and submits
    app.selectbox(key=key).set_value(CAROLS_ACCOUNT)
    submit_request(app, "sales_orders", "orders", reason="partner revenue share")
    [stored] = store_requests(market, "dan")
    assert stored.account == CAROLS_ACCOUNT
    assert [m for m in texts(app.success) if "Analytics (444455556666)" in m]
    # THEN the next form he opens, the whole database's, has Analytics picked
    open_page(app, "database", database="sales_orders")
    assert app.selectbox(key="request-sales_orders-*-account").value == CAROLS_ACCOUNT


# My requests -----------------------------------------------------------------------------


def test_my_requests_says_who_decided_when_and_their_comment_in_words(
    app: AppTest, market: Marketplace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN carol's denied table request and her pending whole-database request
    monkeypatch.setenv("MESH_ACCOUNT_NAMES", "444455556666=Analytics")
    denied = market.submit(
        "carol", database="sales_crm", table="accounts", account=CAROLS_ACCOUNT, reason="q1"
    )
    denied = market.deny(denied.id, "sam", comment="use the aggregated view instead")
    whole = market.submit(
        "carol", database="hr_people", table=None, account=CAROLS_ACCOUNT, reason="hc"
    )
    # WHEN she opens My requests
    sign_in(app, "carol")
    open_page(app, "my_requests")
    assert not app.exception
    # THEN the denied request's card says, as text, its status, who denied it, when, and why
    card = " ".join(texts(app.container(key=f"req-{denied.id}").markdown))
    assert "denied" in card
    assert f"Denied by sam on {ui.when(denied.decided_at)}: use the aggregated view instead" in card
    assert "Analytics (444455556666)" in card
    # AND times are for people (1 Dec 2026 14:02 UTC), never raw ISO
    assert ui.when(denied.decided_at).endswith(" UTC")
    assert denied.decided_at is not None and denied.decided_at not in card
    # AND the whole database reads as it does elsewhere, never "hr_people.*"
    pending = " ".join(texts(app.container(key=f"req-{whole.id}").markdown))
    assert "hr_people (whole database)" in pending
    assert "hr_people.*" not in pending
    # AND no table on the page hides these in a canvas
    assert not app.dataframe


def test_my_requests_reads_every_cards_approvals_in_one_query(
    app: AppTest, market: Marketplace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN carol with three requests, two waiting and one granted at once
    made = [
        market.submit("carol", database="sales_orders", table=t, account=CAROLS_ACCOUNT, reason="r")
        for t in ("customers", "orders")
    ]
    made.append(
        market.submit("carol", database="hr_people", table=None, account=CAROLS_ACCOUNT, reason="r")
    )
    reads: list[str] = []
    for name in ("approvals", "approvals_of"):
        original = getattr(Store, name)

        def counted(self: Store, *args: Any, _name: str = name, _f: Any = original) -> Any:
            reads.append(_name)
            return _f(self, *args)

        monkeypatch.setattr(Store, name, counted)
    sign_in(app, "carol")
    reads.clear()
    # WHEN she opens My requests
    open_page(app, "my_requests")
    # THEN every card shows, and their approvals were read in one query
    assert not app.exception
    assert all(app.container(key=f"req-{r.id}") for r in made)
    assert reads == ["approvals_of"]


def test_granted_access_for_an_outside_account_shows_ram_commands_as_code(
    app: AppTest, market: Marketplace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN dan's granted request for the partner account, outside the Organization
    monkeypatch.setenv("MESH_ORG_ACCOUNTS", CAROLS_ACCOUNT)
    granted = market.submit(
        "dan", database="sales_orders", table="orders", account="777788889999", reason="share"
    )
    assert granted.status is Status.GRANTED
    # WHEN he opens My requests
    sign_in(app, "dan")
    open_page(app, "my_requests")
    # THEN the RAM steps show without literal backticks, the commands in a code block
    card = app.container(key=f"req-{granted.id}")
    [warning] = texts(card.warning)
    assert "outside the AWS Organization" in warning
    assert "`" not in warning
    [code] = card.code
    assert "aws ram accept-resource-share-invitation" in code.value


# Feedback where the button was pressed -----------------------------------------------------


def test_revoke_without_a_comment_is_refused_inside_the_revoke_form(
    app: AppTest, market: Marketplace
) -> None:
    # GIVEN carol's granted request, on sam's Approvals page
    granted = market.submit(
        "carol", database="sales_orders", table="orders", account=CAROLS_ACCOUNT, reason="kpis"
    )
    sign_in(app, "sam")
    open_page(app, "approvals")
    # WHEN he picks it in the revoke form and clicks Revoke access without saying why
    app.selectbox(key="revoke-pick").select(granted.id)
    labelled(app.container(key="revoke").button, "Revoke access").click().run()
    # THEN the refusal shows in that form, and only there, and the access stays
    assert not app.exception
    [error] = texts(app.container(key="revoke").error)
    assert "comment" in error.lower() or "why" in error.lower()
    assert len(app.error) == 1
    [stored] = store_requests(market, "carol")
    assert stored.status is Status.GRANTED


# Decision links --------------------------------------------------------------------------


def test_decision_link_opened_by_another_owner_says_at_once_they_cannot_decide(
    app: AppTest, market: Marketplace, pending_pii_request: AccessRequest
) -> None:
    # GIVEN an approve link for carol's request, which waits for sam (Sales)
    assert market.links is not None
    token = market.links.token(pending_pii_request.id, LinkAction.APPROVE)
    # WHEN hank, the People owner, opens it
    sign_in(app, "hank")
    app.query_params = {"link": token}
    app.switch_page(page("approvals")).run()
    # THEN he is told at once that he cannot approve it, with no form to confirm
    assert not app.exception
    box = app.container(key="link-confirm")
    [error] = texts(box.error)
    assert error.startswith("You cannot approve this request")
    assert "hank may not decide" in error
    assert not [b for b in app.button if b.label.startswith("Confirm")]
    # AND the request itself is not shown to him: not its requester, account or reason
    shown = " ".join(texts([*app.markdown, *app.caption, *app.subheader]))
    assert pending_pii_request.reason not in shown and CAROLS_ACCOUNT not in shown
    [stored] = store_requests(market, "carol")
    assert stored.status is Status.PENDING_APPROVAL
    # AND his refused look is in the audit log
    refused = [e for e in market.audit() if e.action == Action.ACTION_REFUSED.value]
    assert [e.actor for e in refused] == ["hank"]


# Who is signed in ------------------------------------------------------------------------


def test_sidebar_names_an_approver_group_for_a_user_without_roles(app: AppTest) -> None:
    # GIVEN priya, who has no role but is in the privacy office's approver group
    sign_in(app, "priya")
    # THEN the sidebar says so, instead of "priya ()"
    [caption] = [c for c in texts(app.sidebar.caption) if "Signed in as" in c]
    assert caption == "Signed in as **priya** (approver in privacy-office)"


DESCRIBED = [
    # roles, then approver groups
    (User(username="a", roles=frozenset({Role.OWNER, Role.CONSUMER})), "consumer, owner"),
    (User(username="p", groups=frozenset({"privacy-office"})), "approver in privacy-office"),
    (
        User(username="g", roles=frozenset({Role.ADMIN}), groups=frozenset({"b", "a"})),
        "admin, approver in a, b",
    ),
    # neither
    (User(username="n"), "no role"),
]


@pytest.mark.parametrize(("user", "text"), DESCRIBED)
def test_describe_user(user: User, text: str) -> None:
    assert ui.describe_user(user) == text


# Audit log filters -----------------------------------------------------------------------


def test_audit_log_is_newest_first_and_offers_the_actions_it_holds(
    app: AppTest, market: Marketplace, pending_pii_request: AccessRequest
) -> None:
    # GIVEN a pending request (which also queued and tried a notification), and a request
    # for a whole database
    market.submit("carol", database="hr_people", table=None, account=CAROLS_ACCOUNT, reason="hc")
    # WHEN ada signs in (an audit row of its own) and opens the audit log
    sign_in(app, "ada")
    events = market.audit()
    open_page(app, "audit")
    # THEN the newest row comes first
    assert list(shown_audit(app)["id"]) == sorted((e.id for e in events), reverse=True)
    # AND the Action filter offers exactly the actions in the log, notifications included
    offered = app.multiselect(key="audit_action").options
    assert sorted(offered) == sorted({e.action for e in events})
    assert any(a.startswith("notification_") for a in offered)
    # AND a whole database reads as on every other page
    scopes = set(shown_audit(app)["scope"])
    assert "hr_people (whole database)" in scopes
    assert "hr_people.*" not in scopes


def test_audit_date_range_keeps_the_rows_of_those_days(
    app: AppTest, market: Marketplace, pending_pii_request: AccessRequest
) -> None:
    # GIVEN today's rows
    today = date.fromisoformat(market.audit()[0].at[:10])
    sign_in(app, "ada")
    open_page(app, "audit")
    total = len(shown_audit(app))
    # WHEN ada picks the days before today
    app.date_input(key="audit_dates").set_value(
        (today - timedelta(days=3), today - timedelta(days=1))
    )
    app.run()
    # THEN no row shows; WHEN she picks a range that ends today, THEN all show again
    assert shown_audit(app).empty
    app.date_input(key="audit_dates").set_value((today - timedelta(days=3), today)).run()
    assert len(shown_audit(app)) == total
