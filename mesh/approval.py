"""The approval policy: sensitivity levels, one rule per level, and ordered approval steps.

A platform team writes it as YAML and names the file in MESH_POLICY; `examples/policies/`
holds commented examples. With no file, the built-in default is the reference design's
policy: a scope with PII waits for its owner, anything else is granted at once.

Everything here is pure: the YAML is parsed and checked (pydantic for shapes, then the
cross-references), and a scope is classified and judged without any I/O. A file with any
problem is refused whole, with one sentence naming the key path; it is never half-applied.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mesh import yamlfile
from mesh.errors import InvalidInput, SettingError
from mesh.models import AccessRequest, Column, Database, Scope, Step, Table, User
from mesh.policy import only_columns, owns

OWNER = "owner"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_ACCOUNT = re.compile(r"[0-9]{12}")
_LONGEST_DAYS = 3650


class PolicyError(SettingError):
    """A policy file that cannot be used; the message names the key path."""

    def __init__(
        self, source: str, path: str, what: str, *, label: str = "The policy file"
    ) -> None:
        where = f" at {path}" if path else ""
        super().__init__(f"{label} {source} is invalid{where}: {what}.")
        self.source = source
        self.path = path
        self.what = what

    def as_setting(self) -> PolicyError:
        """The same problem, said as the setting that named the file (MESH_POLICY)."""
        return PolicyError(self.source, self.path, self.what, label="MESH_POLICY file")


# The file's shape ------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _value(raw: Any) -> str:
    """A parameter value as it is compared: stripped, lower case; YAML booleans as words."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if raw is None:
        return ""
    return str(raw).strip().lower()


def _name(raw: Any) -> str:
    text = str(raw).strip() if isinstance(raw, str) else raw
    if not isinstance(text, str) or not _NAME.fullmatch(text):
        raise ValueError(
            f"{raw!r} is not a name: use lower-case letters, digits, '-' and '_' (at most 40)"
        )
    return text


class Level(_Model):
    name: str
    match: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    _check_name = field_validator("name", mode="before")(_name)

    @field_validator("match", mode="before")
    @classmethod
    def _values(cls, raw: Any) -> Any:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise ValueError("must map a catalog parameter to a list of its values")
        out: dict[str, tuple[str, ...]] = {}
        for key, values in raw.items():
            if not isinstance(values, list):
                raise ValueError(f"the values of {key} must be a list, such as [true, yes]")
            name = str(key).strip()
            if name in out:
                raise ValueError(f"parameter {name!r} is listed twice (check the spaces)")
            out[name] = tuple(_value(v) for v in values)
        return out


class Group(_Model):
    members: tuple[str, ...] = ()
    topic_arn: str | None = None

    @field_validator("members", mode="before")
    @classmethod
    def _members(cls, raw: Any) -> Any:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise ValueError("must be a list of usernames")
        return tuple(str(m).strip().lower() for m in raw)

    @field_validator("topic_arn")
    @classmethod
    def _arn(cls, raw: str | None) -> str | None:
        if raw is not None and not raw.startswith("arn:aws:sns:"):
            raise ValueError(f"{raw!r} is not an SNS topic ARN")
        return raw


class Escalation(_Model):
    after_hours: float = Field(gt=0, le=24 * 365)
    to: str


class StepRule(_Model):
    approvers: str
    quorum: int | Literal["any", "all"] = "any"
    escalate: Escalation | None = None

    @field_validator("quorum", mode="before")
    @classmethod
    def _quorum(cls, raw: Any) -> Any:
        if isinstance(raw, str) and raw.strip().lower() in ("any", "all"):
            return raw.strip().lower()
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
            return raw
        raise ValueError(f"{raw!r} is not a quorum: use any, all, or a whole number of at least 1")


class AllowEntry(_Model):
    account: str
    databases: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()

    @field_validator("account", mode="before")
    @classmethod
    def _account(cls, raw: Any) -> Any:
        text = str(raw).strip()
        if not _ACCOUNT.fullmatch(text):
            raise ValueError(f"{raw!r} is not a 12-digit account id (quote ids in YAML)")
        return text


class AutoApproveIf(_Model):
    same_domain: bool = False
    allow: tuple[AllowEntry, ...] = ()


class Rule(_Model):
    auto_approve: bool = False
    steps: tuple[StepRule, ...] = ()
    auto_approve_if: AutoApproveIf = Field(default_factory=AutoApproveIf)
    max_days: int | None = Field(default=None, ge=1, le=_LONGEST_DAYS)
    require_duration: bool = False
    min_reason_length: int = Field(default=0, ge=0, le=1000)


class ApprovalPolicy(_Model):
    version: Literal[1]
    levels: tuple[Level, ...] = Field(min_length=1)
    unknown: dict[str, str] = Field(default_factory=dict)
    groups: dict[str, Group] = Field(default_factory=dict)
    domains: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    admins_approve: bool = True
    rules: dict[str, Rule]

    @field_validator("domains", mode="before")
    @classmethod
    def _domains(cls, raw: Any) -> Any:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise ValueError("must map a domain name to a list of 12-digit account ids")
        out: dict[str, tuple[str, ...]] = {}
        for name, accounts in raw.items():
            if not isinstance(accounts, list):
                raise ValueError(f"the accounts of domain {name} must be a list")
            for account in accounts:
                if not (isinstance(account, str) and _ACCOUNT.fullmatch(account.strip())):
                    raise ValueError(
                        f"domain {name} lists {account!r}, which is not a 12-digit account id "
                        'in quotes (quote ids in YAML: "012345678901")'
                    )
            out[str(name)] = tuple(a.strip() for a in accounts)
        return out

    @property
    def parameters(self) -> tuple[str, ...]:
        """The catalog parameters the policy reads, in the order the levels name them."""
        seen: dict[str, None] = {}
        for level in self.levels:
            seen.update(dict.fromkeys(level.match))
        return tuple(seen)

    @property
    def base(self) -> str:
        return self.levels[0].name

    def rank(self, level: str) -> int:
        return [lv.name for lv in self.levels].index(level)

    def level_of(self, parameter: str, raw: str) -> tuple[str, bool]:
        """The level a parameter value means, and whether it was unrecognised (fail closed)."""
        value = _value(raw)
        found = [lv.name for lv in self.levels if value in lv.match.get(parameter, ())]
        if found:
            return max(found, key=self.rank), False
        return self.unknown.get(parameter, self.levels[-1].name), True

    def rule(self, level: str) -> Rule:
        return self.rules[level]


# Loading and checking ----------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true and false; yes, no, on, off and y stay words."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, yamlfile.no_duplicate_keys)


def _first_problem(source: str, exc: ValidationError) -> PolicyError:
    path, what = yamlfile.first_problem(exc, _SENTENCES)
    return PolicyError(source, path, what)


_SENTENCES = {
    "extra_forbidden": "this key is unknown (check its spelling)",
    "missing": "this key is required",
}


def parse(document: Any, *, source: str = "(text)") -> ApprovalPolicy:
    """Validate a parsed policy document; raises PolicyError naming the first problem."""
    if not isinstance(document, dict):
        raise PolicyError(source, "", "the top level must be a mapping with version, levels, rules")
    try:
        policy = ApprovalPolicy.model_validate(document)
    except ValidationError as exc:
        raise _first_problem(source, exc) from None
    _cross_check(policy, source)
    return policy


def loads(text: str, *, source: str = "(text)") -> ApprovalPolicy:
    return parse(yamlfile.parse(text, _Loader, source, PolicyError), source=source)


def load(path: Path) -> ApprovalPolicy:
    text = yamlfile.read_text(path, PolicyError)
    return loads(text, source=str(path))


def _cross_check(policy: ApprovalPolicy, source: str) -> None:
    """What pydantic cannot see: names that must refer to each other."""

    def bad(path: str, what: str) -> PolicyError:
        return PolicyError(source, path, what)

    names = [lv.name for lv in policy.levels]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise bad(f"levels[{i}].name", f"level {name!r} is defined twice")
    for i, level in enumerate(policy.levels):
        for parameter, values in level.match.items():
            for j, other in enumerate(policy.levels[:i]):
                both = set(values) & set(other.match.get(parameter, ()))
                if both:
                    raise bad(
                        f"levels[{i}].match.{parameter}",
                        f"value {sorted(both)[0]!r} is also listed under level "
                        f"{other.name!r} (levels[{j}]); a value means one level",
                    )
    for parameter, fallback in policy.unknown.items():
        if parameter not in policy.parameters:
            raise bad(f"unknown.{parameter}", "no level matches this parameter")
        if fallback not in names:
            raise bad(f"unknown.{parameter}", f"{fallback!r} is not a level ({', '.join(names)})")
    for group in policy.groups:
        if not _NAME.fullmatch(group) or group == OWNER:
            raise bad(f"groups.{group}", "a group name is lower-case letters, digits, - and _")
    for domain, accounts in policy.domains.items():
        for i, account in enumerate(accounts):
            if not _ACCOUNT.fullmatch(str(account)):
                raise bad(f"domains.{domain}[{i}]", f"{account!r} is not a 12-digit account id")
    for name in names:
        if name not in policy.rules:
            raise bad(f"rules.{name}", "is missing: every level needs a rule")
    for name, rule in policy.rules.items():
        if name not in names:
            raise bad(f"rules.{name}", f"there is no level {name!r} ({', '.join(names)})")
        _check_rule(policy, f"rules.{name}", rule, bad)


def _check_rule(policy: ApprovalPolicy, path: str, rule: Rule, bad: Any) -> None:
    if rule.auto_approve and rule.steps:
        raise bad(path, "a rule either sets auto_approve: true or lists steps, not both")
    if not rule.auto_approve and not rule.steps:
        raise bad(path, "a rule needs auto_approve: true or at least one approval step")
    if rule.auto_approve and rule.auto_approve_if != AutoApproveIf():
        raise bad(f"{path}.auto_approve_if", "a rule that approves everything needs no conditions")
    for i, step in enumerate(rule.steps):
        here = f"{path}.steps[{i}]"
        if step.approvers != OWNER and step.approvers not in policy.groups:
            raise bad(
                f"{here}.approvers",
                f"{step.approvers!r} is neither owner nor a group defined under groups",
            )
        if step.escalate is not None and step.escalate.to not in policy.groups:
            raise bad(f"{here}.escalate.to", f"{step.escalate.to!r} is not a group under groups")
        if step.escalate is not None and step.escalate.to == step.approvers:
            raise bad(f"{here}.escalate.to", "a step cannot escalate to its own approvers")


def check_users(policy: ApprovalPolicy, users: Iterable[User], *, source: str) -> None:
    """Check the groups against the users file: every step can reach its quorum."""
    everyone = {u.username: u for u in users}
    for group, body in policy.groups.items():
        for i, member in enumerate(body.members):
            if member not in everyone:
                raise PolicyError(
                    source, f"groups.{group}.members[{i}]", f"{member!r} is not in the users file"
                )
    owners: dict[str, int] = {}
    for user in everyone.values():
        for account in user.owner_of if user.is_owner else ():
            owners[account] = owners.get(account, 0) + 1
    for level, rule in policy.rules.items():
        for i, step in enumerate(rule.steps):
            need = step.quorum if isinstance(step.quorum, int) else 1
            here = f"rules.{level}.steps[{i}]"
            if step.approvers == OWNER and need > 1:
                short = sorted(a for a, n in owners.items() if n < need)
                if short:
                    raise PolicyError(
                        source,
                        here,
                        f"the step needs {need} owners, but producer account {short[0]} has "
                        f"{owners[short[0]]} in the users file",
                    )
            # The step's own group must reach the quorum; an escalation group only adds people.
            names = [(step.approvers, need)] + ([(step.escalate.to, 1)] if step.escalate else [])
            for group, need in ((g, n) for g, n in names if g != OWNER):
                size = len(members(group, everyone.values()))
                if size < need:
                    raise PolicyError(
                        source,
                        here,
                        f"group {group!r} has {size} member{'s' if size != 1 else ''} (in "
                        f"the policy and the users file together) but the step needs {need}",
                    )


def check_waiting(
    policy: ApprovalPolicy,
    waiting: Iterable[AccessRequest],
    *,
    users: Sequence[User],
    approvals: Any,
    source: str,
) -> None:
    """Every waiting request can still be approved: its groups are in the policy, and enough
    different people are left for its remaining places. ``approvals(id)`` gives a request's
    approvals so far."""
    for request in waiting:
        for step in request.plan[request.step :]:
            for group in (step.approvers, step.escalate_to):
                if group is None or group == OWNER or group in policy.groups:
                    continue
                raise PolicyError(
                    source,
                    "groups",
                    f"request {request.id} still waits for group {group!r}, which the policy "
                    "no longer defines; keep the group until such requests are decided",
                )
        stuck = unfillable(
            request.plan,
            requester=request.requester,
            users=users,
            owner=request.owner_account,
            step=request.step,
            done=approvals(request.id),
        )
        if stuck is not None:
            raise PolicyError(
                source,
                "groups",
                f"request {request.id} could no longer be approved ({stuck}); keep enough "
                "approvers in the policy and the users file until it is decided, or deny it",
            )


def members(group: str, users: Iterable[User]) -> frozenset[str]:
    """The usernames in a group: listed in the policy or the users file (merged into User)."""
    return frozenset(u.username for u in users if group in u.groups)


def approvers_of(step: Step, users: Iterable[User], owner: str | None) -> list[User]:
    """The people a step names (owners or group members), before escalation and admins."""
    if step.approvers == OWNER:
        return [u for u in users if owns(u, owner)]
    return [u for u in users if step.approvers in u.groups]


def needed(step: Step, *, requester: str, users: Iterable[User], owner: str | None) -> int:
    """How many approvals fill ``step``: any is one, n is n, all is every approver it names
    but the requester."""
    if step.quorum == "any":
        return 1
    if isinstance(step.quorum, int):
        return step.quorum
    others = [u for u in approvers_of(step, users, owner) if u.username != requester]
    return max(1, len(others))


class _Done(Protocol):
    @property
    def username(self) -> str: ...
    @property
    def step(self) -> int: ...


def candidates(step: Step, users: Iterable[User], owner: str | None) -> set[str]:
    """Everyone who could ever fill a place of ``step``: its approvers, its escalation group
    and, where it lets them, admins. An "all" step takes only the approvers it names."""
    users = list(users)
    people = {u.username for u in approvers_of(step, users, owner)}
    if step.quorum == "all":
        return people
    if step.escalate_to:
        people |= members(step.escalate_to, users)
    if step.admins:
        people |= {u.username for u in users if u.is_admin}
    return people


def unfillable(
    plan: Sequence[Step],
    *,
    requester: str,
    users: Sequence[User],
    owner: str | None,
    step: int = 0,
    done: Iterable[_Done] = (),
) -> str | None:
    """Why no set of different people could ever fill the steps from ``step`` on, given the
    approvals ``done`` so far, or None if some could.

    Each person fills at most one place across all steps, so this is a matching of places
    to people (Kuhn's algorithm; plans and groups are small).
    """
    done = list(done)
    used = {a.username for a in done} | {requester}
    places: list[set[str]] = []
    for index in range(step, len(plan)):
        current = plan[index]
        people = candidates(current, users, owner) - used
        count = needed(current, requester=requester, users=users, owner=owner)
        count -= len([a for a in done if a.step == index])
        if count <= 0:
            continue
        if len(people) < count:
            others = f"other than {', '.join(sorted(used))}"
            return (
                f"step {index + 1} ({current.describe()}) needs {count} more "
                f"{'person' if count == 1 else 'different people'} {others}, and has "
                f"{len(people)}"
            )
        places += [people] * count
    taken: dict[str, int] = {}

    def assign(place: int, seen: set[str]) -> bool:
        for person in sorted(places[place]):
            if person in seen:
                continue
            seen.add(person)
            if person not in taken or assign(taken[person], seen):
                taken[person] = place
                return True
        return False

    for place in range(len(places)):
        if not assign(place, set()):
            return (
                f"the steps left need {len(places)} different people in all, and too few "
                "people are named across them (one person fills one place)"
            )
    return None


# The built-in default ----------------------------------------------------------------------

_PII_SET = ("true", "yes", "1", "y")
_PII_UNSET = ("false", "no", "0", "n", "")


def default_policy(
    *, max_days: int | None = None, require_duration: bool = False
) -> ApprovalPolicy:
    """The reference design's policy; MESH_MAX_DAYS_SENSITIVE and friends set its terms."""
    return parse(
        {
            "version": 1,
            "levels": [
                {"name": "public", "match": {"pii_flag": list(_PII_UNSET)}},
                {"name": "pii", "match": {"pii_flag": list(_PII_SET)}},
            ],
            "rules": {
                "public": {"auto_approve": True},
                "pii": {
                    "steps": [{"approvers": OWNER, "quorum": "any"}],
                    "max_days": max_days,
                    "require_duration": require_duration,
                },
            },
        },
        source="(built-in default)",
    )


DEFAULT = default_policy()


# Judging a scope ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One catalog parameter in scope that the policy reads, and the level it means."""

    where: str
    parameter: str
    value: str
    level: str
    unknown: bool
    column: str | None = None

    @property
    def text(self) -> str:
        if self.unknown:
            return (
                f"{self.where} has {self.parameter}={self.value!r}, an unrecognised value "
                f"treated as {self.level}"
            )
        return f"{self.where} has {self.parameter}={self.value}"


_SHOWN = 3


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What the policy says about one request, and why: the app shows and stores this."""

    level: str
    findings: tuple[Finding, ...]
    steps: tuple[Step, ...]
    auto_reason: str | None
    reason: str
    sensitive_columns: tuple[str, ...]
    max_days: int | None
    require_duration: bool
    min_reason_length: int

    @property
    def needs_approval(self) -> bool:
        return self.auto_reason is None

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "needs_approval": self.needs_approval,
            "granted_at_once_because": self.auto_reason,
            "steps": [s.to_json() for s in self.steps],
            "findings": [
                {
                    "where": f.where,
                    "parameter": f.parameter,
                    "value": f.value,
                    "level": f.level,
                    "unrecognised": f.unknown,
                }
                for f in self.findings
            ],
            "sensitive_columns": list(self.sensitive_columns),
            "max_days": self.max_days,
            "require_duration": self.require_duration,
            "min_reason_length": self.min_reason_length,
            "reason": self.reason,
        }


def _column_findings(
    policy: ApprovalPolicy, table: Table, column: Column, *, qualify: bool
) -> list[Finding]:
    kind = "partition key" if column.is_partition_key else "column"
    label = f"{table.name}.{column.name}" if qualify else column.name
    return _findings(policy, f"{kind} {label}", column.parameters, column=label)


def _findings(
    policy: ApprovalPolicy,
    where: str,
    parameters: dict[str, str] | None,
    *,
    column: str | None = None,
) -> list[Finding]:
    out = []
    for parameter in policy.parameters:
        if parameter not in (parameters or {}):
            continue
        raw = (parameters or {})[parameter]
        level, unknown = policy.level_of(parameter, raw)
        out.append(
            Finding(
                where=where,
                parameter=parameter,
                value=raw.strip(),
                level=level,
                unknown=unknown,
                column=column,
            )
        )
    return out


def in_scope(scope: Scope, tables: Sequence[Table]) -> list[Table]:
    """The tables as the request sees them: a column subset keeps only its columns."""
    if scope.table is None or scope.columns is None:
        return list(tables)
    return [only_columns(tables[0], scope.columns)]


def classify(
    policy: ApprovalPolicy, scope: Scope, database: Database, tables: Sequence[Table]
) -> tuple[str, tuple[Finding, ...]]:
    """The strictest level in scope, and every finding above the base level."""
    found = _findings(policy, f"database {database.name}", database.parameters)
    whole_database = scope.table is None
    for table in in_scope(scope, tables):
        found += _findings(policy, f"table {table.name}", table.parameters)
        for column in table.all_columns:
            found += _column_findings(policy, table, column, qualify=whole_database)
    above = tuple(f for f in found if policy.rank(f.level) > 0)
    level = max((f.level for f in above), key=policy.rank, default=policy.base)
    return level, above


def sensitive_columns(policy: ApprovalPolicy, table: Table) -> tuple[str, ...]:
    """Columns whose own parameters put them above the base level, in table order."""
    return tuple(
        c.name
        for c in table.all_columns
        if any(policy.rank(f.level) > 0 for f in _column_findings(policy, table, c, qualify=False))
    )


def without_sensitive(
    policy: ApprovalPolicy, table: Table
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The "all columns except PII" choice: (columns to request, columns it leaves out)."""
    left_out = sensitive_columns(policy, table)
    return tuple(c.name for c in table.all_columns if c.name not in left_out), left_out


def _auto_condition(
    policy: ApprovalPolicy, rule: Rule, scope: Scope, *, account: str | None, owner: str | None
) -> str | None:
    """Why the rule's auto-approval conditions let this account in, or None."""
    if account is None:
        return None
    conditions = rule.auto_approve_if
    if conditions.same_domain and owner is not None:
        if account == owner:
            return f"account {account} is the producer account itself"
        for domain, accounts in policy.domains.items():
            if account in accounts and owner in accounts:
                return f"account {account} belongs to domain {domain}, as producer {owner} does"
    for entry in conditions.allow:
        if entry.account != account:
            continue
        if any(fnmatch.fnmatchcase(scope.database, p) for p in entry.databases):
            return f"the allow-list lets account {account} use database {scope.database}"
        qualified = f"{scope.database}.{scope.table}"
        if scope.table and any(fnmatch.fnmatchcase(qualified, p) for p in entry.tables):
            return f"the allow-list lets account {account} use table {qualified}"
    return None


def _clean(policy: ApprovalPolicy, scope: Scope, database: Database) -> str:
    read = " or ".join(policy.parameters) or "no parameter"
    if scope.table is None:
        return f"no {read} is set on database {database.name}, its tables or their columns"
    if scope.columns is not None:
        return (
            f"no {read} is set on database {database.name}, table {scope.table} or the "
            f"requested columns ({', '.join(scope.columns)})"
        )
    return f"no {read} is set on database {database.name}, table {scope.table} or its columns"


def _summary(findings: Sequence[Finding]) -> str:
    shown = "; ".join(f.text for f in findings[:_SHOWN])
    more = len(findings) - _SHOWN
    return f"{shown}; and {more} more" if more > 0 else shown


def evaluate(
    policy: ApprovalPolicy,
    scope: Scope,
    database: Database,
    tables: Sequence[Table],
    *,
    account: str | None,
) -> Verdict:
    """Judge a request for ``scope`` by ``account`` (None: as if for any account).

    ``tables`` holds the one requested table for a table request, or every table of the
    database for a database request.
    """
    level, findings = classify(policy, scope, database, tables)
    rule = policy.rule(level)
    why = _summary(findings) if findings else _clean(policy, scope, database)
    auto = None
    if rule.auto_approve:
        auto = f"level {level} is granted at once"
    else:
        auto = _auto_condition(policy, rule, scope, account=account, owner=database.owner_account)
    reason = f"level {level}: {why}"
    if auto is not None and findings:
        reason += f"; granted at once because {auto}"
    return Verdict(
        level=level,
        findings=findings,
        steps=()
        if auto is not None
        else tuple(to_step(s, admins=policy.admins_approve) for s in rule.steps),
        auto_reason=auto,
        reason=reason,
        sensitive_columns=tuple(f.column for f in findings if f.column is not None),
        max_days=rule.max_days,
        require_duration=rule.require_duration,
        min_reason_length=rule.min_reason_length,
    )


def to_step(rule: StepRule, *, admins: bool) -> Step:
    return Step(
        approvers=rule.approvers,
        quorum=rule.quorum,
        escalate_after_hours=rule.escalate.after_hours if rule.escalate else None,
        escalate_to=rule.escalate.to if rule.escalate else None,
        admins=admins,
    )


def check_request(
    verdict: Verdict,
    *,
    duration: timedelta | None,
    until: date | None,
    reason: str,
    today: date,
) -> None:
    """Apply the level's terms: the reason's length and how long access may last."""
    level = verdict.level
    if len(reason) < verdict.min_reason_length:
        raise InvalidInput(
            f"Requests at level {level} need a reason of at least "
            f"{verdict.min_reason_length} characters; this one has {len(reason)}."
        )
    if verdict.require_duration and duration is None and until is None:
        raise InvalidInput(
            f"This request is at level {level}, so it must say how long access is "
            "needed (a number of days or an end date)."
        )
    if verdict.max_days is None:
        return
    asked = duration if duration is not None else ((until - today) if until is not None else None)
    if asked is None:
        raise InvalidInput(
            f"This request is at level {level}, so access may last at most "
            f"{verdict.max_days} days; give a duration or an end date."
        )
    if asked > timedelta(days=verdict.max_days):
        raise InvalidInput(
            f"This request is at level {level}, so access may last at most {verdict.max_days} days."
        )


def describe_steps(steps: Sequence[Step]) -> list[str]:
    """One line per step, as `explain` and the pages show them."""
    return [f"{i}. {s.describe()}" for i, s in enumerate(steps, 1)]


# Who may act on a step ---------------------------------------------------------------------


class _Approved(Protocol):
    @property
    def username(self) -> str: ...


def in_step(policy: ApprovalPolicy, user: User, request: AccessRequest, owner: str | None) -> bool:
    """Whether ``user`` is one of the approvers of the request's current step.

    Admins are, when the step lets them (the policy's ``admins_approve`` when the request
    was submitted); an escalated step also takes its escalation group. A step whose quorum
    is "all" takes only the approvers it names.
    """
    step = request.current_step
    if step is None:
        return False
    if step.quorum == "all":  # all of the named approvers: nobody stands in for one
        return owns(user, owner) if step.approvers == OWNER else step.approvers in user.groups
    if user.is_admin and step.admins:
        return True
    groups = [step.approvers]
    if request.escalated_at is not None and step.escalate_to:
        groups.append(step.escalate_to)
    return any(owns(user, owner) if g == OWNER else g in user.groups for g in groups)


def capacity(user: User, request: AccessRequest, owner: str | None) -> str:
    """In what capacity ``user`` fills a place: "" as the step's own approvers, else "admin"
    or the escalation group's name."""
    step = request.current_step
    if step is None:
        return ""
    if owns(user, owner) if step.approvers == OWNER else step.approvers in user.groups:
        return ""
    if request.escalated_at is not None and step.escalate_to in user.groups:
        return str(step.escalate_to)
    return "admin" if user.is_admin else ""


def may_act(
    policy: ApprovalPolicy,
    user: User,
    request: AccessRequest,
    owner: str | None,
    done: Iterable[_Approved],
) -> bool:
    """The requester never decides, nobody fills two places, and only the step's approvers."""
    if user.username == request.requester:
        return False
    if any(a.username == user.username for a in done):
        return False
    return in_step(policy, user, request, owner)
