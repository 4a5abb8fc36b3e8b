"""What a failed grant, revoke or catalog sync tells people (issue 10, follow-up 3).

The request's error is shown on the Approvals and My requests cards, and a sync's error to
admins after "Sync now": each is a sentence a person understands, with the AWS error code
when AWS refused (a named state with its cause), and never an exception's text, a Python
repr or a traceback. The details go to the log, masked.
"""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mesh import logs
from mesh.aws import call
from mesh.grants import LakeFormation
from mesh.models import GrantSpec, Status
from mesh.services import Services

CAROL = "444455556666"
# An unexpected error whose text holds what a person must never see: a repr and a token.
TOKEN = secrets.token_urlsafe(32)
LEAKY = RuntimeError(f"<botocore.client.LakeFormation object at 0x7f> token={TOKEN}")
REQUEST_ID = "4c3a9e1e-0b0f-4a9e-9c1d-7e7f0d5b2a11"


@pytest.fixture
def server_log() -> Iterator[io.StringIO]:
    """The process's log as the CLI sets it up (errors, masked), into a buffer; conftest
    puts logging back as it was afterwards."""
    buffer = io.StringIO()
    logs.configure({"MESH_LOG": "error"}, stream=buffer)
    yield buffer


def raising(monkeypatch: pytest.MonkeyPatch, method: str, exc: Exception) -> None:
    """Make LakeFormation.<method> fail with ``exc`` (a ClientError goes through aws.call,
    as a real refusal does)."""

    def fail(self: LakeFormation, spec: GrantSpec) -> dict[str, Any]:
        if isinstance(exc, ClientError):

            def refused() -> dict[str, Any]:
                raise exc

            return call("Lake Formation", "GrantPermissions", refused)
        raise exc

    monkeypatch.setattr(LakeFormation, method, fail)


def submit_orders(services: Services) -> str:
    """carol asks for a table that needs no approval, so it is granted at once."""
    request = services.marketplace.submit(
        "carol", database="sales_orders", table="orders", account=CAROL, reason="weekly report"
    )
    return request.id


def assert_a_sentence(text: str) -> None:
    assert TOKEN not in text and REQUEST_ID not in text
    for python in ("RuntimeError", "Traceback", "object at 0x", "<", "token="):
        assert python not in text, text


def test_an_unexpected_error_in_a_grant_shows_a_sentence_and_logs_the_details_masked(
    services: Services, monkeypatch: pytest.MonkeyPatch, server_log: io.StringIO
) -> None:
    # GIVEN Lake Formation's adapter failing with an unexpected error holding a repr and a token
    raising(monkeypatch, "grant", LEAKY)
    # WHEN carol's request is granted
    request = services.marketplace.store.get(submit_orders(services))
    # THEN it failed under a named code, with a sentence that names no Python detail
    assert request is not None and request.status is Status.FAILED
    assert request.error_code == "Unexpected"
    assert request.error == (
        "An unexpected error stopped the grant; the details are in the server log. "
        "Fix the cause, then retry the request."
    )
    assert_a_sentence(request.error)
    # AND the log has the details, with the token masked
    assert "RuntimeError" in server_log.getvalue()
    assert "Traceback" in server_log.getvalue()
    assert TOKEN not in server_log.getvalue()


def test_aws_refusing_a_grant_shows_its_error_code_and_message_but_no_request_id(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN Lake Formation refusing grants, its response carrying a request id
    refusal = ClientError(
        {
            "Error": {"Code": "AccessDeniedException", "Message": "Insufficient permissions"},
            "ResponseMetadata": {"RequestId": REQUEST_ID, "HTTPStatusCode": 400},
        },
        "GrantPermissions",
    )
    raising(monkeypatch, "grant", refusal)
    # WHEN carol's request is granted
    request = services.marketplace.store.get(submit_orders(services))
    # THEN the cause is named with AWS's code and message, as a sentence
    assert request is not None and request.status is Status.FAILED
    assert request.error_code == "AccessDeniedException"
    assert request.error is not None
    assert "(AccessDeniedException: Insufficient permissions)" in request.error
    assert_a_sentence(request.error)


def test_an_unexpected_error_in_a_revoke_shows_a_sentence(
    services: Services, monkeypatch: pytest.MonkeyPatch, server_log: io.StringIO
) -> None:
    # GIVEN carol's granted request, and Lake Formation's adapter failing unexpectedly
    request_id = submit_orders(services)
    raising(monkeypatch, "revoke", LEAKY)
    # WHEN sam revokes it
    services.lifecycle.revoke(request_id, "sam", comment="project over")
    # THEN it is revoke_failed with a sentence that names no Python detail
    request = services.marketplace.store.get(request_id)
    assert request is not None and request.status is Status.REVOKE_FAILED
    assert request.error_code == "Unexpected"
    assert request.error is not None
    assert request.error.startswith(
        "An unexpected error stopped the revoke; the details are in the server log."
    )
    assert_a_sentence(request.error)
    assert TOKEN not in server_log.getvalue()


def test_an_unexpected_error_in_a_catalog_sync_shows_admins_a_sentence(
    services: Services, monkeypatch: pytest.MonkeyPatch, server_log: io.StringIO
) -> None:
    # GIVEN a catalog whose listing fails with an unexpected error
    def fail() -> Any:
        raise LEAKY

    monkeypatch.setattr(services.sync.catalog, "databases", fail)
    # WHEN an admin clicks "Sync now"
    record = services.sync.run(actor="ada")
    # THEN the run's error is a sentence; the log has the details, masked
    assert record.error == (
        "an unexpected error stopped the sync; the details are in the server log"
    )
    assert "catalog sync failed" in server_log.getvalue()
    assert "RuntimeError" in server_log.getvalue()
    assert TOKEN not in server_log.getvalue()
    assert logging.getLogger().level == logging.ERROR


# What each person sees: the code and a sentence; the stored AWS message to admins only ----

ARN = "arn:aws:iam::123456789012:role/MeshGranter"
DENIED = ClientError(
    {
        "Error": {
            "Code": "AccessDeniedException",
            "Message": f"User: {ARN} is not authorized to perform lakeformation:GrantPermissions",
        },
        "ResponseMetadata": {"RequestId": REQUEST_ID, "HTTPStatusCode": 400},
    },
    "GrantPermissions",
)


def everything_shown(at: Any) -> str:
    """What a person reads on the page (markdown escapes undone)."""
    from tests.support import texts

    kinds = ("markdown", "caption", "error", "warning", "info")
    return "\n".join(t for kind in kinds for t in texts(getattr(at, kind)))


@pytest.fixture
def web(aws_env: dict[str, str], services: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    from tests.support import COOKIE_KEY

    assert services.sync.run(actor="test").error is None
    for name, value in {**aws_env, "MESH_COOKIE_KEY": COOKIE_KEY}.items():
        monkeypatch.setenv(name, value)
    return services


def test_a_failed_grant_card_shows_people_the_code_and_admins_the_message(
    web: Services, monkeypatch: pytest.MonkeyPatch, running_server: None
) -> None:
    from streamlit.testing.v1 import AppTest

    from mesh import ui
    from tests.support import APP, sign_in

    # GIVEN carol's grant refused by Lake Formation with a message naming a role ARN
    raising(monkeypatch, "grant", DENIED)
    request = web.marketplace.store.get(submit_orders(web))
    assert request is not None and request.status is Status.FAILED and ARN in (request.error or "")
    # WHEN carol opens My requests
    app = AppTest.from_file(APP, default_timeout=30)
    sign_in(app, "carol")
    app.switch_page(f"{ui.PAGES_DIR}/my_requests.py").run()
    assert not app.exception
    shown = everything_shown(app)
    # THEN her card names the AWS error code in a plain sentence, but not the ARN
    assert "AccessDeniedException" in shown and ARN not in shown
    assert "123456789012" not in shown
    # AND an admin's view of the same failure is the whole stored message
    assert ARN in ui.failure_text(request.error, request.error_code, admin=True)
    assert ARN not in ui.failure_text(request.error, request.error_code, admin=False)


def test_the_last_failed_sync_shows_people_the_code_and_admins_the_message(
    web: Services, monkeypatch: pytest.MonkeyPatch, running_server: None
) -> None:
    from streamlit.testing.v1 import AppTest

    from mesh import ui
    from tests.support import APP, sign_in

    # GIVEN a sync refused by Glue with a message naming a role ARN
    def refused() -> Any:
        return call("Glue", "GetDatabases", lambda: (_ for _ in ()).throw(DENIED))

    monkeypatch.setattr(web.sync.catalog, "databases", refused)
    assert ARN in (web.sync.run(actor="ada").error or "")
    # WHEN carol, then ada, open the catalog
    seen = {}
    for username in ("carol", "ada"):
        app = AppTest.from_file(APP, default_timeout=30)
        sign_in(app, username)
        app.switch_page(f"{ui.PAGES_DIR}/databases.py").run()
        assert not app.exception
        seen[username] = everything_shown(app)
    # THEN both read that the last sync failed with the code; only ada reads the ARN
    assert "The last sync failed" in seen["carol"] and "AccessDeniedException" in seen["carol"]
    assert ARN not in seen["carol"]
    assert ARN in seen["ada"]


def test_a_failed_grant_on_the_approvals_page_shows_its_owner_the_code_not_the_message(
    web: Services, monkeypatch: pytest.MonkeyPatch, running_server: None
) -> None:
    from streamlit.testing.v1 import AppTest

    from mesh import ui
    from tests.support import APP, sign_in

    # GIVEN carol's grant of sam's table refused by Lake Formation with a message naming a role
    raising(monkeypatch, "grant", DENIED)
    request = web.marketplace.store.get(submit_orders(web))
    assert request is not None and request.status is Status.FAILED
    # WHEN sam, its owner but no admin, opens Approvals, where failed grants wait for a retry
    app = AppTest.from_file(APP, default_timeout=30)
    sign_in(app, "sam")
    app.switch_page(f"{ui.PAGES_DIR}/approvals.py").run()
    assert not app.exception
    shown = everything_shown(app)
    # THEN the failure names the AWS error code, and neither the role ARN nor its account
    assert request.id in shown and "AccessDeniedException" in shown, shown
    assert ARN not in shown and "123456789012" not in shown
