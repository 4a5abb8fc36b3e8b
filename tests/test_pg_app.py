"""MESH_DB as a PostgreSQL URL (issue 11, section 2): settings, the CLI and the web app's start.

The store itself is held to its contract in tests/contract/; these tests wire it: settings keep
the URL, `mesh init` migrates the database and names it without its password, a request is
submitted, approved and granted through the CLI against the moto server with the store on a
real PostgreSQL (the pg_url fixture), and a server that is down is one sentence, as SQLite's
StorageError is. The URL's password appears in no output, message or log line.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

import mesh.settings
from mesh.errors import SettingError
from mesh.logs import redact
from mesh.settings import DEMO_USERS, load_settings
from mesh.store import PgStore
from tests.support import (
    AUDIT_KEY,
    LINK_SECRET,
    Outcome,
    assert_one_sentence_on_stderr,
    environment_cli,
)

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PG = "postgresql://mesh:Sup3r-s3cret-pw@db.example.com:5432/mesh?sslmode=verify-full"


def _aws(**more: str) -> dict[str, str]:
    """The settings of aws mode, with MESH_DB and others from ``more``."""
    return {
        "MESH_MODE": "aws",
        "MESH_USERS": str(DEMO_USERS),
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
        **more,
    }


def _password(url: str) -> str:
    password = urlsplit(url).password
    assert password, "the test server's URL must carry a password for these tests to mean much"
    return password


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_settings_keep_a_postgresql_url_as_given_and_name_it_without_its_password(
    scheme: str, tmp_path: Path
) -> None:
    # GIVEN MESH_DB as a URL with a password, and an anchor file named
    url = PG.replace("postgresql", scheme, 1)
    env = _aws(MESH_DB=url, MESH_AUDIT_ANCHOR=f"file:{tmp_path / 'anchor.json'}")
    # WHEN the settings are read
    settings = load_settings(env, {})
    # THEN the URL is kept as it is (not made a path), and its label has no password
    assert settings.db == url and settings.on_postgres
    assert settings.db_label == "postgresql://mesh@db.example.com:5432/mesh"
    assert "s3cret" not in settings.db_label
    # AND it has no SQLite file: asking for one is a sentence, not a wrong path
    with pytest.raises(SettingError, match="not a SQLite file") as refused:
        _ = settings.db_path
    assert "s3cret" not in refused.value.message


def test_settings_keep_a_sqlite_path_as_an_absolute_path(tmp_path: Path) -> None:
    # GIVEN MESH_DB as a file's path
    settings = load_settings(_aws(MESH_DB=str(tmp_path / "mesh.db")), {})
    # THEN it is a SQLite file, named by its path
    assert not settings.on_postgres
    assert settings.db_path == tmp_path / "mesh.db"
    assert settings.db == settings.db_label == str(tmp_path / "mesh.db")
    assert settings.link_secret_file == tmp_path / "link-secret"


def test_a_postgresql_url_without_an_anchor_setting_is_refused_naming_sns_and_file() -> None:
    # GIVEN a URL and MESH_AUDIT_ANCHOR unset (whose default is a file beside a SQLite file)
    # WHEN the settings are read
    with pytest.raises(SettingError) as refused:
        load_settings(_aws(MESH_DB=PG), {})
    # THEN start-up stops with a sentence asking where the head goes, without the password
    message = refused.value.message
    assert "MESH_AUDIT_ANCHOR" in message and "sns" in message and "file:PATH" in message
    assert "s3cret" not in message


@pytest.mark.parametrize("anchor", ["sns", "off", "file:/srv/shared/mesh-anchor.json"])
def test_a_postgresql_url_with_an_anchor_named_is_accepted(anchor: str) -> None:
    settings = load_settings(_aws(MESH_DB=PG, MESH_AUDIT_ANCHOR=anchor), {})
    assert settings.on_postgres


def test_demo_mode_refuses_a_postgresql_url_since_it_resets_its_database() -> None:
    # GIVEN demo mode and a URL
    # WHEN the settings are read
    with pytest.raises(SettingError) as refused:
        load_settings({"MESH_MODE": "demo", "MESH_DB": PG, "MESH_AUDIT_ANCHOR": "off"}, {})
    # THEN it is refused: the demo never resets a database server
    assert "MESH_MODE=aws" in refused.value.message
    assert "s3cret" not in refused.value.message


def test_an_unreadable_postgresql_url_is_refused_without_repeating_its_password() -> None:
    # GIVEN a URL whose password holds a bad percent escape (libpq's error quotes it)
    url = "postgresql://mesh:Sup3r%zzs3cret@db.example.com/mesh"
    # WHEN the settings are read
    with pytest.raises(SettingError) as refused:
        load_settings(_aws(MESH_DB=url, MESH_AUDIT_ANCHOR="sns"), {})
    # THEN a sentence says how to write it, and does not repeat the password
    assert "percent-encoded" in refused.value.message
    assert "s3cret" not in refused.value.message


def test_logs_mask_the_password_of_a_database_url() -> None:
    line = redact(f"could not use {PG} (timeout)")
    assert "Sup3r-s3cret-pw" not in line
    assert "postgresql://mesh:[redacted]@db.example.com:5432/mesh" in line


# The CLI on a real PostgreSQL ----------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path) -> Callable[..., Outcome]:
    """`python -m mesh` in this process, in aws mode, with the given MESH_DB."""
    anchor = f"file:{tmp_path / 'anchor.json'}"
    return environment_cli(monkeypatch, capsys, _aws(MESH_AUDIT_ANCHOR=anchor))


def test_init_tick_request_approve_and_verify_through_the_cli_on_postgresql(
    cli: Callable[..., Outcome],
    pg_url: str,
    aws: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # GIVEN MESH_DB naming an empty database on the test server (its URL has a password)
    monkeypatch.setenv("MESH_DB", pg_url)
    password = _password(pg_url)
    # WHEN the database is initialised twice, and a tick runs (its first pass syncs the catalog
    # index from Glue)
    first, second = cli("init"), cli("init")
    tick = cli("tick")
    # THEN the first migrates it and starts the anchor, the second has nothing to do, and
    # both name the database without its password
    assert (first.code, second.code, tick.code) == (0, 0, 0), first.err + second.err + tick.err
    label = PgStore(pg_url).describe()
    assert f"Created the database {label} (MESH_DB)" in first.out
    assert f"Started the audit anchor {tmp_path / 'anchor.json'}" in first.out
    assert f"The database {label} (MESH_DB) already exists" in second.out
    # WHEN carol requests a PII table and sam, its owner, approves it
    asked = cli(
        "request", "--as", "carol", "--database", "sales_orders", "--table", "customers",
        "--account", "444455556666", "--reason", "churn model", "--json",
    )  # fmt: skip
    assert asked.code == 0, asked.err
    request = asked.json()
    approved = cli("approve", request["id"], "--as", "sam", "--comment", "ok", "--json")
    # THEN it is granted, the store on PostgreSQL lists it, and the audit chain verifies
    assert approved.code == 0, approved.err
    assert (request["status"], approved.json()["status"]) == ("pending_approval", "granted")
    listed = cli("requests", "--as", "carol", "--json")
    assert [r["id"] for r in listed.json()] == [request["id"]]
    assert cli("tick").code == 0
    verified = cli("audit", "verify")
    assert verified.code == 0, verified.err
    assert "The audit log verifies" in verified.out
    # AND the password was printed nowhere
    for outcome in (first, second, tick, asked, approved, listed, verified):
        assert password not in outcome.out + outcome.err


def test_backup_on_postgresql_says_use_pg_dump_and_exits_2(
    cli: Callable[..., Outcome], pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN an initialised PostgreSQL store
    monkeypatch.setenv("MESH_DB", pg_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # no AWS call may be made
    assert cli("init").code == 0
    # WHEN it is backed up with `mesh backup`
    result = cli("backup", str(tmp_path / "copy.db"))
    # THEN one sentence points at pg_dump, without the password; no file is written
    assert result.code == 2
    assert_one_sentence_on_stderr(result)
    assert "pg_dump" in result.err
    assert _password(pg_url) not in result.err
    assert not (tmp_path / "copy.db").exists()


def test_a_command_in_aws_mode_on_an_empty_database_says_run_init(
    cli: Callable[..., Outcome], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a database that is not a Mesh store yet
    monkeypatch.setenv("MESH_DB", pg_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    # WHEN a command runs
    result = cli("requests")
    # THEN exit 2 and one sentence saying `mesh init`, and nothing was created in it
    assert result.code == 2
    assert_one_sentence_on_stderr(result)
    assert "mesh init" in result.err
    assert _password(pg_url) not in result.err


@pytest.mark.parametrize("verb", [("requests",), ("tick",), ("init",), ("audit", "verify")])
def test_a_postgresql_server_that_is_down_is_one_sentence_and_exit_1(
    cli: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch, verb: tuple[str, ...]
) -> None:
    # GIVEN MESH_DB naming a server that is not there (a free port), with a password
    url = f"postgresql://mesh:Sup3r-s3cret-pw@127.0.0.1:{_free_port()}/mesh"
    monkeypatch.setenv("MESH_DB", url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    # WHEN a command runs
    result = cli(*verb)
    # THEN exit 1 (a StorageError, as for SQLite) with one sentence naming the store, no trace
    assert result.code == 1, result.err
    assert_one_sentence_on_stderr(result)
    assert "could not be reached" in result.err
    assert "postgresql://mesh@127.0.0.1" in result.err
    assert "Sup3r-s3cret-pw" not in result.err + result.out


def test_the_web_app_with_a_postgresql_server_down_shows_a_sentence_not_a_trace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from streamlit.testing.v1 import AppTest

    # GIVEN the web app's settings in aws mode, MESH_DB naming a server that is not there
    monkeypatch.setattr(mesh.settings, "read_secrets", lambda *args, **kwargs: {})
    url = f"postgresql://mesh:Sup3r-s3cret-pw@127.0.0.1:{_free_port()}/mesh"
    env = _aws(
        MESH_DB=url,
        MESH_AUDIT_ANCHOR=f"file:{tmp_path / 'anchor.json'}",
        MESH_COOKIE_KEY=LINK_SECRET[::-1],
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # WHEN a person opens it
    app = AppTest.from_file(APP, default_timeout=30).run()
    # THEN they read that it cannot start and why, without a trace or the password
    assert not app.exception
    shown = " ".join(e.value for e in app.error)
    assert "Mesh Marketplace cannot start" in shown and "could not be reached" in shown
    assert "Sup3r-s3cret-pw" not in shown


def test_init_with_an_app_role_lets_that_role_run_tick_but_not_rewrite_the_audit_log(
    cli: Callable[..., Outcome], pg_url: str, aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a login role for the replicas, and the tables' owner initialising the database
    role, secret = f"mesh_app_{secrets.token_hex(6)}", secrets.token_hex(16)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(secret)
            )
        )
    try:
        monkeypatch.setenv("MESH_DB", pg_url)
        init = cli("init", "--app-role", role)
        assert init.code == 0, init.err
        assert f"Granted role {role}" in init.out
        # WHEN the periodic job runs as that role
        parts = conninfo_to_dict(pg_url)
        as_app = f"postgresql://{role}:{secret}@{parts['host']}:{parts['port']}/{parts['dbname']}"
        monkeypatch.setenv("MESH_DB", as_app)
        tick = cli("tick")
        # THEN it works (it syncs the catalog and audits), and the same role cannot rewrite
        assert tick.code == 0, tick.err
        with psycopg.connect(as_app, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM audit")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_init_with_an_app_role_on_sqlite_is_refused(
    cli: Callable[..., Outcome], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_DB", str(tmp_path / "mesh.db"))
    result = cli("init", "--app-role", "mesh_app")
    assert result.code == 2
    assert_one_sentence_on_stderr(result)
    assert "PostgreSQL" in result.err and not (tmp_path / "mesh.db").exists()


def test_health_says_ok_on_an_initialised_store_and_fails_in_a_sentence_when_it_is_down(
    cli: Callable[..., Outcome], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an initialised PostgreSQL store (no AWS call may be made)
    monkeypatch.setenv("MESH_DB", pg_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert cli("init").code == 0
    # WHEN the readiness probe runs THEN it says the store answers
    ok = cli("health")
    assert ok.code == 0 and "ok: the store" in ok.out and _password(pg_url) not in ok.out
    # WHEN the server is not there THEN exit 1 and one sentence, without the password
    monkeypatch.setenv("MESH_DB", f"postgresql://mesh:pw-123456@127.0.0.1:{_free_port()}/mesh")
    down = cli("health")
    assert down.code == 1
    assert_one_sentence_on_stderr(down)
    assert "could not be reached" in down.err and "pw-123456" not in down.err
