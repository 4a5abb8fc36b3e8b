"""One frozen ``Settings``, read from the environment and ``.streamlit/secrets.toml``.

An environment variable wins over the same key in secrets.toml. A missing or invalid
setting raises ``SettingError`` with one sentence: which setting, what is wrong, what to do.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from mesh.demo import data as demo_data
from mesh.errors import SettingError
from mesh.policy import is_valid_account

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SECRETS_FILE = PROJECT_ROOT / ".streamlit" / "secrets.toml"
DEMO_USERS = PROJECT_ROOT / "mesh" / "demo" / "users.yaml"
# A secret key (cookie key, link secret, audit key) needs at least this many characters and
# this many bits by the estimate in ``secret_bits``.
MIN_SECRET_LENGTH = 32
MIN_SECRET_BITS = 128
MAKE_A_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
# The demo keeps its audit key in a file beside MESH_DB; in aws mode that file would be readable
# by whoever can write the database, and so could re-key a forged chain.
AUDIT_KEY_REQUIRED = (
    f"MESH_AUDIT_KEY is not set, and aws mode needs a secret of at least {MIN_SECRET_LENGTH} "
    "random characters, kept apart from the database and its backups, to key the audit log's "
    f"hash chain; make one with `{MAKE_A_SECRET}`."
)
# The demo keeps its link secret in a file beside MESH_DB too; in aws mode whoever can read the
# database's folder could then forge approve and deny links.
LINK_SECRET_REQUIRED = (
    f"MESH_LINK_SECRET is not set, and aws mode needs a secret of at least {MIN_SECRET_LENGTH} "
    "random characters, kept apart from the database's folder and its backups, to sign "
    f"decision links; make one with `{MAKE_A_SECRET}`."
)


class Mode(StrEnum):
    DEMO = "demo"
    AWS = "aws"


# Where tick publishes the audit chain's head when MESH_AUDIT_ANCHOR is unset: the file
# audit-anchor.json beside the store's (catches a deleted tail; set file: or sns to keep it
# out of reach of whoever holds the database).
DEFAULT_ANCHOR = "beside"
# A PostgreSQL store has no folder to keep that file in, and a file on one replica's disk is
# not seen by the others; the operator must say where the head goes.
ANCHOR_NEEDS_A_PLACE = (
    "MESH_DB is a PostgreSQL URL, so there is no folder beside it for the audit anchor's "
    "default file; set MESH_AUDIT_ANCHOR to sns (to MESH_ADMIN_TOPIC_ARN; best with several "
    "replicas), to file:PATH on storage every replica running tick shares, or to off."
)
# The demo makes, resets and deletes its own SQLite file; it never does that to a database
# server, which others may share.
DEMO_NEEDS_SQLITE = (
    "MESH_MODE is demo, and the demo makes and resets its own SQLite file, so MESH_DB cannot "
    "be a PostgreSQL URL; unset MESH_DB for the demo, or set MESH_MODE=aws to use PostgreSQL."
)


def is_db_url(value: str) -> bool:
    """Whether MESH_DB names a PostgreSQL database (a URL) rather than a SQLite file."""
    return value.startswith(("postgresql://", "postgres://"))


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
        help="the store (requests, the audit log, sign-in sessions): a SQLite file's path, or "
        "a postgresql:// URL (aws mode; credentials from the URL, PG* variables or "
        "PGPASSFILE; TLS through sslmode and sslrootcert in the URL)",
    ),
    Setting(
        name="MESH_USERS",
        default="mesh/demo/users.yaml in demo mode; required in aws mode",
        help="users file: streamlit-authenticator format plus roles, accounts, owner_of",
    ),
    Setting(
        name="MESH_AUTH",
        default="password",
        help="`password` signs in with the users file; `oidc` through the identity provider "
        "in secrets.toml [auth], with roles from MESH_ROLE_MAP",
    ),
    Setting(
        name="MESH_ROLE_MAP",
        default="none; required with MESH_AUTH=oidc",
        help="role map file (YAML): identity-provider groups and users to roles, accounts, "
        "owner_of and approver groups; never together with MESH_USERS",
    ),
    Setting(
        name="MESH_GROUPS_CLAIM",
        default="groups",
        help="the ID token claim holding a person's groups (cognito:groups on Cognito)",
    ),
    Setting(
        name="MESH_COOKIE_KEY",
        default="random per start in demo mode; required in aws",
        help="secret that signs the login cookie (32+ random characters, 128+ bits: see "
        "Security); the CLI ignores it",
    ),
    Setting(
        name="MESH_CATALOG_TTL",
        default="300",
        help="unused since pages read the catalog index; still accepted, so old settings load",
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
    Setting(
        name="MESH_LOG",
        default="error",
        help="log level: `warning` adds the AWS error behind a message, `debug` all; "
        "secrets are masked",
    ),
    Setting(
        name="MESH_LOG_AWS_WIRE",
        default="off",
        help="`on` adds botocore's and urllib3's debug lines (every AWS request and response), "
        "with a warning: their secrets are masked as far as known, share none of it",
    ),
    Setting(
        name="MESH_NOTIFY",
        default="on",
        help="`off` sends no notification at all (the outbox still records why)",
    ),
    Setting(
        name="MESH_BASE_URL",
        default="http://localhost:8501",
        help="the web app's address, used in the approve and deny links of notifications",
    ),
    Setting(
        name="MESH_PRODUCER_ROLE",
        default="ProducerWorkflowRole",
        help="role assumed in the producer account (`data_owner`) to notify its owners",
    ),
    Setting(
        name="MESH_PRODUCER_TOPIC",
        default="DataLakeSharingApproval",
        help="SNS topic name in the producer account that owners subscribe to",
    ),
    Setting(
        name="MESH_DECISION_TOPIC_ARN",
        default="(none)",
        help="optional SNS topic in the central account for decisions and expiry warnings",
    ),
    Setting(
        name="MESH_ADMIN_TOPIC_ARN",
        default="(none)",
        help="optional SNS topic in the central account for reminders escalated to admins",
    ),
    Setting(
        name="MESH_LINK_SECRET",
        default="demo: random, kept in link-secret beside MESH_DB; aws mode: required",
        help="secret that signs decision links (as strong as the cookie key); every process "
        "on the server must share it",
    ),
    Setting(name="MESH_LINK_TTL_HOURS", default="72", help="hours a decision link stays valid"),
    Setting(
        name="MESH_AUDIT_KEY",
        default="demo: random, kept in audit-key beside MESH_DB; aws mode: required",
        help="secret (as strong as the cookie key) that keys the audit log's hash chain; keep "
        "it out of the database's folder and backups, and share it with every process",
    ),
    Setting(
        name="MESH_AUDIT_ANCHOR",
        default="file:audit-anchor.json beside MESH_DB; must be set for a PostgreSQL MESH_DB",
        help="where tick publishes the audit chain's head: file:PATH, sns (to "
        "MESH_ADMIN_TOPIC_ARN) or off",
    ),
    Setting(
        name="MESH_ORG_ACCOUNTS",
        default="(unknown)",
        help="comma-separated account ids of the AWS Organization, or `aws` to read them "
        "with organizations:ListAccounts; outside accounts get RAM instructions",
    ),
    Setting(
        name="MESH_ACCOUNT_NAMES",
        default="(none; demo: the demo accounts' names)",
        help="names shown beside account ids, such as "
        "`444455556666=Analytics,777788889999=Partner`",
    ),
    Setting(
        name="MESH_POLICY",
        default="(built-in: PII waits for its owner)",
        help="approval policy file (YAML): sensitivity levels, rules, approval steps; "
        "see examples/policies/",
    ),
    Setting(
        name="MESH_MAX_DAYS_SENSITIVE",
        default="(no cap)",
        help="without MESH_POLICY: longest access, in days, a request with PII may ask for",
    ),
    Setting(
        name="MESH_REQUIRE_EXPIRY_SENSITIVE",
        default="off",
        help="without MESH_POLICY: `on` makes a request with PII ask for a duration",
    ),
    Setting(
        name="MESH_EXPIRY_WARNING_DAYS",
        default="7",
        help="days before expiry that the requester is warned",
    ),
    Setting(
        name="MESH_REMIND_AFTER_HOURS",
        default="48",
        help="hours a request may wait before owners are reminded (admins after twice that)",
    ),
    Setting(
        name="MESH_GRANT_RETRY_LIMIT",
        default="3",
        help="attempts the periodic job makes at a grant that failed for a transient cause",
    ),
    Setting(
        name="MESH_NOTIFY_RETRY_LIMIT",
        default="5",
        help="attempts made at one notification before it is left failed",
    ),
    Setting(
        name="MESH_SYNC_MINUTES",
        default="15",
        help="`tick` syncs the catalog index from Glue when the last sync is older than this",
    ),
    Setting(
        name="MESH_TICK_SECONDS",
        default="60",
        help="demo mode: seconds between background runs of the periodic job",
    ),
    Setting(
        name="MESH_DEMO_DURATION_MINUTES",
        default="3",
        help="demo mode: the short access duration offered so that expiry can be watched",
    ),
    Setting(
        name="MESH_SIGNIN_MAX_FAILURES",
        default="5",
        help="failed sign-ins in a row for one user name before it is locked out",
    ),
    Setting(
        name="MESH_SIGNIN_ADDRESS_MAX_FAILURES",
        default="20",
        help="failed sign-ins in a row from one client address before it is locked out",
    ),
    Setting(
        name="MESH_SIGNIN_LOCKOUT_MINUTES",
        default="15",
        help="minutes a locked-out user name or address must wait; failures older are forgotten",
    ),
    Setting(
        name="MESH_SIGNIN_DELAY_MS",
        default="500",
        help="wait before answering a failed sign-in, doubled for each failure in a row (8 s cap)",
    ),
    Setting(
        name="MESH_SESSION_HOURS",
        default="12",
        help="a sign-in session ends this many hours after the sign-in, whatever happens",
    ),
    Setting(
        name="MESH_SESSION_IDLE_MINUTES",
        default="30",
        help="a sign-in session ends after this many minutes without a page run",
    ),
    Setting(
        name="MESH_TRUSTED_PROXY",
        default="off",
        help="on when a reverse proxy on this host (deploy/nginx/mesh.conf) is in front of the "
        "app: only then does the X-Forwarded-For entry it adds name the client's address",
    ),
)


@dataclass(frozen=True, kw_only=True)
class Settings:
    mode: Mode
    db: str
    """MESH_DB: a SQLite file's absolute path, or a ``postgresql://`` URL (with any password:
    show ``db_label``, never this)."""
    users_path: Path
    cookie_key: str | None
    catalog_ttl: int
    aws_max_attempts: int
    aws_timeout: int
    stale_granting: int
    demo_endpoint: str | None
    notify: bool = True
    base_url: str = "http://localhost:8501"
    producer_role: str = "ProducerWorkflowRole"
    producer_topic: str = "DataLakeSharingApproval"
    decision_topic_arn: str | None = None
    admin_topic_arn: str | None = None
    link_secret: str | None = None
    link_ttl_hours: int = 72
    audit_key: str | None = None
    audit_anchor: str = DEFAULT_ANCHOR  # off, sns, beside, or file:PATH (absolute)
    org_accounts: str | None = None
    max_sensitive_days: int | None = None
    require_expiry_sensitive: bool = False
    warn_days: int = 7
    remind_after_hours: int = 48
    grant_retry_limit: int = 3
    notify_retry_limit: int = 5
    tick_seconds: int = 60
    sync_minutes: int = 15
    demo_minutes: int = 3
    signin_max_failures: int = 5
    signin_address_max_failures: int = 20
    signin_lockout_minutes: int = 15
    signin_delay_ms: int = 500
    session_hours: int = 12
    session_idle_minutes: int = 30
    trusted_proxy: bool = False
    policy_path: Path | None = None
    auth: str = "password"  # password or oidc
    role_map_path: Path | None = None
    groups_claim: str = "groups"
    # The names set in the environment or secrets.toml (not left to their defaults).
    explicit: frozenset[str] = frozenset()
    account_names: tuple[tuple[str, str], ...] = ()

    def account_name(self, account: str) -> str:
        """The name MESH_ACCOUNT_NAMES gives ``account``, or ""."""
        return dict(self.account_names).get(account, "")

    @property
    def on_postgres(self) -> bool:
        return is_db_url(self.db)

    @property
    def db_path(self) -> Path:
        """The SQLite file MESH_DB names; a PostgreSQL URL has none (check ``on_postgres``
        first: the demo, backups and the files kept beside the store need a file)."""
        if self.on_postgres:
            raise SettingError(
                f"MESH_DB is a PostgreSQL URL ({self.db_label}), not a SQLite file; this needs "
                "a file (see the README's 'Moving to PostgreSQL')."
            )
        return Path(self.db)

    @property
    def db_label(self) -> str:
        """MESH_DB as messages name it: the path, or the URL without its password."""
        if not self.on_postgres:
            return self.db
        from mesh.store.postgres import safe_url

        return safe_url(self.db)

    @property
    def files_dir(self) -> Path:
        """The folder for files kept beside the store: the SQLite file's, else var/."""
        return PROJECT_ROOT / "var" if self.on_postgres else self.db_path.parent

    @property
    def link_secret_file(self) -> Path:
        return self.files_dir / "link-secret"

    @property
    def audit_key_file(self) -> Path:
        """The demo's audit key, when MESH_AUDIT_KEY is not set (aws mode requires it)."""
        return self.files_dir / "audit-key"

    @property
    def demo_state_file(self) -> Path:
        """Where a running demo stand-in records its endpoint, beside the database."""
        return self.files_dir / "demo-standin.json"


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


def resolve_path(path: str) -> Path:
    """A setting's path: absolute, or relative to the project folder."""
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
    auth = _auth(get)
    if users is None and mode is Mode.AWS and auth["auth"] == "password":
        raise SettingError(
            "MESH_USERS is not set, and aws mode needs a users file; "
            "set MESH_USERS to its path (see mesh/demo/users.yaml for the format)."
        )
    users_path = resolve_path(users) if users else DEMO_USERS
    if not users_path.is_file():
        raise SettingError(
            f"MESH_USERS points at {users_path}, which is not a file; "
            "set it to the path of your users file."
        )

    policy = get("MESH_POLICY")
    if policy is not None and (
        get("MESH_MAX_DAYS_SENSITIVE") or get("MESH_REQUIRE_EXPIRY_SENSITIVE")
    ):
        raise SettingError(
            "MESH_POLICY is set, so MESH_MAX_DAYS_SENSITIVE and MESH_REQUIRE_EXPIRY_SENSITIVE "
            "do not apply; put max_days and require_duration in the policy's rules instead."
        )

    cookie_key = get("MESH_COOKIE_KEY")
    if web and mode is Mode.AWS and cookie_key is None:
        raise SettingError(
            "MESH_COOKIE_KEY is not set, and the web app in aws mode needs a secret of at "
            f"least {MIN_SECRET_LENGTH} random characters; make one with `{MAKE_A_SECRET}`."
        )
    if web and cookie_key is not None:
        check_secret("MESH_COOKIE_KEY", cookie_key)

    audit_key = get("MESH_AUDIT_KEY")
    if mode is Mode.AWS and audit_key is None:
        raise SettingError(AUDIT_KEY_REQUIRED)
    audit_key = _checked_secret("MESH_AUDIT_KEY", audit_key)

    anchor = _anchor(get("MESH_AUDIT_ANCHOR"))
    if is_db_url(db):
        _check_db_url(db)
    if is_db_url(db) and mode is Mode.DEMO:
        raise SettingError(DEMO_NEEDS_SQLITE)
    if is_db_url(db) and anchor == DEFAULT_ANCHOR:
        raise SettingError(ANCHOR_NEEDS_A_PLACE)

    return Settings(
        mode=mode,
        db=db if is_db_url(db) else str(resolve_path(db)),
        audit_key=audit_key,
        audit_anchor=anchor,
        users_path=users_path,
        cookie_key=cookie_key,
        catalog_ttl=_positive_int("MESH_CATALOG_TTL", get("MESH_CATALOG_TTL"), 300),
        aws_max_attempts=_positive_int("MESH_AWS_MAX_ATTEMPTS", get("MESH_AWS_MAX_ATTEMPTS"), 5),
        aws_timeout=_positive_int("MESH_AWS_TIMEOUT", get("MESH_AWS_TIMEOUT"), 10),
        stale_granting=_positive_int("MESH_STALE_GRANTING", get("MESH_STALE_GRANTING"), 300),
        demo_endpoint=get("MESH_DEMO_ENDPOINT"),
        policy_path=resolve_path(policy) if policy else None,
        **auth,
        explicit=frozenset(s.name for s in SETTINGS if get(s.name) is not None),
        account_names=_account_names(get("MESH_ACCOUNT_NAMES"), demo=mode is Mode.DEMO),
        **_lifecycle(get, demo=mode is Mode.DEMO),
    )


def secret_bits(value: str) -> float:
    """Estimate the entropy of ``value`` in bits: its length times the Shannon entropy of its
    own characters' frequencies.

    A repeated or mostly repeated string scores low (``"a" * 32`` scores 0); 32 random
    URL-safe characters score about 140. The estimate cannot see patterns such as
    ``abcdef...``, so it is a floor against careless keys, not a proof of a good one.
    """
    if not value:
        return 0.0
    counts = Counter(value)
    n = len(value)
    return -n * sum(c / n * math.log2(c / n) for c in counts.values())


def check_secret(name: str, value: str) -> str:
    """Return ``value`` if it is strong enough to sign with, else raise SettingError.

    The rule: at least MIN_SECRET_LENGTH (32) characters, not one shorter string repeated,
    and at least MIN_SECRET_BITS (128) bits by ``secret_bits``. ``secrets.token_urlsafe(32)``
    (43 characters) passes; 32 hex digits (4 bits a character at most) do not, 64 do.
    """
    if len(value) < MIN_SECRET_LENGTH:
        problem = f"has only {len(value)} characters"
    elif value in (value + value)[1:-1]:
        problem = "repeats a shorter string"
    elif secret_bits(value) < MIN_SECRET_BITS:
        problem = f"is too predictable (about {secret_bits(value):.0f} bits by its characters)"
    else:
        return value
    raise SettingError(
        f"{name} {problem}; a secret needs at least {MIN_SECRET_LENGTH} characters and "
        f"{MIN_SECRET_BITS} bits of randomness: make one with `{MAKE_A_SECRET}`."
    )


def _switch(name: str, raw: str | None, default: bool) -> bool:
    if raw is None:
        return default
    value = raw.lower()
    if value in {"on", "true", "yes", "1"}:
        return True
    if value in {"off", "false", "no", "0"}:
        return False
    raise SettingError(f"{name} is {raw!r}, which is neither on nor off; set it to on or off.")


def _topic(name: str, raw: str | None) -> str | None:
    if raw is not None and not raw.startswith("arn:aws:sns:"):
        raise SettingError(
            f"{name} is {raw!r}, which is not an SNS topic ARN; set it to an ARN "
            "such as arn:aws:sns:eu-west-1:123456789012:mesh-decisions."
        )
    return raw


def _topic_setting(name: str, get: Any, demo: bool) -> str | None:
    raw = get(name)
    return _topic(name, raw if raw is not None or not demo else _DEMO_TOPICS[name])


def _org(raw: str | None) -> str | None:
    if raw is None or raw.lower() == "aws":
        return raw and raw.lower()
    accounts = [a.strip() for a in raw.split(",") if a.strip()]
    wrong = [a for a in accounts if not (len(a) == 12 and a.isascii() and a.isdigit())]
    if wrong or not accounts:
        raise SettingError(
            f"MESH_ORG_ACCOUNTS holds {(wrong or [raw])[0]!r}, which is not a "
            "12-digit account id; list the ids separated by commas, or set aws."
        )
    return ",".join(accounts)


def _account_names(raw: str | None, *, demo: bool) -> tuple[tuple[str, str], ...]:
    """Parse ``ID=Name,ID=Name``; in demo mode, unset means the demo accounts' names."""
    if raw is None:
        return _DEMO_ACCOUNT_NAMES if demo else ()
    names: dict[str, str] = {}
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        account, sep, name = (part.strip() for part in entry.partition("="))
        if not (sep and name and is_valid_account(account)):
            raise SettingError(
                f"MESH_ACCOUNT_NAMES holds {entry!r}, which is not ACCOUNT=NAME with a "
                "12-digit account id; write it as 444455556666=Analytics,777788889999=Partner."
            )
        if account in names:
            raise SettingError(
                f"MESH_ACCOUNT_NAMES names account {account} twice ({names[account]!r} and "
                f"{name!r}); keep one name per account."
            )
        names[account] = name
    return tuple(names.items())


_DEMO_ACCOUNT_NAMES = (
    (demo_data.CENTRAL_ACCOUNT, "Central catalog"),
    *demo_data.CONSUMERS.items(),
    *demo_data.DOMAINS.items(),
)


# The demo stand-in creates these central topics (mesh/demo/data.py).
_DEMO_TOPICS = {
    "MESH_DECISION_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:mesh-decisions",
    "MESH_ADMIN_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:mesh-admin-reminders",
}


_DEMO_ORG = "123456789012,111111111111,222222222222,333333333333,444455556666,555555555555"


def _anchor(raw: str | None) -> str:
    """MESH_AUDIT_ANCHOR as off, sns, beside (unset), or file: with an absolute path."""
    if raw is None:
        return DEFAULT_ANCHOR
    value = raw.strip()
    if value.lower() in ("off", "sns"):
        return value.lower()
    if value.startswith("file:") and value[5:].strip():
        return f"file:{resolve_path(value[5:].strip())}"
    raise SettingError(
        f"MESH_AUDIT_ANCHOR is {raw!r}, which is not a place to publish the audit log's "
        "head; set it to file:PATH (best on another disk or host), sns or off."
    )


def _check_db_url(url: str) -> None:
    """Refuse a MESH_DB URL libpq cannot read, in a sentence that does not repeat it (libpq's
    own message may quote the password)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except ProgrammingError:
        raise SettingError(
            "MESH_DB is not a PostgreSQL URL that can be read; write it as "
            "postgresql://USER@HOST:PORT/DATABASE, with any special character in the password "
            "percent-encoded (or the password in PGPASSWORD or PGPASSFILE)."
        ) from None


def _checked_secret(name: str, raw: str | None) -> str | None:
    return None if raw is None else check_secret(name, raw)


def _link_secret(get: Any, *, demo: bool) -> str | None:
    raw = get("MESH_LINK_SECRET")
    if raw is None and not demo:
        raise SettingError(LINK_SECRET_REQUIRED)
    return _checked_secret("MESH_LINK_SECRET", raw)


def _lifecycle(get: Any, *, demo: bool) -> dict[str, Any]:
    """The access-lifecycle settings: notifications, links, expiry, reminders."""
    base_url = get("MESH_BASE_URL") or "http://localhost:8501"
    if not base_url.startswith(("http://", "https://")):
        raise SettingError(
            f"MESH_BASE_URL is {base_url!r}, which is not a web address; set it "
            "to the app's URL, such as https://mesh.example.com."
        )
    cap = get("MESH_MAX_DAYS_SENSITIVE")
    return {
        "notify": _switch("MESH_NOTIFY", get("MESH_NOTIFY"), True),
        "base_url": base_url.rstrip("/"),
        "producer_role": get("MESH_PRODUCER_ROLE") or "ProducerWorkflowRole",
        "producer_topic": get("MESH_PRODUCER_TOPIC") or "DataLakeSharingApproval",
        "decision_topic_arn": _topic_setting("MESH_DECISION_TOPIC_ARN", get, demo),
        "admin_topic_arn": _topic_setting("MESH_ADMIN_TOPIC_ARN", get, demo),
        "link_secret": _link_secret(get, demo=demo),
        "link_ttl_hours": _positive_int("MESH_LINK_TTL_HOURS", get("MESH_LINK_TTL_HOURS"), 72),
        # The demo's partner account (777788889999) is outside its Organization.
        "org_accounts": _org(get("MESH_ORG_ACCOUNTS") or (_DEMO_ORG if demo else None)),
        "max_sensitive_days": None
        if cap is None
        else _positive_int("MESH_MAX_DAYS_SENSITIVE", cap, 90),
        "require_expiry_sensitive": _switch(
            "MESH_REQUIRE_EXPIRY_SENSITIVE", get("MESH_REQUIRE_EXPIRY_SENSITIVE"), False
        ),
        "warn_days": _positive_int("MESH_EXPIRY_WARNING_DAYS", get("MESH_EXPIRY_WARNING_DAYS"), 7),
        "remind_after_hours": _positive_int(
            "MESH_REMIND_AFTER_HOURS", get("MESH_REMIND_AFTER_HOURS"), 48
        ),
        "grant_retry_limit": _positive_int(
            "MESH_GRANT_RETRY_LIMIT", get("MESH_GRANT_RETRY_LIMIT"), 3
        ),
        "notify_retry_limit": _positive_int(
            "MESH_NOTIFY_RETRY_LIMIT", get("MESH_NOTIFY_RETRY_LIMIT"), 5
        ),
        "tick_seconds": _positive_int("MESH_TICK_SECONDS", get("MESH_TICK_SECONDS"), 60),
        "sync_minutes": _positive_int("MESH_SYNC_MINUTES", get("MESH_SYNC_MINUTES"), 15),
        "demo_minutes": _positive_int(
            "MESH_DEMO_DURATION_MINUTES", get("MESH_DEMO_DURATION_MINUTES"), 3
        ),
        **_sign_in(get),
    }


def _auth(get: Any) -> dict[str, Any]:
    """How people sign in: the users file, or OIDC with the role map (never both)."""
    auth = (get("MESH_AUTH") or "password").lower()
    if auth not in ("password", "oidc"):
        raise SettingError(
            f"MESH_AUTH is {auth!r}, which is not a way to sign in; set it to 'password' or 'oidc'."
        )
    role_map = get("MESH_ROLE_MAP")
    if auth == "oidc" and get("MESH_USERS") is not None:
        raise SettingError(
            "MESH_USERS and MESH_AUTH=oidc are both set, but the users file and the role map "
            "cannot both be in force; remove MESH_USERS (OIDC takes roles from MESH_ROLE_MAP)."
        )
    if auth == "password" and role_map is not None:
        raise SettingError(
            "MESH_ROLE_MAP is set but MESH_AUTH is password, and the users file and the role map "
            "cannot both be in force; set MESH_AUTH=oidc or remove MESH_ROLE_MAP."
        )
    if auth == "oidc" and role_map is None:
        raise SettingError(
            "MESH_AUTH is oidc but MESH_ROLE_MAP is not set; set it to the role map file "
            "(see examples/rolemap.yaml)."
        )
    role_map_path = resolve_path(role_map) if role_map else None
    if role_map_path is not None and not role_map_path.is_file():
        raise SettingError(
            f"MESH_ROLE_MAP points at {role_map_path}, which is not a file; "
            "set it to the path of your role map."
        )
    claim = get("MESH_GROUPS_CLAIM") or "groups"
    return {"auth": auth, "role_map_path": role_map_path, "groups_claim": claim}


def _sign_in(get: Any) -> dict[str, Any]:
    """The sign-in settings: throttling and the lifetime of a session."""
    numbers = {
        "signin_max_failures": ("MESH_SIGNIN_MAX_FAILURES", 5),
        "signin_address_max_failures": ("MESH_SIGNIN_ADDRESS_MAX_FAILURES", 20),
        "signin_lockout_minutes": ("MESH_SIGNIN_LOCKOUT_MINUTES", 15),
        "signin_delay_ms": ("MESH_SIGNIN_DELAY_MS", 500),
        "session_hours": ("MESH_SESSION_HOURS", 12),
        "session_idle_minutes": ("MESH_SESSION_IDLE_MINUTES", 30),
    }
    return {
        field: _positive_int(name, get(name), default) for field, (name, default) in numbers.items()
    } | {"trusted_proxy": _switch("MESH_TRUSTED_PROXY", get("MESH_TRUSTED_PROXY"), False)}
