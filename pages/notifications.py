"""Notifications (admins): the outbox, with each message, its target and its delivery."""

import pandas as pd
import streamlit as st

from mesh import ui

ctx = ui.context()
st.title("Notifications")
st.caption(
    "Every message the marketplace sends is recorded here first. Failed ones are "
    "retried by the periodic job (`python -m mesh tick`)."
)

with ui.guard():
    if not ctx.user.is_admin:
        st.error("Only admins can read the notification log.")
        st.stop()
    rows = ctx.services.marketplace.store.notifications()
    if not rows:
        st.info("Nothing has been sent yet.")
        st.stop()
    frame = pd.DataFrame(rows)[
        [
            "id",
            "created_at",
            "request_id",
            "kind",
            "channel",
            "target",
            "status",
            "attempts",
            "error",
            "subject",
        ]
    ].sort_values("id", ascending=False)
    frame["error"] = frame["error"].fillna("")
    status = st.multiselect("Status", sorted(frame["status"].unique()), key="outbox_status")
    shown = frame[frame["status"].isin(status)] if status else frame
    st.caption(f"{len(shown)} of {len(frame)} messages, newest first")
    st.dataframe(
        shown,
        hide_index=True,
        key="outbox_table",
        column_order=[
            "id",
            "status",
            "error",
            "kind",
            "request_id",
            "target",
            "attempts",
            "created_at",
            "subject",
        ],
        column_config={"error": st.column_config.TextColumn("error", width="medium")},
    )
    if shown.empty:
        st.stop()
    by_id = {r["id"]: r for r in rows}
    chosen = st.selectbox(
        "Show a message",
        [int(i) for i in shown["id"]],
        format_func=lambda i: f"{i} · {by_id[i]['status']} · {by_id[i]['subject']}",
        key="outbox_message",
    )
    message = by_id[chosen]
    st.markdown(
        f"**{ui.md(message['status'])}** · to {ui.md(message['target'])} · "
        f"{message['attempts']} attempt(s) · created {ui.md(ui.when(message['created_at']))}"
    )
    if message["error"]:
        st.error(ui.md(message["error"]))
    st.text(message["subject"])
    st.code(message["body"], language=None, wrap_lines=True)
