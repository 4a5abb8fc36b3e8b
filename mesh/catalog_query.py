"""Reading the catalog index: listings, one database or table, and search.

Search is SQLite FTS5 over names, descriptions, column names and comments, owners and
domains, ranked with bm25. A table's FTS rowid is its id; a database's is minus its id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mesh.approval import ApprovalPolicy
from mesh.catalog_rows import ColumnEntry, Entry, Query, ResultPage
from mesh.errors import NotFound
from mesh.models import Column, Database, Table
from mesh.store import Store

# bm25 weights of catalog_fts's columns: a name match counts most, then owner and domain.
_WEIGHTS = "10.0, 3.0, 2.0, 4.0, 4.0"


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


class CatalogReads:
    """The reading side of the catalog index over a store, judged by ``rules``."""

    def __init__(self, store: Store, *, rules: ApprovalPolicy, fingerprint: str) -> None:
        self.store = store
        self.rules = rules
        self.fingerprint = fingerprint

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


class IndexedCatalog:
    """The index read through the ``Catalog`` port (explain and policy notes use it)."""

    def __init__(self, index: CatalogReads, *, catalog_id: str) -> None:
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
