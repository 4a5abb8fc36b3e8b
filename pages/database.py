"""Database detail: its tables with PII badges (click one to open it), and the database
request form."""

import streamlit as st

from mesh import browse, ui

ctx = ui.context()

with ui.guard():
    snapshot = ui.catalog(ctx.services)
    names = [d.name for d in snapshot.databases]
    wanted = st.query_params.get("db") or st.session_state.get(ui.Keys.DATABASE)
    index = names.index(wanted) if wanted in names else 0
    if wanted and wanted not in names:
        st.warning(f"There is no database {ui.md(wanted)} in the catalog; pick one below.")
    name = st.selectbox("Database", names, index=index, key="database_choice")
    st.query_params["db"] = name
    st.session_state[ui.Keys.DATABASE] = name
    database = snapshot.database(name)
    if database is not None:
        tables = snapshot.tables.get(name, ())
        row = browse.database_row(database, tables, rules=ctx.services.marketplace.rules)
        st.title(ui.md(name))
        st.text(database.description)
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
        picked = st.dataframe(
            ui.badges_frame(
                browse.table_rows(database, tables, rules=ctx.services.marketplace.rules)
            ),
            hide_index=True,
            key="tables_table",
            on_select="rerun",
            selection_mode="single-row",
            column_order=["name", "description", "pii_summary", "level", "sensitive", "reason"],
            column_config={
                "name": "Table",
                "description": "Description",
                "pii_summary": st.column_config.TextColumn(
                    "PII", help="where PII sits: the whole database or table, or some columns"
                ),
                "level": "Level",
                "sensitive": st.column_config.CheckboxColumn("Needs approval"),
                "reason": "Why",
            },
        )
        if picked.selection.rows:
            table = tables[picked.selection.rows[0]].name
            st.session_state[ui.Keys.TABLE] = table
            st.switch_page("pages/table.py", query_params={"db": name, "table": table})
        if not row.no_owner:
            ui.policy_note(ctx, database=name, table=None)
            ui.request_form(ctx, database=name, table=None)
