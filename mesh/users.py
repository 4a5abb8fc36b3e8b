"""The users file: streamlit-authenticator's format, plus roles, accounts and owner_of.

```yaml
cookie: {name: mesh_marketplace, expiry_days: 1}
credentials:
  usernames:
    carol:
      first_name: Carol
      last_name: Chen
      email: carol@example.com
      password: $2b$12$...        # a bcrypt hash, never plain text
      roles: [consumer]
      accounts: ["444455556666"]  # consumer accounts this user may request for
      owner_of: []                # producer accounts whose requests this user decides
      groups: []                  # approver groups of the approval policy (MESH_POLICY)
```
The file is re-read whenever it changes, so every action checks the user's current roles.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from mesh.errors import SettingError
from mesh.models import Role, User
from mesh.policy import is_valid_account

_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")


@dataclass(frozen=True, kw_only=True)
class Directory:
    """Every user, plus the credentials and cookie options streamlit-authenticator needs."""

    users: dict[str, User]
    credentials: dict[str, Any]
    cookie_name: str
    cookie_expiry_days: float

    def get(self, username: str | None) -> User | None:
        return self.users.get((username or "").strip().lower())


def _bad(path: Path, what: str) -> SettingError:
    return SettingError(f"MESH_USERS file {path} is invalid: {what}; fix the file and start again.")


def _accounts(path: Path, username: str, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad(path, f"{key} of user {username!r} must be a list of 12-digit account ids")
    accounts = tuple(str(a).strip() for a in value)
    wrong = [a for a in accounts if not is_valid_account(a)]
    if wrong:
        raise _bad(
            path,
            f"{key} of user {username!r} holds {wrong[0]!r}, which is not a "
            "12-digit account id (quote ids in YAML)",
        )
    return accounts


def _user(path: Path, username: str, entry: Any) -> User:
    if not isinstance(entry, dict):
        raise _bad(path, f"user {username!r} must be a mapping")
    if not _BCRYPT.match(str(entry.get("password", ""))):
        raise _bad(
            path,
            f"the password of user {username!r} is not a bcrypt hash "
            "(make one with `python -m mesh hash-password`)",
        )
    raw_roles = entry.get("roles") or []
    if not isinstance(raw_roles, list) or not all(isinstance(r, str) for r in raw_roles):
        raise _bad(
            path, f"roles of user {username!r} must be a list such as [consumer]; got {raw_roles!r}"
        )
    unknown = [r for r in raw_roles if r not in {role.value for role in Role}]
    if unknown:
        raise _bad(
            path, f"user {username!r} has role {unknown[0]!r}; roles are consumer, owner and admin"
        )
    groups = entry.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) and g.strip() for g in groups):
        raise _bad(path, f"groups of user {username!r} must be a list such as [privacy-office]")
    name = " ".join(str(entry.get(k) or "") for k in ("first_name", "last_name")).strip()
    return User(
        username=username,
        name=name or str(entry.get("name") or username),
        email=str(entry.get("email") or ""),
        roles=frozenset(Role(r) for r in raw_roles),
        accounts=_accounts(path, username, "accounts", entry.get("accounts")),
        owner_of=frozenset(_accounts(path, username, "owner_of", entry.get("owner_of"))),
        groups=frozenset(g.strip().lower() for g in groups),
    )


def parse(path: Path, document: Any) -> Directory:
    """Validate a parsed users file and build the directory."""
    if not isinstance(document, dict):
        raise _bad(path, "the top level must be a mapping with a credentials key")
    credentials_section = document.get("credentials") or {}
    if not isinstance(credentials_section, dict):
        raise _bad(path, "credentials must be a mapping with a usernames key")
    usernames = credentials_section.get("usernames")
    if not isinstance(usernames, dict) or not usernames:
        raise _bad(path, "credentials.usernames must list at least one user")
    users = {}
    for raw_name, entry in usernames.items():
        username = str(raw_name).strip().lower()
        users[username] = _user(path, username, entry)
    cookie = document.get("cookie") or {}
    if not isinstance(cookie, dict):
        raise _bad(path, "cookie must be a mapping such as {name: mesh_marketplace_auth}")
    if "key" in cookie:
        raise _bad(path, "cookie.key must not be in the users file; set MESH_COOKIE_KEY instead")
    credentials = {
        "usernames": {
            str(k).strip().lower(): {**copy.deepcopy(v), "roles": list(v.get("roles") or [])}
            for k, v in usernames.items()
        }
    }
    return Directory(
        users=users,
        credentials=credentials,
        cookie_name=str(cookie.get("name") or "mesh_marketplace_auth"),
        cookie_expiry_days=float(cookie.get("expiry_days") or 1),
    )


def load(path: Path) -> Directory:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _bad(path, f"it cannot be read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise _bad(path, f"it is not valid YAML ({str(exc).splitlines()[0]})") from exc
    return parse(path, document)


class UserFile:
    """A users file that is read again whenever its modification time changes.

    ``groups`` adds approver-group memberships that the approval policy lists (group name
    to usernames) to those the file gives.
    """

    def __init__(self, path: Path, *, groups: Mapping[str, Iterable[str]] | None = None) -> None:
        self.path = path
        self.groups = {g: frozenset(members) for g, members in (groups or {}).items()}
        self._stamp: float | None = None
        self._directory: Directory | None = None

    def directory(self) -> Directory:
        stamp = self.path.stat().st_mtime_ns if self.path.exists() else -1
        if self._directory is None or stamp != self._stamp:
            loaded = load(self.path)
            self._directory = replace(
                loaded,
                users={
                    name: replace(
                        user,
                        groups=user.groups
                        | {g for g, members in self.groups.items() if name in members},
                    )
                    for name, user in loaded.users.items()
                },
            )
            self._stamp = stamp
        return self._directory

    def get(self, username: str | None) -> User | None:
        return self.directory().get(username)

    def everyone(self) -> list[User]:
        return list(self.directory().users.values())
