"""Helpers shared by the test modules: signing in through AppTest, reading what a person
sees, and checking CLI refusals.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mesh.errors import MeshError
from mesh.models import EntryOutcome, GrantSpec

if TYPE_CHECKING:  # the replica benchmarks import this module: no streamlit there
    from streamlit.testing.v1 import AppTest


@dataclass(frozen=True)
class Users:
    """The use cases' users port over a dict of users (no users file to parse)."""

    users: dict[str, Any]

    def get(self, username: str | None) -> Any:
        return self.users.get((username or "").strip().lower())

    def everyone(self) -> list[Any]:
        return list(self.users.values())


def one_by_one(send: Callable[[GrantSpec], Any], specs: Sequence[GrantSpec]) -> list[EntryOutcome]:
    """A batch grant or revoke made of single calls, for fakes that fail one call at a time."""
    outcomes = []
    for spec in specs:
        try:
            send(spec)
        except MeshError as exc:
            outcomes.append(EntryOutcome(spec=spec, failure=exc))
        else:
            outcomes.append(EntryOutcome(spec=spec))
    return outcomes


PROJECT = Path(__file__).resolve().parent.parent
APP = PROJECT / "app.py"
COOKIE_KEY = "a-test-cookie-key-that-is-long-enough-0123456789"
# aws mode refuses to start without MESH_AUDIT_KEY; a fixed key keeps failures reproducible.
AUDIT_KEY = "tests-audit-key-Hq7Wn2Kd9Lp4Xr6Tz1Vb8Mc3Fs5Gy0"
# aws mode refuses to start without MESH_LINK_SECRET too (the demo keeps a file beside MESH_DB).
LINK_SECRET = "tests-link-secret-Rb4Zt8Qm1Wx6Jn3Pv9Ks2Dh7Lc5"
PASSWORD = "mesh-demo"
_MARKDOWN_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def labelled(widgets: Sequence[Any], label: str) -> Any:
    matches = [w for w in widgets if w.label == label]
    assert len(matches) == 1, f"expected one widget labelled {label!r}, got {len(matches)}"
    return matches[0]


def sign_in(at: AppTest, username: str, password: str = PASSWORD) -> AppTest:
    """Sign in through the login form, as a person does."""
    at.run()
    labelled(at.text_input, "Username").input(username)
    labelled(at.text_input, "Password").input(password)
    labelled(at.button, "Sign in").click().run()
    assert not at.exception
    return at


def texts(elements: Sequence[Any]) -> list[str]:
    """What a person reads in markdown elements: backslash escapes (and the zero-width spaces
    that keep catalog text from becoming links) are not shown."""
    return [_MARKDOWN_ESCAPE.sub(r"\1", e.value).replace("\u200b", "") for e in elements]


@dataclass(frozen=True)
class Outcome:
    """What one CLI run gave: exit code, standard output and standard error."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Outcome]


def assert_one_sentence_on_stderr(outcome: Outcome) -> None:
    """A refusal is one line on stderr, a sentence ending in a full stop, never a traceback."""
    assert "Traceback" not in outcome.err
    lines = outcome.err.strip().splitlines()
    assert len(lines) == 1, outcome.err
    assert lines[0].startswith("error: ")
    assert lines[0].endswith(".")


def run_mesh(
    *argv: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real entry point, `python -m mesh ARGV`, in a child process with ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "mesh", *argv],
        env=dict(env),
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _captured_cli(capsys: Any) -> Cli:
    """Run `python -m mesh` in this process, capturing what it prints."""
    import mesh.cli

    def run(*argv: str) -> Outcome:
        capsys.readouterr()
        code = mesh.cli.main(list(argv))
        out, err = capsys.readouterr()
        return Outcome(code=code, out=out, err=err)

    return run


def in_process_cli(monkeypatch: Any, capsys: Any, build: Callable[..., Any]) -> Cli:
    """Run `python -m mesh` in this process, its services built by ``build``."""
    import mesh.cli

    monkeypatch.setattr(mesh.cli, "build", build)
    return _captured_cli(capsys)


def environment_cli(monkeypatch: Any, capsys: Any, env: Mapping[str, str] | None = None) -> Cli:
    """Run `python -m mesh` in this process, its settings from the environment with ``env``
    set, never from a developer's .streamlit/secrets.toml."""
    import mesh.settings

    monkeypatch.setattr(mesh.settings, "read_secrets", lambda *args, **kwargs: {})
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    return _captured_cli(capsys)


REGION = "us-east-1"  # where moto keeps the demo mesh


def moto_env(endpoint: str) -> dict[str, str]:
    """The environment that points boto3 at the moto server on ``endpoint``: fake
    credentials, and no AWS config or credentials file of the developer's."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }


def init_store(path: str | Path, *, key: str = AUDIT_KEY) -> None:
    """Make the store at ``path`` as `mesh init` makes it: migrated, and its audit anchor
    (audit-anchor.json beside it) started, since a missing anchor is always a break."""
    from mesh import auditlog
    from mesh.moments import iso, utc_now
    from mesh.store import Store

    store = Store(path, audit_key=key)
    store.migrate(create=True)
    auditlog.initialise_anchor(store, auditlog.FileAnchor(), by="cli init", at=iso(utc_now()))
    store.close()  # into the main file, for a test that copies it


def flag_column_in_glue(glue: Any, database: str, table: str, column: str) -> None:
    """Flag one column as PII in Glue, as its producer would, without a sync."""
    found = glue.get_table(DatabaseName=database, Name=table)["Table"]
    storage = found["StorageDescriptor"]
    columns = [
        {**c, "Parameters": {**c.get("Parameters", {}), "pii_flag": "true"}}
        if c["Name"] == column
        else c
        for c in storage["Columns"]
    ]
    glue.update_table(
        DatabaseName=database,
        TableInput={
            "Name": table,
            "Parameters": found.get("Parameters", {}),
            "StorageDescriptor": {**storage, "Columns": columns},
            "PartitionKeys": found.get("PartitionKeys", []),
        },
    )
