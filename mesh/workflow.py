"""The marketplace: one facade over its use cases, for the pages, the CLI and the jobs.

The use cases live in modules of their own, each a part of ``Marketplace``:
- ``mesh.requesting``: submit, cancel, retry (a requester's writes);
- ``mesh.deciding``: approve, deny, decide in bulk, decision links (a decider's writes);
- ``mesh.granting``: the Lake Formation grants both of them end in;
- ``mesh.reads``: the queues, histories and audit log the pages and CLI read, and explain;
- ``mesh.usecase``: what they share (who acts, audit events, input checks);
- ``mesh.live``: the live reads of Glue that writes make, and the owners reads take;
- ``mesh.ports``: the catalog, Lake Formation and users they drive;
- ``mesh.moments``: ``utc_now`` and ``iso``.
"""

from __future__ import annotations

from mesh.deciding import Deciding, DecisionOutcome
from mesh.moments import iso, utc_now
from mesh.ports import Catalog, Grants, Users
from mesh.reads import PendingItem, Reads
from mesh.requesting import Requesting, new_request_id
from mesh.usecase import NO_OWNER, POLICY_ACTOR, _clean_comment


class Marketplace(Requesting, Deciding, Reads):
    """The marketplace's use cases over a store, a catalog, Lake Formation and the users."""


__all__ = [
    "NO_OWNER",
    "POLICY_ACTOR",
    "Catalog",
    "DecisionOutcome",
    "Grants",
    "Marketplace",
    "PendingItem",
    "Users",
    "_clean_comment",
    "iso",
    "new_request_id",
    "utc_now",
]
