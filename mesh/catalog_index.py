"""The catalog index: Glue's databases, tables and columns in the store, judged and searchable.

Pages and the CLI read the catalog from here, one page of it at a time; only a sync (and
submit, decisions and retry, for their one scope) read Glue. Each database and table keeps
its level and needs-approval under the policy recorded with the index (``catalog_meta``),
and the whole index is judged again, without Glue, when that policy changes.

This module holds the schema and the writing side (sync's writes, refreshes of one scope,
re-judging, the record of syncs). The reading side is in ``catalog_query``, search in
``catalog_search``, the verdicts and change hashes in ``catalog_judge``, the value objects in
``catalog_rows``; the names pages and the CLI use are importable from here too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from mesh import policy
from mesh.browse import badge
from mesh.catalog_judge import Judged, database_hash, domain_of, judge, table_hash
from mesh.catalog_judge import digest as _digest
from mesh.catalog_query import CatalogReads, IndexedCatalog
from mesh.catalog_rows import PAGE, ColumnEntry, Counts, Entry, Query, ResultPage, SyncRecord
from mesh.models import Database, Table
from mesh.store.db import Db, PgDb, executemany

# Frozen with migration 0011_catalog_index: a change here needs a migration of its own.
SCHEMA = (
    """CREATE TABLE catalog_databases (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        owner_account TEXT,
        owner_name TEXT NOT NULL DEFAULT '',
        domain TEXT NOT NULL DEFAULT '',
        parameters TEXT NOT NULL DEFAULT '{}',
        pii TEXT NOT NULL DEFAULT '',
        level TEXT NOT NULL DEFAULT '',
        needs_approval INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        contains_pii INTEGER NOT NULL DEFAULT 0,
        pii_summary TEXT NOT NULL DEFAULT '',
        tables INTEGER NOT NULL DEFAULT 0,
        hash TEXT NOT NULL DEFAULT '',
        synced_at TEXT NOT NULL
    )""",
    """CREATE TABLE catalog_tables (
        id INTEGER PRIMARY KEY,
        database TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        owner_account TEXT,
        owner_name TEXT NOT NULL DEFAULT '',
        domain TEXT NOT NULL DEFAULT '',
        parameters TEXT NOT NULL DEFAULT '{}',
        update_time TEXT,
        pii TEXT NOT NULL DEFAULT '',
        pii_columns TEXT NOT NULL DEFAULT '[]',
        level TEXT NOT NULL DEFAULT '',
        needs_approval INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        contains_pii INTEGER NOT NULL DEFAULT 0,
        pii_summary TEXT NOT NULL DEFAULT '',
        hash TEXT NOT NULL DEFAULT '',
        synced_at TEXT NOT NULL,
        UNIQUE (database, name)
    )""",
    """CREATE TABLE catalog_columns (
        database TEXT NOT NULL,
        table_name TEXT NOT NULL,
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL DEFAULT '',
        comment TEXT NOT NULL DEFAULT '',
        parameters TEXT NOT NULL DEFAULT '{}',
        pii TEXT NOT NULL DEFAULT '',
        partition_key INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (database, table_name, position)
    ) WITHOUT ROWID""",
    "CREATE INDEX catalog_databases_owner ON catalog_databases (owner_account)",
    "CREATE INDEX catalog_tables_owner ON catalog_tables (owner_account)",
    """CREATE VIRTUAL TABLE catalog_fts USING fts5(
        name, description, columns, owner, domain, tokenize = 'unicode61 remove_diacritics 2'
    )""",
    """CREATE TABLE catalog_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE catalog_syncs (
        id INTEGER PRIMARY KEY,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        actor TEXT NOT NULL,
        duration_ms INTEGER,
        databases INTEGER NOT NULL DEFAULT 0,
        tables INTEGER NOT NULL DEFAULT 0,
        added INTEGER NOT NULL DEFAULT 0,
        changed INTEGER NOT NULL DEFAULT 0,
        removed INTEGER NOT NULL DEFAULT 0,
        glue_calls INTEGER NOT NULL DEFAULT 0,
        fingerprint TEXT NOT NULL DEFAULT '',
        error TEXT
    )""",
)


class CatalogIndex(CatalogReads):
    """The catalog index over a store, judged by ``rules`` (whose fingerprint it records)."""

    # Writes ------------------------------------------------------------------------------

    def known_hashes(self, names: Sequence[str]) -> dict[str, str]:
        """The stored hash of each named database that is in the index."""
        if not names:
            return {}
        marks = ", ".join("?" for _ in names)
        with self.store._connect() as db:
            rows = db.execute(
                f"SELECT name, hash FROM catalog_databases WHERE name IN ({marks})", list(names)
            ).fetchall()
        return {name: digest for name, digest in rows}

    def put(
        self,
        batch: Sequence[tuple[Database, Sequence[tuple[Table, str | None]]]],
        *,
        at: str,
    ) -> Counts:
        """Replace these databases (each with all its tables) in one transaction."""
        counts = Counts()
        with self.store._write() as db, _pipelined(db):
            for database, tables in batch:
                counts.add(self._put_database(db, database, tables, at=at))
        return counts

    def _put_database(
        self,
        db: Db,
        database: Database,
        tables: Sequence[tuple[Table, str | None]],
        *,
        at: str,
    ) -> Counts:
        counts = Counts(databases=1, tables=len(tables))
        own = _digest([database.name, database.description, database.parameters])
        # A table's verdict depends on its database's parameters too.
        hashes = [_digest([table_hash(t, u), own]) for t, u in tables]
        digest = database_hash(database, hashes)
        old = db.execute(
            "SELECT id, hash, domain FROM catalog_databases WHERE name = ?", [database.name]
        ).fetchone()
        if old is not None and old[1] == digest + self.fingerprint:
            counts.unchanged += 1 + len(tables)
            return counts
        known = dict(
            db.execute(
                "SELECT name, hash FROM catalog_tables WHERE database = ?", [database.name]
            ).fetchall()
        )
        counts.added += 0 if old else 1
        counts.changed += 1 if old else 0
        whole, judged = judge(self.rules, database, [t for t, _ in tables])
        self._upsert_database(db, database, whole, len(tables), digest, at=at, old=old)
        # Under another policy only the verdicts differ: its text, columns and FTS row stay,
        # unless the owner's domain changed with the policy (a third of a re-judge's time).
        same_domain = old is not None and old[2] == domain_of(self.rules, database.owner_account)
        seen = set()
        for (table, update_time), one, table_digest in zip(tables, judged, hashes, strict=True):
            seen.add(table.name)
            before = known.get(table.name)
            if before == table_digest + self.fingerprint:
                counts.unchanged += 1
                continue
            counts.added += before is None
            counts.changed += before is not None
            if same_domain and before is not None and before.startswith(table_digest):
                self._rejudge_table(db, database.name, table.name, one, table_digest, at=at)
            else:
                self._upsert_table(db, database, table, update_time, one, table_digest, at=at)
        gone = [name for name in known if name not in seen]
        for name in gone:
            self._delete_table(db, database.name, name)
        counts.removed += len(gone)
        counts.touched.add(database.name)
        return counts

    def _upsert_database(
        self,
        db: Db,
        database: Database,
        whole: Judged,
        tables: int,
        digest: str,
        *,
        at: str,
        old: Any,
    ) -> int:
        owner = database.owner_account
        domain = domain_of(self.rules, owner)
        values = {
            "name": database.name,
            "description": database.description,
            "owner_account": owner,
            "owner_name": database.owner_name,
            "domain": domain,
            "parameters": json.dumps(database.parameters, sort_keys=True),
            "pii": badge(database.parameters),
            "level": whole.level,
            "needs_approval": int(whole.needs_approval),
            "reason": whole.reason,
            "contains_pii": int(whole.contains_pii),
            "pii_summary": whole.pii_summary,
            "tables": tables,
            "hash": digest + self.fingerprint,
            "synced_at": at,
        }
        db_id = _put(db, "catalog_databases", values, None if old is None else int(old[0]))
        db.execute("DELETE FROM catalog_fts WHERE rowid = ?", [-db_id])
        db.execute(
            "INSERT INTO catalog_fts (rowid, name, description, columns, owner, domain) "
            "VALUES (?, ?, ?, '', ?, ?)",
            [
                -db_id,
                _words(database.name),
                database.description,
                f"{database.owner_name} {owner or 'no owner'}",
                domain,
            ],
        )
        # The owner and domain of every table follow the database's.
        db.execute(
            "UPDATE catalog_tables SET owner_account = ?, owner_name = ?, domain = ? "
            "WHERE database = ? AND (owner_account IS NOT ? OR owner_name != ? OR domain != ?)",
            [owner, database.owner_name, domain, database.name, owner, database.owner_name, domain],
        )
        return db_id

    def _upsert_table(
        self,
        db: Db,
        database: Database,
        table: Table,
        update_time: str | None,
        one: Judged,
        digest: str,
        *,
        at: str,
    ) -> None:
        owner = database.owner_account
        domain = domain_of(self.rules, owner)
        values = {
            "database": database.name,
            "name": table.name,
            "description": table.description,
            "owner_account": owner,
            "owner_name": database.owner_name,
            "domain": domain,
            "parameters": json.dumps(table.parameters, sort_keys=True),
            "update_time": update_time,
            "pii": badge(table.parameters),
            "pii_columns": json.dumps([c.name for c in policy.pii_columns(table)]),
            "level": one.level,
            "needs_approval": int(one.needs_approval),
            "reason": one.reason,
            "contains_pii": int(one.contains_pii),
            "pii_summary": one.pii_summary,
            "hash": digest + self.fingerprint,
            "synced_at": at,
        }
        row = db.execute(
            "SELECT id FROM catalog_tables WHERE database = ? AND name = ?",
            [database.name, table.name],
        ).fetchone()
        table_id = _put(db, "catalog_tables", values, None if row is None else int(row[0]))
        db.execute("DELETE FROM catalog_fts WHERE rowid = ?", [table_id])
        db.execute(
            "DELETE FROM catalog_columns WHERE database = ? AND table_name = ?",
            [database.name, table.name],
        )
        executemany(
            db,
            "INSERT INTO catalog_columns (database, table_name, position, name, type, comment, "
            "parameters, pii, partition_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    database.name,
                    table.name,
                    position,
                    c.name,
                    c.type,
                    c.comment,
                    json.dumps(c.parameters, sort_keys=True),
                    badge(c.parameters),
                    int(c.is_partition_key),
                )
                for position, c in enumerate(table.all_columns)
            ],
        )
        columns = " ".join(f"{_words(c.name)} {c.comment}" for c in table.all_columns)
        db.execute(
            "INSERT INTO catalog_fts (rowid, name, description, columns, owner, domain) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                table_id,
                f"{_words(table.name)} {_words(database.name)}",
                table.description,
                columns,
                f"{database.owner_name} {owner or 'no owner'}",
                domain,
            ],
        )

    def _rejudge_table(
        self,
        db: Db,
        database: str,
        name: str,
        one: Judged,
        digest: str,
        *,
        at: str,
    ) -> None:
        db.execute(
            "UPDATE catalog_tables SET level = ?, needs_approval = ?, reason = ?, "
            "contains_pii = ?, pii_summary = ?, hash = ?, synced_at = ? "
            "WHERE database = ? AND name = ?",
            [
                one.level,
                int(one.needs_approval),
                one.reason,
                int(one.contains_pii),
                one.pii_summary,
                digest + self.fingerprint,
                at,
                database,
                name,
            ],
        )

    @staticmethod
    def _delete_table(db: Db, database: str, name: str) -> None:
        row = db.execute(
            "SELECT id FROM catalog_tables WHERE database = ? AND name = ?", [database, name]
        ).fetchone()
        if row is None:
            return
        db.execute("DELETE FROM catalog_fts WHERE rowid = ?", [row[0]])
        db.execute("DELETE FROM catalog_tables WHERE id = ?", [row[0]])
        db.execute(
            "DELETE FROM catalog_columns WHERE database = ? AND table_name = ?", [database, name]
        )

    def remove_except(self, names: set[str]) -> int:
        """Remove the databases (and their tables) that are not in ``names``; how many went."""
        with self.store._write() as db:
            stored = [r[0] for r in db.execute("SELECT name FROM catalog_databases").fetchall()]
            gone = [n for n in stored if n not in names]
            removed = 0
            for name in gone:
                removed += 1 + self._delete_database(db, name)
        return removed

    def remove_database(self, name: str) -> int:
        with self.store._write() as db:
            return self._delete_database(db, name)

    def _delete_database(self, db: Db, name: str) -> int:
        tables = [
            r[0]
            for r in db.execute(
                "SELECT name FROM catalog_tables WHERE database = ?", [name]
            ).fetchall()
        ]
        for table in tables:
            self._delete_table(db, name, table)
        row = db.execute("SELECT id FROM catalog_databases WHERE name = ?", [name]).fetchone()
        if row is not None:
            db.execute("DELETE FROM catalog_fts WHERE rowid = ?", [-row[0]])
            db.execute("DELETE FROM catalog_databases WHERE id = ?", [row[0]])
        return len(tables)

    def refresh_scope(
        self, database: Database, tables: Sequence[Table], *, whole: bool, at: str
    ) -> list[str]:
        """Put what a live read saw of one scope; say what differs from the index before.

        ``whole``: ``tables`` is every table of the database (a database request); else it
        is the one requested table, and the database's other tables come from the index.
        """
        before = self._verdicts(database.name, [t.name for t in tables], whole=whole)
        if whole:
            full = list(tables)
        else:
            others = [t for t in self.tables(database.name) if t.name != tables[0].name]
            full = [*others, *tables]
        times = self._update_times(database.name)
        self.put([(database, [(t, times.get(t.name)) for t in full])], at=at)
        after = self._verdicts(database.name, [t.name for t in tables], whole=whole)
        return _differences(before, after)

    def _verdicts(
        self, database: str, tables: Sequence[str], *, whole: bool
    ) -> dict[str, tuple[Any, ...]]:
        found: dict[str, tuple[Any, ...]] = {}
        with self.store._connect() as db:
            if whole:
                row = db.execute(
                    "SELECT level, needs_approval, pii_summary, owner_account FROM "
                    "catalog_databases WHERE name = ?",
                    [database],
                ).fetchone()
                found[database] = tuple(row) if row else ()
            for name in tables:
                row = db.execute(
                    "SELECT level, needs_approval, pii_columns, owner_account FROM catalog_tables "
                    "WHERE database = ? AND name = ?",
                    [database, name],
                ).fetchone()
                found[f"{database}.{name}"] = tuple(row) if row else ()
        return found

    def _update_times(self, database: str) -> dict[str, str | None]:
        with self.store._connect() as db:
            return dict(
                db.execute(
                    "SELECT name, update_time FROM catalog_tables WHERE database = ?", [database]
                ).fetchall()
            )

    def rejudge(self, *, at: str) -> int:
        """Judge every entry again under this index's rules, without reading Glue."""
        names = self.database_names()
        done = 0
        for start in range(0, len(names), 50):
            batch = []
            for name in names[start : start + 50]:
                database = self.database(name)
                if database is None:
                    continue
                times = self._update_times(name)
                batch.append((database, [(t, times.get(t.name)) for t in self.tables(name)]))
            done += self.put(batch, at=at).databases
        self.set_fingerprint()
        return done

    def set_fingerprint(self) -> None:
        with self.store._write() as db:
            db.execute(
                "INSERT INTO catalog_meta (key, value) VALUES ('fingerprint', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [self.fingerprint],
            )

    def judged_with(self) -> str | None:
        """The fingerprint of the policy the index was last judged with, if any."""
        with self.store._connect() as db:
            row = db.execute("SELECT value FROM catalog_meta WHERE key = 'fingerprint'").fetchone()
        return row[0] if row else None

    # Syncs -------------------------------------------------------------------------------

    def start_sync(self, *, actor: str, at: str) -> int:
        with self.store._write() as db:
            (sync_id,) = db.execute(
                "INSERT INTO catalog_syncs (started_at, actor, fingerprint) VALUES (?, ?, ?) "
                "RETURNING id",
                [at, actor, self.fingerprint],
            ).fetchall()[0]  # all: SQLite finishes a RETURNING statement on its last row
            return int(sync_id)

    def finish_sync(
        self,
        sync_id: int,
        *,
        at: str,
        duration_ms: int,
        counts: Counts,
        glue_calls: int,
        error: str | None,
    ) -> SyncRecord:
        with self.store._write() as db:
            db.execute(
                "UPDATE catalog_syncs SET finished_at = ?, duration_ms = ?, databases = ?, "
                "tables = ?, added = ?, changed = ?, removed = ?, glue_calls = ?, error = ? "
                "WHERE id = ?",
                [
                    at,
                    duration_ms,
                    counts.databases,
                    counts.tables,
                    counts.added,
                    counts.changed,
                    counts.removed,
                    glue_calls,
                    error,
                    sync_id,
                ],
            )
        if self.store.dialect == "postgresql" and counts.added + counts.changed + counts.removed:
            # Fresh statistics before the next search: planned on a nearly empty index, a
            # search of a word most entries hold joins every match before its limit.
            with self.store._connect() as db:
                db.execute("ANALYZE catalog_fts, catalog_tables, catalog_databases")
        found = self.syncs(limit=1, sync_id=sync_id)
        return found[0]

    def syncs(self, *, limit: int = 20, sync_id: int | None = None) -> list[SyncRecord]:
        where, params = ("WHERE id = ?", [sync_id]) if sync_id is not None else ("", [])
        with self.store._connect() as db:
            rows = list(
                db.query(
                    f"SELECT * FROM catalog_syncs {where} ORDER BY id DESC LIMIT ?",
                    [*params, limit],
                )
            )
        return [SyncRecord(**row) for row in rows]

    def last_sync(self, *, ok: bool = True) -> SyncRecord | None:
        """The newest finished sync (without an error, when ``ok``)."""
        condition = "finished_at IS NOT NULL" + (" AND error IS NULL" if ok else "")
        with self.store._connect() as db:
            rows = list(
                db.query(f"SELECT * FROM catalog_syncs WHERE {condition} ORDER BY id DESC LIMIT 1")
            )
        return SyncRecord(**rows[0]) if rows else None


def _pipelined(db: Db) -> AbstractContextManager[Any]:
    """On PostgreSQL, statements whose results are not read go without waiting for their
    answers (psycopg's pipeline mode): a table's writes take 3 round trips, not 6."""
    return db.conn.pipeline() if isinstance(db, PgDb) else nullcontext()


def _put(db: Db, table: str, values: dict[str, Any], row_id: int | None) -> int:
    """Insert ``values`` as a new row of ``table``, or update row ``row_id``; its id."""
    if row_id is None:
        marks = ", ".join("?" for _ in values)
        (new_id,) = db.execute(
            f"INSERT INTO {table} ({', '.join(values)}) VALUES ({marks}) RETURNING id",
            list(values.values()),
        ).fetchall()[0]  # all: SQLite finishes a RETURNING statement on its last row
        return int(new_id)
    db.execute(
        f"UPDATE {table} SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
        [*values.values(), row_id],
    )
    return row_id


def _words(name: str) -> str:
    """A name as it is written, plus its parts: ``sales_orders`` also matches ``orders``."""
    parts = re.split(r"[_\-.]+", name)
    return name if len(parts) < 2 else f"{name} {' '.join(p for p in parts if p)}"


def _differences(
    before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]
) -> list[str]:
    """Say per scope what the live read changed: its level, approval, PII or owner."""
    changed = []
    for name, old in before.items():
        new = after.get(name, ())
        if not old:
            changed.append(f"{name} was not in the catalog index")
        elif old != new:
            changed.append(f"{name}: " + ", ".join(_what_changed(old, new)))
    return changed


def _what_changed(old: tuple[Any, ...], new: tuple[Any, ...]) -> list[str]:
    level, approval, pii, owner = old
    new_level, new_approval, new_pii, new_owner = new
    said = []
    if owner != new_owner:
        said.append(f"its owner is now account {new_owner}")
    if level != new_level:
        said.append(f"its level is now {new_level} (was {level})")
    if approval != new_approval:
        said.append("it now needs approval" if new_approval else "it no longer needs approval")
    if pii != new_pii:
        said.append(f"its PII is now {_pii_text(new_pii)} (was {_pii_text(pii)})")
    return said or ["its catalog entry changed"]


def _pii_text(value: Any) -> str:
    """Render a PII summary or a JSON list of PII columns for a sentence."""
    try:
        names = json.loads(value) if isinstance(value, str) and value.startswith("[") else None
    except ValueError:
        names = None
    if isinstance(names, list):
        return ", ".join(str(n) for n in names) if names else "none"
    return str(value) if value else "none"


__all__ = [
    "PAGE",
    "SCHEMA",
    "CatalogIndex",
    "ColumnEntry",
    "Counts",
    "Entry",
    "IndexedCatalog",
    "Query",
    "ResultPage",
    "SyncRecord",
    "judge",
]
