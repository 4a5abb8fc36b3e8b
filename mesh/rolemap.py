"""The role map (MESH_ROLE_MAP): identity-provider claims to the app's users.

With MESH_AUTH=oidc nobody has a password here: the identity provider says who a person is
and which groups they are in, and this file says what those groups may do.

```yaml
groups:                       # a group as the groups claim names it (MESH_GROUPS_CLAIM)
  data-owners:
    roles: [owner]
    owner_of: ["111122223333"]
  analysts:
    roles: [consumer]
    accounts: ["444455556666"]
  privacy:
    groups: [privacy-office]  # approver groups of the approval policy (MESH_POLICY)
users:                        # optional: one person, by email or by the token's sub
  carol@example.com:
    roles: [admin]
```
A person gets the union of every entry that matches them. One whose claims match nothing
gets no user at all, and so no app: see ``RoleMapFile.user``. Like the policy file, a file
with any problem is refused whole, with one sentence naming the key path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mesh import yamlfile
from mesh.errors import SettingError
from mesh.models import Role, User
from mesh.policy import is_valid_account


class RoleMapError(SettingError):
    """A role map that cannot be used; the message names the key path."""

    def __init__(self, source: str, path: str, what: str) -> None:
        where = f" at {path}" if path else ""
        super().__init__(f"MESH_ROLE_MAP file {source} is invalid{where}: {what}.")
        self.source = source
        self.path = path
        self.what = what


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _strings(raw: Any, what: str) -> Any:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) and x.strip() for x in raw):
        raise ValueError(f"must be a list of {what}")
    return raw


class Grant(_Model):
    """What one group, or one person, is given."""

    roles: tuple[Role, ...] = ()
    accounts: tuple[str, ...] = ()
    owner_of: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    @field_validator("roles", mode="before")
    @classmethod
    def _roles(cls, raw: Any) -> Any:
        roles = _strings(raw, "roles, such as [consumer]")
        known = {r.value for r in Role}
        for role in roles:
            if role.strip().lower() not in known:
                raise ValueError(f"{role!r} is not a role; roles are consumer, owner and admin")
        return tuple(r.strip().lower() for r in roles)

    @field_validator("accounts", "owner_of", mode="before")
    @classmethod
    def _accounts(cls, raw: Any) -> Any:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise ValueError('must be a list of 12-digit account ids, such as ["111122223333"]')
        # Checked one by one later, so that the error names the item ([i]).
        return tuple(str(a).strip() for a in raw)

    @field_validator("groups", mode="before")
    @classmethod
    def _groups(cls, raw: Any) -> Any:
        return tuple(g.strip().lower() for g in _strings(raw, "approver groups"))


class RoleMap(_Model):
    groups: dict[str, Grant] = Field(default_factory=dict)
    users: dict[str, Grant] = Field(default_factory=dict)

    @field_validator("groups", "users", mode="before")
    @classmethod
    def _keys(cls, raw: Any) -> Any:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise ValueError("must be a mapping of names to what they are given")
        out: dict[str, Any] = {}
        for key, value in raw.items():
            name = str(key).strip().lower()
            if not name:
                raise ValueError("holds an empty name")
            if name in out:
                raise ValueError(f"names {name!r} twice (names compare without case)")
            out[name] = {} if value is None else value
        return out

    def grants_for(self, *, sub: str, email: str, groups: Sequence[str]) -> list[Grant]:
        """Every entry that matches this person: their groups, then their email or sub."""
        found = [self.groups[g] for g in _normal(groups) if g in self.groups]
        keys = dict.fromkeys((email.strip().lower(), sub.strip().lower()))
        found += [self.users[k] for k in keys if k and k in self.users]
        return found


def _normal(groups: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(g.strip().lower() for g in groups if g.strip()))


# Reading the file --------------------------------------------------------------------------


def _first_problem(source: str, exc: ValidationError) -> RoleMapError:
    path, what = yamlfile.first_problem(exc, _SENTENCES)
    return RoleMapError(source, path, what)


_SENTENCES = {
    "extra_forbidden": "this key is unknown (check its spelling)",
    "enum": "this is not a role; roles are consumer, owner and admin",
}


def _check_accounts(document: RoleMap, source: str) -> None:
    for section in ("groups", "users"):
        entries: dict[str, Grant] = getattr(document, section)
        for name, grant in entries.items():
            for key in ("accounts", "owner_of"):
                for i, account in enumerate(getattr(grant, key)):
                    if not is_valid_account(str(account)):
                        raise RoleMapError(
                            source,
                            f"{section}.{name}.{key}[{i}]",
                            f"{account!r} is not a 12-digit account id (quote ids in YAML)",
                        )


def parse(document: Any, *, source: str = "(text)") -> RoleMap:
    """Validate a parsed role map; raises RoleMapError naming the first problem."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise RoleMapError(source, "", "the top level must be a mapping with groups (and users)")
    try:
        role_map = RoleMap.model_validate(document)
    except ValidationError as exc:
        raise _first_problem(source, exc) from None
    _check_accounts(role_map, source)
    if not role_map.groups and not role_map.users:
        raise RoleMapError(source, "", "it maps nobody: add at least one entry under groups")
    return role_map


class _Loader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice instead of keeping the last."""


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, yamlfile.no_duplicate_keys)


def loads(text: str, *, source: str = "(text)") -> RoleMap:
    return parse(yamlfile.parse(text, _Loader, source, RoleMapError), source=source)


def load(path: Path) -> RoleMap:
    text = yamlfile.read_text(path, RoleMapError)
    return loads(text, source=str(path))


# Claims to a user --------------------------------------------------------------------------


def claim_groups(claims: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    """The person's groups from the ID token: a list, or one string (some providers)."""
    raw = claims.get(claim)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list | tuple):
        return ()
    return tuple(str(g).strip() for g in raw if str(g).strip())


def username_of(claims: Mapping[str, Any]) -> str:
    """The name requests and the audit log use: the email when verified-looking, else sub."""
    email = str(claims.get("email") or "").strip().lower()
    return email or str(claims.get("sub") or "").strip()


def to_user(role_map: RoleMap, claims: Mapping[str, Any], *, claim: str) -> User | None:
    """The app's user for these claims, or None when nothing in the map matches them."""
    sub = str(claims.get("sub") or "").strip()
    if not sub:
        return None
    email = str(claims.get("email") or "").strip()
    grants = role_map.grants_for(sub=sub, email=email, groups=claim_groups(claims, claim))
    if not grants:
        return None
    user = User(
        username=username_of(claims),
        name=str(claims.get("name") or email or sub),
        email=email.lower(),
        roles=frozenset(r for g in grants for r in g.roles),
        accounts=tuple(dict.fromkeys(a for g in grants for a in g.accounts)),
        owner_of=frozenset(a for g in grants for a in g.owner_of),
        groups=frozenset(x for g in grants for x in g.groups),
    )
    return user if (user.roles or user.accounts or user.owner_of or user.groups) else None


def no_access_sentence(claims: Mapping[str, Any], *, claim: str) -> str:
    """What a person whose claims map to nothing is told."""
    groups = claim_groups(claims, claim)
    yours = ", ".join(groups) if groups else f"your identity provider sends none in {claim!r}"
    return (
        "No access yet: ask your platform team to add one of your groups "
        f"({yours}) to the role map."
    )


@dataclass
class RoleMapFile:
    """A role map read again whenever its modification time changes (so on every action)."""

    path: Path
    claim: str = "groups"
    _stamp: int | None = None
    _map: RoleMap | None = None

    def role_map(self) -> RoleMap:
        stamp = self.path.stat().st_mtime_ns if self.path.exists() else -1
        if self._map is None or stamp != self._stamp:
            self._map = load(self.path)
            self._stamp = stamp
        return self._map

    def user(self, claims: Mapping[str, Any]) -> User | None:
        return to_user(self.role_map(), claims, claim=self.claim)
