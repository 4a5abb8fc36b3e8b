"""Pure composition of the messages the marketplace sends (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mesh.models import AccessRequest

SUBJECT_LIMIT = 100  # SNS e-mail subjects: ASCII, no line breaks, at most 100 characters


class Kind(StrEnum):
    APPROVAL_REQUEST = "approval_request"
    OWNER_REMINDER = "owner_reminder"
    ADMIN_REMINDER = "admin_reminder"
    DECISION = "decision"
    EXPIRY_WARNING = "expiry_warning"


class Channel(StrEnum):
    PRODUCER = "producer"  # the owner's topic in the producer account, through its role
    ADMIN = "admin"  # a topic in the central account for platform admins
    REQUESTER = "requester"  # a topic in the central account for decisions
    GROUP = "group"  # an approver group's topic (groups.NAME.topic_arn in the policy)


@dataclass(frozen=True, kw_only=True)
class Message:
    kind: Kind
    channel: Channel
    subject: str
    body: str


def _subject(text: str) -> str:
    clean = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)
    return clean if len(clean) <= SUBJECT_LIMIT else clean[: SUBJECT_LIMIT - 3] + "..."


def _quoted(text: str) -> str:
    """Free text on continuation lines behind "| ", so it cannot pass for a line of ours."""
    first, *rest = text.splitlines() or [""]
    return "\n".join([first, *(f"                | {line}" for line in rest)])


def _scope(request: AccessRequest) -> str:
    return (
        f"{request.database}.{request.table}"
        if request.table
        else (f"{request.database} (whole database)")
    )


def _facts(request: AccessRequest) -> list[str]:
    return [
        f"Request:        {request.id}",
        f"Database:       {request.database}",
        f"Table:          {request.table or '(all tables)'}",
        *([f"Columns:        {', '.join(request.columns)}"] if request.columns is not None else []),
        f"Target account: {request.account}",
        f"Requester:      {request.requester}",
        f"Reason:         {_quoted(request.reason)}",
        f"Why approval:   {request.policy_reason}",
        *(
            [f"Approval step:  {request.step + 1} of {len(request.plan)}, {step.describe()}"]
            if (step := request.current_step) is not None
            else []
        ),
        "Sensitive cols: "
        + (", ".join(request.pii_columns) or "(classified at database or table level)"),
    ]


def approval_request(
    request: AccessRequest,
    *,
    approve_url: str,
    deny_url: str,
    reminder: bool = False,
    channel: Channel = Channel.PRODUCER,
) -> Message:
    """What the owner receives; the links only open the request, a person confirms."""
    kind = (
        (Kind.ADMIN_REMINDER if channel is Channel.ADMIN else Kind.OWNER_REMINDER)
        if (reminder)
        else Kind.APPROVAL_REQUEST
    )
    prefix = "Reminder: " if reminder else ""
    lines = [
        f"{prefix}{request.requester} asks for access to {_scope(request)} for account "
        f"{request.account}. The approval policy puts it at level "
        f"{request.level or 'pii'}, so it needs your decision.",
        "",
        *_facts(request),
        "",
        f"Approve: {approve_url}",
        f"Deny:    {deny_url}",
        "",
        "Each link opens the request in Mesh Marketplace; nothing is decided until you sign in "
        "and confirm. The links expire and work once.",
    ]
    return Message(
        kind=kind,
        channel=channel,
        subject=_subject(f"{prefix}Access request: {_scope(request)} for {request.account}"),
        body="\n".join(lines),
    )


@dataclass(frozen=True, kw_only=True)
class RamSteps:
    """What an outside account's administrator does: text, commands to run, more text.

    Plain text, no markdown: an e-mail shows it as it is, a page puts the commands in a code
    block.
    """

    before: str
    commands: tuple[str, ...]
    after: str


def ram_steps(account: str) -> RamSteps:
    return RamSteps(
        before=(
            f"Account {account} is outside the AWS Organization, so its administrator must "
            "accept the AWS RAM resource share invitation: in that account open the AWS RAM "
            "console, Shared with me > Resource shares, and accept the invitation from the "
            "central data catalog account, or run:"
        ),
        commands=(
            "aws ram get-resource-share-invitations",
            "aws ram accept-resource-share-invitation --resource-share-invitation-arn ARN",
        ),
        after="Then its data lake administrator grants access to its own users.",
    )


def ram_instructions(account: str) -> str:
    """The RAM steps as plain text, the commands indented on lines of their own."""
    steps = ram_steps(account)
    return "\n".join([steps.before, *(f"    {c}" for c in steps.commands), steps.after])


def decision(request: AccessRequest, *, outside_org: bool) -> Message:
    status = request.status.value.replace("_", " ")
    lines = [
        f"Request {request.id} by {request.requester} for {_scope(request)} (account "
        f"{request.account}) is {status}."
    ]
    if request.end_comment:
        ended = "revoked" if request.status.value == "revoked" else "ended"
        lines.append(f"Why {request.ended_by} {ended} it: {_quoted(request.end_comment)}")
    if request.comment:
        verb = "denied" if request.status.value == "denied" else "approved"
        lines.append(f"When {request.decided_by} {verb} it: {_quoted(request.comment)}")
    if request.expires_at:
        lines.append(f"Access expires at {request.expires_at}.")
    if outside_org and request.status.value == "granted":
        lines.append(ram_instructions(request.account))
    return Message(
        kind=Kind.DECISION,
        channel=Channel.REQUESTER,
        subject=_subject(f"Access {status}: {_scope(request)}"),
        body="\n".join(lines),
    )


def expiry_warning(request: AccessRequest) -> Message:
    body = (
        f"Access of account {request.account} to {_scope(request)} (request {request.id}) "
        f"expires at {request.expires_at}. Request it again if you still need it."
    )
    return Message(
        kind=Kind.EXPIRY_WARNING,
        channel=Channel.REQUESTER,
        subject=_subject(f"Access expiring: {_scope(request)}"),
        body=body,
    )
