"""Pure rules: what is sensitive, which grants a request needs, who may do what.

Nothing here performs I/O; every function takes the catalog entries and users it needs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from mesh.errors import InvalidInput
from mesh.models import (
    AccessRequest,
    Column,
    Database,
    FlagState,
    GrantSpec,
    Permission,
    Scope,
    Status,
    Table,
    User,
)

PII_FLAG = "pii_flag"
_SET = frozenset({"true", "yes", "1", "y"})
_UNSET = frozenset({"false", "no", "0", "n", ""})
_ACCOUNT_ID = re.compile(r"[0-9]{12}")  # ASCII only: \d also matches other scripts' digits
MAX_REASON = 1000
_REASONS_SHOWN = 3


def read_flag(value: str | None) -> FlagState:
    """Read a ``pii_flag`` value; anything not clearly false counts as set (fail closed)."""
    text = (value or "").strip().lower()
    if text in _UNSET:
        return FlagState.UNSET
    if text in _SET:
        return FlagState.SET
    return FlagState.UNRECOGNISED


def flag_of(parameters: dict[str, str] | None) -> FlagState:
    return read_flag((parameters or {}).get(PII_FLAG))


def _describe(where: str, raw: str | None) -> str:
    state = read_flag(raw)
    shown = (raw or "").strip()
    if state is FlagState.UNRECOGNISED:
        return f"{where} has pii_flag={shown!r}, an unrecognised value treated as PII"
    return f"{where} has pii_flag={shown}"


def is_valid_account(account: str) -> bool:
    return bool(_ACCOUNT_ID.fullmatch(account))


@dataclass(frozen=True, kw_only=True)
class Assessment:
    """Why a scope is (or is not) sensitive, and which columns hold PII."""

    sensitive: bool
    reasons: tuple[str, ...] = ()
    pii_columns: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        if not self.reasons:
            return ""
        shown = "; ".join(self.reasons[:_REASONS_SHOWN])
        more = len(self.reasons) - _REASONS_SHOWN
        return f"{shown}; and {more} more" if more > 0 else shown


def pii_columns(table: Table) -> tuple[Column, ...]:
    """Flagged columns in column order, then flagged partition keys in their order."""
    return tuple(c for c in table.all_columns if flag_of(c.parameters).truthy)


def unrecognised_flags(parameters: dict[str, str] | None) -> bool:
    return flag_of(parameters) is FlagState.UNRECOGNISED


def assess_table(database: Database, table: Table) -> Assessment:
    """A table is sensitive if its database, itself, or any column or partition key is flagged."""
    reasons: list[str] = []
    if flag_of(database.parameters).truthy:
        reasons.append(_describe(f"database {database.name}", database.parameters[PII_FLAG]))
    if flag_of(table.parameters).truthy:
        reasons.append(_describe(f"table {table.name}", table.parameters[PII_FLAG]))
    flagged = pii_columns(table)
    for column in flagged:
        kind = "partition key" if column.is_partition_key else "column"
        reasons.append(_describe(f"{kind} {column.name}", column.parameters[PII_FLAG]))
    return Assessment(
        sensitive=bool(reasons),
        reasons=tuple(reasons),
        pii_columns=tuple(c.name for c in flagged),
    )


def assess_database(database: Database, tables: Iterable[Table]) -> Assessment:
    """A database request is sensitive if the database or any of its tables is sensitive.

    The reference design looked only at the database flag, so a database-level request could
    auto-share tables with PII columns; this closes that hole.
    """
    reasons: list[str] = []
    columns: list[str] = []
    if flag_of(database.parameters).truthy:
        reasons.append(_describe(f"database {database.name}", database.parameters[PII_FLAG]))
    for table in tables:
        if flag_of(table.parameters).truthy:
            reasons.append(_describe(f"table {table.name}", table.parameters[PII_FLAG]))
        for column in pii_columns(table):
            kind = "partition key" if column.is_partition_key else "column"
            where = f"{kind} {table.name}.{column.name}"
            reasons.append(_describe(where, column.parameters[PII_FLAG]))
            columns.append(f"{table.name}.{column.name}")
    return Assessment(sensitive=bool(reasons), reasons=tuple(reasons), pii_columns=tuple(columns))


def only_columns(table: Table, columns: Sequence[str]) -> Table:
    """The table as a column-subset request sees it: only the requested columns remain."""
    keep = set(columns)
    return replace(
        table,
        columns=tuple(c for c in table.columns if c.name in keep),
        partition_keys=tuple(c for c in table.partition_keys if c.name in keep),
    )


def check_columns(table: Table, columns: Sequence[str]) -> tuple[str, ...]:
    """Validate a column subset; returns it in table order (columns, then partition keys)."""
    wanted = [c.strip() for c in columns if c.strip()]
    if not wanted:
        raise InvalidInput("Name at least one column, or leave columns out for the whole table.")
    known = [c.name for c in table.all_columns]
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise InvalidInput(
            f"Table {table.name} has no column {unknown[0]!r}; its columns are {', '.join(known)}."
        )
    return tuple(name for name in known if name in set(wanted))


# Grants --------------------------------------------------------------------------------------

_READ = (Permission.SELECT, Permission.DESCRIBE)


def grants_for(scope: Scope, *, account: str, catalog_id: str) -> tuple[GrantSpec, ...]:
    """The exact Lake Formation grants that give ``account`` the requested scope.

    External accounts need the grant option so that their own data lake admin can re-grant,
    and a cross-account grant on all tables does not imply DESCRIBE on the database, so a
    database request grants that explicitly (see ../shared/AWS_NOTES.md).
    """
    if scope.table is not None and scope.columns is not None:
        return _column_grants(scope, account=account, catalog_id=catalog_id)
    if scope.table is not None:
        table = {"CatalogId": catalog_id, "DatabaseName": scope.database, "Name": scope.table}
        return (
            GrantSpec(
                principal=account, resource={"Table": table}, permissions=_READ, grantable=_READ
            ),
        )
    describe = (Permission.DESCRIBE,)
    database = {"CatalogId": catalog_id, "Name": scope.database}
    wildcard = {"CatalogId": catalog_id, "DatabaseName": scope.database, "TableWildcard": {}}
    return (
        GrantSpec(
            principal=account,
            resource={"Database": database},
            permissions=describe,
            grantable=describe,
        ),
        GrantSpec(
            principal=account, resource={"Table": wildcard}, permissions=_READ, grantable=_READ
        ),
    )


def _column_grants(scope: Scope, *, account: str, catalog_id: str) -> tuple[GrantSpec, ...]:
    """A column subset: SELECT on exactly those columns, plus DESCRIBE on the table.

    Lake Formation allows only SELECT on TableWithColumns; the table's DESCRIBE lets the
    consumer see the table it may query (and re-grant it, hence the grant option).
    """
    table = {"CatalogId": catalog_id, "DatabaseName": scope.database, "Name": scope.table}
    subset = {**table, "ColumnNames": list(scope.columns or ())}
    select, describe = (Permission.SELECT,), (Permission.DESCRIBE,)
    return (
        GrantSpec(
            principal=account, resource={"Table": table}, permissions=describe, grantable=describe
        ),
        GrantSpec(
            principal=account,
            resource={"TableWithColumns": subset},
            permissions=select,
            grantable=select,
        ),
    )


def resource_key(resource: dict[str, Any]) -> str:
    """A comparable key for a Lake Formation resource; column lists compare as sets."""
    body = resource.get("TableWithColumns")
    if isinstance(body, dict) and "ColumnNames" in body:
        resource = {"TableWithColumns": {**body, "ColumnNames": sorted(body["ColumnNames"])}}
    return json.dumps(resource, sort_keys=True)


# Time-bound access ------------------------------------------------------------------------


DURATION_CHOICES = (7, 30, 90)
LONGEST_ACCESS = timedelta(days=3650)


def check_period(duration: timedelta | None, until: date | None, *, today: date) -> None:
    """A duration must be positive, a date in the future, and not both at once."""
    if duration is not None and until is not None:
        raise InvalidInput("Give either a duration or an end date, not both.")
    if duration is not None and duration <= timedelta(0):
        raise InvalidInput("The duration must be at least one day.")
    if duration is not None and duration > LONGEST_ACCESS:
        raise InvalidInput(
            f"The duration is longer than {LONGEST_ACCESS.days} days; ask for "
            "unbounded access instead, or for less time."
        )
    if until is not None and until <= today:
        raise InvalidInput(f"The end date {until.isoformat()} is not in the future.")
    if until is not None and until - today > LONGEST_ACCESS:
        raise InvalidInput(
            f"The end date is more than {LONGEST_ACCESS.days} days away; ask for "
            "unbounded access instead, or for an earlier date."
        )


def expiry(
    granted_at: datetime, duration_seconds: int | None, expires_on: str | None
) -> datetime | None:
    """When access granted at ``granted_at`` ends: after the duration, or as the end date ends."""
    if duration_seconds is not None:
        return granted_at + timedelta(seconds=duration_seconds)
    if expires_on is not None:
        return datetime.combine(
            date.fromisoformat(expires_on) + timedelta(days=1), time(), tzinfo=UTC
        )
    return None


# Who may do what ----------------------------------------------------------------------------


def may_request_for(user: User, account: str) -> bool:
    return user.is_admin or account in user.accounts


def owns(user: User, owner_account: str | None) -> bool:
    return user.is_owner and owner_account is not None and owner_account in user.owner_of


def may_retry(user: User, request: AccessRequest, owner_account: str | None) -> bool:
    return user.username == request.requester or user.is_admin or owns(user, owner_account)


def may_cancel(user: User, request: AccessRequest) -> bool:
    return user.username == request.requester and request.status is Status.PENDING_APPROVAL
