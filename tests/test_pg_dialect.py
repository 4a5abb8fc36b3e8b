"""PgDb's reading of the store's SQLite-spelled SQL (mesh/store/db.py), statement by statement,
then run on the real server: what the rewrite must keep, and what it must change."""

from __future__ import annotations

import psycopg
import pytest

from mesh.store.db import PgDb, to_postgres


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        (
            "SELECT * FROM t WHERE a = ? AND b IN (?, ?)",
            "SELECT * FROM t WHERE a = %s AND b IN (%s, %s)",
        ),
        ("SELECT :limit, x::text FROM t", "SELECT %(limit)s, x::text FROM t"),
        ("UPDATE requests SET [table_name] = ?", 'UPDATE requests SET "table_name" = %s'),
        (
            "WHERE table_name IS ? AND columns IS NOT ?",
            "WHERE table_name IS NOT DISTINCT FROM %s AND columns IS DISTINCT FROM %s",
        ),
        (
            "SELECT 'a ? :b [c] 50%' FROM t WHERE x LIKE ?",
            "SELECT 'a ? :b [c] 50%%' FROM t WHERE x LIKE %s",
        ),
        ("SELECT 'it''s ?', \"odd?name\" FROM t", "SELECT 'it''s ?', \"odd?name\" FROM t"),
        (
            "INSERT OR IGNORE INTO used_links (nonce) VALUES (?)",
            "INSERT INTO used_links (nonce) VALUES (%s) ON CONFLICT DO NOTHING",
        ),
        (
            "SELECT json_extract(plan, '$[' || 1 || ']')",
            "SELECT json_extract(plan, '$[' || 1 || ']')",
        ),
    ],
)
def test_a_statement_is_rewritten_token_by_token(sqlite: str, postgres: str) -> None:
    assert to_postgres(sqlite) == postgres


def test_rewritten_statements_run_with_the_values_sqlite_would_bind(pg_url: str) -> None:
    # GIVEN a table with text, integer and nullable columns
    with psycopg.connect(pg_url, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        db = PgDb(conn)
        db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT, note TEXT)")
        # WHEN rows go in with a boolean (SQLite stores 1), a NULL, and a repeated key ignored
        db.execute("INSERT INTO t (id, n, note) VALUES (?, ?, ?)", ["a", True, None])
        db.execute("INSERT OR IGNORE INTO t (id, n, note) VALUES (?, ?, ?)", ["a", 5, "x"])
        db["t"].insert({"id": "b", "n": 2, "note": "50% off"})
        # THEN the null-safe comparisons, named values and % in data all hold
        assert db.execute("SELECT id FROM t WHERE note IS ?", [None]).fetchall() == [("a",)]
        assert db.execute("SELECT id FROM t WHERE note IS NOT ?", [None]).fetchall() == [("b",)]
        rows = list(db.query("SELECT id, n FROM t WHERE n >= :least ORDER BY id", {"least": 1}))
        assert rows == [{"id": "a", "n": 1}, {"id": "b", "n": 2}]
        # a % in a literal means itself, with parameters or without
        with_value = "SELECT note || '%' FROM t WHERE id = ?"
        assert db.execute(with_value, ["b"]).fetchone() == ("50% off%",)
        assert db.execute("SELECT note || '%' FROM t WHERE id = 'b'").fetchone() == ("50% off%",)
        assert db["t"].get("b")["note"] == "50% off"
