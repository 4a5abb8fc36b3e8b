"""Pure views of the catalog for people and scripts: badges, PII counts, the JSON shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh import policy
from mesh.catalog import CatalogSnapshot
from mesh.models import Column, Database, FlagState, Table

UNRECOGNISED = "unrecognised flag value"


def badge(parameters: dict[str, str]) -> str:
    """The PII badge text of one catalog entry: '', 'PII', or 'PII (unrecognised flag value)'."""
    state = policy.flag_of(parameters)
    if state is FlagState.UNSET:
        return ""
    return "PII" if state is FlagState.SET else f"PII ({UNRECOGNISED})"


@dataclass(frozen=True, kw_only=True)
class DatabaseRow:
    name: str
    description: str
    owner_account: str | None
    owner_name: str
    pii: str
    contains_pii: bool
    sensitive: bool
    no_owner: bool
    tables: int

    @property
    def owner(self) -> str:
        if self.owner_account is None:
            return "no owner"
        return f"{self.owner_name or 'unnamed'} ({self.owner_account})"

    def matches(self, text: str) -> bool:
        needle = text.strip().lower()
        haystack = " ".join(
            [self.name, self.description, self.owner_name, self.owner_account or "no owner"]
        ).lower()
        return not needle or needle in haystack


def database_row(database: Database, tables: tuple[Table, ...]) -> DatabaseRow:
    own = policy.flag_of(database.parameters).truthy
    assessment = policy.assess_database(database, tables)
    return DatabaseRow(
        name=database.name,
        description=database.description,
        owner_account=database.owner_account,
        owner_name=database.owner_name,
        pii=badge(database.parameters),
        contains_pii=assessment.sensitive and not own,
        sensitive=assessment.sensitive,
        no_owner=database.owner_account is None,
        tables=len(tables),
    )


def database_rows(snapshot: CatalogSnapshot, text: str = "") -> list[DatabaseRow]:
    rows = [database_row(d, snapshot.tables.get(d.name, ())) for d in snapshot.databases]
    return [r for r in rows if r.matches(text)]


@dataclass(frozen=True, kw_only=True)
class TableRow:
    name: str
    description: str
    pii: str
    pii_columns: int
    sensitive: bool
    reason: str


def table_rows(database: Database, tables: tuple[Table, ...]) -> list[TableRow]:
    rows = []
    for table in tables:
        found = policy.assess_table(database, table)
        rows.append(
            TableRow(
                name=table.name,
                description=table.description,
                pii=badge(table.parameters),
                pii_columns=len(found.pii_columns),
                sensitive=found.sensitive,
                reason=found.reason,
            )
        )
    return rows


@dataclass(frozen=True, kw_only=True)
class ColumnRow:
    name: str
    type: str
    comment: str
    pii: str
    partition_key: bool


def column_rows(table: Table) -> list[ColumnRow]:
    return [_column_row(c) for c in table.all_columns]


def _column_row(column: Column) -> ColumnRow:
    return ColumnRow(
        name=column.name,
        type=column.type,
        comment=column.comment,
        pii=badge(column.parameters),
        partition_key=column.is_partition_key,
    )


def catalog_json(snapshot: CatalogSnapshot) -> list[dict[str, Any]]:
    """The ``catalog --json`` shape (a public contract)."""
    result = []
    for database in snapshot.databases:
        tables = snapshot.tables.get(database.name, ())
        result.append(
            {
                "name": database.name,
                "description": database.description,
                "owner_account": database.owner_account,
                "owner_name": database.owner_name,
                "pii_flag": policy.flag_of(database.parameters).truthy,
                "sensitive": policy.assess_database(database, tables).sensitive,
                "tables": [
                    {
                        "name": t.name,
                        "pii_columns": [c.name for c in policy.pii_columns(t)],
                        "sensitive": policy.assess_table(database, t).sensitive,
                    }
                    for t in tables
                ],
            }
        )
    return result
