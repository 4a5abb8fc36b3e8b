"""Logging for the CLI and the web app: levels from MESH_LOG, secrets masked in every line.

Debug output ends up in tickets (every unexpected failure says to rerun with MESH_LOG=debug),
so nothing a log line carries may be used to act as someone: a filter on the root logger's
handlers masks AWS keys and session tokens, signatures, bearer and JWT-like tokens, decision
link tokens and passwords in the message, its arguments and its traceback. botocore's wire
logs (each request and response in full) stay off unless MESH_LOG_AWS_WIRE asks for them,
whoever set the root logger up.

What the masking covers: every handler on the root logger and on any other logger that has
handlers when logging is set up (a host that hangs a handler on ``mesh`` or ``botocore``
before the app starts). A handler added later to a logger other than the root is not
covered: call :func:`protect` on that logger after adding it.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import TextIO

MASK = "[redacted]"
WIRE_SETTING = "MESH_LOG_AWS_WIRE"
# The libraries whose DEBUG lines print whole requests and responses, credentials included.
WIRE_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")

_KEYWORDS = (
    r"secret[_-]?access[_-]?key|aws[_-]?secret[_-]?access[_-]?key|session[_-]?token"
    r"|security[_-]?token|x-amz-security-token|access[_-]?key[_-]?id|signature|password"
    r"|passwd|secret|token|credential|cookie|authorization|api[_-]?key|link"
)
# A value after a secret-looking name: `name=value`, `name: value`, `"name": "value"`,
# `<Name>value</Name>`, `'Name': b'value'`, and the same URL-encoded (`link%3Dvalue`).
_NAMED = re.compile(
    rf"(?i)((?:{_KEYWORDS})(?>[\"']?\s*(?::|=|%3D)\s*(?:b(?=[\"']))?[\"']?|>))([^\s\"'<>&,;)}}\[\]\\]+)"
)
_PATTERNS = (
    # AWS access key ids (long-term AKIA, temporary ASIA, and the other principal prefixes).
    re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|APKA)[A-Z0-9]{16}\b"),
    # JWTs (the login cookie) and other header.payload.signature tokens.
    re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    # itsdangerous tokens (decision links): payload.timestamp.signature.
    re.compile(r"\b[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{4,8}\.[A-Za-z0-9_-]{20,}"),
    # A secret access key's shape: 40 characters of base64 standing alone.
    re.compile(r"(?<![A-Za-z0-9/+=_-])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=_-])"),
    # Session tokens and other long opaque blobs.
    re.compile(r"[A-Za-z0-9/+_-]{100,}={0,2}"),
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
# A password in a URL's user information (MESH_DB=postgresql://user:password@host/db).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@?#]*:)[^\s@/?#]*@")
# Any other long run of mixed-case letters and digits that looks random (a generated key such
# as secrets.token_urlsafe(32)); words, paths, UUIDs and hex digests are left alone.
_CANDIDATE = re.compile(r"[A-Za-z0-9_+/=-]{32,}")
_RANDOM_BITS = 128


def _looks_random(word: str) -> bool:
    if not (re.search("[a-z]", word) and re.search("[A-Z]", word) and re.search("[0-9]", word)):
        return False
    counts = Counter(word)
    n = len(word)
    return -n * sum(c / n * math.log2(c / n) for c in counts.values()) >= _RANDOM_BITS


def redact(text: str) -> str:
    """``text`` with everything that looks like a credential, token or password masked."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _NAMED.sub(lambda m: m.group(1) + MASK, text)
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    return _CANDIDATE.sub(lambda m: MASK if _looks_random(m.group(0)) else m.group(0), text)


class RedactingFilter(logging.Filter):
    """Mask secrets in a record's message and traceback before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "mesh_redacted", False):  # one record passes every root handler
            return True
        record.mesh_redacted = True
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def protect(logger: logging.Logger | None = None) -> None:
    """Put the redacting filter on every handler of ``logger``; by default, on every handler
    of the root logger and of every other logger known now (a handler on a child logger sees
    a record before the root's handlers do, so the root's filter alone would not cover it)."""
    if logger is not None:
        loggers = [logger]
    else:
        known = logging.Logger.manager.loggerDict.values()
        loggers = [logging.getLogger(), *(x for x in known if isinstance(x, logging.Logger))]
    for each in loggers:
        for handler in each.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


def hold_wire_logs(env: Mapping[str, str], level: int) -> bool:
    """Keep botocore, urllib3 and the like at WARNING or above unless MESH_LOG_AWS_WIRE is on
    (then at ``level``); return whether it is on. Done whoever set up the root logger: a host
    logging at DEBUG would otherwise print every AWS request and response."""
    wire = _on(env.get(WIRE_SETTING))
    for library in WIRE_LOGGERS:
        logging.getLogger(library).setLevel(level if wire else max(level, logging.WARNING))
    return wire


def _on(raw: str | None) -> bool:
    return (raw or "").strip().lower() in {"1", "on", "true", "yes"}


def configure(env: Mapping[str, str], *, stream: TextIO | None = None) -> int:
    """Set up logging from MESH_LOG (default ``error``) and MESH_LOG_AWS_WIRE; return the level.

    Lines go to ``stream`` (standard error by default; a handler is added only if the root
    logger has none, or a stream is given), and every root handler gets the redacting
    filter. botocore and urllib3 log below WARNING only when MESH_LOG_AWS_WIRE is on, and
    then a warning says that their lines hold what the redaction may miss.
    """
    name = (env.get("MESH_LOG") or "error").strip().upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        level = logging.WARNING
    root = logging.getLogger()
    if stream is not None or not root.handlers:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    protect()
    # psycopg's pool says WARNING on each failed connection attempt, several a second while
    # a server is down; the one sentence the store raises says it once
    logging.getLogger("psycopg.pool").setLevel(level if level <= logging.DEBUG else logging.ERROR)
    wire = hold_wire_logs(env, level)
    if wire and level <= logging.DEBUG:
        logging.getLogger("mesh").warning(
            "%s is on: every AWS request and response is logged; the known secrets in them "
            "are masked, but treat this output as secret and share none of it.",
            WIRE_SETTING,
        )
    return level


_configured = False


def configure_once(env: Mapping[str, str]) -> None:
    """Set logging up for a server process (the web app) on its first call; later calls do
    nothing. When something else already gave the root logger a handler (Streamlit's test
    runner, a host embedding the app), the root's level is left alone, the redacting filter is
    added to every handler, and the AWS libraries are still held at WARNING unless
    MESH_LOG_AWS_WIRE asks for their lines."""
    global _configured
    if _configured:
        return
    _configured = True
    root = logging.getLogger()
    if root.handlers:
        protect()
        hold_wire_logs(env, root.getEffectiveLevel())
    else:
        configure(env)
