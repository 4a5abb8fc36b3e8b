"""Shared pieces of the real-browser tests: Debian's chromium, and a demo in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Protocol

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_SECONDS = 60


class RunningDemo(Protocol):
    url: str

    def standin_endpoint(self) -> str: ...


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def answers(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


def demo_is_up(demo: RunningDemo) -> bool:
    if answers(f"{demo.url}/_stcore/health") != "ok":
        return False
    try:
        endpoint = demo.standin_endpoint()
    except (OSError, ValueError, KeyError):
        return False
    return answers(f"{endpoint}/moto-api/") is not None


def wait_until_up(process: subprocess.Popen[bytes], demo: RunningDemo, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while not demo_is_up(demo):
        if process.poll() is not None:
            pytest.fail(f"the demo exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the demo did not come up in {STARTUP_SECONDS} s:\n{log.read_text()}")
        time.sleep(0.2)  # waiting on a real process


def stop(process: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
