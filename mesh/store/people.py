"""The people known from single sign-on: each one's last ID-token claims.

A provider cannot be asked for its people, so the app learns them as they sign in. Kept in
the store, the directory is the same on every replica: a session opened on one replica is
resumed on another, and an approver who signed in anywhere counts everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mesh.store.base import StoreBase


class PeopleRecords(StoreBase):
    """Claims by user name: written at each sign-in, read on every action."""

    def remember_person(self, username: str, claims: Mapping[str, Any], *, at: str) -> None:
        """Keep ``claims`` as what ``username`` last signed in with."""
        with self._write() as db:
            db["people"].insert(
                {"username": username, "claims": json.dumps(dict(claims)), "seen_at": at},
                replace=True,
            )

    def person_claims(self, username: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute("SELECT claims FROM people WHERE username = ?", [username]).fetchone()
        return dict(json.loads(row[0])) if row else None

    def people_claims(self) -> list[dict[str, Any]]:
        """Everyone's claims, by user name."""
        with self._connect() as db:
            rows = db.execute("SELECT claims FROM people ORDER BY username").fetchall()
        return [dict(json.loads(claims)) for (claims,) in rows]
