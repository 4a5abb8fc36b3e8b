"""The shipped example policies, each loaded through MESH_POLICY and run with real requests.

The services are built as the app builds them, over the moto server seeded with the demo
mesh, so every grant here is a real Lake Formation call over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from mesh import approval
from mesh.errors import Conflict, Forbidden, InvalidInput, SettingError
from mesh.lifecycle import Lifecycle
from mesh.models import AccessRequest, Status
from mesh.services import Services, build
from mesh.settings import load_settings
from mesh.workflow import Marketplace
from tests.conftest import lake_formation_entries
from tests.support import Outcome, assert_one_sentence_on_stderr

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "policies"
ANALYTICS = "444455556666"
PARTNER = "777788889999"
LONG_REASON = "monthly close review for the audit committee"


def ask(market: Marketplace, database: str, table: str, *, days: int) -> AccessRequest:
    """Carol asks for a table for her analytics account, with a reason long enough for any
    of the examples' terms."""
    return market.submit(
        "carol",
        database=database,
        table=table,
        account=ANALYTICS,
        reason=LONG_REASON,
        duration=timedelta(days=days),
    )


@pytest.fixture
def in_process_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Outcome]:
    """Run `python -m mesh` in this process with the given environment."""
    import mesh.cli
    import mesh.settings

    monkeypatch.setattr(mesh.settings, "read_secrets", lambda *args, **kwargs: {})

    def run(env: dict[str, str], *argv: str) -> Outcome:
        monkeypatch.delenv("MESH_POLICY", raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = mesh.cli.main(list(argv))
        out, err = capsys.readouterr()
        return Outcome(code=code, out=out, err=err)

    return run


@pytest.fixture
def with_policy(aws_env: dict[str, str]) -> Callable[[str], Services]:
    """Build the services with MESH_POLICY naming one shipped example."""
    return lambda name: build(load_settings({**aws_env, "MESH_POLICY": str(EXAMPLES / name)}, {}))


def test_every_shipped_example_is_valid_against_the_demo_users() -> None:
    names = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert names == ["default.yaml", "restricted-stewards.yaml", "two-step-pii.yaml"]
    for name in names:
        assert approval.load(EXAMPLES / name).levels


def test_default_example_behaves_as_the_built_in_policy_on_every_demo_table(
    with_policy: Callable[[str], Services], aws: str
) -> None:
    # GIVEN the shipped default file, and the built-in default
    services = with_policy("default.yaml")
    market = services.marketplace
    snapshot = services.catalog.snapshot()
    # WHEN every database and table of the demo mesh is explained under both
    for database in snapshot.databases:
        if database.owner_account is None:
            continue
        for table in [None, *[t.name for t in snapshot.tables[database.name]]]:
            shipped = market.explain(database=database.name, table=table, account=ANALYTICS)
            market.rules = approval.DEFAULT
            built_in = market.explain(database=database.name, table=table, account=ANALYTICS)
            market.rules = services.marketplace.rules
            # THEN they agree on everything
            assert shipped.to_json() == built_in.to_json()
    # AND a real PII request waits for the owner, then is granted in Lake Formation
    request = market.submit(
        "carol", database="sales_orders", table="customers", account=ANALYTICS, reason="churn"
    )
    assert (request.status, request.level) == (Status.PENDING_APPROVAL, "pii")
    assert market.approve(request.id, "sam").status is Status.GRANTED
    assert lake_formation_entries(aws, ANALYTICS)


def test_two_step_example_needs_the_owner_then_the_privacy_office(
    with_policy: Callable[[str], Services], aws: str
) -> None:
    market = with_policy("two-step-pii.yaml").marketplace
    # a short reason, or no duration, is refused by the pii level's terms
    with pytest.raises(InvalidInput, match="at least 20 characters"):
        market.submit(
            "carol",
            database="sales_orders",
            table="customers",
            account=ANALYTICS,
            reason="churn",
            duration=timedelta(days=30),
        )
    with pytest.raises(InvalidInput, match="must say how long"):
        market.submit(
            "carol",
            database="sales_orders",
            table="customers",
            account=ANALYTICS,
            reason=LONG_REASON,
        )
    request = ask(market, "sales_orders", "customers", days=30)
    # step 1: the owner; admins are not approvers in this policy
    with pytest.raises(Forbidden):
        market.approve(request.id, "ada")
    with pytest.raises(Forbidden):
        market.approve(request.id, "priya")
    after_owner = market.approve(request.id, "sam")
    assert after_owner.status is Status.PENDING_APPROVAL
    assert [i.request.id for i in market.pending_for("priya")] == [request.id]
    assert lake_formation_entries(aws, ANALYTICS) == []
    # step 2: the privacy office (priya, through the users file) grants it
    granted = market.approve(request.id, "priya", comment="lawful basis: contract")
    assert granted.status is Status.GRANTED
    assert lake_formation_entries(aws, ANALYTICS)
    # a table with no PII is still granted at once
    orders = market.submit(
        "carol", database="sales_orders", table="orders", account=ANALYTICS, reason="sales"
    )
    assert orders.status is Status.GRANTED


def test_two_step_example_escalates_a_silent_owner_to_data_governance(
    with_policy: Callable[[str], Services],
) -> None:
    services = with_policy("two-step-pii.yaml")
    market = services.marketplace
    request = ask(market, "hr_people", "employees", days=7)
    with pytest.raises(Forbidden):
        market.approve(request.id, "ada")
    # WHEN the periodic job runs 49 hours later
    real_clock = market.clock
    market.clock = lambda: real_clock() + timedelta(hours=49)
    job = Lifecycle(
        market, remind_after=timedelta(days=30), warn_before=timedelta(days=1), grant_retry_limit=1
    )
    assert job.tick().escalated == [request.id]
    # THEN ada (data-governance) may fill the owner's step, and the privacy office decides
    assert market.approve(request.id, "ada").step == 1
    assert market.approve(request.id, "priya").status is Status.GRANTED


def test_restricted_example_needs_two_of_three_stewards_for_at_most_30_days(
    with_policy: Callable[[str], Services], aws: str
) -> None:
    market = with_policy("restricted-stewards.yaml").marketplace
    ask = {
        "database": "finance_ledger",
        "table": "gl_entries",
        "account": PARTNER,
        "reason": "external audit of the 2026 ledger postings",
    }
    with pytest.raises(InvalidInput, match="at most 30 days"):
        market.submit("dan", **ask, duration=timedelta(days=31))
    request = market.submit("dan", **ask, duration=timedelta(days=30))
    assert (request.level, request.status) == ("restricted", Status.PENDING_APPROVAL)
    # fiona owns finance but is no steward, ada is an admin but may not fill a place here;
    # sam is a steward, and cannot fill two places
    with pytest.raises(Forbidden):
        market.approve(request.id, "fiona")
    with pytest.raises(Forbidden):
        market.approve(request.id, "ada")
    market.approve(request.id, "sam")
    with pytest.raises(Conflict):
        market.approve(request.id, "sam")
    assert lake_formation_entries(aws, PARTNER) == []
    granted = market.approve(request.id, "mia")
    assert granted.status is Status.GRANTED
    assert granted.expires_at is not None
    assert lake_formation_entries(aws, PARTNER)


def test_restricted_example_reads_classification_and_fails_closed_on_unknown_values(
    with_policy: Callable[[str], Services],
) -> None:
    market = with_policy("restricted-stewards.yaml").marketplace

    def level(table: str, account: str) -> tuple[str, bool]:
        verdict = market.explain(database="finance_ledger", table=table, account=account)
        return verdict.level, verdict.needs_approval

    # an unmapped classification ("tbd") counts as the strictest level
    assert level("cost_centers", ANALYTICS) == ("restricted", True)
    # internal: granted at once inside the finance domain and to the allow-listed partner
    assert level("budgets", ANALYTICS) == ("internal", False)
    assert level("budgets", PARTNER) == ("internal", False)
    # nothing classified: public
    assert level("fx_rates", PARTNER) == ("public", False)
    # a real internal request from inside the domain is granted at once, and says why
    request = market.submit(
        "carol", database="finance_ledger", table="budgets", account=ANALYTICS, reason="plan"
    )
    assert request.status is Status.GRANTED
    assert "belongs to domain finance" in request.policy_reason


# The command line: policy check and policy explain --------------------------------------------


def test_policy_check_accepts_each_shipped_example(
    in_process_cli: Callable[..., Outcome], aws_env: dict[str, str]
) -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        result = in_process_cli(aws_env, "policy", "check", str(path), "--json")
        assert result.code == 0, result.err
        summary = result.json()
        assert summary["valid"] is True
        assert summary["file"] == str(path)


def test_policy_check_refuses_a_broken_file_with_one_sentence_and_exit_2(
    in_process_cli: Callable[..., Outcome], aws_env: dict[str, str], tmp_path: Path
) -> None:
    broken = tmp_path / "policy.yaml"
    broken.write_text(
        (EXAMPLES / "two-step-pii.yaml").read_text().replace("quorum: any\n", "quorum: most\n", 1)
    )
    result = in_process_cli(aws_env, "policy", "check", str(broken))
    assert result.code == 2
    assert result.out == ""
    assert result.err.strip() == (
        f"error: The policy file {broken} is invalid at rules.pii.steps[0].quorum: 'most' is "
        "not a quorum: use any, all, or a whole number of at least 1."
    )


def test_a_broken_policy_file_stops_every_other_command_too(
    in_process_cli: Callable[..., Outcome], aws_env: dict[str, str], tmp_path: Path
) -> None:
    broken = tmp_path / "policy.yaml"
    broken.write_text("version: 1\nlevels: []\nrules: {}\n")
    env = {**aws_env, "MESH_POLICY": str(broken)}
    result = in_process_cli(env, "requests")
    assert result.code == 2
    assert result.err.startswith(f"error: MESH_POLICY file {broken} is invalid at levels: ")
    with pytest.raises(SettingError, match="is invalid at levels"):
        build(load_settings(env, {}))


def test_policy_explain_agrees_with_the_request_that_follows(
    in_process_cli: Callable[..., Outcome], aws_env: dict[str, str]
) -> None:
    env = {**aws_env, "MESH_POLICY": str(EXAMPLES / "two-step-pii.yaml")}
    scopes = [
        ("sales_orders", "customers", None),
        ("sales_orders", "customers", "customer_id,country"),
        ("sales_orders", "orders", None),
        ("hr_people", None, None),
    ]
    for database, table, columns in scopes:
        where = ["--database", database, *(["--table", table] if table else [])]
        where += ["--columns", columns] if columns else []
        explained = in_process_cli(
            env, "policy", "explain", *where, "--account", ANALYTICS, "--json"
        )
        assert explained.code == 0, explained.err
        verdict = explained.json()
        made = in_process_cli(
            env,
            "request",
            "--as",
            "carol",
            *where,
            "--account",
            ANALYTICS,
            "--reason",
            LONG_REASON,
            "--days",
            "30",
            "--json",
        )
        request = made.json()
        assert request["level"] == verdict["level"]
        assert request["steps"] == verdict["steps"]
        assert request["policy_reason"] == verdict["reason"]
        assert (request["status"] == "pending_approval") == verdict["needs_approval"]


def test_policy_explain_prints_level_rule_steps_and_reason(
    in_process_cli: Callable[..., Outcome], aws_env: dict[str, str]
) -> None:
    env = {**aws_env, "MESH_POLICY": str(EXAMPLES / "two-step-pii.yaml")}
    result = in_process_cli(
        env, "policy", "explain", "--database", "sales_orders", "--table", "customers",
        "--account", ANALYTICS,
    )  # fmt: skip
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "level:    pii"
    assert "  column email has pii_flag=TRUE" in lines
    assert "rule:     approval in 2 steps" in lines
    assert "  1. an owner of the product: any one; after 48 h also data-governance" in lines
    assert "  2. privacy-office: any one" in lines
    assert "outcome:  waits for approval" in lines
    assert any(line.startswith("terms:    at most 90 days") for line in lines)
    # AND it created nothing
    assert json.loads(in_process_cli(env, "requests", "--json").out) == []


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["--database", "sales_orders", "--account", "12"], 2, "12 digits"),
        (["--database", "nope", "--account", ANALYTICS], 4, "no database 'nope'"),
        (["--database", "sales_orders", "--table", "customers", "--columns", "ssn",
          "--account", ANALYTICS], 2, "'ssn'"),
        (["--database", "sales_orders", "--columns", "a", "--account", ANALYTICS], 2,
         "whole-database"),
    ],
)  # fmt: skip
def test_policy_explain_refuses_bad_input_as_the_contract_says(
    in_process_cli: Callable[..., Outcome],
    aws_env: dict[str, str],
    argv: list[str],
    code: int,
    says: str,
) -> None:
    # WHEN explain is given bad input (exit 2) or a database that does not exist (exit 4)
    result = in_process_cli(aws_env, "policy", "explain", *argv)
    # THEN it refuses with one sentence and the contract's exit code
    assert result.code == code, result.err
    assert says in result.err
    assert_one_sentence_on_stderr(result)


def test_notifications_go_to_whoever_can_act_on_the_current_step(
    with_policy: Callable[[str], Services], aws: str
) -> None:
    from mesh.aws import ClientFactory
    from mesh.demo import data

    # GIVEN the demo's topics, and a two-step request
    data.seed_topics(ClientFactory(demo_endpoint=aws).client)
    services = with_policy("two-step-pii.yaml")
    market = services.marketplace
    request = ask(market, "sales_orders", "customers", days=30)

    def asked() -> list[tuple[str, str | None, str]]:
        return [
            (row["channel"], row["target"], row["status"])
            for row in services.marketplace.store.notifications(request_id=request.id)
            if row["kind"] == "approval_request"
        ]

    # THEN step 1 asks the owners, through the producer's topic
    assert asked() == [("producer", "111111111111", "sent")]
    # WHEN the owner approves, step 2 asks the privacy office on its own topic
    market.approve(request.id, "sam")
    assert asked()[1:] == [("group", data.PRIVACY_TOPIC, "sent")]
    # AND the escalation group of step 1, which has no topic, is recorded as not notified
    other = ask(market, "hr_people", "employees", days=7)
    real_clock = market.clock
    market.clock = lambda: real_clock() + timedelta(hours=49)
    Lifecycle(
        market, remind_after=timedelta(days=30), warn_before=timedelta(days=1), grant_retry_limit=1
    ).tick()
    rows = [
        r
        for r in services.marketplace.store.notifications(request_id=other.id)
        if r["channel"] == "group"
    ]
    assert [(r["status"], r["error"]) for r in rows] == [
        ("skipped", "group data-governance has no topic_arn in the approval policy")
    ]
    assert market.store.approvals(other.id) == []


def test_approvers_not_notified_is_about_the_current_step(
    with_policy: Callable[[str], Services], aws: str
) -> None:
    import boto3

    from mesh.aws import ClientFactory
    from mesh.demo import data

    # GIVEN the demo's topics, but the privacy office's topic is gone
    data.seed_topics(ClientFactory(demo_endpoint=aws).client)
    boto3.client("sns", region_name="us-east-1", endpoint_url=aws).delete_topic(
        TopicArn=data.PRIVACY_TOPIC
    )
    services = with_policy("two-step-pii.yaml")
    market = services.marketplace
    request = ask(market, "sales_orders", "customers", days=30)
    # THEN at step 1 the owners were notified
    assert services.outbox.owner_not_notified([request.id]) == {}
    # WHEN step 2 begins and its notification fails
    market.approve(request.id, "sam")
    # THEN the request shows as not notified, with the cause, though step 1's message went out
    causes = services.outbox.owner_not_notified([request.id])
    assert list(causes) == [request.id]
    assert causes[request.id].startswith("failed: ")


def test_policy_check_without_usable_settings_checks_the_named_file_and_says_what_it_skipped(
    in_process_cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    # GIVEN aws mode without a users file: the settings cannot be loaded
    broken_settings = {"MESH_MODE": "aws", "MESH_DB": str(tmp_path / "m.db")}
    # WHEN a named file is checked, it is checked, and the skipped users check is named
    named = in_process_cli(broken_settings, "policy", "check", str(EXAMPLES / "two-step-pii.yaml"))
    assert named.code == 0, named.err
    assert "groups NOT checked against a users file: MESH_USERS is not set" in named.out
    # AND with no file named, MESH_POLICY cannot be known, so it refuses rather than guess
    unnamed = in_process_cli(
        {**broken_settings, "MESH_POLICY": str(EXAMPLES / "two-step-pii.yaml")}, "policy", "check"
    )
    assert unnamed.code == 2
    assert "MESH_USERS is not set" in unnamed.err
    assert unnamed.out == ""


def test_policy_check_reports_a_broken_users_file_as_a_skipped_check(
    in_process_cli: Callable[..., Outcome], aws_env: dict[str, str], tmp_path: Path
) -> None:
    users = tmp_path / "users.yaml"
    users.write_text("credentials: {usernames: {}}\n")
    result = in_process_cli(
        {**aws_env, "MESH_USERS": str(users)}, "policy", "check", str(EXAMPLES / "default.yaml")
    )
    assert result.code == 0, result.err
    assert "groups NOT checked against a users file: MESH_USERS file" in result.out


def test_policy_check_refuses_an_edit_that_would_strand_a_waiting_request(
    in_process_cli: Callable[..., Outcome],
    with_policy: Callable[[str], Services],
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # GIVEN a restricted request waiting for two of three stewards
    market = with_policy("restricted-stewards.yaml").marketplace
    request = market.submit(
        "dan",
        database="finance_ledger",
        table="gl_entries",
        account=PARTNER,
        reason="external audit of the 2026 ledger postings",
        duration=timedelta(days=30),
    )
    # WHEN an edit leaves one steward (and a quorum of one for new requests)
    edited = tmp_path / "policy.yaml"
    edited.write_text(
        (EXAMPLES / "restricted-stewards.yaml")
        .read_text()
        .replace("members: [sam, mia, hank]", "members: [sam]")
        .replace("quorum: 2", "quorum: 1")
    )
    result = in_process_cli(aws_env, "policy", "check", str(edited))
    # THEN the check names the request that could no longer be approved
    assert result.code == 2
    assert f"request {request.id} could no longer be approved" in result.err
