"""The store: requests, the append-only audit log, sessions, the outbox and the policy record.

``Store`` is the SQLite adapter, assembled from one part per concern over the file's
connection handling (mesh/store/sqlite.py). ``mesh.store.port.StorePort`` lists what the
use cases call, so that another database can implement the same; the contract tests
(tests/contract/) hold every adapter to it.
"""

from __future__ import annotations

from mesh.store.audit import AuditRecords, _audit_where
from mesh.store.migrations import AUDIT_CHAIN, migrations
from mesh.store.notices import NoticeRecords
from mesh.store.port import StorePort
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
from mesh.store.sqlite import BUSY_TIMEOUT, key_file_beside

__all__ = [
    "AUDIT_CHAIN",
    "AUDIT_COLUMNS",
    "BUSY_TIMEOUT",
    "KEY_FILE_BESIDE_BY_DEFAULT",
    "AlreadyApproved",
    "Approval",
    "AuditFilters",
    "AuditRow",
    "NewEvent",
    "PendingRow",
    "PolicyRecord",
    "SessionRow",
    "Store",
    "StorePort",
    "_audit_where",
    "_from_row",
    "_to_row",
    "key_file_beside",
    "migrations",
]

# The test suite sets this (tests/conftest.py): a store it makes without an audit key keeps
# one in a file beside its database. Nothing else may: see SqliteStore.audit_key.
KEY_FILE_BESIDE_BY_DEFAULT = False


class Store(QueueReads, AuditRecords, NoticeRecords, SessionRecords):
    """Requests, audit log, sessions, outbox and policy record in one SQLite file."""


def _implements_the_port(store: Store) -> StorePort:
    """Nothing calls this: mypy checks here that the SQLite adapter implements the port."""
    return store
