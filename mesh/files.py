"""Private files: the database, its folder and every secret are the owner's alone, whatever
the umask.

``mesh.db`` holds sign-in sessions, reasons and the outbox with live decision links; the
link secret signs those links. Under the usual umask (022) they would be readable by every
account on the server, so they are made 0600 (folders 0700) when created, and tightened when
found looser.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
# The project's own var/ folder (the default home of MESH_DB and the link secret) is Mesh's,
# so it is tightened when found open; a folder named by a setting is only made private when
# Mesh creates it.
PROJECT_VAR = Path(__file__).resolve().parent.parent / "var"

log = logging.getLogger(__name__)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its missing parents) as 0700; tighten the project's own var/."""
    if not path.exists():
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir(mode=DIR_MODE, exist_ok=True)
            os.chmod(folder, DIR_MODE)  # mkdir's mode passes through the umask
    elif path.resolve() == PROJECT_VAR:
        tighten(path, DIR_MODE)
    return path


def tighten(path: Path, mode: int = FILE_MODE) -> None:
    """Take away from ``path`` what ``mode`` does not allow (group and others, normally)."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if current & ~mode:
        os.chmod(path, current & mode)
        log.info("%s was mode %o; now %o", path, current, current & mode)


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists as a 0600 file (an empty one if it was missing)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        tighten(path)
        return path
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def sqlite_files(db: Path) -> tuple[Path, ...]:
    """The database file and the files SQLite keeps beside it."""
    return (db, *(db.with_name(db.name + suffix) for suffix in ("-wal", "-shm", "-journal")))


def tighten_database(db: Path) -> None:
    """Make the database and its -wal, -shm and -journal files 0600 (SQLite gives them the
    database file's mode when it creates them, so a private database stays private)."""
    for path in sqlite_files(db):
        tighten(path)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as a 0600 file, whole or not at all (a temporary file beside
    it, renamed into place), in a folder made 0700 if missing."""
    private_dir(path.parent)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)
