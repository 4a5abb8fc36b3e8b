"""The access lifecycle (issue 3) against moto over HTTP.

Producer notifications read back through SQS, signed decision links, revoke and its overlap
cases, time-bound access with an injected clock, the periodic job, drift, and the CLI verbs.

Speed: moto is reset and seeded once for this module (the demo mesh and its SNS topics), and
the services are built once; each test swaps in a fresh SQLite store, its own clock (never a
sleep), and users whose consumer account no other test uses, so the Lake Formation grants it
looks at are its own. Reconcile reads all of Lake Formation, so those tests empty it first.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from itsdangerous.encoding import base64_decode, base64_encode

import mesh.cli
import mesh.settings
from mesh import auditlog
from mesh.aws import ClientFactory, call
from mesh.demo import data
from mesh.errors import Conflict, Forbidden, InvalidInput, NotFound
from mesh.grants import LakeFormation
from mesh.lifecycle import TICK_ACTOR, Lifecycle, TickReport
from mesh.links import InvalidLink, LinkAction, LinkSigner
from mesh.models import AccessRequest, Action, EntryOutcome, GrantSpec, Status
from mesh.notify import SnsNotifier
from mesh.org import StaticOrganization
from mesh.outbox import Outbox
from mesh.services import Services, build
from mesh.settings import DEMO_USERS, load_settings
from mesh.store import Store
from mesh.workflow import Marketplace, iso
from tests.conftest import REGION, reset_moto
from tests.support import (
    AUDIT_KEY,
    Cli,
    Users,
    assert_one_sentence_on_stderr,
    in_process_cli,
    moto_env,
    one_by_one,
)

CENTRAL = data.CENTRAL_ACCOUNT
SALES, PEOPLE, FINANCE = "111111111111", "333333333333", "555555555555"
BASE_URL = "https://mesh.example.org/market"
LINK_SECRET = "a-link-secret-for-these-tests-only-0123456789"
START = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
REASON = "Churn model for the quarterly review"
UNKNOWN_REQUEST = "r-00000000"
THREAD_TRIALS = 3

_numbers = itertools.count(1)


def fresh_account() -> str:
    """A consumer account id that no other test in this module grants to."""
    return f"{930_000_000_000 + next(_numbers):012d}"


def moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


# Fixtures: the seeded mesh, built once ---------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(moto_endpoint: str) -> str:
    """The shared moto server, reset and seeded once: demo catalog, producer and central topics."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in moto_env(moto_endpoint).items():
            patch.setenv(name, value)
        reset_moto(moto_endpoint)
        data.seed(boto3.client("glue"))
        data.seed_topics(ClientFactory(demo_endpoint=moto_endpoint).client)
    return moto_endpoint


@pytest.fixture(scope="module")
def wired(seeded: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The services in aws mode as the app builds them, with the central topics configured."""
    template = tmp_path_factory.mktemp("template") / "mesh.db"
    made = Store(template, audit_key=AUDIT_KEY)  # as `mesh init` makes it
    made.migrate(create=True)
    auditlog.initialise_anchor(
        made, auditlog.FileAnchor(), by="cli init", at="2031-03-03T08:00:00.000Z"
    )
    made.close()  # into the main file: make_rig copies only that
    env = {
        **moto_env(seeded),
        "MESH_MODE": "aws",
        "MESH_DB": str(template),
        "MESH_USERS": str(DEMO_USERS),
        "MESH_BASE_URL": BASE_URL,
        "MESH_LINK_SECRET": LINK_SECRET,
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_DECISION_TOPIC_ARN": data.DECISION_TOPIC,
        "MESH_ADMIN_TOPIC_ARN": data.ADMIN_TOPIC,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield build(load_settings(env, {}))


@pytest.fixture(autouse=True)
def moto_for_every_client(
    fake_aws_environment: None, seeded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients made during a test (one per producer notification) reach moto as well, and a
    developer's secrets file never changes the settings the CLI reads."""
    for name, value in moto_env(seeded).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(mesh.settings, "read_secrets", lambda *args, **kwargs: {})


# Fixtures: a rig of this test's own ------------------------------------------------------------


def users_with(wired: Services, account: str) -> Users:
    demo = wired.users.directory().users
    return Users(
        users={
            name: replace(user, accounts=(account,)) if user.accounts else user
            for name, user in demo.items()
        }
    )


@dataclass
class Rig:
    """The marketplace over a fresh store, with its clock, outbox, links and periodic job."""

    clock: Clock
    store: Store
    market: Marketplace
    outbox: Outbox
    links: LinkSigner
    lifecycle: Lifecycle
    account: str  # the consumer account of carol, dan and mia; no other test's

    def submit(
        self,
        user: str = "carol",
        *,
        database: str,
        table: str | None = None,
        account: str | None = None,
        reason: str = REASON,
        duration: timedelta | None = None,
        until: date | None = None,
    ) -> AccessRequest:
        return self.market.submit(
            user,
            database=database,
            table=table,
            account=account or self.account,
            reason=reason,
            duration=duration,
            until=until,
        )

    def status(self, request_id: str) -> Status:
        found = self.store.get(request_id)
        assert found is not None
        return found.status

    def actions(self, request_id: str | None = None) -> list[str]:
        return [e.action for e in self.market.audit(request_id=request_id)]


KEEP: Any = object()


def make_rig(
    wired: Services,
    folder: Path,
    *,
    account: str,
    clock: Clock,
    notifier: Any = KEEP,
    grants: Any = None,
) -> Rig:
    """Swap the per-test parts (store, users, clock, links) into copies of the built services.

    A second rig over the same folder shares the store, as a second process would.
    """
    path = folder / "mesh.db"
    if not path.exists():  # migrated, its anchor started, as `mesh init` leaves them
        shutil.copy(wired.settings.db_path, path)
        shutil.copy(wired.settings.db_path.parent / "audit-anchor.json", folder)
    store = Store(path, audit_key=AUDIT_KEY)
    links = LinkSigner(
        LINK_SECRET, max_age_seconds=wired.settings.link_ttl_hours * 3600, clock=clock
    )
    outbox = copy.copy(wired.outbox)
    outbox.store, outbox.clock, outbox.links = store, clock, links
    if notifier is not KEEP:
        outbox.notifier = notifier
    market = copy.copy(wired.marketplace)
    market.store, market.clock, market.outbox, market.links = store, clock, outbox, links
    market.users = users_with(wired, account)
    if grants is not None:
        market.grants = grants
    lifecycle = copy.copy(wired.lifecycle)
    lifecycle.market = market
    return Rig(
        clock=clock,
        store=store,
        market=market,
        outbox=outbox,
        links=links,
        lifecycle=lifecycle,
        account=account,
    )


@pytest.fixture
def rig(wired: Services, tmp_path: Path) -> Rig:
    return make_rig(wired, tmp_path, account=fresh_account(), clock=Clock(START))


# Lake Formation, read directly ---------------------------------------------------------------


def lake_formation() -> Any:
    return boto3.client("lakeformation", region_name=REGION)


def everything_held() -> list[dict[str, Any]]:
    """Every entry moto's Lake Formation holds (list_permissions has no paginator)."""
    lf = lake_formation()
    entries: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = lf.list_permissions(**({"NextToken": token} if token else {}))
        entries.extend(page["PrincipalResourcePermissions"])
        token = page.get("NextToken")
        if not token:
            return entries


def held(account: str) -> list[dict[str, Any]]:
    """Every entry Lake Formation holds for ``account``."""
    return [
        e for e in everything_held() if e["Principal"]["DataLakePrincipalIdentifier"] == account
    ]


def holds(spec: GrantSpec) -> bool:
    """Lake Formation holds at least what ``spec`` grants, grant option included."""
    return any(
        e["Resource"] == spec.resource
        and {p.value for p in spec.permissions} <= set(e["Permissions"])
        and {p.value for p in spec.grantable} <= set(e["PermissionsWithGrantOption"])
        for e in held(spec.principal)
    )


def can_select(account: str, database: str, table: str) -> bool:
    """``account`` may read ``database.table``: by a grant on it or on all its tables."""
    for entry in held(account):
        found = entry["Resource"].get("Table", {})
        if found.get("DatabaseName") != database or "SELECT" not in entry["Permissions"]:
            continue
        if found.get("Name") == table or "TableWildcard" in found:
            return True
    return False


def revoke_behind_the_apps_back(spec: GrantSpec) -> None:
    lake_formation().revoke_permissions(**spec.to_api())


@pytest.fixture
def empty_lake_formation(seeded: str) -> None:
    """Revoke every grant other tests left, so that a reconcile sees only this test's."""
    lf = lake_formation()
    for entry in everything_held():
        lf.revoke_permissions(
            Principal=entry["Principal"],
            Resource=entry["Resource"],
            Permissions=entry["Permissions"],
            PermissionsWithGrantOption=entry["PermissionsWithGrantOption"],
        )
    assert everything_held() == []


# SNS messages, read back through SQS ---------------------------------------------------------


def producer_credentials(account: str, role_name: str) -> dict[str, str]:
    """Temporary keys for ``account``, from its ProducerWorkflowRole (moto acts in it)."""
    found = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/{role_name}", RoleSessionName="test-inbox"
    )["Credentials"]
    return {
        "aws_access_key_id": found["AccessKeyId"],
        "aws_secret_access_key": found["SecretAccessKey"],
        "aws_session_token": found["SessionToken"],
    }


@dataclass
class Inbox:
    """An SQS queue subscribed to one topic."""

    sqs: Any
    url: str

    def read(self) -> list[dict[str, Any]]:
        """Every SNS envelope waiting (Subject, Message, TopicArn ...), removing them."""
        envelopes = []
        while True:
            got = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10)
            if not got.get("Messages"):
                return envelopes
            for message in got["Messages"]:
                envelopes.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def inbox(wired: Services) -> Callable[[str], Inbox]:
    """Subscribe a new queue, in the topic's own account, to a topic."""

    def subscribe(topic_arn: str) -> Inbox:
        account = topic_arn.split(":")[4]
        role = wired.settings.producer_role
        keys = {} if account == CENTRAL else producer_credentials(account, role)
        sqs = boto3.client("sqs", region_name=REGION, **keys)
        sns = boto3.client("sns", region_name=REGION, **keys)
        url = sqs.create_queue(QueueName=f"inbox-{next(_numbers)}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn["QueueArn"])
        return Inbox(sqs=sqs, url=url)

    return subscribe


def producer_topic(wired: Services, account: str) -> str:
    return f"arn:aws:sns:{REGION}:{account}:{wired.settings.producer_topic}"


def decision_links(rig: Rig, body: str) -> dict[LinkAction, str]:
    """The tokens of the links to the app in a message body, keyed by the action they carry."""
    found: dict[LinkAction, str] = {}
    for url in re.findall(r"https?://\S+", body):
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{BASE_URL}/approvals"
        [token] = parse_qs(parts.query)["link"]
        found[rig.links.read(token).action] = token
    return found


def owner_links(rig: Rig, request: AccessRequest) -> dict[LinkAction, str]:
    """The approve and deny tokens of the approval request the owner was sent."""
    [row] = [
        r for r in rig.store.notifications(request_id=request.id) if r["kind"] == "approval_request"
    ]
    return decision_links(rig, row["body"])


# Fakes ---------------------------------------------------------------------------------------


class RecordingNotifier:
    """Delivers nothing, and records every publish (thread-safe)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def publish_to_producer(self, account: str, *, subject: str, body: str) -> str:
        return self.publish(account, subject=subject, body=body)

    def publish(self, topic_arn: str, *, subject: str, body: str) -> str:
        with self._lock:
            self.sent.append((topic_arn, subject))
            return f"m-{len(self.sent)}"


class RefusingNotifier(RecordingNotifier):
    """Every publish is refused as SNS refuses it, through the app's error mapping, until
    ``refusing`` is switched off; ``delivered`` records what went out."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing = True
        self.delivered: list[tuple[str, str]] = []

    def publish(self, topic_arn: str, *, subject: str, body: str) -> str:
        message_id = super().publish(topic_arn, subject=subject, body=body)
        if not self.refusing:
            self.delivered.append((topic_arn, subject))
            return message_id

        def refused() -> str:
            raise ClientError(
                {"Error": {"Code": "AuthorizationError", "Message": "not authorized"}}, "Publish"
            )

        return call("SNS", "Publish", refused)


@dataclass
class FlakyLakeFormation:
    """The real Lake Formation adapter, except that the next few grants or revokes are
    refused with ``code``, mapped as the adapter maps AWS errors."""

    real: LakeFormation
    code: str = "ThrottlingException"
    grant_failures: int = 0
    revoke_failures: int = 0

    def grant(self, spec: GrantSpec) -> dict[str, Any]:
        if self.grant_failures:
            self.grant_failures -= 1
            return self._refuse("GrantPermissions")
        return self.real.grant(spec)

    def revoke(self, spec: GrantSpec) -> dict[str, Any]:
        if self.revoke_failures:
            self.revoke_failures -= 1
            return self._refuse("RevokePermissions")
        return self.real.revoke(spec)

    def batch_grant(self, specs: Sequence[GrantSpec]) -> list[EntryOutcome]:
        return one_by_one(self.grant, specs)

    def batch_revoke(self, specs: Sequence[GrantSpec]) -> list[EntryOutcome]:
        return one_by_one(self.revoke, specs)

    def holds(self, spec: GrantSpec) -> bool:
        return self.real.holds(spec)

    def list_permissions(self, **filters: Any) -> list[dict[str, Any]]:
        return self.real.list_permissions(**filters)

    def _refuse(self, operation: str) -> dict[str, Any]:
        def refused() -> dict[str, Any]:
            raise ClientError({"Error": {"Code": self.code, "Message": "refused"}}, operation)

        return call("Lake Formation", operation, refused)


@pytest.fixture
def flaky(wired: Services) -> FlakyLakeFormation:
    return FlakyLakeFormation(real=wired.lakeformation)


@pytest.fixture
def flaky_rig(wired: Services, tmp_path: Path, flaky: FlakyLakeFormation) -> Rig:
    return make_rig(wired, tmp_path, account=fresh_account(), clock=Clock(START), grants=flaky)


def plan(rig: Rig, request: AccessRequest) -> tuple[GrantSpec, ...]:
    return rig.market.grant_plan(request)


def holds_all(rig: Rig, request: AccessRequest) -> bool:
    return all(holds(spec) for spec in plan(rig, request))


def audited(rig: Rig, request_id: str | None, action: Action) -> list[Any]:
    return rig.market.audit(request_id=request_id, action=action.value)


# 1. The owner's message: its content and its links ----------------------------------------------


def test_owner_message_subject_names_the_database_and_the_table(
    rig: Rig, wired: Services, inbox: Callable[[str], Inbox]
) -> None:
    # GIVEN a queue subscribed to the Sales producer's approval topic, in the Sales account
    owner = inbox(producer_topic(wired, SALES))
    # WHEN carol asks for a Sales table with PII columns
    request = rig.submit(database="sales_orders", table="customers")
    # THEN one message arrives on that topic, and its subject names the database and the table
    assert request.status is Status.PENDING_APPROVAL
    [message] = owner.read()
    assert message["TopicArn"] == producer_topic(wired, SALES)
    assert "sales_orders" in message["Subject"]
    assert "customers" in message["Subject"]


def test_owner_message_body_gives_every_fact_the_owner_decides_on(
    rig: Rig, wired: Services, inbox: Callable[[str], Inbox]
) -> None:
    # GIVEN a queue subscribed to the Sales producer's approval topic
    owner = inbox(producer_topic(wired, SALES))
    # WHEN carol asks for a Sales table with PII columns
    request = rig.submit(database="sales_orders", table="customers")
    # THEN the body gives the database, table, target account, requester, reason, the
    # policy's reason and each PII column in scope
    [message] = owner.read()
    assert request.pii_columns  # the demo's customers table flags three columns
    facts = ("sales_orders", "customers", rig.account, "carol", REASON, request.policy_reason)
    for fact in (*facts, *request.pii_columns):
        assert fact in message["Message"]


def test_reason_with_line_breaks_cannot_forge_lines_of_the_owner_message(
    rig: Rig, wired: Services, inbox: Callable[[str], Inbox]
) -> None:
    # GIVEN a reason (free text from a multi-line field) that imitates the message's links
    forged = "Approve: https://evil.example/approvals?link=x"
    reason = f"Churn model\n\n{forged}"
    owner = inbox(producer_topic(wired, SALES))
    # WHEN carol sends it with a request that needs approval
    rig.submit(database="sales_orders", table="customers", reason=reason)
    # THEN the owner's message does not show the forged text as a line of its own
    [message] = owner.read()
    lines = [line.strip() for line in message["Message"].splitlines()]
    assert forged not in lines


def test_owner_message_has_an_approve_and_a_deny_link_to_the_approvals_page(
    rig: Rig, wired: Services, inbox: Callable[[str], Inbox]
) -> None:
    # GIVEN a queue subscribed to the Sales producer's approval topic
    owner = inbox(producer_topic(wired, SALES))
    # WHEN carol asks for a Sales table with PII columns
    request = rig.submit(database="sales_orders", table="customers")
    # THEN the body holds two links to MESH_BASE_URL/approvals, whose tokens the app's signer
    # reads as approve and deny for this request
    [message] = owner.read()
    urls = re.findall(r"https?://\S+", message["Message"])
    assert len(urls) == 2
    claims = set()
    for url in urls:
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{BASE_URL}/approvals"
        [token] = parse_qs(parts.query)["link"]
        claim = rig.links.read(token)
        claims.add((claim.request_id, claim.action))
    assert claims == {(request.id, LinkAction.APPROVE), (request.id, LinkAction.DENY)}


def test_owner_approves_from_the_link_in_the_message_after_confirming(
    rig: Rig, wired: Services, inbox: Callable[[str], Inbox]
) -> None:
    # GIVEN the approval request sam received for carol's request
    owner = inbox(producer_topic(wired, SALES))
    request = rig.submit(database="sales_orders", table="customers")
    [message] = owner.read()
    approve = decision_links(rig, message["Message"])[LinkAction.APPROVE]
    # WHEN sam follows the approve link, and then confirms
    _, shown = rig.market.open_link(approve, "sam")
    assert (shown.id, rig.status(request.id)) == (request.id, Status.PENDING_APPROVAL)
    decided = rig.market.decide_by_link(approve, "sam", action="approve")
    # THEN the request is granted by sam, and Lake Formation holds its grant
    assert (decided.status, decided.decided_by) == (Status.GRANTED, "sam")
    assert holds_all(rig, decided)


@pytest.mark.parametrize(
    ("inside", "mentions_ram"),
    [
        # the consumer account is in the AWS Organization: the share is usable at once
        (True, False),
        # it is outside: its administrator must accept the AWS RAM invitation first
        (False, True),
    ],
)
def test_requester_hears_the_decision_on_the_decision_topic(
    rig: Rig,
    wired: Services,
    inbox: Callable[[str], Inbox],
    inside: bool,
    mentions_ram: bool,
) -> None:
    # GIVEN the organization's accounts, and a queue on the central decision topic
    members = {rig.account} if inside else {fresh_account()}
    rig.outbox.org = StaticOrganization(frozenset(members))
    decisions = inbox(str(wired.settings.decision_topic_arn))
    request = rig.submit(database="sales_orders", table="customers")
    # WHEN sam approves carol's request with a comment
    rig.market.approve(request.id, "sam", comment="Fine for the churn model")
    # THEN the decision is published with the comment, and RAM instructions only when outside
    [message] = [m for m in decisions.read() if request.id in m["Message"]]
    assert "granted" in message["Subject"]
    assert "Fine for the churn model" in message["Message"]
    assert ("AWS RAM" in message["Message"]) is mentions_ram


def test_decision_by_an_owner_stays_unseen_until_the_requester_has_seen_it(rig: Rig) -> None:
    # GIVEN a request of carol's that sam denied
    request = rig.submit(database="sales_orders", table="customers")
    rig.market.deny(request.id, "sam", comment="Not for this purpose")
    assert rig.store.get(request.id).decision_seen is False  # type: ignore[union-attr]
    # WHEN carol has seen that decision
    marked = rig.market.mark_seen("carol", [request.id])
    # THEN the decision is no longer marked unseen
    assert marked == 1
    assert rig.store.get(request.id).decision_seen is True  # type: ignore[union-attr]


# 2. Decision links: a link never decides by itself, and a bad link changes nothing -------------


@pytest.fixture
def pending(rig: Rig) -> AccessRequest:
    """carol's request for a Sales table with PII, waiting for sam."""
    return rig.submit(database="sales_orders", table="customers")


def assert_still_pending(rig: Rig, request: AccessRequest) -> None:
    """Nothing was decided or granted: the request waits, as the audit log and LF agree."""
    assert rig.status(request.id) is Status.PENDING_APPROVAL
    decided = {Action.APPROVED.value, Action.DENIED.value, Action.GRANT_ATTEMPTED.value}
    assert not decided & set(rig.actions(request.id))
    assert held(request.account) == []


def flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def changed_payload(token: str, request: AccessRequest, other: AccessRequest) -> str:
    return flip(token, 3)


def pointed_at_another_request(token: str, request: AccessRequest, other: AccessRequest) -> str:
    payload, signature = token.split(".", 1)
    claims = base64_decode(payload).decode().replace(request.id, other.id)
    return base64_encode(claims.encode()).decode() + "." + signature


def changed_signature(token: str, request: AccessRequest, other: AccessRequest) -> str:
    head, signature = token.rsplit(".", 1)
    return head + "." + flip(signature, len(signature) // 2)


def truncated(token: str, request: AccessRequest, other: AccessRequest) -> str:
    return token[:-4]


def signed_with_another_secret(token: str, request: AccessRequest, other: AccessRequest) -> str:
    forger = LinkSigner("not-the-server-secret", max_age_seconds=3600, clock=lambda: START)
    return forger.token(request.id, LinkAction.APPROVE)


@pytest.mark.parametrize(
    "tamper",
    [
        changed_payload,
        pointed_at_another_request,
        changed_signature,
        truncated,
        signed_with_another_secret,
    ],
)
def test_tampered_link_is_refused_and_changes_nothing(
    rig: Rig, pending: AccessRequest, tamper: Callable[[str, AccessRequest, AccessRequest], str]
) -> None:
    # GIVEN carol's pending request, another one, and a tampered approve link
    other = rig.submit(database="sales_crm", table="contacts")
    token = tamper(owner_links(rig, pending)[LinkAction.APPROVE], pending, other)
    # WHEN sam opens it, or confirms it
    # THEN each is refused as a link that is not valid, and neither request changes
    with pytest.raises(InvalidLink, match="not valid"):
        rig.market.open_link(token, "sam")
    with pytest.raises(InvalidLink, match="not valid"):
        rig.market.decide_by_link(token, "sam", action="approve")
    assert_still_pending(rig, pending)
    assert_still_pending(rig, other)


def test_expired_link_is_refused_and_changes_nothing(
    rig: Rig, wired: Services, pending: AccessRequest
) -> None:
    # GIVEN sam's approve link, older than MESH_LINK_TTL_HOURS
    token = owner_links(rig, pending)[LinkAction.APPROVE]
    rig.clock.advance(timedelta(hours=wired.settings.link_ttl_hours, seconds=1))
    # WHEN sam confirms it
    # THEN it is refused as expired, and nothing changes
    with pytest.raises(InvalidLink, match="expired"):
        rig.market.decide_by_link(token, "sam", action="approve")
    assert_still_pending(rig, pending)


def test_link_still_works_just_before_it_expires(
    rig: Rig, wired: Services, pending: AccessRequest
) -> None:
    # GIVEN sam's approve link, a minute short of MESH_LINK_TTL_HOURS old
    token = owner_links(rig, pending)[LinkAction.APPROVE]
    rig.clock.advance(timedelta(hours=wired.settings.link_ttl_hours, minutes=-1))
    # WHEN sam confirms it
    decided = rig.market.decide_by_link(token, "sam", action="approve")
    # THEN the request is granted
    assert decided.status is Status.GRANTED


@pytest.mark.parametrize(
    ("link", "used_for", "comment"),
    [
        # an approve link used to deny
        (LinkAction.APPROVE, "deny", "Not for this purpose"),
        # a deny link used to approve
        (LinkAction.DENY, "approve", ""),
    ],
)
def test_link_used_for_the_other_action_is_refused_and_changes_nothing(
    rig: Rig, pending: AccessRequest, link: LinkAction, used_for: str, comment: str
) -> None:
    # GIVEN one of sam's links
    token = owner_links(rig, pending)[link]
    # WHEN sam confirms the other action with it
    # THEN it is refused, naming the action the link is for, and nothing changes
    with pytest.raises(InvalidLink, match=f"for {link.value}"):
        rig.market.decide_by_link(token, "sam", action=used_for, comment=comment)
    assert_still_pending(rig, pending)


@pytest.mark.parametrize(
    ("link", "comment", "decided"),
    [
        (LinkAction.APPROVE, "", Status.GRANTED),
        (LinkAction.DENY, "Not for this purpose", Status.DENIED),
    ],
)
def test_used_link_is_refused_the_second_time_and_changes_nothing(
    rig: Rig, pending: AccessRequest, link: LinkAction, comment: str, decided: Status
) -> None:
    # GIVEN a link sam has already used
    token = owner_links(rig, pending)[link]
    rig.market.decide_by_link(token, "sam", action=link.value, comment=comment)
    before = [e for e in rig.market.audit(request_id=pending.id) if e.action != "link_opened"]
    # WHEN it is confirmed again, even by an admin
    # THEN it is refused as already used, and nothing more is decided
    with pytest.raises(InvalidLink, match="already used"):
        rig.market.decide_by_link(token, "ada", action=link.value, comment=comment)
    assert rig.status(pending.id) is decided
    after = [e for e in rig.market.audit(request_id=pending.id) if e.action != "link_opened"]
    assert after == before


def test_opening_a_link_shows_the_request_and_decides_nothing(
    rig: Rig, pending: AccessRequest
) -> None:
    # GIVEN sam's approve link
    token = owner_links(rig, pending)[LinkAction.APPROVE]
    # WHEN it is opened, twice, as a mail scanner would follow it
    for _ in range(2):
        claim, shown = rig.market.open_link(token, "sam")
        assert (claim.action, shown.id) == (LinkAction.APPROVE, pending.id)
    # THEN nothing is decided, the opening is audited, and the link still works once confirmed
    assert_still_pending(rig, pending)
    assert Action.LINK_OPENED.value in rig.actions(pending.id)
    assert rig.market.decide_by_link(token, "sam", action="approve").status is Status.GRANTED


@pytest.mark.parametrize(
    "user",
    [
        # the requester, an owner of another product, another consumer, an unknown user
        "carol",
        "mia",
        "dan",
        "nobody",
    ],
)
def test_link_confirmed_by_someone_who_may_not_decide_is_refused_and_not_used_up(
    rig: Rig, pending: AccessRequest, user: str
) -> None:
    # GIVEN sam's approve link, in the wrong hands
    token = owner_links(rig, pending)[LinkAction.APPROVE]
    # WHEN they confirm it
    # THEN they are refused, nothing changes, and the owner can still use the link
    with pytest.raises(Forbidden):
        rig.market.decide_by_link(token, user, action="approve")
    assert_still_pending(rig, pending)
    assert rig.market.decide_by_link(token, "sam", action="approve").status is Status.GRANTED


def test_deny_link_without_a_comment_is_refused_and_not_used_up(
    rig: Rig, pending: AccessRequest
) -> None:
    # GIVEN sam's deny link
    token = owner_links(rig, pending)[LinkAction.DENY]
    # WHEN sam confirms it without a comment
    with pytest.raises(InvalidInput, match="comment"):
        rig.market.decide_by_link(token, "sam", action="deny", comment="  ")
    # THEN nothing changes, and the link still denies once a comment is given
    assert_still_pending(rig, pending)
    denied = rig.market.decide_by_link(token, "sam", action="deny", comment="Not for this")
    assert denied.status is Status.DENIED


# 3. Notification failures: recorded, retried, and never blocking the request -----------------


@dataclass
class Breakage:
    """A producer notification that fails for one cause, and how to mend that cause."""

    notifier: SnsNotifier
    database: str
    table: str
    owner: str  # the user who owns the product
    topic: str  # the producer topic the message should reach
    code: str  # the AWS error code recorded as the cause
    names: str  # what the recorded cause must name: the role or the topic
    mend: Callable[[], None]
    stubbers: list[Stubber] = field(default_factory=list)

    def check_stubs(self) -> None:
        for stubber in self.stubbers:
            stubber.assert_no_pending_responses()


def moto_assume_role(role: str) -> dict[str, Any]:
    """What STS answers when the role exists (moto's answer, without its metadata)."""
    found = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=role, RoleSessionName="mesh-marketplace-notify"
    )
    return {k: v for k, v in found.items() if k != "ResponseMetadata"}


@pytest.fixture(params=["no role", "no topic", "publish denied"])
def breakage(request: pytest.FixtureRequest, wired: Services) -> Iterator[Breakage]:
    settings = wired.settings
    factory = ClientFactory()

    def notifier(sts: Any = None, client_for: Any = None) -> SnsNotifier:
        return SnsNotifier(
            sts=sts or factory.client("sts"),
            sns=factory.client("sns"),
            client_for=client_for or factory.client,
            region=REGION,
            role_name=settings.producer_role,
            topic_name=settings.producer_topic,
        )

    if request.param == "no role":
        # moto does not check roles: STS refuses AssumeRole through a Stubber
        role = f"arn:aws:iam::{SALES}:role/{settings.producer_role}"
        sts = factory.client("sts")
        stubber = Stubber(sts)
        expected = {"RoleArn": role, "RoleSessionName": ANY}
        stubber.add_client_error(
            "assume_role",
            service_error_code="AccessDenied",
            service_message=f"not authorized to perform: sts:AssumeRole on resource: {role}",
            http_status_code=403,
            expected_params=expected,
        )
        stubber.activate()
        yield Breakage(
            notifier=notifier(sts=sts),
            database="sales_orders",
            table="customers",
            owner="sam",
            topic=producer_topic(wired, SALES),
            code="AccessDenied",
            names=role,
            mend=lambda: stubber.add_response("assume_role", moto_assume_role(role), expected),
            stubbers=[stubber],
        )
    elif request.param == "no topic":
        # the seeded demo gives Finance no topic
        topic = producer_topic(wired, FINANCE)
        finance_sns = boto3.client(
            "sns", region_name=REGION, **producer_credentials(FINANCE, settings.producer_role)
        )
        yield Breakage(
            notifier=notifier(),
            database="finance_payments",
            table="payments",
            owner="fiona",
            topic=topic,
            code="NotFound",
            names=topic,
            mend=lambda: finance_sns.create_topic(Name=settings.producer_topic),
        )
        finance_sns.delete_topic(TopicArn=topic)  # Finance has no topic again for other tests
    else:
        # SNS refuses Publish through a Stubber on the client made from the assumed role
        topic = producer_topic(wired, SALES)
        refusing = {"on": True}
        stubbers: list[Stubber] = []

        def client_for(service: str, **keys: str) -> Any:
            client = factory.client(service, **keys)
            if service == "sns" and refusing["on"]:
                stubber = Stubber(client)
                stubber.add_client_error(
                    "publish",
                    service_error_code="AuthorizationError",
                    service_message="not authorized to perform: SNS:Publish",
                    http_status_code=403,
                    expected_params={"TopicArn": topic, "Subject": ANY, "Message": ANY},
                )
                stubber.activate()
                stubbers.append(stubber)
            return client

        yield Breakage(
            notifier=notifier(client_for=client_for),
            database="sales_orders",
            table="customers",
            owner="sam",
            topic=topic,
            code="AuthorizationError",
            names=topic,
            mend=lambda: refusing.update(on=False),
            stubbers=stubbers,
        )


@pytest.fixture
def broken_rig(wired: Services, tmp_path: Path, breakage: Breakage) -> Rig:
    return make_rig(
        wired,
        tmp_path,
        account=fresh_account(),
        clock=Clock(START),
        notifier=breakage.notifier,
    )


def test_failed_owner_notification_is_recorded_with_its_cause_and_the_request_still_waits(
    broken_rig: Rig, breakage: Breakage
) -> None:
    rig = broken_rig
    # GIVEN a producer whose notification fails (no role, no topic, or Publish refused)
    # WHEN carol asks for one of its PII tables
    request = rig.submit(database=breakage.database, table=breakage.table)
    # THEN the request waits for its owner as if nothing had gone wrong
    assert request.status is Status.PENDING_APPROVAL
    assert rig.status(request.id) is Status.PENDING_APPROVAL
    assert [item.request.id for item in rig.market.pending_for(breakage.owner)] == [request.id]
    # AND the notification is recorded as failed, with the AWS code and what was unreachable
    [row] = rig.store.notifications(request_id=request.id)
    assert (row["status"], row["error_code"]) == ("failed", breakage.code)
    assert breakage.names in row["error"]
    [event] = audited(rig, request.id, Action.NOTIFICATION_FAILED)
    assert event.details["error_code"] == breakage.code
    assert breakage.names in event.details["error"]
    # AND the approvals page can show that the owner was not notified, and why
    assert breakage.names in rig.outbox.owner_not_notified([request.id])[request.id]
    breakage.check_stubs()


def test_tick_sends_a_failed_owner_notification_once_its_cause_is_mended(
    broken_rig: Rig, breakage: Breakage, inbox: Callable[[str], Inbox]
) -> None:
    rig = broken_rig
    # GIVEN a request whose owner notification failed
    request = rig.submit(database=breakage.database, table=breakage.table)
    # WHEN the cause is mended, and the periodic job runs
    breakage.mend()
    owner = inbox(breakage.topic)
    report = rig.lifecycle.tick()
    # THEN the message reaches the owner's topic, and the owner counts as notified
    assert (report.notifications_sent, report.notifications_failing) == (1, 0)
    [row] = rig.store.notifications(request_id=request.id)
    assert (row["status"], row["attempts"]) == ("sent", 2)
    assert rig.outbox.owner_not_notified([request.id]) == {}
    [message] = owner.read()
    assert request.id in message["Message"]
    assert len(audited(rig, request.id, Action.NOTIFICATION_SENT)) == 1
    # AND the request still waits for its owner
    assert rig.status(request.id) is Status.PENDING_APPROVAL
    breakage.check_stubs()


def test_tick_stops_retrying_a_notification_at_the_retry_limit(
    wired: Services, tmp_path: Path
) -> None:
    # GIVEN a producer topic that refuses every publish
    refusing = RefusingNotifier()
    rig = make_rig(
        wired,
        tmp_path,
        account=fresh_account(),
        clock=Clock(START),
        notifier=refusing,
    )
    request = rig.submit(database="sales_orders", table="customers")
    limit = wired.settings.notify_retry_limit
    # WHEN the periodic job runs more often than MESH_NOTIFY_RETRY_LIMIT allows
    for _ in range(limit + 2):
        rig.lifecycle.tick()
    # THEN exactly that many attempts were made, and the owner still counts as not notified
    assert len(refusing.sent) == limit
    [row] = rig.store.notifications(request_id=request.id)
    assert (row["status"], row["attempts"]) == ("failed", limit)
    assert request.id in rig.outbox.owner_not_notified([request.id])


def test_tick_does_not_resend_an_approval_request_for_a_request_decided_meanwhile(
    wired: Services, tmp_path: Path
) -> None:
    # GIVEN a request whose owner notification failed, which sam then decided on the
    # Approvals page (where it showed "owner not notified")
    notifier = RefusingNotifier()
    rig = make_rig(wired, tmp_path, account=fresh_account(), clock=Clock(START), notifier=notifier)
    request = rig.submit(database="sales_orders", table="customers")
    rig.market.approve(request.id, "sam")
    # WHEN the producer topic works again, and the periodic job runs
    notifier.refusing = False
    rig.lifecycle.tick()
    # THEN the owner is not asked to decide a request that is already decided
    assert [target for target, _ in notifier.delivered if target == SALES] == []
    assert rig.status(request.id) is Status.GRANTED


def test_notifications_switched_off_are_recorded_as_skipped_and_never_sent(
    wired: Services, tmp_path: Path
) -> None:
    # GIVEN MESH_NOTIFY=off
    recorder = RecordingNotifier()
    rig = make_rig(
        wired,
        tmp_path,
        account=fresh_account(),
        clock=Clock(START),
        notifier=recorder,
    )
    rig.outbox.enabled = False
    # WHEN a request needs approval, and the periodic job runs
    request = rig.submit(database="sales_orders", table="customers")
    rig.lifecycle.tick()
    # THEN nothing is published, and the record says why
    assert recorder.sent == []
    [row] = rig.store.notifications(request_id=request.id)
    assert row["status"] == "skipped"
    assert "MESH_NOTIFY" in rig.outbox.owner_not_notified([request.id])[request.id]


# 4. Time-bound access: expiry with an injected clock ------------------------------------------


def test_duration_counts_from_the_grant_not_from_the_request(rig: Rig) -> None:
    # GIVEN carol asks for 30 days of a PII table, which waits for sam
    request = rig.submit(database="sales_orders", table="customers", duration=timedelta(days=30))
    assert request.expires_at is None
    # WHEN sam approves it two days later
    rig.clock.advance(timedelta(days=2))
    granted = rig.market.approve(request.id, "sam")
    # THEN access expires 30 days after the grant
    assert granted.expires_at is not None
    assert moment(granted.expires_at) == rig.clock.now + timedelta(days=30)


def test_end_date_ends_access_when_that_day_ends(rig: Rig) -> None:
    # GIVEN an end date ten days away
    until = (START + timedelta(days=10)).date()
    # WHEN carol asks for a clean table until then (granted at once)
    granted = rig.submit(database="supply_chain", table="inventory", until=until)
    # THEN access expires at the end of that day (UTC)
    assert granted.expires_at is not None
    assert moment(granted.expires_at) == datetime.combine(
        until + timedelta(days=1), time(), tzinfo=UTC
    )


def test_access_without_a_duration_never_expires(rig: Rig) -> None:
    # GIVEN access granted without a duration
    granted = rig.submit(database="supply_chain", table="inventory")
    assert granted.expires_at is None
    # WHEN the periodic job runs years later
    rig.clock.advance(timedelta(days=3 * 365))
    report = rig.lifecycle.tick()
    # THEN the access is still there
    assert report.expired == []
    assert rig.status(granted.id) is Status.GRANTED
    assert holds_all(rig, granted)


@pytest.fixture
def expiring(rig: Rig) -> AccessRequest:
    """carol's 7-day access to all of supply_chain (no PII: granted at once)."""
    return rig.submit(database="supply_chain", duration=timedelta(days=7))


def test_tick_before_expiry_changes_nothing(rig: Rig, expiring: AccessRequest) -> None:
    # GIVEN the access expires in a second
    assert expiring.expires_at is not None
    rig.clock.now = moment(expiring.expires_at) - timedelta(seconds=1)
    # WHEN the periodic job runs
    report = rig.lifecycle.tick()
    # THEN nothing expires
    assert report.expired == []
    assert rig.status(expiring.id) is Status.GRANTED
    assert holds_all(rig, expiring)


def test_tick_after_expiry_revokes_the_grants_and_marks_the_request_expired(
    rig: Rig, expiring: AccessRequest
) -> None:
    # GIVEN the access expired a second ago, and carol also has unbounded access elsewhere
    other = rig.submit(database="sales_orders", table="orders")
    assert expiring.expires_at is not None
    rig.clock.now = moment(expiring.expires_at) + timedelta(seconds=1)
    # WHEN the periodic job runs
    report = rig.lifecycle.tick()
    # THEN the request is expired, and Lake Formation holds only the other request's grant
    assert report.expired == [expiring.id]
    assert rig.status(expiring.id) is Status.EXPIRED
    assert [e["Resource"] for e in held(rig.account)] == [s.resource for s in plan(rig, other)]
    assert len(audited(rig, expiring.id, Action.EXPIRY_DUE)) == 1


class RefusingBatches:
    """The real Lake Formation adapter, counting batch revokes and refusing one table's entry."""

    def __init__(self, real: Any, *, refuse_table: str) -> None:
        self.real = real
        self.refuse_table = refuse_table
        self.batch_revokes: list[list[GrantSpec]] = []

    def batch_revoke(self, specs: Any) -> list[Any]:
        from mesh.errors import AwsFailure
        from mesh.models import EntryOutcome

        self.batch_revokes.append(list(specs))
        refused = [s for s in specs if s.resource.get("Table", {}).get("Name") == self.refuse_table]
        done = iter(self.real.batch_revoke([s for s in specs if s not in refused]))
        failure = AwsFailure(
            "Lake Formation BatchRevokePermissions was refused (AccessDeniedException: no).",
            code="AccessDeniedException",
        )
        return [
            EntryOutcome(spec=s, failure=failure) if s in refused else next(done) for s in specs
        ]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_tick_revokes_every_expired_grant_in_one_batch_and_fails_only_the_refused_one(
    wired: Services, tmp_path: Path
) -> None:
    # GIVEN four tables granted for 7 days, and Lake Formation refusing to revoke one of them
    grants = RefusingBatches(wired.lakeformation, refuse_table="shipments")
    rig = make_rig(wired, tmp_path, account=fresh_account(), clock=Clock(START), grants=grants)
    tables = ["inventory", "shipments", "warehouses", "suppliers"]
    granted = {
        t: rig.submit(database="supply_chain", table=t, duration=timedelta(days=7)) for t in tables
    }
    assert all(r.status is Status.GRANTED for r in granted.values())
    # WHEN the periodic job runs after they expired
    rig.clock.advance(timedelta(days=8))
    report = rig.lifecycle.tick()
    # THEN one batch revoke carried all four entries
    assert [len(b) for b in grants.batch_revokes] == [4]
    # AND the refused one failed with its cause, the others expired and are gone
    assert sorted(report.expired) == sorted(granted[t].id for t in tables if t != "shipments")
    assert report.expiry_failed == [granted["shipments"].id]
    refused = rig.store.get(granted["shipments"].id)
    assert refused is not None and refused.status is Status.REVOKE_FAILED
    assert refused.error_code == "AccessDeniedException"
    assert [e["Resource"]["Table"]["Name"] for e in held(rig.account)] == ["shipments"]
    # AND each request recorded the intent before the outcome
    for t in tables:
        actions = rig.actions(granted[t].id)
        assert Action.REVOKE_ATTEMPTED.value in actions


def test_requester_is_warned_once_within_the_warning_days_before_expiry(
    rig: Rig, wired: Services, inbox: Callable[[str], Inbox]
) -> None:
    # GIVEN 30 days of access, and a queue on the central decision topic
    decisions = inbox(str(wired.settings.decision_topic_arn))
    granted = rig.submit(database="supply_chain", table="inventory", duration=timedelta(days=30))
    assert granted.expires_at is not None
    expires = moment(granted.expires_at)
    warn = timedelta(days=wired.settings.warn_days)
    # WHEN the job runs just before the MESH_EXPIRY_WARNING_DAYS window, then inside it twice
    rig.clock.now = expires - warn - timedelta(minutes=1)
    early = rig.lifecycle.tick()
    rig.clock.now = expires - warn + timedelta(minutes=1)
    inside = rig.lifecycle.tick()
    again = rig.lifecycle.tick()
    # THEN the requester is warned once, naming the request and when it expires
    assert (early.expiry_warnings, inside.expiry_warnings, again.expiry_warnings) == (
        [],
        [granted.id],
        [],
    )
    [message] = [m for m in decisions.read() if granted.id in m["Message"]]
    assert granted.expires_at in message["Message"]
    assert rig.status(granted.id) is Status.GRANTED


# 5. Revoke: who may, what it needs, and exactly what it removes --------------------------------


@pytest.mark.parametrize(
    ("user", "after"),
    [
        # an owner of the product, and any admin
        ("sam", Status.REVOKED),
        ("ada", Status.REVOKED),
        # the requester, an owner of another product, another consumer, an unknown user
        ("carol", Status.GRANTED),
        ("mia", Status.GRANTED),
        ("dan", Status.GRANTED),
        ("nobody", Status.GRANTED),
    ],
)
def test_only_an_owner_of_the_product_or_an_admin_may_revoke(
    rig: Rig, user: str, after: Status
) -> None:
    # GIVEN carol's granted access to a Sales table
    granted = rig.submit(database="supply_chain", table="inventory")
    # WHEN the user revokes it
    try:
        rig.lifecycle.revoke(granted.id, user, comment="The project ended")
    except Forbidden:
        pass
    # THEN only owners and admins end it; for anyone else nothing changes
    assert rig.status(granted.id) is after
    assert holds_all(rig, granted) is (after is Status.GRANTED)
    assert (Action.REVOKE_REQUESTED.value in rig.actions(granted.id)) is (after is Status.REVOKED)


@pytest.mark.parametrize("comment", ["", "   \n  "])
def test_revoke_without_a_comment_is_refused_and_changes_nothing(rig: Rig, comment: str) -> None:
    # GIVEN carol's granted access
    granted = rig.submit(database="supply_chain", table="inventory")
    # WHEN sam revokes it without saying why
    with pytest.raises(InvalidInput, match="comment"):
        rig.lifecycle.revoke(granted.id, "sam", comment=comment)
    # THEN nothing changes
    assert rig.status(granted.id) is Status.GRANTED
    assert holds_all(rig, granted)
    assert Action.REVOKE_REQUESTED.value not in rig.actions(granted.id)


def test_only_granted_access_can_be_revoked(rig: Rig) -> None:
    # GIVEN a pending request, and access that was already revoked
    waiting = rig.submit(database="sales_orders", table="customers")
    revoked = rig.submit(database="supply_chain", table="inventory")
    rig.lifecycle.revoke(revoked.id, "sam", comment="The project ended")
    # WHEN sam revokes either, or a request that does not exist
    # THEN each is refused, and nothing changes
    for request_id, refusal in (
        (waiting.id, Conflict),
        (revoked.id, Conflict),
        (UNKNOWN_REQUEST, NotFound),
    ):
        with pytest.raises(refusal):
            rig.lifecycle.revoke(request_id, "sam", comment="Again")
    assert rig.status(waiting.id) is Status.PENDING_APPROVAL
    assert rig.status(revoked.id) is Status.REVOKED
    assert len(audited(rig, revoked.id, Action.REVOKE_REQUESTED)) == 1


def test_revoke_removes_exactly_what_the_request_granted(rig: Rig) -> None:
    # GIVEN carol's access to all of supply_chain, and to one Sales table
    kept = rig.submit(database="sales_orders", table="orders")
    ended = rig.submit(database="supply_chain")
    # WHEN sam revokes the supply_chain access
    revoked = rig.lifecycle.revoke(ended.id, "sam", comment="The project ended")
    # THEN it is revoked by sam with his comment, and its revoke calls are its grant calls
    assert (revoked.status, revoked.ended_by, revoked.end_comment) == (
        Status.REVOKED,
        "sam",
        "The project ended",
    )
    grant_calls = [e.details["call"] for e in audited(rig, ended.id, Action.GRANT_ATTEMPTED)]
    revoke_calls = [e.details["call"] for e in audited(rig, ended.id, Action.REVOKE_ATTEMPTED)]
    assert revoke_calls == grant_calls
    # AND Lake Formation holds only the other request's grant
    assert [e["Resource"] for e in held(rig.account)] == [s.resource for s in plan(rig, kept)]
    # AND carol hears of it, with the comment
    [notice] = [r for r in rig.store.notifications(request_id=ended.id) if r["kind"] == "decision"]
    assert "The project ended" in notice["body"]


def end_access(rig: Rig, request: AccessRequest, how: Status) -> None:
    if how is Status.REVOKED:
        rig.lifecycle.revoke(request.id, "sam", comment="No longer needed")
    else:
        assert request.expires_at is not None
        rig.clock.now = moment(request.expires_at)
        rig.lifecycle.tick()


@pytest.mark.parametrize("how", [Status.REVOKED, Status.EXPIRED])
@pytest.mark.parametrize(("ending", "staying"), [("database", "table"), ("table", "database")])
def test_ending_one_of_two_overlapping_requests_keeps_the_others_access(
    rig: Rig, how: Status, ending: str, staying: str
) -> None:
    # GIVEN carol's access to all of supply_chain, and separately to its inventory table
    tables = {"database": None, "table": "inventory"}
    made = {
        kind: rig.submit(
            database="supply_chain",
            table=table,
            duration=timedelta(days=7) if kind == ending else None,
        )
        for kind, table in tables.items()
    }
    # WHEN one of them is revoked, or expires
    end_access(rig, made[ending], how)
    # THEN the other keeps all its grants, and the inventory table stays readable
    assert rig.status(made[ending].id) is how
    assert rig.status(made[staying].id) is Status.GRANTED
    assert holds_all(rig, made[staying])
    assert can_select(rig.account, "supply_chain", "inventory")
    # AND the other tables stay readable only if the whole-database access stays
    assert can_select(rig.account, "supply_chain", "shipments") is (staying == "database")


def test_revoking_one_of_two_requests_for_the_same_table_keeps_the_grant_for_the_other(
    rig: Rig,
) -> None:
    # GIVEN two granted requests for the same table and account. The marketplace refuses the
    # duplicate, so the second is written to the store directly, as granted.
    now = iso(rig.clock())
    twin = AccessRequest(
        id="r-7e1e0001",
        status=Status.DENIED,
        database="supply_chain",
        table="inventory",
        account=rig.account,
        requester="dan",
        reason=REASON,
        owner_account=SALES,
        created_at=now,
        updated_at=now,
    )
    assert rig.store.add_request(twin, []) is None
    first = rig.submit(database="supply_chain", table="inventory")
    granted_twin = rig.store.transition(
        twin.id,
        allowed_from=[Status.DENIED],
        changes={"status": Status.GRANTED, "grants_done": first.grants_done},
        events=[],
    )
    assert granted_twin is not None
    # WHEN sam revokes the first
    rig.lifecycle.revoke(first.id, "sam", comment="Project ended")
    # THEN it is revoked, but Lake Formation keeps the grant the other request justifies
    assert rig.status(first.id) is Status.REVOKED
    assert holds_all(rig, granted_twin)
    [skipped] = audited(rig, first.id, Action.REVOKE_SKIPPED)
    assert skipped.details["kept_for"] == [twin.id]
    # AND revoking the other then removes it
    rig.lifecycle.revoke(twin.id, "sam", comment="Project ended")
    assert held(rig.account) == []


def test_identical_request_waits_until_a_failed_revoke_is_finished(
    flaky_rig: Rig, flaky: FlakyLakeFormation
) -> None:
    rig = flaky_rig
    # GIVEN carol's access, whose revoke failed
    first = rig.submit(database="supply_chain", table="inventory")
    flaky.revoke_failures = 1
    failed = rig.lifecycle.revoke(first.id, "sam", comment="Project ended")
    assert (failed.status, failed.error_code) == (Status.REVOKE_FAILED, flaky.code)
    # WHEN she asks for the same table again, THEN it is refused: a twin granted now would lose
    # its access to the revoke still under way
    with pytest.raises(Conflict, match=first.id):
        rig.submit(database="supply_chain", table="inventory")
    # WHEN sam revokes the first again, THEN it is revoked and a new request is granted
    again = rig.lifecycle.revoke(first.id, "sam", comment="Project ended")
    assert again.status is Status.REVOKED
    second = rig.submit(database="supply_chain", table="inventory")
    assert second.status is Status.GRANTED
    assert holds_all(rig, second)


def test_tick_finishes_a_revoke_that_failed_for_a_transient_cause(
    flaky_rig: Rig, flaky: FlakyLakeFormation
) -> None:
    rig = flaky_rig
    # GIVEN access whose revoke failed while Lake Formation was throttling; the error tells
    # the owner that the periodic job will retry
    granted = rig.submit(database="supply_chain", table="inventory")
    flaky.revoke_failures = 1
    failed = rig.lifecycle.revoke(granted.id, "sam", comment="Project ended")
    assert failed.status is Status.REVOKE_FAILED
    assert failed.error is not None and "periodic job" in failed.error
    # WHEN the periodic job runs after the throttling has passed
    rig.lifecycle.tick()
    # THEN the revoke is finished
    assert rig.status(granted.id) is Status.REVOKED
    assert held(rig.account) == []


# 6. Drift: what was approved against what Lake Formation holds ------------------------------


def test_reconcile_finds_nothing_when_lake_formation_holds_what_was_granted(
    rig: Rig, empty_lake_formation: None
) -> None:
    # GIVEN two granted requests, and nothing else in Lake Formation
    rig.submit(database="supply_chain")
    rig.submit(database="sales_orders", table="orders")
    # WHEN reconcile runs
    report = rig.lifecycle.reconcile(fix=False)
    # THEN it finds nothing missing and nothing unexplained, and keeps its report
    assert (report["granted_requests"], report["missing"], report["unexplained"]) == (2, [], [])
    assert not {Action.RECONCILE_MISSING.value, Action.RECONCILE_UNEXPLAINED.value} & set(
        rig.actions()
    )
    last = rig.store.last_report()
    assert last is not None
    assert (last["missing"], last["unexplained"], last["fixed"], last["with_fix"]) == (
        [],
        [],
        [],
        False,
    )


def test_reconcile_reports_a_grant_removed_behind_the_apps_back_and_fix_reapplies_it(
    rig: Rig, empty_lake_formation: None
) -> None:
    # GIVEN carol's access to all of supply_chain, whose all-tables grant someone removed
    # in Lake Formation, and untouched access to a Sales table
    granted = rig.submit(database="supply_chain")
    rig.submit(database="sales_orders", table="orders")
    [gone] = [spec for spec in plan(rig, granted) if "Table" in spec.resource]
    revoke_behind_the_apps_back(gone)
    # WHEN reconcile runs without --fix
    report = rig.lifecycle.reconcile(fix=False)
    # THEN it names the request and the missing grant, audits the finding, and fixes nothing
    assert [(m["request_id"], m["grant"]) for m in report["missing"]] == [
        (granted.id, gone.to_api())
    ]
    assert (report["unexplained"], report["fixed"]) == ([], [])
    assert len(audited(rig, granted.id, Action.RECONCILE_MISSING)) == 1
    assert not holds(gone)
    # WHEN it runs with --fix
    fixed = rig.lifecycle.reconcile(fix=True)
    # THEN the grant is re-applied and the fix audited, and the next check is clean
    assert [(f["request_id"], f["fixed"]) for f in fixed["fixed"]] == [(granted.id, True)]
    assert holds(gone)
    [event] = audited(rig, granted.id, Action.RECONCILE_FIXED)
    assert event.details["call"] == gone.to_api()
    assert rig.lifecycle.reconcile(fix=False)["missing"] == []


def test_reconcile_reports_grants_made_by_hand_and_never_touches_them(
    rig: Rig, empty_lake_formation: None
) -> None:
    # GIVEN carol's granted access, plus two grants made by hand in the console: one to an
    # account no request names, and an extra permission on carol's granted table
    granted = rig.submit(database="supply_chain", table="inventory")
    stranger = fresh_account()
    salaries = {"Table": {"CatalogId": CENTRAL, "DatabaseName": "hr_people", "Name": "salaries"}}
    [inventory] = [spec.resource for spec in plan(rig, granted)]
    lf = lake_formation()
    lf.grant_permissions(
        Principal={"DataLakePrincipalIdentifier": stranger},
        Resource=salaries,
        Permissions=["SELECT"],
    )
    lf.grant_permissions(
        Principal={"DataLakePrincipalIdentifier": rig.account},
        Resource=inventory,
        Permissions=["ALTER"],
    )
    # WHEN reconcile runs, even with --fix
    report = rig.lifecycle.reconcile(fix=True)
    # THEN both are reported as unexplained, nothing is missing, and both grants stay
    found = {
        (u["account"], json.dumps(u["resource"]), tuple(u["permissions"]))
        for u in report["unexplained"]
    }
    assert found == {
        (stranger, json.dumps(salaries), ("SELECT",)),
        (rig.account, json.dumps(inventory), ("ALTER",)),
    }
    assert (report["missing"], report["fixed"]) == ([], [])
    assert [e["Permissions"] for e in held(stranger)] == [["SELECT"]]
    assert "ALTER" in held(rig.account)[0]["Permissions"]
    assert len(audited(rig, None, Action.RECONCILE_UNEXPLAINED)) == 1
    assert holds_all(rig, granted)


# 7. The periodic job: idempotent, reminders, and grant retries ---------------------------------


def due_work(rig: Rig, wired: Services) -> tuple[AccessRequest, AccessRequest]:
    """Access that is due to expire, and a request due for an owner reminder (not yet admins)."""
    remind_after = timedelta(hours=wired.settings.remind_after_hours)
    expiring = rig.submit(
        database="supply_chain", table="inventory", duration=remind_after - timedelta(hours=1)
    )
    waiting = rig.submit(database="sales_orders", table="customers")
    rig.clock.advance(remind_after + timedelta(minutes=1))
    return expiring, waiting


def test_second_tick_in_a_row_does_nothing(rig: Rig, wired: Services) -> None:
    # GIVEN one expiry and one reminder due, and a first pass that did them
    expiring, waiting = due_work(rig, wired)
    first = rig.lifecycle.tick()
    assert (first.expired, first.owner_reminders) == ([expiring.id], [waiting.id])
    audit_rows, notifications = len(rig.market.audit()), len(rig.store.notifications())
    # WHEN the job runs again at once
    second = rig.lifecycle.tick()
    # THEN it does nothing, and writes nothing
    assert second == TickReport()
    assert (len(rig.market.audit()), len(rig.store.notifications())) == (
        audit_rows,
        notifications,
    )


@pytest.mark.parametrize("trial", range(THREAD_TRIALS))
def test_two_ticks_at_once_do_each_thing_once(wired: Services, tmp_path: Path, trial: int) -> None:
    # GIVEN two processes' services over one store, with one expiry and one reminder due
    recorder, clock, account = RecordingNotifier(), Clock(START), fresh_account()
    one, other = (
        make_rig(wired, tmp_path, account=account, clock=clock, notifier=recorder) for _ in range(2)
    )
    expiring, waiting = due_work(one, wired)
    # WHEN both run the job at the same moment
    barrier = threading.Barrier(2)

    def tick(rig: Rig) -> TickReport:
        barrier.wait(timeout=10)
        return rig.lifecycle.tick()

    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = [f.result() for f in [pool.submit(tick, one), pool.submit(tick, other)]]
    # THEN between them the access expired once and the owner was reminded once
    assert [r for report in reports for r in report.expired] == [expiring.id]
    assert [r for report in reports for r in report.owner_reminders] == [waiting.id]
    for action in (Action.EXPIRY_DUE, Action.REVOKE_SUCCEEDED, Action.REMINDER_DUE):
        assert len(audited(one, None, action)) == 1
    assert held(account) == []
    # AND every notification went out exactly once
    rows = one.store.notifications()
    assert [row["kind"] for row in rows].count("owner_reminder") == 1
    assert {row["status"] for row in rows} == {"sent"}
    assert len(recorder.sent) == len(rows)


def test_pending_request_reminds_the_owner_then_the_admins_once_each(
    rig: Rig, wired: Services, inbox: Callable[[str], Inbox]
) -> None:
    # GIVEN carol's request waiting for sam since START, and MESH_REMIND_AFTER_HOURS
    waiting = rig.submit(database="sales_orders", table="customers")
    remind_after = timedelta(hours=wired.settings.remind_after_hours)
    owner = inbox(producer_topic(wired, SALES))

    def tick_at(at: datetime) -> tuple[list[str], list[str]]:
        rig.clock.now = at
        report = rig.lifecycle.tick()
        return report.owner_reminders, report.admin_reminders

    # WHEN the job runs before the setting, after it twice, and after twice it twice
    runs = [
        tick_at(START + remind_after - timedelta(minutes=1)),
        tick_at(START + remind_after + timedelta(minutes=1)),
        tick_at(START + remind_after + timedelta(minutes=2)),
        tick_at(START + 2 * remind_after + timedelta(minutes=1)),
        tick_at(START + 2 * remind_after + timedelta(minutes=2)),
    ]
    # THEN the owner is reminded once, then the admins once
    assert runs == [([], []), ([waiting.id], []), ([], []), ([], [waiting.id]), ([], [])]
    reminders = [
        (row["kind"], row["target"], row["status"])
        for row in rig.store.notifications(request_id=waiting.id)
        if row["kind"] != "approval_request"
    ]
    assert reminders == [
        ("owner_reminder", SALES, "sent"),
        ("admin_reminder", wired.settings.admin_topic_arn, "sent"),
    ]
    # AND the owner's reminder reaches the producer topic with links that still work
    [message] = owner.read()
    assert waiting.id in message["Message"]
    approve = decision_links(rig, message["Message"])[LinkAction.APPROVE]
    assert rig.market.decide_by_link(approve, "sam", action="approve").status is Status.GRANTED


def test_decided_request_gets_no_reminder(rig: Rig, wired: Services) -> None:
    # GIVEN a request sam denied at once
    waiting = rig.submit(database="sales_orders", table="customers")
    rig.market.deny(waiting.id, "sam", comment="Not for this purpose")
    # WHEN the job runs long after the reminder settings
    rig.clock.advance(timedelta(hours=3 * wired.settings.remind_after_hours))
    report = rig.lifecycle.tick()
    # THEN nobody is reminded
    assert (report.owner_reminders, report.admin_reminders) == ([], [])


@pytest.mark.parametrize(
    ("code", "retried"),
    [
        # transient: throttling, trouble on the AWS side, a concurrent change
        ("ThrottlingException", True),
        ("InternalServiceException", True),
        ("OperationTimeoutException", True),
        ("ConcurrentModificationException", True),
        # permanent: only a person can fix these
        ("AccessDeniedException", False),
        ("InvalidInputException", False),
        ("EntityNotFoundException", False),
    ],
)
def test_tick_retries_a_failed_grant_only_when_the_cause_was_transient(
    flaky_rig: Rig, flaky: FlakyLakeFormation, code: str, retried: bool
) -> None:
    rig = flaky_rig
    # GIVEN a clean table request whose grant failed once with ``code``
    flaky.code, flaky.grant_failures = code, 1
    failed = rig.submit(database="supply_chain", table="inventory")
    assert (failed.status, failed.error_code) == (Status.FAILED, code)
    # WHEN the periodic job runs
    report = rig.lifecycle.tick()
    # THEN it retried (and granted) only a transient failure
    assert (report.grants_retried == [failed.id]) is retried
    assert rig.status(failed.id) is (Status.GRANTED if retried else Status.FAILED)
    assert holds_all(rig, failed) is retried


def test_tick_makes_at_most_the_grant_retry_limit_of_attempts(
    flaky_rig: Rig, flaky: FlakyLakeFormation, wired: Services
) -> None:
    rig = flaky_rig
    # GIVEN a grant that Lake Formation keeps throttling
    flaky.grant_failures = 1_000
    failed = rig.submit(database="supply_chain", table="inventory")
    limit = wired.settings.grant_retry_limit
    # WHEN the periodic job runs more often than MESH_GRANT_RETRY_LIMIT
    for _ in range(limit + 3):
        rig.lifecycle.tick()
    # THEN the job made MESH_GRANT_RETRY_LIMIT attempts, and the request is left failed
    attempts = rig.market.audit(
        request_id=failed.id, actor=TICK_ACTOR, action=Action.GRANT_ATTEMPTED.value
    )
    assert len(attempts) == limit
    assert rig.status(failed.id) is Status.FAILED


# 8. CLI: request --days, revoke, tick, reconcile ---------------------------------------------
#
# The CLI runs in-process: it parses its arguments and reads its settings as always, and its
# build() hands it the rig's services, so its verbs run over the rig's store and clock.


def runner(
    rig: Rig,
    wired: Services,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """Run ``python -m mesh ARGS`` in-process in aws mode over the rig's store and clock."""
    env = {
        "MESH_MODE": "aws",
        "MESH_DB": str(rig.store.path),
        "MESH_USERS": str(DEMO_USERS),
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def build_from_rig(settings: Any, *, endpoint: str | None = None) -> Services:
        assert settings.db_path == rig.store.path
        return replace(
            wired,
            settings=settings,
            marketplace=rig.market,
            lifecycle=rig.lifecycle,
            outbox=rig.outbox,
        )

    return in_process_cli(monkeypatch, capsys, build_from_rig)


@pytest.fixture
def cli(
    rig: Rig, wired: Services, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """The CLI over this test's rig."""
    return runner(rig, wired, monkeypatch, capsys)


@pytest.fixture(scope="module")
def refusals(
    wired: Services, seeded: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Rig, dict[str, str]]:
    """One store with a granted and a pending request, shared by tests that are refused."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in moto_env(seeded).items():
            patch.setenv(name, value)
        world = make_rig(
            wired, tmp_path_factory.mktemp("refusals"), account=fresh_account(), clock=Clock(START)
        )
        made = {
            "granted": world.submit(database="supply_chain", table="inventory").id,
            "pending": world.submit(database="sales_orders", table="customers").id,
        }
    return world, made


@pytest.fixture
def refused_cli(
    refusals: tuple[Rig, dict[str, str]],
    wired: Services,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """The CLI over the shared store: use it only for refusals."""
    return runner(refusals[0], wired, monkeypatch, capsys)


def request_argv(rig: Rig, *extra: str) -> list[str]:
    """carol asks for supply_chain.inventory (no PII: granted at once)."""
    argv = ["request", "--as", "carol", "--database", "supply_chain", "--table", "inventory"]
    return [*argv, "--account", rig.account, "--reason", REASON, *extra, "--json"]


def test_cli_request_with_days_expires_that_many_days_after_the_grant(cli: Cli, rig: Rig) -> None:
    # WHEN carol asks for a clean table for 30 days
    outcome = cli(*request_argv(rig, "--days", "30"))
    # THEN it is granted at once, and expires_at is 30 days after the grant
    assert outcome.code == 0, outcome.err
    found = outcome.json()
    assert found["status"] == "granted"
    assert moment(found["expires_at"]) == rig.clock.now + timedelta(days=30)


def test_cli_request_without_days_has_a_null_expires_at(cli: Cli, rig: Rig) -> None:
    # WHEN carol asks for a clean table without --days
    outcome = cli(*request_argv(rig))
    # THEN it is granted, without end
    assert outcome.code == 0, outcome.err
    assert (outcome.json()["status"], outcome.json()["expires_at"]) == ("granted", None)


@pytest.mark.parametrize("days", ["0", "-3", "soon"])
def test_cli_request_with_days_that_are_not_a_positive_number_exits_2(
    cli: Cli, rig: Rig, days: str
) -> None:
    # WHEN carol asks with a bad --days
    outcome = cli(*request_argv(rig, f"--days={days}"))
    # THEN it is invalid input, and nothing was asked for
    assert outcome.code == 2
    assert_one_sentence_on_stderr(outcome)
    assert rig.store.requests() == []


def test_cli_revoke_ends_granted_access_and_prints_the_request(cli: Cli, rig: Rig) -> None:
    # GIVEN carol's granted access
    granted = rig.submit(database="supply_chain", table="inventory")
    # WHEN sam revokes it through the CLI
    outcome = cli("revoke", granted.id, "--as", "sam", "--comment", "The project ended", "--json")
    # THEN it exits 0 and prints the revoked request, and Lake Formation no longer holds it
    assert outcome.code == 0, outcome.err
    assert (outcome.json()["id"], outcome.json()["status"]) == (granted.id, "revoked")
    assert held(rig.account) == []


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        # an unknown user first (3), then a missing or blank comment (2), then an unknown
        # request (4)
        (["{granted}", "--as", "nobody", "--comment", " "], 3),
        (["{granted}", "--as", "sam", "--comment", "  "], 2),
        (["{granted}", "--as", "sam"], 2),
        ([UNKNOWN_REQUEST, "--as", "carol", "--comment", "Done"], 4),
        # not allowed (3): the requester, an owner of another product
        (["{granted}", "--as", "carol", "--comment", "Done"], 3),
        (["{granted}", "--as", "mia", "--comment", "Done"], 3),
        # the wrong state (5): not granted
        (["{pending}", "--as", "sam", "--comment", "Done"], 5),
    ],
)
def test_cli_revoke_refusal_exits_with_its_code_and_changes_nothing(
    refused_cli: Cli, refusals: tuple[Rig, dict[str, str]], argv: list[str], code: int
) -> None:
    world, made = refusals
    # WHEN the CLI is asked to revoke
    outcome = refused_cli("revoke", *[arg.format(**made) for arg in argv], "--json")
    # THEN it exits with the refusal's code and one sentence, and nothing changes
    assert outcome.code == code
    assert_one_sentence_on_stderr(outcome)
    assert world.status(made["granted"]) is Status.GRANTED
    assert world.status(made["pending"]) is Status.PENDING_APPROVAL
    assert can_select(world.account, "supply_chain", "inventory")


def test_cli_tick_expires_due_access_once_and_prints_what_it_did(cli: Cli, rig: Rig) -> None:
    # GIVEN one day of access, a day and a minute old
    due = rig.submit(database="supply_chain", table="inventory", duration=timedelta(days=1))
    rig.clock.advance(timedelta(days=1, minutes=1))
    # WHEN the job runs through the CLI, twice
    first, second = cli("tick", "--json"), cli("tick", "--json")
    # THEN the first run expires it and says so, and the second has nothing to do
    assert (first.code, second.code) == (0, 0)
    assert (first.json()["expired"], second.json()["expired"]) == ([due.id], [])
    assert rig.status(due.id) is Status.EXPIRED
    assert held(rig.account) == []


def test_cli_reconcile_reports_a_missing_grant_and_fix_reapplies_it(
    cli: Cli, rig: Rig, empty_lake_formation: None
) -> None:
    # GIVEN carol's granted access, whose grant someone removed in Lake Formation
    granted = rig.submit(database="supply_chain", table="inventory")
    [spec] = plan(rig, granted)
    revoke_behind_the_apps_back(spec)
    # WHEN reconcile runs, then reconcile --fix, then reconcile again
    found = cli("reconcile", "--json")
    fixed = cli("reconcile", "--fix", "--json")
    clean = cli("reconcile", "--json")
    # THEN the first reports it, the fix re-applies it, and the last finds nothing
    assert (found.code, fixed.code, clean.code) == (0, 0, 0)
    assert [m["request_id"] for m in found.json()["missing"]] == [granted.id]
    assert [(f["request_id"], f["fixed"]) for f in fixed.json()["fixed"]] == [(granted.id, True)]
    assert (clean.json()["missing"], clean.json()["unexplained"]) == ([], [])
    assert holds(spec)


def test_revoke_notice_says_which_comment_is_the_revokes_and_which_the_approvals(
    rig: Rig,
) -> None:
    from mesh import notices

    # GIVEN carol's PII request approved by sam with a comment, then revoked with another
    request = rig.submit(database="sales_orders", table="customers")
    rig.market.approve(request.id, "sam", comment="OK for churn work")
    revoked = rig.lifecycle.revoke(request.id, "sam", comment="Project finished early")
    # WHEN the requester's notice is written
    body = notices.decision(revoked, outside_org=False).body
    # THEN each comment says whose and why
    assert "Why sam revoked it: Project finished early" in body
    assert "When sam approved it: OK for churn work" in body


def test_a_catalog_sync_due_runs_on_one_tick_while_another_holds_its_lease(
    services: Services,
) -> None:
    # GIVEN a catalog never synced, and another host's tick holding the sync's lease
    store, now = services.marketplace.store, services.marketplace.clock()
    later = iso(now + timedelta(minutes=5))
    assert store.claim_lease("catalog-sync", holder="other-host", now=iso(now), until=later)
    # WHEN this tick runs THEN it leaves the sync to the other, doing the rest of its pass
    first = services.lifecycle.tick()
    assert first.catalog_synced is None and not first.errors
    # WHEN the other releases it THEN the next tick syncs, and frees the lease after
    store.release_lease("catalog-sync", holder="other-host")
    second = services.lifecycle.tick()
    assert second.catalog_synced is not None and second.catalog_synced["tables"] == 44
    assert store.claim_lease("catalog-sync", holder="other-host", now=iso(now), until=later)
