"""Sign-in and sessions: passwords checked at one cost, guessing throttled, sessions on the server.

No Streamlit here (mesh/ui_signin.py draws the form and carries the cookie). Three rules:
- Throttling is counted in the store, per user name and per client address, so the count
  holds across reruns, processes and replicas. Each failure waits longer before the reply;
  at the limit the name (or address) is locked out for a set time. A reply says only
  "wrong user name or password" or "too many attempts; try again in N minutes".
- A user name that does not exist costs what a wrong password costs: its password is
  checked against a dummy bcrypt hash of the same cost.
- A session is a random id (only its SHA-256 is stored) with an absolute expiry, an idle
  timeout and a fingerprint of the user's password hash, checked on every run: a changed
  password, a sign-out, or an expiry ends it, and the cookie that carried it is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import bcrypt
import jwt

from mesh.models import Action, User
from mesh.settings import Settings
from mesh.store import AnyStore, NewEvent, SessionRow
from mesh.users import UserFile
from mesh.workflow import iso, utc_now

WRONG = "Wrong user name or password."
_COST = re.compile(r"^\$2[aby]\$(\d\d)\$")
_NAME_LIMIT = 64  # the most of a typed user name that the audit log keeps
COOKIE_ALGORITHM = "HS256"
COOKIE_AUDIT_WINDOW = timedelta(minutes=1)  # one audit row per address for refused cookies


def too_many(minutes: int) -> str:
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many attempts; try again in {minutes} {unit}."


@dataclass(frozen=True, kw_only=True)
class Rules:
    """The sign-in settings: attempts, lockout, delay, session lifetime."""

    max_failures: int = 5
    address_max_failures: int = 20
    lockout: timedelta = timedelta(minutes=15)
    first_delay: float = 0.5  # seconds after the first failure; doubled for each one after
    max_delay: float = 8.0
    session_lifetime: timedelta = timedelta(hours=12)
    idle_timeout: timedelta = timedelta(minutes=30)

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(
            max_failures=settings.signin_max_failures,
            address_max_failures=settings.signin_address_max_failures,
            lockout=timedelta(minutes=settings.signin_lockout_minutes),
            first_delay=settings.signin_delay_ms / 1000,
            session_lifetime=timedelta(hours=settings.session_hours),
            idle_timeout=timedelta(minutes=settings.session_idle_minutes),
        )

    def delay(self, failures: int) -> float:
        """Seconds to wait before answering the ``failures``-th failure in a row."""
        if failures <= 0:
            return 0.0
        return float(min(self.first_delay * 2 ** (failures - 1), self.max_delay))


@dataclass(frozen=True, kw_only=True)
class SignedIn:
    user: User
    session_id: str  # the random id the cookie carries; the store keeps only its hash
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class Refused:
    message: str  # WRONG or too_many(n): nothing else is ever said


def token_id(session_id: str) -> str:
    """What the store keeps of a session id: its SHA-256, so a copy of the database
    holds no working session."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def password_fingerprint(password_hash: str) -> str:
    """A fingerprint of the password hash: a new password gives a new one."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


_DUMMIES: dict[int, bytes] = {}
_DUMMY_LOCK = threading.Lock()


def dummy_hash(cost: int) -> bytes:
    """A bcrypt hash of a random password at ``cost``, made once per process."""
    with _DUMMY_LOCK:
        if cost not in _DUMMIES:
            _DUMMIES[cost] = bcrypt.hashpw(secrets.token_bytes(18), bcrypt.gensalt(cost))
        return _DUMMIES[cost]


def check_password(password: str, stored: str) -> bool:
    """bcrypt's check, as streamlit-authenticator's ``Hasher.check_pw`` makes it."""
    return bcrypt.checkpw(password.encode(), stored.encode())


class CookieCodec:
    """The cookie's value: the session id in a JWT signed with the cookie key (HS256 only).

    The signature is defence in depth: the session id alone is what counts, and the store
    holds only its hash. Anything that does not decode (another algorithm, ``alg=none``, a
    wrong signature, an expired or malformed token) is None.
    """

    def __init__(self, key: str) -> None:
        self._key = key

    def encode(self, session_id: str, *, expires_at: datetime) -> str:
        claims = {"sid": session_id, "exp": int(expires_at.timestamp())}
        return str(jwt.encode(claims, self._key, algorithm=COOKIE_ALGORITHM))

    def decode(self, value: str) -> str | None:
        try:
            claims: Any = jwt.decode(
                value, self._key, algorithms=[COOKIE_ALGORITHM], options={"require": ["exp"]}
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        sid = claims.get("sid") if isinstance(claims, dict) else None
        return sid if isinstance(sid, str) and 20 <= len(sid) <= 100 else None


def _event(action: Action, actor: str, *, at: datetime, **details: Any) -> NewEvent:
    return NewEvent(
        at=iso(at), actor=actor, action=action.value, request_id=None, scope="",
        details=details,
    )  # fmt: skip


def _name(typed: str) -> str:
    cleaned = "".join(c for c in typed.strip().lower() if c.isprintable())
    return cleaned[:_NAME_LIMIT] or "(empty)"


def unknown_name(typed: str, *, key: bytes) -> str:
    """What the audit log and the throttle keep of a user name that does not exist: a
    marker that cannot be read back, since a password typed into the name box ends up here
    (the same typed text gives the same marker, so its attempts are still counted).

    An HMAC keyed with the audit chain's key: a plain hash of a name is reversed by
    hashing a dictionary, and so would the typed length narrow it, so neither is kept.
    """
    digest = hmac.new(key, b"unknown-name\0" + _name(typed).encode(), hashlib.sha256)
    return f"unknown user (hmac {digest.hexdigest()[:16]})"


def address_subject(client: str) -> str:
    """The throttle's subject for a client address: an IPv6 address counts by its /64.

    One IPv6 host is usually given a whole /64, so counting each address would let it
    make a fresh one for every guess; IPv4 (and IPv4 mapped into IPv6) counts as is.
    """
    try:
        found = ipaddress.ip_address(client.strip("[]"))
    except ValueError:
        return f"address:{client}"
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is None:
        return f"address:{ipaddress.IPv6Network((found, 64), strict=False)}"
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return f"address:{found.ipv4_mapped}"
    return f"address:{found}"


class SignIn:
    """The sign-in use cases: attempt, resume a session, sign out."""

    def __init__(
        self,
        store: AnyStore,
        users: UserFile,
        rules: Rules,
        *,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        check: Callable[[str, str], bool] = check_password,
    ) -> None:
        """``check`` tells a password from its hash: the web app passes
        streamlit-authenticator's ``Hasher.check_pw`` (this module does not import Streamlit)."""
        self.check = check
        self.store = store
        self.users = users
        self.rules = rules
        self.clock = clock
        self.sleep = sleep

    # Password sign-in ---------------------------------------------------------------------

    def attempt(self, username: str, password: str, *, client: str) -> SignedIn | Refused:
        """Check a password, unless the name or address is locked out; throttle failures.

        The attempt is counted before its password is checked, in the transaction that
        reads the lockout: parallel attempts (many tabs, many processes) get at most the
        limit of checks between them, and a right password takes its count back.
        """
        user, stored = self._credentials(_name(username))
        name = (
            _name(username)
            if user is not None
            else unknown_name(username, key=self.store.audit_key)
        )
        subjects = {f"user:{name}": self.rules.max_failures}
        address = address_subject(client)
        subjects[address] = self.rules.address_max_failures
        now = self.clock()
        until, counts = self.store.claim_sign_in_attempt(
            subjects,
            at=iso(now),
            forget_before=iso(now - self.rules.lockout),
            locked_until=iso(now + self.rules.lockout),
            locked_out=lambda: _event(
                Action.SIGN_IN_FAILED, name, at=now, client=client, why="locked out"
            ),
        )
        if until is not None:
            return Refused(message=too_many(self._minutes(datetime.fromisoformat(until) - now)))
        ok = self._matches(password, stored or dummy_hash(self._cost()).decode())
        if user is not None and stored and ok:
            self.store.clear_sign_in_failures(f"user:{name}")
            self.store.release_sign_in_attempt(address, limit=self.rules.address_max_failures)
            return self._open(user, stored, client=client)
        why = "unknown user" if user is None else "wrong password"
        events = [_event(Action.SIGN_IN_FAILED, name, at=now, client=client, why=why)]
        minutes = self._minutes(self.rules.lockout)
        reached = [s for s, failures in counts.items() if failures >= subjects[s]]
        events += [
            _event(Action.SIGN_IN_LOCKED, name, at=now, client=client, locked=s, minutes=minutes)
            for s in reached
        ]
        self.store.append(*events)
        if reached:
            return Refused(message=too_many(minutes))
        self.sleep(self.rules.delay(max(counts.values(), default=1)))
        return Refused(message=WRONG)

    def _matches(self, password: str, stored: str) -> bool:
        try:
            return bool(self.check(password, stored))
        except ValueError:  # not a bcrypt hash: the users file is validated, so not expected
            return False

    def _credentials(self, name: str) -> tuple[User | None, str]:
        directory = self.users.directory()
        user = directory.get(name)
        entry = directory.credentials.get("usernames", {}).get(name) if user else None
        return user, str(entry.get("password") or "") if entry else ""

    def _cost(self) -> int:
        """The cost of the users' hashes (the commonest), so the dummy costs the same."""
        costs: dict[int, int] = {}
        for entry in self.users.directory().credentials.get("usernames", {}).values():
            match = _COST.match(str(entry.get("password") or ""))
            if match:
                cost = int(match.group(1))
                costs[cost] = costs.get(cost, 0) + 1
        return max(costs, key=lambda c: costs[c]) if costs else 12

    @staticmethod
    def _minutes(span: timedelta) -> int:
        return max(1, math.ceil(span.total_seconds() / 60))

    def _open(
        self, user: User, stored: str, *, client: str, now: datetime | None = None, **details: Any
    ) -> SignedIn:
        """A new session for this user, audited as signed_in with these details."""
        session_id = secrets.token_urlsafe(32)
        now = now or self.clock()
        expires = now + self.rules.session_lifetime
        self.store.open_session(
            token_id(session_id),
            user.username,
            at=iso(now),
            expires_at=iso(expires),
            password_fp=password_fingerprint(stored),
            client=client,
            events=[_event(Action.SIGNED_IN, user.username, at=now, client=client, **details)],
        )
        return SignedIn(user=user, session_id=session_id, expires_at=expires)

    # Sessions -----------------------------------------------------------------------------

    def resume(self, session_id: str, *, client: str, by_cookie: bool = False) -> User | str:
        """The session's user, or why the session is over (audited as a refused session)."""
        row = self.store.session(token_id(session_id))
        now = self.clock()
        why = self._why_over(row, now)
        user = self.users.get(row.username) if row is not None and why is None else None
        if why is None and user is None:
            why = "unknown user"
        if (why is not None or user is None or row is None) and by_cookie:
            # A cookie replayed after its session ended comes back on every websocket
            # connection: audited as refused cookies are, once a minute per address.
            reason = why or "unknown session"
            self.store.end_session(token_id(session_id), at=iso(now), why=reason)
            self.refuse_cookie(
                client=client, why=reason, actor=row.username if row else "(unknown)"
            )
            return reason
        if why is not None or user is None or row is None:
            reason = why or "unknown session"
            self.store.end_session(
                token_id(session_id),
                at=iso(now),
                why=reason,
                events=[
                    _event(
                        Action.SESSION_REFUSED,
                        row.username if row else "(unknown)",
                        at=now,
                        client=client,
                        why=reason,
                        by_cookie=by_cookie,
                    )
                ],
            )
            return reason
        if datetime.fromisoformat(row.last_seen_at) < now - min(
            timedelta(minutes=1), self.rules.idle_timeout / 10
        ):
            self.store.touch_session(row.token_id, at=iso(now))
        return user

    def _why_over(self, row: SessionRow | None, now: datetime) -> str | None:
        if row is None or not row.expires_at:
            return "unknown session"
        if row.revoked_at:
            return f"already ended ({row.ended_why or 'signed out'})"
        if datetime.fromisoformat(row.expires_at) <= now:
            return "expired"
        if datetime.fromisoformat(row.last_seen_at) <= now - self.rules.idle_timeout:
            return "idle too long"
        _, stored = self._credentials(row.username)
        if not stored:
            return "unknown user"
        if password_fingerprint(stored) != row.password_fp:
            return "password changed"
        return None

    def refuse_cookie(self, *, client: str, why: str, actor: str = "(unknown)") -> None:
        """Audit a cookie that did not decode (forged, another algorithm, expired): the
        first from an address in each minute; the rest are counted, and the next audited
        row says how many went unaudited before it."""
        now = self.clock()
        self.store.note_refused_cookie(
            f"cookie:{client}",
            at=iso(now),
            window_ends=iso(now + COOKIE_AUDIT_WINDOW),
            event=lambda unaudited: _event(
                Action.SESSION_REFUSED,
                actor,
                at=now,
                client=client,
                why=why,
                by_cookie=True,
                unaudited_before=unaudited,
            ),
        )

    def sign_out(self, session_id: str, username: str, *, client: str) -> None:
        now = self.clock()
        self.store.end_session(
            token_id(session_id),
            at=iso(now),
            why="signed out",
            events=[_event(Action.SIGNED_OUT, username, at=now, client=client)],
        )
