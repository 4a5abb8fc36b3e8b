"""Sign-in through the organisation's identity provider (MESH_AUTH=oidc), without Streamlit.

Streamlit's ``st.login`` does the OpenID Connect part (Authlib) and keeps the ID token's
claims in its own signed cookie. That cookie cannot be revoked, so it never lets anyone in
by itself: its claims open a server-side session here, the same kind as a password
sign-in (random id, absolute expiry, idle timeout), and only once per ID token. Sign-out
revokes that session, so a replayed cookie is refused. See docs/decisions/0009-oidc.md.

Who may do what comes from the role map on every lookup: ``OidcUsers`` is the users file's
stand-in, a directory of the people who have signed in, each mapped again from their last
claims whenever the role map changes. The claims are kept in the store, so every replica
knows everyone who signed in on any of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from mesh.approval import ApprovalPolicy
from mesh.errors import SettingError
from mesh.models import Action, User
from mesh.rolemap import RoleMapFile, claim_groups, no_access_sentence, username_of
from mesh.settings import Settings
from mesh.signin import SignedIn, SignIn, _event
from mesh.users import Directory, UserFile
from mesh.workflow import iso

COOKIE_NAME = "mesh_marketplace_auth"
# An ID token older than this does not open a session: the person signs in again.
FRESH_FOR = timedelta(minutes=10)
# Each ID token opens one session; the store's single-use link table remembers which.
_USED = "oidc-sign-in"


def _fingerprint(sub: str) -> str:
    """What a session is bound to instead of a password hash: the identity's sub."""
    return "oidc:" + hashlib.sha256(sub.encode()).hexdigest()[:32]


def token_marker(claims: Mapping[str, Any]) -> str:
    """A stable name for one ID token: its issuer, subject, issue time and nonce."""
    parts = [str(claims.get(k) or "") for k in ("iss", "sub", "iat", "nonce")]
    return "oidc:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class People(Protocol):
    """Where the people's claims are kept: the store (mesh/store/people.py)."""

    def remember_person(self, username: str, claims: Mapping[str, Any], *, at: str) -> None: ...

    def person_claims(self, username: str) -> dict[str, Any] | None: ...

    def people_claims(self) -> list[dict[str, Any]]: ...


class _InMemory:
    """People kept in this process only (tests that need no store)."""

    def __init__(self) -> None:
        self._claims: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def remember_person(self, username: str, claims: Mapping[str, Any], *, at: str) -> None:
        with self._lock:
            self._claims[username] = dict(claims)

    def person_claims(self, username: str) -> dict[str, Any] | None:
        with self._lock:
            return self._claims.get(username)

    def people_claims(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._claims.values())


class OidcUsers(UserFile):
    """The users known from their claims, mapped through the role map on every lookup."""

    def __init__(
        self,
        role_map: RoleMapFile,
        *,
        groups: Mapping[str, Iterable[str]] | None = None,
        people: People | None = None,
    ) -> None:
        super().__init__(role_map.path, groups=groups)
        self.role_map = role_map
        self.people: People = people if people is not None else _InMemory()

    def remember(self, claims: Mapping[str, Any], *, at: str = "") -> User | None:
        """Map these claims; a person who maps to a user is remembered for later lookups."""
        user = self.role_map.user(claims)
        if user is not None:
            self.people.remember_person(user.username, claims, at=at)
        return user

    def claims_of(self, username: str) -> dict[str, Any] | None:
        return self.people.person_claims(username)

    def get(self, username: str | None) -> User | None:
        """One person, mapped from their last claims (or a role-map stand-in)."""
        name = (username or "").strip().lower()
        claims = self.people.person_claims(name) if name else None
        if claims is None:
            return super().get(name)
        user = self.role_map.user(claims)
        return self._with_policy_groups(user) if user is not None else None

    def _with_policy_groups(self, user: User) -> User:
        """``user`` with the policy's groups that name them as members, too."""
        extra = {g for g, members in self.groups.items() if user.username in members}
        return dataclasses.replace(user, groups=user.groups | extra)

    def directory(self) -> Directory:
        """Who may do what: the role map's entries, then the people known by their claims.

        Before anyone has signed in, each group of the role map stands for its members
        (``group:NAME``, a name no ID token gives), and each users entry for that person:
        without them a request would look as if nobody could ever approve it.
        """
        known = self.people.people_claims()
        mapped = self.role_map.role_map()
        stand_ins = [
            {"sub": f"group:{name}", self.role_map.claim: [name]} for name in mapped.groups
        ]
        stand_ins += [{"sub": key, "email": key if "@" in key else ""} for key in mapped.users]
        users: dict[str, User] = {}
        for claims in stand_ins + known:
            user = self.role_map.user(claims)
            if user is not None:
                users[user.username] = self._with_policy_groups(user)
        return Directory(users=users, credentials={}, cookie_name=COOKIE_NAME, cookie_expiry_days=1)


class OidcSignIn(SignIn):
    """The sign-in use cases for identities from the provider: open, refuse, resume."""

    users: OidcUsers

    def _credentials(self, name: str) -> tuple[User | None, str]:
        user = self.users.get(name)
        claims = self.users.claims_of(name) if user is not None else None
        return user, _fingerprint(str(claims.get("sub"))) if claims else ""

    def open_for(self, claims: Mapping[str, Any], *, client: str) -> SignedIn | str:
        """Open a session for a fresh ID token's claims, or say why not (audited)."""
        now = self.clock()
        user = self.users.remember(claims, at=iso(now))
        if user is None:
            self.refuse(claims, client=client, why="no mapped group")
            return no_access_sentence(claims, claim=self.users.role_map.claim)
        issued = claims.get("iat")
        if isinstance(issued, int | float) and (
            datetime.fromtimestamp(issued, tz=now.tzinfo) < now - FRESH_FOR
        ):
            self.refuse(claims, client=client, why="the identity provider's sign-in is too old")
            return "stale"
        if not self.store.use_link(
            token_marker(claims),
            request_id=_USED,
            action="signed_in",
            used_by=user.username,
            at=iso(now),
        ):
            self.refuse(
                claims, client=client, why="the identity provider's sign-in was used before"
            )
            return "used"
        return self._open(
            user,
            _fingerprint(str(claims.get("sub"))),
            client=client,
            now=now,
            via="oidc",
            sub=str(claims.get("sub") or ""),
            email=str(claims.get("email") or ""),
        )

    def refuse(self, claims: Mapping[str, Any], *, client: str, why: str) -> None:
        """Audit a sign-in through the provider that opened no session."""
        self.store.append(
            _event(
                Action.SIGN_IN_FAILED,
                username_of(claims) or "(unknown)",
                at=self.clock(),
                client=client,
                via="oidc",
                why=why,
                sub=str(claims.get("sub") or ""),
                groups=list(claim_groups(claims, self.users.role_map.claim)),
            )
        )


def users_for(settings: Settings, rules: ApprovalPolicy, people: People | None = None) -> OidcUsers:
    """The role map's directory over ``people`` (the store); a broken role map stops start-up."""
    if settings.role_map_path is None:
        raise SettingError("MESH_AUTH is oidc but MESH_ROLE_MAP is not set.")
    role_map = RoleMapFile(settings.role_map_path, claim=settings.groups_claim)
    role_map.role_map()
    return OidcUsers(
        role_map, groups={g: body.members for g, body in rules.groups.items()}, people=people
    )
