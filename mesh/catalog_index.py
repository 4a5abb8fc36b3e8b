"""The catalog index: Glue's databases, tables and columns in the store, judged and searchable.

Pages and the CLI read the catalog from here, one page of it at a time; only a sync (and
submit, decisions and retry, for their one scope) read Glue. Each database and table keeps
its level and needs-approval under the policy recorded with the index (``catalog_meta``),
and the whole index is judged again, without Glue, when that policy changes.

Search is SQLite FTS5 over names, descriptions, column names and comments, owners and
domains, ranked with bm25. A table's FTS rowid is its id; a database's is minus its id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from mesh import approval, policy
from mesh.approval import ApprovalPolicy
from mesh.browse import badge, pii_summary, table_pii_summary, verdict
from mesh.errors import NotFound
from mesh.models import Column, Database, Scope, Table
from mesh.store import Store

PAGE = 50

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

# bm25 weights of catalog_fts's columns: a name match counts most, then owner and domain.
_WEIGHTS = "10.0, 3.0, 2.0, 4.0, 4.0"


# Judging ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Judged:
    level: str
    needs_approval: bool
    reason: str
    contains_pii: bool
    pii_summary: str


def judge(
    rules: ApprovalPolicy, database: Database, tables: Sequence[Table]
) -> tuple[Judged, list[Judged]]:
    """The policy's verdicts (for an account no condition names) on a database and each table."""
    whole = verdict(rules, database, tuple(tables), None)
    own = policy.flag_of(database.parameters).truthy
    judged_tables = []
    for table in tables:
        one = approval.evaluate(
            rules,
            Scope(database=database.name, table=table.name),
            database,
            [table],
            account=None,
        )
        flagged = own or policy.flag_of(table.parameters).truthy or bool(policy.pii_columns(table))
        judged_tables.append(
            Judged(
                level=one.level,
                needs_approval=one.needs_approval,
                reason=one.reason,
                contains_pii=flagged,
                pii_summary=table_pii_summary(database, table),
            )
        )
    return (
        Judged(
            level=whole.level,
            needs_approval=whole.needs_approval,
            reason=whole.reason,
            contains_pii=own or any(j.contains_pii for j in judged_tables),
            pii_summary=pii_summary(database, tuple(tables)),
        ),
        judged_tables,
    )


def domain_of(rules: ApprovalPolicy, owner: str | None) -> str:
    """The policy's domains that hold the owner account, comma-separated."""
    if owner is None:
        return ""
    return ", ".join(sorted(name for name, accounts in rules.domains.items() if owner in accounts))


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _column_json(column: Column) -> list[Any]:
    return [column.name, column.type, column.comment, column.parameters, column.is_partition_key]


def table_hash(table: Table, update_time: str | None = None) -> str:
    return _digest(
        [
            table.name,
            table.description,
            table.parameters,
            update_time,
            [_column_json(c) for c in table.all_columns],
        ]
    )


def database_hash(database: Database, table_hashes: Iterable[str]) -> str:
    return _digest([database.name, database.description, database.parameters, sorted(table_hashes)])


# Rows the pages and CLI read -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One search result or listing row: a database (``table`` None) or a table."""

    database: str
    table: str | None
    description: str
    owner_account: str | None
    owner_name: str
    domain: str
    level: str
    needs_approval: bool
    contains_pii: bool
    pii_summary: str
    reason: str = ""
    tables: int = 0
    pii_columns: tuple[str, ...] = ()
    pii: str = ""

    @property
    def kind(self) -> str:
        return "table" if self.table else "database"

    @property
    def name(self) -> str:
        return f"{self.database}.{self.table}" if self.table else self.database

    @property
    def owner(self) -> str:
        if self.owner_account is None:
            return "no owner"
        return f"{self.owner_name or 'unnamed'} ({self.owner_account})"

    @property
    def no_owner(self) -> bool:
        return self.owner_account is None


@dataclass(frozen=True, kw_only=True)
class ColumnEntry:
    name: str
    type: str
    comment: str
    pii: str
    partition_key: bool


@dataclass(frozen=True, kw_only=True)
class Query:
    """A search or listing: free text plus facets; ``None`` leaves a facet open."""

    text: str = ""
    kind: str | None = None  # "database", "table", or None for both
    owner: str | None = None  # an owner account, or "" for no owner
    level: str | None = None
    needs_approval: bool | None = None
    contains_pii: bool | None = None
    # "I already have access": the databases and (database, table) pairs granted to me.
    granted_databases: frozenset[str] | None = None
    granted_tables: frozenset[tuple[str, str]] = frozenset()
    page: int = 0
    page_size: int = PAGE


@dataclass(frozen=True, kw_only=True)
class ResultPage:
    entries: list[Entry]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


@dataclass(frozen=True, kw_only=True)
class SyncRecord:
    id: int
    started_at: str
    finished_at: str | None
    actor: str
    duration_ms: int | None
    databases: int
    tables: int
    added: int
    changed: int
    removed: int
    glue_calls: int
    fingerprint: str
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(kw_only=True)
class Counts:
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    databases: int = 0
    tables: int = 0
    touched: set[str] = field(default_factory=set)

    def add(self, other: Counts) -> None:
        self.added += other.added
        self.changed += other.changed
        self.removed += other.removed
        self.unchanged += other.unchanged
        self.databases += other.databases
        self.tables += other.tables
        self.touched |= other.touched


def fts_query(text: str) -> str:
    """Free text as an FTS5 query: each word a prefix term, all of them required.

    Quoting every word keeps FTS5's syntax (AND, NEAR, column filters, stray quotes) out of
    what people type.
    """
    words = re.findall(r"\w+", text.lower())
    return " ".join(f'"{w}"*' for w in words)


def _entry(row: dict[str, Any]) -> Entry:
    return Entry(
        database=row["database"],
        table=row["table_name"] or None,
        description=row["description"],
        owner_account=row["owner_account"],
        owner_name=row["owner_name"],
        domain=row["domain"],
        level=row["level"],
        needs_approval=bool(row["needs_approval"]),
        contains_pii=bool(row["contains_pii"]),
        pii_summary=row["pii_summary"],
        reason=row["reason"],
        tables=row["tables"] or 0,
        pii_columns=tuple(json.loads(row["pii_columns"] or "[]")),
        pii=row["pii"],
    )


_DB_SELECT = (
    "SELECT d.name AS database, '' AS table_name, d.description, d.owner_account, "
    "d.owner_name, d.domain, d.level, d.needs_approval, d.contains_pii, d.pii_summary, "
    "d.reason, d.tables, '[]' AS pii_columns, d.pii"
)
_TABLE_SELECT = (
    "SELECT t.database, t.name AS table_name, t.description, t.owner_account, t.owner_name, "
    "t.domain, t.level, t.needs_approval, t.contains_pii, t.pii_summary, t.reason, 0 AS tables, "
    "t.pii_columns, t.pii"
)


class CatalogIndex:
    """The catalog index over a store, judged by ``rules`` (whose fingerprint it records)."""

    def __init__(self, store: Store, *, rules: ApprovalPolicy, fingerprint: str) -> None:
        self.store = store
        self.rules = rules
        self.fingerprint = fingerprint

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
        with self.store._write() as db:
            for database, tables in batch:
                counts.add(self._put_database(db, database, tables, at=at))
        return counts

    def _put_database(
        self,
        db: sqlite_utils.Database,
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
            "SELECT id, hash FROM catalog_databases WHERE name = ?", [database.name]
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
        seen = set()
        for (table, update_time), one, table_digest in zip(tables, judged, hashes, strict=True):
            seen.add(table.name)
            before = known.get(table.name)
            if before == table_digest + self.fingerprint:
                counts.unchanged += 1
                continue
            counts.added += before is None
            counts.changed += before is not None
            self._upsert_table(db, database, table, update_time, one, table_digest, at=at)
        gone = [name for name in known if name not in seen]
        for name in gone:
            self._delete_table(db, database.name, name)
        counts.removed += len(gone)
        counts.touched.add(database.name)
        return counts

    def _upsert_database(
        self,
        db: sqlite_utils.Database,
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
        db: sqlite_utils.Database,
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
        db.conn.executemany(
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

    @staticmethod
    def _delete_table(db: sqlite_utils.Database, database: str, name: str) -> None:
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

    def _delete_database(self, db: sqlite_utils.Database, name: str) -> int:
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
            cursor = db.execute(
                "INSERT INTO catalog_syncs (started_at, actor, fingerprint) VALUES (?, ?, ?)",
                [at, actor, self.fingerprint],
            )
            return int(cursor.lastrowid or 0)

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

    # Reads -------------------------------------------------------------------------------

    def database_names(self) -> list[str]:
        with self.store._connect() as db:
            return [r[0] for r in db.execute("SELECT name FROM catalog_databases ORDER BY name")]

    def table_names(self, database: str) -> list[str]:
        with self.store._connect() as db:
            return [
                r[0]
                for r in db.execute(
                    "SELECT name FROM catalog_tables WHERE database = ? ORDER BY name", [database]
                )
            ]

    def database(self, name: str) -> Database | None:
        with self.store._connect() as db:
            row = db.execute(
                "SELECT name, description, parameters FROM catalog_databases WHERE name = ?",
                [name],
            ).fetchone()
        if row is None:
            return None
        return Database(name=row[0], description=row[1], parameters=json.loads(row[2]))

    def tables(self, database: str, *, names: Sequence[str] | None = None) -> list[Table]:
        """The tables of one database (or the named ones), with their columns, by name."""
        where, params = "database = ?", [database]
        if names is not None:
            where += f" AND name IN ({', '.join('?' for _ in names)})"
            params += list(names)
        with self.store._connect() as db:
            rows = db.execute(
                f"SELECT name, description, parameters FROM catalog_tables WHERE {where} "
                "ORDER BY name",
                params,
            ).fetchall()
            columns: dict[str, list[Column]] = {}
            for table, name, kind, comment, parameters, partition in db.execute(
                "SELECT table_name, name, type, comment, parameters, partition_key FROM "
                "catalog_columns WHERE database = ? ORDER BY table_name, position",
                [database],
            ):
                columns.setdefault(table, []).append(
                    Column(
                        name=name,
                        type=kind,
                        comment=comment,
                        parameters=json.loads(parameters),
                        is_partition_key=bool(partition),
                    )
                )
        result = []
        for name, description, parameters in rows:
            cols = columns.get(name, [])
            result.append(
                Table(
                    database=database,
                    name=name,
                    description=description,
                    parameters=json.loads(parameters),
                    columns=tuple(c for c in cols if not c.is_partition_key),
                    partition_keys=tuple(c for c in cols if c.is_partition_key),
                )
            )
        return result

    def table(self, database: str, name: str) -> Table | None:
        found = self.tables(database, names=[name])
        return found[0] if found else None

    def database_entry(self, name: str) -> Entry | None:
        with self.store._connect() as db:
            rows = list(db.query(f"{_DB_SELECT} FROM catalog_databases d WHERE d.name = ?", [name]))
        return _entry(rows[0]) if rows else None

    def database_entries(self) -> list[Entry]:
        """Every database, by name (the CLI's listing)."""
        with self.store._connect() as db:
            rows = list(db.query(f"{_DB_SELECT} FROM catalog_databases d ORDER BY d.name"))
        return [_entry(r) for r in rows]

    def all_table_entries(self) -> Iterator[Entry]:
        """Every table, by database and name, read as it is consumed."""
        with self.store._connect() as db:
            for row in db.query(
                f"{_TABLE_SELECT} FROM catalog_tables t ORDER BY t.database, t.name"
            ):
                yield _entry(row)

    def table_entries(self, database: str) -> list[Entry]:
        with self.store._connect() as db:
            rows = list(
                db.query(
                    f"{_TABLE_SELECT} FROM catalog_tables t WHERE t.database = ? ORDER BY t.name",
                    [database],
                )
            )
        return [_entry(r) for r in rows]

    def table_entry(self, database: str, name: str) -> Entry | None:
        with self.store._connect() as db:
            rows = list(
                db.query(
                    f"{_TABLE_SELECT} FROM catalog_tables t WHERE t.database = ? AND t.name = ?",
                    [database, name],
                )
            )
        return _entry(rows[0]) if rows else None

    def columns(self, database: str, table: str) -> list[ColumnEntry]:
        with self.store._connect() as db:
            rows = db.execute(
                "SELECT name, type, comment, pii, partition_key FROM catalog_columns "
                "WHERE database = ? AND table_name = ? ORDER BY position",
                [database, table],
            ).fetchall()
        return [
            ColumnEntry(name=n, type=t, comment=c, pii=p, partition_key=bool(k))
            for n, t, c, p, k in rows
        ]

    def owners(self) -> list[tuple[str | None, str]]:
        """Every owner account with its name, once each, by name."""
        with self.store._connect() as db:
            return [
                (r[0], r[1])
                for r in db.execute(
                    "SELECT owner_account, MAX(owner_name) FROM catalog_databases "
                    "GROUP BY owner_account ORDER BY MAX(owner_name), owner_account"
                )
            ]

    def levels(self) -> list[str]:
        return [level.name for level in self.rules.levels]

    def counts(self) -> tuple[int, int]:
        """How many databases and tables the index holds."""
        with self.store._connect() as db:
            databases = db.execute("SELECT COUNT(*) FROM catalog_databases").fetchone()[0]
            tables = db.execute("SELECT COUNT(*) FROM catalog_tables").fetchone()[0]
        return int(databases), int(tables)

    def search(self, query: Query) -> ResultPage:
        """One page of databases and tables: ranked by bm25 when there is text, else by name."""
        match = fts_query(query.text)
        arms = []
        params: list[Any] = []
        for kind, select, alias, source in (
            ("database", _DB_SELECT, "d", "catalog_databases d"),
            ("table", _TABLE_SELECT, "t", "catalog_tables t"),
        ):
            if query.kind not in (None, kind):
                continue
            where, more = _facets(query, alias, kind)
            if match:
                key = "-hits.rowid" if kind == "database" else "hits.rowid"
                arms.append(
                    f"{select}, hits.rank AS rank FROM hits JOIN {source} ON {alias}.id = {key}"
                    + (f" WHERE {where}" if where else "")
                )
            else:
                arms.append(
                    f"{select}, 0.0 AS rank FROM {source}" + (f" WHERE {where}" if where else "")
                )
            params += more
        if not arms:
            return ResultPage(entries=[], total=0, page=0, page_size=query.page_size)
        body = " UNION ALL ".join(arms)
        prefix, head = "", []
        if match:
            prefix = (
                f"WITH hits AS (SELECT rowid, bm25(catalog_fts, {_WEIGHTS}) AS rank "
                "FROM catalog_fts WHERE catalog_fts MATCH ?) "
            )
            head = [match]
        order = "rank, database, table_name" if match else "database, table_name"
        # The count needs the matches, not their ranks: bm25 for every match is most of the
        # cost of a broad search, so the count's CTE leaves it out.
        counting = prefix.replace(f"bm25(catalog_fts, {_WEIGHTS})", "0.0")
        with self.store._connect() as db:
            total = db.execute(
                f"{counting}SELECT COUNT(*) FROM ({body})", head + params
            ).fetchone()[0]
            pages = max(1, -(-total // query.page_size))
            page = min(max(query.page, 0), pages - 1)
            rows = list(
                db.query(
                    f"{prefix}SELECT * FROM ({body}) ORDER BY {order} LIMIT ? OFFSET ?",
                    [*head, *params, query.page_size, page * query.page_size],
                )
            )
        return ResultPage(
            entries=[_entry(r) for r in rows], total=total, page=page, page_size=query.page_size
        )


def _put(db: sqlite_utils.Database, table: str, values: dict[str, Any], row_id: int | None) -> int:
    """Insert ``values`` as a new row of ``table``, or update row ``row_id``; its id."""
    if row_id is None:
        cursor = db.execute(
            f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})",
            list(values.values()),
        )
        return int(cursor.lastrowid or 0)
    db.execute(
        f"UPDATE {table} SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?",
        [*values.values(), row_id],
    )
    return row_id


def _facets(query: Query, alias: str, kind: str) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if query.owner is not None:
        if query.owner == "":
            where.append(f"{alias}.owner_account IS NULL")
        else:
            where.append(f"{alias}.owner_account = ?")
            params.append(query.owner)
    if query.level is not None:
        where.append(f"{alias}.level = ?")
        params.append(query.level)
    if query.needs_approval is not None:
        where.append(f"{alias}.needs_approval = ?")
        params.append(int(query.needs_approval))
    if query.contains_pii is not None:
        where.append(f"{alias}.contains_pii = ?")
        params.append(int(query.contains_pii))
    if query.granted_databases is not None:
        databases = json.dumps(sorted(query.granted_databases))
        if kind == "database":
            where.append(f"{alias}.name IN (SELECT value FROM json_each(?))")
            params.append(databases)
        else:
            pairs = json.dumps([f"{d}\x1f{t}" for d, t in sorted(query.granted_tables)])
            where.append(
                f"({alias}.database IN (SELECT value FROM json_each(?)) OR "
                f"{alias}.database || char(31) || {alias}.name IN "
                "(SELECT value FROM json_each(?)))"
            )
            params += [databases, pairs]
    return " AND ".join(where), params


def _words(name: str) -> str:
    """A name as it is written, plus its parts: ``sales_orders`` also matches ``orders``."""
    parts = re.split(r"[_\-.]+", name)
    return name if len(parts) < 2 else f"{name} {' '.join(p for p in parts if p)}"


def _differences(
    before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]
) -> list[str]:
    changed = []
    for name, old in before.items():
        new = after.get(name, ())
        if not old:
            changed.append(f"{name} was not in the catalog index")
        elif old != new:
            changed.append(f"{name} changed since the last sync")
    return changed


class IndexedCatalog:
    """The index read through the ``Catalog`` port (explain and policy notes use it)."""

    def __init__(self, index: CatalogIndex, *, catalog_id: str) -> None:
        self.index = index
        self.catalog_id = catalog_id

    def database(self, name: str) -> Database:
        found = self.index.database(name)
        if found is None:
            found = _case_insensitive(self.index.database, self.index.database_names(), name)
        if found is None:
            raise NotFound(f"There is no database {name!r} in the catalog.")
        return found

    def tables(self, database: str) -> list[Table]:
        return self.index.tables(self.database(database).name)

    def table(self, database: str, name: str) -> Table:
        db = self.database(database).name
        found = self.index.table(db, name)
        if found is None:
            names = self.index.table_names(db)
            found = _case_insensitive(lambda n: self.index.table(db, n), names, name)
        if found is None:
            raise NotFound(f"There is no table {name!r} in database {database!r}.")
        return found


def _case_insensitive(read: Any, names: Iterable[str], wanted: str) -> Any:
    """Glue matches names case-insensitively; so does the index."""
    for name in names:
        if name.lower() == wanted.lower():
            return read(name)
    return None


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
