"""My requests: status, timestamps, decider, comment and error; cancel or retry."""

import streamlit as st

from mesh import ui
from mesh.models import Status

ctx = ui.context()
market = ctx.services.marketplace
st.title("My requests")
ui.show_flash()

with ui.guard():
    mine = market.requests(username=ctx.user.username)
    if not mine:
        st.info("You have made no requests yet. Open a database or a table to request access.")
    else:
        st.dataframe(ui.requests_frame(mine), hide_index=True, key="my_requests_table")

    for request in mine:
        if request.status not in (Status.PENDING_APPROVAL, Status.FAILED, Status.GRANTED):
            continue
        scope = f"{request.database}.{request.table or '*'}"
        with st.container(border=True, key=f"req-{request.id}"):
            st.markdown(
                f"**{ui.md(request.id)}** · {ui.md(scope)} for {ui.md(request.account)} · "
                f"**{ui.md(request.status.value)}**"
            )
            if request.status is Status.PENDING_APPROVAL:
                st.caption(f"Waiting for the owner: {ui.md(request.policy_reason)}")
                if st.button("Cancel request", key=f"cancel-{request.id}"):
                    with ui.guard():
                        market.cancel(request.id, ctx.user.username)
                        ui.flash(f"Request {ui.md(request.id)} is cancelled.")
                        st.rerun()
            elif request.status is Status.FAILED:
                st.error(ui.md(f"The grant failed ({request.error_code}): {request.error}"))
                if request.grants_done:
                    st.caption(ui.md("Already granted: " + ", ".join(request.grants_done)))
                if st.button("Retry grant", key=f"retry-{request.id}"):
                    with ui.guard():
                        outcome = market.retry(request.id, ctx.user.username)
                        ui.flash(*reversed(ui.describe_outcome(outcome)))
                        st.rerun()
            elif st.button("Show in Lake Formation", key=f"lf-{request.id}"):
                with ui.guard():
                    st.json(market.lake_formation_view(request.id, ctx.user.username))
