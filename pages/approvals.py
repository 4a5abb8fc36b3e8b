"""Approvals: pending requests this owner or admin may decide, with what approval grants."""

import streamlit as st

from mesh import ui

ctx = ui.context()
market = ctx.services.marketplace
st.title("Pending approvals")
ui.show_flash()

with ui.guard():
    items = market.pending_for(ctx.user.username)
    if not items:
        st.info("Nothing is waiting for your decision.")
    for item in items:
        request = item.request
        scope = (
            f"{request.database}.{request.table}"
            if request.table
            else (f"{request.database} (whole database)")
        )
        with st.container(border=True, key=f"pending-{request.id}"):
            st.subheader(ui.md(scope))
            left, right = st.columns(2)
            left.markdown(
                f"**Request** {ui.md(request.id)}  \n**Requester** {ui.md(request.requester)}  \n"
                f"**Target account** {ui.md(request.account)}  \n"
                f"**Owner** {ui.md(item.owner_name or 'unnamed')} "
                f"({ui.md(item.owner_account or 'none')})  \n"
                f"**Submitted** {ui.md(request.created_at)}"
            )
            right.markdown("**Reason**")
            right.text(request.reason)
            right.markdown("**Why approval is needed**")
            right.text(request.policy_reason)
            st.markdown(
                "**PII columns in scope:** "
                + (
                    ", ".join(ui.md(c) for c in request.pii_columns)
                    or "none (flagged at database or table level)"
                )
            )
            with st.expander("Lake Formation grants that approval will make"):
                st.json(list(item.grants))
            with st.form(key=f"decide-{request.id}"):
                comment = st.text_input("Comment (required to deny)", key=f"comment-{request.id}")
                approve = st.form_submit_button("Approve", type="primary")
                deny = st.form_submit_button("Deny")
            if approve or deny:
                with ui.guard():
                    if approve:
                        outcome = market.approve(request.id, ctx.user.username, comment=comment)
                        ui.flash(*reversed(ui.describe_outcome(outcome)))
                    else:
                        market.deny(request.id, ctx.user.username, comment=comment)
                        ui.flash(f"Request {ui.md(request.id)} is denied.", "info")
                    st.rerun()

with ui.guard():
    failed = market.failed_for(ctx.user.username)
    if failed:
        st.header("Failed grants")
        st.caption(
            "Approved requests whose Lake Formation grant failed. Retrying re-runs the "
            "approved decision; it does not ask for approval again."
        )
        for request in failed:
            scope = f"{request.database}.{request.table or '*'}"
            with st.container(border=True, key=f"failed-{request.id}"):
                st.markdown(
                    f"**{ui.md(request.id)}** · {ui.md(scope)} for "
                    f"{ui.md(request.account)} · requested by {ui.md(request.requester)}"
                )
                st.error(ui.md(f"{request.error_code}: {request.error}"))
                if request.grants_done:
                    st.caption(ui.md("Already granted: " + ", ".join(request.grants_done)))
                if st.button("Retry grant", key=f"retry-failed-{request.id}"):
                    with ui.guard():
                        outcome = market.retry(request.id, ctx.user.username)
                        ui.flash(*reversed(ui.describe_outcome(outcome)))
                        st.rerun()
