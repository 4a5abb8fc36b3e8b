"""Shared pieces of the real-browser tests: Debian's chromium, and a demo in a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

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
PROJECT = Path(__file__).resolve().parents[1]


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


@dataclass(frozen=True, kw_only=True)
class Demo:
    """A demo started as a user starts it, its database and stand-in file in ``folder``."""

    url: str
    folder: Path

    @property
    def db(self) -> Path:
        return self.folder / "demo.db"

    def standin_endpoint(self) -> str:
        return str(json.loads((self.folder / "demo-standin.json").read_text())["endpoint"])

    def cli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "AWS_"))}
        return {**env, "MESH_DB": str(self.db), "MESH_BASE_URL": self.url}


@contextmanager
def started_demo(
    folder: Path, *, host: str = "127.0.0.1", env: Mapping[str, str] | None = None
) -> Iterator[Demo]:
    """`python -m mesh demo` on free ports; ``env`` adds settings (MESH_POLICY, say).

    Notification links use MESH_BASE_URL, which is this demo's URL on ``host``; a browser
    must use the same host, or the login cookie set on one is not sent to the other.
    """
    port, standin_port = free_ports(2)
    running = Demo(url=f"http://{host}:{port}", folder=folder)
    log = folder / "demo.log"
    with log.open("wb") as out:
        command = [sys.executable, "-m", "mesh", "demo", "--port", str(port)]
        process = subprocess.Popen(
            [*command, "--standin-port", str(standin_port)],
            cwd=PROJECT,
            env={**running.cli_env(), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_up(process, running, log)
        yield running
    finally:
        stop(process)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium through Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing; install Debian's chromium package")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextmanager
def fresh_page(
    browser: Browser, request: pytest.FixtureRequest, folder: Path, *, timeout_ms: int
) -> Iterator[Page]:
    """A fresh browser context (no cookies); a screenshot lands in ``folder`` on failure."""
    failed_before = request.session.testsfailed
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(timeout_ms)
    opened = context.new_page()
    try:
        yield opened
    finally:
        if request.session.testsfailed > failed_before or sys.exc_info()[0] is not None:
            folder.mkdir(parents=True, exist_ok=True)
            opened.screenshot(path=str(folder / "failure.png"), full_page=True)
        context.close()


@dataclass(frozen=True, kw_only=True)
class Links:
    approve: str
    deny: str


def links_sent_for(db: Path, request_id: str) -> Links:
    """The approve and deny links in the owners' approval notification (the outbox row) of
    the SQLite store at ``db``."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT body FROM notifications WHERE request_id = ? AND kind = 'approval_request'",
            [request_id],
        ).fetchall()
    assert len(rows) == 1, f"expected one approval notification for {request_id}, got {rows}"
    body = str(rows[0][0])
    approve = re.search(r"^Approve:\s*(\S+)\s*$", body, re.MULTILINE)
    deny = re.search(r"^Deny:\s*(\S+)\s*$", body, re.MULTILINE)
    assert approve and deny, f"no approve and deny links in:\n{body}"
    return Links(approve=approve.group(1), deny=deny.group(1))
