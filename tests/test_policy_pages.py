"""The web app under the two-step example policy (AppTest, aws mode, the seeded moto server).

What each person sees: the policy's verdict before requesting, each step's progress on
Approvals, and a request listed only for those who can act on its current step.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mesh import ui
from mesh.models import AccessRequest, Status
from mesh.services import build
from mesh.settings import load_settings
from mesh.workflow import Marketplace
from tests.conftest import lake_formation_entries
from tests.support import APP, COOKIE_KEY, labelled, sign_in, texts

TWO_STEP = Path(__file__).resolve().parent.parent / "examples" / "policies" / "two-step-pii.yaml"
ANALYTICS = "444455556666"
REASON = "churn model for the retention team"


@pytest.fixture
def market(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Marketplace:
    """The two-step policy for the web app and for this test's own reads."""
    env = {**aws_env, "MESH_COOKIE_KEY": COOKIE_KEY, "MESH_POLICY": str(TWO_STEP)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    services = build(load_settings(env, {}))
    assert services.sync.run(actor="test").error is None  # pages read the catalog index
    return services.marketplace


def app_as(username: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    return sign_in(at, username)


def open_page(at: AppTest, name: str, **query: str) -> AppTest:
    at.query_params = query
    return at.switch_page(f"{ui.PAGES_DIR}/{name}.py").run()


def waiting(market: Marketplace) -> AccessRequest:
    return market.submit(
        "carol",
        database="sales_orders",
        table="customers",
        account=ANALYTICS,
        reason=REASON,
        duration=timedelta(days=30),
    )


def test_table_page_says_which_steps_a_request_will_wait_for(
    market: Marketplace, running_server: None
) -> None:
    at = open_page(app_as("carol"), "table", db="sales_orders", table="customers")
    assert not at.exception
    [note] = [w for w in texts(at.warning) if "waits for approval" in w]
    assert note.startswith("Level **pii**: a request waits for approval (an owner of the product")
    assert "then privacy-office: any one" in note
    assert "The policy asks for at most 90 days; a duration or an end date; a reason of at " \
        "least 20 characters." in texts(at.caption)  # fmt: skip


def test_request_with_too_short_a_reason_is_refused_and_keeps_what_was_typed(
    market: Marketplace, running_server: None
) -> None:
    at = open_page(app_as("carol"), "table", db="sales_orders", table="customers")
    key = "request-sales_orders-customers"
    at.text_area(key=f"{key}-reason").input("churn")
    at.selectbox(key=f"{key}-period").select("30 days")
    labelled(at.button, "Request access").click().run()
    assert not at.exception
    [error] = texts(at.error)
    assert "at least 20 characters" in error
    assert at.text_area(key=f"{key}-reason").value == "churn"
    assert market.requests() == []


def test_each_step_shows_its_progress_to_whoever_can_act_on_it(
    market: Marketplace, running_server: None, aws: str
) -> None:
    request = waiting(market)
    # GIVEN step 1: sam (owner) sees the request and its progress; priya does not yet
    sam = open_page(app_as("sam"), "approvals")
    box = sam.container(key=f"pending-{request.id}")
    assert "**Level** pii · **Progress** step 1 of 2: waiting for owner, 0 of 1" in texts(
        box.markdown
    )
    priya = open_page(app_as("priya"), "approvals")
    assert not priya.exception
    assert "Nothing is waiting for your decision." in texts(priya.info)
    # WHEN sam approves
    labelled(box.button, "Approve").click().run()
    assert not sam.exception
    stored = market.store.get(request.id)
    assert stored is not None and stored.status is Status.PENDING_APPROVAL
    assert not [b for b in sam.button if b.label == "Approve"]
    # THEN carol's request says where it stands
    carol = open_page(app_as("carol"), "my_requests")
    progress = "step 2 of 2: owner approved (sam); waiting for privacy-office, 0 of 1"
    assert any(progress in line for line in texts(carol.markdown))
    assert any(line.startswith("Approved by sam on ") for line in texts(carol.markdown))
    # AND priya (the privacy office) now sees it, and her approval grants it
    priya = open_page(app_as("priya"), "approvals")
    box = priya.container(key=f"pending-{request.id}")
    assert f"**Level** pii · **Progress** {progress}" in texts(box.markdown)
    labelled(box.button, "Approve").click().run()
    assert not priya.exception
    stored = market.store.get(request.id)
    assert stored is not None and stored.status is Status.GRANTED
    assert lake_formation_entries(aws, ANALYTICS)
    # AND carol reads that both approved it, sam then priya
    carol = open_page(app_as("carol"), "my_requests")
    card = texts(carol.container(key=f"req-{request.id}").markdown)
    approved = [line.split(" on ")[0] for line in card if line.startswith("Approved by")]
    assert approved == ["Approved by sam", "Approved by priya"]


def test_the_note_judges_for_the_users_own_accounts(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, running_server: None
) -> None:
    # GIVEN the restricted-stewards policy: internal data is granted at once inside its domain
    policy = TWO_STEP.parent / "restricted-stewards.yaml"
    for name, value in {
        **aws_env,
        "MESH_COOKIE_KEY": COOKIE_KEY,
        "MESH_POLICY": str(policy),
    }.items():
        monkeypatch.setenv(name, value)
    assert build(load_settings()).sync.run(actor="test").error is None  # as `mesh sync` does
    # WHEN carol, whose account is in the finance domain, opens an internal finance table
    at = open_page(app_as("carol"), "table", db="finance_ledger", table="budgets")
    # THEN she is told it is granted at once, and why
    assert not at.exception
    [note] = [s for s in texts(at.success) if s.startswith("Level **internal**")]
    assert "access is granted at once" in note
    assert "belongs to domain finance" in note
    # AND on a restricted table, that it waits for two stewards
    at = open_page(app_as("carol"), "table", db="finance_ledger", table="gl_entries")
    [note] = [w for w in texts(at.warning) if w.startswith("Level **restricted**")]
    assert "stewards: 2 different people" in note


def test_admin_may_deny_but_not_approve_where_the_policy_keeps_admins_out(
    market: Marketplace, running_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a request at the two-step policy's first step, which admins may not approve
    monkeypatch.setenv("MESH_ACCOUNT_NAMES", f"{ANALYTICS}=Analytics")
    request = waiting(market)
    # WHEN ada, an admin, opens Approvals
    ada = open_page(app_as("ada"), "approvals")
    # THEN she sees the request with Deny, but no Approve, and is told why
    assert not ada.exception
    assert "Nothing is waiting for your decision." not in texts(ada.info)
    box = ada.container(key=f"pending-{request.id}")
    assert [b.label for b in box.button] == ["Deny"]
    [why] = texts(box.info)
    assert "may deny this request, but not approve it" in why
    assert any(f"**Target account** Analytics ({ANALYTICS})" in m for m in texts(box.markdown))
    assert "does not let admins approve this step" in why
    # WHEN she denies it with a comment
    ada.text_input(key=f"comment-{request.id}").input("stuck: the owner left")
    labelled(box.button, "Deny").click().run()
    # THEN it is denied by her
    assert not ada.exception
    stored = market.store.get(request.id)
    assert stored is not None and stored.status is Status.DENIED
    assert stored.decided_by == "ada"
