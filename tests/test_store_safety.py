"""The store is never silently lost or mistaken: serialised first start, no silent re-creation,
storage failures that name MESH_DB and their cause, and backups made while the app runs."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty
from typing import Any

import pytest

from mesh.errors import InvalidInput, MeshError, SettingError, StorageError, failure_of
from mesh.settings import DEMO_USERS
from mesh.store import NewEvent, Store, migrations
from tests.support import (
    AUDIT_KEY,
    LINK_SECRET,
    Outcome,
    assert_one_sentence_on_stderr,
    environment_cli,
)

ALL_MIGRATIONS = [migration.name for migration in migrations._migrations]


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store file with every migration applied, to copy (migrating each time is slow)."""
    store = Store(tmp_path_factory.mktemp("template") / "mesh.db")
    store.migrate()
    return store.path


@pytest.fixture
def fresh_store(migrated: Path, tmp_path: Path) -> Store:
    """A migrated store of this test's own, with one audit row."""
    path = tmp_path / "mesh.db"
    shutil.copy(migrated, path)
    store = Store(path)
    store.append(an_event())
    return store


def an_event(action: str = "request_submitted") -> NewEvent:
    return NewEvent(
        at="2026-01-01T00:00:00.000Z",
        actor="carol",
        action=action,
        request_id="r-0001",
        scope="sales_orders.customers",
    )


def applied_names(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM _sqlite_migrations ORDER BY id").fetchall()
    return [name for (name,) in rows]


def assert_names_the_store(error: StorageError, store: Store) -> None:
    assert "MESH_DB" in error.message and str(store.path) in error.message
    assert "unexpected" not in error.message.lower()
    assert error.message.endswith(".")
    assert error.exit_code == 1


@pytest.fixture
def holder(fresh_store: Store) -> Iterator[sqlite3.Connection]:
    """Another connection holding the write lock on the fresh store, as a stuck writer does."""
    connection = sqlite3.connect(fresh_store.path, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    yield connection
    connection.execute("ROLLBACK")
    connection.close()


# First start: processes migrating a fresh file at once ---------------------------------------


def _migrate_in_rounds(folder: str, rounds: int, barrier: Any, outcomes: Any) -> None:
    """One process of many: in each round, migrate that round's fresh file with the others."""
    for number in range(rounds):
        barrier.wait()
        try:
            Store(Path(folder) / f"round-{number}" / "mesh.db").migrate(create=True)
            outcomes.put((number, "ok"))
        except (MeshError, sqlite3.Error) as exc:  # reported to the test, which shows them
            outcomes.put((number, f"{type(exc).__name__}: {exc}"))


def test_processes_starting_together_on_a_fresh_file_all_start_and_migrate_it_once(
    tmp_path: Path,
) -> None:
    # GIVEN 8 processes that, in each of 10 rounds, start at the same moment on a new file
    processes, rounds = 8, 10
    # fork: a spawned process would spend seconds importing this module before each start
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    outcomes = context.Queue()
    workers = [
        context.Process(target=_migrate_in_rounds, args=(str(tmp_path), rounds, barrier, outcomes))
        for _ in range(processes)
    ]
    # WHEN they all migrate
    for worker in workers:
        worker.start()
    results: list[tuple[int, str]] = []
    try:
        for _ in range(processes * rounds):
            results.append(outcomes.get(timeout=120))
    except Empty:
        pytest.fail(f"only {len(results)} of {processes * rounds} starts reported")
    finally:
        for worker in workers:
            worker.join(timeout=30)
    # THEN every start succeeded, and each file holds each named migration exactly once
    assert [outcome for _, outcome in results if outcome != "ok"] == []
    for number in range(rounds):
        assert applied_names(tmp_path / f"round-{number}" / "mesh.db") == ALL_MIGRATIONS


def test_a_store_locked_past_the_busy_timeout_at_start_is_a_storage_error_not_a_setting(
    fresh_store: Store, holder: sqlite3.Connection
) -> None:
    # GIVEN another process holding the write lock longer than the busy timeout
    store = Store(fresh_store.path, busy_timeout=0.2)
    # WHEN a process starts on it
    with pytest.raises(StorageError) as refused:
        store.migrate(create=False)
    # THEN it says the store stayed locked, and never blames MESH_DB as a bad setting
    assert not isinstance(refused.value, SettingError)
    assert_names_the_store(refused.value, store)
    assert "locked" in refused.value.message and "0.2 seconds" in refused.value.message


def test_a_fresh_file_locked_by_another_first_start_is_a_storage_error(tmp_path: Path) -> None:
    # GIVEN a new file that another process has locked while it sets it up
    path = tmp_path / "mesh.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        # WHEN this process starts on it, and the lock outlasts the busy timeout
        with pytest.raises(StorageError) as refused:
            Store(path, busy_timeout=0.2).migrate(create=True)
    finally:
        other.execute("ROLLBACK")
        other.close()
    # THEN the store is reported as locked, not as a bad setting
    assert "locked" in refused.value.message


# Creation only on purpose ---------------------------------------------------------------------


def test_migrate_without_create_refuses_a_missing_file_saying_init_or_restore(
    tmp_path: Path,
) -> None:
    # GIVEN no database at MESH_DB
    store = Store(tmp_path / "var" / "mesh.db")
    # WHEN a start that may not create it migrates
    with pytest.raises(SettingError) as refused:
        store.migrate(create=False)
    # THEN it names the file and what to do, and creates nothing
    message = refused.value.message
    assert str(store.path) in message and "mesh init" in message and "mesh backup" in message
    assert refused.value.exit_code == 2
    assert not (tmp_path / "var").exists()


def test_migrate_without_create_refuses_an_empty_file(tmp_path: Path) -> None:
    # GIVEN an empty file where the store should be
    path = tmp_path / "mesh.db"
    path.touch()
    # WHEN a start that may not create the store migrates
    with pytest.raises(SettingError, match="mesh init"):
        Store(path).migrate(create=False)
    # THEN the file is left empty
    assert path.stat().st_size == 0


@pytest.mark.parametrize("create", [True, False])
def test_migrate_refuses_a_sqlite_file_that_is_not_a_mesh_store(
    tmp_path: Path, create: bool
) -> None:
    # GIVEN MESH_DB pointing at some other application's SQLite file
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    connection.close()
    # WHEN it is migrated, even by `mesh init`
    with pytest.raises(SettingError, match="not a Mesh store"):
        Store(path).migrate(create=create)
    # THEN none of Mesh's tables were added to it
    with sqlite3.connect(path) as connection:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
    connection.close()
    assert "requests" not in tables


def test_migrate_of_an_up_to_date_store_applies_nothing(fresh_store: Store) -> None:
    # GIVEN a store with every migration applied
    # WHEN it is migrated again, as each start does
    applied = fresh_store.migrate(create=False)
    # THEN nothing is applied twice
    assert applied == []
    assert applied_names(fresh_store.path) == ALL_MIGRATIONS


# The file going away while Mesh runs ----------------------------------------------------------


def delete(store: Store) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store.path}{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize(
    "use",
    [
        pytest.param(lambda store: store.append(an_event("request_cancelled")), id="write"),
        pytest.param(lambda store: store.audit(), id="read"),
    ],
)
def test_a_store_deleted_while_running_is_a_storage_error_and_is_never_recreated(
    fresh_store: Store, use: Callable[[Store], Any]
) -> None:
    # GIVEN a running store whose file is deleted
    delete(fresh_store)
    # WHEN it is used
    with pytest.raises(StorageError) as refused:
        use(fresh_store)
    # THEN the error names MESH_DB and says it is missing, and no empty file takes its place
    assert_names_the_store(refused.value, fresh_store)
    assert "missing" in refused.value.message
    assert not fresh_store.path.exists()


def test_a_store_replaced_by_an_empty_file_while_running_is_a_storage_error(
    fresh_store: Store,
) -> None:
    # GIVEN a running store whose file is replaced by an empty one
    delete(fresh_store)
    fresh_store.path.touch()
    # WHEN a request is written
    with pytest.raises(StorageError) as refused:
        fresh_store.append(an_event("request_cancelled"))
    # THEN the error says the tables are gone, and the file stays empty
    assert_names_the_store(refused.value, fresh_store)
    assert "no such table" in refused.value.message
    assert fresh_store.path.stat().st_size == 0


# Storage failures name MESH_DB and the cause --------------------------------------------------


@pytest.fixture
def read_only(fresh_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Open every store read-only, as SQLite does a file it may not write (tests run as root,
    so chmod would not stop them). The fresh store's connection is closed, so the store
    opens the file again, as a process started now does."""
    fresh_store.close()
    real = sqlite3.connect

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        return real(str(database).replace("mode=rw", "mode=ro"), *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)


def test_a_read_only_store_is_a_storage_error_on_write_and_still_reads(
    fresh_store: Store, read_only: None
) -> None:
    # GIVEN a store file that may be read but not written
    # WHEN an audit row is written
    with pytest.raises(StorageError) as refused:
        fresh_store.append(an_event("request_cancelled"))
    # THEN the error names MESH_DB and the cause; reads still work
    assert_names_the_store(refused.value, fresh_store)
    assert "could not be written" in refused.value.message
    assert "readonly" in refused.value.message
    assert [event.action for event in fresh_store.audit()] == ["request_submitted"]


@pytest.fixture
def full_disk(fresh_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that cannot grow by a page: SQLite's own "database or disk is full" (from
    the store's next connection: its open one is closed)."""
    fresh_store.close()
    real = sqlite3.connect

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = real(database, *args, **kwargs)
        connection.execute("PRAGMA max_page_count = 1")  # SQLite keeps the current size
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)


def test_a_full_disk_is_a_storage_error_naming_the_store_and_the_cause(
    fresh_store: Store, full_disk: None
) -> None:
    # GIVEN a store on a disk with no room left
    before = fresh_store.audit()
    # WHEN a large audit row is written
    event = NewEvent(
        at="2026-01-01T00:00:00.000Z",
        actor="carol",
        action="request_submitted",
        request_id="r-0002",
        scope="sales_orders.orders",
        details={"reason": "x" * 200_000},
    )
    with pytest.raises(StorageError) as refused:
        fresh_store.append(event)
    # THEN the sentence names MESH_DB and says the disk is full, and nothing was half-written
    assert_names_the_store(refused.value, fresh_store)
    assert "could not be written: database or disk is full." in refused.value.message
    assert fresh_store.audit() == before


def test_a_full_disk_raised_without_a_sqlite_code_is_still_a_storage_error(
    fresh_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a connection whose writes fail as a full disk does (raised by hand, without a code)
    class FullDisk(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql.lstrip().upper().startswith("INSERT"):
                raise sqlite3.OperationalError("database or disk is full")
            return super().execute(sql, *args)

    real = sqlite3.connect
    monkeypatch.setattr(
        sqlite3, "connect", lambda *args, **kwargs: real(*args, **kwargs, factory=FullDisk)
    )
    fresh_store.close()  # the next connection is a FullDisk
    # WHEN an audit row is written
    with pytest.raises(StorageError) as refused:
        fresh_store.append(an_event("request_cancelled"))
    # THEN it is reported as the store's failure, with its cause
    assert refused.value.message == (
        f"The store MESH_DB ({fresh_store.path}) could not be written: database or disk is full."
    )


def test_a_store_locked_past_the_busy_timeout_is_a_storage_error_on_write(
    fresh_store: Store, holder: sqlite3.Connection
) -> None:
    # GIVEN another process holding the write lock longer than the busy timeout
    store = Store(fresh_store.path, busy_timeout=0.2)
    # WHEN an audit row is written
    with pytest.raises(StorageError) as refused:
        store.append(an_event("request_cancelled"))
    # THEN the sentence names MESH_DB, the wait and the cause
    assert_names_the_store(refused.value, store)
    assert "locked by another process for more than 0.2 seconds" in refused.value.message


def test_constraint_failures_are_not_storage_errors(fresh_store: Store) -> None:
    # GIVEN the append-only audit log
    connection = sqlite3.connect(fresh_store.path)
    # WHEN someone deletes a row, through SQL the store did not write
    # THEN SQLite's own refusal passes through unchanged (it is no failure of the file)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("DELETE FROM audit")
    connection.close()


def test_a_storage_error_is_recorded_under_its_own_code() -> None:
    # GIVEN a storage failure met while a request was being processed
    error = StorageError("The store MESH_DB (/x.db) could not be written: disk I/O error.")
    # WHEN the failure is turned into what the request records
    # THEN it keeps its own code and sentence, not "Unexpected"
    assert failure_of(error, "unexpected failure") == ("StorageError", error.message)


# Backup and restore ---------------------------------------------------------------------------


def test_backup_copies_requests_and_audit_into_a_single_file(
    fresh_store: Store, tmp_path: Path
) -> None:
    # GIVEN a store with an audit row, in WAL mode
    target = tmp_path / "backups" / "mesh-backup.db"
    target.parent.mkdir()
    # WHEN it is backed up
    counts = fresh_store.backup(target)
    # THEN the copy holds the same rows, is one self-contained file, and passes its check
    assert counts == {"requests": 0, "audit": 1}
    assert Store(target).audit() == fresh_store.audit()
    with sqlite3.connect(target) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    connection.close()
    assert sorted(p.name for p in target.parent.iterdir()) == ["mesh-backup.db"]


def test_backup_while_a_writer_is_mid_transaction_copies_only_what_was_committed(
    fresh_store: Store, holder: sqlite3.Connection, tmp_path: Path
) -> None:
    # GIVEN another process mid-way through writing an audit row
    holder.execute("INSERT INTO audit (at, actor, action) VALUES ('t', 'dan', 'half-done')")
    # WHEN the store is backed up meanwhile
    fresh_store.backup(tmp_path / "backup.db")
    # THEN the backup did not wait, and holds the committed rows only
    assert [e.action for e in Store(tmp_path / "backup.db").audit()] == ["request_submitted"]


def test_backup_refuses_to_replace_a_file_unless_forced(fresh_store: Store, tmp_path: Path) -> None:
    # GIVEN a file where the backup would go
    target = tmp_path / "backup.db"
    target.write_text("keep me")
    # WHEN the store is backed up there
    # THEN it is refused, naming --force, and the file is untouched
    with pytest.raises(InvalidInput, match="--force"):
        fresh_store.backup(target)
    assert target.read_text() == "keep me"
    # AND with force it is replaced by the backup
    assert fresh_store.backup(target, force=True) == {"requests": 0, "audit": 1}
    assert Store(target).audit() == fresh_store.audit()


def test_backup_refuses_to_write_over_mesh_db_itself(fresh_store: Store) -> None:
    with pytest.raises(InvalidInput, match="MESH_DB itself"):
        fresh_store.backup(fresh_store.path, force=True)


def test_a_failed_backup_leaves_no_file_behind(fresh_store: Store, tmp_path: Path) -> None:
    # GIVEN a backup path in a folder that does not exist
    target = tmp_path / "no-such-folder" / "backup.db"
    # WHEN the store is backed up there
    with pytest.raises(StorageError, match="could not be written"):
        fresh_store.backup(target)
    # THEN nothing was written
    assert not target.parent.exists()


def test_restoring_a_backup_as_the_readme_says_brings_back_its_rows(
    fresh_store: Store, tmp_path: Path
) -> None:
    # GIVEN a backup, and rows written after it
    fresh_store.backup(tmp_path / "backup.db")
    fresh_store.append(an_event("request_cancelled"))
    # WHEN Mesh is stopped, the backup copied over MESH_DB (its -wal and -shm removed),
    # and Mesh started again in aws mode
    delete(fresh_store)
    shutil.copy(tmp_path / "backup.db", fresh_store.path)
    fresh_store.migrate(create=False)
    # THEN the store holds what the backup held, and is written to as before
    assert [e.action for e in fresh_store.audit()] == ["request_submitted"]
    fresh_store.append(an_event("request_cancelled"))
    assert len(fresh_store.audit()) == 2


# The CLI: init and backup, and a missing store in aws mode ------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path) -> Callable[..., Outcome]:
    """`python -m mesh` in this process, in aws mode, with MESH_DB in tmp_path."""
    env = {
        "MESH_MODE": "aws",
        "MESH_DB": str(tmp_path / "var" / "mesh.db"),
        "MESH_USERS": str(DEMO_USERS),
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # no AWS call may be made
    }
    return environment_cli(monkeypatch, capsys, env)


def test_cli_in_aws_mode_without_a_database_exits_2_saying_init_and_creates_nothing(
    cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    # GIVEN aws mode, and no file at MESH_DB
    # WHEN any command runs
    result = cli("requests")
    # THEN exit code 2 and one sentence naming the file, `mesh init` and backups, before any
    # AWS call; and no empty database appeared
    assert result.code == 2, result.err
    assert_one_sentence_on_stderr(result)
    assert str(tmp_path / "var" / "mesh.db") in result.err
    assert "mesh init" in result.err and "mesh backup" in result.err
    assert not (tmp_path / "var").exists()


def test_cli_init_creates_the_database_once_and_says_what_it_did(
    cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    # GIVEN aws mode and no database
    path = tmp_path / "var" / "mesh.db"
    # WHEN `mesh init` runs twice
    first, second = cli("init"), cli("init")
    # THEN the first creates it with every migration, the second does nothing and says so
    assert (first.code, second.code) == (0, 0), first.err + second.err
    assert f"Created the database {path}" in first.out
    assert f"{len(ALL_MIGRATIONS)} migrations" in first.out
    assert "nothing to do" in second.out
    assert applied_names(path) == ALL_MIGRATIONS
    # AND the first starts the audit anchor with the new log, so the first tick finds it
    assert f"Started the audit anchor {path.parent / 'audit-anchor.json'}" in first.out
    assert "Started the audit anchor" not in second.out


def test_cli_init_in_demo_mode_is_refused(
    cli: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_MODE", "demo")
    result = cli("init")
    assert result.code == 2
    assert_one_sentence_on_stderr(result)
    assert "MESH_MODE=aws" in result.err


def test_cli_backup_writes_the_file_and_refuses_to_replace_it_without_force(
    cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    # GIVEN an initialised database (its one audit row: the anchor started)
    assert cli("init").code == 0
    target = tmp_path / "backup.db"
    # WHEN it is backed up, then backed up again to the same file, then again with --force
    first = cli("backup", str(target))
    again = cli("backup", str(target))
    forced = cli("backup", "--force", str(target))
    # THEN the first and the forced one succeed and say what they copied; the second is refused
    assert first.code == 0, first.err
    assert f"to {target}: 0 requests, 1 audit rows." in first.out
    assert again.code == 2
    assert_one_sentence_on_stderr(again)
    assert "--force" in again.err
    assert forced.code == 0, forced.err
