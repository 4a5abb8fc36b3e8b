"""Nothing secret in logs, files or weak keys (issue 10, section 5).

Real flows run with MESH_LOG=debug, in a CLI subprocess and in this process: a PII request
(AssumeRole into the producer account, then an SNS message with approve and deny links), an
approval, and a sign-in through the web app. The AWS keys, the role's temporary credentials,
the link secret, the cookie key, the passwords tried, the session ids and every decision-link
token are markers; the captured output must hold none of them.

The role's temporary credentials are made by the moto server running in this process, so
patching moto's AssumedRole gives them known values for the CLI subprocess as well.
"""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
import sqlite3
import stat
import string
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.sts import models as sts_models
from streamlit.testing.v1 import AppTest

from mesh import files, logs
from mesh.aws import ClientFactory
from mesh.demo import data
from mesh.errors import SettingError
from mesh.services import build
from mesh.settings import DEMO_USERS, Settings, load_settings
from mesh.store import Store
from tests.conftest import REGION, reset_moto
from tests.support import APP, AUDIT_KEY, PASSWORD, sign_in

PROJECT = Path(__file__).resolve().parents[1]
_B64 = string.ascii_letters + string.digits + "/+"
_UPPER = string.ascii_uppercase + string.digits


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


# Markers: shaped as the real secrets are, random for each run.
CALLER_KEY_ID = "AKIA" + _random(_UPPER, 16)
CALLER_SECRET = _random(_B64, 40)
ROLE_KEY_ID = "ASIA" + _random(_UPPER, 16)
ROLE_SECRET = _random(_B64, 40)
ROLE_SESSION_TOKEN = "IQoJb3JpZ2luX2VjE" + _random(_B64, 380)
LINK_SECRET = secrets.token_urlsafe(32)
COOKIE_KEY = secrets.token_urlsafe(32)
WRONG_PASSWORD = "Pw-" + secrets.token_urlsafe(12)
STATIC_MARKERS = {
    "caller access key id": CALLER_KEY_ID,
    "caller secret key": CALLER_SECRET,
    "role access key id": ROLE_KEY_ID,
    "role secret key": ROLE_SECRET,
    "role session token": ROLE_SESSION_TOKEN,
    "link secret": LINK_SECRET,
    "cookie key": COOKIE_KEY,
    "wrong password tried": WRONG_PASSWORD,
}
REASON = "Churn model for the quarterly review"
CUSTOMERS = ("--database", "sales_orders", "--table", "customers")


def moto_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": CALLER_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": CALLER_SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }


def found_markers(output: str, markers: dict[str, str]) -> list[str]:
    """The markers ``output`` shows, whole or as their first or last 16 characters."""
    return [
        name
        for name, value in markers.items()
        if value in output or value[:16] in output or value[-16:] in output
    ]


def database_secrets(db: Path) -> dict[str, str]:
    """The live secrets the store holds: every decision-link token and every session id."""
    conn = sqlite3.connect(db)
    try:
        dump = "\n".join(conn.iterdump())
        sessions = [row[0] for row in conn.execute("SELECT token_id FROM sessions")]
    finally:
        conn.close()
    tokens = set(re.findall(r"link=([A-Za-z0-9_.\-]{20,})", dump))
    found = {f"link token {i}": token for i, token in enumerate(sorted(tokens))}
    found |= {f"session id {i}": token for i, token in enumerate(sessions) if token}
    return found


# Fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def marked_moto(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shared moto server, reset and seeded, whose AssumeRole answers with the markers."""
    original = sts_models.AssumedRole.__init__

    def marked(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.access_key_id = ROLE_KEY_ID
        self.secret_access_key = ROLE_SECRET
        self.session_token = ROLE_SESSION_TOKEN

    monkeypatch.setattr(sts_models.AssumedRole, "__init__", marked)
    for name, value in moto_env(moto_endpoint).items():
        monkeypatch.setenv(name, value)
    reset_moto(moto_endpoint)
    data.seed(boto3.client("glue"))
    data.seed_topics(ClientFactory(demo_endpoint=moto_endpoint).client)
    return moto_endpoint


@pytest.fixture
def mesh_env(marked_moto: str, tmp_path: Path) -> dict[str, str]:
    """aws mode against the marked moto server, with a store made as `mesh init` makes it."""
    Store(tmp_path / "mesh.db").migrate(create=True)
    return {
        **moto_env(marked_moto),
        "MESH_MODE": "aws",
        "MESH_DB": str(tmp_path / "mesh.db"),
        "MESH_USERS": str(DEMO_USERS),
        "MESH_LINK_SECRET": LINK_SECRET,
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_COOKIE_KEY": COOKIE_KEY,
        "MESH_DECISION_TOPIC_ARN": data.DECISION_TOPIC,
        "MESH_LOG": "debug",
    }


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """This process's logging as the CLI sets it up with MESH_LOG=debug, into a buffer;
    the logging set-up before the test comes back after it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    wire_levels = {name: logging.getLogger(name).level for name in logs.WIRE_LOGGERS}
    buffer = io.StringIO()
    logs.configure({"MESH_LOG": "debug"}, stream=buffer)
    yield buffer
    for handler in root.handlers:
        handler.removeFilter(logs._FILTER)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, wire_level in wire_levels.items():
        logging.getLogger(name).setLevel(wire_level)


def run_cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "mesh", *argv],
        cwd=PROJECT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def request_and_approve(env: dict[str, str]) -> str:
    """carol asks for the PII table (the owner is sent links), sam approves; all output."""
    asked = run_cli(env, "request", "--json", "--as", "carol", *CUSTOMERS, "--account",
                    "444455556666", "--reason", REASON)  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    request_id = re.search(r'"id": "(r-[0-9a-f]+)"', asked.stdout)
    assert request_id is not None, asked.stdout
    approved = run_cli(env, "approve", "--as", "sam", "--comment", "ok", request_id.group(1))
    assert approved.returncode == 0, approved.stderr
    return "".join(p.stdout + p.stderr for p in (asked, approved))


# Debug output ----------------------------------------------------------------------------------


def test_cli_debug_output_of_a_request_and_its_approval_shows_no_secret(
    mesh_env: dict[str, str],
) -> None:
    # GIVEN aws mode with MESH_LOG=debug and secrets known to the test
    # WHEN carol asks for a PII table (AssumeRole, links sent) and sam approves, in the CLI
    output = request_and_approve(mesh_env)
    # THEN the run logged at debug level and sent the owner links...
    assert "DEBUG" in output
    markers = STATIC_MARKERS | database_secrets(Path(mesh_env["MESH_DB"]))
    assert any(name.startswith("link token") for name in markers)
    # ...and none of the secrets is in its output
    assert found_markers(output, markers) == []
    # AND botocore's wire lines stay off
    assert "botocore" not in output


def test_aws_wire_logs_come_only_when_asked_with_a_warning_and_known_secrets_masked(
    mesh_env: dict[str, str],
) -> None:
    # GIVEN MESH_LOG=debug and MESH_LOG_AWS_WIRE=1
    env = {**mesh_env, "MESH_LOG_AWS_WIRE": "1"}
    # WHEN the same flow runs
    output = request_and_approve(env)
    # THEN botocore's request and response lines are there, after a warning
    assert "DEBUG botocore" in output
    assert "MESH_LOG_AWS_WIRE is on" in output
    assert "AssumeRoleResponse" in output
    # AND the credentials, signatures and links in them are masked
    markers = STATIC_MARKERS | database_secrets(Path(env["MESH_DB"]))
    assert found_markers(output, markers) == []


def test_in_process_debug_log_of_a_request_with_links_shows_no_secret(
    mesh_env: dict[str, str], debug_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the services built in this process, logging at debug level
    for name, value in mesh_env.items():
        monkeypatch.setenv(name, value)
    services = build(load_settings(mesh_env, {}))
    # WHEN carol asks for a PII table (AssumeRole, a decision link made and sent)
    request = services.marketplace.submit(
        "carol",
        database="sales_orders",
        table="customers",
        account="444455556666",
        reason=REASON,
        duration=None,
        until=None,
    )
    # AND an unexpected failure is logged with its traceback, as the CLI does
    try:
        raise RuntimeError(f"failed while holding {ROLE_SECRET} and {LINK_SECRET}")
    except RuntimeError:
        logging.getLogger("mesh").debug("unexpected failure", exc_info=True)
    # THEN the log has lines, and none of the secrets
    output = debug_log.getvalue()
    assert "unexpected failure" in output
    markers = STATIC_MARKERS | database_secrets(Path(mesh_env["MESH_DB"]))
    assert any(name.startswith("link token") for name in markers), request.id
    assert found_markers(output, markers) == []


def test_sign_in_logged_at_debug_level_shows_no_password_cookie_or_session(
    mesh_env: dict[str, str],
    debug_log: io.StringIO,
    running_server: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN the web app in aws mode, logging at debug level
    for name, value in mesh_env.items():
        monkeypatch.setenv(name, value)
    app = AppTest.from_file(APP, default_timeout=30)
    # WHEN carol first tries a wrong password, then signs in with hers
    sign_in(app, "carol", password=WRONG_PASSWORD)
    sign_in(app, "carol")
    # THEN she is signed in
    assert any("carol" in c.value for c in app.sidebar.caption)
    # AND the log holds neither password, the cookie key nor the session id
    markers = STATIC_MARKERS | database_secrets(Path(mesh_env["MESH_DB"]))
    markers["the right password"] = PASSWORD
    assert found_markers(debug_log.getvalue(), markers) == []


# The redaction itself --------------------------------------------------------------------------

SECRET_LINES = [
    f"<SecretAccessKey>{ROLE_SECRET}</SecretAccessKey>",
    f"<SessionToken>{ROLE_SESSION_TOKEN}</SessionToken>",
    f"'X-Amz-Security-Token': b'{ROLE_SESSION_TOKEN}'",
    f"Credential={CALLER_KEY_ID}/20260101/us-east-1/sts/aws4_request",
    f"key {ROLE_KEY_ID} and secret {CALLER_SECRET}",
    f"https://mesh.example.com/approvals?link={LINK_SECRET}",
    f"Message=Approve%3A+https%3A%2F%2Fmesh%2Fapprovals%3Flink%3D{LINK_SECRET}",
    f"Authorization: Bearer {COOKIE_KEY}",
    f"password={WRONG_PASSWORD}",
    f'{{"password": "{WRONG_PASSWORD}"}}',
    f"MESH_COOKIE_KEY={COOKIE_KEY}",
    "cookie eyJhbGciOiJIUzI1NiJ9.eyJ1c2VybmFtZSI6ImNhcm9sIn0.c2lnbmF0dXJlc2lnbmF0dXJl",
]


@pytest.mark.parametrize("line", SECRET_LINES)
def test_redaction_masks_every_kind_of_secret(line: str) -> None:
    # GIVEN a log line holding a secret
    # WHEN it is redacted
    masked = logs.redact(line)
    # THEN the secret is gone and the mask is there
    assert found_markers(masked, STATIC_MARKERS) == []
    assert "eyJ1c2VybmFtZSI6ImNhcm9sIn0" not in masked
    assert logs.MASK in masked


@pytest.mark.parametrize("line", SECRET_LINES)
def test_redacting_twice_changes_nothing_more(line: str) -> None:
    # GIVEN a redacted line (a record passes every handler's filter)
    once = logs.redact(line)
    # WHEN it is redacted again
    # THEN it is the same
    assert logs.redact(once) == once


def test_redaction_keeps_ordinary_lines() -> None:
    # GIVEN a log line with no secret in it
    line = "Lake Formation GrantPermissions entry 3 failed: AccessDeniedException r-1a2b3c4d"
    # WHEN it is redacted
    # THEN it is unchanged
    assert logs.redact(line) == line


# Files -----------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_database_folder_and_backup_are_private_under_umask_022(
    marked_moto: str, tmp_path: Path, umask_022: None
) -> None:
    # GIVEN umask 022 and a store path whose folders do not exist yet
    db = tmp_path / "var" / "deep" / "mesh.db"
    # WHEN the store is made and written, the services built (the link secret made) and a
    # backup taken
    Store(db).migrate(create=True)
    env = {**moto_env(marked_moto), "MESH_MODE": "aws", "MESH_DB": str(db),
           "MESH_USERS": str(DEMO_USERS), "MESH_AUDIT_KEY": AUDIT_KEY,
           "MESH_LINK_SECRET": LINK_SECRET}  # fmt: skip
    services = build(load_settings(env, {}))
    services.marketplace.submit(
        "carol",
        database="sales_orders",
        table="orders",
        account="444455556666",
        reason=REASON,
        duration=None,
        until=None,
    )
    backup = tmp_path / "backup.db"
    services.marketplace.store.backup(backup)
    # THEN every file is 0600 and every folder made is 0700
    files = [db, db.with_name("mesh.db-wal"), db.with_name("mesh.db-shm"), backup]
    assert {str(f.relative_to(tmp_path)): oct(mode(f)) for f in files} == {
        str(f.relative_to(tmp_path)): "0o600" for f in files
    }
    assert {oct(mode(d)) for d in (db.parent, db.parent.parent)} == {"0o700"}


def test_mesh_init_in_a_subprocess_makes_a_private_database_under_umask_022(
    tmp_path: Path,
) -> None:
    # GIVEN umask 022 in a new process
    db = tmp_path / "new" / "mesh.db"
    env = {
        "MESH_MODE": "aws",
        "MESH_DB": str(db),
        "MESH_USERS": str(DEMO_USERS),
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "AWS_"))}
    # WHEN `mesh init` makes the database
    done = subprocess.run(
        [sys.executable, "-m", "mesh", "init"],
        cwd=PROJECT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        umask=0o022,
        timeout=120,
    )
    # THEN the database is 0600 and its new folder 0700
    assert done.returncode == 0, done.stderr
    assert (oct(mode(db)), oct(mode(db.parent))) == ("0o600", "0o700")


def test_an_existing_open_database_is_made_private_when_migrated(tmp_path: Path) -> None:
    # GIVEN a store made before files were private: 0644
    db = tmp_path / "mesh.db"
    Store(db).migrate(create=True)
    db.chmod(0o644)
    # WHEN it is migrated again (mesh init, or a start)
    Store(db).migrate(create=False)
    # THEN it is 0600
    assert oct(mode(db)) == "0o600"


def demo_settings(db: Path) -> Settings:
    """Demo settings for a store at ``db`` (the demo keeps its link secret in a file)."""
    return load_settings({"MESH_DB": str(db)}, {})


def test_the_demo_s_link_secret_file_is_private_under_umask_022(
    marked_moto: str, tmp_path: Path, umask_022: None
) -> None:
    # GIVEN umask 022 and a demo store whose folders do not exist yet
    db = tmp_path / "var" / "deep" / "demo.db"
    # WHEN the demo's services are built (the link secret made)
    services = build(demo_settings(db), endpoint=marked_moto)
    # THEN the link-secret file is 0600 in a 0700 folder, and it signs links
    secret = services.settings.link_secret_file
    assert (secret.name, oct(mode(secret)), oct(mode(secret.parent))) == (
        "link-secret",
        "0o600",
        "0o700",
    )
    assert len(secret.read_text()) >= 32


def test_a_weak_link_secret_in_the_demo_s_file_is_refused(marked_moto: str, tmp_path: Path) -> None:
    # GIVEN a demo's link-secret file beside the store holding one character
    db = tmp_path / "demo.db"
    (tmp_path / "link-secret").write_text("a")
    # WHEN the services are built
    with pytest.raises(SettingError) as refused:
        build(demo_settings(db), endpoint=marked_moto)
    # THEN it is refused, saying how to make a good one
    assert "link secret" in str(refused.value)
    assert "secrets.token_urlsafe(32)" in str(refused.value)


@pytest.mark.parametrize("web", [False, True])
def test_aws_mode_without_a_link_secret_refuses_to_start_even_with_a_file_beside_the_db(
    mesh_env: dict[str, str], tmp_path: Path, web: bool
) -> None:
    # GIVEN aws mode without MESH_LINK_SECRET, and a good link-secret file beside MESH_DB
    env = {k: v for k, v in mesh_env.items() if k != "MESH_LINK_SECRET"}
    (tmp_path / "link-secret").write_text(secrets.token_urlsafe(32))
    # WHEN the CLI's or the web app's settings are loaded
    with pytest.raises(SettingError) as refused:
        load_settings(env, {}, web=web)
    # THEN start-up is refused, naming the setting and how to make one
    assert "MESH_LINK_SECRET is not set" in refused.value.message
    assert "secrets.token_urlsafe(32)" in refused.value.message


def test_aws_settings_made_without_a_link_secret_are_refused_by_the_services(
    mesh_env: dict[str, str],
) -> None:
    # GIVEN aws-mode settings made some other way than load_settings, without the link secret
    settings = replace(load_settings(mesh_env, {}), link_secret=None)
    # WHEN the services are built
    with pytest.raises(SettingError) as refused:
        build(settings)
    # THEN they refuse rather than sign links with a file beside the database
    assert "MESH_LINK_SECRET is not set" in refused.value.message
    assert not settings.link_secret_file.exists()


def test_aws_mode_refuses_a_weak_link_secret(mesh_env: dict[str, str]) -> None:
    # GIVEN aws mode with a one-character MESH_LINK_SECRET
    # WHEN the settings are loaded
    with pytest.raises(SettingError) as refused:
        load_settings({**mesh_env, "MESH_LINK_SECRET": "a"}, {})
    # THEN it is refused, saying how to make a good one
    assert "MESH_LINK_SECRET" in refused.value.message
    assert "secrets.token_urlsafe(32)" in refused.value.message


def test_write_private_makes_a_0600_file_in_a_0700_folder_under_umask_022(
    tmp_path: Path, umask_022: None
) -> None:
    # GIVEN umask 022 and a file path in folders that do not exist yet
    target = tmp_path / "state" / "demo-standin.json"
    # WHEN a secret file is written with write_private, then written again
    files.write_private(target, '{"endpoint": "first"}')
    files.write_private(target, '{"endpoint": "second"}')
    # THEN it holds the last text, 0600, in a 0700 folder, with nothing left beside it
    assert target.read_text() == '{"endpoint": "second"}'
    assert (oct(mode(target)), oct(mode(target.parent))) == ("0o600", "0o700")
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_configure_once_in_a_fresh_process_logs_at_mesh_log_level_with_secrets_masked() -> None:
    # GIVEN a new process with no logging set up (as a Streamlit server's is), MESH_LOG=debug
    script = (
        "import logging, os\n"
        "from mesh import logs\n"
        "logs.configure_once(os.environ)\n"
        "logs.configure_once({'MESH_LOG': 'error'})\n"  # a second call changes nothing
        f"logging.getLogger('mesh.ui').debug('session token=%s', {ROLE_SESSION_TOKEN!r})\n"
        "logging.getLogger('botocore.endpoint').debug('wire line')\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "AWS_"))}
    # WHEN the web app's set-up runs twice and lines are logged
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT,
        env={**clean, "MESH_LOG": "debug"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # THEN mesh's debug line is there, masked, and botocore's is not
    assert done.returncode == 0, done.stderr
    assert f"DEBUG mesh.ui: session token={logs.MASK}" in done.stderr
    assert found_markers(done.stderr, STATIC_MARKERS) == []
    assert "wire line" not in done.stderr


@pytest.fixture
def host_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A root logger a host set up already, at INFO, writing into a buffer; the web app's
    set-up not yet run in this process. conftest puts logging back as it was afterwards."""
    monkeypatch.setattr(logs, "_configured", False)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    root.addHandler(handler)
    yield root, buffer
    root.removeHandler(handler)


def test_configure_once_leaves_a_host_s_logging_alone_but_masks_it(
    host_logging: tuple[logging.Logger, io.StringIO],
) -> None:
    # GIVEN a root logger some host set up already, at INFO
    root, buffer = host_logging
    # WHEN the web app's set-up runs with MESH_LOG=error and mesh logs a secret
    logs.configure_once({"MESH_LOG": "error"})
    logging.getLogger("mesh").info("password=%s", WRONG_PASSWORD)
    # THEN the host's level stands, and its handlers mask secrets
    assert root.level == logging.INFO
    assert buffer.getvalue() == f"password={logs.MASK}\n"


@pytest.mark.parametrize("wire", ["", "on"])
def test_configure_once_under_a_host_logging_at_debug_holds_aws_wire_logs_unless_asked(
    host_logging: tuple[logging.Logger, io.StringIO], wire: str
) -> None:
    # GIVEN a host whose root logger is at DEBUG
    root, buffer = host_logging
    root.setLevel(logging.DEBUG)
    # WHEN the web app's set-up runs, with or without MESH_LOG_AWS_WIRE, and botocore logs
    logs.configure_once({"MESH_LOG": "debug", logs.WIRE_SETTING: wire})
    logging.getLogger("botocore.endpoint").debug("wire line token=%s", LINK_SECRET)
    logging.getLogger("urllib3.connectionpool").debug("pool line")
    # THEN the wire lines come only when asked, and masked then
    if wire:
        assert buffer.getvalue() == f"wire line token={logs.MASK}\npool line\n"
    else:
        assert buffer.getvalue() == ""


def test_configure_once_masks_a_handler_a_host_hung_on_a_child_logger(
    host_logging: tuple[logging.Logger, io.StringIO],
) -> None:
    # GIVEN a host that also writes mesh's lines through a handler of its own on "mesh"
    mesh_log = logging.getLogger("mesh")
    own = io.StringIO()
    handler = logging.StreamHandler(own)
    mesh_log.addHandler(handler)
    try:
        # WHEN the web app's set-up runs and mesh.ui logs a session token
        logs.configure_once({"MESH_LOG": "error"})
        logging.getLogger("mesh.ui").warning("session token=%s", ROLE_SESSION_TOKEN)
    finally:
        mesh_log.removeHandler(handler)
        handler.removeFilter(logs._FILTER)
    # THEN that handler's line is masked too
    assert own.getvalue() == f"session token={logs.MASK}\n"
    assert found_markers(own.getvalue(), STATIC_MARKERS) == []
