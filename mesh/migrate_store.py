"""Copy a SQLite store into a PostgreSQL one: ``python -m mesh migrate-store --from FILE --to URL``.

For a team moving from one host to several replicas. The source is opened read-only and is
never changed; the target is set up with its named migrations if it is empty. Everything is
copied in one transaction that holds the store's write lock, so a copy that fails leaves the
target as it was, and a replica started too early waits rather than writes in between.

Safe to rerun: every row is inserted with ``ON CONFLICT DO NOTHING``, so a row whose key is
already there is skipped, never duplicated or changed (the audit tables' triggers refuse
UPDATE and DELETE anyway). The audit log is special: its rows are the chain, so the target's
must be the start of the source's (same last row, same chain value), and only the rows after
the target's last id are appended, in id order, with their chain values unchanged. The same
MESH_AUDIT_KEY then verifies the chain on PostgreSQL.

Not copied, on purpose:
- the catalog index (``catalog_*``): derived from Glue; the next ``mesh sync`` (or the first
  ``tick``, which syncs when there has never been a sync) rebuilds it, judged by the policy
  in force. PostgreSQL's full-text index differs from SQLite's FTS5 tables anyway;
- ``leases``: a running process's claim on a job, meaningless in another database;
- the migration records of either database.
Identity columns are advanced past the copied ids (``setval``), so new rows never collide.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import sqlite_utils
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from mesh.errors import Conflict, InvalidInput, MeshError, StorageError
from mesh.store import PgStore
from mesh.store.migrations import migrations as sqlite_migrations
from mesh.store.postgres import is_url, safe_url

# Derived or per-process tables (see the module's docstring); every other table is copied.
SKIPPED_PREFIXES = ("catalog_", "_", "sqlite_")
SKIPPED = frozenset({"leases"})
SKIP_REASONS = {
    "catalog index": "derived from Glue: the next `mesh sync` (or tick) rebuilds it",
    "leases": "a running process's claims on jobs",
}
# Copied first to last; a table not named here comes after these, in name order.
ORDER = (
    "requests",
    "approvals",
    "notifications",
    "used_links",
    "reconcile_reports",
    "policy_in_force",
    "sessions",
    "sign_in_failures",
    "people",
    "audit_checkpoints",
    "audit",
)
BATCH = 5_000
"""Rows read from SQLite at a time (COPY streams them to the server)."""


@dataclass(frozen=True, kw_only=True)
class TableCount:
    table: str
    source: int
    target: int
    copied: int

    @property
    def ok(self) -> bool:
        return self.source == self.target


@dataclass(frozen=True, kw_only=True)
class Outcome:
    counts: tuple[TableCount, ...]
    migrations: tuple[str, ...]
    seconds: float

    @property
    def mismatched(self) -> tuple[TableCount, ...]:
        return tuple(c for c in self.counts if not c.ok)


def check_target_url(url: str) -> str:
    """The URL, if it can name a PostgreSQL database; else a sentence that never repeats it
    (a password in it must not reach the screen)."""
    if not is_url(url):
        raise InvalidInput(
            "--to must be a PostgreSQL URL such as postgresql://USER@HOST:5432/DATABASE "
            "(the password from PGPASSWORD or PGPASSFILE, or in the URL)."
        )
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise InvalidInput(
            "--to is not a PostgreSQL URL that can be read; write it as "
            "postgresql://USER@HOST:5432/DATABASE, with any special character in the "
            "password percent-encoded."
        ) from None
    return url


def open_source(path: Path) -> sqlite3.Connection:
    """The SQLite store at ``path``, read-only, after checking it is an up-to-date Mesh store."""
    if not path.is_file():
        raise InvalidInput(
            f"--from names {path}, which is not a file; give the SQLite store's path."
        )
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(
            f"--from names {path}, which cannot be read as a SQLite file ({exc})."
        ) from exc
    if "_sqlite_migrations" not in tables or "audit" not in tables:
        conn.close()
        raise InvalidInput(f"--from names {path}, which is not a Mesh store (no audit log).")
    pending = [m.name for m in sqlite_migrations.pending(sqlite_utils.Database(conn))]
    if pending:
        conn.close()
        raise InvalidInput(
            f"The store {path} is older than this version ({len(pending)} migrations pending: "
            f"{', '.join(pending)}); bring it up to date first with `MESH_DB={path} python -m "
            "mesh init` (after a `mesh backup`), then copy it."
        )
    return conn


def migrate_store(
    source: Path, target_url: str, *, progress: Any = None, batch: int = BATCH
) -> Outcome:
    """Copy the store at ``source`` into the PostgreSQL database ``target_url``; count rows."""
    check_target_url(target_url)
    started = time.perf_counter()
    src = open_source(source)
    target = PgStore(target_url, audit_key=None)
    try:
        try:
            applied = target.migrate(create=True)
        except StorageError as exc:
            raise InvalidInput(
                f"--to names {safe_url(target_url)}, which could not be used: {exc.message}"
            ) from exc
        tables = _tables_to_copy(src, target)
        with target._write() as db:
            conn = db.conn
            _check_audit_prefix(src, conn)
            copied = {}
            for table in tables:
                copied[table] = _copy_table(src, conn, table, batch=batch)
                if progress is not None:
                    progress(table, copied[table])
            _advance_identities(conn)
        counts = tuple(
            TableCount(
                table=t,
                source=_count_sqlite(src, t),
                target=_count_pg(target, t),
                copied=copied[t],
            )
            for t in tables
        )
    finally:
        src.close()
        target.close()
    return Outcome(counts=counts, migrations=tuple(applied), seconds=time.perf_counter() - started)


def _tables_to_copy(src: sqlite3.Connection, target: PgStore) -> list[str]:
    mine = {
        r[0]
        for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")
        if not _skipped(r[0])
    }
    with target._connect() as db:
        theirs = {
            r[0]
            for r in db.conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            )
        }
    missing = sorted(mine - theirs)
    if missing:
        raise Conflict(
            f"The target has no table {', '.join(missing)}: it was set up by an older "
            "version; run `python -m mesh init` with MESH_DB set to it, then copy again."
        )
    return sorted(mine, key=lambda t: (ORDER.index(t) if t in ORDER else len(ORDER), t))


def _skipped(table: str) -> bool:
    return table in SKIPPED or table.startswith(SKIPPED_PREFIXES)


def _check_audit_prefix(src: sqlite3.Connection, conn: psycopg.Connection[Any]) -> None:
    """Refuse a target whose audit log is not the start of the source's.

    Each chain value covers its row and the one before it, so the last row matching
    (content and chain) with as many rows as its id means the whole prefix matches.
    """
    last = conn.execute("SELECT * FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    if last is None:
        return
    names = [c.name for c in conn.execute("SELECT * FROM audit LIMIT 0").description or ()]
    theirs = dict(zip(names, last, strict=True))
    rows = conn.execute("SELECT count(*) FROM audit").fetchone()
    src.row_factory = sqlite3.Row
    try:
        found = src.execute("SELECT * FROM audit WHERE id = ?", [theirs["id"]]).fetchone()
        mine = dict(found) if found is not None else None
    finally:
        src.row_factory = None
    same = mine is not None and all(mine.get(k) == v for k, v in theirs.items())
    if not same or rows is None or rows[0] != theirs["id"]:
        raise Conflict(
            f"The target's audit log is not the start of the source's (its row {theirs['id']} "
            f"({theirs['action']}) is not the source's): it was started on its own (`mesh "
            "init` or an app on it). Copy into an empty database: migrate-store sets it up."
        )


def _columns(src: sqlite3.Connection, conn: psycopg.Connection[Any], table: str) -> list[str]:
    mine = [r[1] for r in src.execute(f'PRAGMA table_info("{table}")')]
    theirs = [
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = %s ORDER BY ordinal_position",
            [table],
        )
    ]
    lost = [c for c in mine if c not in theirs]
    if lost:
        raise Conflict(
            f"The target's table {table} has no column {', '.join(lost)}: it was set up by "
            "another version; run `python -m mesh init` with MESH_DB set to it, then copy again."
        )
    # SQLite's implicit rowid orders requests; PostgreSQL keeps it as a column of its own.
    implicit = ["rowid"] if "rowid" in theirs and "rowid" not in mine else []
    return implicit + mine


def _copy_table(
    src: sqlite3.Connection, conn: psycopg.Connection[Any], table: str, *, batch: int
) -> int:
    """COPY the source's rows into a temporary table, then insert those whose key is new."""
    columns = _columns(src, conn, table)
    if not _has_unique_key(conn, table):
        raise Conflict(
            f"The target's table {table} has no primary key, so a second copy could not "
            "tell its rows apart; this version cannot copy it safely."
        )
    staging = f"mesh_copy_{table}"
    names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            sql.Identifier(staging), names, sql.Identifier(table)
        )
    )
    after = _audit_last_id(conn) if table == "audit" else None
    select = f'SELECT {", ".join(columns)} FROM "{table}"'
    select += " WHERE id > ? ORDER BY id" if after is not None else " ORDER BY rowid"
    try:
        with conn.cursor().copy(
            sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(staging), names)
        ) as copy:
            for row in _batches(src, select, [after] if after is not None else [], batch):
                copy.write_row(row)
        order = sql.SQL(" ORDER BY id") if table == "audit" else sql.SQL("")
        inserted = conn.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}{} ON CONFLICT DO NOTHING").format(
                sql.Identifier(table), names, names, sql.Identifier(staging), order
            )
        ).rowcount
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        cause = str(exc).strip().splitlines()[0]
        raise MeshError(
            f"Copying the table {table} failed ({cause}); nothing was copied (the copy is "
            "one transaction). Fix that row in the source, or report it."
        ) from exc
    return max(inserted, 0)


def _batches(
    src: sqlite3.Connection, select: str, params: Sequence[Any], size: int
) -> Iterator[tuple[Any, ...]]:
    cursor = src.execute(select, params)
    while rows := cursor.fetchmany(size):
        yield from rows


def _has_unique_key(conn: psycopg.Connection[Any], table: str) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM pg_index WHERE indrelid = to_regclass(%s) AND indisunique",
        [table],
    ).fetchone()
    return found is not None and found[0] > 0


def _audit_last_id(conn: psycopg.Connection[Any]) -> int:
    found = conn.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()
    return int(found[0]) if found is not None else 0


def _advance_identities(conn: psycopg.Connection[Any]) -> None:
    """Move each identity past the largest id now in its table, so new rows never collide."""
    identities = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_identity = 'YES'"
    ).fetchall()
    for table, column in identities:
        conn.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence({}, {}), m) "
                "FROM (SELECT max({}) AS m FROM {}) AS t WHERE m IS NOT NULL"
            ).format(
                sql.Literal(table),
                sql.Literal(column),
                sql.Identifier(column),
                sql.Identifier(table),
            )
        )


def _count_sqlite(src: sqlite3.Connection, table: str) -> int:
    return int(src.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def _count_pg(target: PgStore, table: str) -> int:
    with target._connect() as db:
        found = db.conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        ).fetchone()
    return int(found[0]) if found is not None else 0


def report_lines(outcome: Outcome, *, source: Path, target_url: str) -> list[str]:
    """What the command prints: one line per table, then the sum-up."""
    width = max(len(c.table) for c in outcome.counts) if outcome.counts else 5
    lines = [f"{'table':<{width}}  {'source':>9}  {'target':>9}  {'copied now':>10}"]
    lines += [
        f"{c.table:<{width}}  {c.source:>9}  {c.target:>9}  {c.copied:>10}"
        + ("" if c.ok else "  MISMATCH")
        for c in outcome.counts
    ]
    lines.append(
        "not copied: the catalog index (derived from Glue: the next `mesh sync` or tick "
        "rebuilds it) and leases (a running process's claims)."
    )
    if outcome.migrations:
        lines.append(f"set up the target with {len(outcome.migrations)} migrations.")
    lines.append(
        f"Copied {source} to {safe_url(target_url)} in {outcome.seconds:.1f} s"
        + (
            "; every table's count matches."
            if not outcome.mismatched
            else f"; the counts of {', '.join(c.table for c in outcome.mismatched)} do NOT match."
        )
    )
    return lines


def verify_chain(target_url: str, key: str) -> list[str]:
    """The audit chain's problems on the target, checked with MESH_AUDIT_KEY (none: it verifies)."""
    from mesh import auditlog

    store = PgStore(target_url, audit_key=key)
    try:
        return list(auditlog.verify(store).problems)
    finally:
        store.close()
