"""Approvals: pending requests this owner or admin may decide, what approval grants, failed
grants to retry and granted access to revoke. A decision link from a notification opens here
and must be confirmed. Actions run in widget callbacks, so a click on a request that someone
else decided a moment before is answered with the conflict, never dropped; a refusal shows
in the card whose button was pressed.
"""

from collections.abc import Callable
from typing import Any

import streamlit as st

from mesh import ui
from mesh.models import AccessRequest, Status

ctx = ui.context()
market = ctx.services.marketplace
st.title("Pending approvals")
LINK_BOX = "link-confirm"


def _decided(outcome: AccessRequest) -> tuple[str, str]:
    if outcome.status is Status.DENIED:
        return f"Request {ui.md(outcome.id)} is denied.", "info"
    if outcome.status is Status.PENDING_APPROVAL:
        return (
            f"Your approval of request {ui.md(outcome.id)} is recorded; "
            f"{ui.md(market.progress(outcome))}.",
            "success",
        )
    return ui.outcome_flash(outcome)


def _decide(request_id: str, verb: str) -> None:
    comment = st.session_state.get(f"comment-{request_id}", "")
    use_case = market.approve if verb == "approve" else market.deny
    ui.act(
        use_case,
        request_id,
        ctx.user.username,
        comment=comment,
        done=_decided,
        at=f"pending-{request_id}",
    )


def _by_link(token: str, verb: str) -> None:
    decided = ui.act(
        market.decide_by_link,
        token,
        ctx.user.username,
        action=verb,
        comment=st.session_state.get("link-comment", ""),
        done=_decided,
        at=LINK_BOX,
    )
    if decided:  # a refusal keeps the link open, with the reason in its box
        st.query_params.pop("link", None)


def _ended(request: AccessRequest) -> tuple[str, str]:
    kind = "success" if request.status is Status.REVOKED else "error"
    return f"Request {ui.md(request.id)} is {ui.md(ui.status_text(request.status))}.", kind


def _revoke(request_id: str) -> None:
    comment = st.session_state.get(f"revoke-c-{request_id}", "")
    ui.act(
        ctx.services.lifecycle.revoke,
        request_id,
        ctx.user.username,
        comment=comment,
        done=_ended,
        at=f"granted-{request_id}",
    )


def _summary(request: AccessRequest) -> str:
    return (
        f"**{ui.md(request.id)}** · {ui.md(ui.scope_text(request.scope))} for "
        f"{ui.md(ui.account_label(request.account))} · requested by {ui.md(request.requester)}"
    )


def _confirm_link(token: str) -> None:
    """A link opens the request; nothing is decided until the person confirms."""
    opened = st.session_state.setdefault("mesh_opened_links", set())
    claim, request = market.open_link(token, ctx.user.username, record=token not in opened)
    opened.add(token)
    verb = claim.action.value
    pending = request.status is Status.PENDING_APPROVAL
    refusal = market.may_decide(ctx.user.username, request.id, verb=verb) if pending else None
    if pending and refusal is None:
        st.subheader(f"Confirm: {verb} request {ui.md(request.id)}")
        st.caption("You followed a decision link. Check the request below, then confirm.")
    else:
        st.subheader(f"Decision link: {verb} request {ui.md(request.id)}")
    ui.show_flash(at=LINK_BOX)
    if not pending:
        st.warning(
            f"Request {ui.md(request.id)} is already "
            f"{ui.md(ui.status_text(request.status))}; the link changes nothing."
        )
        return
    st.markdown(_summary(request))
    if refusal is not None:
        st.error(f"You cannot {verb} this request: {ui.md(refusal)}")
        return
    st.text(f"Reason: {request.reason}\nWhy approval is needed: {request.policy_reason}")
    st.markdown(f"**Progress** {ui.md(market.progress(request))}")
    with st.form(key="link-form"):
        st.text_input("Comment" + (" (required)" if verb == "deny" else ""), key="link-comment")
        st.form_submit_button(
            f"Confirm {verb}", type="primary", on_click=_by_link, args=(token, verb)
        )


def _facts(item: Any) -> str:
    request = item.request
    asks = ""
    if request.expires_on:
        asks = f"  \n**Asks until** {ui.md(ui.when(request.expires_on))}"
    elif request.duration_seconds:
        asks = f"  \n**Asks for** {ui.md(_duration(request.duration_seconds))}"
    return (
        f"**Request** {ui.md(request.id)}  \n**Requester** {ui.md(request.requester)}  \n"
        f"**Target account** {ui.md(ui.account_label(request.account))}  \n"
        f"**Owner** {ui.md(item.owner_name or 'unnamed')} "
        f"({ui.md(item.owner_account or 'none')})  \n"
        f"**Submitted** {ui.md(ui.when(request.created_at))}{asks}"
    )


def _duration(seconds: int) -> str:
    return f"{seconds // 86400} days" if seconds >= 86400 else f"{seconds // 60} minutes"


def _read(read: Callable[[str], list[Any]]) -> list[Any]:
    """One list for this user; a refusal shows as its sentence and leaves the list empty."""
    with ui.guard():
        return read(ctx.user.username)
    return []


def _pending_card(item: Any) -> None:
    request = item.request
    st.subheader(ui.md(ui.scope_text(request.scope)))
    st.markdown(f"**Level** {ui.md(request.level or 'pii')} · **Progress** {ui.md(item.progress)}")
    if request.id in not_notified:
        st.warning(
            f"Approvers not notified: {ui.md(not_notified[request.id])}. The "
            "periodic job will try again."
        )
    left, right = st.columns(2)
    left.markdown(_facts(item))
    right.markdown("**Reason**")
    right.text(request.reason)
    right.markdown("**Why approval is needed**")
    right.text(request.policy_reason)
    st.markdown(
        "**Sensitive columns in scope:** "
        + (
            ", ".join(ui.md(c) for c in request.pii_columns)
            or "none (flagged at database or table level)"
        )
    )
    with st.expander("Lake Formation grants that approval will make"):
        st.json(list(item.grants))
    if not item.may_approve:
        st.info(
            f"As an admin you may deny this request, but not approve it: "
            f"{ui.md(item.why_not_approve)}."
        )
    with st.form(key=f"decide-{request.id}"):
        st.text_input("Comment (required to deny)", key=f"comment-{request.id}")
        if item.may_approve:
            st.form_submit_button(
                "Approve", type="primary", on_click=_decide, args=(request.id, "approve")
            )
        st.form_submit_button("Deny", on_click=_decide, args=(request.id, "deny"))
    ui.show_flash(at=f"pending-{request.id}")


def _failed_card(request: AccessRequest) -> None:
    st.markdown(_summary(request))
    st.error(ui.md(request.error or request.error_code or "failed"))
    if request.grants_done:
        st.caption(ui.md("Already granted: " + ", ".join(request.grants_done)))
    st.button(
        "Retry grant",
        key=f"retry-failed-{request.id}",
        on_click=ui.act,
        args=(market.retry, request.id, ctx.user.username),
        kwargs={"done": ui.outcome_flash, "at": f"failed-{request.id}"},
    )
    ui.show_flash(at=f"failed-{request.id}")


def _granted_card(request: AccessRequest) -> None:
    st.markdown(
        _summary(request)
        + f" · **{ui.md(ui.status_text(request.status))}**"
        + (f" · expires {ui.md(ui.when(request.expires_at))}" if request.expires_at else "")
    )
    if request.status is Status.REVOKE_FAILED:
        st.error(ui.md(request.error or request.error_code or "revoke failed"))
    if ctx.services.outbox.org.contains(request.account) is False:
        ui.ram_note(request.account)
    with st.form(key=f"revoke-{request.id}"):
        st.text_input("Why revoke (required)", key=f"revoke-c-{request.id}")
        st.form_submit_button("Revoke access", on_click=_revoke, args=(request.id,))
    ui.show_flash(at=f"granted-{request.id}")


link = st.query_params.get("link")
items = _read(market.pending_for)
failed = _read(market.failed_for)
granted = _read(market.revocable_for)
ui.show_flash(
    places=[
        *([LINK_BOX] if link else []),
        *(f"pending-{i.request.id}" for i in items),
        *(f"failed-{r.id}" for r in failed),
        *(f"granted-{r.id}" for r in granted),
    ]
)

if link:
    with st.container(border=True, key=LINK_BOX), ui.guard():
        _confirm_link(link)

with ui.guard():
    not_notified = ctx.services.outbox.owner_not_notified([i.request.id for i in items])
    if not items:
        st.info("Nothing is waiting for your decision.")
    for item in items:
        with st.container(border=True, key=f"pending-{item.request.id}"):
            _pending_card(item)

if failed:
    st.header("Failed grants")
    st.caption(
        "Approved requests whose Lake Formation grant failed. Retrying re-runs the "
        "approved decision; it does not ask for approval again (a request the policy "
        "granted at once is judged again first)."
    )
    for request in failed:
        with st.container(border=True, key=f"failed-{request.id}"), ui.guard():
            _failed_card(request)

if granted:
    st.header("Granted access")
    st.caption(
        "Revoking removes exactly what the request granted; access that another "
        "granted request still justifies stays."
    )
    for request in granted:
        with st.container(border=True, key=f"granted-{request.id}"), ui.guard():
            _granted_card(request)
