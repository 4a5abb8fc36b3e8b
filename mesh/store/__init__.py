"""The store: requests, the append-only audit log, sessions, the outbox and the policy record.

``Store`` is the SQLite adapter, assembled from one part per concern over the file's
connection handling (mesh/store/sqlite.py). ``mesh.store.port.StorePort`` lists what the
use cases call, so that another database can implement the same; the contract tests
(tests/contract/) hold every adapter to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mesh.store.audit import AuditRecords, _audit_where
from mesh.store.leases import LeaseRecords
from mesh.store.migrations import AUDIT_CHAIN, migrations
from mesh.store.notices import NoticeRecords
from mesh.store.people import PeopleRecords
from mesh.store.port import StorePort
from mesh.store.postgres import PostgresStore, is_url
from mesh.store.queues import QueueReads
from mesh.store.rows import (
    AUDIT_COLUMNS,
    AlreadyApproved,
    Approval,
    AuditFilters,
    AuditRow,
    NewEvent,
    PendingRow,
    PolicyRecord,
    SessionRow,
    _from_row,
    _to_row,
)
from mesh.store.sessions import SessionRecords
from mesh.store.sqlite import BUSY_TIMEOUT, SqliteStore, key_file_beside

__all__ = [
    "AUDIT_CHAIN",
    "AUDIT_COLUMNS",
    "BUSY_TIMEOUT",
    "KEY_FILE_BESIDE_BY_DEFAULT",
    "AlreadyApproved",
    "AnyStore",
    "Approval",
    "AuditFilters",
    "AuditRow",
    "NewEvent",
    "PendingRow",
    "PgStore",
    "PolicyRecord",
    "SessionRow",
    "Store",
    "StorePort",
    "_audit_where",
    "_from_row",
    "_to_row",
    "key_file_beside",
    "migrations",
    "open_at",
]

# The test suite sets this (tests/conftest.py): a store it makes without an audit key keeps
# one in a file beside its database. Nothing else may: see SqliteStore.audit_key.
KEY_FILE_BESIDE_BY_DEFAULT = False


class Store(
    QueueReads,
    AuditRecords,
    NoticeRecords,
    SessionRecords,
    PeopleRecords,
    LeaseRecords,
    SqliteStore,
):
    """Requests, audit log, sessions, outbox and policy record in one SQLite file."""


class PgStore(
    QueueReads,
    AuditRecords,
    NoticeRecords,
    SessionRecords,
    PeopleRecords,
    LeaseRecords,
    PostgresStore,
):
    """The same, in a PostgreSQL database shared by several replicas."""


AnyStore = Store | PgStore


def open_at(where: str | Path, *, audit_key: str | Callable[[], str] | None = None) -> AnyStore:
    """The store MESH_DB names: a ``postgresql://`` URL, or the path of a SQLite file."""
    if is_url(where):
        return PgStore(str(where), audit_key=audit_key)
    return Store(where, audit_key=audit_key)


def _implements_the_port(store: Store, pg: PgStore) -> tuple[StorePort, StorePort]:
    """Nothing calls this: mypy checks here that both adapters implement the port."""
    return store, pg
