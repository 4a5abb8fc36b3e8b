"""The demo's own files are private: its folder 0700, its state and marker files 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.demo import standin
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
