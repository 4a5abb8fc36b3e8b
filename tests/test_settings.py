"""Settings: defaults, env over secrets.toml, and one clear SettingError per bad setting.

``load_settings`` takes the environment and the secrets as plain mappings, so no test here
touches the real environment or the project's own .streamlit/secrets.toml.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mesh.demo import data as demo_data
from mesh.errors import InvalidInput, SettingError
from mesh.services import audit_key
from mesh.settings import (
    DEMO_USERS,
    PROJECT_ROOT,
    SETTINGS,
    Mode,
    check_secret,
    load_settings,
    read_secrets,
    secret_bits,
)
from tests.support import AUDIT_KEY, LINK_SECRET

# 43 characters of secrets.token_urlsafe(32), fixed so that a failure can be reproduced.
GOOD_KEY = "Xq3vP9_kT2mLr8ZcYw4NbHs7EaUf1GdJ0oKiQe5RtVx"
INT_SETTINGS = {
    "MESH_CATALOG_TTL": "catalog_ttl",
    "MESH_AWS_MAX_ATTEMPTS": "aws_max_attempts",
    "MESH_AWS_TIMEOUT": "aws_timeout",
    "MESH_STALE_GRANTING": "stale_granting",
}


def documented_default(name: str) -> str:
    """The default the public settings table (and so the README) promises."""
    return next(s.default for s in SETTINGS if s.name == name)


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    """A users file path that exists; load_settings only checks that it is a file."""
    path = tmp_path / "users.yaml"
    path.write_text("credentials: {usernames: {}}\n", encoding="utf-8")
    return path


@pytest.fixture
def aws_env(users_file: Path) -> dict[str, str]:
    """The least an aws-mode CLI needs: the mode, a users file and the audit key (shadows
    conftest's)."""
    return {
        "MESH_MODE": "aws",
        "MESH_USERS": str(users_file),
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
    }


# Defaults ------------------------------------------------------------------------------------


def test_nothing_set_runs_the_demo_with_its_own_users_and_no_cookie_key() -> None:
    # GIVEN no environment and no secrets
    # WHEN the settings are loaded for the web app
    settings = load_settings({}, {}, web=True)
    # THEN the app runs the demo, with the shipped demo users, and needs no cookie key
    assert settings.mode is Mode.DEMO
    assert settings.users_path == DEMO_USERS
    assert settings.cookie_key is None
    assert settings.demo_endpoint is None


@pytest.mark.parametrize(("name", "field"), INT_SETTINGS.items())
def test_unset_number_takes_its_documented_default(name: str, field: str) -> None:
    # GIVEN no environment and no secrets
    # WHEN the settings are loaded
    settings = load_settings({}, {})
    # THEN each number is the default the settings table documents
    assert getattr(settings, field) == int(documented_default(name))


@pytest.mark.parametrize(
    "env",
    [{}, {"MESH_MODE": "aws", "MESH_AUDIT_KEY": AUDIT_KEY, "MESH_LINK_SECRET": LINK_SECRET}],
    ids=["demo", "aws"],
)
def test_default_database_lives_under_the_project_and_is_documented(
    env: dict[str, str], users_file: Path
) -> None:
    # GIVEN no MESH_DB, in either mode
    # WHEN the settings are loaded
    settings = load_settings(env | {"MESH_USERS": str(users_file)}, {})
    # THEN the database sits under the project, at the path the settings table names
    relative = settings.db_path.relative_to(PROJECT_ROOT).as_posix()
    assert relative in documented_default("MESH_DB")


def test_demo_and_aws_modes_default_to_different_databases(users_file: Path) -> None:
    # GIVEN no MESH_DB
    # WHEN the settings are loaded in each mode
    demo = load_settings({}, {})
    real = load_settings(
        {
            "MESH_MODE": "aws",
            "MESH_USERS": str(users_file),
            "MESH_AUDIT_KEY": AUDIT_KEY,
            "MESH_LINK_SECRET": LINK_SECRET,
        },
        {},
    )
    # THEN the demo's requests never land in the real database
    assert demo.db_path != real.db_path


def test_relative_paths_are_resolved_against_the_project(tmp_path: Path) -> None:
    # GIVEN relative MESH_DB and MESH_USERS paths
    env = {"MESH_DB": "var/elsewhere.db", "MESH_USERS": "mesh/demo/users.yaml"}
    # WHEN the settings are loaded
    settings = load_settings(env, {})
    # THEN they are read from the project, not from the current directory
    assert settings.db_path == PROJECT_ROOT / "var" / "elsewhere.db"
    assert settings.users_path == DEMO_USERS


def test_every_setting_in_the_public_table_has_a_default_and_help() -> None:
    # GIVEN the public settings table
    names = [s.name for s in SETTINGS]
    # WHEN it is read
    # THEN it covers the settings, once each, each with a default and help text
    assert {"MESH_MODE", "MESH_DB", "MESH_USERS", "MESH_COOKIE_KEY"} <= set(names)
    assert len(names) == len(set(names))
    assert all(s.default.strip() and s.help.strip() for s in SETTINGS)


# Environment over secrets.toml ---------------------------------------------------------------


def test_environment_wins_over_secrets_toml(tmp_path: Path) -> None:
    # GIVEN a number and a database path in both the environment and secrets.toml
    env = {"MESH_CATALOG_TTL": "60", "MESH_DB": str(tmp_path / "env.db")}
    secrets = {"MESH_CATALOG_TTL": 120, "MESH_DB": str(tmp_path / "secrets.db")}
    # WHEN the settings are loaded
    settings = load_settings(env, secrets)
    # THEN the environment's values are used
    assert settings.catalog_ttl == 60
    assert settings.db_path == tmp_path / "env.db"


def test_secrets_toml_is_used_when_the_environment_is_silent(tmp_path: Path) -> None:
    # GIVEN a secrets.toml that sets the mode, the users file, both keys and a number
    users = tmp_path / "users.yaml"
    users.write_text("credentials: {}\n", encoding="utf-8")
    path = tmp_path / "secrets.toml"
    path.write_text(
        f'MESH_MODE = "aws"\nMESH_USERS = "{users}"\n'
        f'MESH_COOKIE_KEY = "{GOOD_KEY}"\nMESH_AUDIT_KEY = "{AUDIT_KEY}"\n'
        f'MESH_LINK_SECRET = "{LINK_SECRET}"\n'
        "MESH_CATALOG_TTL = 45\n",
        encoding="utf-8",
    )
    # WHEN the web app loads its settings with no environment
    settings = load_settings({}, read_secrets(path), web=True)
    # THEN every value comes from secrets.toml
    assert settings.mode is Mode.AWS
    assert settings.users_path == users
    assert settings.cookie_key == GOOD_KEY
    assert settings.audit_key == AUDIT_KEY
    assert settings.catalog_ttl == 45


def test_blank_environment_variable_does_not_hide_secrets_toml() -> None:
    # GIVEN an exported but empty MESH_CATALOG_TTL, and a value in secrets.toml
    # WHEN the settings are loaded
    settings = load_settings({"MESH_CATALOG_TTL": "  "}, {"MESH_CATALOG_TTL": "90"})
    # THEN the secrets.toml value is used
    assert settings.catalog_ttl == 90


def test_settings_are_read_from_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN MESH_CATALOG_TTL exported in the process environment
    monkeypatch.setenv("MESH_CATALOG_TTL", "77")
    # WHEN the settings are loaded without an explicit environment
    settings = load_settings(secrets={})
    # THEN the exported value is used
    assert settings.catalog_ttl == 77


# secrets.toml itself -------------------------------------------------------------------------


def test_missing_secrets_toml_reads_as_empty(tmp_path: Path) -> None:
    # GIVEN no secrets.toml
    # WHEN it is read
    # THEN it holds nothing
    assert read_secrets(tmp_path / "secrets.toml") == {}


@pytest.mark.parametrize(
    "text",
    ['MESH_MODE = "aws', "MESH_MODE aws\n", 'MESH_MODE = "aws"\nMESH_MODE = "demo"\n'],
    ids=["unclosed string", "no equals sign", "duplicate key"],
)
def test_broken_secrets_toml_is_a_setting_error_naming_the_file(tmp_path: Path, text: str) -> None:
    # GIVEN a secrets.toml with a TOML syntax error
    path = tmp_path / "secrets.toml"
    path.write_text(text, encoding="utf-8")
    # WHEN it is read
    with pytest.raises(SettingError) as refused:
        read_secrets(path)
    # THEN the error names the file and says to fix its TOML
    assert str(path) in str(refused.value)
    assert "TOML" in str(refused.value)


def test_unreadable_secrets_toml_is_a_setting_error(tmp_path: Path) -> None:
    # GIVEN a secrets.toml that is a directory, so it cannot be opened as a file
    path = tmp_path / "secrets.toml"
    path.mkdir()
    # WHEN it is read
    # THEN it is refused as a setting error naming it
    with pytest.raises(SettingError, match=r"secrets\.toml"):
        read_secrets(path)


# MESH_MODE -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "mode"), [("demo", Mode.DEMO), ("aws", Mode.AWS), (" AWS ", Mode.AWS)]
)
def test_mode_is_read_trimmed_and_case_insensitive(raw: str, mode: Mode, users_file: Path) -> None:
    # GIVEN MESH_MODE spelled in some case, with whitespace
    env = {
        "MESH_MODE": raw,
        "MESH_USERS": str(users_file),
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
    }
    # WHEN the settings are loaded
    # THEN the mode is read
    assert load_settings(env, {}).mode is mode


@pytest.mark.parametrize("raw", ["prod", "real", "demo mode", "aws1"])
def test_unknown_mode_is_a_setting_error_naming_mesh_mode(raw: str) -> None:
    # GIVEN a MESH_MODE that is neither demo nor aws
    # WHEN the settings are loaded
    with pytest.raises(SettingError) as refused:
        load_settings({"MESH_MODE": raw}, {})
    # THEN the error names the setting and the modes to choose from
    message = str(refused.value)
    assert "MESH_MODE" in message
    assert "demo" in message
    assert "aws" in message


# MESH_USERS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("web", [True, False], ids=["web", "cli"])
def test_aws_mode_requires_mesh_users(web: bool) -> None:
    # GIVEN aws mode with no users file, even with a good cookie key
    env = {"MESH_MODE": "aws", "MESH_COOKIE_KEY": GOOD_KEY}
    # WHEN the settings are loaded
    # THEN it is refused, naming MESH_USERS
    with pytest.raises(SettingError, match="MESH_USERS"):
        load_settings(env, {}, web=web)


@pytest.mark.parametrize("mode", ["demo", "aws"])
def test_users_file_that_does_not_exist_is_a_setting_error(mode: str, tmp_path: Path) -> None:
    # GIVEN MESH_USERS pointing at a file that is not there
    missing = tmp_path / "nobody.yaml"
    # WHEN the settings are loaded
    with pytest.raises(SettingError) as refused:
        load_settings({"MESH_MODE": mode, "MESH_USERS": str(missing)}, {})
    # THEN the error names the setting and the path
    assert "MESH_USERS" in str(refused.value)
    assert str(missing) in str(refused.value)


def test_users_path_that_is_a_directory_is_a_setting_error(tmp_path: Path) -> None:
    # GIVEN MESH_USERS pointing at a directory
    # WHEN the settings are loaded
    # THEN it is refused, naming MESH_USERS
    with pytest.raises(SettingError, match="MESH_USERS"):
        load_settings({"MESH_USERS": str(tmp_path)}, {})


# MESH_COOKIE_KEY -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secrets",
    [{}, {"MESH_COOKIE_KEY": ""}, {"MESH_COOKIE_KEY": GOOD_KEY[:31]}],
    ids=["missing", "empty", "31 characters"],
)
def test_web_app_in_aws_mode_refuses_a_missing_or_short_cookie_key(
    aws_env: dict[str, str], secrets: dict[str, str]
) -> None:
    # GIVEN aws mode with no cookie key, or one under 32 characters
    # WHEN the web app loads its settings
    with pytest.raises(SettingError) as refused:
        load_settings(aws_env, secrets, web=True)
    # THEN it is refused, naming the setting, the minimum length and how to make a good one
    assert "MESH_COOKIE_KEY" in str(refused.value)
    assert "32" in str(refused.value)
    assert "secrets.token_urlsafe(32)" in str(refused.value)


def test_web_app_in_aws_mode_accepts_a_random_cookie_key_of_32_characters_or_more(
    aws_env: dict[str, str],
) -> None:
    # GIVEN aws mode with a random cookie key of 43 characters
    # WHEN the web app loads its settings
    settings = load_settings(aws_env | {"MESH_COOKIE_KEY": GOOD_KEY}, {}, web=True)
    # THEN the key is kept
    assert settings.cookie_key == GOOD_KEY


def test_cli_in_aws_mode_needs_no_cookie_key(aws_env: dict[str, str]) -> None:
    # GIVEN aws mode with no cookie key
    # WHEN the CLI loads its settings
    settings = load_settings(aws_env, {}, web=False)
    # THEN it starts
    assert settings.mode is Mode.AWS


def test_web_app_in_demo_mode_needs_no_cookie_key() -> None:
    # GIVEN demo mode with no cookie key
    # WHEN the web app loads its settings
    settings = load_settings({}, {}, web=True)
    # THEN it starts (the demo makes a random key per start)
    assert settings.mode is Mode.DEMO


# Weak secrets --------------------------------------------------------------------------------

WEAK = [
    "a",  # one character
    "short",
    "a" * 32,  # the cookie key: long, one character repeated
    "ab" * 32,
    "0123456789abcdef0123456789abcdef",  # 128 bits by its characters, but a repetition
    "0123456789abcdef",  # 16 distinct characters, too short
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",  # long, nearly all one character
    "password" * 4,
]


@pytest.mark.parametrize("weak", WEAK)
@pytest.mark.parametrize("mode", ["aws", "demo"])
def test_web_app_refuses_a_weak_cookie_key_in_any_mode(
    aws_env: dict[str, str], weak: str, mode: str
) -> None:
    # GIVEN a cookie key that is short or repeats itself
    env = aws_env | {"MESH_MODE": mode, "MESH_COOKIE_KEY": weak}
    # WHEN the web app loads its settings
    with pytest.raises(SettingError) as refused:
        load_settings(env, {}, web=True)
    # THEN it is refused, naming the setting and how to make a good one
    assert "MESH_COOKIE_KEY" in str(refused.value)
    assert "secrets.token_urlsafe(32)" in str(refused.value)


@pytest.mark.parametrize("weak", WEAK)
def test_a_weak_link_secret_is_refused(aws_env: dict[str, str], weak: str) -> None:
    # GIVEN MESH_LINK_SECRET set to a short or repetitive value
    # WHEN any process (CLI or web app) loads its settings
    with pytest.raises(SettingError) as refused:
        load_settings(aws_env | {"MESH_LINK_SECRET": weak}, {})
    # THEN it is refused, naming the setting and how to make a good one
    assert "MESH_LINK_SECRET" in str(refused.value)
    assert "secrets.token_urlsafe(32)" in str(refused.value)


def test_a_random_link_secret_is_kept(aws_env: dict[str, str]) -> None:
    # GIVEN a random MESH_LINK_SECRET
    # WHEN the settings are loaded
    settings = load_settings(aws_env | {"MESH_LINK_SECRET": GOOD_KEY}, {})
    # THEN it is used
    assert settings.link_secret == GOOD_KEY


# MESH_AUDIT_KEY ------------------------------------------------------------------------------


@pytest.mark.parametrize("given", [{}, {"MESH_AUDIT_KEY": ""}, {"MESH_AUDIT_KEY": "  "}])
@pytest.mark.parametrize("web", [True, False], ids=["web", "cli"])
def test_aws_mode_refuses_to_start_without_an_audit_key(
    aws_env: dict[str, str], given: dict[str, str], web: bool, tmp_path: Path
) -> None:
    # GIVEN aws mode with everything else set but no MESH_AUDIT_KEY (unset or blank)
    env = {name: value for name, value in aws_env.items() if name != "MESH_AUDIT_KEY"}
    env |= {"MESH_DB": str(tmp_path / "mesh.db"), "MESH_COOKIE_KEY": GOOD_KEY} | given
    # WHEN the web app or the CLI loads its settings
    with pytest.raises(SettingError) as refused:
        load_settings(env, {}, web=web)
    # THEN one sentence names the setting, says why, and how to make a good one
    message = str(refused.value)
    assert message.startswith("MESH_AUDIT_KEY is not set, and aws mode needs a secret")
    assert "audit log" in message
    assert 'make one with `python -c "import secrets; print(secrets.token_urlsafe(32))"`.' in (
        message
    )
    assert message.count("\n") == 0
    # AND no key file beside the database stands in for it
    assert not (tmp_path / "audit-key").exists()


def test_aws_settings_made_without_load_settings_still_refuse_the_key_file(
    aws_env: dict[str, str], tmp_path: Path
) -> None:
    # GIVEN aws-mode settings whose audit key was removed after loading
    settings = replace(
        load_settings(aws_env | {"MESH_DB": str(tmp_path / "mesh.db")}, {}), audit_key=None
    )
    # WHEN the audit chain's key is looked up
    with pytest.raises(SettingError, match="MESH_AUDIT_KEY is not set"):
        audit_key(settings)
    # THEN no key file was made beside the database
    assert not settings.audit_key_file.exists()


@pytest.mark.parametrize("weak", WEAK)
@pytest.mark.parametrize("mode", ["aws", "demo"])
def test_a_weak_audit_key_is_refused_in_any_mode(
    aws_env: dict[str, str], weak: str, mode: str
) -> None:
    # GIVEN MESH_AUDIT_KEY set to a short or repetitive value
    # WHEN the settings are loaded
    with pytest.raises(SettingError) as refused:
        load_settings(aws_env | {"MESH_MODE": mode, "MESH_AUDIT_KEY": weak}, {})
    # THEN it is refused, naming the setting and how to make a good one
    assert str(refused.value).startswith("MESH_AUDIT_KEY ")
    assert "secrets.token_urlsafe(32)" in str(refused.value)


def test_aws_mode_keeps_a_random_audit_key(aws_env: dict[str, str]) -> None:
    # GIVEN aws mode with a random MESH_AUDIT_KEY
    # WHEN the settings are loaded
    settings = load_settings(aws_env | {"MESH_AUDIT_KEY": GOOD_KEY}, {})
    # THEN it keys the chain
    assert settings.audit_key == GOOD_KEY
    assert audit_key(settings) == GOOD_KEY


def test_demo_without_an_audit_key_makes_and_keeps_its_own_private_key_file(
    tmp_path: Path,
) -> None:
    # GIVEN demo mode with no MESH_AUDIT_KEY, and no key file yet
    settings = load_settings({"MESH_DB": str(tmp_path / "var" / "demo.db")}, {})
    assert settings.audit_key is None
    # WHEN the audit chain's key is needed, twice
    first = audit_key(settings)
    again = audit_key(settings)
    # THEN the demo made a strong key in audit-key beside MESH_DB, private, and reuses it
    assert check_secret("the demo's audit key", first) == first
    assert settings.audit_key_file.read_text() == first == again
    assert oct(settings.audit_key_file.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("trial", range(200))
def test_every_key_the_advice_makes_is_accepted(trial: int) -> None:
    import secrets

    # GIVEN a key made as the refusal advises
    key = secrets.token_urlsafe(32)
    # WHEN it is checked
    # THEN it passes
    assert check_secret("MESH_COOKIE_KEY", key) == key


def test_entropy_estimate_counts_repetition_not_length() -> None:
    # GIVEN strings of the same length, from one repeated character to all different
    # WHEN their entropy is estimated
    # THEN repetition scores nothing and variety scores up to log2(distinct) per character
    assert secret_bits("a" * 64) == 0
    assert secret_bits("ab" * 16) == pytest.approx(32)
    assert secret_bits("abcdefghijklmnopqrstuvwxyzABCDEF") == pytest.approx(160)


# Numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", INT_SETTINGS)
@pytest.mark.parametrize("raw", ["1", "42", " 42 "])
def test_positive_whole_number_is_accepted(name: str, raw: str) -> None:
    # GIVEN a whole number of at least 1
    # WHEN the settings are loaded
    settings = load_settings({name: raw}, {})
    # THEN it is used
    assert getattr(settings, INT_SETTINGS[name]) == int(raw)


@pytest.mark.parametrize("name", INT_SETTINGS)
@pytest.mark.parametrize(
    "raw",
    [
        # not at least 1
        "0",
        "-5",
        # not a whole number
        "1.5",
        "1e3",
        "ten",
        "5s",
        # digits that Python's int() does not read
        "²",
    ],
)
def test_bad_number_is_a_setting_error_naming_the_setting(name: str, raw: str) -> None:
    # GIVEN a number setting that is not a whole number of at least 1
    # WHEN the settings are loaded
    with pytest.raises(SettingError) as refused:
        load_settings({name: raw}, {})
    # THEN the error names the setting and the bad value
    assert name in str(refused.value)
    assert raw.strip() in str(refused.value)


def test_setting_error_is_invalid_input_so_the_cli_exits_2() -> None:
    # GIVEN a bad setting
    # WHEN the settings are loaded
    with pytest.raises(SettingError) as refused:
        load_settings({"MESH_MODE": "prod"}, {})
    # THEN the error is invalid input, which the CLI maps to exit code 2
    assert isinstance(refused.value, InvalidInput)
    assert refused.value.exit_code == 2


# The approval policy file ------------------------------------------------------------------------


def test_no_policy_file_means_the_built_in_default() -> None:
    assert load_settings({}, {}).policy_path is None


def test_policy_file_is_resolved_against_the_project() -> None:
    settings = load_settings({"MESH_POLICY": "examples/policies/default.yaml"}, {})
    assert settings.policy_path == PROJECT_ROOT / "examples" / "policies" / "default.yaml"


@pytest.mark.parametrize(
    "legacy", [{"MESH_MAX_DAYS_SENSITIVE": "30"}, {"MESH_REQUIRE_EXPIRY_SENSITIVE": "on"}]
)
def test_a_policy_file_and_the_old_pii_terms_settings_cannot_both_be_set(
    legacy: dict[str, str],
) -> None:
    # GIVEN a policy file and a setting that the policy's rules replace
    # WHEN the settings are read
    # THEN one sentence says where those terms go now, so that nothing is silently ignored
    with pytest.raises(SettingError, match="put max_days and require_duration in the policy"):
        load_settings({"MESH_POLICY": "examples/policies/default.yaml", **legacy}, {})


# Account names -------------------------------------------------------------------------------


def test_account_names_are_read_as_id_equals_name_pairs(aws_env: dict[str, str]) -> None:
    # GIVEN two named accounts, with spaces around the parts and a trailing comma
    env = {**aws_env, "MESH_ACCOUNT_NAMES": " 444455556666 = Analytics , 777788889999=Partner,"}
    # WHEN the settings are loaded
    settings = load_settings(env, {})
    # THEN each id has its name, and an account not listed has none
    assert settings.account_names == (("444455556666", "Analytics"), ("777788889999", "Partner"))
    assert settings.account_name("444455556666") == "Analytics"
    assert settings.account_name("111111111111") == ""


def test_aws_mode_names_no_account_by_default(aws_env: dict[str, str]) -> None:
    assert load_settings(aws_env, {}).account_names == ()


def test_demo_mode_names_the_demo_accounts_by_default() -> None:
    # GIVEN the demo with no MESH_ACCOUNT_NAMES
    settings = load_settings({}, {})
    # THEN its consumer and producer accounts have the demo data's names
    names = dict(settings.account_names)
    assert {a: names[a] for a in demo_data.CONSUMERS} == demo_data.CONSUMERS
    assert {a: names[a] for a in demo_data.DOMAINS} == demo_data.DOMAINS


def test_account_names_setting_wins_over_the_demo_names() -> None:
    settings = load_settings({"MESH_ACCOUNT_NAMES": "444455556666=Lab"}, {})
    assert settings.account_names == (("444455556666", "Lab"),)


BAD_ACCOUNT_NAMES = [
    # no "="
    ("444455556666 Analytics", "444455556666 Analytics"),
    # no name
    ("444455556666=", "444455556666="),
    # an id that is not 12 digits
    ("44445555666=Analytics", "44445555666=Analytics"),
    ("44445555666x=Analytics", "44445555666x=Analytics"),
]


@pytest.mark.parametrize(("raw", "named"), BAD_ACCOUNT_NAMES)
def test_malformed_account_names_are_a_setting_error_naming_the_entry(
    aws_env: dict[str, str], raw: str, named: str
) -> None:
    with pytest.raises(SettingError) as refused:
        load_settings({**aws_env, "MESH_ACCOUNT_NAMES": raw}, {})
    message = refused.value.message
    assert message.startswith("MESH_ACCOUNT_NAMES holds")
    assert repr(named) in message
    assert "444455556666=Analytics,777788889999=Partner" in message


def test_an_account_named_twice_is_a_setting_error(aws_env: dict[str, str]) -> None:
    env = {**aws_env, "MESH_ACCOUNT_NAMES": "444455556666=Analytics,444455556666=Lab"}
    with pytest.raises(SettingError, match="names account 444455556666 twice"):
        load_settings(env, {})
