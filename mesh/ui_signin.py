"""Sign-in for the web app: the form, the session cookie, sign-out and the decision link.

The rules (throttling, one cost for every user name, sessions on the server) are in
mesh/signin.py; this module draws them. The form is our own and the cookie is written by a
small script, instead of streamlit-authenticator's login widget and cookie manager: the
authenticator is rebuilt on every run (its attempt counter reset each time), its cookie
holds only a user name and an expiry, and its cookie component sometimes never wrote the
cookie. streamlit-authenticator still defines the users file and hashes its passwords
(`python -m mesh hash-password`). See docs/decisions/0005-server-side-sessions.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from mesh.models import User
from mesh.services import Services
from mesh.settings import Mode
from mesh.signin import CookieCodec, Refused, Rules, SignIn
from mesh.ui import (
    PAGES_DIR,
    PASSWORD_HINT,
    Keys,
    account_label,
    client_ip,
    cookie_key,
    describe_user,
    flash,
    forget_session,
    md,
    signin_use_cases,
)

USERNAME = Keys.USERNAME
ENDED = "Your session has ended; sign in again."


def _use_cases(svc: Services) -> SignIn:
    return signin_use_cases(svc)


def _codec(svc: Services) -> CookieCodec:
    return CookieCodec(cookie_key(svc))


def _cookie_name(svc: Services) -> str:
    return svc.users.directory().cookie_name


def sign_in(svc: Services) -> User:
    """Show the sign-in form until someone signs in; return the signed-in user.

    Every run checks the server-side session (expiry, idle time, password, sign-out
    elsewhere); a session that is over shows the form again.
    """
    use_cases = _use_cases(svc)
    client = client_ip()
    if st.session_state.pop(Keys.SESSION_ENDED, False):  # a click found it over (ui.act)
        st.warning(ENDED)
    if st.session_state.pop(Keys.SIGN_OUT, False):
        _sign_out(svc, use_cases, client)
    session_id = st.session_state.get(Keys.SESSION_TOKEN)
    by_cookie = session_id is None
    if session_id is None:
        session_id = _from_cookie(svc, use_cases, client)
    if session_id is not None:
        resumed = use_cases.resume(session_id, client=client, by_cookie=by_cookie)
        if isinstance(resumed, User):
            st.session_state[Keys.SESSION_TOKEN] = session_id
            st.session_state[USERNAME] = resumed.username
            return resumed
        _forget()
        st.session_state[Keys.COOKIE_OUT] = ""  # delete the cookie that carried it
        st.warning(ENDED)
    # The form is drawn by the page the address names (a placeholder for each), not by the
    # frame: a widget's id includes the page's, and a session's first run has no page yet,
    # so a form drawn in the frame changed ids between its first and second run and lost
    # the first submit.
    no_pages(lambda: _sign_in_page(svc, use_cases, client))
    raise RuntimeError("unreachable: no_pages() stops the run")


def _sign_in_page(svc: Services, use_cases: SignIn, client: str) -> None:
    if _form(svc, use_cases, client) is not None:
        st.rerun()  # signed in: the next run draws the pages of this user's roles
    if st.query_params.get("link"):  # a decision link: come back to it after sign-in
        st.session_state[Keys.PENDING_LINK] = st.query_params["link"]
    _demo_hint(svc)
    cookie_writer(svc)


def _from_cookie(svc: Services, use_cases: SignIn, client: str) -> str | None:
    """The session id in this browser's cookie, once per browser session and value."""
    try:
        raw = st.context.cookies.get(_cookie_name(svc))
    except Exception:  # noqa: BLE001 - no client context (a bare script run)
        raw = None
    if not isinstance(raw, str) or not raw or st.session_state.get(Keys.COOKIE_TRIED) == raw:
        return None
    st.session_state[Keys.COOKIE_TRIED] = raw
    session_id = _codec(svc).decode(raw)
    if session_id is None:  # forged, alg=none, another key, expired: discard it
        use_cases.refuse_cookie(client=client, why="the cookie does not decode")
        st.session_state[Keys.COOKIE_OUT] = ""
    return session_id


def _form(svc: Services, use_cases: SignIn, client: str) -> User | None:
    with st.form(key="sign_in", clear_on_submit=True):
        st.subheader("Sign in to Mesh Marketplace")
        username = st.text_input("Username", key="sign_in_username", autocomplete="username")
        password = st.text_input(
            "Password", type="password", key="sign_in_password", autocomplete="current-password"
        )
        submitted = st.form_submit_button("Sign in")
    if not submitted:
        return None
    outcome = use_cases.attempt(username, password, client=client)
    if isinstance(outcome, Refused):
        st.error(outcome.message)
        return None
    st.session_state[Keys.SESSION_TOKEN] = outcome.session_id
    st.session_state[USERNAME] = outcome.user.username
    st.session_state[Keys.COOKIE_OUT] = _codec(svc).encode(
        outcome.session_id, expires_at=outcome.expires_at
    )
    return outcome.user


def _forget() -> None:
    for key in (Keys.SESSION_TOKEN, USERNAME):
        st.session_state.pop(key, None)


def _sign_out(svc: Services, use_cases: SignIn, client: str) -> None:
    session_id = st.session_state.get(Keys.SESSION_TOKEN)
    if session_id:
        use_cases.sign_out(session_id, st.session_state.get(USERNAME) or "", client=client)
    forget_session(svc)  # the cookie this browser session started with is over too


def cookie_writer(svc: Services) -> None:
    """Write (or delete) the session cookie in the browser: on every run, since a run can
    be cut short before the browser ran the script; an unchanged script is not run again.

    It cannot be HttpOnly: Streamlit serves no response a header could be set on, so a
    script writes it. What it carries is a random session id checked on the server.
    """
    value = st.session_state.get(Keys.COOKIE_OUT)
    if value is None:
        return
    max_age = int(Rules.from_settings(svc.settings).session_lifetime.total_seconds())
    write_cookie(_cookie_name(svc), value, max_age=max_age if value else 0, same_site="Strict")


def write_cookie(name: str, value: str, *, max_age: int, same_site: str) -> None:
    """Set a cookie on the app's page (Max-Age 0 deletes it), from a script in a frame."""
    cookie = json.dumps(f"{name}={value}").replace("<", "\\u003c")
    attributes = f"; Path=/; Max-Age={max_age}; SameSite={same_site}"
    st.iframe(
        "<script>const page = window.parent;"
        "const secure = page.location.protocol === 'https:' ? '; Secure' : '';"
        f"page.document.cookie = {cookie} + {json.dumps(attributes)} + secure;</script>",
        height="content",
    )


LINK_COOKIE = "mesh_pending_link"
"""Where a decision link followed before a sign-in through the identity provider waits: the
provider's redirect starts a new browser session, which keeps no session state and, coming
back to the app's root, no address either."""
LINK_COOKIE_MINUTES = 15


def keep_link_in_browser(token: str) -> None:
    """Keep ``token`` (a signed, single-use decision link, which only opens a confirmation)
    in the browser for the sign-in; SameSite=Lax, so the provider's redirect back sends it."""
    write_cookie(LINK_COOKIE, token, max_age=LINK_COOKIE_MINUTES * 60, same_site="Lax")


def _demo_hint(svc: Services) -> None:
    if svc.settings.mode is not Mode.DEMO:
        return
    names = svc.settings
    rows = [
        {
            "user": u.username,
            "roles": describe_user(u),
            "accounts": ", ".join(account_label(a, names) for a in u.accounts),
            "owner of": ", ".join(account_label(a, names) for a in sorted(u.owner_of)),
        }
        for u in svc.users.directory().users.values()
    ]
    st.info(f"Demo mode: every demo user's password is **{PASSWORD_HINT}**.")
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        key="demo_users",
        column_config={
            "user": st.column_config.TextColumn("user", width="small"),
            "accounts": st.column_config.TextColumn("accounts", width="large"),
        },
    )


# Every page's address, so that a link to one (a decision link, a bookmark) shows the sign-in
# form instead of "page not found", and comes back to the page once signed in.
PAGE_PATHS = (
    "databases",
    "database",
    "table",
    "my-requests",
    "approvals",
    "dashboard",
    "audit",
    "drift",
    "notifications",
)


def no_pages(body: Callable[[], None] | None = None) -> None:
    """Before sign-in, every address shows only the sign-in form (``body``), or nothing
    more than the frame drew (a start-up failure)."""
    placeholders = [
        st.Page(_signed_out(path, body), title="Sign in", url_path=path) for path in PAGE_PATHS
    ]
    page = st.navigation(
        [
            st.Page(
                _signed_out("sign-in", body), title="Sign in", url_path="sign-in", default=True
            ),
            *placeholders,
        ],
        position="hidden",
    )
    page.run()
    st.stop()


def _signed_out(path: str, body: Callable[[], None] | None) -> Any:
    def page() -> None:
        """The sign-in form, whatever page the address names."""
        if body is not None:
            body()

    page.__name__ = page.__qualname__ = f"signed_out_{path.replace('-', '_')}"
    return page


def resume_decision_link(user: User, page: Any) -> None:
    """After sign-in, go back to the decision link that was followed before it."""
    token = st.session_state.get(Keys.PENDING_LINK)
    if not token and page.url_path != "approvals":
        # A new browser session keeps only the address: a link left in it on another page
        # is still the one to open.
        token = st.query_params.get("link")
    if not token:
        token = _kept_link()
    if not token:
        return
    st.session_state.pop(Keys.PENDING_LINK, None)
    if not user.can_approve:
        flash(
            "That link is a decision link for data owners and admins; your user cannot "
            "decide requests.",
            "warning",
        )
        return
    if page.url_path == "approvals" and st.query_params.get("link") == token:
        return
    st.switch_page(f"{PAGES_DIR}/approvals.py", query_params={"link": token})


def _kept_link() -> str | None:
    """The decision link kept in a cookie across the provider's sign-in, once a session."""
    try:
        kept = st.context.cookies.get(LINK_COOKIE)
    except Exception:  # noqa: BLE001 - no client context (a bare script run)
        kept = None
    if not isinstance(kept, str) or not kept or st.session_state.get(Keys.LINK_COOKIE_TAKEN):
        return None
    st.session_state[Keys.LINK_COOKIE_TAKEN] = kept  # the sidebar then deletes the cookie
    return kept


def sidebar(svc: Services, user: User) -> None:
    with st.sidebar:
        st.caption(f"Signed in as **{md(user.username)}** ({md(describe_user(user))})")
        if svc.settings.mode is Mode.DEMO:
            st.caption("Demo mesh on a local moto stand-in")
        st.button("Sign out", key="sign_out", on_click=_request_sign_out)
        cookie_writer(svc)
        if st.session_state.get(Keys.LINK_COOKIE_TAKEN):
            write_cookie(LINK_COOKIE, "", max_age=0, same_site="Lax")


def _request_sign_out() -> None:
    st.session_state[Keys.SIGN_OUT] = True
