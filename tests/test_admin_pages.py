"""The admin pages over real reports and outbox rows: drift and notifications."""

from __future__ import annotations

import boto3
import pytest
from streamlit.testing.v1 import AppTest

from mesh.services import Services, build
from mesh.settings import load_settings
from tests.conftest import REGION
from tests.support import APP, COOKIE_KEY, labelled, sign_in, texts


@pytest.fixture
def app(aws_env: dict[str, str], running_server: None, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    for name, value in {**aws_env, "MESH_COOKIE_KEY": COOKIE_KEY}.items():
        monkeypatch.setenv(name, value)
    return AppTest.from_file(APP, default_timeout=30)


def test_drift_page_shows_the_last_report_with_missing_and_unexplained_grants(
    app: AppTest, services: Services, aws: str
) -> None:
    # GIVEN a granted request whose grant was removed by hand, and a grant nobody asked for
    granted = services.marketplace.submit(
        "carol",
        database="supply_chain",
        table="inventory",
        account="444455556666",
        reason="stock report",
    )
    lf = boto3.client("lakeformation", region_name=REGION, endpoint_url=aws)
    [spec] = services.marketplace.grant_plan(granted)
    lf.revoke_permissions(**spec.to_api())
    lf.grant_permissions(
        Principal={"DataLakePrincipalIdentifier": "777788889999"},
        Resource={
            "Table": {
                "CatalogId": services.central_account,
                "DatabaseName": "hr_people",
                "Name": "salaries",
            }
        },
        Permissions=["SELECT"],
        PermissionsWithGrantOption=[],
    )
    # WHEN ada runs the check from the drift page
    sign_in(app, "ada")
    app.switch_page("pages/drift.py").run()
    labelled(app.button, "Run the check").click().run()
    # THEN the page shows the report: one missing, one unexplained, none fixed
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    metrics = {m.label: m.value for m in app.metric}
    assert metrics == {"Missing": "1", "Unexplained": "1", "Fixed": "0"}
    missing, unexplained = (frame.value for frame in app.dataframe)
    assert list(missing["request"]) == [granted.id]
    assert list(unexplained["account"]) == ["777788889999"]
    # WHEN ada runs it with the fix, THEN the missing grant is back and the report says so
    labelled(app.button, "Run the check and fix missing grants").click().run()
    assert {m.label: m.value for m in app.metric}["Fixed"] == "1"
    assert services.lifecycle.reconcile(fix=False)["missing"] == []


def test_notifications_page_lists_the_outbox_and_shows_a_message(
    app: AppTest, services: Services
) -> None:
    # GIVEN a request that needs approval from Finance, which has no topic in this account
    request = services.marketplace.submit(
        "carol",
        database="finance_payments",
        table="payments",
        account="444455556666",
        reason="fraud model",
    )
    # WHEN ada opens the notifications page
    sign_in(app, "ada")
    app.switch_page("pages/notifications.py").run()
    # THEN the outbox row shows the failed approval request, and its body names the request
    assert not app.exception, app.exception
    outbox = app.dataframe[0].value
    row = outbox[outbox["request_id"] == request.id].iloc[0]
    assert (row["kind"], row["status"]) == ("approval_request", "failed")
    assert request.id in app.code[0].value
    assert any("payments" in t for t in texts(app.text))


def test_notification_status_filter_narrows_the_message_picker_and_shows_the_whole_error(
    app: AppTest, aws_env: dict[str, str], aws: str
) -> None:
    # GIVEN a request waiting for Finance, whose approval request fails (Finance has no
    # topic here), then denied: the decision goes out on a decisions topic
    sns = boto3.client("sns", region_name=REGION, endpoint_url=aws)
    topic = sns.create_topic(Name="mesh-decisions")["TopicArn"]
    services = build(load_settings({**aws_env, "MESH_DECISION_TOPIC_ARN": topic}, {}))
    waiting = services.marketplace.submit(
        "carol",
        database="finance_payments",
        table="payments",
        account="444455556666",
        reason="fraud model",
    )
    services.marketplace.deny(waiting.id, "fiona", comment="ask for the masked view")
    rows = services.marketplace.store.notifications()
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and len(failed) < len(rows)
    # WHEN ada opens the notifications page and keeps only the failed ones
    sign_in(app, "ada")
    app.switch_page("pages/notifications.py").run()
    app.multiselect(key="outbox_status").select("failed").run()
    # THEN the table and the message picker both list only failed messages
    assert not app.exception
    assert set(app.dataframe[0].value["status"]) == {"failed"}
    picker = app.selectbox(key="outbox_message")
    assert len(picker.options) == len(failed)
    assert all(" · failed · " in option for option in picker.options)
    # AND the chosen message's error shows in full, as text
    chosen = next(r for r in failed if r["id"] == picker.value)
    assert chosen["request_id"] == waiting.id
    assert len(chosen["error"]) > 20
    assert [e for e in texts(app.error) if chosen["error"] in e]
