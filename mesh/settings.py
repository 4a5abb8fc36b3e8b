"""One frozen ``Settings``, read from the environment and ``.streamlit/secrets.toml``.

An environment variable wins over the same key in secrets.toml. A missing or invalid
setting raises ``SettingError`` with one sentence: which setting, what is wrong, what to do.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from mesh.errors import SettingError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SECRETS_FILE = PROJECT_ROOT / ".streamlit" / "secrets.toml"
DEMO_USERS = PROJECT_ROOT / "mesh" / "demo" / "users.yaml"
MIN_COOKIE_KEY = 32


class Mode(StrEnum):
    DEMO = "demo"
    AWS = "aws"


@dataclass(frozen=True, kw_only=True)
class Setting:
    name: str
    default: str
    help: str


# The public settings table; README's settings table is written from the same facts.
SETTINGS = (
    Setting(
        name="MESH_MODE",
        default="demo",
        help="`demo` runs on the embedded moto stand-in; `aws` uses boto3's usual chain",
    ),
    Setting(
        name="MESH_DB",
        default="var/mesh.db (aws) or var/demo.db (demo)",
        help="SQLite file holding requests, the audit log and sign-in sessions",
    ),
    Setting(
        name="MESH_USERS",
        default="mesh/demo/users.yaml in demo mode; required in aws mode",
        help="users file: streamlit-authenticator format plus roles, accounts, owner_of",
    ),
    Setting(
        name="MESH_COOKIE_KEY",
        default="random per start in demo mode; required in aws",
        help="secret (32+ characters) that signs the login cookie; the CLI ignores it",
    ),
    Setting(
        name="MESH_CATALOG_TTL",
        default="300",
        help="seconds the web app caches catalog reads before reading Glue again",
    ),
    Setting(
        name="MESH_AWS_MAX_ATTEMPTS",
        default="5",
        help="botocore attempts per AWS call (standard retry mode, throttling included)",
    ),
    Setting(
        name="MESH_AWS_TIMEOUT",
        default="10",
        help="seconds to connect to, and to wait for a read from, an AWS endpoint",
    ),
    Setting(
        name="MESH_STALE_GRANTING",
        default="300",
        help="seconds after which a request stuck in `granting` (a crash mid-grant) may be retried",
    ),
    Setting(
        name="MESH_DEMO_ENDPOINT",
        default="(found in var/demo-standin.json)",
        help="demo mode only: the stand-in's URL; `python -m mesh demo` sets it",
    ),
)


@dataclass(frozen=True, kw_only=True)
class Settings:
    mode: Mode
    db_path: Path
    users_path: Path
    cookie_key: str | None
    catalog_ttl: int
    aws_max_attempts: int
    aws_timeout: int
    stale_granting: int
    demo_endpoint: str | None

    @property
    def demo_state_file(self) -> Path:
        """Where a running demo stand-in records its endpoint, beside the database."""
        return self.db_path.parent / "demo-standin.json"


def read_secrets(path: Path = SECRETS_FILE) -> dict[str, Any]:
    """Top-level keys of secrets.toml, or nothing when the file is absent."""
    if not path.exists():
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingError(
            f"{path} cannot be read ({exc}); fix its TOML syntax or remove the file."
        ) from exc


def _lookup(name: str, env: Mapping[str, str], secrets: Mapping[str, Any]) -> str | None:
    if env.get(name, "").strip():
        return env[name].strip()
    value = secrets.get(name)
    return str(value).strip() if value is not None and str(value).strip() else None


def _positive_int(name: str, raw: str | None, default: int) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) <= 0:
        raise SettingError(
            f"{name} is {raw!r}, which is not a whole number of at least 1; "
            f"set it to a number such as {default}."
        )
    return int(raw)


def _resolve(path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (PROJECT_ROOT / candidate)


def load_settings(
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, Any] | None = None,
    *,
    web: bool = False,
) -> Settings:
    """Build the settings; ``web`` adds the checks only the web app needs (the cookie key)."""
    env = os.environ if env is None else env
    secrets = read_secrets() if secrets is None else secrets

    def get(name: str) -> str | None:
        return _lookup(name, env, secrets)

    raw_mode = (get("MESH_MODE") or "demo").lower()
    if raw_mode not in {m.value for m in Mode}:
        raise SettingError(
            f"MESH_MODE is {raw_mode!r}, which is not a mode; set it to 'demo' or 'aws'."
        )
    mode = Mode(raw_mode)

    db = get("MESH_DB") or ("var/demo.db" if mode is Mode.DEMO else "var/mesh.db")
    users = get("MESH_USERS")
    if users is None and mode is Mode.AWS:
        raise SettingError(
            "MESH_USERS is not set, and aws mode needs a users file; "
            "set MESH_USERS to its path (see mesh/demo/users.yaml for the format)."
        )
    users_path = _resolve(users) if users else DEMO_USERS
    if not users_path.is_file():
        raise SettingError(
            f"MESH_USERS points at {users_path}, which is not a file; "
            "set it to the path of your users file."
        )

    cookie_key = get("MESH_COOKIE_KEY")
    if web and mode is Mode.AWS and (cookie_key is None or len(cookie_key) < MIN_COOKIE_KEY):
        state = "is not set" if cookie_key is None else f"has only {len(cookie_key)} characters"
        raise SettingError(
            f"MESH_COOKIE_KEY {state}, and the web app in aws mode needs a "
            f"secret of at least {MIN_COOKIE_KEY} characters; generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`."
        )

    return Settings(
        mode=mode,
        db_path=_resolve(db),
        users_path=users_path,
        cookie_key=cookie_key,
        catalog_ttl=_positive_int("MESH_CATALOG_TTL", get("MESH_CATALOG_TTL"), 300),
        aws_max_attempts=_positive_int("MESH_AWS_MAX_ATTEMPTS", get("MESH_AWS_MAX_ATTEMPTS"), 5),
        aws_timeout=_positive_int("MESH_AWS_TIMEOUT", get("MESH_AWS_TIMEOUT"), 10),
        stale_granting=_positive_int("MESH_STALE_GRANTING", get("MESH_STALE_GRANTING"), 300),
        demo_endpoint=get("MESH_DEMO_ENDPOINT"),
    )
