"""End to end through the use cases against moto over HTTP: the product's spine."""

from __future__ import annotations

from mesh.models import Status
from mesh.workflow import Marketplace
from tests.conftest import lake_formation_entries


def test_non_pii_table_is_granted_at_once_and_pii_table_after_owner_approval(
    market: Marketplace, aws: str
) -> None:
    # GIVEN carol, a consumer, and the seeded demo mesh
    # WHEN she requests a table with no PII
    clean = market.submit(
        "carol",
        database="sales_orders",
        table="orders",
        account="444455556666",
        reason="weekly revenue dashboard",
    )
    # THEN it is granted at once, by the policy
    assert clean.status is Status.GRANTED
    assert clean.decided_by is None
    # WHEN she requests a table with PII columns
    pii = market.submit(
        "carol",
        database="sales_orders",
        table="customers",
        account="444455556666",
        reason="churn model",
    )
    # THEN it waits for the owner, with the policy's reason
    assert pii.status is Status.PENDING_APPROVAL
    assert "column email has pii_flag=TRUE" in pii.policy_reason
    assert [p.request.id for p in market.pending_for("sam")] == [pii.id]
    # WHEN the owner approves
    approved = market.approve(pii.id, "sam", comment="ok for the churn model")
    # THEN it is granted and Lake Formation holds both grants
    assert approved.status is Status.GRANTED
    assert approved.decided_by == "sam"
    tables = {e["Resource"]["Table"]["Name"] for e in lake_formation_entries(aws, "444455556666")}
    assert tables == {"orders", "customers"}
