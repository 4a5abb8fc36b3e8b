"""The role map (MESH_ROLE_MAP) and the sign-in settings around it: pure rules, no I/O but files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mesh import rolemap
from mesh.errors import SettingError
from mesh.models import Role
from mesh.settings import PROJECT_ROOT, load_settings
from tests.support import AUDIT_KEY, LINK_SECRET


@pytest.fixture
def role_map(tmp_path: Path) -> Path:
    path = tmp_path / "rolemap.yaml"
    path.write_text("groups:\n  analysts: {roles: [consumer]}\n", encoding="utf-8")
    return path


# Settings ----------------------------------------------------------------------------------


def test_password_sign_in_is_the_default_and_needs_no_role_map() -> None:
    # GIVEN no sign-in settings WHEN the settings load
    settings = load_settings({}, {})
    # THEN the users file signs people in
    assert (settings.auth, settings.role_map_path, settings.groups_claim) == (
        "password",
        None,
        "groups",
    )


def test_oidc_takes_the_role_map_and_the_groups_claim(role_map: Path) -> None:
    # GIVEN OIDC with a role map and Cognito's claim name
    env = {
        "MESH_AUTH": "OIDC",
        "MESH_ROLE_MAP": str(role_map),
        "MESH_GROUPS_CLAIM": "cognito:groups",
    }
    # WHEN the settings load
    settings = load_settings(env, {})
    # THEN they hold all three
    assert (settings.auth, settings.role_map_path, settings.groups_claim) == (
        "oidc",
        role_map,
        "cognito:groups",
    )


def test_oidc_in_aws_mode_needs_no_users_file(role_map: Path) -> None:
    # GIVEN aws mode with OIDC and no MESH_USERS
    env = {"MESH_MODE": "aws", "MESH_AUTH": "oidc", "MESH_ROLE_MAP": str(role_map)}
    # WHEN the settings load THEN nothing asks for a users file
    assert (
        load_settings(env | {"MESH_AUDIT_KEY": AUDIT_KEY, "MESH_LINK_SECRET": LINK_SECRET}, {}).auth
        == "oidc"
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"MESH_AUTH": "saml"}, "MESH_AUTH is 'saml', which is not a way to sign in"),
        ({"MESH_AUTH": "oidc"}, "MESH_AUTH is oidc but MESH_ROLE_MAP is not set"),
        (
            {"MESH_AUTH": "oidc", "MESH_USERS": "x.yaml", "MESH_ROLE_MAP": "ROLE_MAP"},
            "the users file and the role map cannot both be in force",
        ),
        ({"MESH_ROLE_MAP": "ROLE_MAP"}, "the users file and the role map cannot both be in force"),
        ({"MESH_AUTH": "oidc", "MESH_ROLE_MAP": "/nowhere/map.yaml"}, "which is not a file"),
    ],
)
def test_sign_in_settings_that_cannot_work_are_refused_with_a_sentence(
    role_map: Path, env: dict[str, str], says: str
) -> None:
    # GIVEN sign-in settings that contradict each other or name nothing
    env = {k: v.replace("ROLE_MAP", str(role_map)) for k, v in env.items()}
    # WHEN the settings load THEN a setting error says why
    with pytest.raises(SettingError, match=says):
        load_settings(env, {})


# The role map: claims to a user ------------------------------------------------------------

MAP = """
groups:
  data-owners: {roles: [owner], owner_of: ["111122223333"]}
  analysts: {roles: [consumer], accounts: ["444455556666"]}
  privacy: {groups: [Privacy-Office]}
  empty: {}
users:
  boss@example.com: {roles: [admin]}
  sub-42: {accounts: ["777788889999"]}
"""


@pytest.mark.parametrize(
    ("claims", "roles", "accounts", "owner_of", "groups"),
    [
        ({"sub": "a", "groups": ["data-owners"]}, {"owner"}, (), {"111122223333"}, set()),
        ({"sub": "a", "groups": ["Analysts "]}, {"consumer"}, ("444455556666",), set(), set()),
        ({"sub": "a", "groups": "analysts"}, {"consumer"}, ("444455556666",), set(), set()),
        ({"sub": "a", "groups": ["privacy"]}, set(), (), set(), {"privacy-office"}),
        (
            {"sub": "a", "groups": ["analysts", "data-owners"]},
            {"consumer", "owner"},
            ("444455556666",),
            {"111122223333"},
            set(),
        ),
        ({"sub": "a", "email": "Boss@Example.com"}, {"admin"}, (), set(), set()),
        (
            {"sub": "sub-42", "groups": ["analysts"]},
            {"consumer"},
            ("444455556666", "777788889999"),
            set(),
            set(),
        ),
    ],
)
def test_claims_map_to_the_union_of_every_matching_entry(
    claims: dict[str, object],
    roles: set[str],
    accounts: tuple[str, ...],
    owner_of: set[str],
    groups: set[str],
) -> None:
    # GIVEN a role map WHEN a person's claims are mapped
    user = rolemap.to_user(rolemap.loads(MAP), claims, claim="groups")
    # THEN they get what every matching group and user entry gives, once each
    assert user is not None
    assert {r.value for r in user.roles} == roles
    assert (user.accounts, user.owner_of, user.groups) == (accounts, owner_of, groups)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "a"},
        {"sub": "a", "groups": []},
        {"sub": "a", "groups": ["strangers"]},
        {"sub": "a", "groups": ["empty"]},
        {"sub": "a", "groups": 7},
        {"email": "boss@example.com"},  # no sub: not an identity
        {"sub": "a", "cognito:groups": ["analysts"]},  # another claim than the one set
    ],
)
def test_claims_that_match_nothing_map_to_no_user(claims: dict[str, object]) -> None:
    # GIVEN a role map WHEN claims matching no entry (or an entry giving nothing) are mapped
    # THEN there is no user, so no app
    assert rolemap.to_user(rolemap.loads(MAP), claims, claim="groups") is None


def test_the_groups_claim_name_is_a_setting() -> None:
    # GIVEN Cognito's claim name WHEN claims are mapped THEN the groups come from that claim
    user = rolemap.to_user(
        rolemap.loads(MAP), {"sub": "a", "cognito:groups": ["analysts"]}, claim="cognito:groups"
    )
    assert user is not None and user.accounts == ("444455556666",)


def test_the_email_names_the_user_and_sub_when_there_is_no_email() -> None:
    # GIVEN one person with an email and one without WHEN mapped
    role_map = rolemap.loads(MAP)
    with_email = rolemap.to_user(
        role_map, {"sub": "s1", "email": "Ann@X.org", "groups": ["analysts"]}, claim="groups"
    )
    without = rolemap.to_user(role_map, {"sub": "s2", "groups": ["analysts"]}, claim="groups")
    # THEN the username is the lower-case email, else the sub
    assert with_email is not None and with_email.username == "ann@x.org"
    assert without is not None and without.username == "s2"


def test_the_no_access_sentence_names_the_persons_groups_and_what_to_ask() -> None:
    # GIVEN a person in unmapped groups, and one with no groups at all
    # WHEN they are told why they have no access THEN it says whom to ask, and which groups
    said = rolemap.no_access_sentence({"groups": ["sales", "hr"]}, claim="groups")
    assert said == (
        "No access yet: ask your platform team to add one of your groups (sales, hr) "
        "to the role map."
    )
    assert "sends none in 'groups'" in rolemap.no_access_sentence({}, claim="groups")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            'groups:\n  data-owners: {accounts: ["12345"]}\n',
            "at groups.data-owners.accounts[0]: '12345' is not a 12-digit account id",
        ),
        (
            "groups:\n  data-owners: {owner_of: [111122223333, abc]}\n",
            "at groups.data-owners.owner_of[1]: 'abc' is not a 12-digit account id",
        ),
        (
            "groups:\n  x: {roles: [boss]}\n",
            "at groups.x.roles: 'boss' is not a role; roles are consumer, owner and admin",
        ),
        ("groups:\n  x: {role: [owner]}\n", "at groups.x.role: this key is unknown"),
        ("group:\n  x: {roles: [owner]}\n", "at group: this key is unknown"),
        ("users:\n  a@b.c: {groups: privacy}\n", "at users.a@b.c.groups: must be a list"),
        ("groups:\n  X: {}\n  x: {}\n", "at groups: names 'x' twice"),
        ("groups:\n  x: {}\n  x: {}\n", "is not valid YAML (the key 'x' is given twice"),
        ("groups:\n  ? [a]\n  : {roles: [admin]}\n", "a key must be a plain value"),
        ("groups: {}\n", "it maps nobody"),
        ("- a\n", "the top level must be a mapping"),
    ],
)
def test_a_bad_role_map_is_refused_with_one_sentence_naming_the_key_path(
    text: str, says: str
) -> None:
    # GIVEN a role map with a problem WHEN it is read
    with pytest.raises(rolemap.RoleMapError) as raised:
        rolemap.loads(text, source="x.yaml")
    # THEN the setting error is one sentence naming the file and the key path
    message = str(raised.value)
    assert message.startswith("MESH_ROLE_MAP file x.yaml is invalid")
    assert says in message
    assert message.endswith(".") and "\n" not in message


def test_every_action_reads_the_changed_map(tmp_path: Path) -> None:
    # GIVEN a role map file read once
    path = tmp_path / "map.yaml"
    path.write_text("groups:\n  analysts: {roles: [consumer]}\n", encoding="utf-8")
    source = rolemap.RoleMapFile(path)
    claims = {"sub": "a", "groups": ["analysts"]}
    first = source.user(claims)
    # WHEN the platform team changes it (a new modification time)
    path.write_text("groups:\n  analysts: {roles: [owner]}\n", encoding="utf-8")
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    # THEN the next lookup sees the change
    second = source.user(claims)
    assert first is not None and second is not None
    assert (first.roles, second.roles) == ({Role.CONSUMER}, {Role.OWNER})


def test_the_example_role_map_is_valid() -> None:
    # GIVEN the committed example WHEN it is read THEN it loads
    assert rolemap.load(PROJECT_ROOT / "examples" / "rolemap.yaml").groups
