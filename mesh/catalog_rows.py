"""The catalog index's value objects: entries, searches and their pages, syncs, counts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PAGE = 50


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
    """One page of a search or listing.

    ``capped``: more entries matched than a search ranks (``total`` of them, the name
    matches first); the rest are neither counted nor shown, so the page says "1,000+".
    """

    entries: list[Entry]
    total: int
    page: int
    page_size: int
    capped: bool = False

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    @property
    def count(self) -> str:
        """How many matched, as a person reads it: "1,234", or "1,000+" when capped."""
        return f"{self.total:,}+" if self.capped else f"{self.total:,}"


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


# The columns an Entry is read from, for a database and for a table.
DB_SELECT = (
    "SELECT d.name AS database, '' AS table_name, d.description, d.owner_account, "
    "d.owner_name, d.domain, d.level, d.needs_approval, d.contains_pii, d.pii_summary, "
    "d.reason, d.tables, '[]' AS pii_columns, d.pii"
)
TABLE_SELECT = (
    "SELECT t.database, t.name AS table_name, t.description, t.owner_account, t.owner_name, "
    "t.domain, t.level, t.needs_approval, t.contains_pii, t.pii_summary, t.reason, "
    "CAST(0 AS BIGINT) AS tables, t.pii_columns, t.pii"
)
# BIGINT as d.tables is: PostgreSQL then merges the two name indexes of a listing's UNION ALL
# (1 ms at 100k tables), where a column of another type makes it sort every row (77 ms).


def entry_of(row: dict[str, Any]) -> Entry:
    """An entry from a row read with ``DB_SELECT`` or ``TABLE_SELECT``."""
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
