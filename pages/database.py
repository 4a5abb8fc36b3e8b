"""Database detail: its tables with PII badges and counts, and the database request form."""

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
        pii = row.pii or ("in its tables or columns" if row.contains_pii else "none")
        st.markdown(
            f"**Owner** {ui.md(row.owner)}  \n**PII** {ui.md(pii)}  \n**Tables** {row.tables}"
        )
        if row.no_owner:
            st.warning(
                "No owner: this data product has no data_owner, so it cannot be "
                "requested; ask a catalog admin to set data_owner."
            )
        st.dataframe(
            ui.badges_frame(
                browse.table_rows(database, tables, rules=ctx.services.marketplace.rules)
            ),
            hide_index=True,
            key="tables_table",
            column_order=[
                "name",
                "description",
                "pii",
                "pii_columns",
                "level",
                "sensitive",
                "reason",
            ],
            column_config={
                "name": "Table",
                "description": "Description",
                "pii": "PII",
                "pii_columns": "PII columns",
                "level": "Level",
                "sensitive": st.column_config.CheckboxColumn("Needs approval"),
                "reason": "Why",
            },
        )
        if tables:
            table = st.selectbox("Open a table", [t.name for t in tables], key="open_table")
            if st.button("Open table", key="open_table_button"):
                st.session_state[ui.Keys.TABLE] = table
                st.switch_page("pages/table.py", query_params={"db": name, "table": table})
        if not row.no_owner:
            ui.policy_note(ctx, database=name, table=None)
            ui.request_form(ctx, database=name, table=None)
