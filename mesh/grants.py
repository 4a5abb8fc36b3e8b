"""Lake Formation adapter: grant and list, with the exact request shapes from policy.py."""

from __future__ import annotations

from functools import partial
from typing import Any

from mesh.aws import call
from mesh.models import GrantSpec


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
