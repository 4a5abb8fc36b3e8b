"""Dashboard (owners and admins): the queue at a glance, as charts.

Owners see the requests for their products; admins see every request.
"""

import altair as alt
import pandas as pd
import streamlit as st

from mesh import metrics, ui
from mesh.errors import MeshError

WINDOWS = {"Last 7 days": 7, "Last 30 days": 30, "Last 90 days": 90, "All time": None}
PERIOD_TITLES = {metrics.Period.DAY: "Day", metrics.Period.WEEK: "Week starting"}
OUTCOME_COLOURS = {
    metrics.Outcome.GRANTED: "#2e9e5b",
    metrics.Outcome.DENIED: "#f0a202",
    metrics.Outcome.REVOKED: "#d64545",
    metrics.Outcome.EXPIRED: "#8d8d99",
}
FAILURE_COLOURS = {"failures": "#d64545"}


def owner_names(ctx: ui.Context) -> dict[str, str]:
    """Producer names from the catalog; without them the charts name owners by account id."""
    try:
        return ui.owner_names(ctx.services)
    except MeshError:  # the dashboard reads the store; a catalog outage costs only the names
        return {}


def pending_chart(frame: pd.DataFrame, column: str, title: str) -> alt.Chart:
    """Bars of pending requests, coloured by the age of the oldest, in a unit that fits it."""
    aged, unit = metrics.in_unit(frame, ["oldest_hours"])
    return (
        alt.Chart(aged, title=title)
        .mark_bar()
        .encode(
            x=alt.X("pending:Q", title="Pending requests", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y(f"{column}:N", title=None, sort="-x", axis=alt.Axis(labelLimit=300)),
            color=alt.Color(
                "oldest_hours:Q",
                title=f"Oldest ({unit.title})",
                scale=alt.Scale(scheme="oranges", domainMin=0),
                legend=alt.Legend(format=f".{unit.digits}f"),
            ),
            tooltip=[
                column,
                "pending",
                alt.Tooltip("oldest_hours:Q", title=f"oldest ({unit.title})", format=".1f"),
            ],
        )
    )


def counts_chart(frame: pd.DataFrame, colours: dict[str, str], period: metrics.Period) -> alt.Chart:
    """Stacked bars of counts per day or week, one colour per counted column."""
    labelled = frame.assign(period=frame["period"].dt.strftime("%Y-%m-%d"))
    columns = list(colours)
    legend = alt.Legend() if len(columns) > 1 else None
    return (
        alt.Chart(labelled)
        .transform_fold(columns, as_=["what", "count"])
        .mark_bar()
        .encode(
            x=alt.X("period:O", title=PERIOD_TITLES[period], axis=alt.Axis(labelOverlap=True)),
            y=alt.Y("sum(count):Q", title="Count", axis=alt.Axis(tickMinStep=1)),
            color=alt.Color(
                "what:N",
                title=None,
                sort=columns,
                scale=alt.Scale(domain=columns, range=list(colours.values())),
                legend=legend,
            ),
            tooltip=["period:O", "what:N", "sum(count):Q"],
        )
    )


def decision_chart(frame: pd.DataFrame, period: metrics.Period) -> alt.Chart:
    """The median and 90th percentile time to a decision per period, in a unit that fits.

    The periods are labelled like the count charts', and the axis ends above the highest
    point, so a single period (the demo) still shows two labelled points inside the chart.
    """
    named = frame.rename(columns={"median_hours": "median", "p90_hours": "90th percentile"})
    scaled, unit = metrics.in_unit(named, ["median", "90th percentile"])
    scaled = scaled.assign(period=scaled["period"].dt.strftime("%Y-%m-%d"))
    top = metrics.axis_top(float(scaled["90th percentile"].max()))
    return (
        alt.Chart(scaled)
        .transform_fold(["median", "90th percentile"], as_=["measure", "time"])
        .mark_line(point=alt.OverlayMarkDef(size=60))
        .encode(
            x=alt.X("period:O", title=PERIOD_TITLES[period], axis=alt.Axis(labelOverlap=True)),
            y=alt.Y(
                "time:Q",
                title=f"Time to decision ({unit.title})",
                scale=alt.Scale(domain=[0, top], nice=False),
            ),
            color=alt.Color("measure:N", title=None, sort=["median", "90th percentile"]),
            tooltip=[
                "period:O",
                "measure:N",
                alt.Tooltip("time:Q", title=unit.title, format=".1f"),
                alt.Tooltip("decisions:Q", title="decisions"),
            ],
        )
    )


ctx = ui.context()
market = ctx.services.marketplace
st.title("Dashboard")
st.caption(
    "Every product's requests." if ctx.user.is_admin else "Requests for the products you own."
)

with ui.guard():
    if not ctx.user.can_approve:
        st.error("Only owners and admins have a dashboard.")
        st.stop()
    left, right = st.columns(2)
    window = left.selectbox("Window", list(WINDOWS), index=1, key="dashboard_window")
    period = metrics.Period(
        right.radio(
            "Count per",
            [p.value for p in metrics.Period],
            format_func=str.capitalize,
            horizontal=True,
            key="dashboard_period",
        )
    )
    # the use case checks the role again and reads only what the window charts
    board = market.dashboard_for(
        ctx.user.username, period=period, days=WINDOWS[window], owner_names=owner_names(ctx)
    )

    head = board.headline
    cols = st.columns(4)
    cols[0].metric("Pending now", head.pending)
    cols[1].metric("Oldest pending", metrics.format_hours(head.oldest_pending_hours))
    cols[2].metric(
        "Median time to decision",
        metrics.format_hours(head.median_decision_hours),
        help=f"Over decisions made by a person; window: {window.lower()}.",
    )
    cols[3].metric("Notifications failing now", head.failing_notifications)

    st.subheader("Pending requests")
    if board.pending_by_product.empty:
        st.info("Nothing is waiting for a decision.")
    else:
        left, right = st.columns(2)
        left.altair_chart(
            pending_chart(board.pending_by_product, "product", "By product"),
            alt="Pending requests by product",
        )
        right.altair_chart(
            pending_chart(board.pending_by_owner, "owner", "By owner"),
            alt="Pending requests by owner",
        )

    st.subheader("Time to decision")
    if board.time_to_decision.empty:
        st.info("Nobody has decided a request in this window.")
    else:
        decisions = int(board.time_to_decision["decisions"].sum())
        st.caption(
            f"{decisions} decision{'s' if decisions != 1 else ''} made by a person in this "
            f"window; each point is the median or the 90th percentile of one {period.value}."
        )
        st.altair_chart(
            decision_chart(board.time_to_decision, period),
            alt=f"Median and 90th percentile time to a decision per {period.value}",
        )

    st.subheader("Grants, denials, revocations and expiries")
    if board.outcomes.empty:
        st.info("No access was granted, denied, revoked or expired in this window.")
    else:
        st.altair_chart(
            counts_chart(board.outcomes, OUTCOME_COLOURS, period),
            alt=f"Grants, denials, revocations and expiries per {period.value}",
        )

    st.subheader("Notification failures")
    if board.notification_failures.empty:
        st.info("No notification failed in this window.")
    else:
        st.caption(
            f"Messages that failed, each counted once, in the {period.value} it first failed "
            "(retries are not counted again)."
        )
        st.altair_chart(
            counts_chart(board.notification_failures, FAILURE_COLOURS, period),
            alt=f"Notifications that failed per {period.value}",
        )
