"""Reading the catalog index: listings, one database or table, and search.

Search itself is in ``catalog_search``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mesh.approval import ApprovalPolicy
from mesh.catalog_rows import (
    DB_SELECT,
    TABLE_SELECT,
    ColumnEntry,
    Entry,
    Query,
    ResultPage,
    entry_of,
)
from mesh.catalog_search import search
from mesh.errors import NotFound
from mesh.models import Column, Database, Table
from mesh.store import AnyStore


class CatalogReads:
    """The reading side of the catalog index over a store, judged by ``rules``."""

    def __init__(self, store: AnyStore, *, rules: ApprovalPolicy, fingerprint: str) -> None:
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
            rows = list(db.query(f"{DB_SELECT} FROM catalog_databases d WHERE d.name = ?", [name]))
        return entry_of(rows[0]) if rows else None

    def database_entries(self) -> list[Entry]:
        """Every database, by name (the CLI's listing)."""
        with self.store._connect() as db:
            rows = list(db.query(f"{DB_SELECT} FROM catalog_databases d ORDER BY d.name"))
        return [entry_of(r) for r in rows]

    def all_table_entries(self) -> Iterator[Entry]:
        """Every table, by database and name, read as it is consumed."""
        with self.store._connect() as db:
            for row in db.query(
                f"{TABLE_SELECT} FROM catalog_tables t ORDER BY t.database, t.name"
            ):
                yield entry_of(row)

    def table_entries(self, database: str) -> list[Entry]:
        with self.store._connect() as db:
            rows = list(
                db.query(
                    f"{TABLE_SELECT} FROM catalog_tables t WHERE t.database = ? ORDER BY t.name",
                    [database],
                )
            )
        return [entry_of(r) for r in rows]

    def table_entry(self, database: str, name: str) -> Entry | None:
        with self.store._connect() as db:
            rows = list(
                db.query(
                    f"{TABLE_SELECT} FROM catalog_tables t WHERE t.database = ? AND t.name = ?",
                    [database, name],
                )
            )
        return entry_of(rows[0]) if rows else None

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

    def search(self, query: Query, *, cap: int | None = None) -> ResultPage:
        """One page of databases and tables: ranked when there is text, else by name.

        A search counts and ranks at most ``cap`` matches (``catalog_search.CAP``).
        """
        with self.store._connect() as db:
            return search(db, query, cap=cap)


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
