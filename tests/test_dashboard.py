"""The dashboard page through Streamlit's AppTest, in aws mode against the seeded moto server.

The queue is made through the use cases with a clock the test moves by hand, so requests
are days old and decisions take hours without any waiting. The charts are read back from
the data Streamlit hands to Vega-Lite.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from mesh import ui
from mesh.metrics import Period
from mesh.models import Status
from mesh.services import Services
from mesh.workflow import utc_now
from tests.support import APP, COOKIE_KEY, sign_in, texts

CAROLS_ACCOUNT = "444455556666"
# Each chart's alt text (what a screen reader says), by what it shows
CHARTS = {
    "product": "Pending requests by product",
    "owner": "Pending requests by owner",
    "decisions": "Median and 90th percentile time to a decision per day",
    "outcomes": "Grants, denials, revocations and expiries per day",
    "notifications": "Notifications that failed per day",
}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.start = self.now = start

    def __call__(self) -> datetime:
        return self.now

    def at(self, **offset: float) -> None:
        """Move to ``offset`` after the start."""
        self.now = self.start + timedelta(**offset)


# Fixtures (the AppTest ones as in test_pages.py) -----------------------------------------


@pytest.fixture
def web_env(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The web app's environment in aws mode: the seeded moto server plus a cookie key."""
    env = {**aws_env, "MESH_COOKIE_KEY": COOKIE_KEY}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def app(web_env: dict[str, str], running_server: None) -> AppTest:
    """The app, not yet run."""
    return AppTest.from_file(APP, default_timeout=30)


@pytest.fixture
def queue(services: Services) -> Services:
    """Ten days of activity made through the use cases, ending now.

    Day 0: carol gets supply_chain.inventory for 7 days (Sales, no PII: granted at once)
    and asks for sales_crm.accounts (Sales, PII), which sam denies 5 hours later.
    Day 1: carol gets sales_orders.orders at once; sam revokes it on day 2.
    Day 4: carol asks for hr_people.employees (People, PII): pending for 6 days.
    Day 7: carol asks for sales_orders.customers (Sales, PII): pending for 3 days.
    Day 8: the periodic job expires the inventory grant.
    """
    market, lifecycle = services.marketplace, services.lifecycle
    clock = Clock(utc_now() - timedelta(days=10))
    market.clock = clock
    if market.outbox is not None:
        market.outbox.clock = clock

    def submit(database: str, table: str, **options: Any) -> str:
        made = market.submit(
            "carol",
            database=database,
            table=table,
            account=CAROLS_ACCOUNT,
            reason="dashboard test",
            **options,
        )
        return made.id

    inventory = submit("supply_chain", "inventory", duration=timedelta(days=7))
    accounts = submit("sales_crm", "accounts")
    clock.at(hours=5)
    market.deny(accounts, "sam", comment="use the aggregated view")
    clock.at(days=1)
    orders = submit("sales_orders", "orders")
    clock.at(days=2)
    lifecycle.revoke(orders, "sam", comment="the project ended")
    clock.at(days=4)
    submit("hr_people", "employees")
    clock.at(days=7)
    submit("sales_orders", "customers")
    clock.at(days=8)
    lifecycle.tick()
    statuses = {r.id: r.status for r in market.requests()}
    assert (statuses[inventory], statuses[accounts], statuses[orders]) == (
        Status.EXPIRED,
        Status.DENIED,
        Status.REVOKED,
    )
    return services


# Helpers ---------------------------------------------------------------------------------


def dashboard_page() -> str:
    return f"{ui.PAGES_DIR}/dashboard.py"


def open_dashboard(at: AppTest, username: str) -> AppTest:
    sign_in(at, username)
    at.switch_page(dashboard_page()).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def charts(at: AppTest) -> dict[str, pd.DataFrame]:
    """Each chart on the page by its alt text, with the data it plots."""
    found: dict[str, pd.DataFrame] = {}
    for chart in at.get("vega_lite_chart"):
        [dataset] = chart.proto.datasets
        found[chart.proto.alt] = convert_arrow_bytes_to_pandas_df(dataset.data.data)
    return found


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def outcome_totals(frame: pd.DataFrame) -> dict[str, int]:
    return {c: int(frame[c].sum()) for c in ("granted", "denied", "revoked", "expired")}


# Owner and admin -------------------------------------------------------------------------


def test_owner_sees_charts_of_their_products_only(app: AppTest, queue: Services) -> None:
    # GIVEN ten days of activity on Sales and People products
    # WHEN sam, the Sales owner, opens the dashboard
    open_dashboard(app, "sam")
    # THEN the metric row counts his one pending request, 3 days old, and his 5 h decision
    values = metric_values(app)
    assert values["Pending now"] == "1"
    assert values["Oldest pending"] == "3.0 days"
    assert values["Median time to decision"] == "5.0 h"
    # AND the pending, decision, outcome and notification charts render
    shown = charts(app)
    assert set(shown) == set(CHARTS.values())
    # AND they hold Sales only: no People request
    assert shown[CHARTS["product"]]["product"].tolist() == ["sales_orders"]
    assert shown[CHARTS["owner"]]["owner"].tolist() == ["Sales (111111111111)"]
    assert shown[CHARTS["decisions"]]["decisions"].sum() == 1
    assert outcome_totals(shown[CHARTS["outcomes"]]) == {
        "granted": 2,
        "denied": 1,
        "revoked": 1,
        "expired": 1,
    }


def test_admin_sees_charts_of_every_product(app: AppTest, queue: Services) -> None:
    # GIVEN ten days of activity on Sales and People products
    # WHEN ada, an admin, opens the dashboard
    open_dashboard(app, "ada")
    # THEN the metric row counts both pending requests, the oldest 6 days old
    values = metric_values(app)
    assert (values["Pending now"], values["Oldest pending"]) == ("2", "6.0 days")
    # AND the pending charts show both products and both owners, with their ages in days,
    # the unit of the "Oldest pending" metric
    shown = charts(app)
    pending = shown[CHARTS["product"]].set_index("product")
    assert pending["pending"].to_dict() == {"hr_people": 1, "sales_orders": 1}
    assert pending["oldest_hours"].round().to_dict() == {"hr_people": 6.0, "sales_orders": 3.0}
    assert sorted(shown[CHARTS["owner"]]["owner"]) == [
        "People (333333333333)",
        "Sales (111111111111)",
    ]
    # AND notifications to producers fail (no producer topic exists here): the metric
    # counts the messages failing now, and the chart counts messages too, not attempts
    store = queue.marketplace.store
    failing = store.notifications(statuses=["failed"])
    attempts = store.audit(action="notification_failed")
    failed_messages = {e.details["notification"] for e in attempts}
    assert failing
    assert len(attempts) > len(failed_messages)  # the periodic job retried some
    assert values["Notifications failing now"] == str(len(failing))
    assert shown[CHARTS["notifications"]]["failures"].sum() == len(failed_messages)


def test_weekly_counts_are_per_monday(app: AppTest, queue: Services) -> None:
    # GIVEN ada on the dashboard
    open_dashboard(app, "ada")
    # WHEN she counts per week
    app.radio(key="dashboard_period").set_value("week").run()
    # THEN the outcome chart counts the same outcomes in weeks starting on Mondays
    assert not app.exception
    outcomes = charts(app)[CHARTS["outcomes"].replace("day", "week")]
    starts = pd.to_datetime(outcomes["period"])
    assert set(starts.dt.day_name()) == {"Monday"}
    assert outcome_totals(outcomes) == {"granted": 2, "denied": 1, "revoked": 1, "expired": 1}


def test_empty_queue_shows_friendly_messages_instead_of_charts(
    app: AppTest, services: Services
) -> None:
    # GIVEN no request at all
    # WHEN sam opens the dashboard
    open_dashboard(app, "sam")
    # THEN no chart is drawn, each section says so, and the metrics show nothing pending
    assert not charts(app)
    assert len(app.info) == 4
    assert "Nothing is waiting for a decision." in texts(app.info)
    values = metric_values(app)
    assert (values["Pending now"], values["Median time to decision"]) == ("0", "none yet")


def test_window_leaves_out_older_activity(app: AppTest, queue: Services) -> None:
    # GIVEN sam on the dashboard, whose last decision was made 9.8 days ago
    open_dashboard(app, "sam")
    # WHEN he narrows the window to the last 7 days
    app.selectbox(key="dashboard_window").set_value("Last 7 days").run()
    # THEN the decision falls out, the expiry 2 days ago stays, and pending is unchanged
    assert not app.exception
    shown = charts(app)
    assert CHARTS["decisions"] not in shown
    assert outcome_totals(shown[CHARTS["outcomes"]]) == {
        "granted": 0,
        "denied": 0,
        "revoked": 0,
        "expired": 1,
    }
    values = metric_values(app)
    assert (values["Pending now"], values["Median time to decision"]) == ("1", "none yet")


# Role gating -----------------------------------------------------------------------------


def test_consumer_cannot_open_the_dashboard(app: AppTest) -> None:
    # GIVEN carol, a consumer, signed in
    sign_in(app, "carol")
    # WHEN she tries to open the dashboard
    # THEN navigation does not know the page
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        app.switch_page(dashboard_page())


def test_dashboard_url_before_sign_in_gives_a_consumer_the_default_page(
    app: AppTest, queue: Services
) -> None:
    # GIVEN the dashboard's URL is opened before signing in (a bookmark, a shared link)
    app.switch_page(dashboard_page())
    # WHEN carol signs in
    sign_in(app, "carol")
    # THEN the default page runs instead, with no dashboard title, metric or chart
    assert texts(app.title) == ["Data products"]
    assert not app.metric
    assert not charts(app)


# Units and axes --------------------------------------------------------------------------


def chart_spec(at: AppTest, alt_text: str) -> dict[str, Any]:
    [chart] = [c for c in at.get("vega_lite_chart") if c.proto.alt == alt_text]
    spec: dict[str, Any] = json.loads(chart.proto.spec)
    return spec


def test_decision_chart_is_in_the_metrics_unit_with_every_point_inside_its_axis(
    app: AppTest, queue: Services
) -> None:
    # GIVEN sam's one decision, made 5 hours after the request
    # WHEN he opens the dashboard
    open_dashboard(app, "sam")
    # THEN the metric says hours, and so does the chart's axis
    assert metric_values(app)["Median time to decision"] == "5.0 h"
    y = chart_spec(app, CHARTS["decisions"])["encoding"]["y"]
    assert y["title"] == "Time to decision (hours)"
    # AND the axis ends above the highest point, so no point is drawn on or past its edge
    data = charts(app)[CHARTS["decisions"]]
    assert data["90th percentile"].max() == pytest.approx(5.0)
    assert y["scale"]["domain"][0] == 0
    assert y["scale"]["domain"][1] > data["90th percentile"].max()
    # AND the pending chart's legend is in days, as the "Oldest pending" metric
    assert metric_values(app)["Oldest pending"] == "3.0 days"
    legend = chart_spec(app, CHARTS["product"])["encoding"]["color"]
    assert legend["title"] == "Oldest (days)"


def test_decisions_in_minutes_are_charted_in_minutes(app: AppTest, services: Services) -> None:
    # GIVEN a request that sam denied four minutes after it was made
    market = services.marketplace
    clock = Clock(utc_now() - timedelta(hours=1))
    market.clock = clock
    made = market.submit(
        "carol",
        database="sales_crm",
        table="accounts",
        account=CAROLS_ACCOUNT,
        reason="dashboard test",
    )
    clock.at(minutes=4)
    market.deny(made.id, "sam", comment="not this quarter")
    # WHEN sam opens the dashboard
    open_dashboard(app, "sam")
    # THEN the metric says 4 min, and the chart's axis is in minutes with the point at 4
    assert metric_values(app)["Median time to decision"] == "4 min"
    assert chart_spec(app, CHARTS["decisions"])["encoding"]["y"]["title"] == (
        "Time to decision (minutes)"
    )
    assert charts(app)[CHARTS["decisions"]]["median"].round(6).tolist() == [4.0]


# What a run reads --------------------------------------------------------------------------


def test_dashboard_reads_only_the_rows_it_charts_not_the_whole_store(
    queue: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN ten days of activity, and every read of requests, audit rows and messages noted
    store = queue.marketplace.store
    reads: list[tuple[str, dict[str, Any]]] = []
    for name in ("requests", "audit", "notifications"):
        real = getattr(store, name)

        def noted(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            reads.append((_name, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(store, name, noted)
    # WHEN ada's dashboard for the last 7 days is built
    board = queue.marketplace.dashboard_for("ada", period=Period.DAY, days=7)
    # THEN each read was narrowed in SQL: pending or decided in the window, the window's
    # outcome and failure rows, the failed messages; none read a whole table
    assert board.headline.pending == 2
    assert reads and all(
        kwargs.get("statuses") or kwargs.get("decided_since") or kwargs.get("filters")
        for _, kwargs in reads
    )
    [(_, audit)] = [r for r in reads if r[0] == "audit"]
    assert audit["filters"].since is not None and audit["filters"].actions
