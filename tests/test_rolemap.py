"""The role map (MESH_ROLE_MAP) and the sign-in settings around it: pure rules, no I/O but files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.errors import SettingError
from mesh.settings import load_settings
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
