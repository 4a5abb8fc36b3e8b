"""The one client factory, and the mapping of AWS errors to domain errors.

Only adapters (catalog.py, grants.py) and this module import boto3 or botocore.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ProfileNotFound,
)

from mesh.errors import AwsFailure, AwsUnavailable, MeshError, NotFound, SettingError

log = logging.getLogger(__name__)

USER_AGENT = "mesh-marketplace/0.1"
DEMO_REGION = "us-east-1"
# Fake credentials are only ever used against the local demo stand-in.
_DEMO_CREDENTIALS = {"aws_access_key_id": "demo", "aws_secret_access_key": "demo"}

TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "InternalServiceException",
        "InternalFailure",
        "ServiceUnavailable",
        "OperationTimeoutException",
        "ConcurrentModificationException",
    }
)
_MISSING = {"EntityNotFoundException", "NoSuchEntity", "ResourceNotFoundException"}

T = TypeVar("T")
_NO_REGION = (
    "AWS_REGION is not set, and boto3 needs a region; set AWS_REGION (or AWS_DEFAULT_REGION, "
    "or a region in your AWS profile)."
)


@dataclass(frozen=True, kw_only=True)
class ClientFactory:
    """Builds every boto3 client with the same session, retries, timeouts and user agent.

    In aws mode it leaves boto3's standard chain alone: credentials, AWS_PROFILE,
    AWS_REGION/AWS_DEFAULT_REGION and AWS_ENDPOINT_URL all apply as usual. In demo mode it
    points at the local stand-in with fake credentials.
    """

    max_attempts: int = 5
    timeout: int = 10
    demo_endpoint: str | None = None

    def _config(self) -> Config:
        return Config(
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            user_agent_extra=USER_AGENT,
        )

    @cached_property
    def _session(self) -> boto3.session.Session:
        """One session for every client: each new session re-reads botocore's data files."""
        if self.demo_endpoint:
            return boto3.session.Session(
                aws_access_key_id=_DEMO_CREDENTIALS["aws_access_key_id"],
                aws_secret_access_key=_DEMO_CREDENTIALS["aws_secret_access_key"],
                region_name=DEMO_REGION,
            )
        # botocore reads AWS_DEFAULT_REGION and profiles; AWS_REGION, which the other AWS
        # SDKs read, is passed on so that either name works.
        return boto3.session.Session(region_name=os.environ.get("AWS_REGION") or None)

    @property
    def region(self) -> str:
        return str(self._session.region_name or DEMO_REGION)

    def client(self, service: str, **credentials: str) -> Any:
        """A client for ``service``; ``credentials`` are temporary keys from an assumed role."""
        extra: dict[str, str] = {"endpoint_url": self.demo_endpoint} if self.demo_endpoint else {}
        extra.update(credentials)
        try:
            return self._session.client(service, config=self._config(), **extra)  # type: ignore[call-overload]
        except NoRegionError as exc:
            raise SettingError(_NO_REGION) from exc
        except ProfileNotFound as exc:
            raise SettingError(
                f"AWS_PROFILE names a profile that does not exist ({exc}); set it to a profile "
                "in your AWS config, or unset it."
            ) from exc
        except ValueError as exc:  # botocore's "Invalid endpoint: ..."
            raise SettingError(
                f"AWS_ENDPOINT_URL is not a usable URL ({exc}); set it to an address such as "
                "http://127.0.0.1:5000, or unset it."
            ) from exc


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def call(service: str, operation: str, fn: Callable[[], T], *, missing: str | None = None) -> T:
    """Run one AWS call and turn its failure into a domain error.

    ``missing``: the message for a not-found error when not-found means the caller asked for
    something that does not exist (a NotFound), rather than a failure of the call.
    """
    started = time.monotonic()
    try:
        result = fn()
    except ClientError as exc:
        code = error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", "")) or code
        if missing is not None and code in _MISSING:
            raise NotFound(missing, code=code) from exc
        log.warning("%s %s failed: %s %s", service, operation, code, message)
        if code in TRANSIENT_CODES:
            raise AwsUnavailable(
                f"{service} {operation} failed for now ({code}: {message}); try again in a moment.",
                code=code,
            ) from exc
        raise AwsFailure(
            f"{service} {operation} was refused ({code}: {message}).", code=code
        ) from exc
    except NoRegionError as exc:
        raise SettingError(_NO_REGION) from exc
    except NoCredentialsError as exc:
        raise AwsFailure(
            "No AWS credentials were found; configure them as for the AWS CLI "
            "(environment, profile or instance role).",
            code="NoCredentials",
        ) from exc
    except BotoCoreError as exc:
        log.warning("%s %s could not complete: %s", service, operation, exc)
        raise AwsUnavailable(
            f"{service} {operation} could not reach AWS ({exc}); check the "
            "endpoint and network, then try again.",
            code=type(exc).__name__,
        ) from exc
    # Names and timing only: a response may hold credentials (AssumeRole) or links (Publish).
    log.debug("%s %s took %.0f ms", service, operation, (time.monotonic() - started) * 1000)
    return result


def central_account(sts: Any) -> str:
    """The caller's account id: the central catalog's ``CatalogId``."""
    identity = call("STS", "GetCallerIdentity", sts.get_caller_identity)
    return str(identity["Account"])


__all__ = ["ClientFactory", "MeshError", "call", "central_account", "error_code"]
