"""Everything Streamlit: the one module in mesh/ that imports it.

It holds the cached loaders, the session keys, sign-in, page registration by role and the
shared widgets (request form, error guard). Pages stay short: read widgets, call one use
case, render the result or the error.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st
import streamlit_authenticator as stauth

from mesh import approval, browse, logs, notices, policy
from mesh.catalog_index import CatalogIndex, Query, ResultPage
from mesh.demo import standin
from mesh.errors import Forbidden, InvalidInput, MeshError
from mesh.models import AccessRequest, Database, Role, Scope, Status, Table, User
from mesh.oidc import OidcSignIn, OidcUsers
from mesh.policy import DURATION_CHOICES
from mesh.services import Services, build, demo_endpoint
from mesh.settings import Mode, Settings, load_settings
from mesh.signin import Rules, SignIn
from mesh.store import Approval
from mesh.workflow import utc_now

log = logging.getLogger("mesh.ui")


class Keys:
    """Every session-state key the app uses, in one place."""

    SESSION_TOKEN = "mesh_session_token"  # the random session id the cookie carries
    COOKIE_OUT = "mesh_cookie_out"  # the cookie value to write in the browser ("": delete)
    COOKIE_TRIED = "mesh_cookie_tried"  # a cookie value already tried in this session
    DATABASE = "mesh_selected_database"
    TABLE = "mesh_selected_table"
    FLASH = "mesh_flash"
    SIGN_OUT = "mesh_sign_out_requested"
    PENDING_LINK = "mesh_pending_decision_link"
    LINK_COOKIE_TAKEN = "mesh_link_cookie_taken"  # the kept link this session already opened
    LAST_ACCOUNT = "mesh_last_account"
    AUDIT_PAGES = "mesh_audit_pages"  # the audit page's filters and its pages' cursors
    USERNAME = "username"  # the signed-in user's name (context() reads it)
    SESSION_ENDED = "mesh_session_ended"  # a click found the session over: say so once


PAGES_DIR = "pages"
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


_AUTOLINK = re.compile(r"(?i)(://|www\.|@)")


def md(text: object) -> str:
    """Escape catalog or user text for Streamlit markdown (links, emphasis, icons, LaTeX).

    Escaping is not enough for bare URLs, which markdown turns into links by itself, so a
    zero-width space is put into "://", "www." and "@".
    """
    unlinked = _AUTOLINK.sub(lambda m: m.group(1)[0] + "\u200b" + m.group(1)[1:], str(text))
    return _MARKDOWN.sub(r"\\\1", unlinked)


PASSWORD_HINT = "mesh-demo"


# Display helpers: one wording for scopes, accounts and times on every page ---------------


def scope_text(scope: Scope) -> str:
    """A scope as people read it: "db (whole database)", "db.table" or "db.table(a, b)"."""
    return f"{scope.database} (whole database)" if scope.table is None else str(scope)


def stored_scope_text(scope: str) -> str:
    """A scope as the audit log stores it ("db.*" for a database), as scope_text writes it."""
    return f"{scope[:-2]} (whole database)" if scope.endswith(".*") else scope


def account_label(account: str | None, settings: Settings | None = None) -> str:
    """ "Analytics (444455556666)" when MESH_ACCOUNT_NAMES names the account, else the id."""
    if not account:
        return "no account"
    name = (settings or services().settings).account_name(account)
    return f"{name} ({account})" if name else account


def when(stamp: str | None) -> str:
    """A stored time for people: "1 Dec 2026 14:02 UTC" (a date alone: "31 Dec 2026")."""
    if not stamp:
        return ""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    day = f"{moment.day} {moment:%b %Y}"
    if len(stamp) <= len("2026-12-31"):
        return day
    return f"{day} {moment:%H:%M} UTC"


def describe_user(user: User) -> str:
    """Roles and approver groups for the sidebar: "owner", "approver in privacy-office"."""
    parts = sorted(r.value for r in user.roles)
    if user.groups:
        parts.append("approver in " + ", ".join(sorted(user.groups)))
    return ", ".join(parts) or "no role"


# Start-up --------------------------------------------------------------------------------


class _Process:
    """What lives as long as the server process, made once, behind one lock.

    Never in st.cache_resource: any client that reaches the port, signed in or not, can send
    Streamlit's ``clear_cache`` message, which clears it for every session. Kept there, the
    services were rebuilt, another background job started each time, and in demo mode the
    cookie key re-rolled (everyone signed out). The services are built again only when the
    settings change (tests run several configurations in one process); the background job
    of the old ones is stopped first, so exactly one runs.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: tuple[Settings, str | None] | None = None
        self.services: Services | None = None
        self.job: threading.Event | None = None
        self.standins: dict[tuple[str, str], str] = {}
        self.cookie_key = secrets.token_urlsafe(48)  # demo mode: random for each process

    def standin(self, state_file: str, db_path: str) -> str:
        """A stand-in inside this server process when no running demo was found."""
        from pathlib import Path

        where = (state_file, db_path)
        if where not in self.standins:
            with st.spinner("Starting the demo AWS stand-in…"):
                running = standin.start(state_file=Path(state_file), db_path=Path(db_path))
            self.standins[where] = running.endpoint
        return self.standins[where]

    def get(self, settings: Settings) -> Services:
        with self.lock:
            endpoint = None
            if settings.mode is Mode.DEMO:
                endpoint = demo_endpoint(settings) or self.standin(
                    str(settings.demo_state_file), str(settings.db_path)
                )
            if self.services is None or self.key != (settings, endpoint):
                with st.spinner("Connecting…"):
                    svc = build(settings, endpoint=endpoint, by="web app")
                self._replace((settings, endpoint), svc)
            return self.services  # type: ignore[return-value]  # set just above

    def _replace(self, key: tuple[Settings, str | None], svc: Services) -> None:
        if self.job is not None:
            self.job.set()
            self.job = None
        self.key, self.services = key, svc
        if svc.settings.mode is Mode.DEMO:
            if svc.index.last_sync() is None:  # a demo started without the launcher (small)
                svc.sync.run(actor="demo")
            self.job = _start_background_job(svc)
        settle_heap()


_PROCESS = _Process()


def reset_process_for_tests() -> None:
    """Test hook, never called by the app: stop the background job and forget the services,
    as in a fresh process (tests/conftest.py calls it between tests, with the caches)."""
    global _PROCESS
    with _PROCESS.lock:
        if _PROCESS.job is not None:
            _PROCESS.job.set()
    _PROCESS = _Process()


def cookie_key(svc: Services) -> str:
    """The key that signs the session cookie: MESH_COOKIE_KEY, or the process's own."""
    return svc.settings.cookie_key or _PROCESS.cookie_key


def settle_heap() -> None:
    """Move what start-up made (modules, botocore's service models, the services) out of
    the garbage collector's reach: a full collection then scans only what page runs make,
    instead of pausing a page run for hundreds of milliseconds over objects that live as
    long as the server does. Once per process: what start-up made is there by then.
    """
    if _heap_settled.is_set():
        return
    _heap_settled.set()
    gc.collect()
    gc.freeze()


_heap_settled = threading.Event()


def _start_background_job(svc: Services) -> threading.Event:
    """Demo mode: run the periodic job every MESH_TICK_SECONDS, so expiry can be watched.

    The job syncs the catalog index too, when it is older than MESH_SYNC_MINUTES. Outside
    the demo, schedule `python -m mesh tick` (cron, systemd timer, EventBridge).
    """
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(svc.settings.tick_seconds):
            try:
                svc.lifecycle.tick()
            except MeshError as exc:  # expected, such as another policy in force: one line
                log.warning("background tick refused: %s", exc.message)
            except Exception:  # a failed pass is logged; the next one tries again
                log.exception("background tick failed")

    threading.Thread(target=loop, name="mesh-demo-tick", daemon=True).start()
    return stop


def services() -> Services:
    """Settings and services for this server process; a bad setting stops the app politely.

    The first call also sets up the process's logging (MESH_LOG, secrets masked on every
    handler); later calls find it done.
    """
    logs.configure_once(os.environ)
    try:
        return _PROCESS.get(load_settings(web=True))
    except MeshError as exc:
        st.error(f"Mesh Marketplace cannot start: {md(exc.message)}")
    except Exception:  # a person never sees a stack trace, even for a start-up failure
        log.exception("start-up failed")
        st.error("Mesh Marketplace cannot start; the details are in the server log.")
    from mesh.ui_signin import no_pages

    no_pages()
    raise RuntimeError("unreachable: no_pages() stops the run")


def cannot_continue(exc: MeshError) -> None:
    """Stop this run with ``exc``'s sentence and no pages (a store that failed mid-run)."""
    log.warning("page run stopped: %s", exc.message)
    st.error(md(exc.message))
    from mesh.ui_signin import no_pages

    no_pages()
    raise RuntimeError("unreachable: no_pages() stops the run")


# The catalog index ------------------------------------------------------------------------
# Pages read the catalog from the index in the store, one page of it at a time; only a sync
# (`mesh sync`, tick, the demo's background job, an admin's Sync now) reads all of Glue.


def catalog_index(svc: Services) -> CatalogIndex:
    return svc.index


def search(svc: Services, query: Query) -> ResultPage:
    return svc.index.search(query)


def owner_names(svc: Services) -> dict[str, str]:
    """Producer names by owner account, from the index."""
    return {account: name for account, name in svc.index.owners() if account}


def granted_scopes(ctx: Context) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """The databases, and (database, table) pairs, granted to this user now."""
    granted = ctx.services.marketplace.requests(
        username=ctx.user.username, status=Status.GRANTED.value
    )
    databases = frozenset(r.database for r in granted if r.table is None)
    tables = frozenset((r.database, r.table) for r in granted if r.table is not None)
    return databases, tables


def age(stamp: str | None, *, now: datetime | None = None) -> str:
    """How long ago ``stamp`` was, in words: "just now", "3 min ago", "2 h ago", "4 days ago"."""
    if not stamp:
        return "never"
    then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    seconds = max(0, int(((now or utc_now()) - then).total_seconds()))
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


# Where aws.call puts AWS's own message: "Glue GetDatabases was refused (Code: message)."
_AWS_MESSAGE = re.compile(r"\(([A-Za-z0-9_.]+): ")


def failure_text(error: str | None, code: str | None, *, admin: bool | None = None) -> str:
    """A stored failure as this person may read it: all of it to an admin; to anyone else,
    when it quotes AWS's message (which names role ARNs and account ids), what was refused
    and the AWS error code only. ``admin`` None asks the signed-in person's roles."""
    if not error:
        return code or "no detail"
    quoted = _AWS_MESSAGE.search(error)
    if quoted is None:
        return error  # a sentence of ours, with no AWS message in it
    if _viewer_is_admin() if admin is None else admin:
        return error
    what = error[: quoted.start()].strip() or "AWS refused the call"
    return f"{what} ({quoted.group(1)}); an admin can read AWS's full message."


def _viewer_is_admin() -> bool:
    name = st.session_state.get(Keys.USERNAME)
    try:
        user = services().users.get(str(name)) if name else None
    except MeshError:
        return False
    return bool(user is not None and user.is_admin)


def catalog_age(ctx: Context) -> None:
    """Say how old the catalog index is; an admin may sync it now."""
    svc = ctx.services
    last = svc.index.last_sync()
    failed = svc.index.last_sync(ok=False)
    if last is None:
        st.warning(
            "The catalog has not been synced from Glue yet, so it is empty here; an admin "
            "can sync it now, or run `mesh sync` (the periodic `mesh tick` syncs it too)."
        )
    else:
        st.caption(
            f"Catalog synced {age(last.finished_at)} "
            f"({last.databases:,} databases, {last.tables:,} tables); a request is always "
            "judged on what Glue says when it is made."
        )
    if failed is not None and failed.error and (last is None or failed.id > last.id):
        st.caption(f"The last sync failed: {md(failure_text(failed.error, None))}")
    if ctx.user.is_admin and st.button(
        "Sync now", key="sync_catalog", help="Read the whole catalog from Glue into the index"
    ):
        try:
            with st.spinner("Syncing the catalog from Glue…"):
                # the use case checks the role again, whatever this page showed
                done = svc.lifecycle.sync_catalog(ctx.user.username)
        except MeshError as exc:
            audit_refusal(exc, what="sync the catalog")
            st.error(md(exc.message))
            return
        if done.error:
            st.error(f"The sync failed: {md(done.error)}")
        else:
            st.success(
                f"Synced {done.databases:,} databases and {done.tables:,} tables in "
                f"{(done.duration_ms or 0) / 1000:.1f} s: {done.added} added, "
                f"{done.changed} changed, {done.removed} removed."
            )


# Pages -----------------------------------------------------------------------------------


def pages_for(user: User) -> dict[str, list[Any]]:
    """The pages this user's roles get; a page not registered here cannot be reached."""
    sections: dict[str, list[Any]] = {
        "Catalog": [
            st.Page(
                f"{PAGES_DIR}/databases.py",
                title="Data products",
                icon=":material/dataset:",
                url_path="databases",
                default=True,
            ),
            st.Page(
                f"{PAGES_DIR}/database.py",
                title="Database detail",
                icon=":material/folder_open:",
                url_path="database",
            ),
            st.Page(
                f"{PAGES_DIR}/table.py",
                title="Table detail",
                icon=":material/table:",
                url_path="table",
            ),
        ],
        "Access": [
            st.Page(
                f"{PAGES_DIR}/my_requests.py",
                title="My requests",
                icon=":material/outbox:",
                url_path="my-requests",
            )
        ],
    }
    if user.can_approve:
        sections["Access"].append(
            st.Page(
                f"{PAGES_DIR}/approvals.py",
                title="Approvals",
                icon=":material/rule:",
                url_path="approvals",
            )
        )
        sections["Access"].append(
            st.Page(
                f"{PAGES_DIR}/dashboard.py",
                title="Dashboard",
                icon=":material/monitoring:",
                url_path="dashboard",
            )
        )
    if Role.ADMIN in user.roles:
        sections["Admin"] = [
            st.Page(
                f"{PAGES_DIR}/audit.py",
                title="Audit log",
                icon=":material/history:",
                url_path="audit",
            ),
            st.Page(
                f"{PAGES_DIR}/drift.py",
                title="Lake Formation drift",
                icon=":material/compare_arrows:",
                url_path="drift",
            ),
            st.Page(
                f"{PAGES_DIR}/notifications.py",
                title="Notifications",
                icon=":material/mail:",
                url_path="notifications",
            ),
        ]
    return sections


@dataclass(frozen=True, kw_only=True)
class Context:
    services: Services
    user: User


def context() -> Context:
    """For a page: the services and the signed-in user, re-read from the users file."""
    svc = services()
    user = svc.users.get(st.session_state.get(Keys.USERNAME))
    if user is None:
        # Streamlit runs a pages/ file on its own when it is the first URL a fresh server
        # sees; send that visit through the frame, which signs in and gates by role.
        st.switch_page("app.py", query_params=st.query_params.to_dict())
    return Context(services=svc, user=user)  # type: ignore[arg-type]  # None switched away


def audit_refusal(exc: MeshError, *, what: str) -> None:
    """Audit an action the use case refused for want of a role (Forbidden): a decision by
    someone who may not decide, a request for another's account, an unknown user."""
    if not isinstance(exc, Forbidden):
        return
    try:
        refused(what, exc.message)
    except Exception:  # auditing a refusal must not hide the refusal itself
        log.exception("could not audit a refused action")


def client_ip() -> str:
    """The address of this browser's connection, for sign-in throttling and the audit log."""
    try:
        peer = st.context.ip_address
        forwarded = st.context.headers.get("X-Forwarded-For")
    except Exception:  # noqa: BLE001 - no client context (a bare script run)
        return LOOPBACK
    trusted = services().settings.trusted_proxy
    if isinstance(forwarded, str) and forwarded.strip() and not trusted:
        _warn_untrusted_forwarding()
    return client_address(
        peer if isinstance(peer, str) else None,
        forwarded if isinstance(forwarded, str) else None,
        trusted_proxy=trusted,
        rewritten=uvicorn_rewrites_peer(os.environ),
    )


LOOPBACK = "127.0.0.1"
_WARNED_FORWARDING = threading.Event()


def _warn_untrusted_forwarding() -> None:
    """Log once per process that a proxy seems to sit in front while MESH_TRUSTED_PROXY is
    off: every client behind it then shares one address and one sign-in failure count."""
    if _WARNED_FORWARDING.is_set():
        return
    _WARNED_FORWARDING.set()
    log.warning(
        "A request came with an X-Forwarded-For header, but MESH_TRUSTED_PROXY is off: behind "
        "a reverse proxy every client then counts as 127.0.0.1, so "
        "MESH_SIGNIN_ADDRESS_MAX_FAILURES wrong guesses lock everyone out. Set "
        "MESH_TRUSTED_PROXY=1 if a proxy on this host adds the header (deploy/nginx/mesh.conf)."
    )


def uvicorn_rewrites_peer(environ: Mapping[str, str]) -> bool:
    """Whether uvicorn may have replaced a loopback peer with an X-Forwarded-For entry: it
    does unless FORWARDED_ALLOW_IPS is set empty (the demo and scripts/dev app set it so)."""
    return environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1").strip() != ""


def client_address(
    peer: str | None, forwarded: str | None, *, trusted_proxy: bool, rewritten: bool = True
) -> str:
    """Decide the client's address from what Streamlit says and the X-Forwarded-For header.

    ``peer`` is ``st.context.ip_address``: None for a loopback peer. Streamlit 1.67 serves
    through uvicorn, whose proxy-headers middleware (on by default, trusting
    FORWARDED_ALLOW_IPS = 127.0.0.1,::1) has already replaced a loopback peer with the last
    X-Forwarded-For entry that is not loopback. So:
    - with a trusted proxy (MESH_TRUSTED_PROXY, nginx in front on this host), that is the
      entry nginx added for its own peer: the client. A loopback ``peer`` left over means
      every entry was loopback; the last is used. Earlier entries are whatever the client
      sent, and are never used.
    - without one, a header that names the very address we got may have been sent by a
      process on this host to pick the address it is counted under: it counts as loopback.
      A peer that is not loopback and sent no such header is the client.

    ``rewritten`` False (FORWARDED_ALLOW_IPS empty): uvicorn left the peer alone, so a
    remote peer is the client whatever header it sent.
    """
    last = forwarded.split(",")[-1].strip()[:64] if forwarded and forwarded.strip() else ""
    if trusted_proxy:
        return peer or last or LOOPBACK
    if peer is None or (rewritten and last and peer == last):
        return LOOPBACK
    return peer


def refused(what: str, why: str) -> None:
    """Audit an action_refused row for the signed-in person (or "(unknown)")."""
    services().marketplace.record_refusal(
        str(st.session_state.get(Keys.USERNAME) or ""), what=what, why=why, client=client_ip()
    )


def signin_use_cases(svc: Services) -> SignIn:
    """The sign-in use cases over this process's store and users file (or role map)."""
    if isinstance(svc.users, OidcUsers):
        return OidcSignIn(svc.marketplace.store, svc.users, Rules.from_settings(svc.settings))
    return SignIn(
        svc.marketplace.store,
        svc.users,
        Rules.from_settings(svc.settings),
        check=stauth.Hasher.check_pw,
    )


def session_open(what: str) -> bool:
    """Check this browser's server-side session before a write; when it is over, refuse,
    audit the refusal, and forget the session so that the run shows the sign-in form."""
    svc = services()
    session_id = st.session_state.get(Keys.SESSION_TOKEN)
    resumed = (
        signin_use_cases(svc).resume(session_id, client=client_ip())
        if isinstance(session_id, str) and session_id
        else "no session"
    )
    if isinstance(resumed, User) and resumed.username == st.session_state.get(Keys.USERNAME):
        return True
    why = resumed if isinstance(resumed, str) else "the session belongs to another user"
    try:
        refused(what, f"the session is over: {why}")
    except Exception:  # auditing a refusal must not hide the refusal itself
        log.exception("could not audit a refused action")
    forget_session(svc)
    st.session_state[Keys.SESSION_ENDED] = True
    return False


def forget_session(svc: Services) -> None:
    """Forget this browser's session and delete its cookie (never try that cookie again)."""
    for key in (Keys.SESSION_TOKEN, Keys.USERNAME):
        st.session_state.pop(key, None)
    st.session_state[Keys.COOKIE_OUT] = ""
    try:
        st.session_state[Keys.COOKIE_TRIED] = st.context.cookies.get(
            svc.users.directory().cookie_name
        )
    except Exception:  # noqa: BLE001 - no client context (a bare script run)
        pass


@contextmanager
def guard() -> Iterator[None]:
    """Show a MeshError as its sentence, and anything else without a stack trace."""
    try:
        yield
    except MeshError as exc:
        audit_refusal(exc, what="page")
        st.error(md(exc.message))
    except Exception:  # a person never sees a stack trace
        log.exception("page failed")
        st.error("Something went wrong on our side; the details are in the server log.")


# What action_refused.what says for a use case a button ran: a person's word for it.
_USE_CASES = {
    "approve": "approve",
    "deny": "deny",
    "decide_by_link": "decide by link",
    "retry": "retry",
    "cancel": "cancel",
    "mark_seen": "mark as seen",
    "revoke": "revoke",
    "submit": "request access",
    "sync_catalog": "sync the catalog",
}


def use_case_name(fn: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The use case a click ran, as a person names it ("approve", "bulk deny"), for the
    audit log's action_refused rows: never a function's name such as _decide_and_keep."""
    name = str(getattr(fn, "__name__", "") or "")
    verb = kwargs.get("action") or kwargs.get("verb")
    if name == "decide_by_link" and isinstance(verb, str):
        return f"{verb} by link"
    if name == "_decide_and_keep":  # the Approvals page's bulk bar: (ids, verb, comment)
        verb = args[1] if len(args) > 1 and isinstance(args[1], str) else "decide"
        return f"bulk {verb}"
    if name in _USE_CASES:
        return _USE_CASES[name]
    words = name.strip("_").replace("_", " ")
    return words or "action"


def act(fn: Any, *args: Any, done: Any = None, at: str | None = None, **kwargs: Any) -> bool:
    """Run a use case from a widget callback; its outcome, or why it was refused, shows
    after the rerun. Callbacks run even when the page has changed under the click (someone
    else decided first), so a refusal such as a conflict is always shown, never dropped.

    ``at`` names the card whose button was pressed: a refusal shows inside it (see
    show_flash), or at the top of the page when that card is gone. True when it succeeded.

    Callbacks run before the script, so before the frame's session check: the session is
    checked here first, and a click in a session that has ended (sign-out in another tab,
    expiry, idle time, a new password) changes nothing and shows the sign-in form.
    """
    what = use_case_name(fn, args, kwargs)
    if not session_open(what):
        return False
    try:
        result = fn(*args, **kwargs)
    except MeshError as exc:
        audit_refusal(exc, what=what)
        flash(md(exc.message), "error", at=at)
        return False
    except Exception:  # a person never sees a stack trace
        log.exception("action failed")
        flash(
            "Something went wrong on our side; the details are in the server log.", "error", at=at
        )
        return False
    if done is not None:
        flash(*done(result))
    return True


def outcome_flash(request: AccessRequest) -> tuple[str, str]:
    kind, message = describe_outcome(request)
    return message, kind


def flash(message: str, kind: str = "success", *, at: str | None = None) -> None:
    """Keep a message to show after the next rerun, at the top or in the card ``at``."""
    st.session_state[Keys.FLASH] = (kind, message, at)


def show_flash(*, at: str | None = None, places: Iterable[str] = ()) -> None:
    """Show the kept message if it belongs here.

    In a card, pass ``at`` (the card's key). At the top of a page, pass ``places``: the
    cards this run draws; a message for a card that is not drawn (the request was decided
    meanwhile) shows at the top instead of being lost.
    """
    kept = st.session_state.get(Keys.FLASH)
    if not kept:
        return
    kind, message, place = kept
    here = place == at if at is not None else (place is None or place not in set(places))
    if here:
        del st.session_state[Keys.FLASH]
        getattr(st, kind)(message)


# Shared widgets --------------------------------------------------------------------------


def describe_outcome(request: AccessRequest) -> tuple[str, str]:
    scope = md(scope_text(request.scope))
    if request.status.value == "granted":
        why = (
            ""
            if request.needs_approval
            else f" The policy granted it at once: {md(request.policy_reason)}."
        )
        account = md(account_label(request.account))
        return "success", f"Access to {scope} for {account} is granted ({request.id}).{why}"
    if request.status.value == "pending_approval":
        steps = "; then ".join(s.describe() for s in request.plan)
        return "info", (
            f"Request {request.id} for {scope} waits for approval ({md(steps)}): "
            f"{md(request.policy_reason)}."
        )
    if request.status.value == "failed":
        return "error", (
            f"Request {request.id} was approved but the grant failed: "
            f"{md(failure_text(request.error, request.error_code))} You can retry it from "
            "My requests."
        )
    return "info", f"Request {request.id} is {request.status.value}."


def _column_picker(key: str, ctx: Context, database: Database, table: Table) -> None:
    """Least privilege in one click: select every column but the sensitive ones."""
    rules = ctx.services.marketplace.rules
    keep, left_out = approval.without_sensitive(rules, table)
    if not left_out:
        return

    def pick() -> None:
        st.session_state[f"{key}-columns"] = list(keep)

    st.button(
        "Select all columns except PII",
        key=f"{key}-no-pii",
        on_click=pick,
        help="Request only the columns the approval policy does not rate above "
        f"{rules.base} (no pii_flag, for the built-in policy)",
    )
    subset = Scope(database=database.name, table=table.name, columns=keep)
    then = approval.evaluate(rules, subset, database, [table], account=None)
    outcome = (
        "access is granted at once"
        if not then.needs_approval
        else f"the request is still at level {then.level} and waits for approval"
    )
    st.caption("That leaves out: " + ", ".join(md(c) for c in left_out) + f". Then {outcome}.")


def policy_note(ctx: Context, *, database: str, table: str | None) -> None:
    """Say what the approval policy does with a request for this scope, before it is made.

    The verdict can depend on the target account (same domain, allow-lists), so it is given
    for each of the user's accounts when they differ.
    """
    with guard():
        market = ctx.services.marketplace
        accounts: list[str | None] = list(ctx.user.accounts) or [None]
        verdicts = {a: market.explain(database=database, table=table, account=a) for a in accounts}
        outcomes = {(v.needs_approval, v.steps) for v in verdicts.values()}
        if len(outcomes) == 1:
            _verdict_note(next(iter(verdicts.values())), None)
        else:
            for account, verdict in verdicts.items():
                _verdict_note(verdict, account)
        verdict = next(iter(verdicts.values()))
        stuck = market.never_approvable(ctx.user.username, database, verdict)
        if stuck is not None:
            st.error(
                f"A request by you could never be approved: {md(stuck)}. Ask a platform "
                "admin to fix the approval policy's groups or the users file."
            )
        terms = [
            *([f"at most {verdict.max_days} days"] if verdict.max_days else []),
            *(["a duration or an end date"] if verdict.require_duration else []),
            *(
                [f"a reason of at least {verdict.min_reason_length} characters"]
                if verdict.min_reason_length
                else []
            ),
        ]
        if terms:
            st.caption("The policy asks for " + md("; ".join(terms)) + ".")


def _verdict_note(verdict: approval.Verdict, account: str | None) -> None:
    where = f"For account {md(account_label(account))}: level" if account else "Level"
    if verdict.needs_approval:
        steps = "; then ".join(s.describe() for s in verdict.steps)
        st.warning(
            f"{where} **{md(verdict.level)}**: a request waits for approval ({md(steps)}). "
            f"Why: {md(verdict.reason)}."
        )
    else:
        st.success(
            f"{where} **{md(verdict.level)}**: access is granted at once. "
            f"Why: {md(verdict.reason)}."
        )


def request_form(
    ctx: Context, *, database: str, table: str | None, entry: tuple[Database, Table] | None = None
) -> None:
    """The access request form for a database or one table; values survive an error.

    ``entry`` (the catalog's database and table) enables picking a subset of columns.
    """
    user = ctx.user
    scope = f"table {database}.{table}" if table else f"the whole database {database}"
    key = f"request-{database}-{table or '*'}"
    if not user.can_request:
        st.info(
            "Your user has no consumer accounts, so it cannot request access; ask an "
            "admin to add accounts to your user."
        )
        return
    st.subheader(f"Request access to {md(scope)}")
    if entry is not None:
        _column_picker(key, ctx, *entry)
    with st.form(key=key):
        account: str | None
        if user.is_admin:
            account = st.text_input(
                "Consumer account id (12 digits)",
                key=f"{key}-account",
                value=user.accounts[0] if user.accounts else "",
            )
        else:
            account = st.selectbox(
                "For consumer account",
                user.accounts,
                index=_account_index(user),
                format_func=account_label,
                placeholder="Pick the account the access is for",
                key=f"{key}-account",
            )
        # No max_chars: the box would drop a longer paste silently; the check below says
        # by how much it is too long, and keeps the text to shorten.
        reason = st.text_area("Reason (the data owner reads it)", key=f"{key}-reason")
        columns: list[str] = []
        if entry is not None:
            columns = st.multiselect(
                "Columns (leave empty for the whole table)",
                [c.name for c in entry[1].all_columns],
                key=f"{key}-columns",
            )
        choices = _duration_choices(ctx.services.settings)
        period = st.selectbox("How long", list(choices), key=f"{key}-period")
        until = st.date_input(
            "Until (when 'Until a date' is chosen)", value=None, key=f"{key}-until"
        )
        submitted = st.form_submit_button("Request access", type="primary")
    if submitted:
        with guard():
            duration = choices[period]
            _check_form(account=account, reason=reason)
            if period == UNTIL_DATE and until is None:
                raise InvalidInput("Pick the date until which access is needed.")
            st.session_state[Keys.LAST_ACCOUNT] = account
            changed: list[str] = []
            request = ctx.services.marketplace.submit(
                user.username,
                database=database,
                table=table,
                account=str(account or ""),
                reason=reason,
                duration=duration,
                until=until if period == UNTIL_DATE else None,
                columns=columns or None,
                on_catalog_change=changed.append,
            )
            for note in changed:
                st.info(md(note))
            kind, message = describe_outcome(request)
            getattr(st, kind)(message)


UNTIL_DATE = "Until a date"


def _account_index(user: User) -> int | None:
    """Preselect the only account, or the one this person used last; else none at all."""
    if len(user.accounts) == 1:
        return 0
    last = st.session_state.get(Keys.LAST_ACCOUNT)
    return user.accounts.index(last) if last in user.accounts else None


def _check_form(*, account: object, reason: str) -> None:
    """What the form itself can tell before asking: no account picked, a reason too long."""
    problems = [] if account else ["Pick the consumer account the access is for."]
    length = len(reason.strip())  # as the use case counts it
    over = length - policy.MAX_REASON
    if over > 0:
        problems.append(
            f"The reason is too long: {length:,} characters, {over:,} more than the "
            f"{policy.MAX_REASON:,} allowed. Shorten it; your text is kept in the form."
        )
    if problems:
        raise InvalidInput(" ".join(problems))


def _duration_choices(settings: Settings) -> dict[str, timedelta | None]:
    """The request form's durations: none, 7/30/90 days, a date, and in demo a few minutes."""
    choices: dict[str, timedelta | None] = {"No end date": None}
    if settings.mode is Mode.DEMO:
        minutes = settings.demo_minutes
        unit = "minute" if minutes == 1 else "minutes"
        choices[f"{minutes} {unit} (demo, to watch expiry)"] = timedelta(minutes=minutes)
    choices.update({f"{d} days": timedelta(days=d) for d in DURATION_CHOICES})
    choices[UNTIL_DATE] = None
    return choices


OPEN_STATUSES = frozenset(
    {Status.PENDING_APPROVAL, Status.GRANTING, Status.GRANTED, Status.FAILED, Status.REVOKING,
     Status.REVOKE_FAILED}
)  # fmt: skip
CLOSED_STATUSES = frozenset(Status) - OPEN_STATUSES
_STATUS_COLOURS = {
    Status.GRANTED: "green",
    Status.PENDING_APPROVAL: "blue",
    Status.DENIED: "orange",
    Status.FAILED: "red",
    Status.REVOKE_FAILED: "red",
}


def status_text(status: Status) -> str:
    return status.value.replace("_", " ")


def outcome_lines(
    request: AccessRequest, *, approvals: Sequence[Approval] = (), progress: str = ""
) -> list[str]:
    """Where a request stands, in sentences: who approved or denied it and when, with their
    comments, one line per approval of a multi-step request.

    Plain text (escape it for markdown), such as "denied by sam on 1 Dec 2026 14:02 UTC:
    use the aggregated view".
    """
    lines = [
        f"approved by {a.label} on {when(a.at)}" + (f": {a.comment}" if a.comment else "")
        for a in approvals
    ]
    if request.status is Status.PENDING_APPROVAL:
        lines.append(f"waiting for approval since {when(request.created_at)}: {progress}")
    elif request.status is Status.DENIED or (request.decided_by and not approvals):
        verb = "denied" if request.status is Status.DENIED else "approved"
        line = f"{verb} by {request.decided_by} on {when(request.decided_at)}"
        lines.append(line + (f": {request.comment}" if request.comment else ""))
    elif not request.decided_by and request.granted_at:
        lines.append(
            f"granted at once by the policy on {when(request.granted_at)}: {request.policy_reason}"
        )
    if request.status is Status.GRANTED:
        lines.append(
            f"access ends {when(request.expires_at)}" if request.expires_at else "no end date"
        )
    elif request.status is Status.REVOKED:
        line = f"revoked by {request.ended_by} on {when(request.ended_at)}"
        lines.append(line + (f": {request.end_comment}" if request.end_comment else ""))
    elif request.status is Status.EXPIRED:
        lines.append(f"expired on {when(request.ended_at or request.expires_at)}")
    elif request.status is Status.CANCELLED:
        lines.append(f"cancelled on {when(request.updated_at)}")
    elif request.status in (Status.FAILED, Status.REVOKE_FAILED):
        what = "the grant" if request.status is Status.FAILED else "revoking"
        lines.append(f"{what} failed: {failure_text(request.error, request.error_code)}")
    elif request.status in (Status.GRANTING, Status.REVOKING):
        lines.append(f"{status_text(request.status)} since {when(request.updated_at)}")
    return lines


def request_card(
    request: AccessRequest,
    *,
    approvals: Sequence[Approval] = (),
    progress: str = "",
    new: bool = False,
) -> None:
    """A request's card body: scope, account and status, then its outcome as text."""
    colour = _STATUS_COLOURS.get(request.status, "gray")
    marker = " :violet-badge[new]" if new else ""
    st.markdown(
        f"**{md(scope_text(request.scope))}** for {md(account_label(request.account))} "
        f":{colour}-badge[{status_text(request.status)}]{marker}"
    )
    for line in outcome_lines(request, approvals=approvals, progress=progress):
        st.markdown(md(line[0].upper() + line[1:]))
    st.caption(
        f"Request {md(request.id)} · requested {md(when(request.created_at))} · "
        f"reason: {md(request.reason)}"
    )


def ram_note(account: str) -> None:
    """What the administrator of an account outside the Organization must do first."""
    steps = notices.ram_steps(account)
    st.warning(md(steps.before))
    st.code("\n".join(steps.commands), language="bash")
    st.caption(md(steps.after))


# A click on any cell of a row opens it, as does the row's own checkbox.
ROW_CLICK: Any = ["single-row", "single-cell"]


def picked_row(event: Any) -> int | None:
    """The row a person picked in a table drawn with ``selection_mode=ROW_CLICK``."""
    selection = event.selection
    if selection.rows:
        return int(selection.rows[0])
    if selection.cells:
        return int(selection.cells[0][0])
    return None


def badges_frame(rows: list[Any]) -> pd.DataFrame:
    return pd.DataFrame([row.__dict__ for row in rows]).fillna("")


__all__ = ["Context", "Keys", "browse", "context", "guard", "pages_for", "request_form"]
