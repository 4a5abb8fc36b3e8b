"""The audit log's hash chain, its verification, anchors and checkpoints; the drift check's
own audit trail; and the CSV export's formula neutralisation."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

import mesh.store
from mesh import auditchain, auditlog
from mesh.cli import main
from mesh.errors import Forbidden, SettingError
from mesh.services import Services, build
from mesh.settings import Settings, load_settings
from mesh.store import AUDIT_CHAIN, AUDIT_COLUMNS, AuditFilters, NewEvent, Store, migrations
from tests.support import AUDIT_KEY

KEY = AUDIT_KEY  # the key the fixtures made the store and its anchor with
OTHER_KEY = "another-audit-key-entirely-Hq2W9eR4tY7uI1oP5"


def event(n: int, *, request_id: str | None = "r-00000001") -> NewEvent:
    return NewEvent(
        at=f"2026-01-01T00:00:{n:02d}.000Z",
        actor="carol",
        action="request_submitted",
        request_id=request_id,
        scope="sales_orders.orders",
        details={"n": n},
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    made = Store(tmp_path / "mesh.db", audit_key=KEY)
    made.migrate()
    return made


def raw(store: Store) -> sqlite3.Connection:
    return sqlite3.connect(store.path, isolation_level=None)


# The chain ----------------------------------------------------------------------------------


def test_each_appended_row_carries_the_mac_of_its_content_after_the_row_before(
    store: Store,
) -> None:
    # GIVEN three rows appended, two of them in one write
    store.append(event(1))
    store.append(event(2), event(3))
    # WHEN the rows are read as stored
    rows = list(store.iter_chain())
    # THEN each chain is the MAC of the row after the previous chain, and the whole verifies
    key, prev = KEY.encode(), auditchain.GENESIS
    for row in rows:
        assert row[7] == auditchain.row_mac(key, prev, row[:7])
        prev = row[7]
    assert [r[0] for r in rows] == [1, 2, 3]
    found = auditlog.verify(store)
    assert (found.ok, found.rows, found.head_id, found.head_chain) == (True, 3, 3, prev)


def test_an_append_reads_only_the_last_row_of_the_log(store: Store) -> None:
    # GIVEN a log with rows, and every statement the store's connection runs traced
    store.append(*(event(n) for n in range(1, 50)))
    statements: list[str] = []
    with store._connect() as db:
        db.conn.set_trace_callback(statements.append)
    # WHEN one more row is appended
    store.append(event(50))
    # THEN the only read of the audit table is the last row's id and chain
    with store._connect() as db:
        db.conn.set_trace_callback(None)
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "audit" in s]
    assert reads == ["SELECT id, chain FROM audit ORDER BY id DESC LIMIT 1"]


def test_a_store_made_without_a_key_refuses_to_chain_unless_asked_for_the_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a store made without a key, outside the test suite's default
    monkeypatch.setattr(mesh.store, "KEY_FILE_BESIDE_BY_DEFAULT", False)
    bare = Store(tmp_path / "mesh.db")
    bare.migrate(create=True)
    # THEN writing an audit row names the missing setting, and no key file appears
    with pytest.raises(SettingError, match="without the audit chain's key: set MESH_AUDIT_KEY"):
        bare.append(event(1))
    assert not (tmp_path / "audit-key").exists()
    # WHEN its maker asks for the demo's key file beside the database
    demo = Store(tmp_path / "mesh.db", key_file_beside=True)
    demo.append(event(1))
    # THEN the file is made private, and another store asking the same reads the same key
    assert (tmp_path / "audit-key").stat().st_mode & 0o777 == 0o600
    assert auditlog.verify(Store(tmp_path / "mesh.db", key_file_beside=True)).ok


def test_another_key_does_not_verify_the_chain(store: Store) -> None:
    # GIVEN rows chained with one key
    store.append(event(1), event(2))
    # WHEN the same file is verified with another key
    found = auditlog.verify(Store(store.path, audit_key=OTHER_KEY))
    # THEN the first row is the break, and the reason names the key as a possible cause
    assert not found.ok and found.broken is not None
    assert found.broken.row_id == 1 and "MESH_AUDIT_KEY" in found.broken.reason


def test_rows_written_before_the_chain_are_chained_once_by_the_migration(tmp_path: Path) -> None:
    # GIVEN a store from before migration 0013, with two audit rows
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before=AUDIT_CHAIN)
    for n in (1, 2):
        db["audit"].insert(event(n).row())  # type: ignore[union-attr]
    db.conn.close()
    # WHEN it is migrated with the key
    store = Store(path, audit_key=KEY)
    assert AUDIT_CHAIN in store.migrate()
    # THEN both rows are chained, new rows follow on, and the update trigger is back
    store.append(event(3))
    found = auditlog.verify(store)
    assert (found.ok, found.rows) == (True, 3)
    assert store.missing_triggers() == ()
    with raw(store) as connection, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("UPDATE audit SET actor = 'sam' WHERE id = 1")
    # AND a row inserted later without a chain is a break, not chained by a later start
    with raw(store) as connection:
        connection.execute("INSERT INTO audit (at, actor, action) VALUES ('t', 'sam', 'approved')")
    assert store.migrate() == []
    found = auditlog.verify(store)
    assert found.broken is not None and found.broken.row_id == 4
    assert "carries no chain" in found.broken.reason


def test_the_tail_check_records_a_checkpoint_and_then_reads_only_newer_rows(store: Store) -> None:
    # GIVEN five rows, checked once
    store.append(*(event(n) for n in range(1, 6)))
    first = auditlog.verify_tail(store, at="2026-01-02T00:00:00.000Z")
    # WHEN two more rows are written and the tail is checked again
    store.append(event(6), event(7))
    second = auditlog.verify_tail(store, at="2026-01-02T00:01:00.000Z")
    # THEN the first pass read five rows, the second only the two new ones
    assert (first.ok, first.rows, second.ok, second.rows, second.first_id) == (
        True,
        5,
        True,
        2,
        6,
    )
    assert store.last_checkpoint() == (7, second.head_chain)


def test_a_forged_checkpoint_is_passed_over(store: Store) -> None:
    # GIVEN a checked log, and a checkpoint written by hand past a row edited later
    store.append(*(event(n) for n in range(1, 4)))
    auditlog.verify_tail(store, at="2026-01-02T00:00:00.000Z")
    with raw(store) as connection:
        connection.execute(
            "INSERT INTO audit_checkpoints (at, row_id, chain, rows, mac) "
            "VALUES ('2026-01-03T00:00:00.000Z', 99, 'x', 1, 'not-a-mac')"
        )
    # WHEN the last checkpoint is read
    # THEN the forged one does not count
    assert store.last_checkpoint() is not None
    assert store.last_checkpoint()[0] == 3  # type: ignore[index]


def test_checkpoints_and_reconcile_reports_are_append_only(store: Store) -> None:
    # GIVEN a checkpoint and a reconcile report
    store.append(event(1))
    auditlog.verify_tail(store, at="2026-01-02T00:00:00.000Z")
    store.add_report(at="2026-01-02T00:00:00.000Z", actor="ada", fixed=False, report={}, events=[])
    # WHEN either is updated or deleted
    # THEN the triggers refuse it
    with raw(store) as connection:
        for sql in (
            "UPDATE reconcile_reports SET actor = 'x'",
            "DELETE FROM reconcile_reports",
            "UPDATE audit_checkpoints SET row_id = 0",
            "DELETE FROM audit_checkpoints",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                connection.execute(sql)


# Anchors ------------------------------------------------------------------------------------


def test_an_anchor_catches_a_cut_tail_and_a_forged_anchor_is_refused(store: Store) -> None:
    # GIVEN four rows and the head published to a file
    store.append(*(event(n) for n in range(1, 5)))
    anchor = auditlog.FileAnchor(store.path.parent / "elsewhere" / "head.json")
    anchor.publish(store, auditlog.head_record(store, at="2026-01-02T00:00:00.000Z"))
    assert (anchor.where(store).stat().st_mode & 0o777) == 0o600
    assert auditlog.verify(store, anchor=anchor.last(store)).ok
    # WHEN the last row is deleted (triggers dropped and restored)
    with raw(store) as connection:
        connection.execute("DROP TRIGGER audit_no_delete")
        connection.execute("DELETE FROM audit WHERE id = 4")
    # THEN the chain alone still holds, but the anchor names the missing row
    assert auditlog.verify(store).broken is None
    found = auditlog.verify(store, anchor=anchor.last(store))
    assert not found.ok and any("ends at row 3" in p for p in found.problems)
    # AND an anchor whose MAC was made without the key is refused
    forged = {**anchor.last(store), "row_id": 3}  # type: ignore[dict-item]
    assert any("MAC does not match" in p for p in auditlog.verify(store, anchor=forged).problems)


def test_tick_publishes_the_head_beside_the_store_and_reports_a_break(
    services: Services,
) -> None:
    # GIVEN a request, and the periodic job run once
    services.marketplace.submit(
        "carol", database="sales_orders", table="orders", account="444455556666", reason="r"
    )
    store = services.marketplace.store
    first = services.lifecycle.tick()
    # THEN the head it checked is published beside the store
    published = json.loads((store.path.parent / "audit-anchor.json").read_text())
    assert first.audit_log is not None and first.audit_log["ok"]
    assert published["row_id"] == store.audit_head()[0] == first.audit_log["head"]["row_id"]
    # WHEN a row is edited behind the app's back, its trigger left dropped, and a new row
    # is written
    with raw(store) as connection:
        connection.execute("DROP TRIGGER audit_no_update")
        connection.execute("UPDATE audit SET actor = 'sam' WHERE id = 1")
    services.marketplace.submit(
        "carol", database="sales_orders", table="returns", account="444455556666", reason="r"
    )
    # THEN the job checks only the new rows (they hold) but reports the dropped trigger,
    # and the full check names the edited row
    second = services.lifecycle.tick()
    assert second.audit_log is not None and second.audit_log["broken"] is None
    assert second.audit_log["first_id"] == first.audit_log["head"]["row_id"] + 1
    assert any("audit_no_update" in e for e in second.errors), second.errors
    found = auditlog.verify(store)
    assert found.broken is not None and found.broken.row_id == 1


# The CLI ------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {**aws_env, "MESH_AUDIT_KEY": KEY}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_audit_verify_exits_0_on_a_whole_chain_and_1_naming_the_first_broken_row(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN three rows written with the key, after `mesh init`'s anchor_initialised
    store = Store(cli_env["MESH_DB"], audit_key=KEY)
    store.append(event(1), event(2), event(3))
    # WHEN the log is verified
    # THEN it holds: exit 0, with the row count and the head
    assert main(["audit", "verify"]) == 0
    assert "The audit log verifies: 4 rows, head row 4" in capsys.readouterr().out
    # WHEN row 3 is edited with the triggers dropped and restored
    with raw(store) as connection:
        connection.execute("DROP TRIGGER audit_no_update")
        connection.execute("UPDATE audit SET actor = 'sam' WHERE id = 3")
        connection.execute(
            "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
            "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        )
    # THEN verify exits 1 and names row 3, in text and in JSON
    assert main(["audit", "verify"]) == 1
    assert "row 3 does not match its chain" in capsys.readouterr().err
    assert main(["audit", "verify", "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert (found["ok"], found["broken"]["row_id"], found["rows_checked"]) == (False, 3, 3)


def test_audit_verify_compares_a_head_given_by_hand(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a head taken at row 3, then the log cut back to row 2
    store = Store(cli_env["MESH_DB"], audit_key=KEY)
    store.append(event(1), event(2))
    head = auditlog.head_record(store, at="2026-01-02T00:00:00.000Z")
    with raw(store) as connection:
        connection.execute("DROP TRIGGER audit_no_delete")
        connection.execute("DELETE FROM audit WHERE id = 3")
    # WHEN it is verified against that head (as a subscriber of the SNS topic would)
    code = main(["audit", "verify", "--anchor", json.dumps(head)])
    # THEN the cut tail is found (and the dropped trigger too)
    err = capsys.readouterr().err
    assert code == 1 and "names row 3, but the log ends at row 2" in err
    assert "audit_no_delete" in err


# The drift check's audit trail and who may run it ---------------------------------------


def test_a_reconcile_that_finds_nothing_still_leaves_an_audit_row(services: Services) -> None:
    # GIVEN nothing granted
    # WHEN the drift check runs as the system
    report = services.lifecycle.reconcile(fix=False)
    # THEN it finds nothing, and one reconcile_ran row records the run with its counts
    assert (report["missing"], report["unexplained"], report["unexplained_requests"]) == (
        [],
        [],
        [],
    )
    [row] = services.marketplace.audit(action="reconcile_ran")
    assert row.actor == "reconcile"
    assert row.details == {
        "fix": False,
        "granted_requests": 0,
        "missing": 0,
        "unexplained": 0,
        "unexplained_requests": 0,
        "in_flight": 0,
        "fixed": 0,
    }


def test_only_an_admin_may_run_the_drift_check_as_a_person(services: Services) -> None:
    # GIVEN carol (a consumer) and ada (an admin)
    carol = services.marketplace._user("carol")
    ada = services.marketplace._user("ada")
    # WHEN carol runs it, THEN it is refused on the server
    with pytest.raises(Forbidden, match="only an admin"):
        services.lifecycle.reconcile(carol, fix=True)
    # WHEN ada runs it, THEN it runs and is audited as ada
    services.lifecycle.reconcile(ada, fix=False)
    assert [r.actor for r in services.marketplace.audit(action="reconcile_ran")] == ["ada"]


def test_cli_reconcile_as_a_named_admin_is_audited_as_that_admin(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # WHEN the CLI runs the drift check as ada, and as carol
    assert main(["reconcile", "--as", "ada"]) == 0
    assert main(["reconcile", "--as", "carol"]) == 3
    # THEN ada's run is audited as hers, carol's is refused
    assert "only an admin" in capsys.readouterr().err
    rows = Store(cli_env["MESH_DB"], audit_key=KEY).audit(action="reconcile_ran")
    assert [r.actor for r in rows] == ["ada"]


# Settings -----------------------------------------------------------------------------------


def test_audit_settings_read_the_anchor_and_refuse_a_weak_key(aws_env: dict[str, str]) -> None:
    # GIVEN the anchor set each way, and a weak key
    assert load_settings(aws_env, {}).audit_anchor == "beside"
    assert load_settings({**aws_env, "MESH_AUDIT_ANCHOR": "SNS"}, {}).audit_anchor == "sns"
    assert load_settings(
        {**aws_env, "MESH_AUDIT_ANCHOR": "file:/srv/head.json"}, {}
    ).audit_anchor == ("file:/srv/head.json")
    # THEN a place that is none is refused, and so is a weak key, saying how to make one
    with pytest.raises(SettingError, match="MESH_AUDIT_ANCHOR"):
        load_settings({**aws_env, "MESH_AUDIT_ANCHOR": "s3"}, {})
    with pytest.raises(SettingError, match="MESH_AUDIT_KEY"):
        load_settings({**aws_env, "MESH_AUDIT_KEY": "a" * 40}, {})


def test_the_anchor_has_one_default_whether_settings_are_loaded_or_made(
    aws_env: dict[str, str],
) -> None:
    # GIVEN MESH_AUDIT_ANCHOR unset
    loaded = load_settings(aws_env, {}).audit_anchor
    # THEN the loader and the Settings class agree: the file beside the store
    made = {f.name: f.default for f in dataclasses.fields(Settings)}["audit_anchor"]
    assert loaded == made == "beside"


def test_aws_mode_without_an_audit_key_refuses_to_start_rather_than_keep_it_beside_the_db(
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN aws mode without MESH_AUDIT_KEY
    monkeypatch.delenv("MESH_AUDIT_KEY")
    monkeypatch.setattr("mesh.settings.read_secrets", lambda *args, **kwargs: {})
    # WHEN the periodic job would start
    code = main(["tick"])
    # THEN it is refused with the sentence that says how to make a key, and no key file
    # appears beside the database
    assert code == 2
    assert "MESH_AUDIT_KEY is not set" in capsys.readouterr().err
    assert not (Path(cli_env["MESH_DB"]).parent / "audit-key").exists()


# The CSV export -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell",
    ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"],
)
def test_a_cell_a_spreadsheet_would_run_as_a_formula_is_quoted_as_text(cell: str) -> None:
    assert auditlog.safe_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["sales_orders.orders", "", "a=b", "r-1", 5, None])
def test_other_cells_are_written_as_they_are(cell: object) -> None:
    assert auditlog.safe_cell(cell) == cell


def test_the_csv_export_neutralises_a_database_named_like_a_formula(store: Store) -> None:
    # GIVEN a row about a database named =HYPERLINK(...), by an actor named @SUM(1)
    store.append(
        NewEvent(
            at="2026-01-01T00:00:00.000Z",
            actor="@SUM(1)",
            action="request_submitted",
            request_id="r-1",
            scope='=HYPERLINK("http://evil.example","x").orders',
            details={"reason": "-1"},
        )
    )
    # WHEN it is exported as CSV
    text = "".join(auditlog.csv_chunks(store.iter_audit(AuditFilters())))
    # THEN the header comes first, and each formula-like cell starts with a quote
    header, row = list(csv.reader(io.StringIO(text)))
    assert header == list(AUDIT_COLUMNS)
    assert row[2] == "'@SUM(1)"
    assert row[5] == '\'=HYPERLINK("http://evil.example","x").orders'
    assert row[6] == '{"reason": "-1"}'  # JSON starts with a brace: nothing to neutralise


def test_a_demo_started_afresh_starts_a_new_anchor(aws: str, tmp_path: Path) -> None:
    # GIVEN a demo database with a request, checked and anchored by the periodic job
    from mesh.demo import standin

    db = tmp_path / "demo.db"
    standin.reset_database(db)
    settings = load_settings({"MESH_DB": str(db)}, {})
    first = build(settings, endpoint=aws)
    first.marketplace.submit(
        "carol", database="sales_orders", table="orders", account="444455556666", reason="r"
    )
    assert not first.lifecycle.tick().errors
    # WHEN the demo starts again on a database made afresh (fewer rows than the anchor names)
    first.marketplace.store.close()
    standin.reset_database(db)
    again = build(settings, endpoint=aws)
    # THEN the old demo's anchor is not held against it
    assert again.audit_check is not None and again.audit_check.ok
    assert not again.lifecycle.tick().errors


def test_an_anchor_deleted_with_the_tail_it_published_is_a_break_for_tick_and_verify(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a request, checked and its head published beside the store by tick
    services = build(load_settings(cli_env, {}))
    market = services.marketplace
    market.submit(
        "carol", database="sales_orders", table="orders", account="444455556666", reason="r"
    )
    assert not services.lifecycle.tick().errors
    anchor = market.store.path.parent / "audit-anchor.json"
    assert anchor.exists() and main(["audit", "verify"]) == 0
    capsys.readouterr()
    # WHEN the anchor is deleted and the log's last row cut (triggers dropped and restored)
    anchor.unlink()
    head = market.store.audit_head()[0]
    with raw(market.store) as connection:
        connection.execute("DROP TRIGGER audit_no_delete")
        connection.execute("DELETE FROM audit WHERE id = ?", [head])
        connection.execute(
            "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
            "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        )
    # THEN tick reports the missing anchor and publishes no new one
    report = services.lifecycle.tick()
    assert any("audit-anchor.json is missing" in e for e in report.errors), report.errors
    assert not anchor.exists()
    # AND audit verify exits 1 naming it
    assert main(["audit", "verify"]) == 1
    assert "was published to it at" in capsys.readouterr().err


def test_an_anchor_file_never_written_is_missing_too(services: Services) -> None:
    # GIVEN a head published to another file, then that file gone
    store = services.marketplace.store
    store.append(event(1))
    elsewhere = auditlog.FileAnchor(store.path.parent / "old" / "head.json")
    elsewhere.publish(store, auditlog.head_record(store, at="2026-01-02T00:00:00.000Z"))
    assert (elsewhere.where(store).parent.stat().st_mode & 0o777) == 0o700
    elsewhere.where(store).unlink()
    # THEN both read as missing: a new place starts only with `mesh audit anchor --init`
    fresh = auditlog.FileAnchor(store.path.parent / "new.json").last(store) or {}
    assert "mesh audit anchor --init" in fresh["missing"]
    assert "was published to it at" in (elsewhere.last(store) or {})["missing"]


def test_tick_publishes_the_head_to_the_central_topic_with_sns(
    aws_env: dict[str, str], aws: str
) -> None:
    # GIVEN the anchor set to sns, and a queue subscribed to the admin topic
    import boto3

    sns = boto3.client("sns", region_name="us-east-1", endpoint_url=aws)
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=aws)
    topic = sns.create_topic(Name="mesh-admin-anchor")["TopicArn"]
    queue = sqs.create_queue(QueueName="anchor-reader")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    env = {
        **aws_env,
        "MESH_AUDIT_KEY": KEY,
        "MESH_AUDIT_ANCHOR": "sns",
        "MESH_ADMIN_TOPIC_ARN": topic,
    }
    services = build(load_settings(env, {}))
    services.marketplace.submit(
        "carol", database="sales_orders", table="orders", account="444455556666", reason="r"
    )
    # WHEN the periodic job runs
    assert not services.lifecycle.tick().errors
    # THEN the head was published, and it verifies against the log when given by hand
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    heads = [json.loads(json.loads(m["Body"])["Message"]) for m in messages]
    heads = [h for h in heads if "chain" in h]
    assert [h["row_id"] for h in heads] == [services.marketplace.store.audit_head()[0]]
    assert auditlog.verify(services.marketplace.store, anchor=heads[0]).ok


def test_sns_anchor_without_the_admin_topic_is_a_setting_error(
    aws_env: dict[str, str], aws: str
) -> None:
    with pytest.raises(SettingError, match="MESH_ADMIN_TOPIC_ARN"):
        build(load_settings({**aws_env, "MESH_AUDIT_ANCHOR": "sns"}, {}))


def junk_checkpoints(store: Store, *, rows: int, count: int = 20) -> None:
    """``count`` checkpoint rows with a made-up MAC, as someone without the key writes them."""
    with raw(store) as connection:
        connection.executemany(
            "INSERT INTO audit_checkpoints (at, row_id, chain, rows, mac) VALUES (?, 1, ?, ?, ?)",
            [("2026-01-03T00:00:00.000Z", "0" * 64, rows, "f" * 64)] * count,
        )


def cut_last_row(store: Store) -> None:
    head = store.audit_head()[0]
    with raw(store) as connection:
        connection.execute("DROP TRIGGER audit_no_delete")
        connection.execute("DELETE FROM audit WHERE id = ?", [head])
        connection.execute(
            "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
            "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        )


def test_junk_notes_and_a_deleted_anchor_do_not_hide_a_cut_tail(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a request checked and its head published by tick
    services = build(load_settings(cli_env, {}))
    market = services.marketplace
    market.submit(
        "carol", database="sales_orders", table="orders", account="444455556666", reason="r"
    )
    assert not services.lifecycle.tick().errors
    anchor = market.store.path.parent / "audit-anchor.json"
    # WHEN 20 forged publication notes bury the real ones, the anchor is deleted and the
    # log's last row cut
    junk_checkpoints(market.store, rows=-1)
    anchor.unlink()
    cut_last_row(market.store)
    # THEN tick still reports the missing anchor, and audit verify exits 1
    report = services.lifecycle.tick()
    assert any("audit-anchor.json is missing" in e for e in report.errors), report.errors
    assert main(["audit", "verify"]) == 1
    assert "audit anchor --init" in capsys.readouterr().err


def test_audit_anchor_init_starts_the_anchor_again_and_is_audited(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a log whose anchor file is gone (a restore from a backup, say)
    store = Store(cli_env["MESH_DB"], audit_key=KEY)
    store.append(event(1))
    (store.path.parent / "audit-anchor.json").unlink()
    assert main(["audit", "verify"]) == 1
    # WHEN `audit anchor` runs without --init, nothing is started
    assert main(["audit", "anchor"]) != 0
    assert "needs --init" in capsys.readouterr().err
    # WHEN an admin runs `audit anchor --init`
    assert main(["audit", "anchor", "--init"]) == 0
    # THEN the log verifies against the new anchor, and the start is in the log
    assert main(["audit", "verify"]) == 0
    assert [e.action for e in store.audit()][-1] == "anchor_initialised"
    # AND a broken chain gets no anchor
    with raw(store) as connection:
        connection.execute("DROP TRIGGER audit_no_update")
        connection.execute("UPDATE audit SET actor = 'sam' WHERE id = 2")
    (store.path.parent / "audit-anchor.json").unlink()
    capsys.readouterr()
    assert main(["audit", "anchor", "--init"]) != 0
    assert "does not verify, so no anchor was started" in capsys.readouterr().err
    assert not (store.path.parent / "audit-anchor.json").exists()


def test_junk_checkpoints_never_make_the_demo_drop_its_anchor(aws: str, tmp_path: Path) -> None:
    # GIVEN a demo database checked and anchored by the periodic job
    from mesh.demo import standin

    db = tmp_path / "demo.db"
    standin.reset_database(db)
    settings = load_settings({"MESH_DB": str(db)}, {})
    first = build(settings, endpoint=aws)
    first.marketplace.submit(
        "carol", database="sales_orders", table="orders", account="444455556666", reason="r"
    )
    assert not first.lifecycle.tick().errors
    # WHEN junk checkpoints hide every real one, and the demo's app starts again on the
    # same database (not made afresh)
    junk_checkpoints(first.marketplace.store, rows=3)
    junk_checkpoints(first.marketplace.store, rows=-1)
    first.marketplace.store.close()
    again = build(settings, endpoint=aws)
    # THEN the anchor is still there, and a cut tail is a break
    assert (tmp_path / "audit-anchor.json").exists()
    cut_last_row(again.marketplace.store)
    assert any("audit log" in e for e in again.lifecycle.tick().errors)


def test_the_demo_builds_its_stores_without_the_tests_key_default(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the suite's module-wide default (a key file beside any store) turned off, as
    # it is in production
    from mesh.demo import standin

    monkeypatch.setattr(mesh.store, "KEY_FILE_BESIDE_BY_DEFAULT", False)
    db = tmp_path / "demo.db"
    # WHEN the stand-in makes its database, and the demo's services use it
    standin.reset_database(db)
    services = build(load_settings({"MESH_DB": str(db)}, {}), endpoint=aws)
    services.marketplace.submit(
        "carol", database="sales_orders", table="orders", account="444455556666", reason="r"
    )
    # THEN every store that wrote or checked the log had its key: the log verifies
    assert services.audit_check is not None and services.audit_check.ok
    assert not services.lifecycle.tick().errors
    # AND a store made without a key is still refused
    with pytest.raises(SettingError, match="without the audit chain's key"):
        Store(db).append(event(1))
