"""Table detail: columns and partition keys with types, comments and PII badges, read from
the catalog index for this one table."""

import streamlit as st

from mesh import ui

ctx = ui.context()

with ui.guard():
    index = ui.catalog_index(ctx.services)
    names = index.database_names()
    if not names:
        ui.catalog_age(ctx)
        st.stop()
    wanted_db = st.query_params.get("db") or st.session_state.get(ui.Keys.DATABASE)
    if wanted_db and wanted_db not in names:
        st.warning(f"There is no database {ui.md(wanted_db)} in the catalog; pick one below.")
    db_name = st.selectbox(
        "Database",
        names,
        key="table_database",
        index=names.index(wanted_db) if wanted_db in names else 0,
    )
    table_names = index.table_names(db_name)
    wanted = st.query_params.get("table") or st.session_state.get(ui.Keys.TABLE)
    if not table_names:
        st.info("This database has no tables.")
        st.stop()
    if st.query_params.get("table") and wanted not in table_names:
        st.warning(f"There is no table {ui.md(wanted)} in {ui.md(db_name)}; pick one below.")
    name = st.selectbox(
        "Table",
        table_names,
        key="table_choice",
        index=table_names.index(wanted) if wanted in table_names else 0,
    )
    st.query_params.update({"db": db_name, "table": name})
    st.session_state[ui.Keys.DATABASE], st.session_state[ui.Keys.TABLE] = db_name, name
    database, table = index.database(db_name), index.table(db_name, name)
    if database is not None and table is not None:
        st.title(ui.md(f"{db_name}.{name}"))
        st.text(table.description)
        ui.policy_note(ctx, database=db_name, table=name)
        st.dataframe(
            ui.badges_frame(index.columns(db_name, name)),
            hide_index=True,
            key="columns_table",
            column_config={
                "name": "Column",
                "type": "Type",
                "comment": "Comment",
                "pii": "PII",
                "partition_key": st.column_config.CheckboxColumn("Partition key"),
            },
        )
        if database.owner_account is None:
            st.warning(
                "No owner: this data product has no data_owner, so it cannot be "
                "requested; ask a catalog admin to set data_owner."
            )
        else:
            ui.request_form(ctx, database=db_name, table=name, entry=(database, table))
        ui.catalog_age(ctx)
