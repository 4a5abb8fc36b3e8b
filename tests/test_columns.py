"""Least-privilege column requests (issue 4, section 3), on top of issues 2 and 3.

- Pure rules: which column subsets are sensitive, and how a subset is checked and proposed.
- The grant shape, pinned with botocore Stubber through the real Lake Formation adapter.
- Use cases against moto: submit, duplicates, revoke and reconcile of column grants.
- The CLI's --columns and the "columns" field of a request's JSON.
- The table page's "Select all columns except PII" button, through AppTest.

Speed: the moto server is reset and seeded once for this module and the services are built
once; each test gets a fresh SQLite store and a consumer account no other test grants to, so
the Lake Formation grants it reads are its own.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

import mesh.cli
import mesh.settings
from mesh import approval, policy, ui
from mesh.aws import ClientFactory
from mesh.demo import data
from mesh.errors import Conflict, InvalidInput
from mesh.grants import LakeFormation
from mesh.lifecycle import Lifecycle
from mesh.models import (
    AccessRequest,
    Action,
    Column,
    Database,
    GrantSpec,
    Role,
    Scope,
    Status,
    Table,
    User,
)
from mesh.services import Services, build
from mesh.settings import DEMO_USERS, load_settings
from mesh.store import Store
from mesh.workflow import Marketplace
from tests.conftest import REGION, reset_moto
from tests.support import (
    APP,
    AUDIT_KEY,
    COOKIE_KEY,
    LINK_SECRET,
    Cli,
    Users,
    assert_one_sentence_on_stderr,
    in_process_cli,
    labelled,
    moto_env,
    sign_in,
    texts,
)

CENTRAL = data.CENTRAL_ACCOUNT
SALES = "111111111111"
REASON = "Churn model for the quarterly review"
CAROLS_ACCOUNT = "444455556666"  # carol's account in the demo users file

# sales_orders.customers in the demo mesh: full_name, email and phone carry pii_flag
# ("true", "TRUE", "Yes"); the other columns carry none.
CUSTOMERS_WITHOUT_PII = ("customer_id", "country", "segment", "created_at")
CUSTOMERS_PII = ("full_name", "email", "phone")

_numbers = itertools.count(1)


def fresh_account() -> str:
    """A consumer account id that no other test in this module grants to."""
    return f"{940_000_000_000 + next(_numbers):012d}"


# Pure rules: a small catalog of our own ---------------------------------------------------------


def column(name: str, flag: str | None = None, *, partition: bool = False) -> Column:
    return Column(
        name=name,
        parameters={} if flag is None else {"pii_flag": flag},
        is_partition_key=partition,
    )


def database(flag: str | None = None) -> Database:
    parameters = {"data_owner": SALES}
    if flag is not None:
        parameters["pii_flag"] = flag
    return Database(name="sales", parameters=parameters)


def customers(flag: str | None = None) -> Table:
    """Flagged: full_name, email, notes (an unrecognised value) and the signup_region key."""
    return Table(
        database="sales",
        name="customers",
        parameters={} if flag is None else {"pii_flag": flag},
        columns=(
            column("customer_id"),
            column("full_name", "true"),
            column("email", "TRUE"),
            column("country", "false"),
            column("notes", "partial"),
            column("segment"),
        ),
        partition_keys=(
            column("signup_date", partition=True),
            column("signup_region", " yes ", partition=True),
        ),
    )


def evaluate(scope: Scope, db: Database, tables: list[Table]) -> approval.Verdict:
    """The built-in default policy's verdict, for an account no condition names."""
    return approval.evaluate(approval.DEFAULT, scope, db, tables, account=None)


def subset_scope(table: Table, columns: Sequence[str]) -> Scope:
    """The scope submit builds: the subset checked and put in table order."""
    return Scope(
        database=table.database, table=table.name, columns=policy.check_columns(table, columns)
    )


SUBSETS = [
    # leaves out every flagged column: evaluated on what remains, so granted at once
    (("customer_id", "country"), None, None, False, ()),
    (("segment", "signup_date"), None, None, False, ()),
    # flags set to a clear "false" on the table and database do not count either
    (("customer_id",), "false", "no", False, ()),
    # one flagged column in the subset, in any spelling
    (("customer_id", "full_name"), None, None, True, ("full_name",)),
    (("country", "email"), None, None, True, ("email",)),
    # an unrecognised flag value fails closed
    (("notes",), None, None, True, ("notes",)),
    # a flagged partition key in the subset
    (("country", "signup_region"), None, None, True, ("signup_region",)),
    # several: only the requested flagged columns are listed, in table order
    (("signup_region", "customer_id", "email", "full_name"), None, None, True,
     ("full_name", "email", "signup_region")),
    # a table flagged at table level: any subset of it is still sensitive
    (("customer_id", "country"), "true", None, True, ()),
    (("segment",), "garbage", None, True, ()),
    # a database flagged at database level: any subset of its tables is still sensitive
    (("customer_id", "country"), None, "yes", True, ()),
]  # fmt: skip


@pytest.mark.parametrize(("columns", "table_flag", "db_flag", "sensitive", "listed"), SUBSETS)
def test_column_subset_is_sensitive_only_if_what_remains_is(
    columns: tuple[str, ...],
    table_flag: str | None,
    db_flag: str | None,
    sensitive: bool,
    listed: tuple[str, ...],
) -> None:
    # GIVEN a table with PII columns (so the whole table needs approval)
    table, db = customers(table_flag), database(db_flag)
    assert evaluate(Scope(database="sales", table="customers"), db, [table]).needs_approval
    # WHEN a subset of its columns is evaluated
    verdict = evaluate(subset_scope(table, columns), db, [table])
    # THEN it needs approval only if the subset, the table or the database is flagged
    assert verdict.needs_approval is sensitive
    # AND the PII columns in scope are the requested flagged ones, never those left out
    assert verdict.sensitive_columns == listed
    assert verdict.reason


def test_reason_for_a_sensitive_subset_names_only_the_flagged_columns_requested() -> None:
    # GIVEN a subset holding one of the table's four flagged columns
    table = customers()
    # WHEN it is evaluated
    verdict = evaluate(subset_scope(table, ["customer_id", "email"]), database(), [table])
    # THEN the reason names that column, and none of the flagged ones left out
    assert "email" in verdict.reason
    for left_out in ("full_name", "notes", "signup_region"):
        assert left_out not in verdict.reason


CHECKED = [
    # given out of order: table order, columns first, then partition keys
    (["country", "customer_id"], ("customer_id", "country")),
    (["signup_region", "segment", "signup_date", "email"],
     ("email", "segment", "signup_date", "signup_region")),
    # repeated names: once each
    (["country", "customer_id", "country"], ("customer_id", "country")),
    # blanks around names, and empty entries (from "a,,b" or a trailing comma), are dropped
    ([" country", "", "customer_id ", "  "], ("customer_id", "country")),
]  # fmt: skip


@pytest.mark.parametrize(("asked", "checked"), CHECKED)
def test_column_subset_is_kept_in_table_order_once_each(
    asked: list[str], checked: tuple[str, ...]
) -> None:
    # WHEN a subset is checked against the table
    # THEN it comes back in the table's order, each column once
    assert policy.check_columns(customers(), asked) == checked


REJECTED = [
    # no column named at all
    ([], "at least one column"),
    (["", "  "], "at least one column"),
    # a column the table does not have, named in the message
    (["customer_id", "ssn"], "'ssn'"),
    # a column of another table
    (["order_total"], "'order_total'"),
]


@pytest.mark.parametrize(("asked", "explains"), REJECTED)
def test_empty_or_unknown_column_subset_is_invalid_input(asked: list[str], explains: str) -> None:
    # WHEN an empty subset, or one with an unknown column, is checked
    # THEN it is refused as invalid input that says what is wrong
    with pytest.raises(InvalidInput, match=re.escape(explains)):
        policy.check_columns(customers(), asked)


def test_all_columns_except_pii_keeps_the_unflagged_and_names_the_flagged_in_table_order() -> None:
    # WHEN the "all columns except PII" choice is made for a table with flagged columns
    kept, left_out = approval.without_sensitive(approval.DEFAULT, customers())
    # THEN it keeps the unflagged columns and partition keys, and names what it leaves out
    assert kept == ("customer_id", "country", "segment", "signup_date")
    assert left_out == ("full_name", "email", "notes", "signup_region")


def test_all_columns_except_pii_of_a_table_without_flagged_columns_leaves_out_nothing() -> None:
    # GIVEN a table without flagged columns
    table = Table(database="sales", name="stores", columns=(column("id"), column("city", "no")))
    # WHEN the "all columns except PII" choice is made
    # THEN it keeps every column and leaves out nothing
    assert approval.without_sensitive(approval.DEFAULT, table) == (("id", "city"), ())


CLEAR = st.sampled_from([None, "false", "FALSE", " no ", "0"])
SET = st.sampled_from(["true", "TRUE", " Yes ", "1", "partial", "???"])


@st.composite
def flagged_tables(draw: st.DrawFn) -> Table:
    flags = draw(st.lists(st.one_of(CLEAR, SET), min_size=1, max_size=7))
    keys = draw(st.integers(min_value=0, max_value=min(2, len(flags) - 1)))
    split = len(flags) - keys
    return Table(
        database="sales",
        name="t",
        columns=tuple(column(f"c{i}", f) for i, f in enumerate(flags[:split])),
        partition_keys=tuple(
            column(f"p{i}", f, partition=True) for i, f in enumerate(flags[split:])
        ),
    )


@given(table=flagged_tables())
def test_all_columns_except_pii_is_never_sensitive_and_adding_back_any_left_out_column_is(
    table: Table,
) -> None:
    # GIVEN any table whose columns carry any mix of flag spellings, in an unflagged database
    names = [c.name for c in table.all_columns]
    # WHEN the "all columns except PII" choice is made
    kept, left_out = approval.without_sensitive(approval.DEFAULT, table)
    # THEN the two parts split the table's columns, each in table order
    assert sorted(kept + left_out) == sorted(names)
    assert list(kept) == [n for n in names if n in kept]
    assert list(left_out) == [n for n in names if n in left_out]
    # AND what it keeps is granted at once
    if kept:
        assert not evaluate(subset_scope(table, kept), database(), [table]).needs_approval
    # AND adding back any one column it left out makes the subset sensitive, naming that column
    for name in left_out:
        verdict = evaluate(subset_scope(table, [*kept, name]), database(), [table])
        assert (verdict.needs_approval, verdict.sensitive_columns) == (True, (name,))


# The grant shape (Stubber) ---------------------------------------------------------------------

# A central account that is not moto's default, so a CatalogId can only come from the catalog.
STUB_CENTRAL = "210987654321"
STUB_CONSUMER = "444455556666"
NOWHERE = "http://127.0.0.1:9"  # Stubber answers before anything is sent


@dataclass(frozen=True)
class OneTableCatalog:
    """A catalog holding one database with one table."""

    db: Database
    only: Table
    catalog_id: str = STUB_CENTRAL

    def database(self, name: str) -> Database:
        assert name == self.db.name
        return self.db

    def table(self, database: str, name: str) -> Table:
        assert (database, name) == (self.db.name, self.only.name)
        return self.only

    def tables(self, database: str) -> list[Table]:
        return [self.only]


@pytest.fixture(scope="module")
def lf_client() -> Any:
    return ClientFactory(demo_endpoint=NOWHERE, max_attempts=1).client("lakeformation")


@pytest.fixture
def lf_stub(lf_client: Any) -> Iterator[Stubber]:
    with Stubber(lf_client) as stubber:
        yield stubber


@pytest.fixture
def stubbed_market(lf_client: Any, tmp_path: Path) -> Marketplace:
    """The marketplace over our customers table and the real adapter on a stubbed client."""
    store = Store(tmp_path / "mesh.db")
    store.migrate()
    carol = User(username="carol", roles=frozenset({Role.CONSUMER}), accounts=(STUB_CONSUMER,))
    return Marketplace(
        store=store,
        catalog=OneTableCatalog(db=database(), only=customers()),
        grants=LakeFormation(lf_client),
        users=Users({"carol": carol}),
    )


def test_column_request_grants_table_describe_then_select_on_exactly_those_columns(
    stubbed_market: Marketplace, lf_stub: Stubber
) -> None:
    # GIVEN Lake Formation expecting exactly two calls: DESCRIBE on the table, then SELECT on
    # the columns in table order, each with the grant option and the CatalogId inside
    principal = {"DataLakePrincipalIdentifier": STUB_CONSUMER}
    table = {"CatalogId": STUB_CENTRAL, "DatabaseName": "sales", "Name": "customers"}
    describe_table = {
        "Principal": principal,
        "Resource": {"Table": table},
        "Permissions": ["DESCRIBE"],
        "PermissionsWithGrantOption": ["DESCRIBE"],
    }
    select_columns = {
        "Principal": principal,
        "Resource": {
            "TableWithColumns": {
                **table,
                "ColumnNames": ["customer_id", "segment", "signup_date"],
            }
        },
        "Permissions": ["SELECT"],
        "PermissionsWithGrantOption": ["SELECT"],
    }
    lf_stub.add_response("grant_permissions", {}, expected_params=describe_table)
    lf_stub.add_response("grant_permissions", {}, expected_params=select_columns)
    # WHEN carol requests three unflagged columns, named out of order
    request = stubbed_market.submit(
        "carol",
        database="sales",
        table="customers",
        account=STUB_CONSUMER,
        reason=REASON,
        columns=["signup_date", "customer_id", "segment"],
    )
    # THEN it is granted at once by exactly those two calls, and the audit log records them
    lf_stub.assert_no_pending_responses()
    assert request.status is Status.GRANTED
    assert request.columns == ("customer_id", "segment", "signup_date")
    [succeeded] = stubbed_market.audit(request_id=request.id, action=Action.GRANT_SUCCEEDED.value)
    assert succeeded.details["calls"] == [describe_table, select_columns]


# Use cases against moto: the seeded mesh, built once -----------------------------------------


@pytest.fixture(scope="module")
def seeded(moto_endpoint: str) -> str:
    """The shared moto server, reset and seeded once with the demo catalog."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in moto_env(moto_endpoint).items():
            patch.setenv(name, value)
        reset_moto(moto_endpoint)
        data.seed(boto3.client("glue"))
    return moto_endpoint


@pytest.fixture(scope="module")
def wired(seeded: str, tmp_path_factory: pytest.TempPathFactory) -> Services:
    """The services in aws mode, as the app and the CLI build them."""
    template = tmp_path_factory.mktemp("template") / "mesh.db"
    Store(template).migrate(create=True)  # as `mesh init` makes it
    env = {
        **moto_env(seeded),
        "MESH_MODE": "aws",
        "MESH_DB": str(template),
        "MESH_USERS": str(DEMO_USERS),
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
        "MESH_NOTIFY": "off",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return build(load_settings(env, {}))


@dataclass(frozen=True)
class Rig:
    """The marketplace and lifecycle over a fresh store, for one consumer account."""

    market: Marketplace
    lifecycle: Lifecycle
    account: str  # carol's, dan's and mia's consumer account; no other test's
    endpoint: str

    def submit(
        self,
        table: str | None,
        columns: Sequence[str] | None = None,
        *,
        user: str = "carol",
        database: str = "sales_orders",
    ) -> AccessRequest:
        return self.market.submit(
            user,
            database=database,
            table=table,
            account=self.account,
            reason=REASON,
            columns=columns,
        )


@pytest.fixture
def rig(wired: Services, seeded: str, tmp_path: Path) -> Rig:
    store = Store(tmp_path / "mesh.db")
    store.migrate()
    account = fresh_account()
    demo = wired.users.directory().users
    market = copy.copy(wired.marketplace)
    market.store, market.outbox = store, None
    market.users = Users(
        {
            name: replace(user, accounts=(account,)) if user.accounts else user
            for name, user in demo.items()
        }
    )
    lifecycle = copy.copy(wired.lifecycle)
    lifecycle.market = market
    return Rig(market=market, lifecycle=lifecycle, account=account, endpoint=seeded)


# Lake Formation, read directly ------------------------------------------------------------------

Holding = tuple[str, frozenset[str], frozenset[str]]


def lake_formation(endpoint: str) -> Any:
    return boto3.client("lakeformation", region_name=REGION, endpoint_url=endpoint)


def everything_held(endpoint: str) -> list[dict[str, Any]]:
    lf = lake_formation(endpoint)
    entries: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = lf.list_permissions(**({"NextToken": token} if token else {}))
        entries.extend(page["PrincipalResourcePermissions"])
        token = page.get("NextToken")
        if not token:
            return entries


def held(endpoint: str, account: str) -> set[Holding]:
    """What Lake Formation holds for ``account``: resource, permissions, grant option."""
    return {
        (
            json.dumps(e["Resource"], sort_keys=True),
            frozenset(e["Permissions"]),
            frozenset(e["PermissionsWithGrantOption"]),
        )
        for e in everything_held(endpoint)
        if e["Principal"]["DataLakePrincipalIdentifier"] == account
        and (e["Permissions"] or e["PermissionsWithGrantOption"])
    }


def on_table(table: str, database: str = "sales_orders") -> dict[str, Any]:
    return {"Table": {"CatalogId": CENTRAL, "DatabaseName": database, "Name": table}}


def on_columns(table: str, columns: Sequence[str]) -> dict[str, Any]:
    body = {"CatalogId": CENTRAL, "DatabaseName": "sales_orders", "Name": table}
    return {"TableWithColumns": {**body, "ColumnNames": list(columns)}}


def holding(resource: dict[str, Any], *permissions: str) -> Holding:
    """A grant of ``permissions`` with the same grant option, as an external account gets."""
    return (json.dumps(resource, sort_keys=True), frozenset(permissions), frozenset(permissions))


def column_grant(rig: Rig, request: AccessRequest) -> GrantSpec:
    [spec] = [s for s in rig.market.grant_plan(request) if "TableWithColumns" in s.resource]
    return spec


def revoke_behind_the_apps_back(rig: Rig, spec: GrantSpec) -> None:
    lake_formation(rig.endpoint).revoke_permissions(**spec.to_api())


# Use cases: submit ------------------------------------------------------------------------------


def test_all_columns_except_pii_of_a_pii_table_is_granted_at_once_on_those_columns_only(
    rig: Rig, wired: Services
) -> None:
    # GIVEN the "all columns except PII" choice for sales_orders.customers, as the form makes it
    table = wired.catalog.table("sales_orders", "customers")
    kept, left_out = approval.without_sensitive(approval.DEFAULT, table)
    assert (kept, left_out) == (CUSTOMERS_WITHOUT_PII, CUSTOMERS_PII)
    # WHEN carol requests those columns
    request = rig.submit("customers", list(kept))
    # THEN the policy grants it at once, with no PII in scope
    assert (request.status, request.needs_approval, request.decided_by) == (
        Status.GRANTED,
        False,
        None,
    )
    assert (request.columns, request.pii_columns) == (kept, ())
    # AND Lake Formation holds SELECT on exactly those columns and DESCRIBE on the table,
    # and no SELECT on the whole table
    assert held(rig.endpoint, rig.account) == {
        holding(on_table("customers"), "DESCRIBE"),
        holding(on_columns("customers", CUSTOMERS_WITHOUT_PII), "SELECT"),
    }


def test_column_subset_with_a_pii_column_waits_for_the_owner_then_grants_those_columns(
    rig: Rig,
) -> None:
    # GIVEN carol's request for two columns of sales_orders.customers, one of them PII
    request = rig.submit("customers", ["email", "customer_id"])
    # THEN it waits for the owner, naming the one PII column in scope, and nothing is granted
    assert (request.status, request.pii_columns) == (Status.PENDING_APPROVAL, ("email",))
    assert held(rig.endpoint, rig.account) == set()
    # WHEN sam, the Sales owner, approves it
    approved = rig.market.approve(request.id, "sam", comment="ok for the churn model")
    # THEN exactly those columns are granted, and the table's DESCRIBE
    assert approved.status is Status.GRANTED
    assert held(rig.endpoint, rig.account) == {
        holding(on_table("customers"), "DESCRIBE"),
        holding(on_columns("customers", ["customer_id", "email"]), "SELECT"),
    }


def test_lake_formation_view_of_a_column_request_shows_its_column_grant(rig: Rig) -> None:
    # GIVEN carol's granted column request ("Show in Lake Formation" on My requests)
    request = rig.submit("customers", list(CUSTOMERS_WITHOUT_PII))
    # WHEN she looks at what Lake Formation holds for it
    view = rig.market.lake_formation_view(request.id, "carol")
    # THEN she sees SELECT on exactly her columns, and DESCRIBE on the table
    shown = {(json.dumps(e["Resource"], sort_keys=True), frozenset(e["Permissions"])) for e in view}
    assert shown >= {
        holding(on_table("customers"), "DESCRIBE")[:2],
        holding(on_columns("customers", CUSTOMERS_WITHOUT_PII), "SELECT")[:2],
    }


@pytest.mark.parametrize("columns", [["order_id"], ["customer_id", "country"], []])
def test_database_request_with_columns_is_invalid_input_and_stores_nothing(
    rig: Rig, columns: list[str]
) -> None:
    # WHEN carol asks for a whole database with a column subset
    with pytest.raises(InvalidInput, match="database"):
        rig.submit(None, columns)
    # THEN nothing is stored and nothing granted
    assert rig.market.requests() == []
    assert held(rig.endpoint, rig.account) == set()


def test_column_subset_with_an_unknown_column_is_invalid_input_and_stores_nothing(
    rig: Rig,
) -> None:
    # WHEN carol names a column sales_orders.customers does not have
    with pytest.raises(InvalidInput, match="'ssn'"):
        rig.submit("customers", ["customer_id", "ssn"])
    # THEN nothing is stored and nothing granted
    assert rig.market.requests() == []
    assert held(rig.endpoint, rig.account) == set()


DUPLICATES = [
    # the same columns in the same order
    (["order_id", "order_total"], ["order_id", "order_total"], True),
    # the same columns named in another order, or with one named twice
    (["order_id", "order_total"], ["order_total", "order_id"], True),
    (["order_id", "order_total"], ["order_total", "order_id", "order_id"], True),
    # a different subset: one more column, one fewer, or another one
    (["order_id", "order_total"], ["order_id", "order_total", "currency"], False),
    (["order_id", "order_total"], ["order_id"], False),
    (["order_id", "order_total"], ["order_id", "currency"], False),
    # the whole table against a subset of it, either way round
    (None, ["order_id", "order_total"], False),
    (["order_id", "order_total"], None, False),
]


@pytest.mark.parametrize(("first", "second", "duplicate"), DUPLICATES)
def test_identical_column_request_is_a_duplicate_and_a_different_subset_is_not(
    rig: Rig, first: list[str] | None, second: list[str] | None, duplicate: bool
) -> None:
    # GIVEN carol's granted request for sales_orders.orders (whole, or some columns)
    granted = rig.submit("orders", first)
    assert granted.status is Status.GRANTED
    if duplicate:
        # WHEN she asks again for the same scope
        # THEN it is refused as a conflict that names the existing request, and not stored
        with pytest.raises(Conflict, match=granted.id):
            rig.submit("orders", second)
        assert [r.id for r in rig.market.requests()] == [granted.id]
    else:
        # WHEN she asks for a different scope of the same table
        # THEN it is a request of its own, granted too
        other = rig.submit("orders", second)
        assert other.status is Status.GRANTED
        assert {r.id for r in rig.market.requests()} == {granted.id, other.id}


# Use cases: revoke ------------------------------------------------------------------------------

ORDER_SUBSET = ("order_id", "order_total")
OTHER_SUBSET = ("order_id", "status")

OVERLAPS = [
    # nothing else: every grant of the column request goes
    (None, set()),
    # a whole-table request of the same account keeps SELECT and DESCRIBE on the table
    ("whole table", {holding(on_table("orders"), "SELECT", "DESCRIBE")}),
    # another subset of the same table keeps its columns and the table's DESCRIBE
    (
        "other subset",
        {
            holding(on_table("orders"), "DESCRIBE"),
            holding(on_columns("orders", OTHER_SUBSET), "SELECT"),
        },
    ),
]


@pytest.mark.parametrize(("other", "kept"), OVERLAPS)
def test_revoking_a_column_request_removes_its_grants_but_not_what_another_justifies(
    rig: Rig, other: str | None, kept: set[Holding]
) -> None:
    # GIVEN carol's granted column request for sales_orders.orders, and maybe another
    # granted request of hers for the same table
    if other is not None:
        rig.submit("orders", OTHER_SUBSET if other == "other subset" else None)
    request = rig.submit("orders", list(ORDER_SUBSET))
    assert held(rig.endpoint, rig.account) >= {
        holding(on_columns("orders", ORDER_SUBSET), "SELECT")
    }
    # WHEN sam revokes the column request
    revoked = rig.lifecycle.revoke(request.id, "sam", comment="The project ended")
    # THEN it is revoked, and Lake Formation holds only what the other request needs
    assert revoked.status is Status.REVOKED
    assert held(rig.endpoint, rig.account) == kept


def test_revoking_a_whole_table_request_keeps_the_column_requests_describe_and_columns(
    rig: Rig,
) -> None:
    # GIVEN carol's granted whole-table and column requests for sales_orders.orders
    whole = rig.submit("orders")
    rig.submit("orders", list(ORDER_SUBSET))
    # WHEN sam revokes the whole-table request
    rig.lifecycle.revoke(whole.id, "sam", comment="The project ended")
    # THEN SELECT on the table goes, and the column request keeps its DESCRIBE and columns
    assert held(rig.endpoint, rig.account) == {
        holding(on_table("orders"), "DESCRIBE"),
        holding(on_columns("orders", ORDER_SUBSET), "SELECT"),
    }


def test_revoke_calls_of_a_column_request_are_its_grant_calls(rig: Rig) -> None:
    # GIVEN carol's granted column request
    request = rig.submit("customers", list(CUSTOMERS_WITHOUT_PII))
    # WHEN sam revokes it
    rig.lifecycle.revoke(request.id, "sam", comment="The project ended")
    # THEN each revoke call had exactly the shape of a grant call
    audit = rig.market.audit(request_id=request.id)
    grants = [e.details["call"] for e in audit if e.action == Action.GRANT_ATTEMPTED.value]
    revokes = [e.details["call"] for e in audit if e.action == Action.REVOKE_ATTEMPTED.value]
    assert len(grants) == 2
    assert revokes == grants


# Use cases: reconcile ---------------------------------------------------------------------------


def reversed_columns(entry: dict[str, Any]) -> dict[str, Any]:
    body = entry.get("Resource", {}).get("TableWithColumns")
    if not body or "ColumnNames" not in body:
        return entry
    names = list(reversed(body["ColumnNames"]))
    return {**entry, "Resource": {"TableWithColumns": {**body, "ColumnNames": names}}}


class ColumnsListedInAnotherOrder:
    """Lake Formation as it may answer: ColumnNames in another order than they were granted."""

    def __init__(self, inner: LakeFormation) -> None:
        self.inner = inner

    def grant(self, spec: GrantSpec) -> dict[str, Any]:
        return self.inner.grant(spec)

    def revoke(self, spec: GrantSpec) -> dict[str, Any]:
        return self.inner.revoke(spec)

    def batch_revoke(self, specs: Any) -> Any:
        return self.inner.batch_revoke(specs)

    def holds(self, spec: GrantSpec) -> bool:
        return self.inner.holds(spec)

    def list_permissions(self, **filters: Any) -> list[dict[str, Any]]:
        return [reversed_columns(e) for e in self.inner.list_permissions(**filters)]


def mine(report: dict[str, Any], rig: Rig) -> list[dict[str, Any]]:
    """The unexplained grants to this test's account (other tests' grants are not ours)."""
    return [u for u in report["unexplained"] if u["account"] == rig.account]


@pytest.mark.parametrize("listing", ["as granted", "in another order"])
def test_reconcile_reports_a_removed_column_grant_as_missing_and_fix_restores_it(
    rig: Rig, listing: str
) -> None:
    # GIVEN carol's granted column request and whole-table request, with Lake Formation
    # listing ColumnNames as granted or in another order
    if listing == "in another order":
        rig.market.grants = ColumnsListedInAnotherOrder(rig.market.grants)  # type: ignore[arg-type]
    request = rig.submit("customers", list(CUSTOMERS_WITHOUT_PII))
    rig.submit("orders")
    # WHEN reconcile runs while Lake Formation holds what was granted
    clean = rig.lifecycle.reconcile(fix=False)
    # THEN it finds nothing missing and nothing unexplained
    assert (clean["missing"], mine(clean, rig)) == ([], [])
    # WHEN the column grant is removed behind the app's back, and reconcile runs
    gone = column_grant(rig, request)
    revoke_behind_the_apps_back(rig, gone)
    found = rig.lifecycle.reconcile(fix=False)
    # THEN it reports exactly that grant of that request as missing, and fixes nothing
    assert [(m["request_id"], m["grant"]) for m in found["missing"]] == [
        (request.id, gone.to_api())
    ]
    assert (mine(found, rig), found["fixed"]) == ([], [])
    assert holding(gone.resource, "SELECT") not in held(rig.endpoint, rig.account)
    # WHEN it runs with --fix
    fixed = rig.lifecycle.reconcile(fix=True)
    # THEN the column grant is back, the fix is audited, and the next check is clean
    assert [(f["request_id"], f["fixed"]) for f in fixed["fixed"]] == [(request.id, True)]
    assert holding(gone.resource, "SELECT") in held(rig.endpoint, rig.account)
    [event] = rig.market.audit(request_id=request.id, action=Action.RECONCILE_FIXED.value)
    assert event.details["call"] == gone.to_api()
    again = rig.lifecycle.reconcile(fix=False)
    assert (again["missing"], mine(again, rig)) == ([], [])


# CLI: request --columns -------------------------------------------------------------------------


@pytest.fixture
def cli(
    rig: Rig,
    wired: Services,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """Run ``python -m mesh ARGS`` in-process in aws mode over the rig's store and users."""
    env = {
        "MESH_MODE": "aws",
        "MESH_DB": str(tmp_path / "mesh.db"),
        "MESH_USERS": str(DEMO_USERS),
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(mesh.settings, "read_secrets", lambda *args, **kwargs: {})

    def build_from_rig(settings: Any, *, endpoint: str | None = None) -> Services:
        return replace(wired, settings=settings, marketplace=rig.market, lifecycle=rig.lifecycle)

    return in_process_cli(monkeypatch, capsys, build_from_rig)


def request_argv(rig: Rig, *scope: str) -> list[str]:
    base = ["request", "--as", "carol", "--database", "sales_orders", *scope]
    return [*base, "--account", rig.account, "--reason", REASON, "--json"]


def test_cli_column_request_prints_its_columns_in_table_order(cli: Cli, rig: Rig) -> None:
    # WHEN carol asks for two unflagged columns of sales_orders.customers through the CLI
    outcome = cli(*request_argv(rig, "--table", "customers", "--columns", "segment,customer_id"))
    # THEN it exits 0 and prints the granted request with its columns
    assert outcome.code == 0, outcome.err
    printed = outcome.json()
    assert (printed["status"], printed["columns"]) == ("granted", ["customer_id", "segment"])
    assert held(rig.endpoint, rig.account) == {
        holding(on_table("customers"), "DESCRIBE"),
        holding(on_columns("customers", ["customer_id", "segment"]), "SELECT"),
    }


def test_cli_whole_table_request_prints_null_columns(cli: Cli, rig: Rig) -> None:
    # WHEN carol asks for a whole table through the CLI
    outcome = cli(*request_argv(rig, "--table", "orders"))
    # THEN the printed request has "columns": null
    assert outcome.code == 0, outcome.err
    printed = outcome.json()
    assert "columns" in printed
    assert (printed["status"], printed["columns"]) == ("granted", None)


CLI_REFUSALS = [
    # an unknown column
    ["--table", "customers", "--columns", "customer_id,ssn"],
    # no column at all
    ["--table", "customers", "--columns", ","],
    ["--table", "customers", "--columns", ""],
    # columns on a whole-database request
    ["--columns", "order_id"],
]


@pytest.mark.parametrize("scope", CLI_REFUSALS)
def test_cli_unknown_or_misplaced_columns_exit_2_with_one_sentence(
    cli: Cli, rig: Rig, scope: list[str]
) -> None:
    # WHEN carol asks with an unknown column, none, or columns on a database request
    outcome = cli(*request_argv(rig, *scope))
    # THEN it is invalid input in one sentence, and nothing is stored or granted
    assert outcome.code == 2
    assert_one_sentence_on_stderr(outcome)
    assert rig.market.requests() == []
    assert held(rig.endpoint, rig.account) == set()


# The table page (AppTest) -----------------------------------------------------------------------


@pytest.fixture
def app(
    fake_aws_environment: None,
    seeded: str,
    running_server: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AppTest:
    """The web app in aws mode over the seeded mesh and a fresh store, not yet run."""
    Store(tmp_path / "mesh.db").migrate(create=True)  # as `mesh init` makes it
    env = {
        **moto_env(seeded),
        "MESH_MODE": "aws",
        "MESH_DB": str(tmp_path / "mesh.db"),
        "MESH_USERS": str(DEMO_USERS),
        "MESH_COOKIE_KEY": COOKIE_KEY,
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
        "MESH_NOTIFY": "off",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Pages read the catalog index, which `mesh sync` (or tick) fills; pages never sync.
    assert build(load_settings()).sync.run(actor="test").error is None
    return AppTest.from_file(APP, default_timeout=30)


def test_table_page_selects_all_columns_except_pii_in_one_click_and_grants_them_at_once(
    app: AppTest, seeded: str
) -> None:
    # GIVEN carol on the table page of sales_orders.customers
    sign_in(app, "carol")
    app.query_params = {"db": "sales_orders", "table": "customers"}
    app.switch_page(f"{ui.PAGES_DIR}/table.py").run()
    assert not app.exception
    key = "request-sales_orders-customers"
    assert app.multiselect(key=f"{key}-columns").value == []
    # WHEN she clicks "Select all columns except PII"
    labelled(app.button, "Select all columns except PII").click().run()
    # THEN the Columns multiselect holds the columns without PII, and the page says which
    # columns that leaves out
    assert not app.exception
    assert app.multiselect(key=f"{key}-columns").value == list(CUSTOMERS_WITHOUT_PII)
    [leaves_out] = [c for c in texts(app.caption) if "leaves out" in c]
    for name in CUSTOMERS_PII:
        assert name in leaves_out
    for name in CUSTOMERS_WITHOUT_PII:
        assert name not in leaves_out
    # WHEN she gives a reason and submits
    app.text_area(key=f"{key}-reason").input(REASON)
    labelled(app.button, "Request access").click().run()
    # THEN she is told it is granted, and Lake Formation holds exactly the column grant
    assert not app.exception
    assert not app.error, texts(app.error)
    assert [m for m in texts(app.success) if "granted" in m]
    assert held(seeded, CAROLS_ACCOUNT) == {
        holding(on_table("customers"), "DESCRIBE"),
        holding(on_columns("customers", CUSTOMERS_WITHOUT_PII), "SELECT"),
    }
