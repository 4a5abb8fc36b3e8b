"""The notification outbox: every message is recorded, then delivered, then marked.

Failure never blocks or loses a request: a missing topic or role, AccessDenied or throttling
is recorded with its cause (row and audit log), the Approvals page shows "owner not
notified", and the periodic job delivers it again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from mesh import notices
from mesh.approval import DEFAULT, OWNER, ApprovalPolicy
from mesh.errors import failure_of
from mesh.links import LinkAction, LinkSigner
from mesh.models import AccessRequest, Action, Status
from mesh.notices import Channel, Kind, Message
from mesh.org import Organization
from mesh.store import AnyStore, NewEvent

SENDING_IS_STALE = timedelta(minutes=5)
ASKS_FOR_A_DECISION = frozenset(
    {Kind.APPROVAL_REQUEST.value, Kind.OWNER_REMINDER.value, Kind.ADMIN_REMINDER.value}
)


class Notifier(Protocol):
    def publish_to_producer(self, account: str, *, subject: str, body: str) -> str: ...
    def publish(self, topic_arn: str, *, subject: str, body: str) -> str: ...


def _iso(moment: datetime) -> str:
    from mesh.workflow import iso

    return iso(moment)


class Outbox:
    def __init__(
        self,
        *,
        store: AnyStore,
        rules: ApprovalPolicy | None = None,
        notifier: Notifier | None,
        links: LinkSigner,
        org: Organization,
        base_url: str,
        enabled: bool,
        admin_topic_arn: str | None,
        decision_topic_arn: str | None,
        retry_limit: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.rules = rules or DEFAULT
        self.notifier = notifier
        self.links = links
        self.org = org
        self.base_url = base_url
        self.enabled = enabled
        self.admin_topic_arn = admin_topic_arn
        self.decision_topic_arn = decision_topic_arn
        self.retry_limit = retry_limit
        self.clock = clock

    # What to send -------------------------------------------------------------------------

    def approval_request(
        self,
        request: AccessRequest,
        *,
        reminder: bool = False,
        to_admins: bool = False,
        escalated: bool = False,
    ) -> int:
        """Ask whoever can act on the request's current step (its escalation group, if
        ``escalated``; the admins' topic, if ``to_admins``)."""
        approve = self.links.url(self.base_url, request.id, LinkAction.APPROVE)
        deny = self.links.url(self.base_url, request.id, LinkAction.DENY)
        step = request.current_step
        group = (step.escalate_to if escalated else step.approvers) if step else OWNER
        skip = None
        if to_admins:
            channel, target = Channel.ADMIN, self.admin_topic_arn
        elif group == OWNER or group is None:
            channel, target = Channel.PRODUCER, request.owner_account
        else:
            channel = Channel.GROUP
            body = self.rules.groups.get(group)
            target = body.topic_arn if body else None
            if target is None:
                skip = f"group {group} has no topic_arn in the approval policy"
        message = notices.approval_request(
            request, approve_url=approve, deny_url=deny, reminder=reminder, channel=channel
        )
        return self._send(request, message, target, skip=skip)

    def decision(self, request: AccessRequest) -> int:
        outside = self.org.contains(request.account) is False
        return self._send(
            request, notices.decision(request, outside_org=outside), self.decision_topic_arn
        )

    def expiry_warning(self, request: AccessRequest) -> int:
        return self._send(request, notices.expiry_warning(request), self.decision_topic_arn)

    # How it goes out ----------------------------------------------------------------------

    def _send(
        self,
        request: AccessRequest,
        message: Message,
        target: str | None,
        *,
        skip: str | None = None,
    ) -> int:
        now = _iso(self.clock())
        skip = skip or self._why_not_sent(message.channel, target)
        row = {
            "request_id": request.id,
            "kind": message.kind.value,
            "channel": message.channel.value,
            "target": target,
            "subject": message.subject,
            "body": message.body,
            "status": "skipped" if skip else "pending",
            "attempts": 0,
            "error": skip,
            "created_at": now,
            "updated_at": now,
        }
        event = NewEvent(
            at=now,
            actor="system",
            action=Action.NOTIFICATION_QUEUED.value,
            request_id=request.id,
            scope=str(request.scope),
            details={
                "kind": message.kind.value,
                "channel": message.channel.value,
                "target": target,
                "skipped": skip,
            },
        )
        notification_id = self.store.add_notification(row, [event])
        if skip is None:
            self.deliver(notification_id)
        return notification_id

    def _why_not_sent(self, channel: Channel, target: str | None) -> str | None:
        if not self.enabled:
            return "notifications are off (MESH_NOTIFY=off)"
        if self.notifier is None:
            return "no notifier is configured"
        if target is None:
            return {
                Channel.ADMIN: "MESH_ADMIN_TOPIC_ARN is not set",
                Channel.REQUESTER: "MESH_DECISION_TOPIC_ARN is not set",
                Channel.PRODUCER: "the product has no data_owner",
                Channel.GROUP: "the group has no topic_arn in the approval policy",
            }[channel]
        return None

    def deliver(self, notification_id: int) -> bool:
        """Try one notification once; True if it went out. Safe to call from two processes."""
        now = self.clock()
        if not self.store.claim_notification(
            notification_id, at=_iso(now), stale_before=_iso(now - SENDING_IS_STALE)
        ):
            return False
        row = self.store.notification(notification_id)
        if row is None:
            return False
        try:
            message_id = self._publish(row)
        except Exception as exc:  # noqa: BLE001 - recorded with its cause, retried later
            self._failed(row, exc)
            return False
        done = _iso(self.clock())
        self.store.finish_notification(
            notification_id,
            {
                "status": "sent",
                "attempts": row["attempts"] + 1,
                "message_id": message_id,
                "sent_at": done,
                "updated_at": done,
                "error_code": None,
                "error": None,
            },
            [
                NewEvent(
                    at=done,
                    actor="system",
                    action=Action.NOTIFICATION_SENT.value,
                    request_id=row["request_id"],
                    scope="",
                    details={
                        "notification": notification_id,
                        "kind": row["kind"],
                        "target": row["target"],
                        "message_id": message_id,
                    },
                )
            ],
        )
        return True

    def _publish(self, row: dict[str, Any]) -> str:
        if self.notifier is None:  # skipped rows are never claimed; this is a guard
            raise RuntimeError("no notifier")
        if row["channel"] == Channel.PRODUCER.value:
            return self.notifier.publish_to_producer(
                row["target"], subject=row["subject"], body=row["body"]
            )
        return self.notifier.publish(row["target"], subject=row["subject"], body=row["body"])

    def _failed(self, row: dict[str, Any], exc: Exception) -> None:
        code, message = failure_of(exc, f"{type(exc).__name__}: {exc}")
        at = _iso(self.clock())
        self.store.finish_notification(
            row["id"],
            {
                "status": "failed",
                "attempts": row["attempts"] + 1,
                "error_code": code,
                "error": message,
                "updated_at": at,
            },
            [
                NewEvent(
                    at=at,
                    actor="system",
                    action=Action.NOTIFICATION_FAILED.value,
                    request_id=row["request_id"],
                    scope="",
                    details={
                        "notification": row["id"],
                        "kind": row["kind"],
                        "target": row["target"],
                        "error_code": code,
                        "error": message,
                        "attempt": row["attempts"] + 1,
                    },
                )
            ],
        )

    def retry_failed(self) -> tuple[int, int]:
        """Deliver what is still due; returns (sent, still failing)."""
        sent = failing = 0
        for row in self.store.notifications(statuses=["pending", "failed", "sending"]):
            if row["attempts"] >= self.retry_limit:
                continue
            if self._obsolete(row):
                continue
            if self.deliver(row["id"]):
                sent += 1
            elif self._status(row["id"]) == "failed":
                failing += 1
        return sent, failing

    def _obsolete(self, row: dict[str, Any]) -> bool:
        """An approval request or reminder for a request no longer pending is not sent again."""
        if row["kind"] not in ASKS_FOR_A_DECISION:
            return False
        request = self.store.get(row["request_id"])
        if request is not None and request.status is Status.PENDING_APPROVAL:
            return False
        at = _iso(self.clock())
        self.store.finish_notification(
            row["id"],
            {
                "status": "obsolete",
                "updated_at": at,
                "error": "the request was decided before this could be delivered",
            },
            [],
        )
        return True

    def _status(self, notification_id: int) -> str:
        row = self.store.notification(notification_id)
        return str(row["status"]) if row else "gone"

    def owner_not_notified(self, request_ids: Sequence[str]) -> dict[str, str]:
        """For each request whose current step's approvers have no delivered approval
        request: the cause.

        One query for all of them (a page of the queue asks for 50), not two per request.
        Only what asked the approvers of the current step counts: approval requests and
        owner reminders written since the step began.
        """
        asked = self.store.step_notifications(
            request_ids, kinds=(Kind.APPROVAL_REQUEST.value, Kind.OWNER_REMINDER.value)
        )
        causes: dict[str, str] = {}
        for request_id in request_ids:
            rows = asked.get(request_id, [])
            if not any(r["status"] == "sent" for r in rows):
                last = rows[-1] if rows else None
                causes[request_id] = (
                    "no notification recorded"
                    if last is None
                    else f"{last['status']}: {last['error'] or 'not delivered yet'}"
                )
        return causes
