"""Where a PostgreSQL MESH_DB takes its credentials and TLS settings from: the URL, libpq's
PG* variables or its password file, and TLS options passed through to libpq."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from mesh.errors import StorageError
from mesh.store import PgStore
from tests.support import AUDIT_KEY


def _without_password(url: str) -> tuple[str, dict[str, str]]:
    parts = {k: str(v) for k, v in conninfo_to_dict(url).items()}
    bare = f"postgresql://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"
    return bare, parts


def _opens(url: str) -> list[str]:
    store = PgStore(url, audit_key=AUDIT_KEY, timeout=3)
    try:
        return store.migrate()
    finally:
        store.close()


def test_the_password_may_come_from_pgpassword(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN MESH_DB without a password, and libpq's PGPASSWORD holding it
    bare, parts = _without_password(pg_url)
    monkeypatch.setenv("PGPASSWORD", parts["password"])
    # WHEN the store opens THEN it signs in and migrates
    assert _opens(bare)[0] == "0001_store"


def test_the_password_may_come_from_the_password_file(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN MESH_DB without a password, and a private password file naming this server
    bare, parts = _without_password(pg_url)
    passfile = tmp_path / "pgpass"
    passfile.write_text(
        f"{parts['host']}:{parts['port']}:{parts['dbname']}:{parts['user']}:{parts['password']}\n"
    )
    os.chmod(passfile, 0o600)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    # WHEN the store opens THEN it signs in with the file's password
    assert _opens(bare)[0] == "0001_store"


def test_without_any_password_the_store_says_it_could_not_sign_in(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bare, _ = _without_password(pg_url)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(StorageError, match=r"refused the sign-in .*PGPASSFILE"):
        _opens(bare)


def test_a_wrong_password_or_a_missing_database_is_named_as_such(pg_url: str) -> None:
    bare, _ = _without_password(pg_url)
    wrong = bare.replace("@", ":not-the-password@")
    with pytest.raises(StorageError, match="refused the sign-in") as refused:
        _opens(wrong)
    assert "not-the-password" not in str(refused.value)
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(StorageError, match="names a database the server does not have"):
        _opens(missing)


def test_a_role_without_the_apps_rights_is_told_to_run_init_with_app_role(pg_url: str) -> None:
    # GIVEN a store set up by its owner, and a login that was never granted anything
    owner = PgStore(pg_url, audit_key=AUDIT_KEY)
    owner.migrate()
    owner.close()
    role, secret = f"mesh_bare_{secrets.token_hex(6)}", secrets.token_hex(12)
    parts = {k: str(v) for k, v in conninfo_to_dict(pg_url).items()}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(secret)
            )
        )
    try:
        url = f"postgresql://{role}:{secret}@{parts['host']}:{parts['port']}/{parts['dbname']}"
        store = PgStore(url, audit_key=AUDIT_KEY, timeout=3)
        # WHEN it reads THEN the sentence says what to run, not "an unexpected failure"
        with pytest.raises(StorageError, match=r"mesh init --app-role"):
            store.audit_head()
        store.close()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_tls_settings_in_the_url_reach_libpq(pg_url: str) -> None:
    # GIVEN the test server, which has no TLS WHEN MESH_DB asks for TLS
    # THEN libpq refuses as it was told to, in the store's sentence
    with pytest.raises(StorageError, match="SSL"):
        _opens(f"{pg_url}?sslmode=require")
    # AND with TLS switched off explicitly it connects
    assert _opens(f"{pg_url}?sslmode=disable")[0] == "0001_store"
