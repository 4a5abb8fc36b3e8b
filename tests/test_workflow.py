"""Use cases of the Marketplace against moto over HTTP: refusals, ownership, failures, races, audit.

The demo mesh is seeded into moto once for this module (re-seeding 45 tables for every test
would cost seconds each); every test gets a fresh SQLite store of its own. Tests that change
the catalog do it on throwaway databases they create, and tests that look into Lake Formation
grant to an account no other test uses.
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mesh.demo import data
from mesh.demo.data import col, pii
from mesh.errors import AwsFailure, Conflict, Forbidden, InvalidInput, MeshError, NotFound
from mesh.grants import LakeFormation
from mesh.models import AccessRequest, AuditEvent, GrantSpec, Status
from mesh.services import Services, build
from mesh.settings import load_settings
from mesh.store import Store
from mesh.workflow import Marketplace
from tests.conftest import client, dumps, lake_formation_entries

CENTRAL = data.CENTRAL_ACCOUNT
SALES, MARKETING = "111111111111", "222222222222"
CAROL = "444455556666"  # carol's only account; dan and mia may use it too
PARTNER = "777788889999"  # dan's other account
UNKNOWN_REQUEST = "r-00000000"
TRIALS = 20

_numbers = itertools.count(1)


def fresh_account() -> str:
    """A consumer account no other test grants to (only an admin may request for it)."""
    return f"{900_000_000_000 + next(_numbers):012d}"


# Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh(seeded: str, module_env: dict[str, str]) -> Services:
    """The services in aws mode against the seeded moto server, built as the app builds them."""
    return build(load_settings(module_env, {}))


def marketplace(mesh: Services, path: Path, *, grants: Any = None) -> Marketplace:
    """A marketplace over the seeded mesh with an empty store at ``path``."""
    shutil.copy(mesh.settings.db_path, path)  # already migrated, and never written to
    return Marketplace(
        store=Store(path),
        catalog=mesh.catalog,
        grants=grants or mesh.lakeformation,
        users=mesh.users,
    )


@pytest.fixture
def market(mesh: Services, tmp_path: Path) -> Marketplace:
    """The marketplace over the seeded demo mesh, with a fresh, empty store."""
    return marketplace(mesh, tmp_path / "mesh.db")


@pytest.fixture
def market_with(mesh: Services, tmp_path: Path) -> Callable[[Any], Marketplace]:
    """Build the marketplace over the seeded demo mesh with the given Lake Formation port."""
    return lambda grants: marketplace(mesh, tmp_path / "mesh.db", grants=grants)


@pytest.fixture
def glue(seeded: str) -> Any:
    return client("glue", seeded)


@pytest.fixture
def new_product(glue: Any) -> Iterator[Callable[..., str]]:
    """Create a throwaway database in the central catalog; it is dropped after the test.

    ``tables`` maps a table name to (columns, partition keys).
    """
    made: list[str] = []

    def create(
        tables: Mapping[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]],
        *,
        owner: str = SALES,
    ) -> str:
        name = f"probe_{next(_numbers)}"
        glue.create_database(
            DatabaseInput={"Name": name, "Parameters": {"data_owner": owner}},
        )
        made.append(name)
        for table, (columns, partitions) in tables.items():
            glue.create_table(
                DatabaseName=name,
                TableInput={
                    "Name": table,
                    "PartitionKeys": partitions,
                    "StorageDescriptor": {"Columns": columns},
                },
            )
        return name

    yield create
    for name in made:
        for table in glue.get_tables(DatabaseName=name)["TableList"]:
            glue.delete_table(DatabaseName=name, Name=table["Name"])
        glue.delete_database(Name=name)


# Fakes -------------------------------------------------------------------------------------


class RecordingGrants:
    """The real Lake Formation adapter, recording every grant and failing the calls told to.

    ``failures`` maps a call's number (1 for the first grant call) to the exception it raises.
    """

    def __init__(self, real: Any, failures: Mapping[int, BaseException] | None = None) -> None:
        self.real = real
        self.failures = dict(failures or {})
        self.calls: list[dict[str, Any]] = []
        self.made: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def grant(self, spec: GrantSpec) -> dict[str, Any]:
        with self._lock:
            self.calls.append(spec.to_api())
            number = len(self.calls)
        if number in self.failures:
            raise self.failures[number]
        made = self.real.grant(spec)
        with self._lock:
            self.made.append(spec.to_api())
        return made

    def holds(self, spec: GrantSpec) -> bool:
        # What this test granted: moto's Lake Formation is shared by the module's tests,
        # so another test's grant to the same account must not count as this one's.
        return spec.to_api() in self.made

    def list_permissions(self, **kwargs: Any) -> list[dict[str, Any]]:
        return self.real.list_permissions(**kwargs)


class RefusingClient:
    """A Lake Formation client whose grant_permissions answers AccessDeniedException once."""

    def __init__(self, real: Any, *, on_call: int) -> None:
        self._real = real
        self._on_call = on_call
        self._count = 0

    def grant_permissions(self, **params: Any) -> Any:
        self._count += 1
        if self._count == self._on_call:
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "Insufficient grant"}},
                "GrantPermissions",
            )
        return self._real.grant_permissions(**params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def access_denied(how: str, mesh: Services, endpoint: str, *, on_call: int) -> RecordingGrants:
    """Lake Formation that refuses grant call number ``on_call`` with AccessDeniedException."""
    if how == "domain error from the adapter":
        refusal = AwsFailure(
            "Lake Formation refused the grant: the app's role lacks the grant option.",
            code="AccessDeniedException",
        )
        return RecordingGrants(mesh.lakeformation, {on_call: refusal})
    refusing = RefusingClient(client("lakeformation", endpoint), on_call=on_call)
    return RecordingGrants(LakeFormation(refusing))


HOW_DENIED = ["domain error from the adapter", "ClientError through the adapter"]


# Expected Lake Formation calls, written from the product spec (issue 2, section 7) --------


def table_grant(account: str, database: str, table: str) -> dict[str, Any]:
    return {
        "Principal": {"DataLakePrincipalIdentifier": account},
        "Resource": {"Table": {"CatalogId": CENTRAL, "DatabaseName": database, "Name": table}},
        "Permissions": ["SELECT", "DESCRIBE"],
        "PermissionsWithGrantOption": ["SELECT", "DESCRIBE"],
    }


def database_grants(account: str, database: str) -> list[dict[str, Any]]:
    principal = {"DataLakePrincipalIdentifier": account}
    return [
        {
            "Principal": principal,
            "Resource": {"Database": {"CatalogId": CENTRAL, "Name": database}},
            "Permissions": ["DESCRIBE"],
            "PermissionsWithGrantOption": ["DESCRIBE"],
        },
        {
            "Principal": principal,
            "Resource": {
                "Table": {"CatalogId": CENTRAL, "DatabaseName": database, "TableWildcard": {}}
            },
            "Permissions": ["SELECT", "DESCRIBE"],
            "PermissionsWithGrantOption": ["SELECT", "DESCRIBE"],
        },
    ]


def held_by(endpoint: str, account: str) -> list[dict[str, Any]]:
    """What moto's Lake Formation holds for ``account``, in the shape of a grant call."""
    keys = ("Principal", "Resource", "Permissions", "PermissionsWithGrantOption")
    return [{k: e[k] for k in keys} for e in lake_formation_entries(endpoint, account)]


def same_calls(left: Sequence[dict[str, Any]], right: Sequence[dict[str, Any]]) -> bool:
    return sorted(map(dumps, left)) == sorted(map(dumps, right))


# Helpers -----------------------------------------------------------------------------------


def submit(
    market: Marketplace,
    user: str = "carol",
    *,
    database: str = "sales_orders",
    table: str | None = "customers",
    account: str = CAROL,
    reason: str = "churn model",
) -> AccessRequest:
    """Submit a request; by default carol's request for the PII table sales_orders.customers."""
    return market.submit(user, database=database, table=table, account=account, reason=reason)


def actions(market: Marketplace, request_id: str) -> list[tuple[str, str]]:
    return [(e.actor, e.action) for e in market.audit(request_id=request_id)]


def rows(market: Marketplace, request_id: str, action: str) -> list[AuditEvent]:
    return market.audit(request_id=request_id, action=action)


def race(action: Callable[[str], AccessRequest], actors: Sequence[str]) -> list[Any]:
    """Run ``action`` for every actor in its own thread, all released at the same moment.

    Returns each outcome: the request, or the MeshError raised. Other exceptions propagate.
    """
    barrier = threading.Barrier(len(actors), timeout=30)

    def run(actor: str) -> AccessRequest | MeshError:
        barrier.wait()
        try:
            return action(actor)
        except MeshError as refusal:
            return refusal

    with ThreadPoolExecutor(max_workers=len(actors)) as pool:
        return list(pool.map(run, actors))


def moved_on(market: Marketplace, how: str) -> AccessRequest:
    """Carol's request for sales_orders.customers, no longer pending because ``how``."""
    request = submit(market)
    if how == "approved":
        return market.approve(request.id, "sam", comment="fine")
    if how == "denied":
        return market.deny(request.id, "sam", comment="not for churn models")
    return market.cancel(request.id, "carol")


# Submit: refusals, one at a time ------------------------------------------------------------

SUBMIT_REFUSALS = [
    # unknown user
    pytest.param({"user": "zoe"}, Forbidden, "zoe", id="unknown user"),
    # the account must be exactly 12 digits
    pytest.param({"account": "44445555666"}, InvalidInput, "12 digits", id="11 digits"),
    pytest.param({"account": "4444555566667"}, InvalidInput, "12 digits", id="13 digits"),
    pytest.param({"account": "44445555666a"}, InvalidInput, "12 digits", id="a letter"),
    pytest.param({"account": "4444-5555-66"}, InvalidInput, "12 digits", id="dashes"),
    pytest.param({"account": ""}, InvalidInput, "12 digits", id="empty account"),
    pytest.param(
        {"user": "ada", "account": "１２３４５６７８９０１２"},
        InvalidInput,
        "12 digits",
        id="fullwidth digits, even for an admin",
    ),
    pytest.param(
        {"user": "ada", "account": "٤٤٤٤٥٥٥٥٦٦٦٦"},
        InvalidInput,
        "12 digits",
        id="arabic-indic digits, even for an admin",
    ),
    # the account must be one of the requester's accounts
    pytest.param({"account": PARTNER}, Forbidden, PARTNER, id="carol for dan's account"),
    pytest.param({"user": "mia", "account": PARTNER}, Forbidden, PARTNER, id="mia for dan's"),
    # The central account owns the catalog: no one may request for it (malformed input).
    pytest.param({"user": "dan", "account": CENTRAL}, InvalidInput, CENTRAL, id="dan for central"),
    pytest.param({"user": "ada", "account": CENTRAL}, InvalidInput, "central", id="ada, central"),
    pytest.param(
        {"user": "ada", "account": "000000000000"}, InvalidInput, "not a real", id="ada for zeros"
    ),
    # a user with no accounts may not request at all
    pytest.param({"user": "sam"}, Forbidden, "accounts", id="owner with no accounts"),
    pytest.param({"user": "fiona"}, Forbidden, "accounts", id="another with no accounts"),
    # the database and table must exist
    pytest.param({"database": "no_such_db"}, NotFound, "no_such_db", id="unknown database"),
    pytest.param(
        {"database": "no_such_db", "table": None}, NotFound, "no_such_db", id="unknown db request"
    ),
    pytest.param({"table": "no_such_table"}, NotFound, "no_such_table", id="unknown table"),
    pytest.param(
        {"database": "sales_crm", "table": "customers"},
        NotFound,
        "customers",
        id="table of another database",
    ),
    # a database without data_owner cannot be requested
    pytest.param(
        {"database": "legacy_exports", "table": None},
        InvalidInput,
        "this data product has no owner; ask a catalog admin to set data_owner",
        id="unowned database",
    ),
    pytest.param(
        {"database": "legacy_exports", "table": "nightly_dump"},
        InvalidInput,
        "this data product has no owner; ask a catalog admin to set data_owner",
        id="table of an unowned database",
    ),
    # the reason is required and at most 1,000 characters
    pytest.param({"reason": ""}, InvalidInput, "reason", id="empty reason"),
    pytest.param({"reason": " \n\t "}, InvalidInput, "reason", id="blank reason"),
    pytest.param(
        {"reason": "x" * 1001}, InvalidInput, "1 more than the 1,000", id="1001 characters"
    ),
]


@pytest.mark.parametrize(("changes", "refusal", "named"), SUBMIT_REFUSALS)
def test_submit_refuses_with_its_error_class(
    market: Marketplace, changes: dict[str, Any], refusal: type[MeshError], named: str
) -> None:
    # GIVEN a request that is valid but for one thing
    # WHEN it is submitted
    with pytest.raises(MeshError) as raised:
        submit(market, **changes)
    # THEN the refusal has the error class of that thing, names it, and stores nothing
    assert type(raised.value) is refusal
    assert named.lower() in raised.value.message.lower()
    assert market.requests() == []
    assert [e for e in market.audit() if e.request_id is not None] == []


@pytest.mark.parametrize(
    ("user", "account"),
    [
        # an admin may request for any well-formed account
        ("ada", PARTNER),
        ("ada", "999999999999"),
        # a consumer for any of their own accounts
        ("dan", PARTNER),
        ("dan", CAROL),
        ("mia", CAROL),
    ],
)
def test_submit_accepts_an_account_the_user_may_request_for(
    market: Marketplace, user: str, account: str
) -> None:
    # GIVEN a user and an account they may request for
    # WHEN they request the PII table sales_orders.customers for it
    request = submit(market, user, account=account)
    # THEN the request is stored, waiting for the owner
    assert request.status is Status.PENDING_APPROVAL
    assert market.store.get(request.id) == request


def test_submit_accepts_a_reason_of_exactly_1000_characters(market: Marketplace) -> None:
    # GIVEN a reason at the limit, padded with whitespace
    reason = "r" * 1000
    # WHEN it is submitted
    request = submit(market, reason=f"  {reason}\n")
    # THEN it is accepted, trimmed
    assert request.reason == reason


# Submit: identical active requests -----------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "status"),
    [
        # pending: a PII table waits for its owner
        ("customers", Status.PENDING_APPROVAL),
        # granted: a table without PII is granted at once
        ("orders", Status.GRANTED),
    ],
)
def test_identical_active_request_is_refused_naming_the_existing_one(
    market: Marketplace, table: str, status: Status
) -> None:
    # GIVEN an active request
    first = submit(market, table=table)
    assert first.status is status
    # WHEN someone asks again for the same scope and account, even with another reason
    with pytest.raises(Conflict) as raised:
        submit(market, "mia", table=table, reason="another reason")
    # THEN it is refused as a conflict naming the existing request
    assert first.id in raised.value.message
    assert [r.id for r in market.requests()] == [first.id]


@pytest.mark.parametrize("how", ["denied", "cancelled"])
def test_request_that_is_no_longer_active_does_not_block_a_new_one(
    market: Marketplace, how: str
) -> None:
    # GIVEN a request that was denied or cancelled
    old = moved_on(market, how)
    # WHEN the same scope and account is requested again
    new = submit(market)
    # THEN the new request is stored beside the old one
    assert new.id != old.id
    assert new.status is Status.PENDING_APPROVAL


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"user": "dan", "account": PARTNER}, id="another account"),
        pytest.param({"table": "stores"}, id="another table"),
        pytest.param({"table": None}, id="the whole database"),
    ],
)
def test_request_with_another_scope_or_account_is_not_a_duplicate(
    market: Marketplace, changes: dict[str, Any]
) -> None:
    # GIVEN carol's pending request for sales_orders.customers
    submit(market)
    # WHEN a request differing in scope or account is submitted
    other = submit(market, **changes)
    # THEN it is stored too
    assert len(market.requests()) == 2
    assert other.status in {Status.PENDING_APPROVAL, Status.GRANTED}


# Refusal order --------------------------------------------------------------------------------

SUBMIT_ORDER = [
    # unknown user first
    pytest.param({"user": "zoe", "account": "123"}, Forbidden, id="unknown user > bad account"),
    pytest.param({"user": "zoe", "database": "nope"}, Forbidden, id="unknown user > missing db"),
    # then malformed input
    pytest.param({"account": "123", "database": "nope"}, InvalidInput, id="bad account > no db"),
    pytest.param({"reason": "", "table": "nope"}, InvalidInput, id="empty reason > no table"),
    pytest.param(
        {"reason": "x" * 1001, "user": "sam"}, InvalidInput, id="long reason > no accounts"
    ),
    pytest.param(
        {"account": "123", "database": "legacy_exports"},
        InvalidInput,
        id="bad account > unowned (message)",
    ),
    # then a missing database or table
    pytest.param({"database": "nope", "user": "sam"}, NotFound, id="missing db > no accounts"),
    pytest.param({"database": "nope", "account": PARTNER}, NotFound, id="missing db > not hers"),
    pytest.param(
        {"database": "legacy_exports", "table": "nope"}, NotFound, id="missing table > unowned"
    ),
    # then an unowned database
    pytest.param(
        {"database": "legacy_exports", "table": "nightly_dump", "account": PARTNER},
        InvalidInput,
        id="unowned > not her account",
    ),
    pytest.param(
        {"database": "legacy_exports", "table": None, "user": "sam"},
        InvalidInput,
        id="unowned > no accounts",
    ),
]


@pytest.mark.parametrize(("changes", "refusal"), SUBMIT_ORDER)
def test_first_refusal_in_the_documented_order_wins_on_submit(
    market: Marketplace, changes: dict[str, Any], refusal: type[MeshError]
) -> None:
    # GIVEN a request with two things wrong
    # WHEN it is submitted
    with pytest.raises(MeshError) as raised:
        submit(market, **changes)
    # THEN the refusal that comes first in the order wins
    assert type(raised.value) is refusal


def test_bad_account_message_wins_over_unowned_database(market: Marketplace) -> None:
    # GIVEN a malformed account on an unowned database
    # WHEN it is submitted
    with pytest.raises(InvalidInput) as raised:
        submit(market, database="legacy_exports", account="123")
    # THEN the message is about the account, not the owner
    assert "123" in raised.value.message
    assert "data_owner" not in raised.value.message


@pytest.mark.parametrize(
    ("second", "refusal"),
    [
        # malformed input beats a duplicate
        pytest.param({"reason": ""}, InvalidInput, id="empty reason"),
        pytest.param({"reason": "x" * 1001}, InvalidInput, id="long reason"),
        # not allowed beats a duplicate: carol may not request for dan's partner account
        pytest.param({"user": "carol"}, Forbidden, id="not her account"),
        # a user with no accounts asking for the same thing
        pytest.param({"user": "hank"}, Forbidden, id="no accounts"),
    ],
)
def test_duplicate_is_the_last_refusal_on_submit(
    market: Marketplace, second: dict[str, Any], refusal: type[MeshError]
) -> None:
    # GIVEN dan's pending request for sales_orders.customers on his partner account
    submit(market, "dan", account=PARTNER)
    # WHEN the same scope and account is requested with something else wrong
    with pytest.raises(MeshError) as raised:
        submit(market, **{"user": "dan", "account": PARTNER, **second})
    # THEN that other refusal wins over the duplicate
    assert type(raised.value) is refusal


DECISION_ORDER = [
    # unknown user first
    pytest.param(lambda m, done: m.approve(UNKNOWN_REQUEST, "zoe"), Forbidden, id="approve zoe"),
    pytest.param(lambda m, done: m.deny(done, "zoe", comment=""), Forbidden, id="deny zoe"),
    pytest.param(lambda m, done: m.cancel(UNKNOWN_REQUEST, "zoe"), Forbidden, id="cancel zoe"),
    pytest.param(lambda m, done: m.retry(UNKNOWN_REQUEST, "zoe"), Forbidden, id="retry zoe"),
    # then malformed input
    pytest.param(
        lambda m, done: m.deny(UNKNOWN_REQUEST, "mia", comment=" "),
        InvalidInput,
        id="deny without comment > missing request",
    ),
    pytest.param(
        lambda m, done: m.deny(done, "carol", comment=""),
        InvalidInput,
        id="deny without comment > own request",
    ),
    pytest.param(
        lambda m, done: m.approve(UNKNOWN_REQUEST, "sam", comment="x" * 1001),
        InvalidInput,
        id="long comment > missing request",
    ),
    # then a missing request
    pytest.param(lambda m, done: m.approve(UNKNOWN_REQUEST, "dan"), NotFound, id="approve"),
    pytest.param(lambda m, done: m.deny(UNKNOWN_REQUEST, "dan", comment="no"), NotFound, id="deny"),
    pytest.param(lambda m, done: m.cancel(UNKNOWN_REQUEST, "dan"), NotFound, id="cancel"),
    pytest.param(lambda m, done: m.retry(UNKNOWN_REQUEST, "dan"), NotFound, id="retry"),
    # then not allowed, before the wrong state
    pytest.param(lambda m, done: m.approve(done, "carol"), Forbidden, id="self > decided"),
    pytest.param(lambda m, done: m.approve(done, "mia"), Forbidden, id="other owner > decided"),
    pytest.param(
        lambda m, done: m.deny(done, "dan", comment="no"), Forbidden, id="consumer > decided"
    ),
    pytest.param(lambda m, done: m.cancel(done, "sam"), Forbidden, id="cancel not own > decided"),
    pytest.param(lambda m, done: m.retry(done, "dan"), Forbidden, id="retry stranger > granted"),
]


@pytest.mark.parametrize(("act", "refusal"), DECISION_ORDER)
def test_first_refusal_in_the_documented_order_wins_on_decisions(
    market: Marketplace,
    act: Callable[[Marketplace, str], AccessRequest],
    refusal: type[MeshError],
) -> None:
    # GIVEN carol's request, already approved by its owner and granted
    done = moved_on(market, "approved").id
    # WHEN a decision, cancel or retry with two things wrong is attempted
    with pytest.raises(MeshError) as raised:
        act(market, done)
    # THEN the refusal that comes first in the order wins, and nothing changed
    assert type(raised.value) is refusal
    assert market.store.get(done).status is Status.GRANTED


# Decisions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requester", "database", "table", "account"),
    [
        # an admin asking for any account still cannot approve it
        ("ada", "sales_orders", "customers", PARTNER),
        # an owner who is also a consumer, asking for their own product
        ("mia", "marketing_web_analytics", "page_views", CAROL),
    ],
)
@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_requester_can_never_decide_their_own_request(
    market: Marketplace, requester: str, database: str, table: str, account: str, decision: str
) -> None:
    # GIVEN a pending request made by someone who could otherwise decide it
    request = submit(market, requester, database=database, table=table, account=account)
    assert request.status is Status.PENDING_APPROVAL
    # WHEN they try to decide it
    with pytest.raises(Forbidden) as raised:
        if decision == "approve":
            market.approve(request.id, requester, comment="looks fine to me")
        else:
            market.deny(request.id, requester, comment="changed my mind")
    # THEN they are refused, and the request still waits
    assert request.id in raised.value.message
    assert market.store.get(request.id).status is Status.PENDING_APPROVAL
    assert rows(market, request.id, {"approve": "approved", "deny": "denied"}[decision]) == []


@pytest.mark.parametrize(
    "user",
    [
        # owners of other domains
        "mia",
        "hank",
        "fiona",
        # a consumer
        "dan",
    ],
)
@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_only_the_owner_of_the_product_or_an_admin_may_decide(
    market: Marketplace, user: str, decision: str
) -> None:
    # GIVEN carol's pending request on a Sales product
    request = submit(market)
    # WHEN someone who does not own Sales tries to decide it
    with pytest.raises(Forbidden):
        if decision == "approve":
            market.approve(request.id, user)
        else:
            market.deny(request.id, user, comment="no")
    # THEN the request still waits
    assert market.store.get(request.id).status is Status.PENDING_APPROVAL


@pytest.mark.parametrize("decider", ["sam", "ada"])
def test_owner_or_admin_may_approve_and_the_request_is_granted(
    market: Marketplace, decider: str
) -> None:
    # GIVEN carol's pending request on a Sales product
    request = submit(market)
    # WHEN the Sales owner or an admin approves it
    approved = market.approve(request.id, decider, comment="ok")
    # THEN it is granted, with the decider and comment recorded
    assert approved.status is Status.GRANTED
    assert (approved.decided_by, approved.comment) == (decider, "ok")


@pytest.mark.parametrize("how", ["approved", "denied", "cancelled"])
@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_decision_on_a_request_no_longer_pending_is_a_conflict(
    market: Marketplace, how: str, decision: str
) -> None:
    # GIVEN a request already approved, denied or cancelled
    request = moved_on(market, how)
    # WHEN an admin tries to decide it
    with pytest.raises(Conflict) as raised:
        if decision == "approve":
            market.approve(request.id, "ada")
        else:
            market.deny(request.id, "ada", comment="too late")
    # THEN it is refused as a conflict naming the request, and nothing changed
    assert request.id in raised.value.message
    assert market.store.get(request.id) == request


@pytest.mark.parametrize("comment", ["", "   \n"])
def test_deny_without_a_comment_is_refused(market: Marketplace, comment: str) -> None:
    # GIVEN carol's pending request
    request = submit(market)
    # WHEN its owner denies it without a comment
    with pytest.raises(InvalidInput):
        market.deny(request.id, "sam", comment=comment)
    # THEN it still waits
    assert market.store.get(request.id).status is Status.PENDING_APPROVAL


def test_deny_with_a_comment_records_the_decision(market: Marketplace) -> None:
    # GIVEN carol's pending request
    request = submit(market)
    # WHEN its owner denies it with a comment
    denied = market.deny(request.id, "sam", comment="  use the aggregated table  ")
    # THEN it is denied with the trimmed comment, and nothing was granted
    assert denied.status is Status.DENIED
    assert (denied.decided_by, denied.comment) == ("sam", "use the aggregated table")
    assert rows(market, request.id, "grant_attempted") == []


@pytest.mark.parametrize(
    "act",
    [
        pytest.param(lambda m: m.approve(UNKNOWN_REQUEST, "ada"), id="approve"),
        pytest.param(lambda m: m.deny(UNKNOWN_REQUEST, "ada", comment="no"), id="deny"),
        pytest.param(lambda m: m.cancel(UNKNOWN_REQUEST, "carol"), id="cancel"),
        pytest.param(lambda m: m.retry(UNKNOWN_REQUEST, "ada"), id="retry"),
    ],
)
def test_unknown_request_is_not_found(
    market: Marketplace, act: Callable[[Marketplace], AccessRequest]
) -> None:
    # GIVEN no request at all
    # WHEN someone acts on an id that does not exist
    with pytest.raises(NotFound) as raised:
        act(market)
    # THEN the refusal names the id
    assert UNKNOWN_REQUEST in raised.value.message


# Ownership is read at decision time -----------------------------------------------------------


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_old_owner_cannot_decide_after_the_catalog_changes_owner(
    market: Marketplace, new_product: Callable[..., str], glue: Any, decision: str
) -> None:
    # GIVEN carol's pending request on a product Sales owned when she submitted it
    database = new_product({"people": ([col("id", "int"), pii("email")], [])}, owner=SALES)
    request = submit(market, database=database, table="people")
    assert request.status is Status.PENDING_APPROVAL
    # WHEN the catalog hands the product to Marketing
    glue.update_database(
        Name=database,
        DatabaseInput={"Name": database, "Parameters": {"data_owner": MARKETING}},
    )
    # THEN the old owner can no longer decide (a decision reads the owner from Glue)
    with pytest.raises(Forbidden):
        if decision == "approve":
            market.approve(request.id, "sam")
        else:
            market.deny(request.id, "sam", comment="no")
    # AND once the catalog index knows the change (a sync, or a live read refreshing it),
    # the queues follow it without reading Glue: the old owner no longer sees it
    from mesh.catalog_index import CatalogIndex

    index = CatalogIndex(market.store, rules=market.rules, fingerprint="test")
    index.refresh_scope(
        market.catalog.database(database),
        [market.catalog.table(database, "people")],
        whole=False,
        at="2030-01-01T00:00:00.000Z",
    )
    assert [p.request.id for p in market.pending_for("sam")] == []
    # AND the new owner can
    assert [p.request.id for p in market.pending_for("mia")] == [request.id]
    if decision == "approve":
        assert market.approve(request.id, "mia").status is Status.GRANTED
    else:
        assert market.deny(request.id, "mia", comment="no").status is Status.DENIED


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_a_decision_refreshes_the_index_from_glue_and_says_the_catalog_changed(
    market: Marketplace, new_product: Callable[..., str], glue: Any, decision: str
) -> None:
    # GIVEN a synced catalog index, and carol's request on a Sales product waiting for sam
    from mesh.catalog_index import CatalogIndex

    market.index = CatalogIndex(market.store, rules=market.rules, fingerprint="test")
    market.index.set_fingerprint()
    database = new_product({"people": ([col("id", "int"), pii("email")], [])}, owner=SALES)
    request = submit(market, database=database, table="people")
    # WHEN Glue hands the product to Marketing before any sync, and sam decides
    glue.update_database(
        Name=database,
        DatabaseInput={"Name": database, "Parameters": {"data_owner": MARKETING}},
    )
    notes: list[str] = []
    with pytest.raises(Forbidden):
        if decision == "approve":
            market.approve(request.id, "sam", on_catalog_change=notes.append)
        else:
            market.deny(request.id, "sam", comment="no", on_catalog_change=notes.append)
    # THEN the live read won, the caller heard that the catalog had changed, and the index
    # now names the new owner, so the queues follow it without reading Glue
    said = f"{database}.people: its owner is now account {MARKETING}"
    assert len(notes) == 1 and said in notes[0], notes
    assert market.index.database(database).owner_account == MARKETING  # type: ignore[union-attr]
    assert [p.request.id for p in market.pending_for("mia")] == [request.id]
    # AND a decision that finds the index up to date says nothing
    quiet: list[str] = []
    market.deny(request.id, "mia", comment="no", on_catalog_change=quiet.append)
    assert quiet == []


def test_old_owner_cannot_retry_after_the_catalog_changes_owner(
    market_with: Callable[[Any], Marketplace],
    mesh: Services,
    new_product: Callable[..., str],
    glue: Any,
) -> None:
    # GIVEN a request on a Sales product whose approved grant failed
    market = market_with(RecordingGrants(mesh.lakeformation, {1: AwsFailure("no", code="X")}))
    database = new_product({"people": ([pii("email")], [])}, owner=SALES)
    request = submit(market, database=database, table="people")
    assert market.approve(request.id, "sam").status is Status.FAILED
    # WHEN the catalog hands the product to Marketing
    glue.update_database(
        Name=database, DatabaseInput={"Name": database, "Parameters": {"data_owner": MARKETING}}
    )
    # THEN the old owner can no longer retry it, and the new one can
    with pytest.raises(Forbidden):
        market.retry(request.id, "sam")
    assert market.retry(request.id, "mia").status is Status.GRANTED


# Sensitivity of database requests -------------------------------------------------------------


@pytest.mark.parametrize(
    ("flagged", "status"),
    [
        # PII only on one column of one table: the whole database needs approval
        ("column", Status.PENDING_APPROVAL),
        # PII only on one partition key of one table
        ("partition key", Status.PENDING_APPROVAL),
        # no PII anywhere: granted at once
        ("nothing", Status.GRANTED),
    ],
)
def test_database_request_is_sensitive_when_one_column_of_one_table_has_pii(
    market: Marketplace, new_product: Callable[..., str], flagged: str, status: Status
) -> None:
    # GIVEN a database with no database or table flag, and PII on at most one column
    secret = pii("national_id") if flagged == "column" else col("national_id")
    day = pii("birth_day", "date") if flagged == "partition key" else col("birth_day", "date")
    database = new_product(
        {
            "orders": ([col("order_id", "bigint"), col("total", "double")], []),
            "stores": ([col("store_id", "int"), col("city")], []),
            "members": ([col("member_id", "bigint"), secret], [day]),
        }
    )
    # WHEN carol requests the whole database
    request = submit(market, database=database, table=None)
    # THEN it needs approval exactly when a column is flagged, and the reason names it
    assert request.status is status
    if status is Status.PENDING_APPROVAL:
        flagged_name = "national_id" if flagged == "column" else "birth_day"
        assert flagged_name in request.policy_reason
        assert [p.request.id for p in market.pending_for("sam")] == [request.id]


def test_clean_table_beside_a_pii_column_is_granted_at_once(
    market: Marketplace, new_product: Callable[..., str]
) -> None:
    # GIVEN a database where only one column of another table has PII
    database = new_product(
        {"stores": ([col("store_id", "int")], []), "members": ([pii("email")], [])}
    )
    # WHEN carol requests the clean table
    request = submit(market, database=database, table="stores")
    # THEN it is granted at once
    assert request.status is Status.GRANTED


def test_demo_database_with_pii_only_in_customer_columns_needs_approval(
    market: Marketplace,
) -> None:
    # GIVEN sales_orders: no database or table flag, PII only in columns of customers
    # WHEN carol requests the whole database
    request = submit(market, table=None)
    # THEN it waits for Sales, and the reason names a flagged column
    assert request.status is Status.PENDING_APPROVAL
    assert "email" in request.policy_reason


# Cancel ---------------------------------------------------------------------------------------


def test_requester_cancels_their_pending_request(market: Marketplace) -> None:
    # GIVEN carol's pending request
    request = submit(market)
    # WHEN she cancels it
    cancelled = market.cancel(request.id, "carol")
    # THEN it is cancelled and no longer awaits the owner
    assert cancelled.status is Status.CANCELLED
    assert market.pending_for("sam") == []


@pytest.mark.parametrize("user", ["sam", "ada", "dan", "mia"])
def test_nobody_but_the_requester_may_cancel(market: Marketplace, user: str) -> None:
    # GIVEN carol's pending request
    request = submit(market)
    # WHEN the owner, an admin or another consumer tries to cancel it
    with pytest.raises(Forbidden):
        market.cancel(request.id, user)
    # THEN it still waits
    assert market.store.get(request.id).status is Status.PENDING_APPROVAL


@pytest.mark.parametrize("how", ["approved", "denied", "cancelled"])
def test_cancel_of_a_request_no_longer_pending_is_a_conflict(market: Marketplace, how: str) -> None:
    # GIVEN carol's request, approved, denied or already cancelled
    request = moved_on(market, how)
    # WHEN she tries to cancel it
    with pytest.raises(Conflict):
        market.cancel(request.id, "carol")
    # THEN nothing changed
    assert market.store.get(request.id) == request


def test_cancel_of_a_request_granted_at_once_is_a_conflict(market: Marketplace) -> None:
    # GIVEN carol's request for a table without PII, granted at once
    request = submit(market, table="orders")
    # WHEN she tries to cancel it
    with pytest.raises(Conflict):
        market.cancel(request.id, "carol")
    # THEN it stays granted
    assert market.store.get(request.id).status is Status.GRANTED


# Failed grants and retry -------------------------------------------------------------------


@pytest.mark.parametrize("how", HOW_DENIED)
def test_failed_grant_leaves_the_request_failed_with_the_aws_error(
    market_with: Callable[[Any], Marketplace], mesh: Services, seeded: str, how: str
) -> None:
    # GIVEN Lake Formation that refuses the first grant with AccessDeniedException
    market = market_with(access_denied(how, mesh, seeded, on_call=1))
    request = submit(market)
    # WHEN the owner approves
    outcome = market.approve(request.id, "sam", comment="ok")
    # THEN the request is failed, with the AWS error code and a message a person can act on
    stored = market.store.get(request.id)
    assert outcome == stored
    assert stored.status is Status.FAILED
    assert stored.error_code == "AccessDeniedException"
    assert stored.error and "Traceback" not in stored.error
    assert "retry" in stored.error.lower()
    assert stored.grants_done == ()


@pytest.mark.parametrize("how", HOW_DENIED)
@pytest.mark.parametrize("retrier", ["carol", "sam", "ada"])
def test_retry_by_requester_owner_or_admin_grants_without_asking_again(
    market_with: Callable[[Any], Marketplace],
    mesh: Services,
    seeded: str,
    how: str,
    retrier: str,
) -> None:
    # GIVEN carol's request, approved by sam, whose grant was refused
    grants = access_denied(how, mesh, seeded, on_call=1)
    market = market_with(grants)
    request = submit(market)
    assert market.approve(request.id, "sam", comment="ok").status is Status.FAILED
    # WHEN the requester, the owner or an admin retries it
    retried = market.retry(request.id, retrier)
    # THEN it is granted at once, on sam's original decision, with no approval asked again
    assert retried.status is Status.GRANTED
    assert (retried.decided_by, retried.comment) == ("sam", "ok")
    assert (retried.error_code, retried.error) == (None, None)
    assert market.pending_for("ada") == []
    assert len(rows(market, request.id, "approved")) == 1
    # AND exactly the one missing grant was made, in the spec's shape
    assert grants.made == [table_grant(CAROL, "sales_orders", "customers")]
    assert len(grants.calls) == 2


@pytest.mark.parametrize("stranger", ["dan", "mia", "hank"])
def test_retry_by_a_stranger_is_forbidden(
    market_with: Callable[[Any], Marketplace], mesh: Services, stranger: str
) -> None:
    # GIVEN carol's approved request whose grant failed
    market = market_with(RecordingGrants(mesh.lakeformation, {1: AwsFailure("no", code="X")}))
    request = submit(market)
    market.approve(request.id, "sam")
    # WHEN someone who is not the requester, the owner or an admin retries it
    with pytest.raises(Forbidden):
        market.retry(request.id, stranger)
    # THEN it stays failed
    assert market.store.get(request.id).status is Status.FAILED


@pytest.mark.parametrize(
    ("table", "status"),
    [
        # pending: retry must not skip the owner's approval
        ("customers", Status.PENDING_APPROVAL),
        # granted: nothing is left to do
        ("orders", Status.GRANTED),
    ],
)
def test_retry_of_a_request_that_has_not_failed_is_a_conflict(
    market: Marketplace, table: str, status: Status
) -> None:
    # GIVEN carol's request, pending or granted
    request = submit(market, table=table)
    assert request.status is status
    # WHEN an admin tries to retry it
    with pytest.raises(Conflict):
        market.retry(request.id, "ada")
    # THEN it keeps its status
    assert market.store.get(request.id).status is status


def test_database_request_whose_second_grant_fails_records_what_was_granted(
    market_with: Callable[[Any], Marketplace], mesh: Services, seeded: str
) -> None:
    # GIVEN Lake Formation that refuses the second grant call
    refusal = AwsFailure("Lake Formation GrantPermissions was refused.", code="AccessDenied")
    grants = RecordingGrants(mesh.lakeformation, {2: refusal})
    market = market_with(grants)
    account = fresh_account()
    # WHEN an admin requests the database marketing_campaigns (no PII: granted at once)
    request = submit(
        market, "ada", database="marketing_campaigns", table=None, account=account, reason="bi"
    )
    # THEN it is failed, recording exactly the one grant made
    assert request.status is Status.FAILED
    assert len(grants.made) == 1 and len(request.grants_done) == 1
    assert same_calls(grants.calls, database_grants(account, "marketing_campaigns"))
    failed = rows(market, request.id, "grant_failed")
    assert len(failed) == 1
    assert failed[0].details["calls"] == grants.made
    assert failed[0].details["error_code"] == "AccessDenied"
    # AND Lake Formation holds that one grant only
    assert same_calls(held_by(seeded, account), grants.made)


def test_retry_of_a_half_grant_makes_only_the_missing_grant(
    market_with: Callable[[Any], Marketplace], mesh: Services, seeded: str
) -> None:
    # GIVEN a database request whose second grant failed
    grants = RecordingGrants(mesh.lakeformation, {2: AwsFailure("refused", code="AccessDenied")})
    market = market_with(grants)
    account = fresh_account()
    request = submit(
        market, "ada", database="marketing_campaigns", table=None, account=account, reason="bi"
    )
    assert request.status is Status.FAILED
    # WHEN the requester retries it
    retried = market.retry(request.id, "ada")
    # THEN only the missing grant is made again, and the request is granted
    assert retried.status is Status.GRANTED
    assert len(grants.calls) == 3
    assert grants.calls[2] == grants.calls[1]
    assert same_calls(grants.made, database_grants(account, "marketing_campaigns"))
    assert len(retried.grants_done) == 2
    # AND Lake Formation now holds both, once each
    assert same_calls(held_by(seeded, account), database_grants(account, "marketing_campaigns"))


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("connection pool is closed"),
        KeyError("Principal"),
        ValueError("bad resource"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_unexpected_error_while_granting_ends_failed_never_granting(
    market_with: Callable[[Any], Marketplace], mesh: Services, error: Exception
) -> None:
    # GIVEN a grant that breaks with an exception that is not an AWS error
    market = market_with(RecordingGrants(mesh.lakeformation, {1: error}))
    # WHEN carol's request for a table without PII is granted at once
    request = submit(market, table="orders")
    # THEN it is failed with a code and a message, not left granting, and can be retried
    stored = market.store.get(request.id)
    assert stored.status is Status.FAILED
    assert stored.error_code and stored.error
    assert len(rows(market, request.id, "grant_failed")) == 1
    assert market.retry(request.id, "carol").status is Status.GRANTED


# Exactly once -----------------------------------------------------------------------------


def test_simultaneous_approvals_make_one_decision_and_one_set_of_grants(
    mesh: Services, tmp_path: Path
) -> None:
    for trial in range(TRIALS):
        # GIVEN carol's pending request for the whole sales_orders database
        grants = RecordingGrants(mesh.lakeformation)
        market = marketplace(mesh, tmp_path / f"trial-{trial}.db", grants=grants)
        request = submit(market, table=None)
        # WHEN its owner and an admin (twice) approve at the same moment
        outcomes = race(
            lambda user, r=request, m=market: m.approve(r.id, user, comment=f"by {user}"),
            ["sam", "ada", "ada"],
        )
        # THEN one approval wins and the others are refused as conflicts
        won = [o for o in outcomes if isinstance(o, AccessRequest)]
        lost = [o for o in outcomes if not isinstance(o, AccessRequest)]
        assert len(won) == 1, f"trial {trial}: {outcomes}"
        assert won[0].status is Status.GRANTED
        assert all(isinstance(o, Conflict) for o in lost), f"trial {trial}: {outcomes}"
        # AND one approved row and one set of grants were written
        assert len(rows(market, request.id, "approved")) == 1, f"trial {trial}"
        assert len(rows(market, request.id, "grant_succeeded")) == 1, f"trial {trial}"
        assert same_calls(grants.calls, database_grants(CAROL, "sales_orders")), f"trial {trial}"
        assert market.store.get(request.id).decided_by == won[0].decided_by


def test_simultaneous_retries_make_the_missing_grants_once(mesh: Services, tmp_path: Path) -> None:
    for trial in range(TRIALS // 2):
        # GIVEN carol's approved database request whose first grant failed
        refusal = AwsFailure("refused", code="AccessDeniedException")
        grants = RecordingGrants(mesh.lakeformation, {1: refusal})
        market = marketplace(mesh, tmp_path / f"trial-{trial}.db", grants=grants)
        request = submit(market, table=None)
        assert market.approve(request.id, "sam").status is Status.FAILED
        # WHEN the requester, the owner and an admin retry at the same moment
        outcomes = race(
            lambda user, r=request, m=market: m.retry(r.id, user), ["carol", "sam", "ada"]
        )
        # THEN one retry makes the grants and the others are refused as conflicts
        won = [o for o in outcomes if isinstance(o, AccessRequest)]
        lost = [o for o in outcomes if not isinstance(o, AccessRequest)]
        assert len(won) == 1 and won[0].status is Status.GRANTED, f"trial {trial}: {outcomes}"
        assert all(isinstance(o, Conflict) for o in lost), f"trial {trial}: {outcomes}"
        assert same_calls(grants.made, database_grants(CAROL, "sales_orders")), f"trial {trial}"
        assert len(rows(market, request.id, "grant_succeeded")) == 1, f"trial {trial}"


def test_identical_submissions_at_the_same_moment_make_one_request(
    mesh: Services, tmp_path: Path
) -> None:
    for trial in range(TRIALS):
        # GIVEN an empty store
        market = marketplace(mesh, tmp_path / f"trial-{trial}.db")
        # WHEN carol submits the same request from two threads at the same moment
        outcomes = race(lambda user, m=market: submit(m, user), ["carol", "carol"])
        # THEN one request is stored and the other submission names it in a conflict
        won = [o for o in outcomes if isinstance(o, AccessRequest)]
        lost = [o for o in outcomes if not isinstance(o, AccessRequest)]
        assert len(won) == 1, f"trial {trial}: {outcomes}"
        assert len(lost) == 1 and isinstance(lost[0], Conflict), f"trial {trial}: {outcomes}"
        assert won[0].id in lost[0].message
        assert [r.id for r in market.requests()] == [won[0].id]
        assert len(market.audit(action="request_submitted")) == 1


# Audit log --------------------------------------------------------------------------------


def granted_at_once(market: Marketplace) -> str:
    return submit(market, table="orders").id


def approved(market: Marketplace) -> str:
    request = submit(market)
    market.approve(request.id, "sam", comment="ok")
    return request.id


def denied(market: Marketplace) -> str:
    request = submit(market)
    market.deny(request.id, "sam", comment="no")
    return request.id


def cancelled(market: Marketplace) -> str:
    request = submit(market)
    market.cancel(request.id, "carol")
    return request.id


SUBMITTED = [("carol", "request_submitted"), ("policy", "policy_evaluated")]


@pytest.mark.parametrize(
    ("story", "failures", "expected"),
    [
        # the policy grants at once
        (
            granted_at_once,
            {},
            [*SUBMITTED, ("policy", "grant_attempted"), ("policy", "grant_succeeded")],
        ),
        # the owner approves, then the grant is made
        (
            approved,
            {},
            [
                *SUBMITTED,
                ("sam", "approved"),
                ("sam", "grant_attempted"),
                ("sam", "grant_succeeded"),
            ],
        ),
        # the owner approves, and the grant fails
        (
            approved,
            {1: AwsFailure("refused", code="AccessDeniedException")},
            [*SUBMITTED, ("sam", "approved"), ("sam", "grant_attempted"), ("sam", "grant_failed")],
        ),
        # the owner denies
        (denied, {}, [*SUBMITTED, ("sam", "denied")]),
        # the requester cancels
        (cancelled, {}, [*SUBMITTED, ("carol", "cancelled")]),
    ],
    ids=["granted at once", "approved", "grant failed", "denied", "cancelled"],
)
def test_each_step_writes_its_audit_row(
    market_with: Callable[[Any], Marketplace],
    mesh: Services,
    story: Callable[[Marketplace], str],
    failures: dict[int, Exception],
    expected: list[tuple[str, str]],
) -> None:
    # GIVEN a marketplace whose Lake Formation may fail
    market = market_with(RecordingGrants(mesh.lakeformation, failures))
    # WHEN a request goes through its story
    request_id = story(market)
    # THEN each step wrote one row, in order, with its actor
    assert actions(market, request_id) == expected


def test_refused_actions_write_no_audit_row(market: Marketplace) -> None:
    # GIVEN carol's pending request and its two rows
    request = submit(market)
    before = market.audit()
    # WHEN refused actions are attempted
    for refused in (
        lambda: market.approve(request.id, "mia"),
        lambda: market.deny(request.id, "sam", comment=""),
        lambda: market.cancel(request.id, "dan"),
        lambda: market.retry(request.id, "carol"),
        lambda: submit(market),
    ):
        with pytest.raises(MeshError):
            refused()
    # THEN the audit log is unchanged
    assert market.audit() == before


def test_audit_rows_carry_the_public_fields_with_utc_times(mesh: Services, tmp_path: Path) -> None:
    # GIVEN a marketplace whose clock runs in UTC+05:30
    store_path = tmp_path / "mesh.db"
    india = timezone(timedelta(hours=5, minutes=30))
    market = marketplace(mesh, store_path)
    market.clock = lambda: datetime.now(india)
    started = datetime.now(UTC)
    # WHEN a request is submitted, approved and granted
    request_id = approved(market)
    # THEN every row has exactly the public fields, a UTC ISO-8601 time and this request
    events = market.audit(request_id=request_id)
    assert len(events) == 5
    for event in events:
        row = event.to_json()
        assert set(row) == {"id", "at", "actor", "action", "request_id", "scope", "details"}
        moment = datetime.fromisoformat(row["at"])
        assert moment.utcoffset() == timedelta(0), row["at"]
        assert started - timedelta(seconds=1) <= moment <= datetime.now(UTC)
        assert row["request_id"] == request_id
        assert "sales_orders" in row["scope"] and "customers" in row["scope"]
        assert isinstance(row["details"], dict)
    assert [e.id for e in events] == sorted({e.id for e in events})


def test_policy_row_holds_the_reason_and_decision_rows_the_comment(market: Marketplace) -> None:
    # GIVEN carol's request on a PII table, and dan's on the same one for another account
    carols = submit(market)
    dans = submit(market, "dan", account=PARTNER)
    # WHEN sam approves one and denies the other
    market.approve(carols.id, "sam", comment="ok for churn")
    market.deny(dans.id, "sam", comment="partners get the aggregate")
    # THEN the policy row holds the stored reason, and each decision row its comment
    (policy_row,) = rows(market, carols.id, "policy_evaluated")
    assert policy_row.actor == "policy"
    assert policy_row.details["reason"] == carols.policy_reason
    assert "email" in policy_row.details["reason"]
    assert rows(market, carols.id, "approved")[0].details["comment"] == "ok for churn"
    assert rows(market, dans.id, "denied")[0].details["comment"] == "partners get the aggregate"


def test_grant_rows_hold_the_exact_lake_formation_calls(market: Marketplace) -> None:
    # GIVEN carol's pending request for the whole sales_orders database
    request = submit(market, table=None)
    # WHEN sam approves it
    market.approve(request.id, "sam")
    # THEN each attempt names its call, and the success row holds the exact calls made
    expected = database_grants(CAROL, "sales_orders")
    attempts = rows(market, request.id, "grant_attempted")
    assert same_calls([a.details["call"] for a in attempts], expected)
    (succeeded,) = rows(market, request.id, "grant_succeeded")
    assert same_calls(succeeded.details["calls"], expected)


@pytest.mark.parametrize("how", HOW_DENIED)
def test_grant_failed_row_holds_the_error(
    market_with: Callable[[Any], Marketplace], mesh: Services, seeded: str, how: str
) -> None:
    # GIVEN Lake Formation that refuses the grant
    market = market_with(access_denied(how, mesh, seeded, on_call=1))
    request = submit(market)
    # WHEN sam approves
    failed = market.approve(request.id, "sam")
    # THEN the failure row holds the same error code and message as the request
    (row,) = rows(market, request.id, "grant_failed")
    assert row.details["error_code"] == "AccessDeniedException" == failed.error_code
    assert row.details["error"] == failed.error


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit SET actor = 'mallory'", "DELETE FROM audit", "DELETE FROM audit WHERE id = 1"],
)
def test_audit_log_is_append_only_in_sqlite(market: Marketplace, statement: str) -> None:
    # GIVEN a request with its audit rows
    approved(market)
    before = market.audit()
    # WHEN anyone changes or deletes audit rows through sqlite3 directly
    connection = sqlite3.connect(market.store.path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            connection.execute(statement)
        connection.commit()
    finally:
        connection.close()
    # THEN the rows are unchanged
    assert market.audit() == before
