"""Pure rules: pii_flag spellings, sensitivity, reasons, grant shapes, who may do what, badges.

Nothing here touches AWS: the catalog entries are built in memory. Expected values come from
the spec (issue 2 and ../shared/AWS_NOTES.md), never from the code under test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import approval, browse, policy
from mesh.catalog import CatalogSnapshot
from mesh.models import (
    OWNER_STEP,
    AccessRequest,
    Column,
    Database,
    FlagState,
    Role,
    Scope,
    Status,
    Table,
    User,
)

CENTRAL = "123456789012"
CONSUMER_ACCOUNT = "444455556666"
OTHER_CONSUMER = "777788889999"
SALES = "111111111111"
MARKETING = "222222222222"

# The spec's spellings, written out here rather than imported from mesh.policy.
TRUTHY_WORDS = ("true", "yes", "1", "y")
FALSY_WORDS = ("false", "no", "0", "n")


def spec_truthy(value: str | None) -> bool:
    """The spec's rule: falsy only when absent, blank or a falsy word; anything else is PII."""
    return value is not None and value.strip().lower() not in (*FALSY_WORDS, "")


def spec_unrecognised(value: str | None) -> bool:
    return spec_truthy(value) and value is not None and value.strip().lower() not in TRUTHY_WORDS


# Builders ------------------------------------------------------------------------------------


def flagged(value: str | None) -> dict[str, str]:
    return {} if value is None else {"pii_flag": value}


def column(name: str, flag: str | None = None, *, partition: bool = False) -> Column:
    return Column(name=name, type="string", parameters=flagged(flag), is_partition_key=partition)


def table(
    name: str = "events",
    *,
    flag: str | None = None,
    columns: tuple[Column, ...] = (),
    partition_keys: tuple[Column, ...] = (),
    database: str = "web",
    description: str = "",
) -> Table:
    return Table(
        database=database,
        name=name,
        description=description,
        parameters=flagged(flag),
        columns=columns or (column("id"), column("payload")),
        partition_keys=partition_keys,
    )


def database(
    name: str = "web",
    *,
    flag: str | None = None,
    owner: str | None = SALES,
    owner_name: str = "Sales",
    description: str = "",
) -> Database:
    parameters = flagged(flag)
    if owner is not None:
        parameters |= {"data_owner": owner, "data_owner_name": owner_name}
    return Database(name=name, description=description, parameters=parameters)


def request(
    *, requester: str = "carol", status: Status = Status.PENDING_APPROVAL, table: str | None = None
) -> AccessRequest:
    return AccessRequest(
        id="r-1",
        status=status,
        database="web",
        table=table,
        account=CONSUMER_ACCOUNT,
        requester=requester,
        reason="dashboard",
        owner_account=SALES,
        plan=(OWNER_STEP,),
    )


def evaluate(scope: Scope, db: Database, tables: list[Table]) -> approval.Verdict:
    """The built-in default policy's verdict, for an account no condition names."""
    return approval.evaluate(approval.DEFAULT, scope, db, tables, account=None)


def may_decide(user: User, pending: AccessRequest, owner: str | None) -> bool:
    """Whether ``user`` may approve the one owner step of the default policy."""
    return approval.may_act(approval.DEFAULT, user, pending, owner, ())


CAROL = User(username="carol", roles=frozenset({Role.CONSUMER}), accounts=(CONSUMER_ACCOUNT,))
DAN = User(username="dan", roles=frozenset({Role.CONSUMER}), accounts=(OTHER_CONSUMER,))
SAM = User(username="sam", roles=frozenset({Role.OWNER}), owner_of=frozenset({SALES}))
MIA = User(
    username="mia",
    roles=frozenset({Role.OWNER, Role.CONSUMER}),
    accounts=(CONSUMER_ACCOUNT,),
    owner_of=frozenset({MARKETING}),
)
ADA = User(username="ada", roles=frozenset({Role.ADMIN}))
# owner_of lists Sales, but the owner role is missing: a misconfigured entry, not an owner.
ROLELESS_OWNER = User(username="ron", roles=frozenset({Role.CONSUMER}), owner_of=frozenset({SALES}))
USERS = {u.username: u for u in (CAROL, DAN, SAM, MIA, ADA, ROLELESS_OWNER)}


# Flag spellings ------------------------------------------------------------------------------

SET_SPELLINGS = ["true", "TRUE", "True", " yes ", "YES", "Yes", "1", "y", "Y", "\ttrue\n"]
UNSET_SPELLINGS = [None, "", "   ", "\t\n", "false", "FALSE", " False ", "no", "NO", "0", "n", "N"]
# Each of these is tempting to read as "false"; all must count as PII (fail closed).
UNRECOGNISED_SPELLINGS = ["maybe", "truee", "2", "on", "off", "none", "null", "t", "f", "-1", "n/a"]


@pytest.mark.parametrize("value", SET_SPELLINGS)
def test_truthy_spelling_reads_as_set(value: str) -> None:
    # GIVEN a truthy spelling, in any case and with surrounding whitespace
    # WHEN the flag is read
    state = policy.read_flag(value)
    # THEN it is set, and counts as PII
    assert state is FlagState.SET
    assert state.truthy


@pytest.mark.parametrize("value", UNSET_SPELLINGS)
def test_falsy_absent_or_blank_flag_reads_as_unset(value: str | None) -> None:
    # GIVEN a falsy spelling, no value, or only whitespace
    # WHEN the flag is read
    state = policy.read_flag(value)
    # THEN it is unset
    assert state is FlagState.UNSET
    assert not state.truthy


@pytest.mark.parametrize("value", UNRECOGNISED_SPELLINGS)
def test_unrecognised_flag_value_is_reported_and_counts_as_pii(value: str) -> None:
    # GIVEN a value that is neither a truthy nor a falsy spelling
    # WHEN the flag is read
    state = policy.read_flag(value)
    # THEN it is reported as unrecognised, and still counts as PII
    assert state is FlagState.UNRECOGNISED
    assert state.truthy


@pytest.mark.parametrize("parameters", [None, {}, {"data_owner": SALES}])
def test_missing_pii_flag_parameter_is_unset(parameters: dict[str, str] | None) -> None:
    # GIVEN parameters with no pii_flag key at all
    # WHEN the flag is read from them
    # THEN it is unset
    assert policy.flag_of(parameters) is FlagState.UNSET


@given(st.text(max_size=12))
def test_any_text_is_truthy_unless_it_is_a_falsy_spelling(value: str) -> None:
    # GIVEN any text at all
    # WHEN the flag is read
    state = policy.read_flag(value)
    # THEN only falsy spellings and blanks are unset, and the rest is set or unrecognised
    assert state.truthy == spec_truthy(value)
    assert (state is FlagState.UNRECOGNISED) == spec_unrecognised(value)


# Table sensitivity ---------------------------------------------------------------------------

PLACES = ["database", "table", "column", "partition key"]


def scope_with_flag(place: str, value: str | None) -> tuple[Database, Table]:
    """A database and table with ``value`` as the only pii_flag, set at ``place``."""
    at = dict.fromkeys(PLACES) | {place: value}
    db = database(flag=at["database"])
    tb = table(
        flag=at["table"],
        columns=(column("id"), column("ip_address", at["column"])),
        partition_keys=(column("day", at["partition key"], partition=True),),
    )
    return db, tb


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("value", ["true", "TRUE", " Yes ", "1", "bogus"])
def test_flag_at_any_level_makes_table_request_need_approval(place: str, value: str) -> None:
    # GIVEN a table whose only pii_flag is truthy (or unrecognised) at one level
    db, tb = scope_with_flag(place, value)
    # WHEN a table request is evaluated
    verdict = evaluate(Scope(database=db.name, table=tb.name), db, [tb])
    # THEN it needs approval
    assert verdict.needs_approval
    assert policy.assess_table(db, tb).sensitive


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("value", [None, "", "  ", "false", "No", "0", "N"])
def test_falsy_flag_at_any_level_leaves_table_request_granted_at_once(
    place: str, value: str | None
) -> None:
    # GIVEN a table whose only pii_flag is falsy, blank or absent
    db, tb = scope_with_flag(place, value)
    # WHEN a table request is evaluated
    verdict = evaluate(Scope(database=db.name, table=tb.name), db, [tb])
    # THEN it is granted at once, and the policy still says why
    assert not verdict.needs_approval
    assert verdict.sensitive_columns == ()
    assert verdict.reason


def test_pii_column_makes_table_request_need_approval_and_names_the_column() -> None:
    # GIVEN a table whose ip_address column has pii_flag=True
    db = database()
    tb = table(columns=(column("id"), column("ip_address", "True"), column("page")))
    # WHEN a table request is evaluated
    verdict = evaluate(Scope(database=db.name, table=tb.name), db, [tb])
    # THEN it needs approval and the reason names the column and its value
    assert verdict.needs_approval
    assert "column ip_address has pii_flag=True" in verdict.reason
    assert verdict.sensitive_columns == ("ip_address",)


def test_unrecognised_column_flag_reason_says_it_is_unrecognised() -> None:
    # GIVEN a column flagged with a value nobody can read
    db = database()
    tb = table(columns=(column("id"), column("ip_address", "perhaps")))
    # WHEN a table request is evaluated
    verdict = evaluate(Scope(database=db.name, table=tb.name), db, [tb])
    # THEN the reason names the column, the value, and that the value is unrecognised
    assert verdict.needs_approval
    assert "ip_address" in verdict.reason
    assert "perhaps" in verdict.reason
    assert "unrecognised" in verdict.reason


def test_flagged_partition_key_is_named_as_a_partition_key() -> None:
    # GIVEN a table whose only PII is a partition key
    db = database()
    tb = table(partition_keys=(column("customer_id", "yes", partition=True),))
    # WHEN a table request is evaluated
    verdict = evaluate(Scope(database=db.name, table=tb.name), db, [tb])
    # THEN it needs approval and the reason names the partition key
    assert verdict.needs_approval
    assert "partition key customer_id" in verdict.reason
    assert verdict.sensitive_columns == ("customer_id",)


def test_database_flag_reason_names_the_database() -> None:
    # GIVEN a database flagged as a whole, and a table with no flagged column
    db = database("hr_people", flag="yes")
    tb = table(database="hr_people")
    # WHEN a table request is evaluated
    verdict = evaluate(Scope(database=db.name, table=tb.name), db, [tb])
    # THEN the reason names the database, and no column is listed as PII
    assert verdict.needs_approval
    assert "database hr_people" in verdict.reason
    assert verdict.sensitive_columns == ()


def test_pii_columns_are_flagged_columns_in_column_order_then_partition_keys() -> None:
    # GIVEN flagged columns out of alphabetical order, and flagged partition keys after them
    tb = table(
        columns=(
            column("zip", "true"),
            column("id"),
            column("email", "TRUE"),
            column("age", "false"),
        ),
        partition_keys=(
            column("region", "yes", partition=True),
            column("day", partition=True),
            column("account", "odd", partition=True),
        ),
    )
    # WHEN its PII columns are listed
    names = [c.name for c in policy.pii_columns(tb)]
    # THEN flagged columns come in column order, then flagged partition keys in their order
    assert names == ["zip", "email", "region", "account"]
    assert policy.assess_table(database(), tb).pii_columns == tuple(names)


# Database sensitivity ------------------------------------------------------------------------


def test_database_request_needs_approval_when_only_a_table_column_holds_pii() -> None:
    # GIVEN a database flagged "false" whose weblog table has a PII column (the reference hole)
    db = database(flag="false")
    clean = table("pages")
    weblog = table("weblog", columns=(column("id"), column("ip_address", "true")))
    # WHEN a request for the whole database is evaluated
    verdict = evaluate(Scope(database=db.name), db, [clean, weblog])
    # THEN it needs approval and names the table and column
    assert verdict.needs_approval
    assert "weblog" in verdict.reason
    assert "ip_address" in verdict.reason
    assert any("weblog" in c and "ip_address" in c for c in verdict.sensitive_columns)


@pytest.mark.parametrize(
    ("db_flag", "tables", "sensitive"),
    [
        # the database's own flag decides alone
        ("true", (), True),
        ("garbage", (), True),
        (None, (), False),
        ("false", (), False),
        # a table flag, column flag or partition key flag anywhere makes it sensitive
        (None, (table(flag="TRUE"),), True),
        ("no", (table("a"), table("b", columns=(column("ssn", "y"),))), True),
        (None, (table(partition_keys=(column("user_id", "1", partition=True),)),), True),
        (None, (table(columns=(column("note", "unknown"),)),), True),
        # only clean tables
        (None, (table("a"), table("b", flag="0")), False),
        ("n", (table(columns=(column("city", "false"),)),), False),
    ],
)
def test_database_request_is_sensitive_if_database_or_any_table_is(
    db_flag: str | None, tables: tuple[Table, ...], sensitive: bool
) -> None:
    # GIVEN a database and its tables
    db = database(flag=db_flag)
    # WHEN a database request is evaluated
    verdict = evaluate(Scope(database=db.name), db, list(tables))
    # THEN it needs approval exactly when the database or one of its tables is sensitive
    assert verdict.needs_approval is sensitive
    assert policy.assess_database(db, tables).sensitive is sensitive


# Grant shapes --------------------------------------------------------------------------------


def test_table_request_grants_select_and_describe_with_grant_option_on_the_table() -> None:
    # GIVEN a table request
    scope = Scope(database="web", table="events")
    # WHEN its grants are planned
    grants = policy.grants_for(scope, account=CONSUMER_ACCOUNT, catalog_id=CENTRAL)
    # THEN it is one grant_permissions call with the catalog id inside the Table resource
    assert [g.to_api() for g in grants] == [
        {
            "Principal": {"DataLakePrincipalIdentifier": CONSUMER_ACCOUNT},
            "Resource": {"Table": {"CatalogId": CENTRAL, "DatabaseName": "web", "Name": "events"}},
            "Permissions": ["SELECT", "DESCRIBE"],
            "PermissionsWithGrantOption": ["SELECT", "DESCRIBE"],
        }
    ]


def test_database_request_grants_database_describe_and_all_tables_with_grant_option() -> None:
    # GIVEN a database request
    scope = Scope(database="web")
    # WHEN its grants are planned
    grants = policy.grants_for(scope, account=OTHER_CONSUMER, catalog_id=CENTRAL)
    # THEN the database's DESCRIBE is granted explicitly (cross account), then every table
    principal = {"DataLakePrincipalIdentifier": OTHER_CONSUMER}
    assert [g.to_api() for g in grants] == [
        {
            "Principal": principal,
            "Resource": {"Database": {"CatalogId": CENTRAL, "Name": "web"}},
            "Permissions": ["DESCRIBE"],
            "PermissionsWithGrantOption": ["DESCRIBE"],
        },
        {
            "Principal": principal,
            "Resource": {
                "Table": {"CatalogId": CENTRAL, "DatabaseName": "web", "TableWildcard": {}}
            },
            "Permissions": ["SELECT", "DESCRIBE"],
            "PermissionsWithGrantOption": ["SELECT", "DESCRIBE"],
        },
    ]
    # AND each grant has its own key, so a half-done request can record which one is done
    assert len({g.key for g in grants}) == len(grants)


@pytest.mark.parametrize("scope", [Scope(database="web"), Scope(database="web", table="events")])
def test_grant_calls_leave_top_level_catalog_id_out(scope: Scope) -> None:
    # GIVEN any request scope
    # WHEN its grants are planned
    grants = policy.grants_for(scope, account=CONSUMER_ACCOUNT, catalog_id=CENTRAL)
    # THEN no call carries a top-level CatalogId: it lives inside each resource
    assert grants
    assert all("CatalogId" not in g.to_api() for g in grants)


# Who may do what -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "requester", "allowed"),
    [
        # owners decide for the products they own, and only those
        ("sam", "carol", True),
        ("mia", "carol", False),
        ("ron", "carol", False),
        # admins decide for every product
        ("ada", "carol", True),
        # consumers never decide
        ("dan", "carol", False),
        # nobody decides their own request, whatever their roles
        ("carol", "carol", False),
        ("sam", "sam", False),
        ("ada", "ada", False),
    ],
)
def test_who_may_decide_a_request(username: str, requester: str, allowed: bool) -> None:
    # GIVEN a pending request on a Sales product
    pending = request(requester=requester)
    # WHEN the user asks to decide it
    # THEN only an owner of Sales or an admin may, and never the requester
    assert may_decide(USERS[username], pending, SALES) is allowed


@pytest.mark.parametrize(("username", "allowed"), [("sam", False), ("ada", True)])
def test_only_an_admin_may_decide_for_a_product_with_no_owner(username: str, allowed: bool) -> None:
    # GIVEN a request whose database has lost its data_owner
    pending = request()
    # WHEN an owner or an admin asks to decide it
    # THEN only the admin may
    assert may_decide(USERS[username], pending, None) is allowed


@pytest.mark.parametrize(
    ("username", "allowed"),
    [
        ("carol", True),  # the requester
        ("sam", True),  # an owner of the product
        ("ada", True),  # an admin
        ("mia", False),  # an owner of another product
        ("dan", False),  # another consumer
        ("ron", False),  # owner_of without the owner role
    ],
)
def test_who_may_retry_a_failed_request(username: str, allowed: bool) -> None:
    # GIVEN a failed request by carol on a Sales product
    failed = request(status=Status.FAILED)
    # WHEN the user asks to retry it
    # THEN the requester, an owner of Sales or an admin may
    assert policy.may_retry(USERS[username], failed, SALES) is allowed


@pytest.mark.parametrize(
    ("username", "status", "allowed"),
    [
        # the requester cancels a pending request
        ("carol", Status.PENDING_APPROVAL, True),
        # and nothing that is already decided or over
        ("carol", Status.GRANTED, False),
        ("carol", Status.DENIED, False),
        ("carol", Status.FAILED, False),
        ("carol", Status.CANCELLED, False),
        # nobody else cancels it for them
        ("dan", Status.PENDING_APPROVAL, False),
        ("sam", Status.PENDING_APPROVAL, False),
    ],
)
def test_who_may_cancel_a_request(username: str, status: Status, allowed: bool) -> None:
    # GIVEN carol's request in some status
    mine = request(status=status)
    # WHEN the user asks to cancel it
    # THEN only carol may, and only while it is pending
    assert policy.may_cancel(USERS[username], mine) is allowed


@pytest.mark.parametrize(
    ("username", "account", "allowed"),
    [
        # a consumer requests for their own accounts only
        ("carol", CONSUMER_ACCOUNT, True),
        ("carol", OTHER_CONSUMER, False),
        ("mia", CONSUMER_ACCOUNT, True),
        # an owner with no accounts requests for none
        ("sam", CONSUMER_ACCOUNT, False),
        # an admin requests for any account
        ("ada", OTHER_CONSUMER, True),
        ("ada", "999999999999", True),
    ],
)
def test_who_may_request_for_an_account(username: str, account: str, allowed: bool) -> None:
    # GIVEN a user and a target account
    # WHEN they ask to request for it
    # THEN only their own accounts are allowed, except for admins
    assert policy.may_request_for(USERS[username], account) is allowed


@pytest.mark.parametrize(
    ("account", "valid"),
    [
        ("444455556666", True),
        ("000000000000", True),
        # not exactly 12 digits
        ("44445555666", False),
        ("4444555566667", False),
        ("4444-5555-6666", False),
        (" 444455556666", False),
        ("444455556666\n", False),
        ("", False),
        # digits of other scripts are not an AWS account id
        ("٤٤٤٤٥٥٥٥٦٦٦٦", False),
        ("４４４４５５５５６６６６", False),
    ],
)
def test_account_id_is_exactly_twelve_ascii_digits(account: str, valid: bool) -> None:
    # GIVEN a candidate account id
    # WHEN it is checked
    # THEN only twelve ASCII digits pass
    assert policy.is_valid_account(account) is valid


usernames = st.sampled_from(["carol", "dan", "sam", "mia", "ada", "ron"])
role_sets = st.frozensets(st.sampled_from(list(Role)))
owned = st.frozensets(st.sampled_from([SALES, MARKETING]))


@given(username=usernames, roles=role_sets, owner_of=owned, owner=st.sampled_from([SALES, None]))
def test_nobody_ever_decides_their_own_request(
    username: str, roles: frozenset[Role], owner_of: frozenset[str], owner: str | None
) -> None:
    # GIVEN any user, with any roles and ownership, who made the request
    user = User(username=username, roles=roles, owner_of=owner_of)
    # WHEN they ask to decide it
    # THEN they may not
    assert not may_decide(user, request(requester=username), owner)


@given(username=usernames, roles=role_sets, owner_of=owned)
def test_an_admin_decides_any_request_but_their_own(
    username: str, roles: frozenset[Role], owner_of: frozenset[str]
) -> None:
    # GIVEN an admin, whatever else they are, and a request by someone else
    admin = User(username=username, roles=roles | {Role.ADMIN}, owner_of=owner_of)
    other = request(requester=f"not-{username}")
    # WHEN they ask to decide it
    # THEN they may, for an owned or an unowned product
    assert may_decide(admin, other, SALES)
    assert may_decide(admin, other, None)


# Badges and the browse views -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, ""),
        ("false", ""),
        ("  ", ""),
        ("true", "PII"),
        (" YES ", "PII"),
        ("bogus", "PII (unrecognised flag value)"),
        ("off", "PII (unrecognised flag value)"),
    ],
)
def test_pii_badge_shows_the_flag_and_marks_unrecognised_values(
    value: str | None, shown: str
) -> None:
    # GIVEN a catalog entry's parameters
    # WHEN its badge is made
    # THEN set flags read PII, unrecognised ones say so, and unset ones show nothing
    assert browse.badge(flagged(value)) == shown


@pytest.mark.parametrize(
    ("db_flag", "column_flag", "pii", "contains_pii", "sensitive"),
    [
        # PII only in a column: no own badge, but "contains PII"
        (None, "true", "", True, True),
        ("false", "weird", "", True, True),
        # the database's own flag: its badge, so "contains PII" would repeat it
        ("true", None, "PII", False, True),
        ("true", "true", "PII", False, True),
        ("odd", None, "PII (unrecognised flag value)", False, True),
        # no PII anywhere
        (None, None, "", False, False),
    ],
)
def test_database_row_separates_own_flag_from_pii_in_tables(
    db_flag: str | None, column_flag: str | None, pii: str, contains_pii: bool, sensitive: bool
) -> None:
    # GIVEN a database with a flag of its own, or a flagged column in one table
    db = database(flag=db_flag)
    tables = (table("a"), table("b", columns=(column("id"), column("email", column_flag))))
    # WHEN its row on the Databases page is made
    row = browse.database_row(db, tables)
    # THEN the badge shows its own flag, and "contains PII" only PII found below it
    assert (row.pii, row.contains_pii, row.sensitive) == (pii, contains_pii, sensitive)
    assert row.tables == 2


@pytest.mark.parametrize(
    ("parameters", "no_owner"),
    [
        ({"data_owner": SALES}, False),
        ({}, True),
        ({"data_owner": ""}, True),
        ({"data_owner": "   "}, True),
    ],
)
def test_database_without_data_owner_gets_no_owner_badge(
    parameters: dict[str, str], no_owner: bool
) -> None:
    # GIVEN a database with or without a data_owner
    db = Database(name="legacy", parameters=parameters)
    # WHEN its row is made
    row = browse.database_row(db, ())
    # THEN a missing or blank data_owner shows "no owner"
    assert row.no_owner is no_owner
    assert (row.owner_account is None) is no_owner


@pytest.fixture
def three_products() -> CatalogSnapshot:
    """Two owned databases and one without an owner, with no tables."""
    return CatalogSnapshot(
        databases=(
            database("sales_orders", owner=SALES, owner_name="Sales", description="Web shop"),
            database("campaigns", owner=MARKETING, owner_name="Marketing", description="Ad spend"),
            database("legacy_exports", owner=None, description="Old dumps"),
        ),
        tables={},
    )


@pytest.mark.parametrize(
    ("text", "names"),
    [
        # blank shows everything
        ("", ["sales_orders", "campaigns", "legacy_exports"]),
        ("   ", ["sales_orders", "campaigns", "legacy_exports"]),
        # name, description, owner name and owner account, in any case
        ("ORDERS", ["sales_orders"]),
        ("ad spend", ["campaigns"]),
        ("marketing", ["campaigns"]),
        (MARKETING, ["campaigns"]),
        ("dumps", ["legacy_exports"]),
        # nothing matches
        ("inventory", []),
    ],
)
def test_text_filter_matches_name_description_and_owner(
    three_products: CatalogSnapshot, text: str, names: list[str]
) -> None:
    # GIVEN three databases
    # WHEN the Databases page is filtered
    rows = browse.database_rows(three_products, text)
    # THEN only those whose name, description or owner holds the text remain, in catalog order
    assert [r.name for r in rows] == names


def test_table_rows_show_own_badge_and_count_pii_columns() -> None:
    # GIVEN a database with a flagged table and a table with two PII columns
    db = database()
    tables = (
        table("clean"),
        table("flagged", flag="weird"),
        table(
            "people",
            columns=(column("id"), column("email", "true"), column("phone", "Y")),
            partition_keys=(column("day", partition=True),),
        ),
    )
    # WHEN the database page's table rows are made
    rows = {r.name: r for r in browse.table_rows(db, tables)}
    # THEN each shows its own badge, its PII column count and whether it is sensitive
    assert (rows["clean"].pii, rows["clean"].pii_columns, rows["clean"].sensitive) == ("", 0, False)
    assert rows["flagged"].pii == "PII (unrecognised flag value)"
    assert rows["flagged"].sensitive
    assert (rows["people"].pii, rows["people"].pii_columns, rows["people"].sensitive) == (
        "",
        2,
        True,
    )


def test_column_rows_list_partition_keys_after_columns_with_their_badges() -> None:
    # GIVEN a table with a flagged column and a flagged partition key
    tb = table(
        columns=(column("id"), column("email", "true")),
        partition_keys=(column("region", "?", partition=True),),
    )
    # WHEN the table page's column rows are made
    rows = browse.column_rows(tb)
    # THEN partition keys follow the columns, marked, with their badges
    assert [(r.name, r.pii, r.partition_key) for r in rows] == [
        ("id", "", False),
        ("email", "PII", False),
        ("region", "PII (unrecognised flag value)", True),
    ]


def test_catalog_json_has_exactly_the_public_shape() -> None:
    # GIVEN an owned database with column PII, and an unowned one flagged with an odd value
    owned_db = database("web", owner=SALES, owner_name="Sales", description="Clickstream")
    unowned_db = database("legacy", flag="maybe", owner=None, description="Old")
    weblog = table(
        "weblog",
        database="web",
        columns=(column("ip_address", "TRUE"), column("url"), column("user_agent", "y")),
        partition_keys=(column("visitor_id", "1", partition=True),),
    )
    pages = table("pages", database="web")
    dump = table("dump", database="legacy")
    snapshot = CatalogSnapshot(
        databases=(owned_db, unowned_db),
        tables={"web": (weblog, pages), "legacy": (dump,)},
    )
    # WHEN the catalog is rendered as JSON
    rendered = browse.catalog_json(snapshot)
    # THEN it has exactly the contract's keys and values, and survives a JSON round trip
    assert json.loads(json.dumps(rendered)) == [
        {
            "name": "web",
            "description": "Clickstream",
            "owner_account": SALES,
            "owner_name": "Sales",
            "pii_flag": False,
            "sensitive": True,
            "level": "pii",
            "tables": [
                {
                    "name": "weblog",
                    "pii_columns": ["ip_address", "user_agent", "visitor_id"],
                    "sensitive": True,
                    "level": "pii",
                },
                {"name": "pages", "pii_columns": [], "sensitive": False, "level": "public"},
            ],
        },
        {
            "name": "legacy",
            "description": "Old",
            "owner_account": None,
            "owner_name": "",
            "pii_flag": True,
            "sensitive": True,
            "level": "pii",
            "tables": [{"name": "dump", "pii_columns": [], "sensitive": True, "level": "pii"}],
        },
    ]


# Invariants over random catalogs -------------------------------------------------------------

SPELLINGS = [*TRUTHY_WORDS, *FALSY_WORDS, "TRUE", " Yes ", "FALSE", " n ", "", "  ", "on", "off"]
flag_values = st.one_of(st.none(), st.sampled_from(SPELLINGS), st.text(max_size=6))


@dataclass(frozen=True)
class TableShape:
    flag: str | None
    columns: list[str | None]
    partition_keys: list[str | None]


@dataclass(frozen=True)
class CatalogShape:
    """The flags of one database and its tables, before they become catalog entries."""

    flag: str | None
    tables: list[TableShape]

    def flags(self) -> list[str | None]:
        found = [self.flag]
        for t in self.tables:
            found += [t.flag, *t.columns, *t.partition_keys]
        return found

    def replace_unrecognised(self, by: str) -> CatalogShape:
        def fix(value: str | None) -> str | None:
            return by if spec_unrecognised(value) else value

        return CatalogShape(
            flag=fix(self.flag),
            tables=[
                TableShape(
                    flag=fix(t.flag),
                    columns=[fix(c) for c in t.columns],
                    partition_keys=[fix(k) for k in t.partition_keys],
                )
                for t in self.tables
            ],
        )

    def build(self) -> tuple[Database, tuple[Table, ...]]:
        tables = tuple(
            Table(
                database="db",
                name=f"t{i}",
                parameters=flagged(t.flag),
                columns=tuple(column(f"c{j}", f) for j, f in enumerate(t.columns)),
                partition_keys=tuple(
                    column(f"p{j}", f, partition=True) for j, f in enumerate(t.partition_keys)
                ),
            )
            for i, t in enumerate(self.tables)
        )
        return database("db", flag=self.flag), tables


table_shapes = st.builds(
    TableShape,
    flag=flag_values,
    columns=st.lists(flag_values, max_size=5),
    partition_keys=st.lists(flag_values, max_size=2),
)
# Each catalog example builds many entries: fewer examples keep the file fast.
catalog_examples = settings(max_examples=50)
catalog_shapes = st.builds(
    CatalogShape, flag=flag_values, tables=st.lists(table_shapes, max_size=4)
)


@catalog_examples
@given(catalog_shapes)
def test_table_is_sensitive_exactly_when_a_flag_on_its_path_is_truthy(
    shape: CatalogShape,
) -> None:
    # GIVEN a random database and tables with random flag values everywhere
    db, tables = shape.build()
    for t, raw in zip(tables, shape.tables, strict=True):
        # WHEN each table is assessed
        found = policy.assess_table(db, t)
        # THEN it is sensitive exactly when its database, itself or a column is truthy
        path = [shape.flag, raw.flag, *raw.columns, *raw.partition_keys]
        assert found.sensitive == any(spec_truthy(v) for v in path)
        # AND its PII columns are exactly the truthy ones, columns first, then partition keys
        expected = [f"c{j}" for j, v in enumerate(raw.columns) if spec_truthy(v)]
        expected += [f"p{j}" for j, v in enumerate(raw.partition_keys) if spec_truthy(v)]
        assert list(found.pii_columns) == expected
        # AND a sensitive verdict always gives a reason
        assert bool(found.reason) == found.sensitive


@catalog_examples
@given(catalog_shapes)
def test_database_request_is_sensitive_when_any_flag_in_it_is_truthy(
    shape: CatalogShape,
) -> None:
    # GIVEN a random database and tables
    db, tables = shape.build()
    # WHEN a database request is evaluated
    verdict = evaluate(Scope(database=db.name), db, tables)
    # THEN it needs approval exactly when some flag anywhere in it is truthy
    assert verdict.needs_approval == any(spec_truthy(v) for v in shape.flags())
    # AND never less than any single table request in it would
    for t in tables:
        table_verdict = evaluate(Scope(database=db.name, table=t.name), db, [t])
        assert verdict.needs_approval or not table_verdict.needs_approval


@catalog_examples
@given(catalog_shapes)
def test_unrecognised_value_is_treated_exactly_as_true(shape: CatalogShape) -> None:
    # GIVEN a random catalog, and the same catalog with every unrecognised value made "true"
    db, tables = shape.build()
    true_db, true_tables = shape.replace_unrecognised("true").build()
    # WHEN both are assessed and rendered
    # THEN every verdict, PII column list and JSON field is the same
    assert (
        policy.assess_database(db, tables).sensitive
        == policy.assess_database(true_db, true_tables).sensitive
    )
    for t, true_t in zip(tables, true_tables, strict=True):
        found, as_true = policy.assess_table(db, t), policy.assess_table(true_db, true_t)
        assert (found.sensitive, found.pii_columns) == (as_true.sensitive, as_true.pii_columns)
    rendered = browse.catalog_json(CatalogSnapshot(databases=(db,), tables={"db": tables}))
    as_true_json = browse.catalog_json(
        CatalogSnapshot(databases=(true_db,), tables={"db": true_tables})
    )
    assert rendered == as_true_json


@catalog_examples
@given(catalog_shapes)
def test_catalog_json_agrees_with_the_policy(shape: CatalogShape) -> None:
    # GIVEN a random catalog
    db, tables = shape.build()
    # WHEN it is rendered as JSON
    (entry,) = browse.catalog_json(CatalogSnapshot(databases=(db,), tables={"db": tables}))
    # THEN its booleans are the policy's verdicts, and pii_flag is the database's own flag
    assert entry["pii_flag"] is spec_truthy(shape.flag)
    assert entry["sensitive"] is any(spec_truthy(v) for v in shape.flags())
    for rendered, t in zip(entry["tables"], tables, strict=True):
        assert rendered["sensitive"] is policy.assess_table(db, t).sensitive
        assert rendered["pii_columns"] == [c.name for c in policy.pii_columns(t)]
