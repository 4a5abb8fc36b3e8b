"""Audit log (admins only): every step, filterable, downloadable as CSV."""

import json

import pandas as pd
import streamlit as st

from mesh import ui
from mesh.models import Action

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
    )
    cols = st.columns(3)
    request_id = cols[0].text_input("Request id", key="audit_request").strip()
    actors = cols[1].multiselect("Actor", sorted(frame["actor"].unique()), key="audit_actor")
    actions = cols[2].multiselect("Action", [a.value for a in Action], key="audit_action")
    text = st.text_input("Search scope and details", key="audit_text").strip().lower()
    shown = frame
    if request_id:
        shown = shown[shown["request_id"] == request_id]
    if actors:
        shown = shown[shown["actor"].isin(actors)]
    if actions:
        shown = shown[shown["action"].isin(actions)]
    if text:
        haystack = (shown["scope"].fillna("") + " " + shown["details"]).str.lower()
        shown = shown[haystack.str.contains(text, regex=False)]
    st.caption(f"{len(shown)} of {len(frame)} rows")
    st.dataframe(shown, hide_index=True, key="audit_table")
    st.download_button(
        "Download CSV",
        shown.to_csv(index=False).encode("utf-8"),
        file_name="mesh-audit.csv",
        mime="text/csv",
        key="audit_csv",
    )
