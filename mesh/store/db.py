"""The connection the store's parts use, and PostgreSQL's reading of SQLite's spelling.

Every part of the store and the catalog index writes its SQL once, as SQLite spells it,
against ``Db``: the few calls of sqlite-utils' ``Database`` they use. On PostgreSQL,
``PgDb`` offers the same calls over a psycopg connection and rewrites each statement once
(cached): ``?`` and ``:name`` become psycopg's placeholders, ``[column]`` a quoted name,
``IS ?`` / ``IS NOT ?`` the null-safe comparisons, and ``INSERT OR IGNORE`` an
``ON CONFLICT DO NOTHING``. What has no such one-to-one spelling (JSON functions, full-text
search, the catalog's rowid) is written for each database where it is used.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int = ...) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """What the store's parts call on a connection (sqlite-utils' Database has them all)."""

    def execute(self, sql: str, parameters: Any = None) -> Cursor: ...

    def query(self, sql: str, params: Any = None) -> Iterator[dict[str, Any]]: ...

    def __getitem__(self, table_name: str) -> Any: ...


INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)
"""What either database raises when a statement breaks a constraint (a unique index)."""


def executemany(db: Db, sql: str, rows: Iterable[Any]) -> None:
    """Run ``sql`` once per row of parameters, in one round trip where the driver can."""
    if isinstance(db, PgDb):
        with db.conn.cursor() as cursor:
            cursor.executemany(to_postgres(sql), [_adapt(row) for row in rows])
    else:
        db.conn.executemany(sql, rows)  # type: ignore[attr-defined]


# Spellings that differ by more than a token: (SQLite, PostgreSQL) -----------------------


def in_json_list(dialect: str, param: str) -> str:
    """A subquery of the values of the JSON list of strings in ``param`` (a placeholder):
    a list of any length is one parameter, so its statement is prepared once."""
    if dialect == "postgresql":
        return f"(SELECT jsonb_array_elements_text(CAST({param} AS jsonb)))"
    return f"(SELECT value FROM json_each({param}))"


def json_field(dialect: str, json_text: str, key: str) -> str:
    """The text of ``key`` in the JSON object in the column or expression ``json_text``."""
    if dialect == "postgresql":
        return f"(CAST({json_text} AS jsonb) ->> '{key}')"
    return f"json_extract({json_text}, '$.{key}')"


def json_item(dialect: str, json_text: str, index: str) -> str:
    """Item ``index`` (an integer expression, held within the list) of the JSON list in
    ``json_text``, as JSON text."""
    if dialect == "postgresql":
        return (
            f"CAST(CAST({json_text} AS jsonb) -> CAST(GREATEST(0, LEAST({index}, "
            f"jsonb_array_length(CAST({json_text} AS jsonb)) - 1)) AS integer) AS text)"
        )
    return (
        f"json_extract({json_text}, '$[' || "
        f"max(0, min({index}, json_array_length({json_text}) - 1)) || ']')"
    )


def json_rows(dialect: str, columns: str, from_: str) -> str:
    """A JSON list (text) with one list of ``columns`` per row of ``from_`` ("[]" for none)."""
    if dialect == "postgresql":
        listed = f"CAST(json_agg(json_build_array({columns})) AS text)"
        return f"(SELECT coalesce({listed}, '[]') FROM {from_})"
    return f"(SELECT json_group_array(json_array({columns})) FROM {from_})"


def contains(dialect: str, text: str, part: str) -> str:
    """Whether ``text`` holds ``part`` (both expressions), as a condition."""
    return f"{'strpos' if dialect == 'postgresql' else 'instr'}({text}, {part}) > 0"


# PostgreSQL -------------------------------------------------------------------------------

_TOKENS = re.compile(
    r"""(?P<literal>'(?:[^']|'')*')
    | (?P<quoted>"[^"]*")
    | (?P<bracket>\[[A-Za-z_][A-Za-z0-9_]*\])
    | (?P<cast>::)
    | (?P<named>:[A-Za-z_][A-Za-z0-9_]*)
    | (?P<is_not>\bIS\s+NOT\s+\?)
    | (?P<is>\bIS\s+\?)
    | (?P<ignore>\bINSERT\s+OR\s+IGNORE\s+INTO\b)
    | (?P<mark>\?)
    | (?P<percent>%)""",
    re.VERBOSE | re.IGNORECASE,
)


@lru_cache(maxsize=2048)
def to_postgres(sql: str, *, bound: bool = True) -> str:
    """``sql`` as SQLite spells it, rewritten for psycopg and PostgreSQL (see the module).

    ``bound`` False: the statement runs without parameters, so psycopg reads no
    placeholders and a ``%`` stays as it is.
    """
    ignore = False

    def rewrite(match: re.Match[str]) -> str:
        nonlocal ignore
        kind, text = match.lastgroup, match.group()
        if kind == "literal":
            return text.replace("%", "%%") if bound else text
        if kind == "bracket":
            return f'"{text[1:-1]}"'
        if kind == "named":
            return f"%({text[1:]})s"
        if kind == "is_not":
            return "IS DISTINCT FROM %s"
        if kind == "is":
            return "IS NOT DISTINCT FROM %s"
        if kind == "ignore":
            ignore = True
            return "INSERT INTO"
        if kind == "mark":
            return "%s"
        if kind == "percent":
            return "%%" if bound else "%"
        return text  # a quoted name or a :: cast

    rewritten = _TOKENS.sub(rewrite, sql)
    return f"{rewritten} ON CONFLICT DO NOTHING" if ignore else rewritten


def _adapt(params: Any) -> Any:
    """Values as SQLite would take them: True as 1 (the same columns are integers on
    PostgreSQL), and a NUL character, which PostgreSQL's text refuses outright, as U+FFFD:
    nothing stored holds either, so a search or lookup with one finds nothing, as on SQLite.
    """
    if params is None:
        return None
    if isinstance(params, Mapping):
        return {k: _value(v) for k, v in params.items()}
    return [_value(v) for v in params]


def _value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


# The key of each table that is not ``id``: what ``insert`` returns as ``last_pk``.
_KEYS = {
    "leases": "name",
    "people": "username",
    "sessions": "token_id",
    "sign_in_failures": "subject",
    "used_links": "nonce",
}


class PgDb:
    """A psycopg connection that takes the store's SQLite-spelled statements."""

    dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection[Any], *, stream: bool = False) -> None:
        self.conn = conn
        self._stream = stream  # a connection of its own, in a read transaction

    def execute(self, sql: str, parameters: Any = None) -> Any:
        if self._stream:  # a server-side cursor: rows arrive a chunk at a time
            cursor: Any = self.conn.cursor(name="mesh_stream")
        else:
            cursor = self.conn.cursor()
        return cursor.execute(to_postgres(sql, bound=parameters is not None), _adapt(parameters))

    def query(self, sql: str, params: Any = None) -> Iterator[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cursor:
            cursor.execute(to_postgres(sql, bound=params is not None), _adapt(params))
            yield from cursor.fetchall()

    def __getitem__(self, table_name: str) -> PgTable:
        return PgTable(self, table_name)


class PgTable:
    """sqlite-utils' ``db[table].insert`` and ``.get``, as the store uses them."""

    def __init__(self, db: PgDb, name: str) -> None:
        self.db, self.name = db, name
        self.last_pk: Any = None

    def insert(self, row: Mapping[str, Any], *, replace: bool = False) -> PgTable:
        """Insert ``row``; ``replace`` overwrites a row with the same key, as SQLite's
        INSERT OR REPLACE does."""
        key = _KEYS.get(self.name, "id")
        columns = ", ".join(f'"{column}"' for column in row)
        marks = ", ".join("%s" for _ in row)
        upsert = ""
        if replace:
            changes = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in row if c != key)
            upsert = f' ON CONFLICT ("{key}") DO UPDATE SET {changes}'
        sql = f'INSERT INTO "{self.name}" ({columns}) VALUES ({marks}){upsert} RETURNING "{key}"'
        with self.db.conn.cursor() as cursor:
            cursor.execute(sql, _adapt(list(row.values())))
            found = cursor.fetchone()
        self.last_pk = found[0] if found else None
        return self

    def get(self, key: Any) -> dict[str, Any]:
        key_column = _KEYS.get(self.name, "id")
        rows = list(self.db.query(f'SELECT * FROM "{self.name}" WHERE "{key_column}" = ?', [key]))
        if not rows:
            from sqlite_utils.db import NotFoundError

            raise NotFoundError
        return rows[0]
