"""The catalog index's value objects: entries, searches and their pages, syncs, counts."""

from __future__ import annotations

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
