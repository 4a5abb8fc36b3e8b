"""SQLite persistence (sqlite-utils): the file, its connections and its transactions.

Each thread keeps one connection per store: sqlite3 connections belong to the thread that
made them, and Streamlit runs every session in a thread of its own. Keeping it open keeps the
WAL in place, so a write transaction costs one fdatasync instead of the checkpoint and WAL
removal that closing the last connection does. Every state change and its audit row are
written in one ``BEGIN IMMEDIATE`` transaction; AWS is never called inside one.
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from mesh import auditchain, files
from mesh.errors import InvalidInput, SettingError, StorageError
from mesh.store.base import StoreBase
from mesh.store.migrations import _AUDIT_IS_APPEND_ONLY, AUDIT_CHAIN, migrations
from mesh.store.rows import AUDIT_COLUMNS

BUSY_TIMEOUT = 30.0
"""Seconds a connection waits for another process's write lock before giving up."""


def key_file_beside(db: str | Path) -> Callable[[], str]:
    """The demo's audit key: the private file ``audit-key`` beside the database at ``db``,
    made on first use."""

    def find() -> str:
        from mesh.links import load_or_create_secret

        return load_or_create_secret(Path(db).parent / "audit-key")

    return find


def _key_beside_by_default() -> bool:
    """mesh.store.KEY_FILE_BESIDE_BY_DEFAULT, read when the key is first needed (the test
    suite sets it on the package)."""
    import mesh.store

    return mesh.store.KEY_FILE_BESIDE_BY_DEFAULT


class SqliteStore(StoreBase):
    """The SQLite file: its connections per thread, transactions, checks and backups."""

    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = BUSY_TIMEOUT,
        audit_key: str | Callable[[], str] | None = None,
        key_file_beside: bool = False,
    ) -> None:
        self.path = Path(path)
        self._key_beside = key_file_beside
        self.busy_timeout = busy_timeout
        self._local = threading.local()  # this thread's _Held connection to this store
        self._audit_key = auditchain.key_bytes(audit_key) if isinstance(audit_key, str) else None
        self._find_key = audit_key if callable(audit_key) else None

    @property
    def audit_key(self) -> bytes:
        """The key of the audit chain, read on first use (a store never written or verified
        never asks for it).

        ``audit_key`` is MESH_AUDIT_KEY, or a function that finds it (services.audit_key:
        the setting, else, in demo mode only, the private file beside MESH_DB; aws mode
        refuses to start without the setting). A store made without one has no key, and
        raises SettingError here, unless its maker asked for the key file beside the
        database (``key_file_beside``, as the demo, the tests and the benchmarks do): that
        file is readable by whoever can write the database, so it never protects aws mode.
        """
        if self._audit_key is None:
            if self._find_key is not None:
                secret = self._find_key()
            elif self._key_beside or _key_beside_by_default():
                secret = key_file_beside(self.path)()
            else:
                raise SettingError(
                    f"The store {self.path} was opened without the audit chain's key: set "
                    "MESH_AUDIT_KEY (see the README's settings)."
                )
            self._audit_key = auditchain.key_bytes(secret)
        return self._audit_key

    def describe(self) -> str:
        return str(self.path)

    def close(self) -> None:
        """Close this thread's connection; the next operation opens a new one."""
        held: _Held | None = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None and held.pid == os.getpid():
            held.db.conn.close()

    def migrate(self, *, create: bool = True) -> list[str]:
        """Apply pending named migrations, and return the names of those applied now.

        One process at a time: the check and the migrations share one ``BEGIN IMMEDIATE``
        transaction, so processes starting together on a fresh file wait for each other and
        each later one finds the work done. With ``create=False`` (aws mode) a missing or
        empty file is refused: a store that was deleted must be restored from a backup or
        made again on purpose (``mesh init``), never replaced by an empty one unnoticed.
        """
        self._check_path(create=create)
        try:
            with self._connect(create=create, writing=True, cached=False) as db:
                if not create:  # before the journal mode is set, which writes to an empty file
                    self._check_is_mesh_store(db, create=False)
                self._retry_busy(db.conn, "PRAGMA journal_mode=WAL")
                self._retry_busy(db.conn, "BEGIN IMMEDIATE")
                try:
                    self._check_is_mesh_store(db, create=create)
                    pending = [migration.name for migration in migrations.pending(db)]
                    migrations.apply(db)
                    if AUDIT_CHAIN in pending:
                        self._chain_existing(db)
                except BaseException:
                    _rollback(db)
                    raise
                db.execute("COMMIT")
            files.tighten_database(self.path)  # -wal and -shm made before 0600 was the rule
        except StorageError as exc:
            if _error_code(exc.__cause__) in _NOT_A_FILE_CODES:
                raise SettingError(
                    f"MESH_DB points at {self.path}, which cannot be used as a SQLite file "
                    f"({exc.__cause__}); set MESH_DB to the path of a writable SQLite file."
                ) from exc
            raise
        return pending

    def _chain_existing(self, db: sqlite_utils.Database) -> None:
        """Chain the rows written before the chain existed, once, as migration 0013 runs.

        The update trigger is lifted for this one statement of the migration's transaction
        and put back before it commits; later, a row without a chain is a break.
        """
        rows = db.execute(f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit ORDER BY id").fetchall()
        if not rows:
            return
        key, prev, chains = self.audit_key, auditchain.GENESIS, []
        for row in rows:
            prev = auditchain.row_mac(key, prev, row)
            chains.append((prev, row[0]))
        db.execute("DROP TRIGGER audit_no_update")
        db.conn.executemany("UPDATE audit SET chain = ? WHERE id = ?", chains)
        db.execute(
            "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
            f"BEGIN SELECT RAISE(ABORT, '{_AUDIT_IS_APPEND_ONLY}'); END"
        )

    def _check_path(self, *, create: bool) -> None:
        if self.path.is_dir():
            raise SettingError(
                f"MESH_DB points at {self.path}, which is a folder; set MESH_DB to the path "
                "of a SQLite file."
            )
        if not create and not self.path.exists():
            raise SettingError(
                f"MESH_DB points at {self.path}, where there is no database; run "
                "`python -m mesh init` to create it, or restore a backup there (see "
                "`python -m mesh backup`)."
            )
        if create:
            try:
                # 0700 and 0600 whatever the umask: sessions, reasons and live links live here
                files.private_dir(self.path.parent)
                files.private_file(self.path)
            except OSError as exc:
                raise SettingError(
                    f"MESH_DB points at {self.path}, whose folder cannot be created "
                    f"({exc.strerror}); set MESH_DB to the path of a writable file."
                ) from exc

    def _check_is_mesh_store(self, db: sqlite_utils.Database, *, create: bool) -> None:
        """Refuse a file that Mesh has never migrated, unless it is empty and may be made."""
        if migrations.applied(db):
            return
        if db.table_names():
            raise SettingError(
                f"MESH_DB points at {self.path}, a SQLite file that is not a Mesh store (it "
                "holds other tables); set MESH_DB to another file."
            )
        if not create:
            raise SettingError(
                f"MESH_DB points at {self.path}, an empty file that is not a Mesh store yet; "
                "run `python -m mesh init` to set it up, or restore a backup over it (see "
                "`python -m mesh backup`)."
            )

    def backup(self, target: str | Path, *, force: bool = False) -> dict[str, int]:
        """Copy the store to ``target`` with SQLite's online backup API; return row counts.

        The copy is consistent while other processes keep writing (it is one read
        transaction), and is written beside ``target`` first and renamed into place, so a
        failed backup never leaves half a file where a good one was. The copy is a single
        file (rollback journal, not WAL), ready to be copied over MESH_DB to restore it.
        """
        target = Path(target)
        self._check_path(create=False)
        if target.is_dir():
            raise InvalidInput(f"{target} is a folder; give the path of the backup file.")
        if target.exists() and target.resolve() == self.path.resolve():
            raise InvalidInput(f"{target} is MESH_DB itself; give another path for the backup.")
        if target.exists() and not force:
            raise InvalidInput(
                f"{target} already exists; choose another path, or pass --force to replace it."
            )
        try:
            fd, partial = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
            )
        except OSError as exc:
            raise StorageError(
                f"The backup {target} could not be written ({exc.strerror})."
            ) from exc
        os.close(fd)  # mkstemp made it 0600, whatever the umask: a backup is as secret as MESH_DB
        try:
            counts = self._backup_into(Path(partial), target=target)
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)
        return counts

    def _backup_into(self, partial: Path, *, target: Path) -> dict[str, int]:
        with self._connect() as db:
            self._check_is_mesh_store(db, create=False)
            copy = sqlite3.connect(partial, isolation_level=None)
            try:
                db.conn.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")
                (check,) = copy.execute("PRAGMA quick_check").fetchone()
                if check != "ok":
                    raise StorageError(f"The backup {target} failed its check: {check}.")
                return {
                    table: copy.execute(f"SELECT COUNT(*) FROM [{table}]").fetchone()[0]
                    for table in ("requests", "audit")
                }
            except sqlite3.Error as exc:
                raise StorageError(f"The backup {target} could not be written: {exc}.") from exc
            finally:
                copy.close()

    @contextmanager
    def _connect(
        self, *, create: bool = False, writing: bool = False, cached: bool = True
    ) -> Iterator[sqlite_utils.Database]:
        """This thread's connection to the existing file (never a new file, unless ``create``).

        A failure of the file itself (locked past the busy timeout, read-only, full, gone)
        becomes a StorageError that names MESH_DB and the cause, and drops the connection; a
        constraint failure or a mistake in SQL passes through unchanged. ``cached=False``
        opens a connection for this one use (migrate, which may create the file).
        """
        db = self._held_connection() if cached else None
        if db is None:
            # Before opening: a file replaced in between only costs a needless reopen later.
            file_id = _file_id(self.path)
            db = self._open(create=create, writing=writing)
            if cached:
                self._local.held = _Held(db=db, file_id=file_id, pid=os.getpid())
        try:
            yield db
        except sqlite3.DatabaseError as exc:
            if not _is_storage_failure(exc):
                raise
            if cached:
                self.close()
            raise self._storage_error(exc, writing=writing) from exc
        finally:
            if not cached:
                db.conn.close()

    def _held_connection(self) -> sqlite_utils.Database | None:
        """This thread's open connection, if it still reaches the file at MESH_DB.

        A file deleted or replaced while Mesh runs lives on for a connection that has it open,
        so each use compares the file's identity with the one opened: if it changed, the
        connection is dropped and a new one opens the path again, which fails as a
        missing file (mode=rw) or as a file without Mesh's tables.
        """
        held: _Held | None = getattr(self._local, "held", None)
        if held is None:
            return None
        if held.pid != os.getpid():  # forked: never use nor close the parent's connection
            _ABANDONED.append(held)
            self._local.held = None
            return None
        if held.file_id is None or held.file_id != _file_id(self.path):
            self.close()
            return None
        if held.db.conn.in_transaction:  # left open by an interrupted operation
            _rollback(held.db)
        return held.db

    def _open(self, *, create: bool, writing: bool) -> sqlite_utils.Database:
        # mode=rw: a file deleted while Mesh runs is an error, not an empty new database.
        mode = "rwc" if create else "rw"
        uri = f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode={mode}"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._storage_error(exc, writing=writing) from exc
        try:
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if not _is_storage_failure(exc):
                raise
            raise self._storage_error(exc, writing=writing) from exc
        return sqlite_utils.Database(conn)

    @contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction that takes the write lock up front (no upgrade deadlocks)."""
        with self._connect(writing=True) as db:
            self._retry_busy(db.conn, "BEGIN IMMEDIATE")
            try:
                # sqlite-utils creates a missing table on insert: a file emptied under a
                # running Mesh must fail here ("no such table"), not fill up anew.
                db.execute("SELECT 1 FROM _sqlite_migrations LIMIT 0")
                yield db
            except BaseException:
                _rollback(db)
                raise
            db.execute("COMMIT")

    def _retry_busy(self, conn: sqlite3.Connection, statement: str) -> None:
        """Run ``statement``, trying again while the file is busy, within the busy timeout.

        SQLite does not always wait in its busy handler: changing the journal mode of a
        fresh file that another process is setting up, or beginning while another
        connection recovers the WAL, fails at once with "database is locked".
        """
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.005
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            conn.execute(f"PRAGMA busy_timeout={int(remaining * 1000)}")
            try:
                conn.execute(statement)
                break
            except sqlite3.OperationalError as exc:
                if _error_code(exc) not in _BUSY_CODES or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.1)
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")

    def _storage_error(self, exc: sqlite3.Error, *, writing: bool) -> StorageError:
        where = f"The store MESH_DB ({self.path})"
        cause = str(exc)
        if not self.path.exists():
            message = (
                f"{where} is missing: it was deleted or moved while Mesh was running; stop "
                "Mesh, then restore a backup there or run `python -m mesh init`."
            )
        elif "no such table" in cause:
            message = (
                f"{where} has lost its tables ({cause}): it was replaced while Mesh was "
                "running; stop Mesh, then restore a backup there."
            )
        elif _error_code(exc) in _BUSY_CODES:
            message = (
                f"{where} stayed locked by another process for more than "
                f"{self.busy_timeout:g} seconds ({cause}); try again."
            )
        else:
            message = f"{where} could not be {'written' if writing else 'read'}: {cause}."
        return StorageError(message)


@dataclass(frozen=True, kw_only=True)
class _Held:
    """A thread's open connection, and the file and process it was opened in."""

    db: sqlite_utils.Database
    file_id: tuple[int, int] | None
    pid: int


# Connections a forked child inherited: closing one could checkpoint and remove the WAL
# under its parent, so they are kept, unused, until the child exits.
_ABANDONED: list[_Held] = []


def _file_id(path: Path) -> tuple[int, int] | None:
    """The device and inode of the file at ``path``, or None when there is none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
# At start, these mean MESH_DB names something that is not a usable SQLite file.
_NOT_A_FILE_CODES = {sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOTADB}
# Failures of the file, not of the SQL: busy, read-only, I/O, corrupt, full, gone.
_STORAGE_CODES = (
    _BUSY_CODES
    | _NOT_A_FILE_CODES
    | {
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_PROTOCOL,
    }
)


def _error_code(exc: BaseException | None) -> int | None:
    """SQLite's primary result code for ``exc``, or None when SQLite did not raise it."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _is_storage_failure(exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` is about the file (lock, disk, permissions, gone), not the SQL."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
        return False
    if "no such table" in str(exc):  # the file was replaced by an empty one
        return True
    code = _error_code(exc)
    # An error raised without a SQLite code (a stand-in in tests, a wrapper) is judged
    # by its class: OperationalError is SQLite's class for failures of the database.
    return code in _STORAGE_CODES if code is not None else True


def _rollback(db: sqlite_utils.Database) -> None:
    """Roll back if a transaction is still open, never hiding the failure that led here."""
    if db.conn.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # closing the connection rolls back too
