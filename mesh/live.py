"""Where the use cases learn a product's owner and scope: Glue live for writes, the index for reads.

Submit, each decision, retry and revoke read the scope they act on from Glue (GetDatabase,
plus GetTable or GetTables) and put what they read into the catalog index: when the index had
differed, the live read wins, and the caller hears what had changed. One action reads each
distinct database once, however many of its requests it decides. Reads (queues, lists, one
request's page) never call Glue: they take the owner from the index, else from the request.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from mesh.catalog_index import CatalogIndex
from mesh.errors import MeshError, NotFound
from mesh.models import AccessRequest, Database, Table
from mesh.ports import Catalog

log = logging.getLogger(__name__)

GLUE_PAGE = 100  # tables a GetTables call returns (the adapter pages at this size)


class Owners(Protocol):
    def owner(self, request: AccessRequest) -> str | None: ...


class KnownOwners:
    """Owners as the catalog index says, else as stored on the request: no Glue call.

    The same rule as the store's queues (``coalesce`` of the two), so a list and its
    pages agree; a decision reads the owner from Glue again.
    """

    def __init__(self, index: CatalogIndex | None) -> None:
        self.index = index
        self._known: dict[str, str | None] = {}

    def owner(self, request: AccessRequest) -> str | None:
        if request.database not in self._known:
            found = self.index.database(request.database) if self.index else None
            self._known[request.database] = found.owner_account if found else None
        return self._known[request.database] or request.owner_account


class LiveScopes:
    """Glue read live for the scopes of one action, each read once, refreshing the index.

    ``requests`` are those the action will decide (a bulk decision names them all up front,
    so the tables of one database are read together). Without a synced index there is
    nothing to refresh and only the databases are read.
    """

    def __init__(
        self,
        catalog: Catalog,
        index: CatalogIndex | None,
        *,
        now: Callable[[], str],
        requests: Iterable[AccessRequest] = (),
    ) -> None:
        self.catalog = catalog
        self.index = index if index is not None and index.judged_with() is not None else None
        self.now = now
        self.changed: list[str] = []
        self._wanted: dict[str, set[str | None]] = {}
        for request in requests:
            self._wanted.setdefault(request.database, set()).add(request.table)
        self._read: dict[tuple[str, ...], Any] = {}  # each Glue answer, or its MeshError
        self._refreshed: set[tuple[str, str | None]] = set()

    def read(self, database: str, table: str | None) -> tuple[Database, list[Table]]:
        """Read one scope from Glue (the one table, or every table) and refresh the index.

        A missing database or table raises ``NotFound``: submit refuses what is not there.
        """
        found = self._database(database)
        tables = [self._table(database, table)] if table else self._tables(database)
        self._refresh(found, tables, whole=table is None)
        return found, tables

    def owner(self, request: AccessRequest) -> str | None:
        """The product's owner as Glue says now (None: the database is gone).

        The first request of a database reads it, and the tables this action wants of it;
        the others reuse that read. A failure to read Glue refuses each of them alike.
        """
        wanted = self._wanted.setdefault(request.database, {request.table})
        try:
            found = self._database(request.database)
        except NotFound:
            self._forget(request.database)
            return None
        if self.index is not None:
            self._refresh_tables(found, wanted)
        return found.owner_account

    def _refresh_tables(self, database: Database, wanted: set[str | None]) -> None:
        """Read the wanted tables (GetTables when cheaper than a GetTable each); refresh them.

        Only the owner decides; a table that is gone, or Glue failing here, leaves the
        index as it was (the grant says what is missing, the next sync catches up).
        """
        names = sorted(t for t in wanted if t is not None)
        try:
            if None in wanted or (len(names) > 1 and len(names) >= self._pages(database.name)):
                self._refresh(database, self._tables(database.name), whole=True)
                return
            for name in names:
                try:
                    self._refresh(database, [self._table(database.name, name)], whole=False)
                except NotFound:
                    continue
        except MeshError:
            log.warning("could not read the tables of %s to refresh the index", database.name)

    def _pages(self, database: str) -> int:
        """GetTables calls a read of every table takes, as far as the index knows."""
        known = len(self.index.table_names(database)) if self.index else 0
        return max(1, math.ceil(known / GLUE_PAGE))

    def _database(self, name: str) -> Database:
        found: Database = self._once(("database", name), lambda: self.catalog.database(name))
        return found

    def _tables(self, database: str) -> list[Table]:
        found: list[Table] = self._once(("tables", database), lambda: self.catalog.tables(database))
        return found

    def _table(self, database: str, name: str) -> Table:
        every = self._read.get(("tables", database))
        if isinstance(every, list):  # read whole already: no GetTable for one of them
            known: list[Table] = [table for table in every if table.name == name]
            if known:
                return known[0]
        found: Table = self._once(
            ("table", database, name), lambda: self.catalog.table(database, name)
        )
        return found

    def _once(self, key: tuple[str, ...], call: Callable[[], Any]) -> Any:
        if key not in self._read:
            try:
                self._read[key] = call()
            except MeshError as exc:
                self._read[key] = exc
        answer = self._read[key]
        if isinstance(answer, MeshError):
            raise answer
        return answer

    def _refresh(self, database: Database, tables: Sequence[Table], *, whole: bool) -> None:
        """Put a live read of one scope into the index, once; note what it changed there.

        The live read has decided already; a failure to write the index is only logged.
        """
        scope = (database.name, None if whole else tables[0].name)
        if self.index is None or scope in self._refreshed:
            return
        self._refreshed.add(scope)
        try:
            self.changed += self.index.refresh_scope(database, tables, whole=whole, at=self.now())
        except Exception:  # the index catches up at the next sync
            log.exception("could not refresh the catalog index for %s", database.name)

    def _forget(self, name: str) -> None:
        """Drop from the index a database Glue no longer has."""
        if self.index is None or self.index.database(name) is None:
            return
        try:
            self.index.remove_database(name)
        except Exception:  # the index catches up at the next sync
            log.exception("could not remove %s from the catalog index", name)
            return
        self.changed.append(f"{name} is no longer in the catalog")

    def tell(self, listener: Callable[[str], None] | None, *, what: str) -> None:
        """Say how the index had differed from Glue, if it had and someone listens."""
        if self.changed and listener is not None:
            listener(
                f"The catalog had changed since it was last synced, and {what} on what Glue "
                "says now: " + "; ".join(dict.fromkeys(self.changed)) + "."
            )
