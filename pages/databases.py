"""Databases: the central catalog with owner and PII badges, and a text filter.

Clicking a row opens that database.
"""

import streamlit as st

from mesh import browse, ui

ctx = ui.context()
st.title("Data products")
ui.show_flash()
st.caption(
    "Databases in the central Glue Data Catalog. Click a row to open the database, then "
    "request access to it or to one of its tables."
)

with ui.guard():
    snapshot = ui.catalog(ctx.services)
    text = st.text_input("Filter by name, description or owner", key="db_filter")
    rows = browse.database_rows(snapshot, text, rules=ctx.services.marketplace.rules)
    frame = ui.badges_frame(rows)
    if rows:
        frame["owner"] = [r.owner for r in rows]
    picked = st.dataframe(
        frame,
        hide_index=True,
        key="databases_table",
        on_select="rerun",
        selection_mode="single-row",
        column_order=[
            "name",
            "description",
            "owner",
            "pii_summary",
            "level",
            "sensitive",
            "tables",
        ],
        column_config={
            "name": "Database",
            "description": "Description",
            "owner": st.column_config.TextColumn(
                "Owner", help="the producer that decides requests; 'no owner' cannot be requested"
            ),
            "pii_summary": st.column_config.TextColumn(
                "PII",
                help="where PII sits: the whole database is flagged, or some of its tables "
                "or columns are",
            ),
            "level": st.column_config.TextColumn(
                "Level", help="the approval policy's sensitivity level of the whole database"
            ),
            "sensitive": st.column_config.CheckboxColumn(
                "Needs approval", help="a request for the whole database waits for approvers"
            ),
            "tables": "Tables",
        },
    )
    st.caption(f"{len(rows)} of {len(snapshot.databases)} databases")
    chosen = picked.selection.rows
    if chosen:
        name = rows[chosen[0]].name
        st.session_state[ui.Keys.DATABASE] = name
        st.switch_page("pages/database.py", query_params={"db": name})
