"""Documented fixes for moto 5.2.x bugs, applied only where moto runs (demo and tests).

The code that talks to AWS is never shaped around these bugs; the stand-in is fixed instead.

1. Lake Formation ``PermissionCatalog`` keeps ``Permission`` objects in a set but mutates them
   in place when an identical grant is repeated (``merge``), so their hash changes and a later
   revoke raises KeyError (HTTP 500 over the server). The fix rebuilds the set after a merge.
2. ``list_permissions`` filtered by a Table resource indexes ``["Name"]`` or
   ``["TableWildcard"]`` on stored grants that lack that key, and crashes when wildcard and
   named table grants coexist. The fix compares with ``.get``. Filtered by a named table,
   it also returns the table's column grants (``TableWithColumns``), as Lake Formation does
   ("call this operation on the table, and it returns the table and the table with columns").
3. ``batch_grant_permissions`` and ``batch_revoke_permissions`` read each entry's grant
   option from ``PermissionsWithGrantOptions``, a key the API does not have (it is
   ``PermissionsWithGrantOption``, as in a single grant), so a batch grant lost its grant
   option and a batch revoke left it in place. The fix reads the API's key.
"""

from __future__ import annotations

from typing import Any

_applied = False


def apply() -> None:
    """Patch moto's Lake Formation backend in this process; safe to call more than once."""
    global _applied
    if _applied:
        return
    from moto.lakeformation import models

    def add_permission(self: Any, permission: Any) -> None:
        for existing in list(self.permissions):
            if permission.equal_principal_and_resouce(existing):
                existing.merge(permission)
                self.permissions = set(self.permissions)  # rehash after the in-place merge
                return
        self.permissions.add(permission)

    def remove_permission(self: Any, permission: Any) -> None:
        for existing in list(self.permissions):
            if permission.equal_principal_and_resouce(existing):
                existing.diff(permission)
                self.permissions = {p for p in self.permissions if not p.is_empty()}
                return

    models.PermissionCatalog.add_permission = add_permission  # type: ignore[method-assign]
    models.PermissionCatalog.remove_permission = remove_permission  # type: ignore[method-assign]

    original = models.LakeFormationBackend.list_permissions

    def list_permissions(
        self: Any,
        catalog_id: str,
        principal: Any = None,
        resource: Any = None,
        resource_type: Any = None,
    ) -> Any:
        table = getattr(resource, "table", None) if resource is not None else None
        if table is None or resource.catalog is not None or resource.database is not None:
            return original(self, catalog_id, principal, resource, resource_type)
        everything = original(self, catalog_id, principal, None, resource_type)
        return [entry for entry in everything if _table_matches(entry["Resource"], table)]

    models.LakeFormationBackend.list_permissions = list_permissions  # type: ignore[method-assign]

    def batch_grant_permissions(self: Any, catalog_id: str, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            self.grant_permissions(
                catalog_id=catalog_id,
                principal=entry.get("Principal"),
                resource=entry.get("Resource"),
                permissions=entry.get("Permissions"),
                permissions_with_grant_options=entry.get("PermissionsWithGrantOption"),
            )

    def batch_revoke_permissions(self: Any, catalog_id: str, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            self.revoke_permissions(
                catalog_id=catalog_id,
                principal=entry.get("Principal"),
                resource=entry.get("Resource"),
                permissions_to_revoke=entry.get("Permissions"),
                permissions_with_grant_options_to_revoke=entry.get("PermissionsWithGrantOption"),
            )

    models.LakeFormationBackend.batch_grant_permissions = batch_grant_permissions  # type: ignore[method-assign]
    models.LakeFormationBackend.batch_revoke_permissions = batch_revoke_permissions  # type: ignore[method-assign]
    _applied = True


def _table_matches(stored: dict[str, Any], wanted: Any) -> bool:
    if "TableWithColumns" in stored and wanted.table_wildcard is None:
        table = stored["TableWithColumns"]
    elif "Table" in stored:
        table = stored["Table"]
    else:
        return False
    if table.get("DatabaseName") != wanted.database_name:
        return False
    if wanted.catalog_id is not None and table.get("CatalogId") != wanted.catalog_id:
        return False
    if wanted.table_wildcard is not None:
        return "TableWildcard" in table
    return bool(table.get("Name") == wanted.name)
