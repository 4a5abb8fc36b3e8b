"""Leases: a job that must run on one process of the cluster at a time holds one.

The periodic job (``mesh tick``) may run on several hosts at once (a duplicated schedule, a
slow pass overlapping the next). Its claims on requests and notices already make that
harmless; a whole catalog sync has no row to claim, so it takes a lease instead. A lease
ends when its holder releases it, or at ``until`` if the holder died.
"""

from __future__ import annotations

from mesh.store.base import StoreBase


class LeaseRecords(StoreBase):
    def claim_lease(self, name: str, *, holder: str, now: str, until: str) -> bool:
        """Take the lease ``name`` until ``until`` unless someone else holds it at ``now``."""
        with self._write() as db:
            row = db.execute("SELECT holder, until FROM leases WHERE name = ?", [name]).fetchone()
            if row is not None and row[0] != holder and row[1] > now:
                return False
            db["leases"].insert({"name": name, "holder": holder, "until": until}, replace=True)
            return True

    def release_lease(self, name: str, *, holder: str) -> None:
        """End the lease ``name`` if ``holder`` still holds it."""
        with self._write() as db:
            db.execute("UPDATE leases SET until = '' WHERE name = ? AND holder = ?", [name, holder])
