"""Is a consumer account inside the AWS Organization? (A small interface with adapters.)

Outside accounts must accept an AWS RAM invitation before a grant is usable. moto does not
implement RAM invitations, so nothing here fakes RAM: it only answers membership.
"""

from __future__ import annotations

from typing import Any, Protocol

from mesh.aws import call


class Organization(Protocol):
    def contains(self, account: str) -> bool | None:
        """True or False when known; None when membership is not configured."""
        ...


class UnknownOrganization:
    def contains(self, account: str) -> bool | None:
        return None


class StaticOrganization:
    """Membership from the MESH_ORG_ACCOUNTS setting."""

    def __init__(self, accounts: frozenset[str]) -> None:
        self.accounts = accounts

    def contains(self, account: str) -> bool | None:
        return account in self.accounts


class AwsOrganization:
    """Membership read once with organizations:ListAccounts (MESH_ORG_ACCOUNTS=aws)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._accounts: frozenset[str] | None = None

    def contains(self, account: str) -> bool | None:
        if self._accounts is None:
            pages = self._client.get_paginator("list_accounts").paginate()
            found = call(
                "Organizations",
                "ListAccounts",
                lambda: [a["Id"] for p in pages for a in p["Accounts"]],
            )
            self._accounts = frozenset(found)
        return account in self._accounts
