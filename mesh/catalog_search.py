"""Search the catalog index: SQLite FTS5 over names, descriptions, columns, owners, domains.

A table's FTS rowid is its id; a database's is minus its id. With text, the matches are
ranked with bm25, a name match weighing most. Ranking every match of a word that half the
catalog holds costs more than a page may take (bm25 over 100,000 matches is 70-110 ms), and
tells little (such a word's weight is near zero), so a search ranks at most ``CAP`` matches:
those whose names hold every word first, then the others, each in index order, and says
that more matched. Without text, entries are listed by name with an exact count.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from mesh.catalog_rows import DB_SELECT, TABLE_SELECT, Entry, Query, ResultPage, entry_of
from mesh.store.db import Db

CAP = 1_000  # matches a search counts and ranks; beyond it the page says "1,000+"

# bm25 weights of catalog_fts's columns: a name match counts most, then owner and domain.
_WEIGHTS = "10.0, 3.0, 2.0, 4.0, 4.0"
_KINDS = ("database", "table")


def fts_query(text: str, *, prefix: bool = True) -> str:
    """Free text as an FTS5 query: each word a prefix term (or whole), all of them required.

    Quoting every word keeps FTS5's syntax (AND, NEAR, column filters, stray quotes) out of
    what people type.
    """
    words = re.findall(r"\w+", text.lower())
    return " ".join(f'"{w}"' + ("*" if prefix else "") for w in words)


def search(db: Db, query: Query, *, cap: int | None = None) -> ResultPage:
    """One page of databases and tables: ranked when there is text, else by name.

    ``cap``: how many matches a search counts and ranks at most (``CAP`` when None).
    """
    kinds = [kind for kind in _KINDS if query.kind in (None, kind)]
    if not kinds:
        return ResultPage(entries=[], total=0, page=0, page_size=query.page_size)
    if fts_query(query.text):
        return _ranked(db, query, kinds, cap=CAP if cap is None else cap)
    return _listed(db, query, kinds)


def _ranked(db: Db, query: Query, kinds: Sequence[str], *, cap: int) -> ResultPage:
    """Up to ``cap`` matches, name matches first, ranked by bm25; one page of them.

    Whole words are tried first: FTS5 reads a prefix term's every match before the first
    (90k matches of two words: 50 ms), a whole word's only as far as asked. When the whole
    words already match more than ``cap`` entries, so do the prefixes, and those are ranked.
    bm25 reads each word's whole index entry before its first score, so a count of the
    matches, without it, comes first.
    """
    sql, params = _candidates(query, kinds, rank=True)
    exact = fts_query(query.text, prefix=False)
    probe = _candidates(query, kinds, rank=False)[0]
    if len(db.execute(probe, [exact, *params, cap + 1]).fetchall()) > cap:
        found = _capped(db, sql, params, exact, cap=cap)
    else:
        match = fts_query(query.text)
        found = db.execute(sql, [match, *params, cap + 1]).fetchall()
        if len(found) > cap:
            found = _capped(db, sql, params, match, cap=cap, every=found)
    ranked = sorted(found[:cap], key=lambda row: (row[1], row[2], row[3]))
    page = _page(query, len(ranked))
    chosen = ranked[page * query.page_size : (page + 1) * query.page_size]
    return ResultPage(
        entries=_entries(db, [row[0] for row in chosen]),
        total=len(ranked),
        page=page,
        page_size=query.page_size,
        capped=len(found) > cap,
    )


def _capped(
    db: Db,
    sql: str,
    params: list[Any],
    match: str,
    *,
    cap: int,
    every: list[Any] | None = None,
) -> list[Any]:
    """More than ``cap`` candidates: those whose names hold every word first, then others.

    ``every``: the first ``cap`` + 1 matches, when they were read already.
    """
    named = db.execute(sql, [f"name : ({match})", *params, cap + 1]).fetchall()
    if len(named) > cap:
        return list(named)
    if every is None:
        every = db.execute(sql, [match, *params, cap + 1 + len(named)]).fetchall()
    seen = {row[0] for row in named}
    return list(named) + [row for row in every if row[0] not in seen]


def _candidates(query: Query, kinds: Sequence[str], *, rank: bool) -> tuple[str, list[Any]]:
    """Matches that pass the facets: FTS rowid, bm25 rank (0 unless ``rank``), sort key.

    The parameters are the FTS query, then these, then the limit. One FTS scan serves both
    kinds, since bm25 first reads the whole index entry of every word, once per scan.
    """
    params: list[Any] = []
    owner = ""
    if query.owner and query.owner.isdigit():
        # Each FTS row holds its owner's account: those rows, read once from the index, spare
        # a join per match of other owners. A second MATCH would change bm25's scores, and
        # without the "+" SQLite would probe FTS once per owner row.
        owner = (
            " AND +catalog_fts.rowid IN (SELECT rowid FROM catalog_fts WHERE catalog_fts MATCH ?)"
        )
        params.append(f'owner : "{query.owner}"')
    passes = []
    for kind, alias in (("database", "d"), ("table", "t")):
        if kind in kinds:
            where, more = _facets(query, alias, kind)
            passes.append(f"({alias}.id IS NOT NULL" + (f" AND {where})" if where else ")"))
            params += more
    bounds = {"database": " AND catalog_fts.rowid < 0", "table": " AND catalog_fts.rowid > 0"}
    # LEFT JOIN keeps the FTS scan outside: probing FTS once per facet row costs far more.
    sql = (
        f"SELECT catalog_fts.rowid, {f'bm25(catalog_fts, {_WEIGHTS})' if rank else '0'}, "
        "coalesce(d.name, t.database), coalesce(t.name, '') FROM catalog_fts "
        "LEFT JOIN catalog_databases d ON d.id = -catalog_fts.rowid "
        "LEFT JOIN catalog_tables t ON t.id = catalog_fts.rowid "
        "WHERE catalog_fts MATCH ?"
        + (bounds[kinds[0]] if len(kinds) == 1 else "")
        + owner
        + f" AND ({' OR '.join(passes)}) LIMIT ?"
    )
    return sql, params


def _entries(db: Db, ids: Sequence[int]) -> list[Entry]:
    """The entries of these FTS rowids, in their order."""
    tables = json.dumps([i for i in ids if i > 0])
    databases = json.dumps([-i for i in ids if i < 0])
    found: dict[int, Entry] = {}
    for sql, values, sign in (
        (f"{TABLE_SELECT}, t.id AS id FROM catalog_tables t", tables, 1),
        (f"{DB_SELECT}, d.id AS id FROM catalog_databases d", databases, -1),
    ):
        alias = "t" if sign > 0 else "d"
        for row in db.query(
            f"{sql} WHERE {alias}.id IN (SELECT value FROM json_each(?))", [values]
        ):
            found[sign * row["id"]] = entry_of(row)
    return [found[i] for i in ids if i in found]


def _listed(db: Db, query: Query, kinds: Sequence[str]) -> ResultPage:
    """Every entry that passes the facets, by name, with the exact count."""
    arms, params, total = [], [], 0
    for kind in kinds:
        alias, select, source = (
            ("d", DB_SELECT, "catalog_databases d")
            if kind == "database"
            else ("t", TABLE_SELECT, "catalog_tables t")
        )
        where, more = _facets(query, alias, kind)
        condition = f" WHERE {where}" if where else ""
        total += db.execute(f"SELECT COUNT(*) FROM {source}{condition}", more).fetchone()[0]
        arms.append(f"{select} FROM {source}{condition}")
        params += more
    page = _page(query, total)
    # A bare compound SELECT: SQLite merges the two name indexes instead of sorting them all.
    rows = db.query(
        f"{' UNION ALL '.join(arms)} ORDER BY database, table_name LIMIT ? OFFSET ?",
        [*params, query.page_size, page * query.page_size],
    )
    return ResultPage(
        entries=[entry_of(r) for r in rows], total=total, page=page, page_size=query.page_size
    )


def _page(query: Query, total: int) -> int:
    """The page asked for, within the pages there are."""
    pages = max(1, -(-total // query.page_size))
    return min(max(query.page, 0), pages - 1)


def _facets(query: Query, alias: str, kind: str) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if query.owner is not None:
        if query.owner == "":
            where.append(f"{alias}.owner_account IS NULL")
        else:
            where.append(f"{alias}.owner_account = ?")
            params.append(query.owner)
    if query.level is not None:
        where.append(f"{alias}.level = ?")
        params.append(query.level)
    if query.needs_approval is not None:
        where.append(f"{alias}.needs_approval = ?")
        params.append(int(query.needs_approval))
    if query.contains_pii is not None:
        where.append(f"{alias}.contains_pii = ?")
        params.append(int(query.contains_pii))
    if query.granted_databases is not None:
        databases = json.dumps(sorted(query.granted_databases))
        if kind == "database":
            where.append(f"{alias}.name IN (SELECT value FROM json_each(?))")
            params.append(databases)
        else:
            pairs = json.dumps([f"{d}\x1f{t}" for d, t in sorted(query.granted_tables)])
            where.append(
                f"({alias}.database IN (SELECT value FROM json_each(?)) OR "
                f"{alias}.database || char(31) || {alias}.name IN "
                "(SELECT value FROM json_each(?)))"
            )
            params += [databases, pairs]
    return " AND ".join(where), params
