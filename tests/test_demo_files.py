"""The demo's own files are private (its folder 0700, its state and marker files 0600), and
a secret kept in a file beside the database (the link secret, the demo's audit key) is made
once, whole, even when processes and threads start at the same moment."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.demo import standin
from mesh.errors import SettingError
from mesh.links import load_or_create_secret
from tests.conftest import reset_moto


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def test_a_demo_start_makes_its_folder_state_file_and_marker_private_under_umask_022(
    moto_endpoint: str, tmp_path: Path, umask_022: None
) -> None:
    # GIVEN umask 022, a demo folder that does not exist yet, and an empty moto (one state
    # per process, shared by every server in it, so the stand-in can seed it)
    reset_moto(moto_endpoint)
    folder = tmp_path / "var" / "demo"
    # WHEN the demo stand-in starts there
    running = standin.start(state_file=folder / "demo-standin.json", db_path=folder / "demo.db")
    try:
        # THEN the folder is 0700 and the state file and the marker are 0600
        assert mode(folder) == "0o700"
        assert mode(folder / "demo-standin.json") == "0o600"
        assert mode(standin._marker(folder / "demo.db")) == "0o600"
        assert standin.read_state(folder / "demo-standin.json")["endpoint"] == running.endpoint
    finally:
        running.stop()
        reset_moto(moto_endpoint)


def test_threads_making_the_secret_at_once_all_get_the_same_whole_one(
    tmp_path: Path, umask_022: None
) -> None:
    # GIVEN 8 threads that start together on a fresh folder, 100 times over (a demo's page
    # run and its background job, or two processes, reading the audit key on first use;
    # before, 95 rounds of 200 gave someone an empty or another secret: the app then could
    # not start, or wrote rows its chain check refused)
    rounds = []
    for n in range(100):
        path = tmp_path / f"round{n}" / "audit-key"
        barrier = threading.Barrier(8)
        got: list[str] = []

        def one(
            path: Path = path, barrier: threading.Barrier = barrier, got: list[str] = got
        ) -> None:
            barrier.wait()
            got.append(load_or_create_secret(path))

        threads = [threading.Thread(target=one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rounds.append((got, path))
    # WHEN each has read or made the secret
    # THEN all of a round got the one secret in the file, whole, and the file is 0600
    for got, path in rounds:
        assert len(got) == 8
        assert set(got) == {path.read_text()}
        assert len(got[0]) >= 64
        assert mode(path) == "0o600"
        assert [p.name for p in path.parent.iterdir()] == ["audit-key"]


def test_an_empty_secret_file_is_refused_not_signed_with(tmp_path: Path) -> None:
    # GIVEN a secret file left empty (a process stopped while writing it, before the fix)
    path = tmp_path / "link-secret"
    path.write_text("")
    # WHEN it is read, THEN it is refused with a sentence naming the file
    with pytest.raises(SettingError, match="link-secret is empty"):
        load_or_create_secret(path)
