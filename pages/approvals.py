"""Approvals: pending requests this owner or admin may decide, what approval grants, and the
access they may revoke. A decision link from a notification opens here and must be confirmed.
"""

import streamlit as st

from mesh import ui
from mesh.models import Status
from mesh.notices import ram_instructions

ctx = ui.context()
market = ctx.services.marketplace
st.title("Pending approvals")
ui.show_flash()


def _confirm_link(token: str) -> None:
    """A link opens the request; nothing is decided until the person confirms."""
    claim, request = market.open_link(token, ctx.user.username)
    verb = claim.action.value
    with st.container(border=True, key="link-confirm"):
        st.subheader(f"Confirm: {verb} request {ui.md(request.id)}")
        st.caption("You followed a decision link. Check the request below, then confirm.")
        if request.status is not Status.PENDING_APPROVAL:
            st.warning(
                f"Request {ui.md(request.id)} is already "
                f"{ui.md(request.status.value)}; the link changes nothing."
            )
            return
        scope = f"{request.database}.{request.table or '*'}"
        st.markdown(
            f"**{ui.md(scope)}** for {ui.md(request.account)}, requested by "
            f"{ui.md(request.requester)}"
        )
        st.text(f"Reason: {request.reason}\nWhy approval is needed: {request.policy_reason}")
        with st.form(key="link-form"):
            comment = st.text_input(
                "Comment" + (" (required)" if verb == "deny" else ""), key="link-comment"
            )
            confirmed = st.form_submit_button(f"Confirm {verb}", type="primary")
        if confirmed:
            with ui.guard():
                outcome = market.decide_by_link(
                    token, ctx.user.username, action=verb, comment=comment
                )
                st.query_params.pop("link", None)
                if outcome.status is Status.DENIED:
                    ui.flash(f"Request {ui.md(outcome.id)} is denied.", "info")
                else:
                    ui.flash(*reversed(ui.describe_outcome(outcome)))
                st.rerun()


link = st.query_params.get("link")
if link:
    with ui.guard():
        _confirm_link(link)

with ui.guard():
    items = market.pending_for(ctx.user.username)
    not_notified = ctx.services.outbox.owner_not_notified([i.request.id for i in items])
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
            if request.id in not_notified:
                st.warning(
                    f"Owner not notified: {ui.md(not_notified[request.id])}. The "
                    "periodic job will try again."
                )
            left, right = st.columns(2)
            left.markdown(
                f"**Request** {ui.md(request.id)}  \n**Requester** {ui.md(request.requester)}  \n"
                f"**Target account** {ui.md(request.account)}  \n"
                f"**Owner** {ui.md(item.owner_name or 'unnamed')} "
                f"({ui.md(item.owner_account or 'none')})  \n"
                f"**Submitted** {ui.md(request.created_at)}"
                + (
                    f"  \n**Asks for** {ui.md(request.expires_on or '')}"
                    if request.expires_on
                    else ""
                )
                + (
                    f"  \n**Asks for** {request.duration_seconds // 86400} days"
                    if request.duration_seconds and request.duration_seconds >= 86400
                    else ""
                )
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

with ui.guard():
    granted = market.revocable_for(ctx.user.username)
    if granted:
        st.header("Granted access")
        st.caption(
            "Revoking removes exactly what the request granted; access that another "
            "granted request still justifies stays."
        )
        for request in granted:
            scope = f"{request.database}.{request.table or '*'}"
            with st.container(border=True, key=f"granted-{request.id}"):
                st.markdown(
                    f"**{ui.md(request.id)}** · {ui.md(scope)} for {ui.md(request.account)} · "
                    f"requested by {ui.md(request.requester)} · "
                    f"**{ui.md(request.status.value)}**"
                    + (f" · expires {ui.md(request.expires_at)}" if request.expires_at else "")
                )
                if request.status is Status.REVOKE_FAILED:
                    st.error(ui.md(f"{request.error_code}: {request.error}"))
                if ctx.services.outbox.org.contains(request.account) is False:
                    st.caption(ui.md(ram_instructions(request.account)))
                with st.form(key=f"revoke-{request.id}"):
                    reason = st.text_input("Why revoke (required)", key=f"revoke-c-{request.id}")
                    revoke = st.form_submit_button("Revoke access")
                if revoke:
                    with ui.guard():
                        ended = ctx.services.lifecycle.revoke(
                            request.id, ctx.user.username, comment=reason
                        )
                        ui.flash(
                            f"Request {ui.md(ended.id)} is {ui.md(ended.status.value)}.",
                            "success" if ended.status is Status.REVOKED else "error",
                        )
                        st.rerun()
