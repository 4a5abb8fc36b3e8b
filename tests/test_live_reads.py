"""Glue is read live by the writes only: no page view, and no list a page shows, calls Glue.

In aws mode against the seeded moto server, signed in through the real login form (see
tests/test_pages.py, whose fixtures these are). ``glue_reads`` records every call the Glue
adapter makes, whichever process object makes it.
"""

from __future__ import annotations

from typing import Any

from streamlit.testing.v1 import AppTest

from mesh.errors import AwsFailure
from mesh.models import AccessRequest, GrantSpec, Status
from mesh.workflow import Marketplace
from tests.support import sign_in
from tests.test_pages import app, glue_reads, open_page, web_env
from tests.test_workflow import fresh_account

__all__ = ["app", "glue_reads", "web_env"]  # the fixtures this module borrows


class RefusingGrants:
    """A Lake Formation that refuses every grant, so an approved request fails."""

    def grant(self, spec: GrantSpec) -> dict[str, Any]:
        raise AwsFailure(
            "Lake Formation GrantPermissions was refused (AccessDeniedException).",
            code="AccessDeniedException",
        )


def failed_request(market: Marketplace) -> AccessRequest:
    """Ada's request for sales_orders.customers, approved by sam, whose grant failed."""
    request = market.submit(
        "ada",
        database="sales_orders",
        table="customers",
        account=fresh_account(),
        reason="quarterly churn review",
    )
    real, market.grants = market.grants, RefusingGrants()  # type: ignore[assignment]
    try:
        failed = market.approve(request.id, "sam")
    finally:
        market.grants = real
    assert failed.status is Status.FAILED
    return failed


def test_approvals_page_lists_failed_requests_without_calling_glue(
    app: AppTest, market: Marketplace, glue_reads: list[str]
) -> None:
    # GIVEN a failed request of sam's product, and sam signed in
    request = failed_request(market)
    sign_in(app, "sam")
    glue_reads.clear()
    # WHEN he opens the Approvals page, and it runs again
    open_page(app, "approvals")
    app.run()
    # THEN the failed request is listed, to retry, and no run called Glue
    assert not app.exception
    assert app.button(key=f"retry-failed-{request.id}") is not None
    assert glue_reads == []


def test_failed_and_single_request_reads_take_the_owner_without_glue(
    market: Marketplace, glue_reads: list[str]
) -> None:
    # GIVEN a failed request of sam's product
    request = failed_request(market)
    glue_reads.clear()
    # WHEN sam, hank and ada list what failed, and sam opens the request
    sams, hanks, adas = (market.failed_for(u) for u in ("sam", "hank", "ada"))
    opened = market.request_for(request.id, "sam")
    # THEN the owner came from the index (else the request), not from Glue
    assert [r.id for r in sams] == [request.id] and hanks == []
    assert request.id in {r.id for r in adas} and opened.id == request.id
    assert glue_reads == []
