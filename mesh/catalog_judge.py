"""Judging the catalog index: each scope's verdict under the policy, and change hashes.

A database's and each table's level, needs-approval, PII flag and PII summary are judged for
an account no condition names, when they are written to the index. The hashes say whether a
database or table changed since the last sync (with the policy's fingerprint appended, also
whether it was judged under another policy).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mesh import approval, policy
from mesh.approval import ApprovalPolicy
from mesh.browse import pii_summary, table_pii_summary, verdict
from mesh.models import Column, Database, Scope, Table


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


def digest(value: Any) -> str:
    """A short, stable hash of a JSON-able value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _column_json(column: Column) -> list[Any]:
    return [column.name, column.type, column.comment, column.parameters, column.is_partition_key]


def table_hash(table: Table, update_time: str | None = None) -> str:
    """What a table's verdict and its row depend on, hashed."""
    return digest(
        [
            table.name,
            table.description,
            table.parameters,
            update_time,
            [_column_json(c) for c in table.all_columns],
        ]
    )


def database_hash(database: Database, table_hashes: Iterable[str]) -> str:
    return digest([database.name, database.description, database.parameters, sorted(table_hashes)])
