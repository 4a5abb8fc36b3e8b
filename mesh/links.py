"""Signed decision links for notification e-mails (itsdangerous).

A link never decides by itself: mail scanners follow links, and in the reference design a
plain GET approved the request. Following a link only opens the request on the Approvals
page; a signed-in person allowed to decide must confirm. The token binds the request id and
the action, expires, and is single-use (its nonce is recorded when a decision is made).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from mesh.errors import InvalidInput, SettingError
from mesh.files import private_dir

SALT = "mesh-decision-link"


class LinkAction(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


@dataclass(frozen=True, kw_only=True)
class LinkClaim:
    request_id: str
    action: LinkAction
    nonce: str


class InvalidLink(InvalidInput):
    """A tampered, expired, reused or mismatched link; it changes nothing."""


def _signer_with_clock(clock: Callable[[], datetime]) -> type[TimestampSigner]:
    class ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock().timestamp())

    return ClockSigner


class LinkSigner:
    """Makes and reads the tokens in approve and deny links."""

    def __init__(self, secret: str, *, max_age_seconds: int, clock: Callable[[], datetime]) -> None:
        self._serializer = URLSafeTimedSerializer(
            secret, salt=SALT, signer=_signer_with_clock(clock)
        )
        self.max_age_seconds = max_age_seconds

    def token(self, request_id: str, action: LinkAction) -> str:
        payload = {"r": request_id, "a": action.value, "n": secrets.token_urlsafe(12)}
        return str(self._serializer.dumps(payload))

    def read(self, token: str) -> LinkClaim:
        """The claim in a token, or InvalidLink saying why it cannot be used."""
        try:
            payload: Any = self._serializer.loads(token, max_age=self.max_age_seconds)
        except SignatureExpired as exc:
            raise InvalidLink(
                "This decision link has expired; open the request from the Approvals page instead."
            ) from exc
        except BadSignature as exc:
            raise InvalidLink(
                "This decision link is not valid (it was changed or "
                "truncated); open the request from the Approvals page."
            ) from exc
        try:
            return LinkClaim(
                request_id=str(payload["r"]),
                action=LinkAction(payload["a"]),
                nonce=str(payload["n"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidLink(
                "This decision link is not valid; open the request from the Approvals page."
            ) from exc

    def url(self, base_url: str, request_id: str, action: LinkAction) -> str:
        query = urlencode({"link": self.token(request_id, action)})
        return f"{base_url.rstrip('/')}/approvals?{query}"


def load_or_create_secret(path: Path) -> str:
    """The server's link secret (or the demo's audit key), kept in a private file.

    The web app checks links that the CLI or the periodic job may have made, so every
    process on the server must sign with the same secret. Processes and threads starting
    at once race to make it: the secret is written whole to a temporary file first and
    then linked into place, which fails if another got there first (then theirs is used),
    so nobody reads a file that is still empty or half written.
    """
    if path.exists():
        return _read_secret(path)
    private_dir(path.parent)
    secret = secrets.token_urlsafe(48)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secret)
        try:
            os.link(partial, path)  # appears whole, and never replaces another's
        except FileExistsError:  # another process or thread made it first: use theirs
            return _read_secret(path)
    finally:
        Path(partial).unlink(missing_ok=True)
    return secret


def _read_secret(path: Path) -> str:
    secret = path.read_text().strip()
    if not secret:  # never sign with an empty secret (a file cut short before this fix)
        raise SettingError(f"{path} is empty; remove it, and a new secret is made on start.")
    return secret
