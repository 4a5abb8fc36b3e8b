"""One approval policy governs every process on a store.

The first process to run records its policy (fingerprint, file and text) in the store. A
process whose policy differs may read, but is refused when it would submit, decide, retry or
run the periodic job, with a sentence naming both policies; `mesh policy activate` switches
deliberately, after the start-up checks, and is audited. A demo's CLI takes the demo's policy
and web address from the demo's state, so it never forks the policy by accident.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

import mesh.cli
import mesh.settings
from mesh.errors import PolicyMismatch
from mesh.models import Action, Status
from mesh.services import BUILT_IN, Services, adopt_demo_state, build
from mesh.settings import load_settings
from tests.support import Outcome, assert_one_sentence_on_stderr

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "policies"
TWO_STEP = EXAMPLES / "two-step-pii.yaml"
ANALYTICS = "444455556666"
REASON = "monthly close review for the audit committee"


@pytest.fixture
def start(aws_env: dict[str, str]) -> Callable[[Path | None], Services]:
    """Start a process on the shared store, with MESH_POLICY naming ``policy`` (or unset)."""

    def started(policy: Path | None) -> Services:
        env = {**aws_env, **({"MESH_POLICY": str(policy)} if policy else {})}
        return build(load_settings(env, {}))

    return started


@pytest.fixture
def cli(
    aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Outcome]:
    """`mesh` in this process, on the shared store; ``policy`` sets MESH_POLICY."""
    monkeypatch.setattr(mesh.settings, "read_secrets", lambda *args, **kwargs: {})
    for name, value in aws_env.items():
        monkeypatch.setenv(name, value)

    def run(*argv: str, policy: Path | None = None) -> Outcome:
        if policy is None:
            monkeypatch.delenv("MESH_POLICY", raising=False)
        else:
            monkeypatch.setenv("MESH_POLICY", str(policy))
        capsys.readouterr()
        code = mesh.cli.main(list(argv))
        out, err = capsys.readouterr()
        return Outcome(code=code, out=out, err=err)

    return run


def ask(services: Services) -> Status:
    return services.marketplace.submit(
        "carol",
        database="sales_orders",
        table="customers",
        account=ANALYTICS,
        reason=REASON,
        duration=timedelta(days=30),
    ).status


# The first process records its policy ----------------------------------------------------------


def test_first_process_records_its_policy_and_audits_it(
    start: Callable[[Path | None], Services],
) -> None:
    # WHEN the first process starts with the two-step policy
    first = start(TWO_STEP)
    # THEN the store records that policy, its text and who recorded it
    in_force = first.marketplace.store.policy_in_force()
    assert in_force is not None
    assert in_force.source == str(TWO_STEP)
    assert in_force.text == TWO_STEP.read_text()
    assert in_force.fingerprint == first.marketplace.policy.fingerprint  # type: ignore[union-attr]
    activated = first.marketplace.audit(action=Action.POLICY_ACTIVATED.value)
    assert [e.details["source"] for e in activated] == [str(TWO_STEP)]


def test_second_process_with_the_same_policy_acts_normally(
    start: Callable[[Path | None], Services],
) -> None:
    start(TWO_STEP)
    second = start(TWO_STEP)
    assert ask(second) is Status.PENDING_APPROVAL
    assert len(second.marketplace.audit(action=Action.POLICY_ACTIVATED.value)) == 1


def test_same_policy_in_another_layout_is_the_same_policy(
    start: Callable[[Path | None], Services], tmp_path: Path
) -> None:
    start(TWO_STEP)
    commented = tmp_path / "same.yaml"
    commented.write_text("# the same rules, another file\n" + TWO_STEP.read_text() + "\n\n")
    assert ask(start(commented)) is Status.PENDING_APPROVAL


# A process whose policy differs may read, not act ----------------------------------------------


def test_process_with_another_policy_is_refused_every_change_and_names_both_policies(
    start: Callable[[Path | None], Services],
) -> None:
    # GIVEN the demo ran first with the two-step policy, and a request waits in it
    web = start(TWO_STEP)
    waiting = web.marketplace.submit(
        "carol",
        database="sales_orders",
        table="customers",
        account=ANALYTICS,
        reason=REASON,
        duration=timedelta(days=30),
    )
    # WHEN a process without MESH_POLICY (the built-in policy) starts on the same store
    other = start(None)
    m = other.marketplace
    # THEN it may read
    assert [r.id for r in m.requests()] == [waiting.id]
    assert [i.request.id for i in m.pending_for("sam")] == [waiting.id]
    # AND it is refused to submit, decide, retry and run the periodic job
    refusals = {
        "submit": lambda: ask(other),
        "approve": lambda: m.approve(waiting.id, "sam"),
        "deny": lambda: m.deny(waiting.id, "sam", comment="no"),
        "retry": lambda: m.retry(waiting.id, "carol"),
        "tick": other.lifecycle.tick,
        "reconcile --fix": lambda: other.lifecycle.reconcile(fix=True),
    }
    for name, attempt in refusals.items():
        with pytest.raises(PolicyMismatch) as refused:
            attempt()
        message = refused.value.message
        assert BUILT_IN in message and str(TWO_STEP) in message, name
        assert "mesh policy activate" in message, name
    # AND the request still waits for the two-step policy's first step, untouched
    after = web.marketplace.store.get(waiting.id)
    assert after is not None and after.status is Status.PENDING_APPROVAL
    assert web.marketplace.store.approvals(waiting.id) == []


def test_cli_with_another_policy_is_refused_with_one_sentence_and_exit_2(
    start: Callable[[Path | None], Services], cli: Callable[..., Outcome]
) -> None:
    start(TWO_STEP)
    # WHEN the CLI runs without MESH_POLICY
    refused = cli(
        "request",
        "--as",
        "carol",
        "--database",
        "sales_orders",
        "--table",
        "customers",
        "--account",
        ANALYTICS,
        "--reason",
        "short",
    )
    # THEN it says which policies differ and how to switch, and stores nothing
    assert refused.code == 2
    assert_one_sentence_on_stderr(refused)
    assert "two-step-pii.yaml" in refused.err
    assert cli("requests", "--json").json() == []


# Switching deliberately ------------------------------------------------------------------------


def test_policy_activate_switches_the_policy_in_force_and_audits_who_did_it(
    start: Callable[[Path | None], Services], cli: Callable[..., Outcome]
) -> None:
    old = start(None)
    # WHEN an operator activates the two-step policy
    switched = cli("policy", "activate", str(TWO_STEP), "--as", "ada", "--json")
    # THEN it is in force, audited with the policy it replaced
    assert switched.code == 0, switched.err
    assert switched.json()["source"] == str(TWO_STEP)
    activated = old.marketplace.audit(action=Action.POLICY_ACTIVATED.value)
    assert [e.details["source"] for e in activated] == [BUILT_IN, str(TWO_STEP)]
    assert activated[-1].details["previous"]["source"] == BUILT_IN
    assert activated[-1].actor.startswith("ada")
    # AND the process still running the old policy is refused; one with the new one acts
    with pytest.raises(PolicyMismatch):
        ask(old)
    assert ask(start(TWO_STEP)) is Status.PENDING_APPROVAL


def test_policy_activate_refuses_a_broken_file_and_changes_nothing(
    start: Callable[[Path | None], Services], cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    running = start(TWO_STEP)
    broken = tmp_path / "broken.yaml"
    broken.write_text("levels: [\n")
    refused = cli("policy", "activate", str(broken))
    assert refused.code == 2
    assert_one_sentence_on_stderr(refused)
    assert ask(running) is Status.PENDING_APPROVAL  # the policy in force is unchanged


def test_policy_activate_needs_a_file_or_built_in(cli: Callable[..., Outcome]) -> None:
    refused = cli("policy", "activate")
    assert refused.code == 2
    assert "--built-in" in refused.err


def test_policy_activate_built_in_switches_back(
    start: Callable[[Path | None], Services], cli: Callable[..., Outcome]
) -> None:
    start(TWO_STEP)
    assert cli("policy", "activate", "--built-in").code == 0
    assert ask(start(None)) is Status.PENDING_APPROVAL


# The demo's CLI takes the demo's policy and address --------------------------------------------


def test_demo_cli_takes_the_running_demos_policy_and_base_url(
    moto_endpoint: str, tmp_path: Path
) -> None:
    state = tmp_path / "demo-standin.json"
    state.write_text(
        json.dumps(
            {
                "endpoint": moto_endpoint,
                "policy": str(TWO_STEP),
                "base_url": "http://localhost:8611",
            }
        )
    )
    settings = load_settings({"MESH_DB": str(tmp_path / "demo.db")}, {})
    adopted = adopt_demo_state(settings)
    assert adopted.policy_path == TWO_STEP
    assert adopted.base_url == "http://localhost:8611"


def test_demo_cli_keeps_a_policy_set_on_purpose(moto_endpoint: str, tmp_path: Path) -> None:
    state = tmp_path / "demo-standin.json"
    state.write_text(json.dumps({"endpoint": moto_endpoint, "policy": str(TWO_STEP)}))
    chosen = EXAMPLES / "default.yaml"
    settings = load_settings({"MESH_DB": str(tmp_path / "d.db"), "MESH_POLICY": str(chosen)}, {})
    assert adopt_demo_state(settings).policy_path == chosen


def test_no_running_demo_leaves_the_settings_alone(tmp_path: Path) -> None:
    state = tmp_path / "demo-standin.json"
    state.write_text(json.dumps({"endpoint": "http://127.0.0.1:9", "policy": str(TWO_STEP)}))
    settings = load_settings({"MESH_DB": str(tmp_path / "d.db")}, {})
    assert adopt_demo_state(settings) == settings


# Review findings ---------------------------------------------------------------------------------


def test_policy_activate_finds_a_relative_file_as_mesh_policy_does(
    start: Callable[[Path | None], Services],
    cli: Callable[..., Outcome],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    start(None)
    monkeypatch.chdir(tmp_path)  # not the project folder
    switched = cli("policy", "activate", "examples/policies/two-step-pii.yaml", "--json")
    assert switched.code == 0, switched.err
    assert switched.json()["source"] == str(TWO_STEP)


def test_policy_activate_refused_for_a_waiting_request_says_so_not_that_the_file_is_bad(
    start: Callable[[Path | None], Services], cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    # GIVEN a request waiting for the privacy office under the two-step policy
    assert ask(start(TWO_STEP)) is Status.PENDING_APPROVAL
    started = start(TWO_STEP)
    waiting = started.marketplace.requests()[0]
    started.marketplace.approve(waiting.id, "sam")
    # WHEN a policy without that group is activated
    refused = cli("policy", "activate", "--built-in")
    # THEN it is refused for the waiting request, and the file is not called invalid
    assert refused.code == 5, refused.err
    assert_one_sentence_on_stderr(refused)
    assert "cannot be activated now" in refused.err and "invalid" not in refused.err
    assert waiting.id in refused.err


def test_the_refusal_of_another_policy_is_one_sentence(
    start: Callable[[Path | None], Services],
) -> None:
    start(TWO_STEP)
    with pytest.raises(PolicyMismatch) as refused:
        ask(start(None))
    assert refused.value.message.count(". ") == 0
