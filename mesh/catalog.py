"""Glue adapter: reads the central catalog's databases, tables and columns, always paginated."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mesh.aws import call
from mesh.models import Column, Database, Table

PAGE_SIZE = 100
_READERS = 8


def _column(raw: dict[str, Any], *, partition: bool) -> Column:
    return Column(
        name=raw["Name"],
        type=raw.get("Type", ""),
        comment=raw.get("Comment", ""),
        parameters=dict(raw.get("Parameters") or {}),
        is_partition_key=partition,
    )


def _table(raw: dict[str, Any]) -> Table:
    storage = raw.get("StorageDescriptor") or {}
    return Table(
        database=raw["DatabaseName"],
        name=raw["Name"],
        description=raw.get("Description", ""),
        parameters=dict(raw.get("Parameters") or {}),
        columns=tuple(_column(c, partition=False) for c in storage.get("Columns") or []),
        partition_keys=tuple(_column(c, partition=True) for c in raw.get("PartitionKeys") or []),
    )


def _stamp(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _database(raw: dict[str, Any]) -> Database:
    return Database(
        name=raw["Name"],
        description=raw.get("Description", ""),
        parameters=dict(raw.get("Parameters") or {}),
    )


@dataclass(frozen=True, kw_only=True)
class CatalogSnapshot:
    """Every database and its tables, as read at one moment."""

    databases: tuple[Database, ...]
    tables: dict[str, tuple[Table, ...]]

    def database(self, name: str) -> Database | None:
        return next((d for d in self.databases if d.name == name), None)

    def table(self, database: str, name: str) -> Table | None:
        return next((t for t in self.tables.get(database, ()) if t.name == name), None)


class GlueCatalog:
    """Reads the central account's Glue Data Catalog (``catalog_id``)."""

    def __init__(self, glue: Any, *, catalog_id: str) -> None:
        self._glue = glue
        self.catalog_id = catalog_id

    @property
    def client(self) -> Any:
        """The Glue client (a sync counts its calls through botocore's events)."""
        return self._glue

    def databases(self) -> list[Database]:
        """Every database, skipping resource links (they point at another catalog)."""
        pages = self._glue.get_paginator("get_databases").paginate(
            CatalogId=self.catalog_id, PaginationConfig={"PageSize": PAGE_SIZE}
        )
        raw = call("Glue", "GetDatabases", lambda: [d for p in pages for d in p["DatabaseList"]])
        return [_database(d) for d in raw if "TargetDatabase" not in d]

    def tables(self, database: str) -> list[Table]:
        return [table for table, _ in self.tables_with_times(database)]

    def tables_with_times(self, database: str) -> list[tuple[Table, str | None]]:
        """Every table of ``database`` with Glue's ``UpdateTime`` (ISO 8601), for the sync."""
        pages = self._glue.get_paginator("get_tables").paginate(
            CatalogId=self.catalog_id,
            DatabaseName=database,
            PaginationConfig={"PageSize": PAGE_SIZE},
        )
        raw = call(
            "Glue",
            "GetTables",
            lambda: [t for p in pages for t in p["TableList"]],
            missing=f"There is no database {database!r} in the catalog.",
        )
        return [(_table(t), _stamp(t.get("UpdateTime"))) for t in raw if "TargetTable" not in t]

    def database(self, name: str) -> Database:
        raw = call(
            "Glue",
            "GetDatabase",
            lambda: self._glue.get_database(CatalogId=self.catalog_id, Name=name),
            missing=f"There is no database {name!r} in the catalog.",
        )
        return _database(raw["Database"])

    def table(self, database: str, name: str) -> Table:
        raw = call(
            "Glue",
            "GetTable",
            lambda: self._glue.get_table(
                CatalogId=self.catalog_id, DatabaseName=database, Name=name
            ),
            missing=f"There is no table {name!r} in database {database!r}.",
        )
        return _table(raw["Table"])

    def snapshot(self) -> CatalogSnapshot:
        """Read every database and its tables; table pages are fetched concurrently."""
        databases = self.databases()
        with ThreadPoolExecutor(max_workers=_READERS) as pool:
            tables = list(pool.map(lambda d: tuple(self.tables(d.name)), databases))
        return CatalogSnapshot(
            databases=tuple(databases),
            tables={d.name: t for d, t in zip(databases, tables, strict=True)},
        )
