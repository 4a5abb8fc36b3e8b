"""Lake Formation adapter: grant and list, with the exact request shapes from policy.py."""

from __future__ import annotations

from functools import partial
from typing import Any

from mesh.aws import call
from mesh.models import GrantSpec
from mesh.policy import resource_key


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
