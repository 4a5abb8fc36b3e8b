"""Start the demo's AWS stand-in: a moto server on loopback, patched, then seeded over HTTP.

The app and the CLI reach it exactly as they reach AWS, through boto3 with an endpoint URL,
so the demo runs the same code path as aws mode. A running stand-in records its endpoint in
a small JSON file beside the demo database, which is how the CLI finds the running demo.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mesh.aws import ClientFactory
from mesh.demo import data, patches
from mesh.errors import SettingError
from mesh.files import private_dir, write_private
from mesh.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class StandIn:
    endpoint: str
    server: Any
    tables: int

    def stop(self) -> None:
        self.server.stop()


def is_alive(endpoint: str) -> bool:
    """True if a moto server answers at ``endpoint``."""
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def read_state(state_file: Path) -> dict[str, Any]:
    """What the running demo recorded (endpoint, policy, base URL); empty if none runs."""
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict) or not is_alive(str(state.get("endpoint", ""))):
        return {}
    return state


def find_running(state_file: Path) -> str | None:
    """The endpoint of the stand-in recorded in ``state_file``, if it still answers."""
    try:
        endpoint = str(json.loads(state_file.read_text())["endpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return endpoint if is_alive(endpoint) else None


def _marker(db_path: Path) -> Path:
    return Path(f"{db_path}.demo")


def reset_database(db_path: Path) -> None:
    """Make the demo's SQLite file afresh: the old one's requests describe a stand-in gone.

    Only a file the demo made itself is removed (it leaves a marker beside it); any other
    file is refused, so a demo started by mistake can never wipe real requests and audit log.
    The new file is migrated at once, so a CLI in aws mode against the demo finds it.
    """
    if db_path.exists() and not _marker(db_path).exists():
        raise SettingError(
            f"MESH_DB points at {db_path}, which the demo did not create, and the demo starts "
            "from an empty database; point MESH_DB at another file, or set MESH_MODE=aws."
        )
    for suffix in ("", "-wal", "-shm", ".demo-fresh"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    private_dir(db_path.parent)
    write_private(_marker(db_path), "This SQLite file belongs to the demo and is reset with it.\n")
    # Migrating needs no audit key; the processes that write the log bring theirs (services).
    Store(db_path, audit_key=None, key_file_beside=False).migrate(create=True)
    write_private(_fresh(db_path), "The demo made this database; its anchor starts afresh.\n")


def _fresh(db_path: Path) -> Path:
    return Path(f"{db_path}.demo-fresh")


def take_fresh(db_path: Path) -> bool:
    """Whether reset_database has just made ``db_path`` (true once: the note is removed)."""
    try:
        _fresh(db_path).unlink()
    except FileNotFoundError:
        return False
    return True


def serve(port: int = 0) -> tuple[Any, str]:
    """Start a patched, quiet moto server on 127.0.0.1; return it and its endpoint URL."""
    from moto.server import ThreadedMotoServer

    patches.apply()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _, bound = server.get_host_and_port()
    return server, f"http://127.0.0.1:{bound}"


def start(
    *,
    state_file: Path,
    db_path: Path,
    port: int = 0,
    policy: Path | None = None,
    base_url: str | None = None,
) -> StandIn:
    """Start, patch and seed a moto server on 127.0.0.1, and record where it listens.

    The state file also records the demo's approval policy and web address, which a CLI
    started without them takes, so that every process of the demo runs one policy. A demo
    still running on the same database is never reset under it: the start is refused.
    """
    running = read_state(state_file)
    if running:
        raise SettingError(
            f"A demo is already running on {db_path} (stand-in {running['endpoint']}, "
            f"process {running.get('pid', '?')}); stop it first, or start this one with "
            "MESH_DB pointing into another folder."
        )
    reset_database(db_path)
    server, endpoint = serve(port)
    factory = ClientFactory(demo_endpoint=endpoint)
    tables = data.seed(factory.client("glue"))
    data.seed_topics(factory.client)
    write_private(
        state_file,
        json.dumps(
            {
                "endpoint": endpoint,
                "pid": os.getpid(),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "policy": str(policy) if policy else None,
                "base_url": base_url,
            }
        ),
    )
    log.info("demo stand-in on %s with %d tables", endpoint, tables)
    return StandIn(endpoint=endpoint, server=server, tables=tables)
