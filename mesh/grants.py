"""Lake Formation adapter: grant and list, with the exact request shapes from policy.py."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from mesh.aws import TRANSIENT_CODES, call
from mesh.errors import AwsFailure, AwsUnavailable, MeshError
from mesh.models import EntryOutcome, GrantSpec
from mesh.policy import resource_key

log = logging.getLogger(__name__)

BATCH_LIMIT = 20
"""Entries per BatchGrantPermissions or BatchRevokePermissions call (Lake Formation's limit)."""


class LakeFormation:
    def __init__(self, client: Any) -> None:
        self._lf = client

    def grant(self, spec: GrantSpec) -> dict[str, Any]:
        """Make one ``grant_permissions`` call; returns the exact parameters sent.

        The resource carries the central account's CatalogId, so the call's top-level
        CatalogId is left out (it would default to the caller's account anyway).
        """
        params = spec.to_api()
        call("Lake Formation", "GrantPermissions", lambda: self._lf.grant_permissions(**params))
        return params

    def revoke(self, spec: GrantSpec) -> dict[str, Any]:
        """Make one ``revoke_permissions`` call with the same shape as a grant."""
        params = spec.to_api()
        call("Lake Formation", "RevokePermissions", lambda: self._lf.revoke_permissions(**params))
        return params

    def batch_grant(self, specs: Sequence[GrantSpec]) -> list[EntryOutcome]:
        """Grant ``specs`` in ``batch_grant_permissions`` calls of at most 20 entries.

        Returns one outcome per spec, in order: Lake Formation reports failures per entry
        (``Failures``), so one refused entry never hides the others' success.
        """
        return self._batch("BatchGrantPermissions", self._lf.batch_grant_permissions, specs)

    def batch_revoke(self, specs: Sequence[GrantSpec]) -> list[EntryOutcome]:
        """Revoke ``specs`` in ``batch_revoke_permissions`` calls of at most 20 entries."""
        return self._batch("BatchRevokePermissions", self._lf.batch_revoke_permissions, specs)

    def _batch(
        self,
        operation: str,
        send: Callable[..., dict[str, Any]],
        specs: Sequence[GrantSpec],
    ) -> list[EntryOutcome]:
        outcomes: list[EntryOutcome] = []
        for start in range(0, len(specs), BATCH_LIMIT):
            # Ids are unique across the whole batch, and map each Failure back to its spec.
            by_id = {
                str(start + i): spec for i, spec in enumerate(specs[start : start + BATCH_LIMIT])
            }
            entries = [{"Id": entry_id, **spec.to_api()} for entry_id, spec in by_id.items()]
            try:
                response = call("Lake Formation", operation, partial(send, Entries=entries))
            except MeshError as exc:  # the whole call failed: so did each of its entries
                outcomes.extend(EntryOutcome(spec=spec, failure=exc) for spec in by_id.values())
                continue
            failed = _failures(operation, response.get("Failures") or [], set(by_id))
            outcomes.extend(
                EntryOutcome(spec=spec, failure=failed.get(entry_id, failed.get("")))
                for entry_id, spec in by_id.items()
            )
        return outcomes

    def holds(self, spec: GrantSpec) -> bool:
        """Whether Lake Formation already holds every permission ``spec`` would grant.

        ListPermissions cannot filter on a table with columns: asked for the table, it
        returns the table's grants and its column grants, which are matched here as sets.
        """
        body = spec.resource.get("TableWithColumns")
        where = (
            {
                "Table": {
                    "CatalogId": body["CatalogId"],
                    "DatabaseName": body["DatabaseName"],
                    "Name": body["Name"],
                }
            }
            if body is not None
            else spec.resource
        )
        wanted = resource_key(spec.resource)
        perms: set[str] = set()
        grantable: set[str] = set()
        for entry in self.list_permissions(principal=spec.principal, resource=where):
            if resource_key(entry.get("Resource", {})) == wanted:
                perms.update(entry.get("Permissions", []))
                grantable.update(entry.get("PermissionsWithGrantOption", []))
        return {p.value for p in spec.permissions} <= perms and {
            p.value for p in spec.grantable
        } <= grantable

    def list_permissions(
        self, *, principal: str | None = None, resource: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every permission entry, optionally for one principal and resource.

        list_permissions has no botocore paginator, so this loops on NextToken; passing a
        Principal requires a Resource too.
        """
        params: dict[str, Any] = {}
        if principal is not None:
            params["Principal"] = {"DataLakePrincipalIdentifier": principal}
        if resource is not None:
            params["Resource"] = resource
        entries: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page_params = {**params, **({"NextToken": token} if token else {})}
            page = call(
                "Lake Formation",
                "ListPermissions",
                partial(self._lf.list_permissions, **page_params),
            )
            entries.extend(page.get("PrincipalResourcePermissions", []))
            token = page.get("NextToken")
            if not token:
                return entries


def _failures(operation: str, raw: list[dict[str, Any]], ids: set[str]) -> dict[str, MeshError]:
    """Each failed entry's error by Id; "" holds a failure that names no entry we sent.

    A failure we cannot attribute fails every entry of its call: recording a success that
    did not happen would hide a missing grant, while a failure is retried (and a retry
    reads Lake Formation first).
    """
    failed: dict[str, MeshError] = {}
    for failure in raw:
        entry_id = str((failure.get("RequestEntry") or {}).get("Id", ""))
        error = failure.get("Error") or {}
        code = str(error.get("ErrorCode") or "Unknown")
        message = str(error.get("ErrorMessage") or code)
        log.warning("Lake Formation %s entry %s failed: %s %s", operation, entry_id, code, message)
        if code in TRANSIENT_CODES:
            exc: MeshError = AwsUnavailable(
                f"Lake Formation {operation} failed for now ({code}: {message}); try again "
                "in a moment.",
                code=code,
            )
        else:
            exc = AwsFailure(
                f"Lake Formation {operation} was refused ({code}: {message}).", code=code
            )
        failed[entry_id if entry_id in ids else ""] = exc
    return failed
