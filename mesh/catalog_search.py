"""Search the catalog index: full text over names, descriptions, columns, owners, domains.

SQLite searches its FTS5 table, PostgreSQL a tsvector of the same columns in a GIN index
(migration 0003_catalog_search), and both find the same matches for a query: every word
required, each as a prefix, split into words at the same characters. A table's FTS rowid is
its id; a database's is minus its id. With text, the matches are ranked, a name match
weighing most: with bm25 on SQLite, ts_rank_cd on PostgreSQL. Ranking every match of a
word that half the catalog holds costs more than a page may take (bm25 over 100,000 matches
is 70-110 ms), and tells little (such a word's weight is near zero), so a search ranks at
most ``CAP`` matches: those whose names hold every word first, then the others, each in
index order, and says that more matched. Without text, entries are listed by name with an
exact count.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from mesh.catalog_rows import DB_SELECT, TABLE_SELECT, Entry, Query, ResultPage, entry_of
from mesh.store.db import Db, PgDb, in_json_list

CAP = 1_000  # matches a search counts and ranks; beyond it the page says "1,000+"

# bm25 weights of catalog_fts's columns: a name match counts most, then owner and domain.
_WEIGHTS = "10.0, 3.0, 2.0, 4.0, 4.0"
# The same for ts_rank_cd, by tsvector weight {D, C, B, A}: columns, description, owner and
# domain, name (migration 0003_catalog_search weighs them so).
_PG_WEIGHTS = "'{0.2, 0.3, 0.4, 1.0}'"
_KINDS = ("database", "table")


def _accents() -> dict[str, str]:
    """Latin letters with accents (U+00C0-U+024F) and the plain lower-case letter of each,
    as SQLite's unicode61 tokenizer (remove_diacritics 2) reads them."""
    found = {}
    for code in range(0xC0, 0x250):
        letter = chr(code)
        plain = "".join(
            c for c in unicodedata.normalize("NFKD", letter) if not unicodedata.combining(c)
        )
        if len(plain) == 1 and plain.isascii() and plain.isalpha() and plain != letter:
            found[letter] = plain.lower()
    return found


# Frozen with PostgreSQL migration 0003_catalog_search, which takes these accents off what
# it indexes: a change here needs a migration of its own.
ACCENTS = _accents()
_PLAIN = str.maketrans(ACCENTS)


def _dialect(db: Db) -> str:
    return "postgresql" if isinstance(db, PgDb) else "sqlite"


def fts_query(text: str, *, prefix: bool = True) -> str:
    """Free text as an FTS5 query: each word a prefix term (or whole), all of them required.

    Quoting every word keeps FTS5's syntax (AND, NEAR, column filters, stray quotes) out of
    what people type.
    """
    words = re.findall(r"\w+", text.lower())
    return " ".join(f'"{w}"' + ("*" if prefix else "") for w in words)


def ts_query(text: str, *, prefix: bool = True, names: bool = False) -> str:
    """Free text as PostgreSQL's tsquery text (for ``to_tsquery('simple', ...)``), finding
    what ``fts_query`` finds in FTS5: every word required, each a phrase of its parts
    (``sales_orders``: ``sales`` then ``orders``) whose last part is a prefix (or whole);
    ``names``: in the name only (weight A), as FTS5's ``name : (...)`` filter.

    Only letters and digits reach the tsquery, so nothing people type is its syntax.
    """
    mark = ("*" if prefix else "") + ("A" if names else "")
    phrases = []
    for word in re.findall(r"\w+", text.lower().translate(_PLAIN)):
        parts = re.findall(r"[^\W_]+", word)
        if parts:
            terms = [f"'{p}'" + (":A" if names else "") for p in parts[:-1]]
            terms.append(f"'{parts[-1]}'" + (f":{mark}" if mark else ""))
            phrases.append("(" + " <-> ".join(terms) + ")")
    return " & ".join(phrases)


def _match(dialect: str, text: str, *, prefix: bool = True, names: bool = False) -> str:
    """What the search statement's full-text parameter is for ``text`` on ``dialect``."""
    if dialect == "postgresql":
        return ts_query(text, prefix=prefix, names=names)
    match = fts_query(text, prefix=prefix)
    return f"name : ({match})" if names else match


def search(db: Db, query: Query, *, cap: int | None = None) -> ResultPage:
    """One page of databases and tables: ranked when there is text, else by name.

    ``cap``: how many matches a search counts and ranks at most (``CAP`` when None).
    """
    kinds = [kind for kind in _KINDS if query.kind in (None, kind)]
    if not kinds:
        return ResultPage(entries=[], total=0, page=0, page_size=query.page_size)
    if fts_query(query.text):
        if not _match(_dialect(db), query.text):  # no letter or digit in any word
            return ResultPage(entries=[], total=0, page=0, page_size=query.page_size)
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
    dialect = _dialect(db)
    sql, params = _candidates(query, kinds, rank=True, dialect=dialect)
    exact = _match(dialect, query.text, prefix=False)
    probe = _candidates(query, kinds, rank=False, dialect=dialect)[0]
    if len(db.execute(probe, [exact, *params, cap + 1]).fetchall()) > cap:
        named = _match(dialect, query.text, prefix=False, names=True)
        found = _capped(db, sql, params, exact, named, cap=cap)
    else:
        match = _match(dialect, query.text)
        found = db.execute(sql, [match, *params, cap + 1]).fetchall()
        if len(found) > cap:
            named = _match(dialect, query.text, names=True)
            found = _capped(db, sql, params, match, named, cap=cap, every=found)
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
    names: str,
    *,
    cap: int,
    every: list[Any] | None = None,
) -> list[Any]:
    """More than ``cap`` candidates: those whose names hold every word first, then others.

    ``names``: ``match`` in the names only; ``every``: the first ``cap`` + 1 matches, when
    they were read already.
    """
    named = db.execute(sql, [names, *params, cap + 1]).fetchall()
    if len(named) > cap:
        return list(named)
    if every is None:
        every = db.execute(sql, [match, *params, cap + 1 + len(named)]).fetchall()
    seen = {row[0] for row in named}
    return list(named) + [row for row in every if row[0] not in seen]


def _candidates(
    query: Query, kinds: Sequence[str], *, rank: bool, dialect: str
) -> tuple[str, list[Any]]:
    """Matches that pass the facets: FTS rowid, rank (lower first; 0 unless ``rank``), sort
    key.

    The parameters are the FTS query, then these, then the limit. One FTS scan serves both
    kinds, since bm25 first reads the whole index entry of every word, once per scan.
    """
    params: list[Any] = []
    owner = ""
    if query.owner and query.owner.isdigit() and dialect == "sqlite":
        # Each FTS row holds its owner's account: those rows, read once from the index, spare
        # a join per match of other owners. A second MATCH would change bm25's scores, and
        # without the "+" SQLite would probe FTS once per owner row.
        owner = (
            " AND +catalog_fts.rowid IN (SELECT rowid FROM catalog_fts WHERE catalog_fts MATCH ?)"
        )
        params.append(f'owner : "{query.owner}"')
    elif query.owner and dialect == "postgresql":
        # The owner's entries, by the owner indexes: the scan then probes only those,
        # where the facet alone would be tested after joining every match.
        owner = (
            " AND catalog_fts.rowid IN (SELECT id FROM catalog_tables WHERE owner_account = ? "
            "UNION ALL SELECT -id FROM catalog_databases WHERE owner_account = ?)"
        )
        params += [query.owner, query.owner]
    passes = []
    for kind, alias in (("database", "d"), ("table", "t")):
        if kind in kinds:
            where, more = _facets(query, alias, kind, dialect)
            passes.append(f"({alias}.id IS NOT NULL" + (f" AND {where})" if where else ")"))
            params += more
    bounds = {"database": " AND catalog_fts.rowid < 0", "table": " AND catalog_fts.rowid > 0"}
    if dialect == "postgresql":
        # The tsquery is a constant (ClientCursor binds values), so the GIN index is used.
        # Matches in the names only (weight A) are ranked as every match is: by all words.
        ranking = f"-ts_rank_cd({_PG_WEIGHTS}, catalog_fts.words, q.ranking)"
        source = (
            "FROM catalog_fts CROSS JOIN (SELECT to_tsquery('simple', m) AS query, "
            "to_tsquery('simple', replace(replace(m, ':*A', ':*'), ':A', '')) AS ranking "
            "FROM (SELECT CAST(? AS text) AS m) AS p) AS q "
            "LEFT JOIN catalog_databases d ON d.id = -catalog_fts.rowid "
            "LEFT JOIN catalog_tables t ON t.id = catalog_fts.rowid "
            "WHERE catalog_fts.words @@ q.query"
        )
    else:
        ranking = f"bm25(catalog_fts, {_WEIGHTS})"
        # LEFT JOIN keeps the FTS scan outside: probing FTS once per facet row costs far more.
        source = (
            "FROM catalog_fts "
            "LEFT JOIN catalog_databases d ON d.id = -catalog_fts.rowid "
            "LEFT JOIN catalog_tables t ON t.id = catalog_fts.rowid "
            "WHERE catalog_fts MATCH ?"
        )
    sql = (
        f"SELECT catalog_fts.rowid, {ranking if rank else '0'}, "
        f"coalesce(d.name, t.database), coalesce(t.name, '') {source}"
        + (bounds[kinds[0]] if len(kinds) == 1 else "")
        + owner
        + f" AND ({' OR '.join(passes)}) LIMIT ?"
    )
    return sql, params


def _entries(db: Db, ids: Sequence[int]) -> list[Entry]:
    """The entries of these FTS rowids, in their order."""
    tables = json.dumps([i for i in ids if i > 0])
    databases = json.dumps([-i for i in ids if i < 0])
    listed = in_json_list(_dialect(db), "?")
    if _dialect(db) == "postgresql":  # the ids as integers, for the primary key's index
        listed = "(SELECT CAST(jsonb_array_elements_text(CAST(? AS jsonb)) AS BIGINT))"
    found: dict[int, Entry] = {}
    for sql, values, sign in (
        (f"{TABLE_SELECT}, t.id AS id FROM catalog_tables t", tables, 1),
        (f"{DB_SELECT}, d.id AS id FROM catalog_databases d", databases, -1),
    ):
        alias = "t" if sign > 0 else "d"
        if sign < 0 and databases == "[]":
            continue
        for row in db.query(f"{sql} WHERE {alias}.id IN {listed}", [values]):
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
        where, more = _facets(query, alias, kind, _dialect(db))
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


def _facets(query: Query, alias: str, kind: str, dialect: str) -> tuple[str, list[Any]]:
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
        listed = in_json_list(dialect, "?")
        if kind == "database":
            where.append(f"{alias}.name IN {listed}")
            params.append(databases)
        else:
            pairs = json.dumps([f"{d}\x1f{t}" for d, t in sorted(query.granted_tables)])
            separator = "chr(31)" if dialect == "postgresql" else "char(31)"
            where.append(
                f"({alias}.database IN {listed} OR "
                f"{alias}.database || {separator} || {alias}.name IN {listed})"
            )
            params += [databases, pairs]
    return " AND ".join(where), params
