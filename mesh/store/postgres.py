"""PostgreSQL persistence (psycopg 3 with a connection pool), for several replicas.

``MESH_DB=postgresql://...`` selects it; credentials come from the URL, libpq's standard
``PG*`` variables or its password file (``PGPASSFILE``), and TLS settings (``sslmode``,
``sslrootcert``...) pass through in the URL. The parts of the store are the SQLite
adapter's, over ``PgDb`` (mesh/store/db.py).

Writers are serialised as SQLite serialises them: each write transaction first takes one
transaction-scoped advisory lock. Two replicas' conditional updates therefore never
interleave (a decision happens once), and the audit chain's appends never fork. A write
is a few milliseconds, so one lock is not what limits an approval service.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from mesh import auditchain
from mesh.errors import InvalidInput, SettingError, StorageError
from mesh.store.base import StoreBase
from mesh.store.db import PgDb
from mesh.store.pg_schema import migrations

POOL_SIZE = 10
"""Connections one process keeps at most (Streamlit runs each browser session in a thread)."""
CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a free connection, or for the server, before giving up."""
# pg_advisory_xact_lock keys: one for every write, one for migrations.
_WRITE_LOCK = 0x6D657368  # "mesh"
_MIGRATE_LOCK = 0x6D696772  # "migr"


def is_url(value: str | os.PathLike[str]) -> bool:
    return str(value).startswith(("postgresql://", "postgres://"))


def safe_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(an unreadable URL)"
    host, port, name = parts.get("host", ""), parts.get("port", ""), parts.get("dbname", "")
    user = parts.get("user")
    return f"postgresql://{f'{user}@' if user else ''}{host}{f':{port}' if port else ''}/{name}"


class PostgresStore(StoreBase):
    """A PostgreSQL database: a pool per process, serialised write transactions."""

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        audit_key: str | Callable[[], str] | None = None,
        pool_size: int = POOL_SIZE,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        try:
            conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            # libpq's reason may quote the URL, password and all: never repeat it
            raise SettingError(
                "MESH_DB is not a PostgreSQL URL that can be read; write it as "
                "postgresql://USER@HOST:PORT/DATABASE, with any special character in the "
                "user or password percent-encoded (see the README's settings)."
            ) from None
        self.url = url
        self.path = Path.cwd()
        self.pool_size, self.timeout = pool_size, timeout
        self._audit_key = auditchain.key_bytes(audit_key) if isinstance(audit_key, str) else None
        self._find_key = audit_key if callable(audit_key) else None
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()
        self._local = threading.local()  # this thread's write transaction, while one is open

    @property
    def audit_key(self) -> bytes:
        if self._audit_key is None:
            if self._find_key is None:
                raise SettingError(
                    f"The store {self.describe()} was opened without the audit chain's key: "
                    "set MESH_AUDIT_KEY (see the README's settings)."
                )
            self._audit_key = auditchain.key_bytes(self._find_key())
        return self._audit_key

    def describe(self) -> str:
        return safe_url(self.url)

    def _options(self) -> dict[str, Any]:
        """How each connection is made: the defaults the URL does not set itself."""
        given = conninfo_to_dict(self.url)
        return _CONNECTION | {k: v for k, v in _DEFAULTS.items() if k not in given}

    def close(self) -> None:
        """Close this process's pool; the next operation opens a new one."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.close()

    # Connections -----------------------------------------------------------------------

    def _the_pool(self) -> psycopg_pool.ConnectionPool[Any]:
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():  # new, or forked
                self._pool = psycopg_pool.ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=self.timeout,
                    kwargs=self._options(),
                    check=psycopg_pool.ConnectionPool.check_connection,
                    open=False,
                    name="mesh",
                )
                self._pool_pid = os.getpid()
                self._pool.open(wait=False)
            return self._pool

    @contextmanager
    def _connect(
        self, *, create: bool = False, writing: bool = False, cached: bool = True
    ) -> Iterator[PgDb]:
        """A pooled connection in autocommit (``cached=False``: one of its own, in a
        read-only transaction, whose reads stream through a server-side cursor)."""
        writing_now: PgDb | None = getattr(self._local, "db", None)
        if cached and writing_now is not None:
            # inside this thread's write transaction: read what it wrote, as SQLite's one
            # connection per thread does, and never wait on a second pooled connection
            yield writing_now
            return
        try:
            if cached:
                with self._the_pool().connection() as conn:
                    yield PgDb(conn)
            else:
                with psycopg.connect(self.url, **self._options()) as conn:
                    with conn.transaction():
                        conn.execute("SET TRANSACTION READ ONLY, ISOLATION LEVEL REPEATABLE READ")
                        yield PgDb(conn, stream=True)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            if not _is_storage_failure(exc):
                raise
            raise self._storage_error(exc, writing=writing) from exc

    @contextmanager
    def _write(self) -> Iterator[PgDb]:
        if getattr(self._local, "db", None) is not None:
            raise RuntimeError("a write transaction inside another: it would wait on itself")
        with self._connect(writing=True) as db:
            with db.conn.transaction():
                # as SQLite's busy timeout: a lock held too long is an error, not a hang
                db.conn.execute(f"SET LOCAL lock_timeout = '{int(self.timeout * 3000)}ms'")
                db.conn.execute("SELECT pg_advisory_xact_lock(%s)", [_WRITE_LOCK])
                self._local.db = db
                try:
                    yield db
                finally:
                    self._local.db = None

    def _storage_error(self, exc: BaseException, *, writing: bool) -> StorageError:
        where = f"The store MESH_DB ({self.describe()})"
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, psycopg.errors.UndefinedTable):
            return StorageError(
                f"{where} has lost its tables ({cause}): run `python -m mesh init` against "
                "it, or restore a backup (pg_dump) into it."
            )
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return StorageError(
                f"{where} stayed locked by another writer for more than "
                f"{self.timeout * 3:g} seconds ({cause}); try again."
            )
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return StorageError(
                f"{where} refused this database role a right it needs ({cause}): run "
                "`python -m mesh init --app-role ROLE` as the tables' owner, ROLE being the "
                "login in MESH_DB."
            )
        if isinstance(exc, psycopg_pool.PoolTimeout):
            # the pool cannot tell an unreachable server from its connections all in use,
            # nor from its own backoff after a restart: one connection of our own can
            try:
                psycopg.connect(self.url, **self._options()).close()
            except psycopg.Error as probe:
                return self._unreachable(where, probe)
            if self._pool is not None:
                self._pool.check()  # drop the connections a restarted server broke, refill
            return StorageError(
                f"{where} answers, but this process had no working connection to it within "
                f"{self.timeout:g} seconds (all {self.pool_size} in use, or the server has "
                "just restarted and they are being made again); try again."
            )
        if isinstance(exc, psycopg.OperationalError):
            return self._unreachable(where, exc)
        return StorageError(f"{where} could not be {'written' if writing else 'read'}: {cause}.")

    def _unreachable(self, where: str, exc: BaseException) -> StorageError:
        lines = str(exc).strip().splitlines()
        cause = lines[0] if lines else type(exc).__name__
        if "authentication failed" in cause or "no password supplied" in cause:
            return StorageError(
                f"{where} refused the sign-in ({cause}): check the user and password in "
                "MESH_DB, PGPASSWORD or the password file (PGPASSFILE)."
            )
        if "does not exist" in cause and "database" in cause:
            return StorageError(
                f"{where} names a database the server does not have ({cause}): create it "
                "(CREATE DATABASE ...), then run `python -m mesh init`."
            )
        return StorageError(
            f"{where} could not be reached within {self.timeout:g} seconds ({cause}); "
            "check that the server is up and that MESH_DB names it, then try again."
        )

    # Migrations, backup ----------------------------------------------------------------

    def migrate(self, *, create: bool = True) -> list[str]:
        """Apply pending named migrations once, whatever the number of replicas starting.

        The check and the migrations share one transaction holding an advisory lock, so
        replicas starting together wait for each other and each later one finds the work
        done. With ``create=False`` (aws mode) a database without Mesh's tables is refused:
        it must be set up on purpose (``mesh init``), never filled unnoticed.
        """
        try:
            with psycopg.connect(self.url, **self._options()) as conn:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATE_LOCK])
                    applied = self._applied(conn, create=create)
                    pending = [name for name, _ in migrations() if name not in applied]
                    for name, statements in migrations():
                        if name in applied:
                            continue
                        for statement in statements:
                            conn.execute(statement)  # type: ignore[call-overload]
                        conn.execute(
                            "INSERT INTO _mesh_migrations (name, applied_at) VALUES (%s, now())",
                            [name],
                        )
                    if pending:  # tables new since an app role was granted: grant them too
                        for (role,) in conn.execute("SELECT role FROM _mesh_app_roles").fetchall():
                            _grant(conn, role)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            if not _is_storage_failure(exc):
                raise
            raise self._storage_error(exc, writing=True) from exc
        return pending

    def _applied(self, conn: psycopg.Connection[Any], *, create: bool) -> set[str]:
        found = conn.execute("SELECT to_regclass('_mesh_migrations')").fetchone()
        if found is not None and found[0] is not None:
            return {name for (name,) in conn.execute("SELECT name FROM _mesh_migrations")}
        if not create:
            raise SettingError(
                f"MESH_DB names {self.describe()}, a database that is not a Mesh store yet; "
                "run `python -m mesh init` to set it up, or restore a backup into it."
            )
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchone()
        if tables is not None and tables[0]:
            raise SettingError(
                f"MESH_DB names {self.describe()}, a database that is not a Mesh store (its "
                "schema holds other tables); give Mesh a database or schema of its own."
            )
        conn.execute(
            "CREATE TABLE _mesh_migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ)"
        )
        conn.execute("CREATE TABLE _mesh_app_roles (role TEXT PRIMARY KEY)")
        return set()

    def grant_app_role(self, role: str) -> None:
        """Let the database role ``role`` run the app, and no more than that.

        Run by the tables' owner (``mesh init --app-role``). The app role may read and write
        every table but may only read and append to the append-only ones: it cannot UPDATE,
        DELETE or TRUNCATE them, nor drop or disable their triggers (only an owner may), so
        the audit log is append-only even for someone holding the app's own credentials.
        """
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", role):
            raise InvalidInput(f"{role!r} is not a plain PostgreSQL role name.")
        try:
            with psycopg.connect(self.url, **self._options()) as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATE_LOCK])
                _grant(conn, role)
                conn.execute(
                    "INSERT INTO _mesh_app_roles (role) VALUES (%s) ON CONFLICT DO NOTHING", [role]
                )
        except psycopg.errors.UndefinedObject as exc:
            raise InvalidInput(
                f"There is no role {role} on {self.describe()}: create it first "
                f"(CREATE ROLE {role} LOGIN PASSWORD '...')."
            ) from exc

    def backup(self, target: str | Path, *, force: bool = False) -> dict[str, int]:
        raise InvalidInput(
            f"MESH_DB is PostgreSQL ({self.describe()}): back it up with pg_dump (or the "
            "managed service's snapshots); `mesh backup` copies SQLite files."
        )


APPEND_ONLY = ("audit", "audit_checkpoints", "reconcile_reports")
"""Tables the app role may only read and append to (grant_app_role)."""
READ_ONLY = ("_mesh_migrations", "_mesh_app_roles")
"""Tables the app role may only read: the owner's record of its migrations and grants."""


def _grant(conn: psycopg.Connection[Any], role: str) -> None:
    """Grant ``role`` the app's rights on every table there is now."""
    name, schema = sql.Identifier(role), sql.Identifier(_schema(conn))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, name))
    listed = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    for (table,) in listed.fetchall():
        rights = (
            "SELECT"
            if table in READ_ONLY
            else "SELECT, INSERT"
            if table in APPEND_ONLY
            else "SELECT, INSERT, UPDATE, DELETE"
        )
        conn.execute(
            sql.SQL("GRANT " + rights + " ON {} TO {}").format(sql.Identifier(table), name)
        )
    conn.execute(
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(schema, name)
    )


def _schema(conn: psycopg.Connection[Any]) -> str:
    found = conn.execute("SELECT current_schema()").fetchone()
    if found is None or found[0] is None:
        raise SettingError("The PostgreSQL connection has no current schema (search_path).")
    return str(found[0])


_CONNECTION: dict[str, Any] = {
    "autocommit": True,
    "cursor_factory": psycopg.ClientCursor,  # binds as SQLite does: values, not typed params
}
# libpq settings the URL may set itself; else these. Keepalives notice a server (or a
# network path) gone silent; a transaction left idle by a frozen replica is ended by the
# server, so it cannot hold the write lock for the whole cluster.
_DEFAULTS: dict[str, Any] = {
    "connect_timeout": int(CONNECT_TIMEOUT),
    "application_name": "mesh-marketplace",
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "options": "-c idle_in_transaction_session_timeout=60000",
}


def _is_storage_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is about reaching or keeping the database, not about the SQL."""
    if isinstance(exc, psycopg.IntegrityError):
        return False
    return isinstance(
        exc,
        psycopg_pool.PoolTimeout
        | psycopg.OperationalError
        | psycopg.errors.UndefinedTable
        | psycopg.errors.InsufficientResources
        | psycopg.errors.ReadOnlySqlTransaction
        | psycopg.errors.InsufficientPrivilege,
    )
