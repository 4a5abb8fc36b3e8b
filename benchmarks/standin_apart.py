"""The demo's patched moto server, seeded with the demo mesh, in a child process of its own.

AWS is apart from the app, as in production: moto's objects in the measured process would make
each of Python's full garbage collections there about 300 ms, and one server's threads serve
the calls of every replica. The child stops when its stdin closes or it is terminated.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STANDIN = """
import sys
from mesh.aws import ClientFactory
from mesh.demo import data, standin
server, endpoint = standin.serve()
data.seed(ClientFactory(demo_endpoint=endpoint).client("glue"))
print(endpoint, flush=True)
sys.stdin.read()
server.stop()
"""


@contextmanager
def standin_apart(*, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """The seeded stand-in's endpoint, its child started with ``env`` (default: this one's)."""
    child = subprocess.Popen(
        [sys.executable, "-c", STANDIN],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=None if env is None else dict(env),
    )
    try:
        assert child.stdout is not None
        endpoint = child.stdout.readline().strip()
        if not endpoint.startswith("http"):
            raise RuntimeError("the moto server did not start")
        yield endpoint
    finally:
        child.terminate()  # its state is thrown away: no need to stop it gracefully
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
