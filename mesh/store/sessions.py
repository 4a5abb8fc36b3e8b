"""Sign-in sessions and sign-in throttling."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from mesh.store.base import StoreBase
from mesh.store.rows import NewEvent, SessionRow


class SessionRecords(StoreBase):
    """Sessions with their expiry, and failed sign-ins per subject."""

    # Sign-in sessions -------------------------------------------------------------------

    def open_session(
        self,
        token_id: str,
        username: str,
        *,
        at: str,
        expires_at: str | None = None,
        password_fp: str | None = None,
        client: str | None = None,
        events: Sequence[NewEvent] = (),
    ) -> None:
        """Record a session opened by a password sign-in, with its audit row."""
        with self._write() as db:
            db["sessions"].insert(  # type: ignore[union-attr]
                {
                    "token_id": token_id,
                    "username": username,
                    "created_at": at,
                    "revoked_at": None,
                    "expires_at": expires_at,
                    "last_seen_at": at,
                    "password_fp": password_fp,
                    "client": client,
                },
                replace=True,
            )
            self._append(db, events)

    def session(self, token_id: str) -> SessionRow | None:
        with self._connect() as db:
            rows = list(db.query("SELECT * FROM sessions WHERE token_id = ?", [token_id]))
        if not rows:
            return None
        row = rows[0]
        return SessionRow(
            token_id=row["token_id"],
            username=row["username"],
            created_at=row["created_at"],
            expires_at=row["expires_at"] or "",
            last_seen_at=row["last_seen_at"] or row["created_at"],
            password_fp=row["password_fp"] or "",
            revoked_at=row["revoked_at"] or "",
            ended_why=row["ended_why"] or "",
        )

    def touch_session(self, token_id: str, *, at: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE sessions SET last_seen_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                [at, token_id],
            )

    def end_session(
        self, token_id: str, *, at: str, why: str, events: Sequence[NewEvent] = ()
    ) -> None:
        """End a session (sign-out, expiry, a changed password), with its audit rows."""
        with self._write() as db:
            db.execute(
                "UPDATE sessions SET revoked_at = ?, ended_why = ? "
                "WHERE token_id = ? AND revoked_at IS NULL",
                [at, why, token_id],
            )
            self._append(db, events)

    # Sign-in throttling -----------------------------------------------------------------

    def claim_sign_in_attempt(
        self,
        limits: Mapping[str, int],
        *,
        at: str,
        forget_before: str,
        locked_until: str,
        locked_out: Callable[[], NewEvent],
    ) -> tuple[str | None, dict[str, int]]:
        """Count an attempt before its password is checked, in the transaction that reads
        the lockout, so that parallel attempts never get more checks than the limit.

        A subject locked at ``at`` refuses the attempt: it counts as refused, and only the
        first refusal of a lockout writes ``locked_out()`` to the audit log. Returns the end
        of the lockout (None when the attempt may go on) and each subject's count with this
        attempt; a subject that reaches its limit is locked until ``locked_until``.
        """
        with self._write() as db:
            marks = ", ".join("?" for _ in limits)
            rows = {
                row["subject"]: row
                for row in db.query(
                    f"SELECT * FROM sign_in_failures WHERE subject IN ({marks})", list(limits)
                )
            }
            locked = {s: r for s, r in rows.items() if r["locked_until"] and r["locked_until"] > at}
            if locked:
                first = any(not r["refused"] for r in locked.values())
                db.execute(
                    "UPDATE sign_in_failures SET refused = COALESCE(refused, 0) + 1 "
                    f"WHERE subject IN ({', '.join('?' for _ in locked)})",
                    list(locked),
                )
                if first:
                    self._append(db, [locked_out()])
                return max(r["locked_until"] for r in locked.values()), {}
            counts: dict[str, int] = {}
            for subject, limit in limits.items():
                old = rows.get(subject)
                stale = old is None or old["last_failed_at"] < forget_before or old["locked_until"]
                counts[subject] = 1 if stale or old is None else int(old["failures"]) + 1
                db["sign_in_failures"].insert(  # type: ignore[union-attr]
                    {
                        "subject": subject,
                        "failures": counts[subject],
                        "last_failed_at": at,
                        "locked_until": locked_until if counts[subject] >= limit else None,
                        "refused": 0,
                    },
                    replace=True,
                )
            return None, counts

    def release_sign_in_attempt(self, subject: str, *, limit: int) -> None:
        """Take back one counted attempt that succeeded (and the lockout it may have set)."""
        with self._write() as db:
            db.execute(
                "UPDATE sign_in_failures "
                "SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END, "
                "locked_until = CASE WHEN failures - 1 < ? THEN NULL ELSE locked_until END "
                "WHERE subject = ?",
                [limit, subject],
            )

    def note_refused_cookie(
        self, subject: str, *, at: str, window_ends: str, event: Callable[[int], NewEvent]
    ) -> bool:
        """Audit a refused cookie at most once per window per ``subject`` (a client address).

        The rest are counted in the subject's sign_in_failures row; the next audited row
        says, through ``event(count)``, how many went unaudited since the one before. True
        when this one was audited.
        """
        with self._write() as db:
            rows = list(db.query("SELECT * FROM sign_in_failures WHERE subject = ?", [subject]))
            old = rows[0] if rows else None
            if old is not None and old["locked_until"] and old["locked_until"] > at:
                db.execute(
                    "UPDATE sign_in_failures SET failures = failures + 1, last_failed_at = ? "
                    "WHERE subject = ?",
                    [at, subject],
                )
                return False
            unaudited = int(old["failures"]) - 1 if old is not None else 0
            db["sign_in_failures"].insert(  # type: ignore[union-attr]
                {"subject": subject, "failures": 1, "last_failed_at": at,
                 "locked_until": window_ends, "refused": 0},
                replace=True,
            )  # fmt: skip
            self._append(db, [event(unaudited)])
            return True

    def clear_sign_in_failures(self, subject: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM sign_in_failures WHERE subject = ?", [subject])

    def forget_sign_in_failures(self, *, at: str, forget_before: str) -> int:
        """Delete the counts that can no longer lock anyone out: no lockout in force at
        ``at`` and the last failure before ``forget_before``; return how many went.

        Without this the table keeps a row for every user name ever typed wrong.
        """
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM sign_in_failures WHERE last_failed_at < ? "
                "AND (locked_until IS NULL OR locked_until <= ?)",
                [forget_before, at],
            )
            return int(cursor.rowcount)
