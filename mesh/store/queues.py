"""The reads that queues and histories page through."""

from __future__ import annotations

import json
from collections.abc import Sequence

from mesh.models import AccessRequest, Status
from mesh.store.db import contains, in_json_list, json_field, json_item, json_rows
from mesh.store.requests import RequestRecords
from mesh.store.rows import _PAGE_EXTRAS, Approval, PendingRow, _from_row

_NO_LIMIT = 2**62
"""What a negative ``limit`` (every row) becomes: SQLite reads LIMIT -1 so, PostgreSQL refuses."""


class QueueReads(RequestRecords):
    """Requests as pages and lists read them."""

    def get(self, request_id: str) -> AccessRequest | None:
        with self._connect() as db:
            rows = list(db.query("SELECT * FROM requests WHERE id = ?", [request_id]))
        return _from_row(rows[0]) if rows else None

    def requests(
        self,
        *,
        requester: str | None = None,
        statuses: Sequence[Status] | None = None,
        decided_since: str | None = None,
    ) -> list[AccessRequest]:
        """Requests, newest first, optionally of one requester, in some statuses, or decided
        by a person at or after ``decided_since``."""
        where, params = [], []
        if requester is not None:
            where.append("requester = ?")
            params.append(requester)
        if decided_since is not None:
            where.append("decided_at >= ? AND decided_by IS NOT NULL")
            params.append(decided_since)
        if statuses:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params.extend(s.value for s in statuses)
        sql = "SELECT * FROM requests"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC"
        with self._connect() as db:
            return [_from_row(row) for row in db.query(sql, params)]

    def pending_page(
        self,
        *,
        viewer: str,
        everything: bool,
        owner_of: Sequence[str] = (),
        groups: Sequence[str] = (),
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[PendingRow], int]:
        """A page of the requests waiting at a step ``viewer`` may act on, oldest first.

        One query over the requests, the current step of each (read from its stored plan),
        its approvals and its product's owner in the catalog index (the one stored on the
        request when the index does not know it), with the count of every match.
        ``everything`` (admins) takes every waiting request but the viewer's own; otherwise
        a request waits at a step whose approvers are the owners of an account in
        ``owner_of`` or a group in ``groups`` (or, once escalated, whose escalation group
        is; an "all" step takes only its named approvers), and the viewer has not
        approved it yet. The use case still judges each row (approval.may_act).
        """
        d = self.dialect
        approvers = json_field(d, "w.cur", "approvers")
        reach = (
            "TRUE"
            if everything
            else (
                "NOT EXISTS (SELECT 1 FROM approvals a WHERE a.request_id = w.id "
                "AND a.username = :viewer) AND ("
                f"({approvers} = 'owner' AND w.owner_now IN {in_json_list(d, ':owner_of')}) "
                f"OR {approvers} IN {in_json_list(d, ':groups')} "
                "OR (w.escalated_at IS NOT NULL "
                f"AND coalesce({json_field(d, 'w.cur', 'quorum')}, '') != 'all' "
                f"AND {json_field(d, 'w.cur', 'escalate_to')} IN {in_json_list(d, ':groups')}))"
            )
        )
        # Only the few columns the filter and the order need pass over every waiting row
        # (materialized, so each plan's JSON is read once); the page's 50 rows are then
        # joined back for the rest and their approvals. The window count runs over those
        # narrow rows: at 10,000 waiting this is about 25 ms, where counting whole rows
        # with their approvals took about 90.
        waiting = (
            "WITH w AS MATERIALIZED (SELECT r.id, r.created_at, r.escalated_at, "
            f"r.rowid AS rid, {json_item(d, 'r.plan', 'coalesce(r.step, 0)')} AS cur, "
            "coalesce(i.owner_account, r.owner_account) AS owner_now "
            "FROM requests r LEFT JOIN catalog_databases i ON i.name = r.database "
            "WHERE r.status = 'pending_approval' AND r.requester != :viewer) "
        )
        where = f"WHERE w.cur IS NOT NULL AND {reach} "
        sql = (
            waiting + ", p AS (SELECT w.rid, w.cur, w.owner_now, COUNT(*) OVER () AS total "
            "FROM w " + where + "ORDER BY w.created_at, w.rid LIMIT :limit OFFSET :offset) "
            "SELECT r.*, p.rid, p.cur, p.owner_now, p.total, "
            "coalesce(d.owner_name, '') AS owner_name_now, "
            + json_rows(
                d,
                "a.step, a.username, a.acting_as, a.at, a.comment",
                "(SELECT * FROM approvals WHERE request_id = r.id ORDER BY id) a",
            )
            + " AS approvals_json "
            "FROM p JOIN requests r ON r.rowid = p.rid "
            "LEFT JOIN catalog_databases d ON d.name = r.database "
            "ORDER BY r.created_at, p.rid"
        )
        params = {
            "viewer": viewer,
            "owner_of": json.dumps(list(owner_of)),
            "groups": json.dumps(list(groups)),
            "limit": limit if limit >= 0 else _NO_LIMIT,
            "offset": offset,
        }
        with self._connect() as db:
            rows = list(db.query(sql, params))
            if not rows and offset:
                # past the last page: the window count came with no row
                count = waiting + "SELECT COUNT(*) AS total FROM w " + where
                total = next(iter(db.query(count, params)))["total"]
            else:
                total = rows[0]["total"] if rows else 0
        page = []
        for row in rows:
            request = _from_row({k: row[k] for k in row if k not in _PAGE_EXTRAS})
            approvals = [
                Approval(
                    request_id=request.id,
                    step=step,
                    username=username,
                    acting_as=acting_as or "",
                    at=at,
                    comment=comment or "",
                )
                for step, username, acting_as, at, comment in json.loads(row["approvals_json"])
            ]
            page.append(
                PendingRow(
                    request=request,
                    approvals=approvals,
                    owner_account=row["owner_now"],
                    owner_name=row["owner_name_now"],
                )
            )
        return page, int(total)

    def granted_page(
        self,
        *,
        everything: bool,
        owner_of: Sequence[str] = (),
        text: str = "",
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[AccessRequest], int]:
        """A page of the granted requests (and those whose revoke failed), newest first,
        with the count of every match.

        ``everything`` (admins) takes them all; otherwise those whose product's owner is
        an account in ``owner_of``: the catalog index's owner, else the one stored on the
        request. ``text`` narrows to requests whose requester, account, database or
        ``database.table`` contains it (case aside).
        """
        where = "r.status IN ('granted', 'revoke_failed')"
        if not everything:
            where += " AND coalesce(i.owner_account, r.owner_account) IN " + in_json_list(
                self.dialect, ":owner_of"
            )
        text = text.strip().lower()
        if text:
            scope = "lower(r.database || '.' || coalesce(r.table_name, ''))"
            where += (
                f" AND ({contains(self.dialect, 'lower(r.requester)', ':text')} "
                f"OR {contains(self.dialect, 'r.account', ':text')} "
                f"OR {contains(self.dialect, scope, ':text')})"
            )
        base = (
            f"FROM requests r LEFT JOIN catalog_databases i ON i.name = r.database WHERE {where} "
        )
        # As in pending_page: order and count narrow rows, then read the page's whole rows.
        sql = (
            "WITH p AS (SELECT r.rowid AS rid, r.created_at, COUNT(*) OVER () AS total "
            + base
            + "ORDER BY r.created_at DESC, r.rowid DESC LIMIT :limit OFFSET :offset) "
            "SELECT r.*, p.total FROM p JOIN requests r ON r.rowid = p.rid "
            "ORDER BY p.created_at DESC, p.rid DESC"
        )
        params = {
            "owner_of": json.dumps(list(owner_of)),
            "text": text,
            "limit": limit if limit >= 0 else _NO_LIMIT,
            "offset": offset,
        }
        with self._connect() as db:
            rows = list(db.query(sql, params))
            if rows or not offset:
                total = rows[0]["total"] if rows else 0
            else:  # past the last page: the window count came with no row
                total = next(iter(db.query("SELECT COUNT(*) AS total " + base, params)))["total"]
        return [_from_row({k: row[k] for k in row if k != "total"}) for row in rows], int(total)
