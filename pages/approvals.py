"""Approvals: pending requests this owner or admin may decide, what approval grants, failed
grants to retry and granted access to revoke. A decision link from a notification opens here
and must be confirmed. Actions run in widget callbacks, so a click on a request that someone
else decided a moment before is answered with the conflict, never dropped; a refusal shows
in the card (or bar, or form) whose button was pressed.

The queue is read one page at a time (50, oldest first) with the count of all; requests
ticked on the page are approved or denied together with one comment, each reported on its
own. One card is open with everything an approver needs and its own comment, Approve and
Deny: the one picked with Review and decide, else the oldest shown; the others are one text
and a button, so a run draws about 240 elements instead of about 1,000. Granted access is
paged and searchable, with one revoke form for the grant picked.

Each decision and retry reads its scope from Glue live; when Glue differs from the catalog
index, Glue wins and the page says, at the top, that the catalog had changed.
"""

from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from mesh import ui
from mesh.models import AccessRequest, Status
from mesh.workflow import DecisionOutcome

ctx = ui.context()
market = ctx.services.marketplace
st.title("Pending approvals")
PAGE_SIZE = 50
LINK_BOX = "link-confirm"
BULK_BOX = "bulk"  # the bar that decides the ticked requests
REVOKE_BOX = "revoke"  # the one revoke form
# This page's own session-state keys (widget keys are named where the widget is drawn).
PENDING_OFFSET = "approvals_pending_offset"
GRANTED_OFFSET = "approvals_granted_offset"
BULK_RESULTS = "approvals_bulk_results"
PICKED = "approvals_picked"  # the request whose card is open for a decision
BRIEF_REASON = 160  # characters of the reason a card not open shows
CATALOG_NOTES = "approvals_catalog_notes"  # how Glue differed from the index, per action


def _note_catalog_change(note: str) -> None:
    """Keep what a decision or retry heard: Glue differed from the index, and Glue won."""
    st.session_state.setdefault(CATALOG_NOTES, []).append(note)


def _catalog_notes() -> None:
    """Say, once, that the catalog had changed since the last sync and the action used Glue."""
    for note in dict.fromkeys(st.session_state.pop(CATALOG_NOTES, [])):
        st.info(ui.md(note))


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
        on_catalog_change=_note_catalog_change,
        done=_decided,
        at=f"pending-{request_id}",
    )


# Bulk decisions ----------------------------------------------------------------------------


def _outcome_line(outcome: DecisionOutcome) -> tuple[str, str]:
    """One request's part of a bulk decision, as (kind, sentence)."""
    request, rid = outcome.request, ui.md(outcome.request_id)
    if request is None:
        return "error", f"**{rid}** refused: {ui.md(outcome.error or 'refused')}"
    if request.status is Status.FAILED:
        why = ui.failure_text(request.error, request.error_code)
        return "error", f"**{rid}** approved, but the grant failed: {ui.md(why)}"
    if outcome.error:
        return "error", f"**{rid}**: {ui.md(outcome.error)}"
    scope = f"{ui.md(ui.scope_text(request.scope))} for {ui.md(ui.account_label(request.account))}"
    if request.status is Status.GRANTED:
        return "success", f"**{rid}** granted: {scope}."
    if request.status is Status.PENDING_APPROVAL:
        return "info", (
            f"**{rid}** approval recorded, waiting for the next step: "
            f"{ui.md(market.progress(request))}."
        )
    return "info", f"**{rid}** {ui.md(ui.status_text(request.status))}: {scope}."


def _decide_and_keep(ids: list[str], verb: str, comment: str) -> None:
    outcomes = market.decide_many(
        ids,
        ctx.user.username,
        verb=verb,
        comment=comment,
        on_catalog_change=_note_catalog_change,
    )
    st.session_state[BULK_RESULTS] = [_outcome_line(o) for o in outcomes]
    st.session_state["bulk-comment"] = ""


def _decide_selected(verb: str, shown: Sequence[str]) -> None:
    ids = [i for i in shown if st.session_state.get(f"select-{i}")]
    if not ids:
        ui.flash("Tick one or more requests first.", "error", at=BULK_BOX)
        return
    comment = st.session_state.get("bulk-comment", "")
    ui.act(_decide_and_keep, ids, verb, comment, at=BULK_BOX)


def _select_all(shown: Sequence[str], value: bool) -> None:
    for request_id in shown:
        st.session_state[f"select-{request_id}"] = value


def _bulk_results() -> None:
    lines: list[tuple[str, str]] = st.session_state.pop(BULK_RESULTS, [])
    if not lines:
        return
    kinds = [k for k, _ in lines]
    st.markdown(
        f"**Decided {len(lines)}:** {kinds.count('success')} granted, "
        f"{kinds.count('info')} recorded or waiting for the next step, "
        f"{kinds.count('error')} refused or failed."
    )
    for kind, line in lines:
        getattr(st, kind)(line)


def _bulk_bar(shown: Sequence[str]) -> None:
    picked = sum(bool(st.session_state.get(f"select-{i}")) for i in shown)
    st.markdown(f"**Decide the ticked requests together** · {picked} ticked on this page")
    row = st.columns(2)
    row[0].button("Tick all on this page", key="bulk-all", on_click=_select_all, args=(shown, True))
    row[1].button("Clear ticks", key="bulk-none", on_click=_select_all, args=(shown, False))
    with st.form(key="bulk-form"):
        st.text_input("Comment for all of them (required to deny)", key="bulk-comment")
        buttons = st.columns(2)
        buttons[0].form_submit_button(
            "Approve selected",
            type="primary",
            on_click=_decide_selected,
            args=("approve", shown),
        )
        buttons[1].form_submit_button(
            "Deny selected", on_click=_decide_selected, args=("deny", shown)
        )
    ui.show_flash(at=BULK_BOX)
    _bulk_results()


# Decision links ----------------------------------------------------------------------------


def _by_link(token: str, verb: str) -> None:
    decided = ui.act(
        market.decide_by_link,
        token,
        ctx.user.username,
        action=verb,
        comment=st.session_state.get("link-comment", ""),
        on_catalog_change=_note_catalog_change,
        done=_decided,
        at=LINK_BOX,
    )
    if decided:  # a refusal keeps the link open, with the reason in its box
        st.query_params.pop("link", None)


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


# Cards -----------------------------------------------------------------------------------


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


def _pending_card(item: Any, not_notified: dict[str, str], *, picked: bool) -> None:
    request = item.request
    st.checkbox("Select", key=f"select-{request.id}")
    unsent = ""
    if request.id in not_notified:
        unsent = (
            f"Approvers not notified: {ui.md(not_notified[request.id])}. The periodic job "
            "will try again."
        )
    if picked:
        _decision_card(item, unsent)
    else:
        _brief_card(item, unsent)


def _brief_card(item: Any, unsent: str) -> None:
    """A card not picked: what it is and who asks, in one text, and a button to decide it.

    One text and one button instead of the whole card and a form per card: a page run
    draws 50 cards, and each element (a form and its comment box most of all) costs every
    run, with the garbage it leaves behind.
    """
    request = item.request
    st.markdown(
        f"**{ui.md(ui.scope_text(request.scope))}** · **Level** {ui.md(request.level or 'pii')}"
        f" · **Progress** {ui.md(item.progress)}  \n"
        f"**{ui.md(request.id)}** · requested by {ui.md(request.requester)} for "
        f"{ui.md(ui.account_label(request.account))} · {ui.md(ui.when(request.created_at))}  \n"
        f"**Reason** {ui.md(_shortened(request.reason))}"
        + (f"  \n:orange[{unsent}]" if unsent else "")
    )
    st.button("Review and decide", key=f"pick-{request.id}", on_click=_pick, args=(request.id,))


def _shortened(text: str, limit: int = BRIEF_REASON) -> str:
    """One line of at most ``limit`` characters; the open card shows all of it."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _pick(request_id: str) -> None:
    st.session_state[PICKED] = request_id


def _decision_card(item: Any, unsent: str) -> None:
    """The card picked: everything an approver needs to see, and its decision form."""
    request = item.request
    st.subheader(ui.md(ui.scope_text(request.scope)))
    st.markdown(f"**Level** {ui.md(request.level or 'pii')} · **Progress** {ui.md(item.progress)}")
    if unsent:
        st.warning(unsent)
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


def _picked(items: Sequence[Any]) -> str | None:
    """The request whose card is open for a decision: the one picked, while it is on this
    page, else the oldest shown (after a decision, the next in line)."""
    ids = [i.request.id for i in items]
    picked = st.session_state.get(PICKED)
    return picked if picked in ids else (ids[0] if ids else None)


def _failed_card(request: AccessRequest) -> None:
    st.markdown(_summary(request))
    st.error(ui.md(ui.failure_text(request.error, request.error_code)))
    if request.grants_done:
        st.caption(ui.md("Already granted: " + ", ".join(request.grants_done)))
    st.button(
        "Retry grant",
        key=f"retry-failed-{request.id}",
        on_click=ui.act,
        args=(market.retry, request.id, ctx.user.username),
        kwargs={
            "done": ui.outcome_flash,
            "at": f"failed-{request.id}",
            "on_catalog_change": _note_catalog_change,
        },
    )
    ui.show_flash(at=f"failed-{request.id}")


def _granted_card(request: AccessRequest) -> None:
    st.markdown(
        _summary(request)
        + f" · **{ui.md(ui.status_text(request.status))}**"
        + (f" · expires {ui.md(ui.when(request.expires_at))}" if request.expires_at else "")
    )
    if request.status is Status.REVOKE_FAILED:
        st.error(ui.md(ui.failure_text(request.error, request.error_code or "revoke failed")))
    if ctx.services.outbox.org.contains(request.account) is False:
        ui.ram_note(request.account)


# Paging and revoking ---------------------------------------------------------------------


def _move(key: str, by: int) -> None:
    st.session_state[key] = max(0, st.session_state.get(key, 0) + by)


def _paged(read: Callable[[int], tuple[list[Any], int]], key: str) -> tuple[list[Any], int, int]:
    """A page from ``read(offset)``, the count of all and the offset; past the end (its
    last rows were decided meanwhile), the last page."""
    offset = st.session_state.get(key, 0)
    rows, total = read(offset)
    if not rows and offset and total:
        offset = (total - 1) // PAGE_SIZE * PAGE_SIZE
        rows, total = read(offset)
    st.session_state[key] = offset
    return rows, total, offset


def _nav(key: str, *, offset: int, shown: int, total: int, back: str, on: str) -> None:
    nav = st.columns(2)
    nav[0].button(
        back, key=f"{key}-back", on_click=_move, args=(key, -PAGE_SIZE), disabled=offset == 0
    )
    nav[1].button(
        on, key=f"{key}-on", on_click=_move, args=(key, PAGE_SIZE), disabled=offset + shown >= total
    )


def _revoke(choices: dict[str, str]) -> None:
    request_id = st.session_state.get("revoke-pick")
    if request_id not in choices:
        ui.flash("Choose the grant to revoke first.", "error", at=REVOKE_BOX)
        return
    ui.act(
        ctx.services.lifecycle.revoke,
        request_id,
        ctx.user.username,
        comment=st.session_state.get("revoke-comment", ""),
        done=_ended,
        at=REVOKE_BOX,
    )


def _ended(request: AccessRequest) -> tuple[str, str]:
    kind = "success" if request.status is Status.REVOKED else "error"
    return f"Request {ui.md(request.id)} is {ui.md(ui.status_text(request.status))}.", kind


def _revoke_form(granted: list[AccessRequest]) -> None:
    choices = {
        r.id: f"{r.id} · {ui.scope_text(r.scope)} for {ui.account_label(r.account)} · {r.requester}"
        for r in granted
    }
    with st.form(key="revoke-form"):
        st.selectbox(
            "Grant to revoke",
            list(choices),
            index=None,
            format_func=choices.__getitem__,
            placeholder="Choose one of the grants on this page",
            key="revoke-pick",
        )
        st.text_input("Why revoke (required)", key="revoke-comment")
        st.form_submit_button("Revoke access", on_click=_revoke, args=(choices,))
    ui.show_flash(at=REVOKE_BOX)


def _reset_granted_page() -> None:
    st.session_state[GRANTED_OFFSET] = 0


# The page --------------------------------------------------------------------------------

link = st.query_params.get("link")
items: list[Any] = []
waiting = pending_at = 0
with ui.guard():
    items, waiting, pending_at = _paged(
        lambda at: market.pending_page(ctx.user.username, offset=at, limit=PAGE_SIZE),
        PENDING_OFFSET,
    )
failed = _read(market.failed_for)
search = st.session_state.get("granted-search", "")
granted: list[AccessRequest] = []
granted_total = granted_at = 0
with ui.guard():
    granted, granted_total, granted_at = _paged(
        lambda at: market.revocable_page(
            ctx.user.username, search=search, offset=at, limit=PAGE_SIZE
        ),
        GRANTED_OFFSET,
    )
picked = _picked(items)
_catalog_notes()
ui.show_flash(
    places=[
        *([LINK_BOX] if link else []),
        *([BULK_BOX] if items or BULK_RESULTS in st.session_state else []),
        *([f"pending-{picked}"] if picked else []),
        *(f"failed-{r.id}" for r in failed),
        *([REVOKE_BOX] if granted else []),
    ]
)

if link:
    with st.container(border=True, key=LINK_BOX), ui.guard():
        _confirm_link(link)

with ui.guard():
    shown = [i.request.id for i in items]
    if waiting:
        st.caption(
            f"**{waiting:,} waiting** · {pending_at + 1}–{pending_at + len(items)} shown, "
            "oldest first. One card at a time is open with its comment, Approve and Deny "
            "(the oldest, or the one you open with **Review and decide**); tick several to "
            "decide them together in the bar."
        )
    if items or BULK_RESULTS in st.session_state:
        with st.container(border=True, key=BULK_BOX):
            if items:
                _bulk_bar(shown)
            else:  # the last of the queue was just decided: say how
                _bulk_results()
    not_notified = ctx.services.outbox.owner_not_notified(shown)
    if not items:
        st.info("Nothing is waiting for your decision.")
    for item in items:
        with st.container(border=True, key=f"pending-{item.request.id}"):
            _pending_card(item, not_notified, picked=item.request.id == picked)
    if waiting > PAGE_SIZE:
        _nav(
            PENDING_OFFSET,
            offset=pending_at,
            shown=len(items),
            total=waiting,
            back="← Older",
            on="Newer →",
        )

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

if granted or search:
    st.header("Granted access")
    st.caption(
        "Revoking removes exactly what the request granted; access that another "
        "granted request still justifies stays."
    )
    st.text_input(
        "Search granted access",
        key="granted-search",
        placeholder="requester, account, database or database.table",
        on_change=_reset_granted_page,
    )
    if granted:
        st.caption(
            f"**{granted_total:,} granted** · {granted_at + 1}–{granted_at + len(granted)} "
            "shown, newest first"
        )
    else:
        st.info("No granted access matches the search.")
    for request in granted:
        with st.container(border=True, key=f"granted-{request.id}"), ui.guard():
            _granted_card(request)
    if granted_total > PAGE_SIZE:
        _nav(
            GRANTED_OFFSET,
            offset=granted_at,
            shown=len(granted),
            total=granted_total,
            back="← Newer",
            on="Older →",
        )
    if granted:
        with st.container(border=True, key=REVOKE_BOX), ui.guard():
            _revoke_form(granted)
