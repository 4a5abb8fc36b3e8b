"""Audit log (admins only): every step, newest first, filterable, downloadable as CSV."""

import json

import pandas as pd
import streamlit as st

from mesh import ui

ctx = ui.context()
st.title("Audit log")

with ui.guard():
    if not ctx.user.is_admin:
        st.error("Only admins can read the audit log.")
        st.stop()
    events = ctx.services.marketplace.audit_for(ctx.user.username)
    frame = pd.DataFrame(
        [{**e.to_json(), "details": json.dumps(e.details, sort_keys=True)} for e in events],
        columns=["id", "at", "actor", "action", "request_id", "scope", "details"],
    ).sort_values("id", ascending=False)
    frame["scope"] = frame["scope"].fillna("").map(ui.stored_scope_text)
    days = pd.to_datetime(frame["at"], utc=True, format="ISO8601").dt.date
    cols = st.columns(4)
    request_id = cols[0].text_input("Request id", key="audit_request").strip()
    actors = cols[1].multiselect("Actor", sorted(frame["actor"].unique()), key="audit_actor")
    actions = cols[2].multiselect("Action", sorted(frame["action"].unique()), key="audit_action")
    # No default range: a range fixed when the page opened would hide newer rows later.
    dates = cols[3].date_input(
        "Dates (UTC)",
        value=(),
        key="audit_dates",
        help="Pick a first and a last day; one day picked shows that day. Empty shows all.",
    )
    text = st.text_input("Search scope and details", key="audit_text").strip().lower()
    shown = frame
    if request_id:
        shown = shown[shown["request_id"] == request_id]
    if actors:
        shown = shown[shown["actor"].isin(actors)]
    if actions:
        shown = shown[shown["action"].isin(actions)]
    if isinstance(dates, tuple) and dates:
        first, last = dates[0], dates[-1]  # one date picked so far: that day
        shown = shown[(days[shown.index] >= first) & (days[shown.index] <= last)]
    if text:
        haystack = (shown["scope"].fillna("") + " " + shown["details"]).str.lower()
        shown = shown[haystack.str.contains(text, regex=False)]
    st.caption(f"{len(shown)} of {len(frame)} rows, newest first")
    st.dataframe(
        shown,
        hide_index=True,
        key="audit_table",
        column_config={"details": st.column_config.TextColumn("details", width="large")},
    )
    st.download_button(
        "Download CSV",
        shown.to_csv(index=False).encode("utf-8"),
        file_name="mesh-audit.csv",
        mime="text/csv",
        key="audit_csv",
    )
