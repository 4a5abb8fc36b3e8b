"""`python -m mesh migrate-store --from FILE --to postgresql://...` (issue 11, section 2, Moving).

A SQLite store is filled through the real use cases (requests submitted, approved and denied,
grants in moto's Lake Formation, a tick that sends notifications and anchors the audit log, a
reconcile), then copied to a real PostgreSQL database (the pg_url fixture). The copy keeps
every row and the audit chain as it is (the same key verifies it there), a second run adds
nothing, the store works on PostgreSQL afterwards, and bad input is one sentence, exit 2.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mesh import auditlog
from mesh.services import Services, build
from mesh.settings import load_settings
from mesh.store import PgStore
from tests.support import (
    AUDIT_KEY,
    Outcome,
    assert_one_sentence_on_stderr,
    environment_cli,
    init_store,
)

MINE, PARTNER = "444455556666", "777788889999"
COPIED = {
    "requests", "approvals", "notifications", "used_links", "reconcile_reports",
    "policy_in_force", "sessions", "sign_in_failures", "people", "audit_checkpoints", "audit",
}  # fmt: skip


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Callable[..., Outcome]:
    """`python -m mesh` in this process (the settings come from the environment)."""
    return environment_cli(monkeypatch, capsys)


@pytest.fixture
def filled(services: Services) -> Path:
    """A SQLite store (aws mode, moto) with requests in several states, made by the use
    cases, a tick's notifications and anchor, a reconcile report, a session and a used link."""
    market, store = services.marketplace, services.marketplace.store

    def submit(user: str, table: str, account: str) -> str:
        return market.submit(
            user, database="sales_orders", table=table, account=account, reason="a report"
        ).id

    approved = submit("carol", "customers", MINE)
    submit("carol", "orders", MINE)  # granted by the policy at once
    denied = submit("ada", "customers", PARTNER)
    submit("dan", "returns", PARTNER)  # left waiting (or granted: its level decides)
    market.approve(approved, "sam", comment="ok")
    market.deny(denied, "sam", comment="use the aggregate")
    services.lifecycle.tick()
    services.lifecycle.reconcile(fix=False)
    store.open_session("token-1", "carol", at="2026-01-01T00:00:00+00:00")
    store.use_link("nonce-1", request_id=approved, action="approve", used_by="sam", at="now")
    store.close()
    return services.settings.db_path


def counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COPIED}


def pg_counts(url: str) -> dict[str, int]:
    store = PgStore(url)
    try:
        with store._connect() as db:
            return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COPIED}
    finally:
        store.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_filled_store_is_copied_whole_and_its_chain_verifies_on_postgresql(
    filled: Path,
    pg_url: str,
    cli: Callable[..., Outcome],
    monkeypatch: pytest.MonkeyPatch,
    aws_env: dict[str, str],
) -> None:
    # GIVEN a SQLite store with rows in every table the app writes, and an empty database
    before, source = counts(filled), digest(filled)
    assert all(before[t] for t in COPIED - {"sign_in_failures", "people"}), before
    monkeypatch.setenv("MESH_AUDIT_KEY", AUDIT_KEY)
    # WHEN it is copied
    result = cli("migrate-store", "--from", str(filled), "--to", pg_url)
    # THEN every count matches, is printed per table, and the chain verifies with the key
    assert result.code == 0, result.err
    assert pg_counts(pg_url) == before
    for table, rows in before.items():
        assert f"{table} " in result.out and str(rows) in result.out
    assert "every table's count matches" in result.out
    assert "The audit log on the target verifies with MESH_AUDIT_KEY" in result.out
    assert urlsplit(pg_url).password not in result.out + result.err
    # AND the source is unchanged (it is read only)
    assert digest(filled) == source
    # AND `mesh audit verify` on PostgreSQL agrees, with the SQLite store's anchor file
    for name, value in aws_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MESH_DB", pg_url)
    monkeypatch.setenv("MESH_AUDIT_ANCHOR", f"file:{filled.parent / 'audit-anchor.json'}")
    verified = cli("audit", "verify")
    assert verified.code == 0, verified.err
    assert "agrees with the last anchor" in verified.out


def test_a_second_copy_adds_nothing_and_the_store_then_works_on_postgresql(
    filled: Path,
    pg_url: str,
    cli: Callable[..., Outcome],
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # GIVEN a store copied once
    assert cli("migrate-store", "--from", str(filled), "--to", pg_url).code == 0
    first = pg_counts(pg_url)
    # WHEN it is copied again
    again = cli("migrate-store", "--from", str(filled), "--to", pg_url)
    # THEN nothing is copied the second time and the counts are the same
    assert again.code == 0, again.err
    assert pg_counts(pg_url) == first
    copied_now = [line.split()[-1] for line in again.out.splitlines() if line.split()[:1] in (
        [t] for t in COPIED
    )]  # fmt: skip
    assert copied_now == ["0"] * len(COPIED), again.out
    # WHEN the app runs on PostgreSQL: a sync (the catalog index is not copied), a new
    # request and its approval
    env = aws_env | {
        "MESH_DB": pg_url,
        "MESH_AUDIT_ANCHOR": f"file:{filled.parent}/audit-anchor.json",
    }
    services = build(load_settings(env, {}))
    services.sync.run(actor="cli")
    market = services.marketplace
    new = market.submit("ada", database="sales_crm", table="contacts", account=MINE, reason="after")
    assert new.status.value == "pending_approval"
    decided = market.approve(new.id, "sam")
    services.lifecycle.tick()
    # THEN it is granted and stored beside the copied ones: new rows in the tables with
    # generated ids (approvals, notifications, the request's order) took ids after the
    # copied ones instead of colliding with them
    assert decided.status.value == "granted"
    after = pg_counts(pg_url)
    assert after["requests"] == first["requests"] + 1
    assert after["approvals"] == first["approvals"] + 1
    assert after["notifications"] > first["notifications"]
    assert after["audit"] > first["audit"]
    assert market.store.requests()[0].id == new.id  # newest first (created_at, then rowid)


def test_a_target_whose_audit_log_was_started_elsewhere_is_refused_and_left_alone(
    filled: Path, pg_url: str, cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    # GIVEN a PostgreSQL store that `mesh init` started (its own first audit row)
    store = PgStore(pg_url, audit_key=AUDIT_KEY)
    store.migrate(create=True)
    anchor = auditlog.FileAnchor(tmp_path / "pg-anchor.json")
    auditlog.initialise_anchor(store, anchor, by="cli init", at="2026-01-01T00:00:00+00:00")
    store.close()
    before = pg_counts(pg_url)
    # WHEN the SQLite store is copied into it
    result = cli("migrate-store", "--from", str(filled), "--to", pg_url)
    # THEN it is refused in one sentence, and nothing was copied
    assert result.code == 5, result.err
    assert_one_sentence_on_stderr(result)
    assert "not the start of the source's" in result.err
    assert pg_counts(pg_url) == before


@pytest.mark.parametrize(
    "target",
    [
        "mysql://mesh:Sup3r-s3cret-pw@db/mesh",
        "postgresql://mesh:Sup3r%zzs3cret-pw@db/mesh",  # a bad percent escape
        "postgresql://mesh:Sup3r-s3cret-pw@127.0.0.1:9/mesh",  # nothing listens there
    ],
)
def test_a_bad_target_url_is_one_sentence_exit_2_without_the_password(
    target: str, cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    # GIVEN a real source store
    source = tmp_path / "mesh.db"
    init_store(source)
    before = digest(source)
    # WHEN it is copied to a target that cannot be used
    result = cli("migrate-store", "--from", str(source), "--to", target)
    # THEN exit 2, one sentence, no password, and the source is as it was
    assert result.code == 2, result.err
    assert_one_sentence_on_stderr(result)
    assert "s3cret" not in result.err + result.out
    assert digest(source) == before


def test_a_missing_source_file_is_one_sentence_exit_2_and_the_target_stays_empty(
    pg_url: str, cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    result = cli("migrate-store", "--from", str(tmp_path / "nothing.db"), "--to", pg_url)
    assert result.code == 2
    assert_one_sentence_on_stderr(result)
    assert "nothing.db" in result.err
    store = PgStore(pg_url)
    with store._connect() as db:
        tables = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone()[0] == 0
    store.close()


def test_a_count_that_differs_after_the_copy_is_exit_1_naming_the_table(
    filled: Path, pg_url: str, cli: Callable[..., Outcome]
) -> None:
    # GIVEN a target that already holds a session the source does not have
    store = PgStore(pg_url, audit_key=AUDIT_KEY)
    store.migrate(create=True)
    store.open_session("only-on-the-target", "sam", at="2026-01-01T00:00:00+00:00")
    store.close()
    # WHEN the store is copied into it
    result = cli("migrate-store", "--from", str(filled), "--to", pg_url)
    # THEN the copy is made, but the sessions' counts differ: exit 1, the table named
    assert result.code == 1
    assert_one_sentence_on_stderr(result)
    assert "row counts of sessions differ" in result.err
    assert "MISMATCH" in next(
        line for line in result.out.splitlines() if line.startswith("sessions")
    )
