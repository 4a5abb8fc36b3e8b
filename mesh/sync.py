"""Use case: sync the catalog index from Glue, and judge it again when the policy changes.

Only this (run by `mesh sync`, `tick` and the demo's background job) reads the whole
catalog; pages read the index. Glue is paged 100 at a time, the tables of several databases
are read at once, and they are written a batch of databases per transaction, so the memory
a sync needs does not grow with the catalog, and requests are never locked out for long.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Protocol

from mesh.catalog_index import CatalogIndex, Counts, SyncRecord
from mesh.errors import MeshError, NotFound
from mesh.models import Database, Table

log = logging.getLogger(__name__)

READERS = 8
BATCH = 25  # databases per write transaction
_ids = itertools.count()


class FullCatalog(Protocol):
    """What a sync reads: the Glue adapter (mesh/catalog.py)."""

    def databases(self) -> list[Database]: ...
    def tables_with_times(self, database: str) -> list[tuple[Table, str | None]]: ...


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


class CatalogSync:
    """Read Glue in full and bring the index in line: add, change, remove; record the run."""

    def __init__(
        self,
        catalog: FullCatalog,
        index: CatalogIndex,
        *,
        clock: Callable[[], datetime],
        readers: int = READERS,
        batch: int = BATCH,
        glue_client: Any = None,
    ) -> None:
        self.catalog = catalog
        self.index = index
        self.clock = clock
        self.readers = readers
        self.batch = batch
        self._glue = glue_client  # only to count this sync's calls (botocore events)

    def run(self, *, actor: str) -> SyncRecord:
        """One full sync; a failure is recorded in the run (``error``), never half-removes."""
        started = self.clock()
        sync_id = self.index.start_sync(actor=actor, at=_iso(started))
        prefix = f"mesh-sync-{next(_ids)}"
        calls = _CallCounter(self._glue, prefix)
        began = time.perf_counter()
        counts = Counts()
        error: str | None = None
        try:
            with calls, ThreadPoolExecutor(self.readers, thread_name_prefix=prefix) as pool:
                self._sync(pool, counts, at=_iso(started))
            self.index.set_fingerprint()
        except MeshError as exc:
            error = exc.message
        except Exception:  # logged in full (masked); admins see a sentence on the run
            log.exception("catalog sync failed")
            error = "an unexpected error stopped the sync; the details are in the server log"
        return self.index.finish_sync(
            sync_id,
            at=_iso(self.clock()),
            duration_ms=int((time.perf_counter() - began) * 1000),
            counts=counts,
            glue_calls=calls.count,
            error=error,
        )

    def _sync(self, pool: ThreadPoolExecutor, counts: Counts, *, at: str) -> None:
        databases = pool.submit(self.catalog.databases).result()
        batches = [databases[i : i + self.batch] for i in range(0, len(databases), self.batch)]
        seen = {d.name for d in databases}
        # Read the next batch's tables while this one is judged and written.
        pending = self._read(pool, batches[0]) if batches else []
        for number in range(len(batches)):
            current = pending
            pending = self._read(pool, batches[number + 1]) if number + 1 < len(batches) else []
            read = []
            for database, future in current:
                try:
                    read.append((database, future.result()))
                except NotFound:  # dropped after the listing: removed below
                    seen.discard(database.name)
            counts.add(self.index.put(read, at=at))
        counts.removed += self.index.remove_except(seen)

    def _read(
        self, pool: ThreadPoolExecutor, batch: Sequence[Database]
    ) -> list[tuple[Database, Future[list[tuple[Table, str | None]]]]]:
        return [(d, pool.submit(self.catalog.tables_with_times, d.name)) for d in batch]

    def due(self, minutes: int) -> bool:
        """True when no sync has succeeded within the last ``minutes``."""
        last = self.index.last_sync()
        if last is None or last.finished_at is None:
            return True
        finished = datetime.fromisoformat(last.finished_at.replace("Z", "+00:00"))
        return self.clock() - finished >= timedelta(minutes=minutes)

    def ensure_judged(self) -> int:
        """Judge the index again (no Glue read) when it was judged under another policy."""
        judged_with = self.index.judged_with()
        if judged_with is None or judged_with == self.index.fingerprint:
            return 0
        log.info(
            "policy changed (%s -> %s): judging the catalog index again",
            judged_with,
            self.index.fingerprint,
        )
        return self.index.rejudge(at=_iso(self.clock()))


class _CallCounter:
    """Count the Glue calls made by this sync's threads (a botocore before-parameter-build hook)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.count = 0
        self._lock = threading.Lock()

    def _hook(self, **_: Any) -> None:
        if threading.current_thread().name.startswith(self.prefix):
            with self._lock:
                self.count += 1

    def __enter__(self) -> _CallCounter:
        if self.client is not None:
            self.client.meta.events.register(
                "before-parameter-build.glue", self._hook, unique_id=self.prefix
            )
        return self

    def __exit__(self, *_: object) -> None:
        if self.client is not None:
            self.client.meta.events.unregister("before-parameter-build.glue", unique_id=self.prefix)
