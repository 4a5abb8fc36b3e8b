"""The CLI on hostile ground (issue 8, section 5): closed pipes, absurd numbers, bytes that are
not UTF-8, control characters, another working folder, and the install step of scripts/dev.

Most tests run ``mesh.cli.main`` in-process; the ones about pipes, argv bytes, encodings and
the installed ``mesh`` command run real processes, because that is where those things happen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mesh.cli
import mesh.settings
from mesh.cli import main
from mesh.errors import InvalidInput
from tests.support import Outcome, assert_one_sentence_on_stderr

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CAROL_ACCOUNT = "444455556666"  # carol's account in the demo users file


def carol_requests(*extra: str) -> list[str]:
    """carol asks for sales_orders.orders (no PII: granted at once)."""
    argv = ["request", "--as", "carol", "--database", "sales_orders", "--table", "orders"]
    return [*argv, "--account", CAROL_ACCOUNT, "--reason", "a dashboard", *extra]


def run_in_process(capsys: pytest.CaptureFixture[str], *argv: str) -> Outcome:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return Outcome(code=code, out=out, err=err)


def run_process(
    argv: list[str | bytes], *, env: dict[str, str] | None = None, cwd: Path = PROJECT
) -> Outcome:
    done = subprocess.run(
        argv,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return Outcome(
        code=done.returncode,
        out=done.stdout.decode("utf-8", "backslashreplace"),
        err=done.stderr.decode("utf-8", "backslashreplace"),
    )


def installed_mesh() -> Path:
    command = BIN / "mesh"
    assert command.exists(), (
        f"{command} is missing: the project is not installed in this venv; "
        "scripts/dev installs it (pip install --no-deps -e .)"
    )
    return command


@pytest.fixture(autouse=True)
def no_secrets_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's .streamlit/secrets.toml must not change what the CLI sees here."""
    monkeypatch.setattr(mesh.settings, "read_secrets", lambda *args, **kwargs: {})


# 1. a reader that stops early ---------------------------------------------------------------


@pytest.mark.parametrize("argv", [["catalog", "--json"], ["catalog"]], ids=["json", "text"])
def test_a_reader_that_closes_the_pipe_early_ends_the_command_quietly_with_141(
    aws_env: dict[str, str], argv: list[str]
) -> None:
    # GIVEN a synced catalog index (a first `catalog` would say on stderr that it syncs)
    synced = subprocess.run(
        [sys.executable, "-m", "mesh", "sync"],
        env={**os.environ, **aws_env},
        cwd=PROJECT,
        capture_output=True,
        timeout=120,
    )
    assert synced.returncode == 0, synced.stderr
    # AND the catalog command writing into a pipe whose reader has already gone, as with
    # `mesh catalog --json | head` when head has read its lines
    process = subprocess.Popen(
        [sys.executable, "-m", "mesh", *argv],
        env={**os.environ, **aws_env},
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # long before the process has imported boto3 and read the catalog
    # WHEN it writes the catalog
    err = process.stderr.read().decode()
    code = process.wait(timeout=120)
    # THEN it exits 141 (128 + SIGPIPE, as a shell reports) and prints nothing at all
    assert code == 141, err
    assert err == ""


# 2. --days out of range ---------------------------------------------------------------------


@pytest.mark.parametrize("days", ["99999999999", "3651", "0", "-1", "soon", "1.5", ""])
def test_days_that_no_grant_can_last_are_refused_with_exit_2_naming_the_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, days: str
) -> None:
    # GIVEN settings that would stop any command that got as far as reading them
    monkeypatch.setenv("MESH_MODE", "bogus")
    # WHEN carol asks for access for that many days
    result = run_in_process(capsys, *carol_requests("--days", days))
    # THEN the argument itself is refused: exit 2, one sentence naming --days and the range
    assert result.code == 2, result.err
    assert_one_sentence_on_stderr(result)
    assert "--days" in result.err
    assert "from 1 to 3650" in result.err
    assert "unexpected" not in result.err
    assert result.out == ""


@pytest.mark.parametrize("days", ["1", "3650"])
def test_days_at_either_end_of_the_range_grant_access_that_ends_then(
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    days: str,
) -> None:
    # GIVEN aws mode against the seeded moto server
    for name, value in aws_env.items():
        monkeypatch.setenv(name, value)
    # WHEN carol asks for a clean table for the shortest or longest time
    result = run_in_process(capsys, *carol_requests("--days", days, "--json"))
    # THEN it is granted, with an end
    assert result.code == 0, result.err
    assert result.json()["status"] == "granted"
    assert result.json()["expires_at"] is not None


# 3. bytes that are not UTF-8 ----------------------------------------------------------------


def test_an_argument_with_a_lone_surrogate_is_refused_before_anything_reads_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN settings that would stop any command that got as far as reading them
    monkeypatch.setenv("MESH_MODE", "bogus")
    # WHEN the reason holds the surrogate Python makes of the byte 0xff in argv
    result = run_in_process(capsys, *carol_requests("--reason", "ok \udcff"))
    # THEN it is malformed input: exit 2, one sentence showing the byte as \xff
    assert result.code == 2, result.err
    assert_one_sentence_on_stderr(result)
    assert "not UTF-8" in result.err
    assert "\\xff" in result.err
    assert "MESH_MODE" not in result.err


def test_a_real_process_given_bytes_that_are_not_utf8_exits_2_without_a_traceback() -> None:
    # GIVEN argv holding the byte 0xff, as a shell passes $'\xff'
    argv: list[str | bytes] = [sys.executable, "-m", "mesh", *carol_requests()]
    argv[argv.index("a dashboard")] = b"caf\xe9 in latin-1"
    # WHEN the command runs
    result = run_process(argv, env={"LC_ALL": "C.UTF-8"})
    # THEN it exits 2 with one sentence naming the byte
    assert result.code == 2, result.err
    assert_one_sentence_on_stderr(result)
    assert "caf\\xe9 in latin-1" in result.err
    assert result.out == ""


def test_output_the_terminal_cannot_encode_is_escaped_not_fatal(tmp_path: Path) -> None:
    # GIVEN a valid policy file whose name is not ASCII, and an output that takes only ASCII
    policy = tmp_path / "pölicy.yaml"
    shutil.copy(PROJECT / "examples" / "policies" / "default.yaml", policy)
    env = {"PYTHONIOENCODING": "ascii", "MESH_DB": str(tmp_path / "demo.db")}
    # WHEN the policy is checked, which prints the file's name
    result = run_process([sys.executable, "-m", "mesh", "policy", "check", str(policy)], env=env)
    # THEN it works, the name written with a backslash escape
    assert result.code == 0, result.err
    assert "p\\xf6licy.yaml: valid" in result.out


# 4. control characters in what the CLI echoes ------------------------------------------------

ESCAPES = "\x1b[2J\x1b]0;owned\x07\x9b31m\nnext line"


def assert_no_control_characters(text: str) -> None:
    assert [c for c in text.rstrip("\n") if not c.isprintable()] == []


def test_a_bad_option_is_echoed_with_its_control_characters_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # WHEN an option full of terminal escape sequences is given
    result = run_in_process(capsys, "catalog", f"--bogus{ESCAPES}")
    # THEN the refusal shows them as escapes, on one line
    assert result.code == 2
    assert_one_sentence_on_stderr(result)
    assert_no_control_characters(result.err)
    assert "--bogus\\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\nnext line" in result.err


def test_a_bad_choice_in_a_subcommand_is_echoed_with_its_control_characters_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # WHEN a policy verb that does not exist, full of escape sequences, is given
    result = run_in_process(capsys, "policy", ESCAPES)
    # THEN the refusal shows them as escapes, on one line
    assert result.code == 2
    assert_one_sentence_on_stderr(result)
    assert_no_control_characters(result.err)


@pytest.mark.parametrize(
    ("failure", "code"),
    [(InvalidInput(f"Bad value {ESCAPES}."), 2), (RuntimeError(f"boom {ESCAPES}"), 1)],
    ids=["refusal", "unexpected"],
)
def test_error_messages_are_printed_with_control_characters_escaped(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    code: int,
) -> None:
    # GIVEN a failure whose message carries terminal escape sequences and a newline
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise failure

    monkeypatch.setattr(mesh.cli, "load_settings", fail)
    # WHEN a command meets it
    result = run_in_process(capsys, "catalog")
    # THEN its exit code stands, and the message is one line with the characters escaped
    assert result.code == code
    assert_one_sentence_on_stderr(result)
    assert_no_control_characters(result.err)
    assert "\\x1b[2J" in result.err


# 5. the installed `mesh` command ------------------------------------------------------------


def test_the_mesh_command_works_from_any_folder(tmp_path: Path) -> None:
    # WHEN `mesh --help` runs in a folder outside the repository
    result = run_process([str(installed_mesh()), "--help"], cwd=tmp_path)
    # THEN it prints the help, under the name mesh
    assert result.code == 0, result.err
    assert result.out.startswith("usage: mesh ")
    assert "request" in result.out


def test_python_dash_m_mesh_still_works_and_reads_the_packaged_demo_users(tmp_path: Path) -> None:
    # GIVEN demo mode with no demo running, from a folder outside the repository
    env = {"MESH_DB": str(tmp_path / "demo.db")}
    for argv in ([sys.executable, "-m", "mesh"], [str(installed_mesh())]):
        # WHEN the catalog is read
        result = run_process([*argv, "catalog"], env=env, cwd=tmp_path)
        # THEN the settings (the demo users file among them) were found, and only the
        # missing demo stops it
        assert result.code == 2, result.err
        assert_one_sentence_on_stderr(result)
        assert "python -m mesh demo" in result.err


def test_help_of_python_dash_m_mesh_says_mesh(capsys: pytest.CaptureFixture[str]) -> None:
    # WHEN the help is printed in-process
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    # THEN it exits 0 and names the command mesh
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith("usage: mesh ")


# 6. scripts/dev installs only when something changed ----------------------------------------

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../../calls.log"
[ -n "${FAIL_PIP:-}" ] && [ "$2" = pip ] && { echo "pip: no network" >&2; exit 1; }
exit 0
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of scripts/dev and the files it reads, with a .venv whose python only logs."""
    for name in ("scripts/dev", "requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, tmp_path / name)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


def dev(checkout: Path, *argv: str, **env: str) -> tuple[Outcome, list[str]]:
    """Run scripts/dev in ``checkout``; return the outcome and the python calls it made."""
    log = checkout / "calls.log"
    log.unlink(missing_ok=True)
    result = run_process(["bash", str(checkout / "scripts" / "dev"), *argv], env=env)
    return result, log.read_text().splitlines() if log.exists() else []


def test_dev_demo_says_it_installs_then_skips_installing_until_requirements_change(
    checkout: Path,
) -> None:
    # WHEN the demo starts for the first time
    first, calls = dev(checkout, "demo", "--port", "8611")
    # THEN it says what it installs, installs the requirements and the project (editable),
    # and passes the arguments on to `mesh demo`
    assert first.code == 0, first.err
    assert first.out.startswith("Installing the app's Python packages into .venv")
    assert [c.split()[:4] for c in calls[:2]] == [["-m", "pip", "install", "--quiet"]] * 2
    assert "-r requirements.txt" in calls[0]
    assert "--no-deps -e ." in calls[1]
    assert calls[2:] == ["-m mesh demo --port 8611"]
    # WHEN it starts again with nothing changed
    again, calls = dev(checkout, "demo")
    # THEN it installs nothing and says nothing
    assert (again.code, again.out, calls) == (0, "", ["-m mesh demo"])
    # WHEN a requirement changes
    with (checkout / "requirements.txt").open("a") as requirements:
        requirements.write("rich==14.0.0\n")
    changed, calls = dev(checkout, "demo")
    # THEN it installs again
    assert changed.out.startswith("Installing")
    assert len(calls) == 3


def test_dev_stops_when_the_install_fails_and_tries_again_next_time(checkout: Path) -> None:
    # WHEN pip fails
    failed, calls = dev(checkout, "demo", FAIL_PIP="1")
    # THEN the script stops with pip's message, before starting the demo
    assert failed.code != 0
    assert "pip: no network" in failed.out + failed.err
    assert calls == [calls[0]] and "pip install" in calls[0]
    # WHEN it runs again and pip works
    _, calls = dev(checkout, "demo")
    # THEN it installs this time
    assert len(calls) == 3
