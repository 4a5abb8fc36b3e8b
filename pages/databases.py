"""Data products: search the catalog index, narrow by facets, and open a database or table.

One search box over names, descriptions, columns, owners and domains; the results are
databases and tables, ranked, 50 a page. Clicking a row opens it.
"""

import streamlit as st

from mesh import ui
from mesh.catalog_index import Query


def _noun(total: int, *, capped: bool, searching: bool) -> str:
    """What the count counts, singular or plural."""
    one = total == 1 and not capped
    if searching:
        return "match" if one else "matches"
    return "entry" if one else "entries"


ANY = "any"
KINDS = {"Databases and tables": None, "Databases": "database", "Tables": "table"}
YES_NO = {ANY: None, "yes": True, "no": False}
COLUMNS = ["name", "kind", "description", "owner", "pii_summary", "level", "needs_approval"]

ctx = ui.context()
st.title("Data products")
ui.show_flash()

with ui.guard():
    text = st.text_input(
        "Search",
        key="catalog_search",
        placeholder="names, descriptions, columns and their comments, owners, domains",
    )
    index = ui.catalog_index(ctx.services)
    owners = {"": "no owner", **ui.owner_names(ctx.services)}
    left, middle, right = st.columns(3)
    kind = left.selectbox("Show", list(KINDS), key="catalog_kind")
    owner = middle.selectbox(
        "Owner",
        [ANY, *owners],
        key="catalog_owner",
        format_func=lambda a: a if a == ANY else ui.account_label(a) if a else "no owner",
    )
    level = right.selectbox("Level", [ANY, *index.levels()], key="catalog_level")
    left, middle, right = st.columns(3)
    approval = left.selectbox("Needs approval", list(YES_NO), key="catalog_needs_approval")
    pii = middle.selectbox("Contains PII", list(YES_NO), key="catalog_pii")
    mine = right.checkbox("I already have access", key="catalog_mine")
    granted = ui.granted_scopes(ctx) if mine else (None, frozenset())
    query = Query(
        text=text,
        kind=KINDS[kind],
        owner=None if owner == ANY else owner,
        level=None if level == ANY else level,
        needs_approval=YES_NO[approval],
        contains_pii=YES_NO[pii],
        granted_databases=granted[0],
        granted_tables=granted[1],
        page=st.session_state.get("catalog_page", 1) - 1,
    )
    found = ui.search(ctx.services, query)
    st.caption(
        f"{found.count} {_noun(found.total, capped=found.capped, searching=bool(text.strip()))}"
        + (", best first" if text.strip() else "")
        + (
            f" among the first {found.total:,} found (names that hold every word come "
            "first); add words to narrow it"
            if found.capped
            else ""
        )
        + f"; page {found.page + 1} of {found.pages}"
    )
    frame = ui.badges_frame(found.entries)
    if found.entries:
        frame["name"] = [e.name for e in found.entries]
        frame["kind"] = [e.kind for e in found.entries]
        frame["owner"] = [e.owner for e in found.entries]
    picked = st.dataframe(
        frame,
        hide_index=True,
        key="databases_table",
        on_select="rerun",
        selection_mode=ui.ROW_CLICK,
        column_order=COLUMNS,
        column_config={
            "name": "Name",
            "kind": "Kind",
            "description": "Description",
            "owner": st.column_config.TextColumn(
                "Owner", help="the producer that decides requests; 'no owner' cannot be requested"
            ),
            "pii_summary": st.column_config.TextColumn(
                "PII",
                help="where PII sits: the whole database or table is flagged, or some of its "
                "tables or columns are",
            ),
            "level": st.column_config.TextColumn(
                "Level", help="the approval policy's sensitivity level of the whole entry"
            ),
            "needs_approval": st.column_config.CheckboxColumn(
                "Needs approval", help="a request for it waits for approvers"
            ),
        },
    )
    if found.pages > 1:
        if st.session_state.get("catalog_page", 1) > found.pages:  # fewer pages than before
            st.session_state["catalog_page"] = found.pages
        st.number_input("Page", min_value=1, max_value=found.pages, step=1, key="catalog_page")
    ui.catalog_age(ctx)
    chosen = ui.picked_row(picked)
    if chosen is not None and chosen < len(found.entries):
        entry = found.entries[chosen]
        st.session_state[ui.Keys.DATABASE] = entry.database
        if entry.table is None:
            st.switch_page("pages/database.py", query_params={"db": entry.database})
        st.session_state[ui.Keys.TABLE] = entry.table
        st.switch_page("pages/table.py", query_params={"db": entry.database, "table": entry.table})
