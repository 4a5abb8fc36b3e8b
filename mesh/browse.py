"""Pure views of the catalog for people and scripts: badges, PII counts, the JSON shape."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING, Any

from mesh import approval, policy
from mesh.approval import DEFAULT, ApprovalPolicy, Verdict
from mesh.catalog import CatalogSnapshot
from mesh.models import Column, Database, FlagState, Scope, Table

if TYPE_CHECKING:
    from mesh.catalog_index import CatalogIndex, Entry

UNRECOGNISED = "unrecognised flag value"


def verdict(
    rules: ApprovalPolicy, database: Database, tables: tuple[Table, ...], table: Table | None
) -> Verdict:
    """What the policy says about requesting a database or a table, for any account."""
    scope = Scope(database=database.name, table=table.name if table else None)
    return approval.evaluate(
        rules, scope, database, [table] if table else list(tables), account=None
    )


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
    level: str = ""
    pii_summary: str = ""  # one badge for people: where the PII is, see pii_summary()

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


def database_row(
    database: Database, tables: tuple[Table, ...], *, rules: ApprovalPolicy = DEFAULT
) -> DatabaseRow:
    """``sensitive`` means the policy asks for approval (for an account no condition names)."""
    own = policy.flag_of(database.parameters).truthy
    assessment = policy.assess_database(database, tables)
    judged = verdict(rules, database, tables, None)
    return DatabaseRow(
        name=database.name,
        description=database.description,
        owner_account=database.owner_account,
        owner_name=database.owner_name,
        pii=badge(database.parameters),
        contains_pii=assessment.sensitive and not own,
        sensitive=judged.needs_approval,
        no_owner=database.owner_account is None,
        tables=len(tables),
        level=judged.level,
        pii_summary=pii_summary(database, tables),
    )


def pii_summary(database: Database, tables: tuple[Table, ...]) -> str:
    """Where a database's PII is, in one badge: "whole database", "in 2 of 5 tables", "none".

    One text instead of two columns (the database's own flag, and PII in its tables), which
    read as disagreeing when the database itself is flagged.
    """
    state = policy.flag_of(database.parameters)
    if state.truthy:
        return "whole database" + ("" if state is FlagState.SET else f" ({UNRECOGNISED})")
    flagged = sum(1 for t in tables if policy.flag_of(t.parameters).truthy or policy.pii_columns(t))
    return f"in {flagged} of {len(tables)} tables" if flagged else "none"


def database_rows(
    snapshot: CatalogSnapshot, text: str = "", *, rules: ApprovalPolicy = DEFAULT
) -> list[DatabaseRow]:
    rows = [
        database_row(d, snapshot.tables.get(d.name, ()), rules=rules) for d in snapshot.databases
    ]
    return [r for r in rows if r.matches(text)]


@dataclass(frozen=True, kw_only=True)
class TableRow:
    name: str
    description: str
    pii: str
    pii_columns: int
    sensitive: bool
    reason: str
    level: str = ""
    pii_summary: str = ""


def table_pii_summary(database: Database, table: Table) -> str:
    """Where a table's PII is, in one badge: "whole database", "whole table", "3 columns"."""
    for scope, parameters in (("database", database.parameters), ("table", table.parameters)):
        state = policy.flag_of(parameters)
        if state.truthy:
            return f"whole {scope}" + ("" if state is FlagState.SET else f" ({UNRECOGNISED})")
    count = len(policy.pii_columns(table))
    return f"{count} column{'s' if count != 1 else ''}" if count else "none"


def table_rows(
    database: Database, tables: tuple[Table, ...], *, rules: ApprovalPolicy = DEFAULT
) -> list[TableRow]:
    rows = []
    for table in tables:
        judged = verdict(rules, database, tables, table)
        rows.append(
            TableRow(
                name=table.name,
                description=table.description,
                pii=badge(table.parameters),
                pii_columns=len(policy.pii_columns(table)),
                sensitive=judged.needs_approval,
                reason=judged.reason,
                level=judged.level,
                pii_summary=table_pii_summary(database, table),
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


def catalog_json(
    snapshot: CatalogSnapshot, *, rules: ApprovalPolicy = DEFAULT
) -> list[dict[str, Any]]:
    """The ``catalog --json`` shape (a public contract); ``sensitive``: needs approval."""
    result = []
    for database in snapshot.databases:
        tables = snapshot.tables.get(database.name, ())
        whole = verdict(rules, database, tables, None)
        entries = []
        for t in tables:
            judged = verdict(rules, database, tables, t)
            entries.append(
                {
                    "name": t.name,
                    "pii_columns": [c.name for c in policy.pii_columns(t)],
                    "sensitive": judged.needs_approval,
                    "level": judged.level,
                }
            )
        result.append(
            {
                "name": database.name,
                "description": database.description,
                "owner_account": database.owner_account,
                "owner_name": database.owner_name,
                "pii_flag": policy.flag_of(database.parameters).truthy,
                "sensitive": whole.needs_approval,
                "level": whole.level,
                "tables": entries,
            }
        )
    return result


# Views of the catalog index (mesh/catalog_index.py) ----------------------------------------


def entry_row(entry: Entry) -> DatabaseRow:
    """A database of the index as the listing's row."""
    return DatabaseRow(
        name=entry.database,
        description=entry.description,
        owner_account=entry.owner_account,
        owner_name=entry.owner_name,
        pii=entry.pii,
        contains_pii=entry.contains_pii and not entry.pii,
        sensitive=entry.needs_approval,
        no_owner=entry.no_owner,
        tables=entry.tables,
        level=entry.level,
        pii_summary=entry.pii_summary,
    )


def index_database_rows(index: CatalogIndex) -> list[DatabaseRow]:
    return [entry_row(e) for e in index.database_entries()]


def index_json(index: CatalogIndex) -> list[dict[str, Any]]:
    """The ``catalog --json`` shape (a public contract), read from the index."""
    tables = {
        name: [
            {
                "name": t.table,
                "pii_columns": list(t.pii_columns),
                "sensitive": t.needs_approval,
                "level": t.level,
            }
            for t in group
        ]
        for name, group in groupby(index.all_table_entries(), key=lambda t: t.database)
    }
    return [
        {
            "name": d.database,
            "description": d.description,
            "owner_account": d.owner_account,
            "owner_name": d.owner_name,
            "pii_flag": bool(d.pii),
            "sensitive": d.needs_approval,
            "level": d.level,
            "tables": tables.get(d.database, []),
        }
        for d in index.database_entries()
    ]


def entry_json(entry: Entry) -> dict[str, Any]:
    """One search result (``catalog --search TEXT --json``)."""
    return {
        "kind": entry.kind,
        "database": entry.database,
        "table": entry.table,
        "description": entry.description,
        "owner_account": entry.owner_account,
        "owner_name": entry.owner_name,
        "domain": entry.domain,
        "pii": entry.pii_summary,
        "pii_columns": list(entry.pii_columns),
        "sensitive": entry.needs_approval,
        "level": entry.level,
    }
