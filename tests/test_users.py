"""The users file: the shipped demo users, every way a file can be wrong, and live re-reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from mesh import users
from mesh.demo import data
from mesh.errors import SettingError
from mesh.models import Role
from mesh.settings import DEMO_USERS

DEMO_PASSWORD = "mesh-demo"
# Cost 4 keeps hashing fast; the users file accepts any bcrypt cost.
HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()

CAROL = f"""
cookie: {{name: test_cookie, expiry_days: 2}}
credentials:
  usernames:
    Carol:
      first_name: Carol
      last_name: Chen
      email: carol@example.com
      password: "{HASH}"
      roles: [consumer]
      accounts: ["444455556666"]
"""


def users_yaml(*, roles: str = "[consumer]", extra: str = "", top: str = "") -> str:
    """A one-user file (carol) with the given roles and extra user keys."""
    lines = [
        top,
        "credentials:",
        "  usernames:",
        "    carol:",
        f'      password: "{HASH}"',
        f"      roles: {roles}",
        *(f"      {line}" for line in extra.splitlines()),
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def write(tmp_path: Path) -> Any:
    """Write users-file text to a fresh file and return its path."""

    def _write(text: str) -> Path:
        path = tmp_path / "users.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return _write


@pytest.fixture
def demo_raw() -> dict[str, Any]:
    """The demo users file, parsed as plain YAML without mesh.users."""
    document = yaml.safe_load(DEMO_USERS.read_text(encoding="utf-8"))
    return dict(document["credentials"]["usernames"])


# The demo users ------------------------------------------------------------------------------


def test_demo_users_load_with_their_roles_accounts_and_owned_products(
    demo_raw: dict[str, Any],
) -> None:
    # GIVEN the demo users file shipped in the repo
    # WHEN it is loaded
    directory = users.load(DEMO_USERS)
    # THEN every user in it is there with the roles, accounts and owner_of the file gives
    assert set(directory.users) == set(demo_raw)
    for username, entry in demo_raw.items():
        user = directory.users[username]
        assert user.roles == {Role(r) for r in entry["roles"]}
        assert user.accounts == tuple(entry.get("accounts") or ())
        assert user.owner_of == set(entry.get("owner_of") or ())
        assert user.name == f"{entry['first_name']} {entry['last_name']}"


def test_demo_users_cover_every_role_and_every_producer_domain() -> None:
    # GIVEN the demo users and the demo mesh
    directory = users.load(DEMO_USERS)
    everyone = list(directory.users.values())
    # WHEN their roles and accounts are compared with the mesh
    # THEN every role is held by someone
    assert {r for u in everyone for r in u.roles} == set(Role)
    # AND each producer domain has an owner who may decide for it
    for producer in data.DOMAINS:
        assert any(u.is_owner and producer in u.owner_of for u in everyone), producer
    # AND consumers request only for the demo's consumer accounts, and can reach both
    requested = {a for u in everyone for a in u.accounts}
    assert requested == set(data.CONSUMERS)


def test_demo_users_sign_in_with_the_documented_password(demo_raw: dict[str, Any]) -> None:
    # GIVEN the demo users' password hashes
    hashes = {entry["password"] for entry in demo_raw.values()}
    # WHEN the documented demo password is checked against each
    # THEN it matches every one
    assert all(bcrypt.checkpw(DEMO_PASSWORD.encode(), h.encode()) for h in hashes)


@pytest.mark.parametrize("username", ["carol", "CAROL", " Carol ", "carol\n"])
def test_user_is_found_whatever_the_case_and_whitespace(write: Any, username: str) -> None:
    # GIVEN a file that spells the user "Carol"
    directory = users.load(write(CAROL))
    # WHEN the user is looked up
    user = directory.get(username)
    # THEN it is the same lower-case user
    assert user is not None
    assert user.username == "carol"
    assert user.name == "Carol Chen"
    assert user.email == "carol@example.com"


@pytest.mark.parametrize("username", [None, "", "mallory"])
def test_unknown_or_missing_user_is_not_found(write: Any, username: str | None) -> None:
    # GIVEN a file with one user
    directory = users.load(write(CAROL))
    # WHEN someone else is looked up
    # THEN nobody is found
    assert directory.get(username) is None


def test_directory_keeps_what_streamlit_authenticator_needs(write: Any) -> None:
    # GIVEN a file with a cookie name, an expiry and one user
    directory = users.load(write(CAROL))
    # WHEN it is loaded
    # THEN the credentials keep the password hash under the lower-case name, plus the cookie
    assert directory.credentials["usernames"]["carol"]["password"] == HASH
    assert directory.cookie_name == "test_cookie"
    assert directory.cookie_expiry_days == 2


def test_user_with_no_accounts_or_owner_of_has_none(write: Any) -> None:
    # GIVEN an admin with neither accounts nor owner_of
    directory = users.load(write(users_yaml(roles="[admin]")))
    # WHEN it is loaded
    ada = directory.get("carol")
    # THEN both are empty, and the admin role is there
    assert ada is not None
    assert (ada.accounts, ada.owner_of, ada.is_admin) == ((), frozenset(), True)


# Invalid files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named"),
    [
        # not YAML, or not the right document
        ("credentials: [unclosed\n", ["YAML"]),
        ("- carol\n- dan\n", ["credentials"]),
        ("", ["credentials"]),
        # no users
        ("cookie: {name: x}\n", ["usernames"]),
        ("credentials: {usernames: {}}\n", ["usernames"]),
        ("credentials: {}\n", ["usernames"]),
        # passwords that are not bcrypt hashes
        (users_yaml().replace(f'"{HASH}"', "mesh-demo"), ["carol", "password", "bcrypt"]),
        (users_yaml().replace(f'"{HASH}"', '""'), ["carol", "password"]),
        (users_yaml().replace(f'"{HASH}"', f'"{HASH[:-5]}"'), ["carol", "password"]),
        # roles outside consumer, owner and admin
        (users_yaml(roles="[consumer, superuser]"), ["carol", "superuser"]),
        # account ids that are not 12 digits
        (users_yaml(extra='accounts: ["12345"]'), ["carol", "accounts", "12345"]),
        (users_yaml(extra='owner_of: ["sales"]'), ["carol", "owner_of", "sales"]),
        (users_yaml(extra='accounts: "444455556666"'), ["carol", "accounts"]),
        # an unquoted id with a leading zero is read by YAML as an octal number
        (users_yaml(extra="accounts: [011112222333]"), ["carol", "accounts", "quote"]),
        # the cookie key belongs in MESH_COOKIE_KEY, never in the file
        (users_yaml(top="cookie: {name: x, key: hunter2}"), ["cookie.key", "MESH_COOKIE_KEY"]),
        # a user that is not a mapping
        ("credentials:\n  usernames:\n    carol: admin\n", ["carol"]),
    ],
    ids=[
        "not yaml",
        "a list",
        "empty file",
        "no credentials",
        "no usernames",
        "empty credentials",
        "plain-text password",
        "empty password",
        "truncated hash",
        "unknown role",
        "short account",
        "named owner_of",
        "accounts not a list",
        "octal account",
        "cookie key in file",
        "user not a mapping",
    ],
)
def test_invalid_users_file_is_a_setting_error_naming_the_problem(
    write: Any, text: str, named: list[str]
) -> None:
    # GIVEN a users file that is wrong in one way
    path = write(text)
    # WHEN it is loaded
    with pytest.raises(SettingError) as refused:
        users.load(path)
    # THEN the error names the setting, the file and the problem
    message = str(refused.value)
    assert "MESH_USERS" in message
    assert str(path) in message
    for word in named:
        assert word in message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        # a section that is a scalar where a mapping belongs
        ("credentials: carol\n", ["usernames"]),
        (users_yaml(top="cookie: secret"), ["cookie"]),
        # roles written as one word, a number, or a nested list
        (users_yaml(roles="admin"), ["carol", "'admin'"]),
        (users_yaml(roles="5"), ["carol", "roles"]),
        (users_yaml(roles="[[admin]]"), ["carol", "roles"]),
    ],
    ids=["credentials scalar", "cookie scalar", "roles word", "roles number", "roles nested"],
)
def test_users_file_with_wrong_shapes_is_a_setting_error(
    write: Any, text: str, named: list[str]
) -> None:
    # GIVEN a users file with a section of the wrong YAML type (a common typo)
    path = write(text)
    # WHEN it is loaded
    with pytest.raises(SettingError) as refused:
        users.load(path)
    # THEN it is refused with a setting error naming the problem, not a stack trace
    message = str(refused.value)
    assert "MESH_USERS" in message
    for word in named:
        assert word in message


def test_missing_users_file_is_a_setting_error_naming_it(tmp_path: Path) -> None:
    # GIVEN a path with no file
    path = tmp_path / "gone.yaml"
    # WHEN it is loaded
    with pytest.raises(SettingError) as refused:
        users.load(path)
    # THEN the error names the file
    assert str(path) in str(refused.value)


# Re-reading ----------------------------------------------------------------------------------


def rewrite(path: Path, text: str) -> None:
    """Replace the file and move its mtime forward, as any later edit would."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    later = before + 1_000_000_000
    os.utime(path, ns=(later, later))


def test_user_file_sees_a_role_change_without_a_restart(write: Any) -> None:
    # GIVEN a users file where carol is a consumer, already read once
    path = write(users_yaml(roles="[consumer]"))
    user_file = users.UserFile(path)
    before = user_file.get("carol")
    assert before is not None
    assert not before.is_admin
    # WHEN the file is edited to make her an admin
    rewrite(path, users_yaml(roles="[admin]"))
    # THEN the next look-up sees the new role
    after = user_file.get("carol")
    assert after is not None
    assert after.is_admin


def test_user_file_keeps_its_reading_while_the_file_is_unchanged(write: Any) -> None:
    # GIVEN a users file read once
    user_file = users.UserFile(write(CAROL))
    first = user_file.directory()
    # WHEN it is asked again with no change to the file
    # THEN the same reading is returned
    assert user_file.directory() is first


def test_user_file_refuses_an_edit_that_breaks_it(write: Any) -> None:
    # GIVEN a users file read once
    path = write(CAROL)
    user_file = users.UserFile(path)
    assert user_file.get("carol") is not None
    # WHEN the file is edited to hold a plain-text password
    rewrite(path, CAROL.replace(f'"{HASH}"', "mesh-demo"))
    # THEN the next look-up is refused, not served from the old reading
    with pytest.raises(SettingError, match="password"):
        user_file.get("carol")


def test_user_file_refuses_when_the_file_is_removed(write: Any) -> None:
    # GIVEN a users file read once
    path = write(CAROL)
    user_file = users.UserFile(path)
    assert user_file.get("carol") is not None
    # WHEN the file is removed
    path.unlink()
    # THEN the next look-up is refused, naming the file
    with pytest.raises(SettingError, match=r"users\.yaml"):
        user_file.get("carol")
