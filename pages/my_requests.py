"""My requests: one card per request (unseen decisions first, then the latest change),
saying where it stands and who decided it, with their comment, in words; cancel a pending
request, retry a failed grant.

Decisions the requester has not seen yet carry a "new" marker until they are marked seen.
"""

import streamlit as st

from mesh import ui
from mesh.models import AccessRequest, Status

ctx = ui.context()
market = ctx.services.marketplace
st.title("My requests")
ui.show_flash()

SHOWN = {"All": None, "Open": ui.OPEN_STATUSES, "Closed": ui.CLOSED_STATUSES}


def _actions(request: AccessRequest) -> None:
    if request.status is Status.PENDING_APPROVAL:
        st.button(
            "Cancel request",
            key=f"cancel-{request.id}",
            on_click=ui.act,
            args=(market.cancel, request.id, ctx.user.username),
            kwargs={
                "done": lambda r: (f"Request {ui.md(r.id)} is cancelled.", "success"),
                "at": f"req-{request.id}",
            },
        )
    elif request.status in (Status.FAILED, Status.GRANTING):
        if request.grants_done:
            st.caption(ui.md("Already granted: " + ", ".join(request.grants_done)))
        st.button(
            "Retry grant",
            key=f"retry-{request.id}",
            on_click=ui.act,
            args=(market.retry, request.id, ctx.user.username),
            kwargs={"done": ui.outcome_flash, "at": f"req-{request.id}"},
        )
    elif request.status is Status.GRANTED:
        if ctx.services.outbox.org.contains(request.account) is False:
            ui.ram_note(request.account)
        if st.button("Show in Lake Formation", key=f"lf-{request.id}"):
            with ui.guard():
                st.json(market.lake_formation_view(request.id, ctx.user.username))


with ui.guard():
    views = market.my_requests(ctx.user.username)  # approvals read in one query
    mine = [v.request for v in views]
    unseen = [r for r in mine if not r.decision_seen]
    if unseen:
        st.info(
            f"{len(unseen)} new on your requests: "
            + "; ".join(
                f"{ui.md(ui.scope_text(r.scope))} is {ui.md(ui.status_text(r.status))}"
                for r in unseen
            )
        )
        st.button(
            "Mark these as seen",
            key="mark_seen",
            on_click=ui.act,
            args=(market.mark_seen, ctx.user.username, [r.id for r in unseen]),
        )
    if not mine:
        st.info("You have made no requests yet. Open a database or a table to request access.")
        st.stop()
    shown = st.segmented_control(
        "Show", list(SHOWN), default="All", key="my_requests_shown", label_visibility="collapsed"
    )
    statuses = SHOWN.get(shown or "All")
    # What changed last comes first, and what the requester has not seen before anything.
    latest = sorted(views, key=lambda v: v.request.updated_at, reverse=True)
    for view in sorted(latest, key=lambda v: v.request.decision_seen):
        request = view.request
        if statuses is not None and request.status not in statuses:
            continue
        with st.container(border=True, key=f"req-{request.id}"):
            ui.request_card(
                request,
                approvals=view.approvals,
                progress=view.progress,
                new=not request.decision_seen,
            )
            ui.show_flash(at=f"req-{request.id}")
            _actions(request)
