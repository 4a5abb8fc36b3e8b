"""Print how long `python -m mesh demo` takes until the web app and the stand-in answer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def main() -> int:
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="mesh-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "AWS_"))}
    env["MESH_DB"] = str(workdir / "demo.db")
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "mesh", "demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        standin = app = None
        state = workdir / "demo-standin.json"
        while time.perf_counter() - start < 60 and (standin is None or app is None):
            if standin is None and state.exists():
                standin = time.perf_counter() - start
            if app is None and _answers(f"http://127.0.0.1:{port}/_stcore/health"):
                app = time.perf_counter() - start
            time.sleep(0.05)
        endpoint = json.loads(state.read_text())["endpoint"] if state.exists() else "?"
        print(
            f"stand-in seeded and recorded after {standin:.2f} s ({endpoint})"
            if standin
            else "stand-in never started"
        )
        print(
            f"web app healthy after {app:.2f} s (target < {TARGET_S} s)"
            if app
            else "web app never answered"
        )
        return 0 if app is not None and app < TARGET_S else 1
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


if __name__ == "__main__":
    sys.exit(main())
