"""Databases: the central catalog with owner and PII badges, and a text filter."""

import streamlit as st

from mesh import browse, ui

ctx = ui.context()
st.title("Data products")
ui.show_flash()
st.caption(
    "Databases in the central Glue Data Catalog. Request access from a database or table page."
)

with ui.guard():
    snapshot = ui.catalog(ctx.services)
    text = st.text_input("Filter by name, description or owner", key="db_filter")
    rows = browse.database_rows(snapshot, text, rules=ctx.services.marketplace.rules)
    st.dataframe(
        ui.badges_frame(rows),
        hide_index=True,
        key="databases_table",
        column_order=[
            "name",
            "description",
            "owner_name",
            "owner_account",
            "pii",
            "contains_pii",
            "no_owner",
            "level",
            "sensitive",
            "tables",
        ],
        column_config={
            "name": "Database",
            "description": "Description",
            "owner_name": "Owner",
            "owner_account": "Owner account",
            "pii": "PII",
            "contains_pii": st.column_config.CheckboxColumn(
                "Contains PII", help="PII sits in its tables or columns, not on the database"
            ),
            "no_owner": st.column_config.CheckboxColumn("No owner"),
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
    names = [r.name for r in rows]
    if names:
        choice = st.selectbox("Open a database", names, key="open_database")
        if st.button("Open", key="open_database_button"):
            st.session_state[ui.Keys.DATABASE] = choice
            st.switch_page("pages/database.py", query_params={"db": choice})
