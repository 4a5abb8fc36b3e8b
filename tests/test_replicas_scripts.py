"""The replica scripts (benchmarks/replicas_*.py) keep working, and what they print holds.

Each runs at a tiny size against the test PostgreSQL server and the session's moto server:
two (or eight) processes on one database. The assertions read the printed figures, so a
double decision, a lost submission or an unrecovered kill fails here, not only an exit code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_script(name: str, *argv: str, pg: str, aws: str) -> tuple[int, dict[str, str], str]:
    """Run benchmarks/<name>.py; its exit code, its ``name: value`` figures and its output."""
    script = str(ROOT / "benchmarks" / f"{name}.py")
    done = subprocess.run(
        [sys.executable, script, *argv, "--pg-url", pg, "--aws-endpoint", aws],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = done.stdout + done.stderr
    figures: dict[str, str] = {}
    for line in done.stdout.splitlines():
        found = re.fullmatch(r"([a-z0-9 /]+): (.*)", line)
        if found:
            figures.setdefault(found[1], found[2])
    return done.returncode, figures, output


def test_approval_races_across_two_replicas_decide_and_grant_each_request_once(
    pg_server_url: str, seeded: str
) -> None:
    # GIVEN two replicas on one database WHEN 8 races of two deciders each run (every kind)
    code, figures, output = run_script(
        "replicas_races", "--races", "8", pg=pg_server_url, aws=seeded
    )
    # THEN each request was decided once and granted at most once, as Lake Formation agrees
    assert figures.get("races") == "8", output
    assert figures["decisions"] == "8", output
    assert figures["decision calls"] == "16", output
    assert figures["double decisions"] == "0", output
    assert figures["double grants"] == "0", output
    assert figures["mismatched with lake formation"] == "0", output
    assert int(figures["granted"]) >= 2 and int(figures["denied"]) >= 1, output
    assert figures["crashes"] == "0", output
    assert figures["audit chain"].startswith("verifies"), output
    assert code == 0, output


def test_races_for_a_quorum_of_two_record_two_approvals_at_most_and_grant_once(
    pg_server_url: str, seeded: str
) -> None:
    # GIVEN a policy needing two of three stewards WHEN three deciders race, 4 times
    code, figures, output = run_script(
        "replicas_races", "--races", "4", "--quorum", "2", pg=pg_server_url, aws=seeded
    )
    # THEN no request holds more than two approvals, nor a deny beside a completed quorum
    assert (figures.get("races"), figures["quorum"]) == ("4", "2"), output
    assert figures["decision calls"] == "12", output
    assert figures["decisions"] == "4", output
    assert figures["double decisions"] == "0", output
    assert figures["double grants"] == "0", output
    assert figures["mismatched with lake formation"] == "0", output
    assert code == 0, output


def test_submissions_from_four_processes_on_two_replicas_are_all_stored_and_one_per_scope(
    pg_server_url: str, seeded: str
) -> None:
    # GIVEN 4 processes (2 a replica) WHEN they submit 40 distinct requests, then race on 3 scopes
    code, figures, output = run_script(
        "replicas_submissions",
        *("--submissions", "40", "--rounds", "3", "--processes", "4"),
        pg=pg_server_url,
        aws=seeded,
    )
    # THEN none is lost, and each contested scope holds exactly one request
    assert figures.get("submissions") == "40", output
    assert figures["stored"] == "40", output
    assert figures["submitted audit rows"] == "40", output
    assert figures["lost"] == "0", output
    assert figures["scopes with more than one request"] == "0", output
    assert figures["scopes with none"] == "0", output
    assert figures["told duplicate"] == str(3 * 3), output
    assert figures["audit chain"].startswith("verifies"), output
    assert code == 0, output


def test_replica_killed_mid_grant_is_taken_over_by_the_other_replicas_tick(
    pg_server_url: str, seeded: str
) -> None:
    # GIVEN replica A hangs in its Lake Formation grant WHEN it is killed, once before the
    # call and once after Lake Formation applied it (and once more at a random moment)
    code, figures, output = run_script(
        "replicas_kill",
        *("--kills", "2", "--random-kills", "1", "--window", "0.05", "--tx-kills", "1"),
        pg=pg_server_url,
        aws=seeded,
    )
    # THEN replica B's tick takes each over and grants it, exactly once in Lake Formation
    assert figures.get("kills") == "2", output
    assert figures["recovered"] == "2/2", output
    assert figures["found held by the takeover"] == "1", output
    # AND a kill at a random moment leaves it undecided or granted, with the write lock free
    assert figures["random kills recovered"] == "1/1", output
    # AND a kill inside the decision's transaction, the write lock held, leaves nothing of it
    assert figures["lock held at the kill"] == "1", output
    assert figures["rolled back whole and decided after"] == "1/1", output
    assert figures["tick errors"] == "0", output
    assert figures["audit chain"].startswith("verifies"), output
    assert code == 0, output
