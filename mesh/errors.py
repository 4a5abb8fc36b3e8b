"""Domain errors: every refusal a person or a script can see is one of these.

Each carries a one-sentence message meant for a person, and the CLI maps each class to its
exit code (see ``EXIT_CODES``).
"""

from __future__ import annotations

import logging


class MeshError(Exception):
    """Base class: a refusal or failure with a message a person understands."""

    exit_code = 1

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidInput(MeshError):
    """Malformed input: bad account id, empty reason, unowned database, bad setting."""

    exit_code = 2


class SettingError(InvalidInput):
    """A missing or invalid setting; the message names it and says what to do."""


class Forbidden(MeshError):
    """The acting user may not do this: unknown user, wrong role, not the owner."""

    exit_code = 3


class NotFound(MeshError):
    """A database, table or request that does not exist."""

    exit_code = 4


class Conflict(MeshError):
    """The request is in the wrong state, or an identical active request exists."""

    exit_code = 5


class StorageError(MeshError):
    """The SQLite file (MESH_DB) failed: locked too long, read-only, full, or gone.

    The message names MESH_DB, its path and the cause; it is never a setting mistake, so
    the exit code is that of a runtime failure.
    """

    exit_code = 1


class AwsFailure(MeshError):
    """An AWS call failed; ``code`` holds the AWS error code."""

    exit_code = 1


class AwsUnavailable(AwsFailure):
    """AWS could not be reached or timed out; trying again later may work."""


class PolicyMismatch(SettingError):
    """This process's approval policy is not the one the store records as in force."""


class InFlight(MeshError):
    """A grant or revoke stopped half-way and could not record its outcome.

    The request stays ``granting`` or ``revoking``; the periodic job takes it over once it
    is stale, reads Lake Formation, and ends it in a named state.
    """

    exit_code = 1


def failure_of(exc: Exception, unexpected: str) -> tuple[str, str]:
    """The code and message to record for a failure that must leave a named state.

    A domain error speaks for itself; anything else is logged with its trace (for the
    operator) and recorded as ``Unexpected`` with the sentence ``unexpected`` (for a person).
    """
    if isinstance(exc, MeshError):
        return exc.code or type(exc).__name__, exc.message
    logging.getLogger("mesh").error("unexpected failure: %s", unexpected, exc_info=exc)
    return "Unexpected", unexpected


def in_flight(request_id: str, exc: Exception, *, doing: str, after: int, then: str) -> InFlight:
    """The ``InFlight`` for a grant or revoke whose outcome could not be recorded."""
    code, message = failure_of(exc, f"an unexpected error ({type(exc).__name__})")
    return InFlight(
        f"Request {request_id} is still {doing}: {message.rstrip('.')}. The periodic job "
        f"(`mesh tick`) finishes it {after} seconds after its last update; {then}.",
        code=code,
    )
