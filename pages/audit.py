"""Audit log (admins only): filtered in SQL, newest first, 100 rows a page, CSV on request."""

import json
from typing import Any

import pandas as pd
import streamlit as st

from mesh import auditlog, ui
from mesh.store import AuditFilters

PAGE_SIZE = 100
COLUMNS = ["id", "at", "actor", "action", "request_id", "scope", "details"]

ctx = ui.context()
st.title("Audit log")
if not ctx.user.is_admin:  # the page is registered for admins only; this is the server's check
    ui.refused("audit read", "the audit log is for admins")
    st.error("The audit log is for admins; your user cannot read it.")
    st.stop()


def _paging() -> dict[str, Any]:
    paging: dict[str, Any] = st.session_state.setdefault(
        ui.Keys.AUDIT_PAGES, {"filters": None, "cursors": [None], "next": None}
    )
    return paging


def _older() -> None:
    paging = _paging()
    if paging["next"] is not None:
        paging["cursors"].append(paging["next"])


def _newer() -> None:
    paging = _paging()
    if len(paging["cursors"]) > 1:
        paging["cursors"].pop()


def chain_note(ctx: ui.Context) -> None:
    """Say whether the audit chain held when last verified: from the last checkpoint and the
    last check this process made (start-up or the periodic job), never a pass over the log."""
    status = ctx.services.marketplace.audit_chain_for(ctx.user.username)
    found = ctx.services.lifecycle.audit_checked or ctx.services.audit_check
    if found is not None and not found.ok:
        st.error(
            "The audit chain does not verify: "
            + ui.md("; ".join(found.problems) or "a row was changed or removed")
            + ". Run `mesh audit verify` on the server and compare with the backups."
        )
    elif status.checkpoint is None:
        st.caption(
            "The audit chain has not been verified yet; start-up and the periodic job "
            "verify it (`mesh audit verify` checks it all now)."
        )
    else:
        point = status.checkpoint
        newer = status.head_id - point["row_id"]
        st.caption(
            f"Audit chain verified up to row {point['row_id']:,} "
            f"({ui.md(ui.when(point['at']))}); "
            + (
                f"{newer:,} newer row{'s wait' if newer != 1 else ' waits'} for the next check."
                if newer > 0
                else "no row is newer."
            )
        )


with ui.guard():
    if not ctx.user.is_admin:
        st.error("Only admins can read the audit log.")
        st.stop()
    chain_note(ctx)
    market = ctx.services.marketplace
    known_actors, known_actions = market.audit_choices_for(ctx.user.username)
    cols = st.columns(4)
    request_id = cols[0].text_input("Request id", key="audit_request").strip()
    actors = cols[1].multiselect("Actor", known_actors, key="audit_actor")
    actions = cols[2].multiselect("Action", known_actions, key="audit_action")
    # No default range: a range fixed when the page opened would hide newer rows later.
    dates = cols[3].date_input(
        "Dates (UTC)",
        value=(),
        key="audit_dates",
        help="Pick a first and a last day; one day picked shows that day. Empty shows all.",
    )
    text = st.text_input(
        "Search scope and details",
        key="audit_text",
        help="Within the rows the other filters keep; without them it reads the whole log.",
    ).strip()
    picked = dates if isinstance(dates, tuple) else ()
    since, before = auditlog.period(picked[0], picked[-1]) if picked else (None, None)
    filters = AuditFilters(
        request_id=request_id or None,
        actors=tuple(actors),
        actions=tuple(actions),
        since=since,
        before=before,
        text=text or None,
    )
    paging = _paging()
    if paging["filters"] != filters:  # new filters start again at the newest rows
        paging.update(filters=filters, cursors=[None], next=None)
    events, total = market.audit_page_for(
        ctx.user.username, filters, limit=PAGE_SIZE, older_than=paging["cursors"][-1]
    )
    paging["next"] = (events[-1].at, events[-1].id) if events else None
    first = (len(paging["cursors"]) - 1) * PAGE_SIZE
    shown = f"rows {first + 1}–{first + len(events)}" if events else "no rows"
    st.caption(f"{shown} of {total} matching, newest first")
    frame = pd.DataFrame(
        [{**e.to_json(), "details": json.dumps(e.details, sort_keys=True)} for e in events],
        columns=COLUMNS,
    )
    frame["scope"] = frame["scope"].fillna("").map(ui.stored_scope_text)
    st.dataframe(
        frame,
        hide_index=True,
        key="audit_table",
        column_config={"details": st.column_config.TextColumn("details", width="large")},
    )
    nav = st.columns(2)
    nav[0].button("← Newer", key="audit_newer", on_click=_newer, disabled=first == 0)
    nav[1].button(
        "Older →",
        key="audit_older",
        on_click=_older,
        disabled=first + len(events) >= total,
    )
    # The CSV is made only when asked: at a million rows it takes seconds and ~200 MB.
    if st.button(f"Prepare a CSV of all {total} matching rows", key="audit_csv_prepare"):
        with st.spinner("Preparing the CSV…"):
            data = auditlog.csv_bytes(market.audit_export_for(ctx.user.username, filters))
        st.download_button(
            "Download CSV",
            data,
            file_name="mesh-audit.csv",
            mime="text/csv",
            key="audit_csv",
            on_click="ignore",
        )
