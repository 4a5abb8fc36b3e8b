"""Wire the adapters and use cases together from the settings (the app and CLI share this)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from mesh import approval, auditchain, auditlog, oidc
from mesh.approval import ApprovalPolicy
from mesh.aws import ClientFactory, central_account
from mesh.catalog import GlueCatalog
from mesh.catalog_index import CatalogIndex
from mesh.errors import Conflict, Forbidden, SettingError
from mesh.files import private_dir, tighten
from mesh.grants import LakeFormation
from mesh.lifecycle import Lifecycle
from mesh.links import LinkSigner, load_or_create_secret
from mesh.models import Action, Status, User
from mesh.notify import SnsNotifier
from mesh.org import AwsOrganization, Organization, StaticOrganization, UnknownOrganization
from mesh.outbox import Outbox
from mesh.settings import (
    ANCHOR_NEEDS_A_PLACE,
    AUDIT_KEY_REQUIRED,
    LINK_SECRET_REQUIRED,
    Mode,
    Settings,
    check_secret,
)
from mesh.store import AnyStore, NewEvent, PolicyRecord, open_at
from mesh.sync import CatalogSync
from mesh.users import UserFile
from mesh.workflow import Marketplace, iso, utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Services:
    """Everything a front end needs: the use cases, plus the adapters for its own reads."""

    settings: Settings
    marketplace: Marketplace
    catalog: GlueCatalog
    lakeformation: LakeFormation
    users: UserFile
    central_account: str
    endpoint: str | None
    lifecycle: Lifecycle
    outbox: Outbox
    index: CatalogIndex
    sync: CatalogSync
    audit_check: auditchain.Verification | None = None  # the check made at start-up


def demo_endpoint(settings: Settings) -> str | None:
    """The running demo stand-in's URL: from MESH_DEMO_ENDPOINT or the state file."""
    from mesh.demo import standin

    if settings.demo_endpoint:
        return settings.demo_endpoint
    return standin.find_running(settings.demo_state_file)


def require_demo_endpoint(settings: Settings) -> str:
    endpoint = demo_endpoint(settings)
    if endpoint is None:
        raise SettingError(
            f"MESH_MODE is demo but no demo stand-in is running for {settings.db_label}; start "
            "the demo with `scripts/dev demo` (or `python -m mesh demo`) first, or set "
            "MESH_MODE=aws."
        )
    return endpoint


def _organization(settings: Settings, factory: ClientFactory) -> Organization:
    if settings.org_accounts is None:
        return UnknownOrganization()
    if settings.org_accounts == "aws":
        return AwsOrganization(factory.client("organizations"))
    return StaticOrganization(frozenset(settings.org_accounts.split(",")))


def _links(settings: Settings) -> LinkSigner:
    """Sign decision links with MESH_LINK_SECRET, else (demo only) the private file beside
    MESH_DB; aws mode refuses the file, which whoever reads the database's folder could read
    (load_settings refuses first; this guards settings made some other way)."""
    secret = settings.link_secret
    if secret is None and settings.mode is Mode.AWS:
        raise SettingError(LINK_SECRET_REQUIRED)
    if secret is None:
        private_dir(settings.link_secret_file.parent)
        secret = load_or_create_secret(settings.link_secret_file)
        tighten(settings.link_secret_file)
        check_secret(f"The link secret in {settings.link_secret_file}", secret)
    return LinkSigner(secret, max_age_seconds=settings.link_ttl_hours * 3600, clock=utc_now)


def audit_key(settings: Settings) -> str:
    """The audit chain's key: MESH_AUDIT_KEY, else the private file beside MESH_DB.

    The file is the demo's way only: in aws mode it would be readable by whoever can write
    the database, which defeats the chain, so aws mode refuses to start without the setting
    (load_settings refuses first; this guards settings made some other way).
    """
    if settings.audit_key is not None:
        return settings.audit_key
    if settings.mode is Mode.AWS:
        raise SettingError(AUDIT_KEY_REQUIRED)
    private_dir(settings.audit_key_file.parent)
    secret = load_or_create_secret(settings.audit_key_file)
    tighten(settings.audit_key_file)
    return check_secret(f"The audit key in {settings.audit_key_file}", secret)


def open_store(settings: Settings) -> AnyStore:
    """The store MESH_DB names (a SQLite file, or a PostgreSQL URL) with the audit chain's
    key (a key file is read on first use)."""
    return open_at(settings.db, audit_key=settings.audit_key or (lambda: audit_key(settings)))


def audit_anchor(settings: Settings, sns: Any = None) -> auditlog.Anchor | None:
    """Where tick publishes the audit chain's head (MESH_AUDIT_ANCHOR)."""
    if settings.audit_anchor == "off":
        return None
    if settings.audit_anchor == "sns":
        if settings.admin_topic_arn is None:
            raise SettingError(
                "MESH_AUDIT_ANCHOR is sns, which publishes to MESH_ADMIN_TOPIC_ARN, and that "
                "is not set; set it, or set MESH_AUDIT_ANCHOR to file:PATH."
            )
        return auditlog.SnsAnchor(sns, settings.admin_topic_arn)
    if settings.audit_anchor == "beside":
        if settings.on_postgres:  # load_settings refuses first; this guards settings made so
            raise SettingError(ANCHOR_NEEDS_A_PLACE)
        return auditlog.FileAnchor()
    return auditlog.FileAnchor(Path(settings.audit_anchor.removeprefix("file:")))


def check_audit_at_start(
    store: AnyStore, anchor: auditlog.Anchor | None
) -> auditchain.Verification:
    """Verify the audit rows written since the last check; a break is logged, not fatal.

    Start-up goes on (grants stay safe: each needs verified evidence), and the periodic
    job reports the break on every pass until someone looks.
    """
    found = auditlog.verify_tail(
        store, at=iso(utc_now()), anchor=anchor.last(store) if anchor is not None else None
    )
    if not found.ok:
        log.error("The audit log does not verify: %s", "; ".join(found.problems))
    return found


def load_policy(settings: Settings) -> ApprovalPolicy:
    """The approval policy: MESH_POLICY's file, or the built-in default with its settings."""
    if settings.policy_path is None:
        return approval.default_policy(
            max_days=settings.max_sensitive_days,
            require_duration=settings.require_expiry_sensitive,
        )
    return approval.load(settings.policy_path)


def load_users(path: Path, rules: ApprovalPolicy, *, source: str) -> UserFile:
    """The users file with the policy's groups; a group that cannot reach its quorum stops."""
    users = UserFile(path, groups={g: body.members for g, body in rules.groups.items()})
    approval.check_users(rules, users.everyone(), source=source)
    return users


BUILT_IN = "(built-in default)"


def policy_record(settings: Settings, rules: ApprovalPolicy) -> PolicyRecord:
    """This process's policy as the store records it: its fingerprint, source and text.

    The fingerprint is taken over the parsed policy, so comments and layout do not count;
    the built-in default's terms (MESH_MAX_DAYS_SENSITIVE and friends) do.
    """
    canonical = json.dumps(rules.model_dump(mode="json"), sort_keys=True)
    fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    if settings.policy_path is None:
        return PolicyRecord(fingerprint=fingerprint, source=BUILT_IN, text=canonical)
    text = settings.policy_path.read_text(encoding="utf-8")
    return PolicyRecord(fingerprint=fingerprint, source=str(settings.policy_path), text=text)


def _policy_event(record: PolicyRecord, *, previous: PolicyRecord | None) -> NewEvent:
    return NewEvent(
        at=record.activated_at,
        actor=record.activated_by,
        action=Action.POLICY_ACTIVATED.value,
        request_id=None,
        scope="",
        details={
            "fingerprint": record.fingerprint,
            "source": record.source,
            "previous": {"fingerprint": previous.fingerprint, "source": previous.source}
            if previous
            else None,
        },
    )


def adopt_policy(store: AnyStore, mine: PolicyRecord, *, by: str) -> PolicyRecord:
    """The policy in force: the store's, or ``mine`` when this is the first process to run."""
    in_force = store.policy_in_force()
    if in_force is not None:
        return in_force
    first = replace(mine, activated_at=iso(utc_now()), activated_by=by)
    return store.record_policy(first, replacing=None, events=[_policy_event(first, previous=None)])


def activate_policy(settings: Settings, *, by: str, user: str | None = None) -> PolicyRecord:
    """Make this process's policy (MESH_POLICY, or the built-in) the one in force.

    It runs the start-up checks first: the file is valid, every group can reach its
    quorum, and no waiting request would be stranded. The switch is audited.

    ``user`` names the person of the users file who activates it, who must be an admin;
    without one, the operator who runs it on the server does (the demo, ``mesh policy
    activate`` without ``--as``).
    """
    rules = load_policy(settings)  # "The policy file X is invalid at ...: ..."
    users = load_users(settings.users_path, rules, source=_source(settings))
    if user is not None:
        acting = users.get(user)
        if acting is None:
            raise Forbidden(f"There is no user {user!r} in the users file.")
        if not acting.is_admin:
            raise Forbidden(
                f"User {acting.username} is not an admin; only admins activate an approval policy."
            )
    store = open_store(settings)
    store.migrate(create=settings.mode is Mode.DEMO)
    try:
        check_waiting(store, rules, users.everyone(), source=_source(settings))
    except approval.PolicyError as exc:
        # The file is valid; the requests already waiting are what it cannot serve.
        raise Conflict(
            f"Policy {_source(settings)} cannot be activated now: {exc.what}; decide or "
            "cancel that request first, or activate a policy that still serves it."
        ) from None
    mine = replace(policy_record(settings, rules), activated_at=iso(utc_now()), activated_by=by)
    previous = store.policy_in_force()
    if previous is not None and previous.fingerprint == mine.fingerprint:
        return previous
    now = store.record_policy(
        mine,
        replacing=previous.fingerprint if previous else None,
        events=[_policy_event(mine, previous=previous)],
    )
    if now.fingerprint != mine.fingerprint:
        raise Conflict(
            f"Another process activated policy {now.source} ({now.fingerprint}) at the same "
            "moment; look at it, then activate again if you still mean to."
        )
    return now


def _source(settings: Settings) -> str:
    return str(settings.policy_path or BUILT_IN)


def adopt_demo_state(settings: Settings) -> Settings:
    """Demo mode: the CLI runs the running demo's policy and base URL, unless set here.

    Without this, a CLI started without the demo's MESH_POLICY would apply another policy
    to the same requests, and its decision links would point at the wrong port.
    """
    from mesh.demo import standin

    if settings.mode is not Mode.DEMO:
        return settings
    state = standin.read_state(settings.demo_state_file)
    changes: dict[str, Any] = {}
    if "MESH_POLICY" not in settings.explicit and state.get("policy"):
        changes["policy_path"] = Path(state["policy"])
    if "MESH_BASE_URL" not in settings.explicit and state.get("base_url"):
        changes["base_url"] = str(state["base_url"])
    return replace(settings, **changes) if changes else settings


def check_waiting(
    store: AnyStore, rules: ApprovalPolicy, users: list[User], *, source: str
) -> None:
    """Refuse a policy (or users file) that would strand a request already waiting."""
    approval.check_waiting(
        rules,
        store.requests(statuses=[Status.PENDING_APPROVAL]),
        users=users,
        approvals=store.approvals,
        source=source,
    )


def standin_fresh(db_path: Path) -> bool:
    """Whether the demo has just made the database at ``db_path``; says so only once."""
    from mesh.demo.standin import take_fresh

    return take_fresh(db_path)


def build(settings: Settings, *, endpoint: str | None = None, by: str = "cli") -> Services:
    """Build the services; in demo mode ``endpoint`` is the stand-in's URL.

    ``by`` names this process in the audit row of a policy it is the first to record.
    """
    if settings.mode is Mode.DEMO and endpoint is None:
        endpoint = require_demo_endpoint(settings)
    factory = ClientFactory(
        max_attempts=settings.aws_max_attempts,
        timeout=settings.aws_timeout,
        demo_endpoint=endpoint if settings.mode is Mode.DEMO else None,
    )
    store = open_store(settings)  # opened by its first use: migrate, below
    # A broken policy or users file stops start-up, before any AWS call.
    try:
        rules = load_policy(settings)
        users = (
            # the role map: people known once they sign in, kept in the store
            oidc.users_for(settings, rules, people=store)
            if settings.auth == "oidc"
            else load_users(
                settings.users_path,
                rules,
                source=str(settings.policy_path or "(built-in default)"),
            )
        )
    except approval.PolicyError as exc:
        raise exc.as_setting() from None
    # Only the demo makes its database at start; in aws mode a missing one stops start-up,
    # before any AWS call (`mesh init` makes it; a deleted one is restored from a backup).
    store.migrate(create=settings.mode is Mode.DEMO)
    sts = factory.client("sts")
    account = central_account(sts)
    catalog = GlueCatalog(factory.client("glue"), catalog_id=account)
    lakeformation = LakeFormation(factory.client("lakeformation"))
    mine = policy_record(settings, rules)
    in_force = adopt_policy(store, mine, by=by)
    index = CatalogIndex(store, rules=rules, fingerprint=mine.fingerprint)
    sync = CatalogSync(catalog, index, clock=utc_now, glue_client=catalog.client)
    if in_force.fingerprint == mine.fingerprint:
        # A policy that differs from the one in force changes nothing, so it cannot strand
        # a waiting request; this one can, and is refused before it is used.
        try:
            check_waiting(store, rules, users.everyone(), source=_source(settings))
        except approval.PolicyError as exc:
            raise exc.as_setting() from None
        # The catalog index keeps each scope's level under the policy in force: a new
        # policy judges it again (from the index, without reading Glue).
        sync.ensure_judged()
    links = _links(settings)
    notifier = SnsNotifier(
        sts=sts,
        sns=factory.client("sns"),
        client_for=factory.client,
        region=factory.region,
        role_name=settings.producer_role,
        topic_name=settings.producer_topic,
    )
    outbox = Outbox(
        store=store,
        rules=rules,
        notifier=notifier,
        links=links,
        org=_organization(settings, factory),
        base_url=settings.base_url,
        enabled=settings.notify,
        admin_topic_arn=settings.admin_topic_arn,
        decision_topic_arn=settings.decision_topic_arn,
        retry_limit=settings.notify_retry_limit,
        clock=utc_now,
    )
    marketplace = Marketplace(
        store=store,
        catalog=catalog,
        grants=lakeformation,
        users=users,
        stale_granting=settings.stale_granting,
        outbox=outbox,
        links=links,
        rules=rules,
        policy=mine,
        index=index,
    )
    anchor = audit_anchor(settings, factory.client("sns"))
    if settings.mode is Mode.DEMO and isinstance(anchor, auditlog.FileAnchor):
        # Only a database the demo has just made starts a new anchor (never one whose
        # checkpoints look unreadable: junk rows must not excuse a missing anchor).
        if not settings.on_postgres and standin_fresh(settings.db_path):
            auditlog.initialise_anchor(store, anchor, by=by, at=iso(utc_now()))
    audit_check = check_audit_at_start(store, anchor)
    lifecycle = Lifecycle(
        marketplace,
        anchor=anchor,
        remind_after=timedelta(hours=settings.remind_after_hours),
        warn_before=timedelta(days=settings.warn_days),
        grant_retry_limit=settings.grant_retry_limit,
        sync=sync,
        sync_minutes=settings.sync_minutes,
        signin_lockout=timedelta(minutes=settings.signin_lockout_minutes),
    )
    return Services(
        settings=settings,
        marketplace=marketplace,
        catalog=catalog,
        lakeformation=lakeformation,
        users=users,
        central_account=account,
        endpoint=endpoint,
        lifecycle=lifecycle,
        outbox=outbox,
        index=index,
        sync=sync,
        audit_check=audit_check,
    )
