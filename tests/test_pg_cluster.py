"""The PostgreSQL test fixtures give a real, empty, private database per test.

These run against the throwaway server `scripts/dev test` starts (MESH_TEST_PG_URL); without
one they fail rather than skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests import pgsupport


def test_pg_url_is_a_real_postgresql_database_that_keeps_what_is_written(pg_url: str) -> None:
    # GIVEN a fresh database from the fixture
    with psycopg.connect(pg_url) as conn:
        version = conn.execute("SELECT version()").fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        # WHEN a table is made and a row written and committed
        conn.execute("CREATE TABLE marks (id serial PRIMARY KEY, note text NOT NULL)")
        conn.execute("INSERT INTO marks (note) VALUES (%s)", ("written",))

    # THEN the server is PostgreSQL, the database started empty, and a new connection reads
    # the row back
    assert version is not None and "PostgreSQL" in str(version[0])
    assert tables == (0,)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT id, note FROM marks").fetchall() == [(1, "written")]


def test_two_fresh_databases_do_not_see_each_others_tables(pg_server_url: str) -> None:
    # GIVEN two fresh databases on the same server
    with (
        pgsupport.temporary_database(pg_server_url) as first,
        pgsupport.temporary_database(pg_server_url) as second,
    ):
        # WHEN a table is made in the first
        with psycopg.connect(first) as conn:
            conn.execute("CREATE TABLE only_here (x int)")

        # THEN the second has no such table
        assert first != second
        with psycopg.connect(second) as conn:
            assert conn.execute("SELECT to_regclass('only_here')").fetchone() == (None,)


def test_a_dropped_database_is_gone_even_with_a_connection_left_open(pg_server_url: str) -> None:
    # GIVEN a fresh database with a connection still open on it
    url = pgsupport.fresh_database(pg_server_url)
    left_open = psycopg.connect(url)
    try:
        # WHEN it is dropped
        pgsupport.drop_database(url)

        # THEN the server no longer lists it
        with psycopg.connect(pg_server_url) as conn:
            found = conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname = %s",
                (pgsupport.database_name(url),),
            ).fetchone()
        assert found == (0,)
    finally:
        left_open.close()


def test_the_servers_own_databases_are_never_dropped(pg_server_url: str) -> None:
    # GIVEN the server's maintenance database's URL
    # WHEN asked to drop it THEN the helper refuses
    with pytest.raises(ValueError, match="postgres"):
        pgsupport.drop_database(pgsupport.database_url(pg_server_url, "postgres"))


def test_without_a_server_url_the_postgresql_tests_fail_and_say_how_to_run_them() -> None:
    # GIVEN an environment without MESH_TEST_PG_URL
    env = {k: v for k, v in os.environ.items() if k != pgsupport.SERVER_URL_VARIABLE}

    # WHEN a test that needs the server runs
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_pg_url_is_a_real_postgresql_database_that_keeps_what_is_written",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )

    # THEN it errors (it is not skipped) and says how to get a server
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 error" in run.stdout and "skipped" not in run.stdout
    assert "scripts/dev test" in run.stdout and pgsupport.SERVER_URL_VARIABLE in run.stdout
