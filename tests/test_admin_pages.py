"""The admin pages over real reports, outbox rows and audit rows: drift, notifications, audit."""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import date
from typing import Any

import boto3
import pytest
from streamlit.testing.v1 import AppTest

from mesh import auditlog, ui
from mesh.services import Services, build
from mesh.settings import load_settings
from mesh.store import AuditFilters, NewEvent, Store
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


def test_notifications_page_reads_the_newest_200_and_counts_the_rest_in_sql(
    app: AppTest, services: Services
) -> None:
    # GIVEN 230 sent messages and 3 failed ones in the outbox
    store = services.marketplace.store
    for n in range(233):
        status = "failed" if n in (5, 100, 230) else "sent"
        store.add_notification(
            {
                "request_id": f"r-bulk{n:04d}",
                "kind": "decision",
                "channel": "sns",
                "target": "arn:aws:sns:us-east-1:123456789012:mesh-decisions",
                "subject": f"message {n}",
                "body": "body",
                "status": status,
                "attempts": 1,
                "error": "boom" if status == "failed" else None,
                "created_at": f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}.000Z",
            },
            [],
        )
    # WHEN ada opens the notifications page
    sign_in(app, "ada")
    app.switch_page("pages/notifications.py").run()
    # THEN the newest 200 are listed, newest first, with the count of all of them
    assert not app.exception, app.exception
    table = app.dataframe[0].value
    assert list(table["subject"])[:2] == ["message 232", "message 231"]
    assert len(table) == 200
    assert "233 of 233 messages, newest first; the newest 200 shown" in texts(app.caption)
    # WHEN she keeps the failed ones, THEN all three show, found in SQL (one is older
    # than the newest 200)
    app.multiselect(key="outbox_status").select("failed").run()
    assert list(app.dataframe[0].value["subject"]) == ["message 230", "message 100", "message 5"]
    assert "3 of 233 messages, newest first" in texts(app.caption)


# Audit log at size: pages, filters in SQL, CSV on request ---------------------------------------


def bot_rows(services: Services, count: int) -> None:
    """``count`` audit rows by a job, a minute apart, each for its own request."""
    services.marketplace.store.append(
        *(
            NewEvent(
                at=f"2026-01-01T{n // 60:02d}:{n % 60:02d}:00.000Z",
                actor="nightly-job",
                action="notification_sent",
                request_id=f"r-bot{n:04d}",
                scope="sales_orders.orders",
            )
            for n in range(count)
        )
    )


def caption(app: AppTest) -> str:
    return next(c.value for c in app.caption if "matching" in c.value)


def test_audit_page_shows_100_rows_a_page_newest_first_with_older_and_newer(
    app: AppTest, services: Services
) -> None:
    # GIVEN 230 audit rows
    bot_rows(services, 230)
    # WHEN ada opens the audit log and keeps the job's rows
    sign_in(app, "ada")
    app.switch_page("pages/audit.py").run()
    app.multiselect(key="audit_actor").select("nightly-job").run()
    # THEN the first 100 rows show, newest first, and the count of all of them
    assert not app.exception, app.exception
    first = list(app.dataframe[0].value["request_id"])
    assert first == [f"r-bot{n:04d}" for n in range(229, 129, -1)]
    assert caption(app) == "rows 1–100 of 230 matching, newest first"
    assert app.button(key="audit_newer").disabled
    # WHEN she goes to older rows twice
    app.button(key="audit_older").click().run()
    app.button(key="audit_older").click().run()
    # THEN the last 30 show, and there is nothing older
    assert list(app.dataframe[0].value["request_id"])[-1] == "r-bot0000"
    assert caption(app) == "rows 201–230 of 230 matching, newest first"
    assert app.button(key="audit_older").disabled
    # WHEN she goes back to newer rows, THEN the second page shows again
    app.button(key="audit_newer").click().run()
    assert caption(app) == "rows 101–200 of 230 matching, newest first"
    assert app.dataframe[0].value["request_id"].iloc[0] == "r-bot0129"


def test_audit_page_filters_start_again_at_the_newest_matching_rows(
    app: AppTest, services: Services
) -> None:
    # GIVEN 150 rows by a job and one request of carol's
    bot_rows(services, 150)
    request = services.marketplace.submit(
        "carol", database="supply_chain", table="inventory", account="444455556666", reason="x"
    )
    sign_in(app, "ada")
    app.switch_page("pages/audit.py").run()
    app.button(key="audit_older").click().run()
    # WHEN ada, on the second page, keeps only carol's rows
    app.multiselect(key="audit_actor").select("carol").run()
    # THEN the first page of carol's rows shows, counted
    shown = app.dataframe[0].value
    assert set(shown["actor"]) == {"carol"}
    assert set(shown["request_id"]) == {request.id}
    assert caption(app).startswith(f"rows 1–{len(shown)} of {len(shown)} matching")
    # WHEN she also picks a date range that ends before carol's request, THEN nothing shows
    app.date_input(key="audit_dates").set_value((date(2026, 1, 1), date(2026, 1, 1))).run()
    assert app.dataframe[0].value.empty
    assert caption(app) == "no rows of 0 matching, newest first"
    # WHEN she filters on the job's rows of that day by request id, THEN one row shows
    app.multiselect(key="audit_actor").set_value([]).run()
    app.text_input(key="audit_request").input("r-bot0042").run()
    assert list(app.dataframe[0].value["request_id"]) == ["r-bot0042"]


def test_audit_csv_is_made_only_when_asked_and_holds_the_filtered_rows(
    app: AppTest, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN 120 rows, and the store's export watched
    bot_rows(services, 120)
    exports: list[AuditFilters] = []
    made: list[bytes] = []
    real_export, real_bytes = Store.iter_audit, auditlog.csv_bytes

    def export(store: Store, filters: AuditFilters, **kwargs: Any) -> Any:
        exports.append(filters)
        return real_export(store, filters, **kwargs)

    def keep(rows: Any) -> bytes:
        made.append(real_bytes(rows))
        return made[-1]

    monkeypatch.setattr(Store, "iter_audit", export)
    monkeypatch.setattr(auditlog, "csv_bytes", keep)
    # WHEN ada opens the audit log, filters it and pages through it
    sign_in(app, "ada")
    app.switch_page("pages/audit.py").run()
    app.text_input(key="audit_text").input("sales_orders").run()
    app.button(key="audit_older").click().run()
    # THEN no CSV was made, and none is offered yet
    assert exports == []
    assert not [b for b in app.get("download_button")]
    # WHEN she asks for the CSV of the filtered rows
    app.text_input(key="audit_request").input("r-bot0007").run()
    app.button(key="audit_csv_prepare").click().run()
    # THEN it is made once, from SQL with her filters, and offered for download
    assert [f.request_id for f in exports] == ["r-bot0007"]
    assert "CSV" in app.download_button(key="audit_csv").label
    records = list(csv.reader(io.StringIO(made[0].decode())))
    assert [r[4] for r in records[1:]] == ["r-bot0007"]
    # WHEN the page runs again, THEN the CSV is not made again
    app.run()
    assert len(exports) == 1


# The audit chain's last verification on the Audit page ----------------------------------------


def chain_caption(app: AppTest) -> str:
    return next(c.value for c in app.caption if c.value.startswith("Audit chain verified"))


def test_audit_page_says_up_to_which_row_the_chain_was_verified(
    app: AppTest, services: Services
) -> None:
    # GIVEN five rows in the log (the web app verifies them when it starts)
    bot_rows(services, 5)
    # WHEN ada signs in (her sign-in adds rows after that check) and opens the audit log
    sign_in(app, "ada")
    app.switch_page("pages/audit.py").run()
    # THEN the page names the last verified row and time, and how many rows are newer,
    # as the store's last checkpoint says
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    checkpoint, head = services.marketplace.store.checkpoint_status()
    assert checkpoint is not None and checkpoint["row_id"] >= 5
    newer = head - checkpoint["row_id"]
    assert newer > 0
    assert chain_caption(app) == (
        f"Audit chain verified up to row {checkpoint['row_id']:,} "
        f"({ui.md(ui.when(checkpoint['at']))}); "
        f"{newer:,} newer row{'s wait' if newer != 1 else ' waits'} for the next check."
    )


def test_audit_page_says_when_the_chain_does_not_verify(app: AppTest, services: Services) -> None:
    # GIVEN a log whose first row since the start-up check was edited behind the app's back
    # (triggers dropped)
    store = services.marketplace.store
    edited = store.audit_head()[0] + 1
    bot_rows(services, 3)
    with sqlite3.connect(store.path) as connection:
        connection.execute("DROP TRIGGER audit_no_update")
        connection.execute("UPDATE audit SET actor = 'someone' WHERE id = ?", [edited])
        connection.execute(
            "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
            "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        )
    connection.close()
    # WHEN ada signs in (the web app's start-up check finds the break) and opens the log
    sign_in(app, "ada")
    app.switch_page("pages/audit.py").run()
    # THEN the page says the chain does not verify, naming the row, instead of a checkpoint
    assert not app.exception, app.exception
    [error] = [e for e in texts(app.error) if e.startswith("The audit chain does not verify")]
    assert f"row {edited} " in error
    assert not [c for c in app.caption if c.value.startswith("Audit chain verified")]
