"""The approval policy file: levels, rules, steps, validation, and multi-step decisions.

Pure rules are truth tables; decisions run through the real use cases and a real SQLite
store, over an in-memory catalog and a recording Lake Formation port (the moto round trips
of the shipped examples are in test_policy_examples.py).
"""

from __future__ import annotations

import re
import tempfile
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh import approval, policy
from mesh.approval import ApprovalPolicy, PolicyError
from mesh.errors import Conflict, Forbidden, InvalidInput, MeshError
from mesh.lifecycle import Lifecycle
from mesh.models import (
    OWNER_STEP,
    AccessRequest,
    Action,
    Column,
    Database,
    GrantSpec,
    Role,
    Scope,
    Status,
    Step,
    Table,
    User,
)
from mesh.store import Store
from mesh.workflow import Marketplace
from tests.support import Users, one_by_one

PRODUCER = "111111111111"
OTHER_PRODUCER = "222222222222"
CONSUMER = "444455556666"
PARTNER = "777788889999"
CENTRAL = "123456789012"

FOUR_LEVELS = """
version: 1
levels:
  - name: public
    match: {pii_flag: [false, no, "0", n, ""], classification: [public]}
  - name: internal
    match: {classification: [internal]}
  - name: pii
    match: {pii_flag: [true, yes, "1", y], classification: [confidential]}
  - name: restricted
    match: {classification: [restricted, secret]}
unknown: {pii_flag: pii}
groups:
  privacy-office: {members: [priya]}
  stewards: {members: [sten, stella, stu]}
  governance: {members: [gil]}
domains:
  sales: ["111111111111", "444455556666"]
admins_approve: false
rules:
  public: {auto_approve: true}
  internal:
    steps: [{approvers: owner}]
    auto_approve_if:
      same_domain: true
      allow:
        - {account: "777788889999", databases: ["shop*"], tables: ["crm.accounts"]}
  pii:
    steps:
      - {approvers: owner, escalate: {after_hours: 48, to: governance}}
      - {approvers: privacy-office}
    max_days: 90
    min_reason_length: 10
  restricted:
    steps: [{approvers: stewards, quorum: 2}]
    max_days: 30
    require_duration: true
"""


def four_levels() -> ApprovalPolicy:
    return approval.loads(FOUR_LEVELS, source="four-levels.yaml")


def col(name: str, **params: str) -> Column:
    return Column(name=name, parameters=dict(params))


def db(name: str = "shop", owner: str = PRODUCER, **params: str) -> Database:
    return Database(name=name, parameters={"data_owner": owner, **params})


def tb(name: str = "t", *columns: Column, database: str = "shop", **params: str) -> Table:
    return Table(database=database, name=name, parameters=dict(params), columns=columns)


def judge(
    rules: ApprovalPolicy,
    database: Database,
    table: Table,
    *,
    account: str | None = CONSUMER,
    columns: tuple[str, ...] | None = None,
) -> approval.Verdict:
    scope = Scope(database=database.name, table=table.name, columns=columns)
    return approval.evaluate(rules, scope, database, [table], account=account)


# Levels: the strictest in scope wins, unknown values fail closed ------------------------------

LEVELS = [
    # nothing the policy reads: the base level
    ({}, {}, {}, "public"),
    ({}, {}, {"note": "hello"}, "public"),
    # values listed under the base level keep it there
    ({"pii_flag": "false"}, {"classification": "public"}, {"pii_flag": "no"}, "public"),
    # each level from each place: database, table, column
    ({"classification": "internal"}, {}, {}, "internal"),
    ({}, {"classification": "internal"}, {}, "internal"),
    ({}, {}, {"classification": "internal"}, "internal"),
    ({}, {}, {"pii_flag": " Yes "}, "pii"),
    ({}, {"classification": "CONFIDENTIAL"}, {}, "pii"),
    ({"classification": "secret"}, {}, {}, "restricted"),
    # the strictest of several wins, wherever it sits
    ({"classification": "internal"}, {}, {"classification": "restricted"}, "restricted"),
    ({"pii_flag": "true"}, {"classification": "internal"}, {}, "pii"),
    # an unrecognised value: the parameter's unknown level, else the strictest level
    ({}, {}, {"pii_flag": "partial"}, "pii"),
    ({}, {"classification": "tbd"}, {}, "restricted"),
    ({}, {"classification": ""}, {}, "restricted"),
]  # fmt: skip


@pytest.mark.parametrize(("db_params", "table_params", "column_params", "level"), LEVELS)
def test_level_is_the_strictest_in_scope_and_unknown_values_fail_closed(
    db_params: dict[str, str],
    table_params: dict[str, str],
    column_params: dict[str, str],
    level: str,
) -> None:
    # GIVEN a catalog entry with parameters at database, table and column level
    database = db(**db_params)
    table = tb("t", col("id"), col("x", **column_params), **table_params)
    # WHEN the four-level policy judges a table request
    verdict = judge(four_levels(), database, table)
    # THEN the level is the strictest any parameter in scope means
    assert verdict.level == level


def test_unrecognised_value_is_named_as_such_in_the_reason() -> None:
    verdict = judge(four_levels(), db(), tb("t", col("x", classification="tbd")))
    assert "column x has classification='tbd', an unrecognised value treated as restricted" in (
        verdict.reason
    )


def test_a_column_subset_is_judged_only_on_the_columns_it_keeps() -> None:
    # GIVEN a table with one restricted and one pii column
    table = tb("t", col("id"), col("ssn", classification="restricted"), col("email", pii_flag="y"))
    # WHEN subsets are judged
    # THEN each is at the level of what it keeps
    assert judge(four_levels(), db(), table, columns=("id",)).level == "public"
    assert judge(four_levels(), db(), table, columns=("id", "email")).level == "pii"
    assert judge(four_levels(), db(), table).level == "restricted"
    keep, left_out = approval.without_sensitive(four_levels(), table)
    assert (keep, left_out) == (("id",), ("ssn", "email"))


def test_a_database_request_is_at_the_strictest_level_of_any_table_in_it() -> None:
    database = db()
    tables = [tb("a", col("id")), tb("b", col("x", classification="secret"))]
    verdict = approval.evaluate(
        four_levels(), Scope(database="shop"), database, tables, account=CONSUMER
    )
    assert verdict.level == "restricted"
    assert verdict.sensitive_columns == ("b.x",)


# Rules: what each level does --------------------------------------------------------------

RULES = [
    # level, target account, granted at once?, steps' approvers
    ("public", CONSUMER, True, ()),
    ("public", PARTNER, True, ()),
    # internal: same domain as the producer, or allow-listed, is granted at once
    ("internal", CONSUMER, True, ()),
    ("internal", PRODUCER, True, ()),
    ("internal", PARTNER, True, ()),  # shop* is on the partner's allow-list
    ("internal", "999999999999", False, ("owner",)),
    # pii and restricted always ask, in their steps' order
    ("pii", CONSUMER, False, ("owner", "privacy-office")),
    ("restricted", CONSUMER, False, ("stewards",)),
]

CLASSIFIED = {
    "public": {},
    "internal": {"classification": "internal"},
    "pii": {"pii_flag": "true"},
    "restricted": {"classification": "restricted"},
}


@pytest.mark.parametrize(("level", "account", "at_once", "approvers"), RULES)
def test_each_level_grants_at_once_or_lists_its_steps(
    level: str, account: str, at_once: bool, approvers: tuple[str, ...]
) -> None:
    verdict = judge(four_levels(), db(), tb("t", col("x", **CLASSIFIED[level])), account=account)
    assert verdict.level == level
    assert (not verdict.needs_approval) is at_once
    assert tuple(s.approvers for s in verdict.steps) == approvers
    assert verdict.reason.startswith(f"level {level}: ")


def test_allow_list_names_tables_with_globs_and_never_other_accounts() -> None:
    rules = four_levels()
    internal = {"classification": "internal"}
    crm = db("crm", **internal)
    # the partner may have crm.accounts at once, but no other crm table, and nobody else may
    assert not judge(rules, crm, tb("accounts", database="crm"), account=PARTNER).needs_approval
    assert judge(rules, crm, tb("contacts", database="crm"), account=PARTNER).needs_approval
    assert judge(rules, crm, tb("accounts", database="crm"), account="999999999999").needs_approval
    # a whole-database request is never matched by a table entry
    whole = approval.evaluate(
        rules, Scope(database="crm"), crm, [tb("accounts", database="crm")], account=PARTNER
    )
    assert whole.needs_approval


def test_granted_at_once_by_a_condition_says_which_condition() -> None:
    verdict = judge(four_levels(), db(), tb("t", classification="internal"), account=CONSUMER)
    assert (
        verdict.auto_reason
        == f"account {CONSUMER} belongs to domain sales, as producer {PRODUCER} does"
    )
    assert "granted at once because" in verdict.reason


def test_explaining_for_no_account_never_applies_account_conditions() -> None:
    verdict = judge(four_levels(), db(), tb("t", classification="internal"), account=None)
    assert verdict.needs_approval


# Terms: reason length and duration --------------------------------------------------------

TODAY = date(2026, 11, 29)
TERMS = [
    # level, duration, until, reason, refusal (None: accepted)
    ("pii", timedelta(days=90), None, "a long enough reason", None),
    ("pii", None, None, "a long enough reason", "at most 90 days"),
    ("pii", timedelta(days=91), None, "a long enough reason", "at most 90 days"),
    ("pii", timedelta(days=30), None, "too short", "at least 10 characters"),
    ("restricted", None, None, "reason", "must say how long"),
    ("restricted", None, TODAY + timedelta(days=30), "reason", None),
    ("restricted", None, TODAY + timedelta(days=31), "reason", "at most 30 days"),
    ("public", None, None, "x", None),
]


@pytest.mark.parametrize(("level", "duration", "until", "reason", "refusal"), TERMS)
def test_level_terms_bound_duration_and_reason(
    level: str,
    duration: timedelta | None,
    until: date | None,
    reason: str,
    refusal: str | None,
) -> None:
    verdict = judge(four_levels(), db(), tb("t", col("x", **CLASSIFIED[level])))
    check = lambda: approval.check_request(  # noqa: E731
        verdict, duration=duration, until=until, reason=reason, today=TODAY
    )
    if refusal is None:
        check()
    else:
        with pytest.raises(InvalidInput, match=refusal):
            check()


# The built-in default is the reference design -----------------------------------------------


def test_the_shipped_default_file_is_the_built_in_default() -> None:
    shipped = approval.load(Path("examples/policies/default.yaml"))
    assert shipped.model_dump() == approval.DEFAULT.model_dump()


def test_yaml_words_yes_no_on_off_stay_words() -> None:
    rules = approval.loads(
        "version: 1\nlevels: [{name: a, match: {p: [no, off]}}, {name: b, match: {p: [yes, on]}}]\n"
        "rules: {a: {auto_approve: true}, b: {auto_approve: true}}"
    )
    assert rules.levels[0].match["p"] == ("no", "off")
    assert rules.level_of("p", " YES ") == ("b", False)


# Validation: one sentence, naming the key path ------------------------------------------------

GOOD = {
    "version": 1,
    "levels": [{"name": "public"}, {"name": "pii", "match": {"pii_flag": ["true"]}}],
    "groups": {"privacy-office": {"members": ["priya"]}},
    "rules": {
        "public": {"auto_approve": True},
        "pii": {"steps": [{"approvers": "owner"}, {"approvers": "privacy-office"}]},
    },
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one key path set (a value of DELETE removes it)."""
    import copy

    document = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(last) if last.isdigit() else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return document


DELETE = object()

INVALID = [
    # the shape
    (with_("version", 2), "version", "input should be 1"),
    (with_("version", DELETE), "version", "this key is required"),
    (with_("levels", []), "levels", "at least 1 item"),
    (with_("rules", DELETE), "rules", "this key is required"),
    (with_("colour", "red"), "colour", "this key is unknown"),
    (with_("rules.pii.auto_aprove", True), "rules.pii.auto_aprove", "this key is unknown"),
    (with_("levels.0.name", "Public"), "levels[0].name", "is not a name"),
    (with_("levels.1.match", ["pii_flag"]), "levels[1].match", "must map a catalog parameter"),
    (with_("levels.1.match", {"pii_flag": "true"}), "levels[1].match", "must be a list"),
    (with_("groups.privacy-office.members", "priya"), "groups.privacy-office.members",
     "must be a list of usernames"),
    (with_("groups.privacy-office.topic_arn", "privacy"), "groups.privacy-office.topic_arn",
     "not an SNS topic ARN"),
    (with_("rules.pii.steps.0.quorum", 0), "rules.pii.steps[0].quorum", "is not a quorum"),
    (with_("rules.pii.steps.0.quorum", "most"), "rules.pii.steps[0].quorum", "is not a quorum"),
    (with_("rules.pii.steps.0.quorum", True), "rules.pii.steps[0].quorum", "is not a quorum"),
    (with_("rules.pii.steps.0.escalate", {"after_hours": 0, "to": "privacy-office"}),
     "rules.pii.steps[0].escalate.after_hours", "greater than 0"),
    (with_("rules.pii.max_days", 0), "rules.pii.max_days", "greater than or equal to 1"),
    (with_("rules.pii.max_days", 4000), "rules.pii.max_days", "less than or equal to 3650"),
    (with_("rules.pii.min_reason_length", -1), "rules.pii.min_reason_length", "greater than"),
    (with_("rules.pii.require_duration", "sometimes"), "rules.pii.require_duration",
     "valid boolean"),
    (with_("rules.pii.auto_approve_if", {"allow": [{"account": "123"}]}),
     "rules.pii.auto_approve_if.allow[0].account", "not a 12-digit account id"),
    # the cross-references
    (with_("levels.1.name", "public"), "levels[1].name", "defined twice"),
    (with_("levels.0.match", {"pii_flag": ["true"]}), "levels[1].match.pii_flag",
     "also listed under level 'public'"),
    (with_("unknown", {"classification": "pii"}), "unknown.classification",
     "no level matches this parameter"),
    (with_("unknown", {"pii_flag": "secret"}), "unknown.pii_flag", "'secret' is not a level"),
    (with_("groups.Owners", {"members": []}), "groups.Owners", "a group name is"),
    (with_("domains", {"sales": ["1234"]}), "domains", "not a 12-digit account id in quotes"),
    (with_("domains", {"sales": [123456789012]}), "domains", "quote ids in YAML"),
    (with_("rules.public", DELETE), "rules.public", "every level needs a rule"),
    (with_("rules.secret", {"auto_approve": True}), "rules.secret", "there is no level 'secret'"),
    (with_("rules.pii.auto_approve", True), "rules.pii", "not both"),
    (with_("rules.pii.steps", []), "rules.pii", "at least one approval step"),
    (with_("rules.pii.steps.1.approvers", "privacy"), "rules.pii.steps[1].approvers",
     "neither owner nor a group"),
    (with_("rules.pii.steps.0.escalate", {"after_hours": 4, "to": "nobody"}),
     "rules.pii.steps[0].escalate.to", "'nobody' is not a group"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "path", "what"), INVALID, ids=[i[1] for i in INVALID])
def test_every_validation_error_names_the_key_path_in_one_sentence(
    document: dict[str, Any], path: str, what: str
) -> None:
    # WHEN a policy with one problem is parsed
    with pytest.raises(PolicyError) as raised:
        approval.parse(document, source="p.yaml")
    # THEN the one sentence names the file, the key path and what is wrong
    message = raised.value.message
    assert message.startswith(f"The policy file p.yaml is invalid at {path}: ")
    assert what in message
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("version: 1\nlevels: [\n", "not valid YAML"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("", "the top level must be a mapping"),
    ],
)
def test_a_file_that_is_not_a_policy_at_all_says_so(text: str, what: str) -> None:
    with pytest.raises(PolicyError, match=what):
        approval.loads(text, source="p.yaml")


def test_a_missing_file_says_it_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot be read"):
        approval.load(tmp_path / "nope.yaml")


def user(
    name: str, *roles: Role, owner_of: tuple[str, ...] = (), groups: tuple[str, ...] = ()
) -> User:
    return User(
        username=name,
        roles=frozenset(roles),
        accounts=(CONSUMER,),
        owner_of=frozenset(owner_of),
        groups=frozenset(groups),
    )


@pytest.mark.parametrize(
    ("members", "path", "what"),
    [
        (["priya", "zed"], "groups.privacy-office.members[1]", "'zed' is not in the users file"),
        (
            [],
            "rules.pii.steps[1]",
            "group 'privacy-office' has 0 members (in the policy and the users file together) but "
            "the step needs 1",
        ),
    ],
)
def test_groups_are_checked_against_the_users_file(
    members: list[str], path: str, what: str
) -> None:
    rules = approval.parse(with_("groups.privacy-office.members", members), source="p.yaml")
    people = [user("priya", Role.CONSUMER)]
    # the users file gives groups to its users; the policy's members are merged the same way
    people = [
        replace(u, groups=frozenset({"privacy-office"}) if u.username in members else u.groups)
        for u in people
    ]
    with pytest.raises(PolicyError) as raised:
        approval.check_users(rules, people, source="p.yaml")
    assert raised.value.message.startswith(f"The policy file p.yaml is invalid at {path}: ")
    assert what in raised.value.message


def test_a_quorum_larger_than_its_group_is_refused() -> None:
    rules = approval.parse(with_("rules.pii.steps.1.quorum", 2), source="p.yaml")
    people = [user("priya", groups=("privacy-office",))]
    with pytest.raises(
        PolicyError,
        match=r"has 1 member \(in the policy and the users file together\) but the step needs 2",
    ):
        approval.check_users(rules, people, source="p.yaml")


# Who may act on the current step ---------------------------------------------------------------

SAM = user("sam", Role.OWNER, owner_of=(PRODUCER,))
MIA = user("mia", Role.OWNER, owner_of=(OTHER_PRODUCER,))
PRIYA = user("priya", groups=("privacy-office",))
GIL = user("gil", groups=("governance",))
ADA = user("ada", Role.ADMIN)
CAROL = user("carol", Role.CONSUMER)
STEN = user("sten", groups=("stewards",))
STELLA = user("stella", groups=("stewards",))
STU = user("stu", groups=("stewards",))
PII_PLAN = (  # as four_levels() makes it: admins_approve is false
    Step(approvers="owner", escalate_after_hours=48, escalate_to="governance", admins=False),
    Step(approvers="privacy-office", admins=False),
)


def pending(step: int = 0, *, escalated: bool = False, requester: str = "carol") -> AccessRequest:
    return AccessRequest(
        id="r-1",
        status=Status.PENDING_APPROVAL,
        database="shop",
        table="t",
        account=CONSUMER,
        requester=requester,
        reason="a long enough reason",
        owner_account=PRODUCER,
        plan=PII_PLAN,
        step=step,
        escalated_at="2026-11-29T00:00:00.000Z" if escalated else None,
    )


@dataclass(frozen=True)
class Done:
    username: str


ACTS = [
    # step 1 (owner): the owner, nobody else; admins are not approvers in this policy
    (SAM, pending(0), (), True),
    (MIA, pending(0), (), False),
    (PRIYA, pending(0), (), False),
    (ADA, pending(0), (), False),
    (GIL, pending(0), (), False),
    # once escalated, the escalation group too
    (GIL, pending(0, escalated=True), (), True),
    (SAM, pending(0, escalated=True), (), True),
    # step 2 (privacy-office): its members, not the owner
    (PRIYA, pending(1), (), True),
    (SAM, pending(1), (), False),
    # nobody fills two places, and the requester never decides
    (PRIYA, pending(1), (Done("priya"),), False),
    (SAM, pending(0, requester="sam"), (), False),
    (PRIYA, pending(1, requester="priya"), (), False),
]


@pytest.mark.parametrize(("who", "request_", "done", "allowed"), ACTS)
def test_only_the_current_steps_approvers_may_act(
    who: User, request_: AccessRequest, done: tuple[Done, ...], allowed: bool
) -> None:
    assert approval.may_act(four_levels(), who, request_, PRODUCER, done) is allowed


def test_admins_act_on_any_step_the_request_was_given_with_admins_allowed() -> None:
    # GIVEN the same waiting request, its steps stored with and without admins_approve
    allowed = replace(pending(1), plan=tuple(replace(s, admins=True) for s in PII_PLAN))
    # THEN an admin may act only where the stored step allows it, and never as requester
    assert approval.may_act(four_levels(), ADA, allowed, PRODUCER, ())
    assert not approval.may_act(four_levels(), ADA, pending(1), PRODUCER, ())
    assert not approval.may_act(four_levels(), ADA, replace(allowed, requester="ada"), PRODUCER, ())


def test_nothing_is_acted_on_once_the_request_left_pending() -> None:
    decided = replace(pending(1), status=Status.GRANTED)
    assert not approval.may_act(four_levels(), PRIYA, decided, PRODUCER, ())


# Multi-step decisions through the use cases -----------------------------------------------------


@dataclass
class Catalog:
    databases: dict[str, Database]
    tables_of: dict[str, list[Table]]
    catalog_id: str = CENTRAL

    def database(self, name: str) -> Database:
        return self.databases[name]

    def table(self, database: str, name: str) -> Table:
        return next(t for t in self.tables_of[database] if t.name == name)

    def tables(self, database: str) -> list[Table]:
        return list(self.tables_of[database])


@dataclass
class RecordingGrants:
    made: list[GrantSpec] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def grant(self, spec: GrantSpec) -> dict[str, Any]:
        with self.lock:
            self.made.append(spec)
        return spec.to_api()

    def revoke(self, spec: GrantSpec) -> dict[str, Any]:
        return spec.to_api()

    def batch_revoke(self, specs: Any) -> Any:
        return one_by_one(self.revoke, specs)

    def holds(self, spec: GrantSpec) -> bool:
        return spec in self.made

    def list_permissions(self, **_: Any) -> list[dict[str, Any]]:
        return []


PEOPLE = Users({u.username: u for u in (SAM, MIA, PRIYA, GIL, ADA, CAROL, STEN, STELLA, STU)})

SHOP = {
    "shop": [
        tb("orders", col("id"), col("total")),
        tb("customers", col("id"), col("email", pii_flag="true"), col("city")),
        tb("ledger", col("id"), col("amount"), classification="restricted"),
    ]
}


@dataclass
class Clock:
    now: datetime = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def make_market(
    path: Path, rules: ApprovalPolicy, *, users: Users = PEOPLE, clock: Clock | None = None
) -> tuple[Marketplace, RecordingGrants]:
    store = Store(path)
    store.migrate()
    grants = RecordingGrants()
    market = Marketplace(
        store=store,
        catalog=Catalog({"shop": db()}, SHOP),
        grants=grants,
        users=users,
        rules=rules,
        clock=clock or Clock(),
    )
    return market, grants


@pytest.fixture
def market(tmp_path: Path) -> Marketplace:
    return make_market(tmp_path / "mesh.db", four_levels())[0]


def ask(market: Marketplace, table: str, **options: Any) -> AccessRequest:
    return market.submit(
        "carol",
        database="shop",
        table=table,
        account=CONSUMER,
        reason="quarterly churn analysis",
        duration=timedelta(days=30),
        **options,
    )


def test_two_steps_run_in_order_and_only_the_last_approval_grants(market: Marketplace) -> None:
    # GIVEN a pii request: the owner, then the privacy office
    request = ask(market, "customers")
    assert request.status is Status.PENDING_APPROVAL
    assert market.progress(request) == "step 1 of 2: waiting for owner, 0 of 1"
    # THEN only the owner sees it, and the privacy office may not jump ahead
    assert [i.request.id for i in market.pending_for("sam")] == [request.id]
    assert market.pending_for("priya") == []
    with pytest.raises(Forbidden, match="step 1 of 2"):
        market.approve(request.id, "priya")
    # WHEN the owner approves, the request waits at step 2 for the privacy office
    after_owner = market.approve(request.id, "sam", comment="fine by sales")
    assert after_owner.status is Status.PENDING_APPROVAL
    assert after_owner.step == 1
    assert market.progress(after_owner) == (
        "step 2 of 2: owner approved (sam); waiting for privacy-office, 0 of 1"
    )
    assert market.pending_for("sam") == []
    assert [i.request.id for i in market.pending_for("priya")] == [request.id]
    # WHEN the privacy office approves, it is granted, once
    granted = market.approve(request.id, "priya")
    assert granted.status is Status.GRANTED
    assert granted.decided_by == "priya"
    # AND every approval is recorded with who, which step, when and the comment
    approvals = market.store.approvals(request.id)
    assert [(a.username, a.step, a.comment) for a in approvals] == [
        ("sam", 0, "fine by sales"),
        ("priya", 1, ""),
    ]
    actions = [(e.actor, e.action) for e in market.audit(request_id=request.id)]
    assert ("sam", Action.APPROVED.value) in actions
    assert ("policy", Action.STEP_COMPLETED.value) in actions
    assert ("priya", Action.APPROVED.value) in actions


def test_a_deny_at_any_step_ends_the_request(market: Marketplace) -> None:
    request = ask(market, "customers")
    market.approve(request.id, "sam")
    denied = market.deny(request.id, "priya", comment="no legal basis")
    assert denied.status is Status.DENIED
    with pytest.raises(Conflict):
        market.approve(request.id, "priya")


def test_two_of_three_stewards_and_nobody_twice(
    tmp_path: Path,
) -> None:
    market, grants = make_market(tmp_path / "mesh.db", four_levels())
    request = ask(market, "ledger")
    assert market.progress(request) == "step 1 of 1: waiting for stewards, 0 of 2"
    first = market.approve(request.id, "sten")
    assert first.status is Status.PENDING_APPROVAL
    assert market.progress(first) == "step 1 of 1: waiting for stewards, 1 of 2"
    # the same steward cannot fill the second place, and no longer sees the request
    with pytest.raises(Conflict, match="already approved"):
        market.approve(request.id, "sten")
    assert market.pending_for("sten") == []
    assert [i.request.id for i in market.pending_for("stella")] == [request.id]
    assert grants.made == []
    # a second steward completes it
    assert market.approve(request.id, "stella").status is Status.GRANTED
    assert len(grants.made) == 1


def test_all_counts_every_approver_but_the_requester(tmp_path: Path) -> None:
    # GIVEN a step that needs all stewards, and a requester who is a steward too
    rules = approval.parse(with_("rules.pii.steps", [{"approvers": "stewards", "quorum": "all"}])
                           | {"groups": {"stewards": {}}})  # fmt: skip
    people = Users({**PEOPLE.users, "carol": replace(CAROL, groups=frozenset({"stewards"}))})
    market, _ = make_market(tmp_path / "mesh.db", rules, users=people)
    request = ask(market, "customers")
    # THEN all means the three other stewards
    assert market.progress(request) == "step 1 of 1: waiting for stewards, 0 of 3"
    with pytest.raises(Forbidden):
        market.approve(request.id, "carol")
    market.approve(request.id, "sten")
    assert market.approve(request.id, "stella").status is Status.PENDING_APPROVAL
    assert market.approve(request.id, "stu").status is Status.GRANTED


def race(market: Marketplace, request_id: str, names: tuple[str, ...]) -> list[str]:
    """Let ``names`` approve at the same moment; their outcomes (status or refusal)."""
    barrier = threading.Barrier(len(names))
    outcomes: list[str] = []

    def approve(name: str) -> None:
        barrier.wait()
        try:
            outcomes.append(market.approve(request_id, name).status.value)
        except MeshError as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=approve, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


@pytest.mark.parametrize("trial", range(5))
def test_three_stewards_at_once_complete_a_two_place_step_exactly_once(
    tmp_path: Path, trial: int
) -> None:
    # GIVEN a restricted request that needs two of three stewards
    market, grants = make_market(tmp_path / "mesh.db", four_levels())
    request = ask(market, "ledger")
    # WHEN all three approve at the same moment
    outcomes = race(market, request.id, ("sten", "stella", "stu"))
    # THEN it is granted once, with one grant call; two approvals count, the third is refused
    final = market.store.get(request.id)
    assert final is not None and final.status is Status.GRANTED
    assert len(grants.made) == 1
    assert len(market.store.approvals(request.id)) == 2
    assert outcomes.count("Conflict") == 1


def test_escalation_opens_a_waiting_step_to_its_group_once_and_is_audited(
    tmp_path: Path,
) -> None:
    clock = Clock()
    market, _ = make_market(tmp_path / "mesh.db", four_levels(), clock=clock)
    job = Lifecycle(
        market,
        remind_after=timedelta(days=30),
        warn_before=timedelta(days=1),
        grant_retry_limit=1,
    )
    request = ask(market, "customers")
    # before the delay nothing happens, and governance may not act
    clock.now += timedelta(hours=47)
    assert job.tick().escalated == []
    assert market.pending_for("gil") == []
    # after it, one pass escalates, a second finds nothing to do
    clock.now += timedelta(hours=2)
    assert job.tick().escalated == [request.id]
    assert job.tick().escalated == []
    escalations = market.audit(request_id=request.id, action=Action.STEP_ESCALATED.value)
    assert [e.details["to"] for e in escalations] == ["governance"]
    # governance may now fill the owner's step; the privacy office still decides step 2
    assert "escalated to governance" in market.progress(market.store.get(request.id))  # type: ignore[arg-type]
    assert market.approve(request.id, "gil").step == 1
    assert market.approve(request.id, "priya").status is Status.GRANTED


def test_a_policy_edited_later_never_changes_a_waiting_requests_steps(tmp_path: Path) -> None:
    market, _ = make_market(tmp_path / "mesh.db", four_levels())
    request = ask(market, "customers")
    market.rules = approval.DEFAULT  # the file changed, and the app restarted
    stored = market.store.get(request.id)
    assert stored is not None and [s.approvers for s in stored.plan] == ["owner", "privacy-office"]
    market.approve(request.id, "sam")
    assert market.store.get(request.id).status is Status.PENDING_APPROVAL  # type: ignore[union-attr]


def test_terms_are_refused_before_anything_is_stored(market: Marketplace) -> None:
    with pytest.raises(InvalidInput, match="at least 10 characters"):
        market.submit(
            "carol",
            database="shop",
            table="customers",
            account=CONSUMER,
            reason="short",
            duration=timedelta(days=7),
        )
    with pytest.raises(InvalidInput, match="must say how long"):
        market.submit(
            "carol", database="shop", table="ledger", account=CONSUMER, reason="long enough text"
        )
    assert market.store.requests() == []


def test_explain_agrees_with_what_the_request_then_does(market: Marketplace) -> None:
    for table in ("orders", "customers", "ledger"):
        verdict = market.explain(database="shop", table=table, account=CONSUMER)
        request = ask(market, table)
        assert request.level == verdict.level
        assert request.needs_approval == verdict.needs_approval
        assert request.plan == verdict.steps
        assert request.policy_reason == verdict.reason
        assert (request.status is Status.PENDING_APPROVAL) == verdict.needs_approval


def test_migration_gives_waiting_requests_from_before_steps_the_owner_step(tmp_path: Path) -> None:
    import sqlite3

    import sqlite_utils

    from mesh.store import migrations

    # GIVEN a database migrated up to 0007 with a waiting and a granted request
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    old = sqlite_utils.Database(conn)
    migrations.apply(old, stop_before="0008_approval_steps")
    base = {"database": "shop", "account": CONSUMER, "requester": "carol", "reason": "r",
            "created_at": "2026-01-01T00:00:00.000Z"}  # fmt: skip
    old["requests"].insert(
        {"id": "r-old", "status": "pending_approval", "needs_approval": 1, **base}
    )  # type: ignore[union-attr]
    old["requests"].insert({"id": "r-done", "status": "granted", "needs_approval": 0, **base})  # type: ignore[union-attr]
    conn.close()
    # WHEN the app migrates it
    store = Store(path)
    store.migrate()
    # THEN the waiting one has the one owner step it always had, the other none
    assert store.get("r-old").plan == (OWNER_STEP,)  # type: ignore[union-attr]
    assert store.get("r-done").plan == ()  # type: ignore[union-attr]


# Invariants over random catalogs, policies and decisions ------------------------------------------

GROUP_NAMES = ("g1", "g2")
APPROVERS = ("owner", *GROUP_NAMES)
PEOPLE_POOL = {
    "sam": user("sam", Role.OWNER, owner_of=(PRODUCER,)),
    "olga": user("olga", Role.OWNER, owner_of=(PRODUCER,)),
    "ada": user("ada", Role.ADMIN),
    "carol": user("carol", Role.CONSUMER, groups=("g1",)),
    "x1": user("x1", groups=("g1",)),
    "x2": user("x2", groups=("g1", "g2")),
    "x3": user("x3", groups=("g2",)),
}


@st.composite
def policies(draw: st.DrawFn) -> ApprovalPolicy:
    def steps() -> list[dict[str, Any]]:
        count = draw(st.integers(min_value=1, max_value=3))
        out = []
        for _ in range(count):
            who = draw(st.sampled_from(APPROVERS))
            quorum = draw(st.sampled_from(["any", "all", 1, 2]))
            out.append({"approvers": who, "quorum": quorum})
        return out

    return approval.parse(
        {
            "version": 1,
            "levels": [
                {"name": "public", "match": {"pii_flag": ["false"]}},
                {"name": "pii", "match": {"pii_flag": ["true"], "classification": ["internal"]}},
                {"name": "restricted", "match": {"classification": ["restricted"]}},
            ],
            "groups": {name: {} for name in GROUP_NAMES},  # members come from the users
            "admins_approve": draw(st.booleans()),
            "rules": {
                "public": {"auto_approve": True},
                "pii": {"steps": steps()},
                "restricted": {"steps": steps()},
            },
        }
    )


FLAGS = st.sampled_from(
    [
        {},
        {"pii_flag": "true"},
        {"pii_flag": "false"},
        {"classification": "restricted"},
        {"classification": "internal"},
        {"classification": "odd"},
    ]
)


@st.composite
def shops(draw: st.DrawFn) -> tuple[Database, list[Table]]:
    tables = [
        Table(
            database="shop",
            name=f"t{i}",
            parameters=draw(FLAGS),
            columns=tuple(Column(name=f"c{j}", parameters=draw(FLAGS)) for j in range(3)),
        )
        for i in range(draw(st.integers(min_value=1, max_value=3)))
    ]
    return db(**draw(FLAGS)), tables


decisions = st.lists(
    st.tuples(st.sampled_from(sorted(PEOPLE_POOL)), st.sampled_from(["approve", "deny"])),
    max_size=8,
)


def eligible(rules: ApprovalPolicy, who: User, step: Step) -> bool:
    """The spec, restated: a step's approvers are its owners or group, or any admin if allowed."""
    if who.is_admin and rules.admins_approve:
        return True
    if step.approvers == "owner":
        return PRODUCER in who.owner_of and who.is_owner
    return step.approvers in who.groups


def spec_needed(step: Step) -> int:
    """The spec, restated: any is one, n is n, all is every owner or member but the requester."""
    if step.quorum == "any":
        return 1
    if isinstance(step.quorum, int):
        return step.quorum
    people = [
        u
        for u in PEOPLE_POOL.values()
        if u.username != "carol"
        and ((PRODUCER in u.owner_of) if step.approvers == "owner" else step.approvers in u.groups)
    ]
    return max(1, len(people))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=policies(), shop=shops(), whole=st.booleans(), moves=decisions)
def test_nothing_is_granted_unless_its_steps_are_satisfied_and_grants_are_exactly_the_scope(
    rules: ApprovalPolicy, shop: tuple[Database, list[Table]], whole: bool, moves: list[Any]
) -> None:
    database, tables = shop
    with tempfile.TemporaryDirectory() as folder:
        grants = RecordingGrants()
        store = Store(Path(folder) / "mesh.db")
        store.migrate()
        market = Marketplace(
            store=store,
            catalog=Catalog({"shop": database}, {"shop": tables}),
            grants=grants,
            users=Users(PEOPLE_POOL),
            rules=rules,
            clock=Clock(),
        )
        # GIVEN a request for a random scope under a random policy
        table = None if whole else tables[0].name
        try:
            request = market.submit(
                "carol", database="shop", table=table, account=CONSUMER, reason="analysis"
            )
        except InvalidInput:
            return  # the level's terms refused it; nothing was stored
        # WHEN random people approve and deny in a random order
        for who, verb in moves:
            try:
                if verb == "approve":
                    market.approve(request.id, who)
                else:
                    market.deny(request.id, who, comment="no")
            except MeshError:
                pass
        final = market.store.get(request.id)
        assert final is not None
        approvals = market.store.approvals(request.id)
        # THEN the requester never approved, and nobody approved twice
        assert "carol" not in {a.username for a in approvals}
        assert len({a.username for a in approvals}) == len(approvals)
        # AND every approval came from an approver of its step
        for a in approvals:
            assert eligible(rules, PEOPLE_POOL[a.username], final.plan[a.step])
        if final.status is Status.GRANTED:
            # AND a granted request had every step filled to its quorum (or needed none)
            for index, step in enumerate(final.plan):
                have = len([a for a in approvals if a.step == index])
                assert have >= spec_needed(step)
            # AND the grants made are exactly those of the requested scope
            expected = policy.grants_for(final.scope, account=CONSUMER, catalog_id=CENTRAL)
            assert grants.made == list(expected)
            assert final.scope == Scope(database="shop", table=table)
        else:
            assert grants.made == []
            assert final.status in (Status.PENDING_APPROVAL, Status.DENIED)


# What the review found: edits, stuck requests, and messages -------------------------------------


@pytest.mark.parametrize(
    ("text", "what"),
    [
        # a key given twice would silently drop half of the file
        ("version: 1\nversion: 1\n", "the key 'version' is given twice at line 2, column 1"),
        ("version: 1\nrules:\n  pii: {auto_approve: true}\n  pii: {steps: []}\n",
         "the key 'pii' is given twice at line 4, column 3"),
        # a syntax error says where
        ("version: 1\nlevels: [\n", "at line 3, column 1"),
    ],
)  # fmt: skip
def test_yaml_problems_say_where_they_are(text: str, what: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(what)):
        approval.loads(text, source="p.yaml")


def test_a_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"version: 1\n# \xff\xfe\n")
    with pytest.raises(PolicyError, match="it is not UTF-8 text"):
        approval.load(path)


@pytest.mark.parametrize(
    ("document", "path", "what"),
    [
        (with_("rules.public.auto_approve_if", {"same_domain": True}),
         "rules.public.auto_approve_if", "needs no conditions"),
        (with_("rules.pii.steps.1.escalate", {"after_hours": 1, "to": "privacy-office"}),
         "rules.pii.steps[1].escalate.to", "cannot escalate to its own approvers"),
    ],
)  # fmt: skip
def test_rules_that_say_nothing_useful_are_refused(
    document: dict[str, Any], path: str, what: str
) -> None:
    with pytest.raises(PolicyError, match=re.escape(f"at {path}: ")) as raised:
        approval.parse(document, source="p.yaml")
    assert what in raised.value.message


def test_an_owner_step_needing_more_owners_than_a_product_has_is_refused() -> None:
    rules = approval.parse(with_("rules.pii.steps.0.quorum", 2), source="p.yaml")
    people = [SAM, user("olga", Role.OWNER, owner_of=(PRODUCER,)), MIA, PRIYA]
    with pytest.raises(PolicyError, match=f"producer account {OTHER_PRODUCER} has 1"):
        approval.check_users(rules, people, source="p.yaml")


def test_a_request_no_set_of_people_could_approve_is_refused_before_it_is_stored(
    tmp_path: Path,
) -> None:
    # GIVEN sam, who owns the product and is the privacy office's only member
    rules = approval.parse(with_("groups.privacy-office.members", ["sam"]), source="p.yaml")
    alone = Users(
        {u.username: u for u in (replace(SAM, groups=frozenset({"privacy-office"})), CAROL)}
    )
    market, _ = make_market(tmp_path / "mesh.db", rules, users=alone)
    # WHEN carol asks for PII, which needs the owner and then the privacy office
    with pytest.raises(
        InvalidInput, match="could never be approved: the steps left need 2 different people"
    ):
        ask(market, "customers")
    # THEN nothing is stored
    assert market.store.requests() == []


def test_a_requester_inside_the_group_cannot_leave_a_numeric_quorum_unfillable(
    tmp_path: Path,
) -> None:
    # GIVEN stewards (three, quorum 3) and carol, who is a steward too
    rules = four_levels()
    rules = rules.model_copy(
        update={"rules": {**rules.rules, "restricted": approval.Rule(
            steps=(approval.StepRule(approvers="stewards", quorum=3),), max_days=30)}}
    )  # fmt: skip
    people = Users({**PEOPLE.users, "sten": replace(STEN, groups=frozenset())})
    people = Users({**people.users, "carol": replace(CAROL, groups=frozenset({"stewards"}))})
    market, _ = make_market(tmp_path / "mesh.db", rules, users=people)
    with pytest.raises(
        InvalidInput, match=r"step 1 .* needs 3 more different people other than carol, and has 2"
    ):
        ask(market, "ledger")


def test_editing_admins_approve_never_changes_a_waiting_request(tmp_path: Path) -> None:
    # GIVEN a request submitted while admins may not approve
    market, _ = make_market(tmp_path / "mesh.db", four_levels())
    request = ask(market, "customers")
    # WHEN the policy is changed to let admins approve, and the app restarted
    market.rules = four_levels().model_copy(update={"admins_approve": True})
    # THEN the waiting request still refuses the admin
    with pytest.raises(Forbidden):
        market.approve(request.id, "ada")
    # AND a request made now accepts one
    later = market.submit(
        "ada", database="shop", table="customers", account=PARTNER,
        reason="another team's analysis", duration=timedelta(days=7),
    )  # fmt: skip
    with pytest.raises(Forbidden):
        market.approve(later.id, "ada")  # her own
    later = ask(market, "customers", columns=["id", "email"])
    assert market.approve(later.id, "ada").step == 1


def test_a_policy_that_drops_a_group_a_request_waits_for_stops_start_up(tmp_path: Path) -> None:
    market, _ = make_market(tmp_path / "mesh.db", four_levels())
    request = ask(market, "customers")
    renamed = four_levels().model_copy(
        update={"groups": {k: v for k, v in four_levels().groups.items() if k != "privacy-office"}}
    )
    people = PEOPLE.everyone()
    with pytest.raises(PolicyError, match=f"request {request.id} still waits for group"):
        approval.check_waiting(
            renamed, market.store.requests(), users=people, approvals=market.store.approvals,
            source="p.yaml",
        )  # fmt: skip
    approval.check_waiting(
        four_levels(), market.store.requests(), users=people, approvals=market.store.approvals,
        source="p.yaml",
    )  # fmt: skip


def test_a_group_shrunk_below_what_a_waiting_request_needs_stops_start_up(tmp_path: Path) -> None:
    market, _ = make_market(tmp_path / "mesh.db", four_levels())
    request = ask(market, "ledger")  # two of three stewards
    market.approve(request.id, "sten")
    fewer = [u for u in PEOPLE.everyone() if u.username not in ("stella", "stu")]
    with pytest.raises(PolicyError, match=f"request {request.id} could no longer be approved"):
        approval.check_waiting(
            four_levels(), market.store.requests(), users=fewer,
            approvals=market.store.approvals, source="p.yaml",
        )  # fmt: skip


def test_progress_says_in_what_capacity_someone_outside_the_step_approved(tmp_path: Path) -> None:
    clock = Clock()
    market, _ = make_market(tmp_path / "mesh.db", four_levels(), clock=clock)
    job = Lifecycle(
        market, remind_after=timedelta(days=30), warn_before=timedelta(days=1), grant_retry_limit=1
    )
    request = ask(market, "customers")
    clock.now += timedelta(hours=49)
    job.tick()
    after = market.approve(request.id, "gil")
    assert market.progress(after).startswith("step 2 of 2: owner approved (gil as governance);")
    [approved] = market.audit(request_id=request.id, action=Action.APPROVED.value)
    assert approved.details["as"] == "governance"


def test_someone_who_approved_an_earlier_step_may_still_deny_a_later_one(
    tmp_path: Path,
) -> None:
    rules = approval.parse(
        with_("groups.privacy-office.members", ["priya", "sam"]), source="p.yaml"
    )
    people = Users({**PEOPLE.users, "sam": replace(SAM, groups=frozenset({"privacy-office"}))})
    market, _ = make_market(tmp_path / "mesh.db", rules, users=people)
    request = ask(market, "customers")
    market.approve(request.id, "sam")
    # one person fills one approval place, but any approver of the step may say no
    with pytest.raises(Conflict, match="someone else must give the next approval"):
        market.approve(request.id, "sam")
    assert market.deny(request.id, "sam", comment="changed my mind").status is Status.DENIED


def test_an_admin_may_deny_any_waiting_request_even_where_admins_may_not_approve(
    market: Marketplace,
) -> None:
    request = ask(market, "ledger")  # admins_approve is false in four_levels()
    with pytest.raises(Forbidden):
        market.approve(request.id, "ada")
    assert market.deny(request.id, "ada", comment="stuck; ask again").status is Status.DENIED


def test_an_approval_that_would_strand_the_later_steps_is_refused(tmp_path: Path) -> None:
    # GIVEN stewards first, then the owner; sam is a steward and the product's only owner
    rules = approval.parse(
        with_("rules.pii.steps", [{"approvers": "stewards"}, {"approvers": "owner"}])
        | {"groups": {"stewards": {"members": ["sam", "sten"]}}, "admins_approve": False},
        source="p.yaml",
    )
    people = Users({**PEOPLE.users, "sam": replace(SAM, groups=frozenset({"stewards"}))})
    market, grants = make_market(tmp_path / "mesh.db", rules, users=people)
    request = ask(market, "customers")
    # WHEN sam approves step 1, nobody would be left for step 2: refused, nothing recorded
    with pytest.raises(Conflict, match=r"would leave request .* with nobody to finish it"):
        market.approve(request.id, "sam")
    assert market.store.approvals(request.id) == []
    # THEN another steward takes step 1, and sam step 2
    assert market.approve(request.id, "sten").step == 1
    assert market.approve(request.id, "sam").status is Status.GRANTED
    assert len(grants.made) == 1


def test_all_means_every_named_approver_and_nobody_stands_in(tmp_path: Path) -> None:
    rules = approval.parse(
        with_("rules.pii.steps", [{"approvers": "stewards", "quorum": "all"}])
        | {"groups": {"stewards": {}}, "admins_approve": True},
        source="p.yaml",
    )
    market, _ = make_market(tmp_path / "mesh.db", rules)
    request = ask(market, "customers")
    with pytest.raises(Forbidden):
        market.approve(request.id, "ada")
    for name in ("sten", "stella"):
        market.approve(request.id, name)
    assert market.approve(request.id, "stu").status is Status.GRANTED


def test_retrying_a_grant_the_policy_made_at_once_meets_todays_policy_or_says_why(
    tmp_path: Path,
) -> None:
    # GIVEN a public table, granted at once, whose grant failed
    market, grants = make_market(tmp_path / "mesh.db", four_levels())

    def throttled(spec: GrantSpec) -> dict[str, Any]:
        raise RuntimeError("throttled")

    grants.grant = throttled  # type: ignore[method-assign]
    request = ask(market, "orders")
    assert market.store.get(request.id).status is Status.FAILED  # type: ignore[union-attr]
    # WHEN the policy now puts that table at a level whose terms the request does not meet
    stricter = approval.parse(
        with_("levels.1.match", {"pii_flag": ["true"], "kind": ["orders"]})
        | {"rules": {"public": {"auto_approve": True},
                     "pii": {"steps": [{"approvers": "owner"}], "min_reason_length": 200}}}
    )  # fmt: skip
    market.rules = stricter
    market.catalog.tables_of["shop"][0] = tb("orders", col("id"), kind="orders")  # type: ignore[attr-defined]
    retried = market.retry(request.id, "carol")
    # THEN it is failed with the cause, never granted and never left waiting forever
    assert retried.status is Status.FAILED
    assert retried.error_code == "PolicyChanged"
    assert "at least 200 characters" in (retried.error or "")


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ('version: 1\nlevels: [{name: a, match: {p: [x], "p ": [y]}}]\n'
         "rules: {a: {auto_approve: true}}", "parameter 'p' is listed twice"),
        ("version: 1\n? [a, b]\n: 1\n", "a key must be a plain value"),
    ],
)  # fmt: skip
def test_keys_that_collide_or_are_not_plain_are_refused(text: str, what: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(what)):
        approval.loads(text, source="p.yaml")


def test_yaml_merge_keys_work() -> None:
    merged = approval.loads(
        'version: 1\nlevels: [{name: public}, {name: pii, match: {pii_flag: ["true"]}}]\n'
        "rules:\n  public: &auto {auto_approve: true}\n  pii: {<<: *auto, auto_approve: false,"
        " steps: [{approvers: owner}]}\n"
    )
    assert [s.approvers for s in merged.rules["pii"].steps] == ["owner"]


def test_explaining_a_product_without_an_owner_says_it_cannot_be_requested(tmp_path: Path) -> None:
    market, _ = make_market(tmp_path / "mesh.db", four_levels())
    market.catalog = Catalog({"shop": Database(name="shop")}, SHOP)  # type: ignore[assignment]
    with pytest.raises(InvalidInput, match=r"no owner.*cannot be requested"):
        market.explain(database="shop", table="orders", account=CONSUMER)


def test_a_late_step_reminds_its_own_approvers_when_admins_may_not_act(tmp_path: Path) -> None:
    clock = Clock()
    market, _ = make_market(tmp_path / "mesh.db", four_levels(), clock=clock)
    sent: list[tuple[str, dict[str, Any]]] = []

    class Outbox:
        def approval_request(self, request: AccessRequest, **options: Any) -> None:
            sent.append((request.id, options))

        def retry_failed(self) -> tuple[int, int]:
            return 0, 0

    market.outbox = Outbox()  # type: ignore[assignment]
    job = Lifecycle(
        market, remind_after=timedelta(hours=1), warn_before=timedelta(days=1), grant_retry_limit=1
    )
    request = ask(market, "ledger")  # stewards only; admins_approve is false
    clock.now += timedelta(hours=3)
    report = job.tick()
    assert report.owner_reminders == [request.id] and report.admin_reminders == []
    assert [o.get("to_admins") for _, o in sent if o.get("reminder")] == [False]
