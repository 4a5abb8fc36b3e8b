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
    ]
    status = st.multiselect("Status", sorted(frame["status"].unique()), key="outbox_status")
    shown = frame[frame["status"].isin(status)] if status else frame
    st.dataframe(shown.sort_values("id", ascending=False), hide_index=True, key="outbox_table")
    chosen = st.selectbox("Show a message", [r["id"] for r in reversed(rows)], key="outbox_message")
    message = next(r for r in rows if r["id"] == chosen)
    st.text(message["subject"])
    st.code(message["body"], language=None)
