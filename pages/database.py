"""Database detail: its tables with PII badges (click one to open it), and the database
request form. Everything shown comes from the catalog index, for this one database."""

import streamlit as st

from mesh import ui

COLUMNS = ["name", "description", "pii_summary", "level", "needs_approval", "reason"]

ctx = ui.context()

with ui.guard():
    index = ui.catalog_index(ctx.services)
    names = index.database_names()
    wanted = st.query_params.get("db") or st.session_state.get(ui.Keys.DATABASE)
    if not names:
        ui.catalog_age(ctx)
        st.stop()
    index_of = names.index(wanted) if wanted in names else 0
    if wanted and wanted not in names:
        st.warning(f"There is no database {ui.md(wanted)} in the catalog; pick one below.")
    name = st.selectbox("Database", names, index=index_of, key="database_choice")
    st.query_params["db"] = name
    st.session_state[ui.Keys.DATABASE] = name
    row = index.database_entry(name)
    if row is not None:
        tables = index.table_entries(name)
        st.title(ui.md(name))
        st.text(row.description)
        st.markdown(
            f"**Owner** {ui.md(row.owner)}  \n**PII** {ui.md(row.pii_summary)}  \n"
            f"**Tables** {row.tables}"
        )
        if row.no_owner:
            st.warning(
                "No owner: this data product has no data_owner, so it cannot be "
                "requested; ask a catalog admin to set data_owner."
            )
        if tables:
            st.caption("Click a row to open the table and request it, or some of its columns.")
        frame = ui.badges_frame(tables)
        if tables:
            frame["name"] = [t.table for t in tables]
        picked = st.dataframe(
            frame,
            hide_index=True,
            key="tables_table",
            on_select="rerun",
            selection_mode=ui.ROW_CLICK,
            column_order=COLUMNS,
            column_config={
                "name": "Table",
                "description": "Description",
                "pii_summary": st.column_config.TextColumn(
                    "PII", help="where PII sits: the whole database or table, or some columns"
                ),
                "level": "Level",
                "needs_approval": st.column_config.CheckboxColumn("Needs approval"),
                "reason": "Why",
            },
        )
        chosen = ui.picked_row(picked)
        if chosen is not None and chosen < len(tables):
            table = tables[chosen].table
            st.session_state[ui.Keys.TABLE] = table
            st.switch_page("pages/table.py", query_params={"db": name, "table": table})
        if not row.no_owner:
            ui.policy_note(ctx, database=name, table=None)
            ui.request_form(ctx, database=name, table=None)
        ui.catalog_age(ctx)
