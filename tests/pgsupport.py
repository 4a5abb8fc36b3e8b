"""Throwaway PostgreSQL databases for the tests, on the server that `scripts/dev test` starts.

`scripts/dev test` starts a cluster with `scripts/pg start` and hands its superuser URL to the
tests as MESH_TEST_PG_URL. Each test (or module) gets a database of its own, made empty from
template0 and dropped afterwards, so tests never see each other's tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

SERVER_URL_VARIABLE = "MESH_TEST_PG_URL"
NO_SERVER = (
    f"no PostgreSQL server for the tests: run them with `scripts/dev test` (it starts one), "
    f"or set {SERVER_URL_VARIABLE} to a superuser URL such as the one `scripts/pg start DIR` prints"
)

# One autocommit connection per server for CREATE/DROP DATABASE, kept for the session: a
# connection (scram password check) costs about as much as the CREATE DATABASE itself.
_admins: dict[str, psycopg.Connection[tuple[object, ...]]] = {}


def server_url_from_environment() -> str | None:
    """The test server's URL from MESH_TEST_PG_URL, or None when it is not set."""
    return os.environ.get(SERVER_URL_VARIABLE) or None


def database_url(url: str, name: str) -> str:
    """URL with its database (the path) replaced by name; credentials and options kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_name(url: str) -> str:
    """The database a URL names (its path)."""
    name = unquote(urlsplit(url).path.lstrip("/"))
    if not name:
        raise ValueError("the URL names no database")
    return name


def _admin(server_url: str) -> psycopg.Connection[tuple[object, ...]]:
    """The session's maintenance connection to the server's postgres database."""
    key = database_url(server_url, "postgres")
    conn = _admins.get(key)
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(key, autocommit=True)
        _admins[key] = conn
    return conn


def fresh_database(server_url: str, *, prefix: str = "t", template: str = "template0") -> str:
    """Create a database with a unique name on the server and return its URL: empty, or a
    copy of the database ``template`` (which nothing may be connected to)."""
    name = f"{prefix}_{uuid.uuid4().hex}"
    _admin(server_url).execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    )
    return database_url(server_url, name)


def drop_database(url: str) -> None:
    """Drop the database url names, closing whatever connections still use it."""
    name = database_name(url)
    if name in ("postgres", "template0", "template1"):
        raise ValueError(f"refusing to drop the server's own database {name!r}")
    _admin(url).execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


@contextmanager
def temporary_database(server_url: str, *, prefix: str = "t") -> Iterator[str]:
    """A fresh database's URL for the block, dropped afterwards (for fixtures of any scope)."""
    url = fresh_database(server_url, prefix=prefix)
    try:
        yield url
    finally:
        drop_database(url)


def close_admin_connections() -> None:
    """Close the maintenance connections (at the end of the session)."""
    while _admins:
        _, conn = _admins.popitem()
        conn.close()
