"""The audit log is append-only for the app's own PostgreSQL role (issue 11).

The tables' owner runs the migrations (`mesh init`) and grants the app role what it needs
(PostgresStore.grant_app_role). The app role then runs the whole store, yet the database
refuses it any UPDATE, DELETE or TRUNCATE of the append-only tables, and any way round
their triggers; the triggers refuse the owner too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

import mesh.store.postgres
from mesh import auditchain
from mesh.errors import StorageError
from mesh.store import PgStore, pg_schema
from tests.contract.test_store_contract import a_request, an_event
from tests.pgsupport import _admin, database_url
from tests.support import AUDIT_KEY


@pytest.fixture
def app_store(pg_url: str) -> Iterator[tuple[PgStore, str]]:
    """A store migrated by the owner, opened as a fresh login role granted the app's rights."""
    owner = PgStore(pg_url, audit_key=AUDIT_KEY)
    owner.migrate()
    role, password = f"mesh_app_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    admin = _admin(pg_url)
    admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )
    owner.grant_app_role(role)
    owner.close()
    parts = psycopg.conninfo.conninfo_to_dict(pg_url)
    url = database_url(
        f"postgresql://{role}:{password}@{parts['host']}:{parts['port']}/", str(parts["dbname"])
    )
    store = PgStore(url, audit_key=AUDIT_KEY)
    try:
        yield store, url
    finally:
        store.close()
        with psycopg.connect(pg_url, autocommit=True) as conn:  # its grants live in that database
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_app_role_runs_the_store_and_its_chain(app_store: tuple[PgStore, str]) -> None:
    store, _ = app_store
    # GIVEN the app's role WHEN it adds a request with its audit row and reads it back
    assert store.add_request(a_request(), [an_event("submitted")]) is None
    # THEN it is stored and the chain holds, with every trigger in place
    assert store.get("r-1") is not None
    rows, _, _, broken = auditchain.walk(store.audit_key, store.iter_chain())
    assert (rows, broken) == (1, None)
    assert store.missing_triggers() == ()
    # AND a later start finds no migration to run (the app role cannot create tables)
    assert store.migrate(create=False) == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit SET actor = 'mallory'",
        "DELETE FROM audit",
        "TRUNCATE audit",
        "ALTER TABLE audit DISABLE TRIGGER audit_no_update",
        "DROP TRIGGER audit_no_delete ON audit",
        "UPDATE audit_checkpoints SET mac = ''",
        "DELETE FROM reconcile_reports",
        "INSERT INTO _mesh_migrations (name) VALUES ('9999_marked_done_by_the_app')",
        "INSERT INTO _mesh_app_roles (role) VALUES ('mallory')",
    ],
)
def test_the_app_role_cannot_change_or_remove_audit_rows(
    app_store: tuple[PgStore, str], statement: str
) -> None:
    store, url = app_store
    store.add_request(a_request(), [an_event("submitted")])
    # GIVEN a connection with the app's own credentials WHEN it tries to rewrite history
    with psycopg.connect(url, autocommit=True) as conn:
        # THEN the database refuses: no privilege, or only the owner may
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)  # type: ignore[call-overload]
    # AND the row is as written
    rows, _, _, broken = auditchain.walk(store.audit_key, store.iter_chain())
    assert (rows, broken) == (1, None)


def test_the_owner_is_refused_by_the_triggers(pg_url: str) -> None:
    # GIVEN the tables' owner (here the server's superuser)
    store = PgStore(pg_url, audit_key=AUDIT_KEY)
    store.migrate()
    store.add_request(a_request(), [an_event("submitted")])
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in ("UPDATE audit SET actor = 'x'", "DELETE FROM audit", "TRUNCATE audit"):
            # WHEN it changes or removes a row THEN the trigger refuses, saying why
            with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
                conn.execute(statement)  # type: ignore[call-overload]


def test_a_later_migration_grants_its_new_tables_to_the_app_role(
    app_store: tuple[PgStore, str], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _ = app_store
    # GIVEN an app role granted before a release that adds a table
    later = (*pg_schema.migrations(), ("9999_later", ("CREATE TABLE later_t (id BIGINT)",)))
    monkeypatch.setattr(pg_schema, "migrations", lambda: later)
    monkeypatch.setattr(mesh.store.postgres, "migrations", lambda: later)
    # WHEN the owner migrates (`mesh init` of the new release)
    owner = PgStore(pg_url, audit_key=AUDIT_KEY)
    assert owner.migrate() == ["9999_later"]
    owner.close()
    # THEN the app role may use the new table at once
    with psycopg.connect(app_store[1], autocommit=True) as conn:
        conn.execute("INSERT INTO later_t VALUES (1)")
        assert conn.execute("SELECT count(*) FROM later_t").fetchone() == (1,)
    assert store.migrate(create=False) == []


def test_a_writer_waiting_on_a_held_write_lock_gives_up_in_a_sentence(pg_url: str) -> None:
    # GIVEN a store whose writers wait at most 3 x 0.2 s, and a frozen writer holding the lock
    store = PgStore(pg_url, audit_key=AUDIT_KEY, timeout=0.2)
    store.migrate()
    with psycopg.connect(pg_url) as frozen:
        frozen.execute("SELECT pg_advisory_xact_lock(%s)", [mesh.store.postgres._WRITE_LOCK])
        # WHEN a request is added THEN it fails as the store being busy, naming no password
        with pytest.raises(StorageError, match="stayed locked by another writer"):
            store.add_request(a_request(), [an_event("submitted")])
    # AND once the lock is free the same write goes through
    assert store.add_request(a_request(), [an_event("submitted")]) is None
    store.close()
