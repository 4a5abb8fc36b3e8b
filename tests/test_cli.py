"""The CLI contract of ``python -m mesh`` (issue 2, section 10): verbs, JSON shapes, exit codes.

Most tests run ``mesh.cli.main`` in-process in aws mode against the shared moto server and
read stdout and stderr with capsys. A few run the real entry point in a subprocess, to prove
that ``python -m mesh`` works and that bad input never shows a traceback.

Speed: the moto server is reset and seeded once for this module (as in test_workflow.py), so
no test here uses the per-test ``aws`` fixture, which would wipe that state. Tests that change
anything get a fresh SQLite file and a users file whose consumer accounts no other test uses,
so their Lake Formation grants are theirs alone. Tests that only read or are refused share one
store holding a few requests made once.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

import mesh.cli
import mesh.settings
from mesh.aws import call
from mesh.cli import main
from mesh.demo import data, standin
from mesh.grants import LakeFormation
from mesh.models import GrantSpec
from mesh.services import Services, build
from mesh.settings import DEMO_USERS, load_settings
from mesh.store import NewEvent, Store
from mesh.workflow import Marketplace
from tests.conftest import REGION, reset_moto
from tests.support import (
    AUDIT_KEY,
    LINK_SECRET,
    Cli,
    Outcome,
    assert_one_sentence_on_stderr,
    environment_cli,
    init_store,
    moto_env,
    run_mesh,
)

PROJECT = Path(__file__).resolve().parent.parent

REQUEST_KEYS = {
    "id",
    "status",
    "database",
    "table",
    "account",
    "requester",
    "reason",
    "policy_reason",
    "decided_by",
    "comment",
    "error",
    "created_at",
    "updated_at",
    "expires_at",  # added by the access-lifecycle issue: null when access is unbounded
    "columns",  # added by the approval-policy issue: null for a whole table or database
    "level",  # the policy's sensitivity level of the scope
    "steps",  # the approval steps the policy set ([] when granted at once)
    "step",  # the current step (from 1) while pending approval, else null
}
AUDIT_KEYS = {"id", "at", "actor", "action", "request_id", "scope", "details"}
DATABASE_KEYS = {
    "name",
    "description",
    "owner_account",
    "owner_name",
    "pii_flag",
    "sensitive",
    "level",
    "tables",
}
TABLE_KEYS = {"name", "pii_columns", "sensitive", "level"}

_numbers = itertools.count(1)


def fresh_account() -> str:
    """A consumer account id that no other test in this session grants to."""
    return f"{880_000_000_000 + next(_numbers):012d}"


# Helpers -------------------------------------------------------------------------------------


def request_argv(
    user: str, database: str, table: str | None, account: str, reason: str = "a reason"
) -> list[str]:
    argv = ["request", "--as", user, "--database", database, "--account", account]
    argv += ["--reason", reason, "--json"]
    return argv + (["--table", table] if table else [])


def moto_client(service: str, endpoint: str) -> Any:
    """A client for the moto server with fake credentials (module fixtures run before the
    autouse fixture that sets them)."""
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def granted_to(endpoint: str, account: str) -> list[dict[str, Any]]:
    """The resources Lake Formation (moto) holds for ``account``, read directly."""
    lf = moto_client("lakeformation", endpoint)
    entries: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = lf.list_permissions(**({"NextToken": token} if token else {}))
        entries.extend(page["PrincipalResourcePermissions"])
        token = page.get("NextToken")
        if not token:
            break
    return [
        e["Resource"] for e in entries if e["Principal"]["DataLakePrincipalIdentifier"] == account
    ]


def table_names(resources: list[dict[str, Any]]) -> set[str]:
    return {r["Table"]["Name"] for r in resources if "Name" in r.get("Table", {})}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Fixtures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Settings for aws mode, with a store and users file of its own."""

    endpoint: str
    env: dict[str, str]
    mine: str  # carol's only consumer account; dan and mia may use it too
    partner: str  # dan's other account, which carol may not use


@dataclass(frozen=True)
class Made:
    pending: str  # carol's PII table request on `mine`, waiting for sam (Sales owner)
    granted: str  # carol's clean table request on `mine`, granted by the policy
    admins_own: str  # ada's PII table request on `partner`, pending
    partners: str  # dan's clean table request on `partner`, granted by the policy


def make_world(endpoint: str, folder: Path) -> World:
    """A users file like the demo's, but with consumer accounts no other test uses."""
    mine, partner = fresh_account(), fresh_account()
    document = yaml.safe_load(DEMO_USERS.read_text())
    users = document["credentials"]["usernames"]
    users["carol"]["accounts"] = [mine]
    users["dan"]["accounts"] = [partner, mine]
    users["mia"]["accounts"] = [mine]
    users_file = folder / "users.yaml"
    users_file.write_text(yaml.safe_dump(document))
    init_store(folder / "mesh.db")  # as `mesh init` makes it
    env = {
        "MESH_MODE": "aws",
        "MESH_DB": str(folder / "mesh.db"),
        "MESH_USERS": str(users_file),
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
        **moto_env(endpoint),
    }
    return World(endpoint=endpoint, env=env, mine=mine, partner=partner)


def make_requests(market: Marketplace, world: World) -> Made:
    def submit(user: str, table: str, account: str) -> str:
        return market.submit(
            user, database="sales_orders", table=table, account=account, reason="for a report"
        ).id

    return Made(
        pending=submit("carol", "customers", world.mine),
        granted=submit("carol", "orders", world.mine),
        admins_own=submit("ada", "customers", world.partner),
        partners=submit("dan", "orders", world.partner),
    )


def placeholders(world: World, made: Made) -> dict[str, str]:
    return {"mine": world.mine, "partner": world.partner, **made.__dict__}


def runner(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Cli:
    """Run ``python -m mesh ARGS`` in-process with ``env`` set."""
    return environment_cli(monkeypatch, capsys, env)


@pytest.fixture(autouse=True)
def no_secrets_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's .streamlit/secrets.toml must not change what the CLI sees here."""
    monkeypatch.setattr(mesh.settings, "read_secrets", lambda *args, **kwargs: {})


@pytest.fixture(scope="module")
def built() -> dict[tuple[Any, ...], Services]:
    return {}


@pytest.fixture(autouse=True)
def build_once_per_settings(
    monkeypatch: pytest.MonkeyPatch, built: dict[tuple[Any, ...], Services]
) -> None:
    """Reuse the services the CLI built for the same settings and AWS endpoint.

    Building them (three boto3 clients) takes most of a CLI run's time, and the refusal
    tables run the CLI dozens of times. Settings are still read on every run, and the
    subprocess tests still build everything from scratch.
    """

    def build_once(settings: Any, *, endpoint: str | None = None) -> Services:
        key = (settings, endpoint, os.environ.get("AWS_ENDPOINT_URL"))
        if key not in built:
            built[key] = build(settings, endpoint=endpoint)
        return built[key]

    monkeypatch.setattr(mesh.cli, "build", build_once)


@pytest.fixture(scope="module")
def seeded(moto_endpoint: str) -> str:
    """The shared moto server, reset and seeded with the demo mesh once for this module."""
    reset_moto(moto_endpoint)
    data.seed(moto_client("glue", moto_endpoint))
    return moto_endpoint


@pytest.fixture(scope="module")
def shared(seeded: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Made]:
    """One store with four requests, for tests that only read or are refused."""
    world = make_world(seeded, tmp_path_factory.mktemp("shared"))
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("MESH_", "AWS_")):
                patch.delenv(name)
        for name, value in world.env.items():
            patch.setenv(name, value)
        made = make_requests(build(load_settings(world.env, {})).marketplace, world)
    return world, made


@pytest.fixture
def shared_cli(shared: tuple[World, Made], monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Cli:
    """The CLI over the shared store: use it only for reads and refusals."""
    return runner(shared[0].env, monkeypatch, capsys)


@pytest.fixture
def world(seeded: str, tmp_path: Path) -> World:
    """A fresh store and fresh consumer accounts over the seeded mesh."""
    return make_world(seeded, tmp_path)


@pytest.fixture
def cli(world: World, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Cli:
    """The CLI over a fresh store of this test's own."""
    return runner(world.env, monkeypatch, capsys)


@pytest.fixture
def made(cli: Cli, world: World) -> Made:
    """Four requests in this test's own store, made through the use cases."""
    # mesh.cli.build is build_once here, so the CLI runs reuse these services
    return make_requests(mesh.cli.build(load_settings(world.env, {})).marketplace, world)


@dataclass
class Outage:
    """Lake Formation refuses the grants ``refuses`` picks while ``active``."""

    active: bool = True
    refuses: Callable[[GrantSpec], bool] = lambda spec: True


@pytest.fixture
def lake_formation_outage(monkeypatch: pytest.MonkeyPatch) -> Outage:
    """Make LakeFormation.grant fail as AWS does: a ClientError mapped through mesh.aws.call."""
    outage = Outage()
    real_grant = LakeFormation.grant

    def grant(self: LakeFormation, spec: GrantSpec) -> dict[str, Any]:
        if not (outage.active and outage.refuses(spec)):
            return real_grant(self, spec)

        def refused() -> dict[str, Any]:
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "not a grantor"}},
                "GrantPermissions",
            )

        return call("Lake Formation", "GrantPermissions", refused)

    monkeypatch.setattr(LakeFormation, "grant", grant)
    return outage


# catalog --------------------------------------------------------------------------------------


def test_catalog_json_lists_every_database_with_exactly_the_contract_fields(
    shared_cli: Cli,
) -> None:
    # GIVEN the seeded demo mesh
    # WHEN the catalog is printed as JSON
    result = shared_cli("catalog", "--json")
    # THEN every database and table is there with exactly the contract's keys and types
    assert result.code == 0
    databases = result.json()
    assert {d["name"] for d in databases} == set(data.DATABASES)
    for database in databases:
        assert set(database) == DATABASE_KEYS
        assert type(database["pii_flag"]) is bool
        assert type(database["sensitive"]) is bool
        assert {t["name"] for t in database["tables"]} == set(data.DATABASES[database["name"]][2])
        for table in database["tables"]:
            assert set(table) == TABLE_KEYS
            assert type(table["sensitive"]) is bool
            assert isinstance(table["pii_columns"], list)


def test_catalog_json_reads_owners_and_pii_the_way_the_contract_says(shared_cli: Cli) -> None:
    # GIVEN the demo mesh: legacy_exports has no data_owner; hr_people is flagged "yes";
    # sales_orders is unflagged but its customers table has PII columns; card_transactions
    # has a garbage flag ("partial") on a column and " y " on a partition key
    # WHEN the catalog is printed as JSON
    databases = {d["name"]: d for d in shared_cli("catalog", "--json").json()}
    tables = {(d["name"], t["name"]): t for d in databases.values() for t in d["tables"]}
    # THEN a database without an owner has a null owner_account
    assert databases["legacy_exports"]["owner_account"] is None
    assert databases["sales_orders"]["owner_account"] == "111111111111"
    assert databases["sales_orders"]["owner_name"] == "Sales"
    # THEN pii_flag is the database's own flag, and sensitive also looks into its tables
    assert databases["hr_people"]["pii_flag"] is True
    assert databases["sales_orders"]["pii_flag"] is False
    assert databases["sales_orders"]["sensitive"] is True
    assert databases["marketing_campaigns"]["sensitive"] is False
    # THEN pii_columns lists flagged columns in column order, then flagged partition keys,
    # and an unrecognised value counts as PII (fail closed)
    assert tables[("sales_orders", "customers")]["pii_columns"] == ["full_name", "email", "phone"]
    card = tables[("finance_payments", "card_transactions")]
    assert card["pii_columns"] == ["card_last4", "cardholder_country"]
    assert card["sensitive"] is True
    assert tables[("sales_orders", "orders")] == {
        "name": "orders",
        "pii_columns": [],
        "sensitive": False,
        "level": "public",
    }
    # THEN a table in a flagged database is sensitive even with no flagged column
    assert tables[("hr_people", "departments")]["sensitive"] is True


def test_catalog_without_json_prints_one_line_per_database(shared_cli: Cli) -> None:
    # GIVEN the seeded demo mesh
    # WHEN the catalog is printed for a person
    result = shared_cli("catalog")
    # THEN each database has its own line
    assert result.code == 0
    lines = result.out.strip().splitlines()
    assert len(lines) == len(data.DATABASES)
    assert {line.split()[0] for line in lines} == set(data.DATABASES)


# request --------------------------------------------------------------------------------------


def test_request_for_a_clean_table_is_granted_by_the_policy(cli: Cli, world: World) -> None:
    # GIVEN carol, a consumer, and a table with no PII
    # WHEN she requests it
    result = cli(*request_argv("carol", "sales_orders", "orders", world.mine, "dashboard"))
    # THEN the request object is printed with exactly the contract's keys, granted by the policy
    assert result.code == 0, result.err
    request = result.json()
    assert set(request) == REQUEST_KEYS
    assert isinstance(request["id"], str)
    assert request["status"] == "granted"
    assert request["decided_by"] is None
    assert request["error"] is None
    assert (request["database"], request["table"]) == ("sales_orders", "orders")
    assert (request["account"], request["requester"]) == (world.mine, "carol")
    assert request["reason"] == "dashboard"
    assert result.err == ""
    # THEN Lake Formation holds the grant
    assert table_names(granted_to(world.endpoint, world.mine)) == {"orders"}


def test_request_for_a_pii_table_waits_for_approval_with_the_policy_reason(
    cli: Cli, world: World
) -> None:
    # GIVEN a table whose email column is flagged "TRUE"
    # WHEN carol requests it
    result = cli(*request_argv("carol", "sales_orders", "customers", world.mine))
    # THEN it is pending, the policy says why, and nothing is granted yet
    assert result.code == 0, result.err
    request = result.json()
    assert request["status"] == "pending_approval"
    assert "email" in request["policy_reason"]
    assert request["decided_by"] is None
    assert granted_to(world.endpoint, world.mine) == []


def test_request_for_a_whole_database_has_a_null_table_and_grants_both_resources(
    cli: Cli, world: World
) -> None:
    # GIVEN marketing_campaigns, a database with no PII anywhere
    # WHEN dan requests the whole database for his partner account
    result = cli(*request_argv("dan", "marketing_campaigns", None, world.partner))
    # THEN the request names no table and is granted
    assert result.code == 0, result.err
    request = result.json()
    assert request["table"] is None
    assert request["status"] == "granted"
    # THEN Lake Formation holds the database DESCRIBE and the all-tables grant
    resources = granted_to(world.endpoint, world.partner)
    assert sorted(next(iter(r)) for r in resources) == ["Database", "Table"]
    assert next(r["Table"] for r in resources if "Table" in r)["TableWildcard"] == {}


def test_request_without_json_prints_the_request_id(cli: Cli, world: World) -> None:
    # GIVEN carol
    # WHEN she requests a clean table without --json
    argv = request_argv("carol", "sales_orders", "stores", world.mine, "store map")
    result = cli(*[a for a in argv if a != "--json"])
    # THEN the printed line names the stored request
    assert result.code == 0
    [stored] = cli("requests", "--as", "carol", "--json").json()
    assert stored["id"] in result.out


def test_reason_of_exactly_1000_characters_is_accepted(cli: Cli, world: World) -> None:
    # GIVEN a reason at the length limit
    # WHEN carol requests with it
    result = cli(*request_argv("carol", "sales_orders", "stores", world.mine, "r" * 1000))
    # THEN it is accepted
    assert result.code == 0, result.err
    assert result.json()["reason"] == "r" * 1000


# requests and pending -------------------------------------------------------------------------


def test_requests_lists_everyone_or_only_what_the_user_made(
    shared_cli: Cli, shared: tuple[World, Made]
) -> None:
    # GIVEN two requests by carol, one by ada and one by dan
    _, made = shared
    # WHEN requests are listed for everyone, for carol and for mia
    everyone = shared_cli("requests", "--json")
    carols = shared_cli("requests", "--as", "carol", "--json")
    mias = shared_cli("requests", "--as", "mia", "--json")
    # THEN each is a list of request objects, and --as keeps only that user's
    assert (everyone.code, carols.code, mias.code) == (0, 0, 0)
    assert {r["id"] for r in everyone.json()} == set(made.__dict__.values())
    assert all(set(r) == REQUEST_KEYS for r in everyone.json())
    assert {r["id"] for r in carols.json()} == {made.pending, made.granted}
    assert mias.json() == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("granted", {"granted", "partners"}),
        ("pending_approval", {"pending", "admins_own"}),
        ("denied", set()),
    ],
)
def test_requests_filters_by_status(
    shared_cli: Cli, shared: tuple[World, Made], status: str, expected: set[str]
) -> None:
    # GIVEN two granted and two pending requests
    _, made = shared
    # WHEN requests are listed in one status
    result = shared_cli("requests", "--status", status, "--json")
    # THEN only those in that status are listed
    assert result.code == 0
    assert {r["id"] for r in result.json()} == {getattr(made, name) for name in expected}


@pytest.mark.parametrize(
    ("approver", "expected"),
    [
        # the Sales owner sees both pending Sales requests
        ("sam", {"pending", "admins_own"}),
        # an owner of another domain sees nothing
        ("hank", set()),
        # an admin sees everything except their own request
        ("ada", {"pending"}),
    ],
)
def test_pending_lists_what_the_user_may_decide_now(
    shared_cli: Cli, shared: tuple[World, Made], approver: str, expected: set[str]
) -> None:
    # GIVEN two pending Sales requests, one of them ada's own
    _, made = shared
    # WHEN an approver lists what is pending for them
    result = shared_cli("pending", "--as", approver, "--json")
    # THEN they see exactly what they may decide, as request objects
    assert result.code == 0, result.err
    items = result.json()
    assert {r["id"] for r in items} == {getattr(made, name) for name in expected}
    assert all(set(r) == REQUEST_KEYS for r in items)


def test_lists_without_json_print_lines_or_none(
    shared_cli: Cli, shared: tuple[World, Made]
) -> None:
    # GIVEN requests in the store
    _, made = shared
    # WHEN lists are printed for a person
    mine = shared_cli("requests", "--as", "carol")
    nothing = shared_cli("pending", "--as", "hank")
    # THEN each request has a line with its id, and an empty list says so
    assert mine.code == nothing.code == 0
    assert made.pending in mine.out and made.granted in mine.out
    assert nothing.out.strip() == "(none)"


# approve, deny, cancel ------------------------------------------------------------------------


@pytest.mark.parametrize("approver", ["sam", "ada"])
def test_approve_grants_the_request_and_records_the_decider(
    cli: Cli, made: Made, world: World, approver: str
) -> None:
    # GIVEN carol's pending PII table request
    # WHEN the product's owner (or an admin) approves it with a comment
    result = cli("approve", made.pending, "--as", approver, "--comment", "ok", "--json")
    # THEN the request is granted, with the decider and comment, and Lake Formation holds it
    assert result.code == 0, result.err
    request = result.json()
    assert set(request) == REQUEST_KEYS
    assert (request["id"], request["status"]) == (made.pending, "granted")
    assert (request["decided_by"], request["comment"]) == (approver, "ok")
    assert table_names(granted_to(world.endpoint, world.mine)) == {"orders", "customers"}


def test_deny_records_the_comment_and_grants_nothing(cli: Cli, made: Made, world: World) -> None:
    # GIVEN carol's pending PII table request
    # WHEN sam denies it with a comment
    result = cli("deny", made.pending, "--as", "sam", "--comment", "use the aggregate", "--json")
    # THEN it is denied with the comment, and only the earlier clean grant is in Lake Formation
    assert result.code == 0, result.err
    request = result.json()
    assert (request["status"], request["decided_by"]) == ("denied", "sam")
    assert request["comment"] == "use the aggregate"
    assert table_names(granted_to(world.endpoint, world.mine)) == {"orders"}


def test_cancel_by_the_requester_cancels_a_pending_request(cli: Cli, made: Made) -> None:
    # GIVEN carol's pending request
    # WHEN she cancels it
    result = cli("cancel", made.pending, "--as", "carol", "--json")
    # THEN it is cancelled and no longer pending for its owner
    assert result.code == 0, result.err
    assert result.json()["status"] == "cancelled"
    assert made.pending not in {r["id"] for r in cli("pending", "--as", "sam", "--json").json()}


def test_second_approval_is_a_conflict_and_the_first_decision_stands(cli: Cli, made: Made) -> None:
    # GIVEN a request that sam approved
    assert cli("approve", made.pending, "--as", "sam").code == 0
    # WHEN ada approves it too
    second = cli("approve", made.pending, "--as", "ada", "--json")
    # THEN it is refused as a conflict, and sam's decision stands
    assert second.code == 5
    [request] = [r for r in cli("requests", "--json").json() if r["id"] == made.pending]
    assert request["decided_by"] == "sam"


def test_approve_several_ids_grants_each_and_prints_a_list(
    cli: Cli, made: Made, world: World
) -> None:
    # GIVEN two pending PII table requests (carol's and ada's)
    # WHEN sam approves both in one command with one comment
    result = cli(
        "approve", made.pending, made.admins_own, "--as", "sam", "--comment", "ok", "--json"
    )
    # THEN both are granted, printed as a list of requests in the order given
    assert result.code == 0, result.err
    listed = result.json()
    assert [r["id"] for r in listed] == [made.pending, made.admins_own]
    assert all(set(r) == REQUEST_KEYS | {"exit_code"} for r in listed)
    assert [(r["status"], r["comment"], r["exit_code"]) for r in listed] == [
        ("granted", "ok", 0),
        ("granted", "ok", 0),
    ]
    assert table_names(granted_to(world.endpoint, world.partner)) >= {"customers"}


def test_approve_several_ids_reports_each_refusal_and_exits_with_the_highest_code(
    cli: Cli, made: Made
) -> None:
    # GIVEN one pending request, one granted by the policy, and an id that names nothing
    # WHEN sam approves the three
    result = cli("approve", made.pending, made.granted, "r-00000000", "--as", "sam", "--json")
    # THEN the pending one is granted, the others are refused with their own codes
    listed = result.json()
    assert [(r["id"], r["exit_code"]) for r in listed] == [
        (made.pending, 0),
        (made.granted, 5),
        ("r-00000000", 4),
    ]
    assert listed[0]["status"] == "granted"
    assert set(listed[1]) == {"id", "error", "exit_code"}
    # AND the command exits with the highest refusal code, one error line per refusal
    assert result.code == 5
    errors = result.err.strip().splitlines()
    assert [line.split(":")[1].strip() for line in errors] == [made.granted, "r-00000000"]


def test_deny_several_ids_without_json_prints_one_line_each(cli: Cli, made: Made) -> None:
    # WHEN sam denies two pending requests at once
    result = cli(
        "deny", made.pending, made.admins_own, "--as", "sam", "--comment", "use the aggregate"
    )
    # THEN each gets its line, denied
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [
        [made.pending, "denied"],
        [made.admins_own, "denied"],
    ]


# retry and exit code 1 ------------------------------------------------------------------------


def test_failed_grant_on_request_prints_the_failed_request_and_exits_1(
    cli: Cli, world: World, lake_formation_outage: Outage
) -> None:
    # GIVEN Lake Formation refuses every grant
    # WHEN carol requests a clean table, which the policy grants at once
    result = cli(*request_argv("carol", "sales_orders", "orders", world.mine))
    # THEN the request object is still printed, failed, with the AWS error; exit code 1
    assert result.code == 1
    request = result.json()
    assert set(request) == REQUEST_KEYS
    assert request["status"] == "failed"
    assert "AccessDeniedException" in request["error"]
    # THEN stderr names the request and the cause, without a traceback
    assert request["id"] in result.err
    assert "AccessDeniedException" in result.err
    assert "Traceback" not in result.err


def test_failed_grant_on_approve_prints_the_failed_request_and_exits_1(
    cli: Cli, made: Made, lake_formation_outage: Outage
) -> None:
    # GIVEN a pending request and Lake Formation refusing every grant
    # WHEN sam approves it
    result = cli("approve", made.pending, "--as", "sam", "--json")
    # THEN the decision stands but the grant failed: status failed, error set, exit code 1
    assert result.code == 1
    request = result.json()
    assert (request["id"], request["status"]) == (made.pending, "failed")
    assert request["decided_by"] == "sam"
    assert "AccessDeniedException" in request["error"]
    assert "Traceback" not in result.err


@pytest.mark.parametrize("retried_by", ["carol", "sam", "ada"])
def test_retry_after_the_cause_is_fixed_grants_without_asking_again(
    cli: Cli, made: Made, world: World, lake_formation_outage: Outage, retried_by: str
) -> None:
    # GIVEN an approved request whose grant failed
    assert cli("approve", made.pending, "--as", "sam", "--json").code == 1
    # WHEN Lake Formation works again and the requester, the owner or an admin retries it
    lake_formation_outage.active = False
    result = cli("retry", made.pending, "--as", retried_by, "--json")
    # THEN it is granted under the original decision, and Lake Formation holds it
    assert result.code == 0, result.err
    request = result.json()
    assert (request["status"], request["decided_by"], request["error"]) == ("granted", "sam", None)
    assert "customers" in table_names(granted_to(world.endpoint, world.mine))


def test_retry_that_fails_again_prints_the_failed_request_and_exits_1(
    cli: Cli, made: Made, lake_formation_outage: Outage
) -> None:
    # GIVEN a failed grant, and Lake Formation still refusing
    assert cli("approve", made.pending, "--as", "sam", "--json").code == 1
    # WHEN carol retries it
    result = cli("retry", made.pending, "--as", "carol", "--json")
    # THEN it is failed again, printed, with exit code 1
    assert result.code == 1
    assert result.json()["status"] == "failed"
    assert result.json()["error"]


def test_retry_completes_a_half_granted_database_request(
    cli: Cli, world: World, lake_formation_outage: Outage
) -> None:
    # GIVEN Lake Formation refuses only the all-tables grant of a database request
    lake_formation_outage.refuses = lambda spec: "TableWildcard" in spec.resource.get("Table", {})
    first = cli(*request_argv("dan", "marketing_campaigns", None, world.partner))
    # THEN the request fails, having granted only the database DESCRIBE
    assert first.code == 1
    assert first.json()["status"] == "failed"
    assert [list(r) for r in granted_to(world.endpoint, world.partner)] == [["Database"]]
    # WHEN Lake Formation works again and dan retries
    lake_formation_outage.active = False
    retried = cli("retry", first.json()["id"], "--as", "dan", "--json")
    # THEN the request is granted and Lake Formation holds both grants
    assert retried.code == 0, retried.err
    assert retried.json()["status"] == "granted"
    resources = granted_to(world.endpoint, world.partner)
    assert sorted(next(iter(r)) for r in resources) == ["Database", "Table"]


def test_unreachable_aws_exits_1_naming_the_cause(
    shared_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an AWS endpoint where nothing listens, and no retries
    port = closed_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MESH_AWS_MAX_ATTEMPTS", "1")
    # WHEN the catalog is read
    result = shared_cli("catalog", "--json")
    # THEN exit code 1, with one sentence that names the endpoint that failed
    assert result.code == 1
    assert_one_sentence_on_stderr(result)
    assert str(port) in result.err
    assert result.out == ""


def test_unexpected_failure_exits_1_with_the_cause_and_no_traceback(
    shared_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a read that breaks in a way nobody planned for
    def broken(self: Marketplace, **filters: Any) -> list[Any]:
        raise RuntimeError("the audit disk is on fire")

    monkeypatch.setattr(Marketplace, "audit", broken)
    # WHEN the audit log is printed
    result = shared_cli("audit", "--json")
    # THEN exit code 1, one sentence with the cause
    assert result.code == 1
    assert_one_sentence_on_stderr(result)
    assert "the audit disk is on fire" in result.err


# audit ----------------------------------------------------------------------------------------


def test_audit_json_lists_rows_with_the_contract_fields(
    shared_cli: Cli, shared: tuple[World, Made]
) -> None:
    # GIVEN four requests submitted, two of them granted by the policy
    _, made = shared
    # WHEN the audit log is printed as JSON
    result = shared_cli("audit", "--json")
    # THEN it is a list of rows with exactly the contract's fields and UTC timestamps
    assert result.code == 0
    rows = result.json()
    for row in rows:
        assert set(row) == AUDIT_KEYS
        assert isinstance(row["details"], dict)
        assert datetime.fromisoformat(row["at"]).utcoffset() == timedelta(0)
    about_requests = {
        r["request_id"]
        for r in rows
        if r["action"] not in ("policy_activated", "anchor_initialised")
    }
    assert about_requests == set(made.__dict__.values())
    # THEN the policy in force was recorded once, by the first process
    assert [r["request_id"] for r in rows if r["action"] == "policy_activated"] == [None]
    # THEN the automatic decision is recorded with actor "policy"
    assert {r["actor"] for r in rows if r["request_id"] == made.granted} == {"carol", "policy"}


def test_audit_for_one_request_lists_only_its_rows_in_order(
    shared_cli: Cli, shared: tuple[World, Made]
) -> None:
    # GIVEN audit rows for several requests
    _, made = shared
    # WHEN the audit log is printed for one request
    rows = shared_cli("audit", "--request", made.granted, "--json").json()
    everything = shared_cli("audit", "--json").json()
    # THEN it holds exactly that request's rows, in the order they were written
    assert rows
    assert rows == [r for r in everything if r["request_id"] == made.granted]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


def test_audit_without_json_prints_a_line_per_row(
    shared_cli: Cli, shared: tuple[World, Made]
) -> None:
    # GIVEN audit rows for a granted request
    _, made = shared
    # WHEN its audit is printed for a person
    result = shared_cli("audit", "--request", made.granted)
    rows = shared_cli("audit", "--request", made.granted, "--json").json()
    # THEN there is one line per row
    assert result.code == 0
    assert len(result.out.strip().splitlines()) == len(rows)


def test_audit_filters_by_actor_and_action_keep_the_matching_rows(
    shared_cli: Cli, shared: tuple[World, Made]
) -> None:
    # GIVEN the shared store's audit log
    everything = shared_cli("audit", "--json").json()
    # WHEN it is printed for one actor, and for two actions
    by_policy = shared_cli("audit", "--actor", "policy", "--json").json()
    two = ("request_submitted", "grant_succeeded")
    by_actions = shared_cli("audit", "--action", two[0], "--action", two[1], "--json").json()
    # THEN each holds exactly the matching rows, in write order
    assert by_policy and by_policy == [r for r in everything if r["actor"] == "policy"]
    assert by_actions and by_actions == [r for r in everything if r["action"] in two]


def test_audit_date_range_counts_whole_days_and_exact_moments(
    shared_cli: Cli, shared: tuple[World, Made]
) -> None:
    # GIVEN rows written today (UTC)
    everything = shared_cli("audit", "--json").json()
    first, last = everything[0]["at"], everything[-1]["at"]
    today = datetime.fromisoformat(last).date()

    # WHEN the range is today, a range before today, and from the last row's moment
    def ids(*range_: str) -> list[int]:
        return [r["id"] for r in shared_cli("audit", *range_, "--json").json()]

    # THEN a day counts whole, and a moment counts itself (--until included)
    assert ids("--since", str(today - timedelta(days=1)), "--until", str(today)) == ids()
    before_today = [r["id"] for r in everything if r["at"][:10] < str(today)]
    assert ids("--until", str(today - timedelta(days=1))) == before_today
    assert ids("--since", last) == [r["id"] for r in everything if r["at"] >= last]
    assert ids("--until", first) == [r["id"] for r in everything if r["at"] <= first]
    assert ids("--since", f"{today}T00:00:00+00:00") == ids("--since", str(today))


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("--since", "yesterday"), "--since"),
        (("--until", "2026-02-30"), "--until"),
        (("--since", "2026-01-31T25:00"), "--since"),
        (("--since", "2026-02-01", "--until", "2026-01-31"), "ends before it starts"),
        (("--format", "xml"), "--format"),
        (("--format", "csv", "--json"), "not both"),
    ],
)
def test_audit_refuses_bad_dates_and_formats_with_exit_2(
    shared_cli: Cli, args: tuple[str, ...], names: str
) -> None:
    # GIVEN a bad date, a range that ends before it starts, or a format it does not write
    # WHEN the audit log is asked for
    result = shared_cli("audit", *args)
    # THEN it is refused as invalid input, in one sentence naming what was wrong
    assert result.code == 2
    assert_one_sentence_on_stderr(result)
    assert names in result.err


def test_audit_csv_streams_every_matching_row_with_cells_a_spreadsheet_will_not_run(
    cli: Cli, made: Made, world: World
) -> None:
    # GIVEN an audit row whose actor and scope look like spreadsheet formulas
    Store(world.env["MESH_DB"]).append(
        NewEvent(
            at="2026-01-01T00:00:00.000Z",
            actor="=HYPERLINK(1)",
            action="request_submitted",
            request_id=made.granted,
            scope="@SUM(A1)",
        )
    )
    everything = cli("audit", "--json").json()
    # WHEN the log is written as CSV, whole and for one request
    result = cli("audit", "--format", "csv")
    one = cli("audit", "--format", "csv", "--request", made.granted)
    # THEN a header, then one record per row in write order, and formulas are quoted as text
    assert result.code == 0
    records = list(csv.reader(io.StringIO(result.out)))
    assert records[0] == ["id", "at", "actor", "action", "request_id", "scope", "details"]
    assert [int(r[0]) for r in records[1:]] == [r["id"] for r in everything]
    assert records[-1][2] == "'=HYPERLINK(1)" and records[-1][5] == "'@SUM(A1)"
    assert json.loads(records[1][6]) == everything[0]["details"]
    assert {r[4] for r in list(csv.reader(io.StringIO(one.out)))[1:]} == {made.granted}


# hash-password ----------------------------------------------------------------------------------


def test_hash_password_prints_a_bcrypt_hash_of_standard_input(
    monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # GIVEN a password on standard input
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse\n"))
    # WHEN it is hashed
    code = main(["hash-password"])
    # THEN the printed hash verifies that password (without the newline) and no other
    printed = capsys.readouterr().out.strip().encode()
    assert code == 0
    assert bcrypt.checkpw(b"correct horse", printed)
    assert not bcrypt.checkpw(b"correct horse\n", printed)


def test_hash_password_refuses_an_empty_password_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # GIVEN nothing on standard input
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    # WHEN it is hashed
    code = main(["hash-password"])
    # THEN it is refused as invalid input
    out, err = capsys.readouterr()
    assert code == 2
    assert_one_sentence_on_stderr(Outcome(code=code, out=out, err=err))


# exit codes: one refusal at a time --------------------------------------------------------------

LONG = "x" * 1001


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        # 2: bad option or argument
        (["catalog", "--bogus"], 2),
        ([], 2),
        (["frobnicate"], 2),
        (["request", "--as", "carol"], 2),
        (["deny", "{pending}", "--as", "sam"], 2),
        (["requests", "--status", "bogus"], 2),
        # 2: bad account id
        (request_argv("carol", "sales_orders", "orders", "44445555666"), 2),
        (request_argv("carol", "sales_orders", "orders", "4444555566667"), 2),
        (request_argv("carol", "sales_orders", "orders", "44445555666a"), 2),
        # 2: empty or over-long reason, empty deny comment
        (request_argv("carol", "sales_orders", "orders", "{mine}", "   "), 2),
        (request_argv("carol", "sales_orders", "orders", "{mine}", LONG), 2),
        (["deny", "{pending}", "--as", "sam", "--comment", "  "], 2),
        # 2: unowned database, as a whole or one table
        (request_argv("carol", "legacy_exports", None, "{mine}"), 2),
        (request_argv("carol", "legacy_exports", "nightly_dump", "{mine}"), 2),
        # 3: unknown user
        (request_argv("nobody", "sales_orders", "orders", "{mine}"), 3),
        (["requests", "--as", "nobody"], 3),
        (["pending", "--as", "nobody"], 3),
        (["approve", "{pending}", "--as", "nobody"], 3),
        # 3: wrong role
        (["pending", "--as", "carol"], 3),
        (request_argv("sam", "sales_orders", "stores", "{mine}"), 3),
        # 3: not the owner
        (["approve", "{pending}", "--as", "mia"], 3),
        (["deny", "{pending}", "--as", "hank", "--comment", "no"], 3),
        (["cancel", "{pending}", "--as", "dan"], 3),
        # 3: self-approval, even for an admin
        (["approve", "{pending}", "--as", "carol"], 3),
        (["approve", "{admins_own}", "--as", "ada"], 3),
        (["deny", "{admins_own}", "--as", "ada", "--comment", "no"], 3),
        # 3: account not the user's
        (request_argv("carol", "sales_orders", "stores", "{partner}"), 3),
        # 4: not found
        (request_argv("carol", "no_such_db", None, "{mine}"), 4),
        (request_argv("carol", "no_such_db", "orders", "{mine}"), 4),
        (request_argv("carol", "sales_orders", "no_such_table", "{mine}"), 4),
        (["approve", "r-missing", "--as", "sam"], 4),
        (["deny", "r-missing", "--as", "sam", "--comment", "no"], 4),
        (["cancel", "r-missing", "--as", "carol"], 4),
        (["retry", "r-missing", "--as", "carol"], 4),
        # 5: duplicate active request (pending or granted), whoever asks
        (request_argv("carol", "sales_orders", "customers", "{mine}"), 5),
        (request_argv("dan", "sales_orders", "orders", "{mine}"), 5),
        # 5: no longer pending
        (["approve", "{granted}", "--as", "sam"], 5),
        (["deny", "{granted}", "--as", "sam", "--comment", "no"], 5),
        (["cancel", "{granted}", "--as", "carol"], 5),
        (["retry", "{granted}", "--as", "carol"], 5),
        (["retry", "{pending}", "--as", "carol"], 5),
    ],
)
def test_each_refusal_has_its_exit_code_and_one_sentence_on_stderr(
    shared_cli: Cli, shared: tuple[World, Made], argv: list[str], code: int
) -> None:
    # GIVEN pending and granted requests in the store
    names = placeholders(*shared)
    # WHEN a command that one rule refuses runs
    result = shared_cli(*[a.format(**names) for a in argv])
    # THEN the exit code is that rule's, with one sentence on stderr and nothing on stdout
    assert result.code == code, result.err
    assert_one_sentence_on_stderr(result)
    assert result.out == ""


@pytest.mark.parametrize(("existing", "table"), [("pending", "customers"), ("granted", "orders")])
def test_duplicate_request_names_the_existing_request(
    shared_cli: Cli, shared: tuple[World, Made], existing: str, table: str
) -> None:
    # GIVEN an active request of carol's
    world, made = shared
    # WHEN the same scope and account is requested again
    result = shared_cli(*request_argv("carol", "sales_orders", table, world.mine))
    # THEN it is a conflict naming the existing request's id
    assert result.code == 5
    assert getattr(made, existing) in result.err


# exit codes: which refusal wins when several apply -------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        # unknown user (3) beats malformed input (2)
        (request_argv("nobody", "sales_orders", "orders", "12"), 3),
        (["deny", "{pending}", "--as", "nobody", "--comment", " "], 3),
        # unknown user (3) beats a missing database or request (4)
        (request_argv("nobody", "no_such_db", None, "{mine}"), 3),
        (["approve", "r-missing", "--as", "nobody"], 3),
        # malformed input (2) beats a missing database or request (4)
        (request_argv("carol", "no_such_db", None, "12"), 2),
        (request_argv("carol", "no_such_db", None, "{mine}", " "), 2),
        (["deny", "r-missing", "--as", "sam", "--comment", " "], 2),
        # a missing table (4) beats an unowned database (2)
        (request_argv("carol", "legacy_exports", "no_such_table", "{mine}"), 4),
        # a missing database or request (4) beats not allowed (3)
        (request_argv("carol", "no_such_db", None, "{partner}"), 4),
        (request_argv("sam", "no_such_db", None, "{mine}"), 4),
        (["approve", "r-missing", "--as", "carol"], 4),
        (["cancel", "r-missing", "--as", "dan"], 4),
        # unowned database (2) beats not allowed (3)
        (request_argv("carol", "legacy_exports", None, "{partner}"), 2),
        (request_argv("sam", "legacy_exports", None, "{mine}"), 2),
        # not allowed (3) beats a duplicate or a wrong state (5)
        (request_argv("sam", "sales_orders", "orders", "{mine}"), 3),
        (request_argv("carol", "sales_orders", "orders", "{partner}"), 3),
        (["approve", "{granted}", "--as", "mia"], 3),
        (["approve", "{granted}", "--as", "carol"], 3),
        (["cancel", "{granted}", "--as", "dan"], 3),
        (["retry", "{granted}", "--as", "dan"], 3),
    ],
)
def test_first_refusal_in_the_contract_order_wins(
    shared_cli: Cli, shared: tuple[World, Made], argv: list[str], code: int
) -> None:
    # GIVEN granted orders requests on both carol's and dan's partner account, so requesting
    # orders again on either would also be a duplicate
    names = placeholders(*shared)
    # WHEN a command that several rules refuse runs
    result = shared_cli(*[a.format(**names) for a in argv])
    # THEN the first rule in the contract's order decides the exit code
    assert result.code == code, result.err
    assert_one_sentence_on_stderr(result)


# settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MESH_MODE", "bogus"),
        ("MESH_USERS", None),
        ("MESH_USERS", "/nonexistent/users.yaml"),
        ("MESH_AWS_TIMEOUT", "soon"),
        ("MESH_AWS_MAX_ATTEMPTS", "0"),
        # a database path that cannot be a SQLite file (it is a directory)
        ("MESH_DB", "{tmp}"),
    ],
)
def test_bad_setting_exits_2_with_one_sentence_naming_it(
    shared_cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    name: str,
    value: str | None,
) -> None:
    # GIVEN aws mode with one setting missing or wrong
    if value is None:
        monkeypatch.delenv(name)
    else:
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    # WHEN any command runs
    result = shared_cli("catalog", "--json")
    # THEN it stops with exit code 2 and one sentence that names the setting
    assert result.code == 2, result.err
    assert_one_sentence_on_stderr(result)
    assert name in result.err


# demo mode ----------------------------------------------------------------------------------


@pytest.fixture
def demo_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Demo mode (MESH_MODE unset) with its database, and so its state file, in tmp_path."""
    path = tmp_path / "demo.db"
    monkeypatch.setenv("MESH_DB", str(path))
    return path


@pytest.fixture
def running_demo(seeded: str, demo_db: Path) -> Iterator[standin.StandIn]:
    """A demo stand-in started in-process, recorded in the state file the CLI reads.

    moto keeps one state per process, shared by every server in it, so the stand-in's seeding
    needs an empty moto first; afterwards this module's seeded mesh is put back.
    """
    reset_moto(seeded)
    settings = load_settings({"MESH_DB": str(demo_db)}, {})
    running = standin.start(state_file=settings.demo_state_file, db_path=demo_db)
    yield running
    running.stop()
    reset_moto(seeded)
    data.seed(moto_client("glue", seeded))


def test_demo_mode_without_a_running_demo_exits_2_telling_to_start_it(
    demo_db: Path, capsys: Any
) -> None:
    # GIVEN demo mode and no demo running
    # WHEN the catalog is read
    code = main(["catalog", "--json"])
    # THEN exit code 2, and the sentence says how to start the demo
    out, err = capsys.readouterr()
    assert code == 2
    assert_one_sentence_on_stderr(Outcome(code=code, out=out, err=err))
    assert "python -m mesh demo" in err


def test_demo_mode_with_a_dead_stand_in_in_the_state_file_exits_2(
    demo_db: Path, capsys: Any
) -> None:
    # GIVEN a state file left by a demo that has stopped
    settings = load_settings({"MESH_DB": str(demo_db)}, {})
    endpoint = f"http://127.0.0.1:{closed_port()}"
    settings.demo_state_file.write_text(json.dumps({"endpoint": endpoint}))
    # WHEN the catalog is read
    code = main(["catalog", "--json"])
    # THEN it is refused as if no demo ran
    _, err = capsys.readouterr()
    assert code == 2
    assert "python -m mesh demo" in err


def test_demo_mode_finds_the_running_stand_in_through_its_state_file(
    running_demo: standin.StandIn, capsys: Any
) -> None:
    # GIVEN a demo stand-in running, recorded beside the demo database
    account = "444455556666"  # carol's account in the demo users file
    # WHEN the CLI in demo mode reads the catalog and makes a request
    catalog_code = main(["catalog", "--json"])
    catalog = json.loads(capsys.readouterr().out)
    request_code = main(request_argv("carol", "sales_orders", "orders", account))
    request = json.loads(capsys.readouterr().out)
    # THEN it read the stand-in's catalog and granted there
    assert (catalog_code, request_code) == (0, 0)
    assert {d["name"] for d in catalog} == set(data.DATABASES)
    assert request["status"] == "granted"
    assert table_names(granted_to(running_demo.endpoint, account)) == {"orders"}


# the real entry point -------------------------------------------------------------------------


def test_python_dash_m_mesh_prints_the_catalog(shared: tuple[World, Made]) -> None:
    # GIVEN aws mode against the seeded moto server
    world, _ = shared
    # WHEN `python -m mesh catalog --json` runs as a real process
    done = run_mesh("catalog", "--json", env=world.env)
    # THEN it exits 0 and prints the catalog
    assert done.returncode == 0, done.stderr
    assert {d["name"] for d in json.loads(done.stdout)} == set(data.DATABASES)


@pytest.mark.parametrize(
    ("argv", "extra_env", "code"),
    [
        (request_argv("carol", "sales_orders", "orders", "not-an-account"), {}, 2),
        (["requests", "--no-such-option"], {}, 2),
        (["catalog"], {"MESH_MODE": "bogus"}, 2),
    ],
    ids=["bad-account", "bad-option", "bad-setting"],
)
def test_python_dash_m_mesh_refuses_bad_input_without_a_traceback(
    shared: tuple[World, Made], argv: list[str], extra_env: dict[str, str], code: int
) -> None:
    # GIVEN aws mode against the seeded moto server
    world, _ = shared
    # WHEN a real process gets bad input
    done = run_mesh(*argv, env={**world.env, **extra_env})
    # THEN it exits with the contract's code, one sentence on stderr and no traceback
    assert done.returncode == code
    assert_one_sentence_on_stderr(Outcome(code=done.returncode, out=done.stdout, err=done.stderr))
    assert done.stdout == ""


def test_a_second_demo_on_the_same_database_is_refused_and_the_first_keeps_its_requests(
    running_demo: standin.StandIn, demo_db: Path, capsys: Any
) -> None:
    # GIVEN a demo running on demo_db, with a request in its store
    main(
        [
            "request", "--as", "carol", "--database", "sales_orders", "--table", "orders",
            "--account", "444455556666", "--reason", "weekly sales report",
        ]
    )  # fmt: skip
    capsys.readouterr()
    # WHEN a second demo is started on the same database
    code = main(["demo", "--no-app"])
    # THEN it is refused with one sentence, and the first demo's request is still there
    out, err = capsys.readouterr()
    assert code == 2
    assert_one_sentence_on_stderr(Outcome(code=code, out=out, err=err))
    assert "already running" in err and running_demo.endpoint in err
    assert main(["requests", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
