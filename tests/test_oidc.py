"""Single sign-on (MESH_AUTH=oidc): the session rules over a real store, then a real OpenID
provider (oidc-provider-mock) and Debian chromium against one app."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mesh.models import Role
from mesh.oidc import OidcSignIn, OidcUsers
from mesh.rolemap import RoleMapFile
from mesh.signin import Rules, SignedIn
from mesh.store import Store

ROLE_MAP = """
groups:
  data-owners: {roles: [owner], owner_of: ["111122223333"]}
  analysts: {roles: [consumer], accounts: ["444455556666"]}
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def role_map(tmp_path: Path) -> Path:
    path = tmp_path / "rolemap.yaml"
    path.write_text(ROLE_MAP, encoding="utf-8")
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(tmp_path: Path, role_map: Path, clock: Clock) -> OidcSignIn:
    store = Store(tmp_path / "mesh.db")
    store.migrate()
    return OidcSignIn(store, OidcUsers(RoleMapFile(role_map)), Rules(), clock=clock)


def claims(clock: Clock, sub: str = "s-olga", **more: Any) -> dict[str, Any]:
    issued = int(clock.now.timestamp())
    return {"iss": "http://idp", "sub": sub, "iat": issued, "nonce": sub + str(issued)} | more


def actions(auth: OidcSignIn) -> list[tuple[str, str, Any]]:
    rows = sorted(auth.store.audit(), key=lambda e: e.id)
    return [(e.action, e.actor, e.details.get("why")) for e in rows]


def test_a_fresh_id_token_opens_one_server_side_session_audited_with_its_sub(
    auth: OidcSignIn, clock: Clock
) -> None:
    # GIVEN an owner's fresh ID token WHEN it signs in
    token = claims(clock, email="Olga@Example.com", groups=["data-owners"])
    opened = auth.open_for(token, client="10.0.0.1")
    # THEN a session opens for the mapped user, audited with the sub and email
    assert isinstance(opened, SignedIn)
    assert opened.user.username == "olga@example.com" and opened.user.roles == {Role.OWNER}
    assert opened.expires_at == clock.now + Rules().session_lifetime
    assert auth.resume(opened.session_id, client="10.0.0.1") == opened.user
    event = next(e for e in auth.store.audit() if e.action == "signed_in")
    assert (event.details["sub"], event.details["email"]) == ("s-olga", "Olga@Example.com")


def test_the_same_id_token_never_opens_a_second_session(auth: OidcSignIn, clock: Clock) -> None:
    # GIVEN an ID token that opened a session, which was then signed out
    token = claims(clock, groups=["analysts"])
    first = auth.open_for(token, client="c")
    assert isinstance(first, SignedIn)
    auth.sign_out(first.session_id, first.user.username, client="c")
    # WHEN the same claims (Streamlit's replayed identity cookie) try again
    again = auth.open_for(token, client="c")
    # THEN no session opens, the old one stays over, and both refusals are audited
    assert again == "used"
    assert auth.resume(first.session_id, client="c") == "already ended (signed out)"
    assert [a for a, _, _ in actions(auth)] == [
        "signed_in",
        "signed_out",
        "sign_in_failed",
        "session_refused",
    ]


def test_an_old_id_token_does_not_open_a_session(auth: OidcSignIn, clock: Clock) -> None:
    # GIVEN an ID token issued an hour ago WHEN it signs in THEN it is refused and audited
    token = claims(clock, groups=["analysts"])
    clock.now += timedelta(hours=1)
    assert auth.open_for(token, client="c") == "stale"
    assert actions(auth)[-1][2] == "the identity provider's sign-in is too old"


def test_claims_that_map_to_nothing_are_refused_with_the_no_access_sentence(
    auth: OidcSignIn, clock: Clock
) -> None:
    # GIVEN a person in no mapped group WHEN they sign in
    said = auth.open_for(claims(clock, email="x@y.z", groups=["sales"]), client="c")
    # THEN they are told what to ask for, and the refusal is audited with their groups
    assert said == (
        "No access yet: ask your platform team to add one of your groups (sales) to the role map."
    )
    refused = next(e for e in auth.store.audit() if e.action == "sign_in_failed")
    assert (refused.actor, refused.details["groups"]) == ("x@y.z", ["sales"])


def test_a_changed_role_map_takes_effect_on_the_next_lookup(
    auth: OidcSignIn, clock: Clock, role_map: Path
) -> None:
    # GIVEN an analyst signed in
    opened = auth.open_for(claims(clock, email="a@b.c", groups=["analysts"]), client="c")
    assert isinstance(opened, SignedIn)
    # WHEN the platform team maps the group to another account
    role_map.write_text(ROLE_MAP.replace("444455556666", "777788889999"), encoding="utf-8")
    os.utime(role_map, ns=(role_map.stat().st_mtime_ns + 10**9,) * 2)
    # THEN the next resume sees it; and removing the group ends the session
    resumed = auth.resume(opened.session_id, client="c")
    assert not isinstance(resumed, str) and resumed.accounts == ("777788889999",)
    role_map.write_text("groups:\n  others: {roles: [admin]}\n", encoding="utf-8")
    os.utime(role_map, ns=(role_map.stat().st_mtime_ns + 2 * 10**9,) * 2)
    assert auth.resume(opened.session_id, client="c") == "unknown user"
