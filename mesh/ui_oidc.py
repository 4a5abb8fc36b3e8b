"""Sign-in through the identity provider (MESH_AUTH=oidc): Streamlit's st.login, then our session.

``st.login`` runs the OpenID Connect flow (Authlib) and keeps the ID token's claims in
Streamlit's own identity cookie, which cannot be revoked. So that cookie only opens a
server-side session once, while its ID token is fresh (mesh/oidc.py); every run after that
checks the session as password sign-in does, and sign-out revokes it and calls st.logout.
The page sections (no_pages, the cookie writer) are the password sign-in's (ui_signin).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from mesh.models import User
from mesh.oidc import OidcSignIn, OidcUsers, token_marker
from mesh.rolemap import no_access_sentence
from mesh.services import Services
from mesh.signin import CookieCodec, SignedIn
from mesh.ui import Keys, client_ip, cookie_key, forget_session, md, signin_use_cases
from mesh.ui_signin import ENDED, USERNAME, cookie_writer, keep_link_in_browser, no_pages

_REFUSED = "mesh_oidc_refused"  # the ID tokens whose refusal this browser session audited
SIGN_IN_AGAIN = "Sign in again through your organisation to continue."


def sign_in(svc: Services) -> User:
    """Return the signed-in user; otherwise show the sign-in or no-access page and stop."""
    users = svc.users
    use_cases = signin_use_cases(svc)
    if not isinstance(users, OidcUsers) or not isinstance(use_cases, OidcSignIn):
        raise RuntimeError("MESH_AUTH=oidc without the role map's directory")
    client = client_ip()
    if st.session_state.pop(Keys.SESSION_ENDED, False):  # a click found it over (ui.act)
        st.warning(ENDED)
    if st.session_state.pop(Keys.SIGN_OUT, False):
        _sign_out(svc, use_cases, client)
    if not st.user.is_logged_in:
        no_pages(lambda: _sign_in_page(svc, ""))
    claims: dict[str, Any] = dict(st.user.to_dict())
    user = users.role_map.user(claims)  # remembered in the store when a session opens
    if user is None:
        _refuse_once(use_cases, claims, client)
        no_pages(lambda: _no_access_page(svc, claims))
        raise RuntimeError("unreachable: no_pages() stops the run")
    resumed = _resume(svc, use_cases, client)
    if resumed is not None and resumed.username == user.username:
        return resumed
    opened = use_cases.open_for(claims, client=client)
    if isinstance(opened, SignedIn):
        st.session_state[Keys.SESSION_TOKEN] = opened.session_id
        st.session_state[USERNAME] = opened.user.username
        st.session_state[Keys.COOKIE_OUT] = CookieCodec(cookie_key(svc)).encode(
            opened.session_id, expires_at=opened.expires_at
        )
        return opened.user
    # A used or old ID token (a replayed identity cookie, or a session that ended): the
    # provider must be asked again.
    no_pages(lambda: _sign_in_page(svc, SIGN_IN_AGAIN))
    raise RuntimeError("unreachable: no_pages() stops the run")


def _resume(svc: Services, use_cases: OidcSignIn, client: str) -> User | None:
    session_id = st.session_state.get(Keys.SESSION_TOKEN)
    by_cookie = session_id is None
    if session_id is None:
        session_id = _from_cookie(svc, use_cases, client)
    if session_id is None:
        return None
    resumed = use_cases.resume(session_id, client=client, by_cookie=by_cookie)
    if isinstance(resumed, User):
        st.session_state[Keys.SESSION_TOKEN] = session_id
        st.session_state[USERNAME] = resumed.username
        return resumed
    for key in (Keys.SESSION_TOKEN, USERNAME):
        st.session_state.pop(key, None)
    st.session_state[Keys.COOKIE_OUT] = ""
    return None


def _from_cookie(svc: Services, use_cases: OidcSignIn, client: str) -> str | None:
    """The session id in this browser's cookie, once per browser session and value."""
    try:
        raw = st.context.cookies.get(svc.users.directory().cookie_name)
    except Exception:  # noqa: BLE001 - no client context (a bare script run)
        raw = None
    if not isinstance(raw, str) or not raw or st.session_state.get(Keys.COOKIE_TRIED) == raw:
        return None
    st.session_state[Keys.COOKIE_TRIED] = raw
    session_id = CookieCodec(cookie_key(svc)).decode(raw)
    if session_id is None:
        use_cases.refuse_cookie(client=client, why="the cookie does not decode")
        st.session_state[Keys.COOKIE_OUT] = ""
    return session_id


def _refuse_once(use_cases: OidcSignIn, claims: dict[str, Any], client: str) -> None:
    audited: set[str] = st.session_state.setdefault(_REFUSED, set())
    marker = token_marker(claims)
    if marker not in audited:
        use_cases.refuse(claims, client=client, why="no mapped group")
        audited.add(marker)


def _sign_out(svc: Services, use_cases: OidcSignIn, client: str) -> None:
    session_id = st.session_state.get(Keys.SESSION_TOKEN)
    if session_id:
        use_cases.sign_out(session_id, st.session_state.get(USERNAME) or "", client=client)
    forget_session(svc)
    st.logout()  # Streamlit's identity cookie, and the provider's session when it offers that
    st.stop()


def _sign_in_page(svc: Services, note: str) -> None:
    st.subheader("Sign in to Mesh Marketplace")
    if note:
        st.info(note)
    if st.query_params.get("link"):  # a decision link: come back to it after sign-in
        st.session_state[Keys.PENDING_LINK] = st.query_params["link"]
        keep_link_in_browser(st.query_params["link"])  # st.login's redirect loses the rest
    if st.button("Sign in with your organisation", key="oidc_sign_in", type="primary"):
        st.login()
    cookie_writer(svc)


def _no_access_page(svc: Services, claims: dict[str, Any]) -> None:
    st.subheader("No access yet")
    who = claims.get("email") or claims.get("sub") or ""
    st.warning(md(no_access_sentence(claims, claim=svc.settings.groups_claim)))
    st.caption(f"Signed in at your identity provider as **{md(str(who))}**.")
    if st.button("Sign out", key="oidc_no_access_sign_out"):
        st.logout()
    cookie_writer(svc)
