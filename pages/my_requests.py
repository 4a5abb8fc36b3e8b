"""My requests: status, timestamps, decider, comment, expiry and error; cancel or retry.

Decisions the requester has not seen yet carry a "new" marker until this page shows them.
"""

import streamlit as st

from mesh import ui
from mesh.models import Status
from mesh.notices import ram_instructions

ctx = ui.context()
market = ctx.services.marketplace
st.title("My requests")
ui.show_flash()

with ui.guard():
    mine = market.requests(username=ctx.user.username)
    unseen = [r for r in mine if not r.decision_seen]
    if unseen:
        st.button(
            "Mark these as seen",
            key="mark_seen",
            on_click=ui.act,
            args=(market.mark_seen, ctx.user.username, [r.id for r in unseen]),
        )
        st.info(
            f"{len(unseen)} new on your requests: "
            + "; ".join(
                f"{ui.md(r.id)} is {ui.md(r.status.value)}"
                + (f", expiring {ui.md(r.expires_at)}" if r.warned_at and r.expires_at else "")
                for r in unseen
            )
        )
    if not mine:
        st.info("You have made no requests yet. Open a database or a table to request access.")
    else:
        frame = ui.requests_frame(mine)
        frame.insert(0, "new", [not r.decision_seen for r in mine])
        st.dataframe(
            frame,
            hide_index=True,
            key="my_requests_table",
            column_config={"new": st.column_config.CheckboxColumn("New")},
        )

    for request in mine:
        if request.status not in (
            Status.PENDING_APPROVAL,
            Status.FAILED,
            Status.GRANTED,
            Status.GRANTING,
        ):
            continue
        scope = str(request.scope)
        with st.container(border=True, key=f"req-{request.id}"):
            st.markdown(
                f"**{ui.md(request.id)}** · {ui.md(scope)} for {ui.md(request.account)} · "
                f"**{ui.md(request.status.value)}**"
                + (f" · expires {ui.md(request.expires_at)}" if request.expires_at else "")
            )
            if request.status is Status.PENDING_APPROVAL:
                st.caption(
                    f"Waiting for approval, {ui.md(market.progress(request))}. "
                    f"Why: {ui.md(request.policy_reason)}"
                )
                st.button(
                    "Cancel request",
                    key=f"cancel-{request.id}",
                    on_click=ui.act,
                    args=(market.cancel, request.id, ctx.user.username),
                    kwargs={"done": lambda r: (f"Request {ui.md(r.id)} is cancelled.", "success")},
                )
            elif request.status in (Status.FAILED, Status.GRANTING):
                if request.status is Status.FAILED:
                    st.error(ui.md(request.error or request.error_code or "failed"))
                else:
                    st.caption(
                        ui.md(
                            f"Granting since {request.updated_at}. If it stays here, the process "
                            "granting it stopped; you can retry "
                            f"{ctx.services.settings.stale_granting} seconds after that time."
                        )
                    )
                if request.grants_done:
                    st.caption(ui.md("Already granted: " + ", ".join(request.grants_done)))
                st.button(
                    "Retry grant",
                    key=f"retry-{request.id}",
                    on_click=ui.act,
                    args=(market.retry, request.id, ctx.user.username),
                    kwargs={"done": ui.outcome_flash},
                )
            else:
                if ctx.services.outbox.org.contains(request.account) is False:
                    st.warning(ui.md(ram_instructions(request.account)))
                if st.button("Show in Lake Formation", key=f"lf-{request.id}"):
                    with ui.guard():
                        st.json(market.lake_formation_view(request.id, ctx.user.username))
