"""Notifications (admins): the outbox, with each message, its target and its delivery."""

import pandas as pd
import streamlit as st

from mesh import ui

SHOWN = 200  # messages read and listed at most, newest first

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
    market = ctx.services.marketplace
    counts = market.notification_counts_for(ctx.user.username)
    if not counts:
        st.info("Nothing has been sent yet.")
        st.stop()
    # the filter runs in SQL, and only the newest messages are read: the outbox only grows
    status = st.multiselect("Status", sorted(counts), key="outbox_status")
    rows = market.notifications_for(ctx.user.username, statuses=status, newest=SHOWN)
    matching = sum(n for s, n in counts.items() if not status or s in status)
    shown = pd.DataFrame(
        rows,
        columns=[
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
        ],
    )
    shown["error"] = shown["error"].fillna("")
    total = sum(counts.values())
    st.caption(
        f"{matching} of {total} messages, newest first"
        + (f"; the newest {len(shown)} shown" if matching > len(shown) else "")
    )
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
