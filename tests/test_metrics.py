"""The dashboard's numbers (mesh/metrics.py) on hand-built requests, audit rows and messages.

Every expected number here is worked out by hand from the fixture times: NOW is Thursday
2024-05-09 12:00 UTC, and the week of 2024-05-06 starts on that Monday.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from mesh import metrics
from mesh.metrics import Outcome, Period
from mesh.models import AccessRequest, Action, AuditEvent, Role, Status, User

SALES = "111111111111"
MARKETING = "222222222222"
NOW = datetime(2024, 5, 9, 12, 0, tzinfo=UTC)

ADA = User(username="ada", roles=frozenset({Role.ADMIN}))
SAM = User(username="sam", roles=frozenset({Role.OWNER}), owner_of=frozenset({SALES}))
MIA = User(
    username="mia",
    roles=frozenset({Role.OWNER, Role.CONSUMER}),
    accounts=("444455556666",),
    owner_of=frozenset({MARKETING}),
)
HANK = User(username="hank", roles=frozenset({Role.OWNER}), owner_of=frozenset({"333333333333"}))
CAROL = User(username="carol", roles=frozenset({Role.CONSUMER}), accounts=("444455556666",))
# owner_of left in the users file after the owner role was taken away
LAPSED = User(username="lapsed", roles=frozenset({Role.CONSUMER}), owner_of=frozenset({SALES}))

_ids = itertools.count(1)


def request(
    request_id: str,
    *,
    status: Status = Status.PENDING_APPROVAL,
    database: str = "sales_orders",
    owner: str | None = SALES,
    created_at: str = "2024-05-09T00:00:00.000Z",
    decided_at: str | None = None,
    decided_by: str | None = None,
) -> AccessRequest:
    return AccessRequest(
        id=request_id,
        status=status,
        database=database,
        table=None,
        account="444455556666",
        requester="carol",
        reason="a reason",
        owner_account=owner,
        created_at=created_at,
        updated_at=created_at,
        decided_at=decided_at,
        decided_by=decided_by,
    )


def decided(request_id: str, created_at: str, decided_at: str, **options: Any) -> AccessRequest:
    """A request a person (sam) decided; approved ones end up granted."""
    options.setdefault("status", Status.GRANTED)
    return request(
        request_id, created_at=created_at, decided_at=decided_at, decided_by="sam", **options
    )


def event(action: Action, at: str, request_id: str | None = "r-1", **details: Any) -> AuditEvent:
    return AuditEvent(
        id=next(_ids),
        at=at,
        actor="someone",
        action=action.value,
        request_id=request_id,
        scope="",
        details=details,
    )


def notification(request_id: str, status: str) -> dict[str, Any]:
    return {
        "id": next(_ids),
        "request_id": request_id,
        "kind": "approval_request",
        "status": status,
    }


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict("records")  # type: ignore[no-any-return]


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


# Scope -----------------------------------------------------------------------------------

SCOPED = [
    request("r-sales", owner=SALES),
    request("r-marketing", database="marketing_campaigns", owner=MARKETING),
    request("r-unowned", database="legacy_exports", owner=None),
]

VISIBLE = [
    # an admin sees every request, unowned ones included
    (ADA, {"r-sales", "r-marketing", "r-unowned"}),
    # an owner sees the requests for their products only
    (SAM, {"r-sales"}),
    (MIA, {"r-marketing"}),
    # an owner of a product nobody asked for sees nothing
    (HANK, set()),
    # a consumer sees nothing
    (CAROL, set()),
    # owner_of without the owner role grants nothing (as policy.owns says)
    (LAPSED, set()),
]


@pytest.mark.parametrize(("user", "expected"), VISIBLE, ids=lambda v: getattr(v, "username", ""))
def test_user_sees_requests_of_products_they_own_or_all_as_admin(
    user: User, expected: set[str]
) -> None:
    # GIVEN requests for a Sales product, a Marketing product and an unowned one
    # WHEN the dashboard scopes them to a user
    visible = metrics.visible_requests(SCOPED, user)
    # THEN the user sees exactly what they own (everything for an admin)
    assert {r.id for r in visible} == expected


def test_audit_rows_are_kept_only_for_visible_requests() -> None:
    # GIVEN audit rows about a Sales request, a Marketing request, and no request at all
    rows = [
        event(Action.DENIED, "2024-05-09T01:00:00.000Z", "r-sales"),
        event(Action.DENIED, "2024-05-09T02:00:00.000Z", "r-marketing"),
        event(Action.RECONCILE_UNEXPLAINED, "2024-05-09T03:00:00.000Z", None),
    ]
    # WHEN they are scoped to sam's requests
    kept = metrics.events_about(rows, metrics.visible_requests(SCOPED, SAM))
    # THEN only the row about his product is left
    assert [e.request_id for e in kept] == ["r-sales"]


# Pending ---------------------------------------------------------------------------------


def test_pending_by_product_counts_pending_requests_with_the_oldest_age() -> None:
    # GIVEN two pending Sales requests (30 h and 6 h old), one pending Marketing request
    # (2 h old), and requests in other statuses that are not waiting for anyone
    requests = [
        request("r-1", created_at="2024-05-08T06:00:00.000Z"),
        request("r-2", created_at="2024-05-09T06:00:00.000Z"),
        request("r-3", database="marketing_campaigns", created_at="2024-05-09T10:00:00.000Z"),
        request("r-4", status=Status.GRANTED, created_at="2024-05-01T00:00:00.000Z"),
        request("r-5", status=Status.CANCELLED, created_at="2024-05-01T00:00:00.000Z"),
    ]
    # WHEN they are grouped by product
    frame = metrics.pending_by_product(requests, now=NOW)
    # THEN each product has its count and the oldest request's age in hours, busiest first
    assert records(frame) == [
        {"product": "sales_orders", "pending": 2, "oldest_hours": 30.0},
        {"product": "marketing_campaigns", "pending": 1, "oldest_hours": 2.0},
    ]


def test_pending_by_owner_names_owners_from_the_catalog() -> None:
    # GIVEN pending requests of two Sales products, one Marketing product and an unowned one
    requests = [
        request("r-1", database="sales_orders", created_at="2024-05-09T02:00:00.000Z"),
        request("r-2", database="sales_crm", created_at="2024-05-08T12:00:00.000Z"),
        request("r-3", owner=MARKETING, created_at="2024-05-09T11:00:00.000Z"),
        request("r-4", owner=None, created_at="2024-05-09T09:00:00.000Z"),
    ]
    # WHEN they are grouped by owner, with only Sales named in the catalog
    frame = metrics.pending_by_owner(requests, now=NOW, owner_names={SALES: "Sales"})
    # THEN Sales gets its name, Marketing its bare account id, and the unowned one a label
    assert records(frame) == [
        {"owner": f"Sales ({SALES})", "pending": 2, "oldest_hours": 24.0},
        {"owner": metrics.NO_OWNER, "pending": 1, "oldest_hours": 3.0},
        {"owner": MARKETING, "pending": 1, "oldest_hours": 1.0},
    ]


OWNER_LABELS = [
    # a named owner
    (SALES, {SALES: "Sales"}, f"Sales ({SALES})"),
    # an owner the catalog does not name (or names with blanks)
    (SALES, {}, SALES),
    (SALES, {SALES: "   "}, SALES),
    # no data_owner at all
    (None, {SALES: "Sales"}, metrics.NO_OWNER),
    ("", {}, metrics.NO_OWNER),
]


@pytest.mark.parametrize(("account", "names", "label"), OWNER_LABELS)
def test_owner_label(account: str | None, names: dict[str, str], label: str) -> None:
    assert metrics.owner_label(account, names) == label


def test_pending_age_reads_utc_offsets_and_naive_now_as_utc() -> None:
    # GIVEN a request made at 09:00+02:00, which is 07:00 UTC
    requests = [request("r-1", created_at="2024-05-09T09:00:00+02:00")]
    # WHEN its age is measured at 12:00, given without a time zone
    frame = metrics.pending_by_product(requests, now=NOW.replace(tzinfo=None))
    # THEN it is 5 hours old
    assert records(frame)[0]["oldest_hours"] == 5.0


@pytest.mark.parametrize(
    "build",
    [
        lambda: metrics.pending_by_product([], now=NOW),
        lambda: metrics.pending_by_owner([], now=NOW),
    ],
)
def test_nothing_pending_gives_an_empty_frame_with_its_columns(build: Any) -> None:
    frame = build()
    assert frame.empty
    assert list(frame.columns)[1:] == ["pending", "oldest_hours"]


# Time to decision ------------------------------------------------------------------------


def test_median_and_90th_percentile_of_ten_decisions() -> None:
    # GIVEN ten decisions on 2024-05-08 that took 1, 2, ... 10 hours
    requests = [
        decided(f"r-{h}", "2024-05-08T00:00:00.000Z", f"2024-05-08T{h:02d}:00:00.000Z")
        for h in range(1, 11)
    ]
    # WHEN time to decision is computed per day
    frame = metrics.time_to_decision(requests, period=Period.DAY)
    # THEN the median is 5.5 h and the 90th percentile 9.1 h (9 + 0.1 x (10 - 9))
    assert records(frame) == [
        {
            "period": day("2024-05-08"),
            "decisions": 10,
            "median_hours": 5.5,
            "p90_hours": pytest.approx(9.1),
        }
    ]


def test_median_and_90th_percentile_of_three_decisions() -> None:
    # GIVEN three decisions that took 2, 4 and 9 hours, denials included
    requests = [
        decided("r-1", "2024-05-08T00:00:00.000Z", "2024-05-08T02:00:00.000Z"),
        decided("r-2", "2024-05-08T00:00:00.000Z", "2024-05-08T04:00:00.000Z"),
        decided(
            "r-3", "2024-05-08T00:00:00.000Z", "2024-05-08T09:00:00.000Z", status=Status.DENIED
        ),
    ]
    # WHEN time to decision is computed
    [row] = records(metrics.time_to_decision(requests, period=Period.DAY))
    # THEN the median is the middle one and the 90th percentile 4 + 0.8 x (9 - 4) = 8 h
    assert (row["median_hours"], row["p90_hours"]) == (4.0, pytest.approx(8.0))
    assert metrics.median_decision_hours(requests) == 4.0


def test_only_decisions_a_person_made_count() -> None:
    # GIVEN one decision by a person (3 h), a policy auto-grant, a pending and a
    # cancelled request; none of the last three has a decided_at
    requests = [
        decided("r-1", "2024-05-08T00:00:00.000Z", "2024-05-08T03:00:00.000Z"),
        request("r-2", status=Status.GRANTED, created_at="2024-05-08T00:00:00.000Z"),
        request("r-3", status=Status.PENDING_APPROVAL, created_at="2024-05-08T00:00:00.000Z"),
        request("r-4", status=Status.CANCELLED, created_at="2024-05-08T00:00:00.000Z"),
    ]
    # WHEN time to decision is computed
    frame = metrics.time_to_decision(requests, period=Period.DAY)
    # THEN only the person's decision is in it
    assert frame["decisions"].tolist() == [1]
    assert frame["median_hours"].tolist() == [3.0]


def test_decision_counts_in_the_period_it_was_made_not_requested() -> None:
    # GIVEN a request made late on 2024-05-07 and decided 4 h later, on 2024-05-08
    requests = [decided("r-1", "2024-05-07T22:00:00.000Z", "2024-05-08T02:00:00.000Z")]
    # WHEN time to decision is computed per day
    frame = metrics.time_to_decision(requests, period=Period.DAY)
    # THEN it counts on the 8th
    assert records(frame) == [
        {"period": day("2024-05-08"), "decisions": 1, "median_hours": 4.0, "p90_hours": 4.0}
    ]


def test_weekly_time_to_decision_groups_monday_to_sunday() -> None:
    # GIVEN decisions on Monday 6 May (1 h), Sunday 12 May (3 h) and Monday 13 May (10 h)
    requests = [
        decided("r-1", "2024-05-06T08:00:00.000Z", "2024-05-06T09:00:00.000Z"),
        decided("r-2", "2024-05-12T20:00:00.000Z", "2024-05-12T23:00:00.000Z"),
        decided("r-3", "2024-05-13T00:00:00.000Z", "2024-05-13T10:00:00.000Z"),
    ]
    # WHEN time to decision is computed per week
    frame = metrics.time_to_decision(requests, period=Period.WEEK)
    # THEN the first two share the week of 6 May and the third starts the week of 13 May
    assert frame["period"].tolist() == [day("2024-05-06"), day("2024-05-13")]
    assert frame["decisions"].tolist() == [2, 1]
    assert frame["median_hours"].tolist() == [2.0, 10.0]


def test_decisions_before_the_window_are_left_out() -> None:
    # GIVEN a 1 h decision on 1 May and a 5 h decision on 8 May
    requests = [
        decided("r-1", "2024-05-01T00:00:00.000Z", "2024-05-01T01:00:00.000Z"),
        decided("r-2", "2024-05-08T00:00:00.000Z", "2024-05-08T05:00:00.000Z"),
    ]
    since = NOW - timedelta(days=7)
    # WHEN only the last seven days count
    frame = metrics.time_to_decision(requests, period=Period.DAY, since=since)
    # THEN only the 8 May decision is in the series and the median
    assert frame["period"].tolist() == [day("2024-05-08")]
    assert metrics.median_decision_hours(requests, since=since) == 5.0


def test_no_decisions_give_an_empty_series_and_no_median() -> None:
    # GIVEN only a policy auto-grant
    requests = [request("r-1", status=Status.GRANTED)]
    # THEN there is nothing to chart and no median
    assert metrics.time_to_decision(requests, period=Period.DAY).empty
    assert metrics.time_to_decision([], period=Period.WEEK).empty
    assert metrics.median_decision_hours(requests) is None


# Outcomes --------------------------------------------------------------------------------

OUTCOME_OF = [
    # access granted, by a person's approval or by the policy
    (Action.GRANT_SUCCEEDED, {}, Outcome.GRANTED),
    # a denial
    (Action.DENIED, {"comment": "no"}, Outcome.DENIED),
    # the end of access: the details say whether it was revoked or expired
    (Action.REVOKE_SUCCEEDED, {"status": "revoked"}, Outcome.REVOKED),
    (Action.REVOKE_SUCCEEDED, {"status": "expired"}, Outcome.EXPIRED),
    (Action.REVOKE_SUCCEEDED, {}, Outcome.REVOKED),
    # steps on the way, and failures, are no outcome
    (Action.APPROVED, {}, None),
    (Action.GRANT_ATTEMPTED, {}, None),
    (Action.GRANT_FAILED, {}, None),
    (Action.REVOKE_REQUESTED, {}, None),
    (Action.EXPIRY_DUE, {}, None),
    (Action.REVOKE_FAILED, {"status": "expired"}, None),
    (Action.CANCELLED, {}, None),
    (Action.NOTIFICATION_FAILED, {}, None),
]


@pytest.mark.parametrize(("action", "details", "outcome"), OUTCOME_OF)
def test_outcome_of_an_audit_row(
    action: Action, details: dict[str, Any], outcome: Outcome | None
) -> None:
    assert metrics.outcome_of(event(action, "2024-05-09T00:00:00.000Z", **details)) == outcome


def test_outcomes_are_counted_per_day_with_quiet_days_as_zero() -> None:
    # GIVEN two grants and a denial on 6 May, a revocation and an expiry on 8 May,
    # and audit rows that are no outcome
    rows = [
        event(Action.GRANT_SUCCEEDED, "2024-05-06T09:00:00.000Z"),
        event(Action.GRANT_SUCCEEDED, "2024-05-06T23:59:59.000Z"),
        event(Action.DENIED, "2024-05-06T10:00:00.000Z"),
        event(Action.APPROVED, "2024-05-06T08:59:00.000Z"),
        event(Action.REVOKE_SUCCEEDED, "2024-05-08T00:00:00.000Z", status="revoked"),
        event(Action.REVOKE_SUCCEEDED, "2024-05-08T12:00:00.000Z", status="expired"),
        event(Action.NOTIFICATION_FAILED, "2024-05-08T12:00:00.000Z"),
    ]
    # WHEN they are counted per day up to NOW (9 May)
    frame = metrics.outcomes_over_time(rows, period=Period.DAY, now=NOW)
    # THEN every day from the first outcome to today has a row, zeros included
    assert records(frame) == [
        {"period": day("2024-05-06"), "granted": 2, "denied": 1, "revoked": 0, "expired": 0},
        {"period": day("2024-05-07"), "granted": 0, "denied": 0, "revoked": 0, "expired": 0},
        {"period": day("2024-05-08"), "granted": 0, "denied": 0, "revoked": 1, "expired": 1},
        {"period": day("2024-05-09"), "granted": 0, "denied": 0, "revoked": 0, "expired": 0},
    ]


def test_outcomes_per_week_start_on_monday() -> None:
    # GIVEN a grant on Sunday 5 May and grants on Monday 6 and Thursday 9 May
    rows = [
        event(Action.GRANT_SUCCEEDED, "2024-05-05T12:00:00.000Z"),
        event(Action.GRANT_SUCCEEDED, "2024-05-06T00:00:00.000Z"),
        event(Action.GRANT_SUCCEEDED, "2024-05-09T11:00:00.000Z"),
    ]
    # WHEN they are counted per week
    frame = metrics.outcomes_over_time(rows, period=Period.WEEK, now=NOW)
    # THEN Sunday belongs to the week of 29 April, the others to the week of 6 May
    assert frame["period"].tolist() == [day("2024-04-29"), day("2024-05-06")]
    assert frame["granted"].tolist() == [1, 2]


def test_outcomes_window_drops_older_rows_and_starts_at_its_first_day() -> None:
    # GIVEN a denial on 1 May and a grant on 8 May
    rows = [
        event(Action.DENIED, "2024-05-01T12:00:00.000Z"),
        event(Action.GRANT_SUCCEEDED, "2024-05-08T12:00:00.000Z"),
    ]
    # WHEN only the last two days (since 7 May, 12:00) count
    frame = metrics.outcomes_over_time(
        rows, period=Period.DAY, now=NOW, since=NOW - timedelta(days=2)
    )
    # THEN the series runs from 7 May to 9 May and holds only the grant
    assert frame["period"].tolist() == [day("2024-05-07"), day("2024-05-08"), day("2024-05-09")]
    assert frame["granted"].tolist() == [0, 1, 0]
    assert frame["denied"].sum() == 0


@pytest.mark.parametrize("since", [None, NOW - timedelta(days=1)])
def test_no_outcomes_give_an_empty_frame_with_every_outcome_column(
    since: datetime | None,
) -> None:
    # GIVEN an approval, which is no outcome, and with a window a grant before it
    rows = [
        event(Action.APPROVED, "2024-05-09T00:00:00.000Z"),
        *([event(Action.GRANT_SUCCEEDED, "2024-05-01T00:00:00.000Z")] if since else []),
    ]
    # WHEN outcomes are counted
    frame = metrics.outcomes_over_time(rows, period=Period.DAY, now=NOW, since=since)
    # THEN the frame is empty but still has the columns a chart reads
    assert frame.empty
    assert list(frame.columns) == ["period", "granted", "denied", "revoked", "expired"]


# Notification failures -------------------------------------------------------------------


def test_failed_notifications_are_counted_per_day() -> None:
    # GIVEN two failures on 7 May, one on 9 May, and a notification sent on 8 May, each of
    # a message of its own (the rows name no notification)
    rows = [
        event(Action.NOTIFICATION_FAILED, "2024-05-07T01:00:00.000Z", error_code="NotFound"),
        event(Action.NOTIFICATION_FAILED, "2024-05-07T02:00:00.000Z", error_code="NotFound"),
        event(Action.NOTIFICATION_SENT, "2024-05-08T02:00:00.000Z"),
        event(Action.NOTIFICATION_FAILED, "2024-05-09T02:00:00.000Z", error_code="AccessDenied"),
    ]
    # WHEN failures are counted per day
    frame = metrics.notification_failures(rows, period=Period.DAY, now=NOW)
    # THEN each day from the first failure to today has its count
    assert records(frame) == [
        {"period": day("2024-05-07"), "failures": 2},
        {"period": day("2024-05-08"), "failures": 0},
        {"period": day("2024-05-09"), "failures": 1},
    ]


def test_a_message_tried_again_counts_once_on_the_day_it_first_failed() -> None:
    # GIVEN message 1 failed three times over two days, message 2 once
    rows = [
        event(Action.NOTIFICATION_FAILED, "2024-05-07T01:00:00.000Z", notification=1),
        event(Action.NOTIFICATION_FAILED, "2024-05-07T05:00:00.000Z", notification=1),
        event(Action.NOTIFICATION_FAILED, "2024-05-08T01:00:00.000Z", notification=1),
        event(Action.NOTIFICATION_FAILED, "2024-05-08T03:00:00.000Z", notification=2),
    ]
    # WHEN failures are counted per day
    frame = metrics.notification_failures(rows, period=Period.DAY, now=NOW)
    # THEN each message counts once, as the "failing now" metric counts messages
    assert records(frame) == [
        {"period": day("2024-05-07"), "failures": 1},
        {"period": day("2024-05-08"), "failures": 1},
        {"period": day("2024-05-09"), "failures": 0},
    ]


def test_a_message_first_failing_before_the_window_counts_in_it_when_it_fails_again() -> None:
    # GIVEN a message that failed on 1 May and again on 8 May
    rows = [
        event(Action.NOTIFICATION_FAILED, "2024-05-01T01:00:00.000Z", notification=7),
        event(Action.NOTIFICATION_FAILED, "2024-05-08T01:00:00.000Z", notification=7),
    ]
    # WHEN the window starts on 6 May
    since = datetime(2024, 5, 6, tzinfo=UTC)
    frame = metrics.notification_failures(rows, period=Period.DAY, now=NOW, since=since)
    # THEN it counts once, on 8 May, its first failure inside the window
    assert int(frame["failures"].sum()) == 1
    assert records(frame)[2] == {"period": day("2024-05-08"), "failures": 1}


def test_no_failed_notification_gives_an_empty_frame() -> None:
    rows = [event(Action.NOTIFICATION_SENT, "2024-05-08T02:00:00.000Z")]
    frame = metrics.notification_failures(rows, period=Period.WEEK, now=NOW)
    assert frame.empty
    assert list(frame.columns) == ["period", "failures"]


def test_failing_now_counts_failed_messages_about_the_given_requests_only() -> None:
    # GIVEN sam's request with one failed, one sent, one skipped and one pending
    # message, and a failed message about a Marketing request
    rows = [
        notification("r-sales", "failed"),
        notification("r-sales", "sent"),
        notification("r-sales", "skipped"),
        notification("r-sales", "pending"),
        notification("r-marketing", "failed"),
    ]
    # WHEN the failing ones are counted for sam and for ada
    # THEN sam has one, ada both
    assert metrics.failing_notifications(rows, metrics.visible_requests(SCOPED, SAM)) == 1
    assert metrics.failing_notifications(rows, metrics.visible_requests(SCOPED, ADA)) == 2


# The whole dashboard ---------------------------------------------------------------------


@pytest.fixture
def two_products() -> dict[str, Any]:
    """A Sales and a Marketing request each pending, decided, granted and failing to notify."""
    requests = [
        request("s-pending", created_at="2024-05-08T12:00:00.000Z"),
        decided("s-done", "2024-05-08T00:00:00.000Z", "2024-05-08T02:00:00.000Z"),
        request("m-pending", owner=MARKETING, created_at="2024-05-09T06:00:00.000Z"),
        decided("m-done", "2024-05-08T00:00:00.000Z", "2024-05-08T10:00:00.000Z", owner=MARKETING),
    ]
    events = [
        event(Action.GRANT_SUCCEEDED, "2024-05-08T02:00:00.000Z", "s-done"),
        event(Action.GRANT_SUCCEEDED, "2024-05-08T10:00:00.000Z", "m-done"),
        event(Action.NOTIFICATION_FAILED, "2024-05-08T12:00:00.000Z", "s-pending"),
        event(Action.NOTIFICATION_FAILED, "2024-05-09T06:00:00.000Z", "m-pending"),
    ]
    notifications = [notification("s-pending", "failed"), notification("m-pending", "failed")]
    return {"requests": requests, "events": events, "notifications": notifications}


DASHBOARDS = [
    # sam: Sales only (pending 24 h, decided in 2 h, one grant, one failure)
    (SAM, 1, 24.0, 2.0, 1, 1),
    # mia: Marketing only (pending 6 h, decided in 10 h)
    (MIA, 1, 6.0, 10.0, 1, 1),
    # ada: both (the oldest is Sales', the median is between 2 h and 10 h)
    (ADA, 2, 24.0, 6.0, 2, 2),
    # a consumer: nothing
    (CAROL, 0, None, None, 0, 0),
]


@pytest.mark.parametrize(
    ("user", "pending", "oldest", "median", "grants", "failures"),
    DASHBOARDS,
    ids=[row[0].username for row in DASHBOARDS],
)
def test_dashboard_is_scoped_to_the_user(
    two_products: dict[str, Any],
    user: User,
    pending: int,
    oldest: float | None,
    median: float | None,
    grants: int,
    failures: int,
) -> None:
    # GIVEN a Sales and a Marketing product with the same kinds of activity
    # WHEN the dashboard is built for a user
    board = metrics.dashboard(user, now=NOW, **two_products)
    # THEN every number and chart holds only what the user may see
    assert board.headline == metrics.Headline(
        pending=pending,
        oldest_pending_hours=oldest,
        median_decision_hours=median,
        failing_notifications=failures,
    )
    assert int(board.pending_by_product["pending"].sum()) == pending
    assert int(board.pending_by_owner["pending"].sum()) == pending
    assert int(board.time_to_decision["decisions"].sum()) == grants
    assert int(board.outcomes["granted"].sum()) == grants
    assert int(board.notification_failures["failures"].sum()) == failures


def test_dashboard_with_no_data_is_empty_everywhere() -> None:
    board = metrics.dashboard(ADA, requests=[], events=[], notifications=[], now=NOW)
    assert board.headline == metrics.Headline(
        pending=0, oldest_pending_hours=None, median_decision_hours=None, failing_notifications=0
    )
    for frame in (
        board.pending_by_product,
        board.pending_by_owner,
        board.time_to_decision,
        board.outcomes,
        board.notification_failures,
    ):
        assert frame.empty


# Formatting ------------------------------------------------------------------------------

HOURS = [
    # nothing to show
    (None, "none yet"),
    # under an hour: minutes
    (0.0, "0 min"),
    (0.25, "15 min"),
    (-0.1, "0 min"),
    # up to two days: hours
    (1.0, "1.0 h"),
    (47.94, "47.9 h"),
    # from two days on: days
    (48.0, "2.0 days"),
    (27.2 * 24, "27.2 days"),
]


@pytest.mark.parametrize(("hours", "text"), HOURS)
def test_format_hours(hours: float | None, text: str) -> None:
    assert metrics.format_hours(hours) == text


UNITS = [
    # no value, and under an hour: minutes
    (None, "minutes"),
    (0.0, "minutes"),
    (0.99, "minutes"),
    # up to two days: hours
    (1.0, "hours"),
    (47.9, "hours"),
    # from two days on: days
    (48.0, "days"),
]


@pytest.mark.parametrize(("hours", "title"), UNITS)
def test_unit_is_picked_by_magnitude_as_format_hours_picks_it(
    hours: float | None, title: str
) -> None:
    unit = metrics.unit_for(hours)
    assert unit.title == title
    if hours is not None:
        assert metrics.format_hours(hours).endswith(unit.short)


def test_chart_columns_share_the_unit_their_largest_value_calls_for() -> None:
    # GIVEN a median of 4 minutes and a 90th percentile of 30 minutes
    frame = pd.DataFrame({"median": [4 / 60], "p90": [0.5]})
    # WHEN they are put in a unit
    scaled, unit = metrics.in_unit(frame, ["median", "p90"])
    # THEN both are in minutes, as the headline writes "4 min"
    assert unit is metrics.MINUTES
    assert scaled.round(6).to_dict("records") == [{"median": 4.0, "p90": 30.0}]
    assert metrics.format_hours(4 / 60) == "4 min"


@pytest.mark.parametrize(
    ("value", "top"),
    [(0.0, 1.0), (0.13, 0.2), (1.0, 2.0), (4.0, 5.0), (9.0, 20.0), (30.0, 50.0), (180.0, 250.0)],
)
def test_axis_ends_above_the_highest_point(value: float, top: float) -> None:
    assert metrics.axis_top(value) == top
    assert metrics.axis_top(value) > value


# At volume -------------------------------------------------------------------------------


def test_ten_thousand_requests_give_charts_of_a_readable_size() -> None:
    # GIVEN 10,000 requests over 83 days on ten products of five owners: most decided by a
    # person within hours, a tenth still pending, and a failed message on every fiftieth
    start = NOW - timedelta(days=85)
    requests, events = [], []
    for n in range(10_000):
        created = start + timedelta(minutes=12 * n)  # the last one 40 hours ago
        owner = f"{n % 5 + 1}" * 12
        stamp = created.isoformat().replace("+00:00", "Z")
        if n % 10 == 0:
            requests.append(
                request(f"r-{n}", database=f"db{n % 10}", owner=owner, created_at=stamp)
            )
        else:
            done = (created + timedelta(hours=n % 30)).isoformat().replace("+00:00", "Z")
            requests.append(decided(f"r-{n}", stamp, done, database=f"db{n % 10}", owner=owner))
            events.append(event(Action.GRANT_SUCCEEDED, done, f"r-{n}"))
        if n % 50 == 0:
            events.append(event(Action.NOTIFICATION_FAILED, stamp, f"r-{n}", notification=n))
    # WHEN the dashboard is built for an admin over the last 30 days, per day
    board = metrics.dashboard(
        ADA,
        requests=requests,
        events=events,
        notifications=[],
        now=NOW,
        since=NOW - timedelta(days=30),
    )
    # THEN every chart has one bar or point per product, owner or day: a chart, not a cloud
    assert len(board.pending_by_product) == 1  # every tenth request lands on db0
    assert len(board.pending_by_owner) <= 5
    assert 28 <= len(board.time_to_decision) <= 31
    assert 28 <= len(board.outcomes) <= 31
    assert 28 <= len(board.notification_failures) <= 31
    # AND decisions of up to 29 hours are charted in hours, the headline's unit
    _, unit = metrics.in_unit(board.time_to_decision, ["median_hours", "p90_hours"])
    assert unit is metrics.HOURS
    assert metrics.format_hours(board.headline.median_decision_hours).endswith(" h")
