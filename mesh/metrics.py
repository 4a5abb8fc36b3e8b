"""Queue metrics for the dashboard: requests, audit rows and notifications as chart frames.

Pure functions: no Streamlit, no AWS and no clock of their own (``now`` is passed in), so the
dashboard page stays a few lines and every number is tested on hand-built rows. Times are
ISO 8601 strings in UTC, as the store writes them; frames hold naive UTC timestamps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import pandas as pd

from mesh import policy
from mesh.models import AccessRequest, Action, AuditEvent, Status, User

NO_OWNER = "(no owner)"
HOUR = pd.Timedelta(hours=1)
PERCENTILE = 0.9


class Period(StrEnum):
    """The bucket a time series counts in; a week starts on Monday."""

    DAY = "day"
    WEEK = "week"


class Outcome(StrEnum):
    """How a request's access was decided or ended, as the dashboard counts it."""

    GRANTED = "granted"
    DENIED = "denied"
    REVOKED = "revoked"
    EXPIRED = "expired"


OUTCOMES = tuple(o.value for o in Outcome)


# Scope ----------------------------------------------------------------------------------


def visible_requests(requests: Iterable[AccessRequest], user: User) -> list[AccessRequest]:
    """Keep the requests for products ``user`` owns, or every request for an admin.

    Ownership is the request's ``owner_account``, the product's ``data_owner`` when it was
    requested; a user who is neither owner nor admin sees nothing.
    """
    return [r for r in requests if user.is_admin or policy.owns(user, r.owner_account)]


def events_about(
    events: Iterable[AuditEvent], requests: Iterable[AccessRequest]
) -> list[AuditEvent]:
    """Keep the audit rows about one of ``requests``."""
    ids = {r.id for r in requests}
    return [e for e in events if e.request_id in ids]


# Time -----------------------------------------------------------------------------------


def _timestamps(values: Iterable[str]) -> pd.Series:
    """Parse ISO 8601 strings into naive UTC timestamps."""
    parsed = pd.to_datetime(pd.Series(list(values), dtype=object), utc=True, format="ISO8601")
    return parsed.dt.tz_convert(None).astype("datetime64[ns]")


def _timestamp(moment: datetime) -> pd.Timestamp:
    """Turn ``moment`` into a naive UTC timestamp; a naive ``moment`` is taken as UTC."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_convert(None) if stamp.tzinfo is not None else stamp


def period_start(moments: pd.Series, period: Period) -> pd.Series:
    """Map each timestamp to the start of its day, or of its week (Monday)."""
    days = moments.dt.floor("D")
    if period is Period.WEEK:
        return days - pd.to_timedelta(days.dt.day_of_week, unit="D")
    return days


def _periods(first: pd.Timestamp, last: pd.Timestamp, period: Period) -> pd.DatetimeIndex:
    """Every period start from ``first``'s period to ``last``'s, with none skipped."""
    start, end = period_start(pd.Series([first, last]), period)
    return pd.date_range(start, end, freq="7D" if period is Period.WEEK else "D", name="period")


# Pending --------------------------------------------------------------------------------


def _pending_by(
    requests: Iterable[AccessRequest],
    *,
    now: datetime,
    column: str,
    key: Callable[[AccessRequest], str],
) -> pd.DataFrame:
    pending = [r for r in requests if r.status is Status.PENDING_APPROVAL]
    if not pending:
        return pd.DataFrame({column: [], "pending": [], "oldest_hours": []})
    created = _timestamps(r.created_at for r in pending)
    frame = pd.DataFrame(
        {column: [key(r) for r in pending], "age_hours": (_timestamp(now) - created) / HOUR}
    )
    grouped = frame.groupby(column, as_index=False).agg(
        pending=("age_hours", "size"), oldest_hours=("age_hours", "max")
    )
    return grouped.sort_values(
        ["pending", "oldest_hours", column], ascending=[False, False, True]
    ).reset_index(drop=True)


def pending_by_product(requests: Iterable[AccessRequest], *, now: datetime) -> pd.DataFrame:
    """Count pending requests per product (database), with the oldest one's age in hours."""
    return _pending_by(requests, now=now, column="product", key=lambda r: r.database)


def owner_label(account: str | None, owner_names: Mapping[str, str]) -> str:
    """Name an owner account for a chart: "Sales (111111111111)", or the bare account id."""
    if not account:
        return NO_OWNER
    name = owner_names.get(account, "").strip()
    return f"{name} ({account})" if name else account


def pending_by_owner(
    requests: Iterable[AccessRequest],
    *,
    now: datetime,
    owner_names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Count pending requests per owner account, with the oldest one's age in hours."""
    names = owner_names or {}
    return _pending_by(
        requests, now=now, column="owner", key=lambda r: owner_label(r.owner_account, names)
    )


# Time to decision -----------------------------------------------------------------------


def decision_hours(requests: Iterable[AccessRequest]) -> pd.DataFrame:
    """List each decision a person made: when, and how many hours after the request.

    Policy auto-grants have no ``decided_at`` and so are not decisions here.
    """
    decided = [r for r in requests if r.decided_at and r.decided_by]
    if not decided:
        return pd.DataFrame({"decided_at": pd.Series([], dtype="datetime64[ns]"), "hours": []})
    at = _timestamps(r.decided_at or "" for r in decided)
    created = _timestamps(r.created_at for r in decided)
    return pd.DataFrame({"decided_at": at, "hours": (at - created) / HOUR})


def _since(frame: pd.DataFrame, column: str, since: datetime | None) -> pd.DataFrame:
    return frame if since is None else frame[frame[column] >= _timestamp(since)]


def time_to_decision(
    requests: Iterable[AccessRequest], *, period: Period, since: datetime | None = None
) -> pd.DataFrame:
    """Give the median and 90th percentile hours to a decision, per period it was made in.

    The percentile interpolates linearly between the two nearest decisions (pandas'
    default), so a handful of decisions still gives a number between real ones.
    """
    decisions = _since(decision_hours(requests), "decided_at", since)
    if decisions.empty:
        return pd.DataFrame({"period": [], "decisions": [], "median_hours": [], "p90_hours": []})
    decisions = decisions.assign(period=period_start(decisions["decided_at"], period))
    return decisions.groupby("period", as_index=False).agg(
        decisions=("hours", "size"),
        median_hours=("hours", "median"),
        p90_hours=("hours", lambda hours: hours.quantile(PERCENTILE)),
    )


def median_decision_hours(
    requests: Iterable[AccessRequest], *, since: datetime | None = None
) -> float | None:
    """Give the median hours to a decision since ``since``; None when nobody decided."""
    hours = _since(decision_hours(requests), "decided_at", since)["hours"]
    return None if hours.empty else float(hours.median())


# Outcomes and failures over time --------------------------------------------------------


def outcome_of(event: AuditEvent) -> Outcome | None:
    """Name the outcome an audit row records, or None if it records none.

    A ``revoke_succeeded`` row ends in the status in its details: ``expired`` for an
    expiry, ``revoked`` otherwise (revoking is the default end, see mesh/lifecycle.py).
    """
    if event.action == Action.GRANT_SUCCEEDED:
        return Outcome.GRANTED
    if event.action == Action.DENIED:
        return Outcome.DENIED
    if event.action == Action.REVOKE_SUCCEEDED:
        ended = event.details.get("status")
        return Outcome.EXPIRED if ended == Status.EXPIRED.value else Outcome.REVOKED
    return None


def _count_per_period(
    moments: Sequence[str],
    labels: Sequence[str],
    columns: Sequence[str],
    *,
    period: Period,
    now: datetime,
    since: datetime | None,
) -> pd.DataFrame:
    """Count labelled moments per period and label, from the first period to ``now``'s."""
    frame = _since(pd.DataFrame({"at": _timestamps(moments), "label": list(labels)}), "at", since)
    if frame.empty:
        return pd.DataFrame({"period": [], **{c: [] for c in columns}})
    first = _timestamp(since) if since is not None else frame["at"].min()
    last = max(_timestamp(now), frame["at"].max())
    counts = pd.crosstab(period_start(frame["at"], period), frame["label"])
    counts = counts.reindex(index=_periods(first, last, period), columns=list(columns))
    return counts.fillna(0).astype(int).rename_axis(columns=None).reset_index()


def outcomes_over_time(
    events: Iterable[AuditEvent],
    *,
    period: Period,
    now: datetime,
    since: datetime | None = None,
) -> pd.DataFrame:
    """Count grants, denials, revocations and expiries per period, zeros included."""
    rows = [(e.at, outcome.value) for e in events if (outcome := outcome_of(e)) is not None]
    return _count_per_period(
        [at for at, _ in rows],
        [label for _, label in rows],
        OUTCOMES,
        period=period,
        now=now,
        since=since,
    )


def notification_failures(
    events: Iterable[AuditEvent],
    *,
    period: Period,
    now: datetime,
    since: datetime | None = None,
) -> pd.DataFrame:
    """Count the messages that failed per period, zeros included, as the headline counts them.

    Each ``notification_failed`` audit row is one attempt; a message (the row's
    ``notification`` id) counts once, in the period of its first failure in the window, however
    often it was tried. A row without that id counts as a message of its own.
    """
    failed = [e for e in events if e.action == Action.NOTIFICATION_FAILED]
    attempts = pd.DataFrame(
        {
            "raw": [e.at for e in failed],
            "at": _timestamps(e.at for e in failed),
            "message": [str(e.details.get("notification") or f"event {e.id}") for e in failed],
        }
    )
    firsts = _since(attempts, "at", since).sort_values("at").drop_duplicates("message")
    moments = list(firsts["raw"])
    return _count_per_period(
        moments, ["failures"] * len(moments), ["failures"], period=period, now=now, since=since
    )


def failing_notifications(
    notifications: Iterable[Mapping[str, Any]], requests: Iterable[AccessRequest]
) -> int:
    """Count the notifications about ``requests`` whose last attempt failed."""
    ids = {r.id for r in requests}
    return sum(
        1 for n in notifications if n.get("status") == "failed" and n.get("request_id") in ids
    )


# For people -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Unit:
    """A unit of duration for people: its short name, its axis title and its length in hours."""

    short: str
    title: str
    hours: float
    digits: int


MINUTES = Unit(short="min", title="minutes", hours=1 / 60, digits=0)
HOURS = Unit(short="h", title="hours", hours=1.0, digits=1)
DAYS = Unit(short="days", title="days", hours=24.0, digits=1)


def unit_for(hours: float | None) -> Unit:
    """Pick a duration's unit by its magnitude: minutes under an hour, days from two days on.

    The headline numbers and the chart axes use the same rule, so "4 min" above a chart
    goes with a chart in minutes.
    """
    if hours is None or hours < 1:
        return MINUTES
    return HOURS if hours < 48 else DAYS


def format_hours(hours: float | None) -> str:
    """Write a duration for a person: minutes under an hour, days from two days on."""
    if hours is None:
        return "none yet"
    unit = unit_for(hours)
    return f"{max(hours, 0) / unit.hours:.{unit.digits}f} {unit.short}"


def in_unit(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, Unit]:
    """Convert hour columns to the unit their largest value calls for (see unit_for)."""
    values = frame[list(columns)].to_numpy().ravel()
    unit = unit_for(float(values.max()) if len(values) else None)
    return frame.assign(**{c: frame[c] / unit.hours for c in columns}), unit


def axis_top(value: float) -> float:
    """A round axis end above ``value``, with room for a point drawn at ``value``."""
    if value <= 0:
        return 1.0
    padded = value * 1.15
    step = 10 ** math.floor(math.log10(padded))
    for multiple in (1, 2, 2.5, 5, 10):
        if padded <= multiple * step:
            return float(multiple * step)
    return float(10 * step)


# The whole dashboard --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Headline:
    """The numbers above the charts."""

    pending: int
    oldest_pending_hours: float | None
    median_decision_hours: float | None
    failing_notifications: int


@dataclass(frozen=True, kw_only=True)
class Dashboard:
    """Every frame the dashboard charts, scoped to one user."""

    headline: Headline
    pending_by_product: pd.DataFrame
    pending_by_owner: pd.DataFrame
    time_to_decision: pd.DataFrame
    outcomes: pd.DataFrame
    notification_failures: pd.DataFrame


def dashboard(
    user: User,
    *,
    requests: Iterable[AccessRequest],
    events: Iterable[AuditEvent],
    notifications: Iterable[Mapping[str, Any]],
    now: datetime,
    period: Period = Period.DAY,
    since: datetime | None = None,
    owner_names: Mapping[str, str] | None = None,
) -> Dashboard:
    """Scope the data to what ``user`` may see, then build the headline and each chart."""
    mine = visible_requests(requests, user)
    my_events = events_about(events, mine)
    by_product = pending_by_product(mine, now=now)
    return Dashboard(
        headline=Headline(
            pending=int(by_product["pending"].sum()),
            oldest_pending_hours=(
                None if by_product.empty else float(by_product["oldest_hours"].max())
            ),
            median_decision_hours=median_decision_hours(mine, since=since),
            failing_notifications=failing_notifications(notifications, mine),
        ),
        pending_by_product=by_product,
        pending_by_owner=pending_by_owner(mine, now=now, owner_names=owner_names),
        time_to_decision=time_to_decision(mine, period=period, since=since),
        outcomes=outcomes_over_time(my_events, period=period, now=now, since=since),
        notification_failures=notification_failures(my_events, period=period, now=now, since=since),
    )
