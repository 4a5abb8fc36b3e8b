"""The AWS adapters: the client factory, the Glue catalog, the Lake Formation grants.

- botocore Stubber pins the exact requests, the pagination and the error mapping;
- moto over HTTP gives the round trips, with the demo patches applied by ``moto_endpoint``.

Stubber answers before botocore's retry loop, so retries never consume stubbed responses;
the clients are still built with one attempt, as the app's factory would build them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from botocore.stub import Stubber

import mesh.catalog
from mesh.aws import DEMO_REGION, USER_AGENT, ClientFactory, central_account
from mesh.catalog import GlueCatalog
from mesh.demo import data
from mesh.errors import AwsFailure, AwsUnavailable, NotFound, SettingError
from mesh.grants import LakeFormation
from mesh.models import Scope
from mesh.policy import grants_for
from tests.conftest import REGION, reset_moto

# A central account that is not moto's default, so a CatalogId can only come from the adapter.
CENTRAL = "210987654321"
CONSUMER = "444455556666"
# The page size AWS_NOTES.md asks for: the paginator sends it as MaxResults.
PAGE = 100


# Stubbed clients ------------------------------------------------------------------------------

# Stubber answers before a request is built, so nothing is ever sent to this endpoint. The
# clients are built once per module (building one is slow), in demo mode, so that no
# environment variable can change them.
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def glue() -> Any:
    return ClientFactory(demo_endpoint=NOWHERE, max_attempts=1).client("glue")


@pytest.fixture
def glue_stub(glue: Any) -> Iterator[Stubber]:
    with Stubber(glue) as stubber:
        yield stubber


@pytest.fixture
def catalog(glue: Any) -> GlueCatalog:
    return GlueCatalog(glue, catalog_id=CENTRAL)


@pytest.fixture(scope="module")
def lf() -> Any:
    return ClientFactory(demo_endpoint=NOWHERE, max_attempts=1).client("lakeformation")


@pytest.fixture
def lf_stub(lf: Any) -> Iterator[Stubber]:
    with Stubber(lf) as stubber:
        yield stubber


@pytest.fixture
def lake(lf: Any) -> LakeFormation:
    return LakeFormation(lf)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raw_table(database: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"Name": name, "DatabaseName": database, **extra}


def table_link(database: str, name: str) -> dict[str, Any]:
    target = {"CatalogId": "999999999999", "DatabaseName": "elsewhere", "Name": name}
    return raw_table(database, name, TargetTable=target)


def database_link(name: str) -> dict[str, Any]:
    return {"Name": name, "TargetDatabase": {"CatalogId": "999999999999", "DatabaseName": name}}


def databases_page(names: list[str], token: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {"DatabaseList": [{"Name": n} for n in names]}
    if token:
        page["NextToken"] = token
    return page


def tables_page(tables: list[dict[str, Any]], token: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {"TableList": tables}
    if token:
        page["NextToken"] = token
    return page


def paged(token: str | None = None, **params: Any) -> dict[str, Any]:
    """The exact parameters a Glue paginator sends for one page of the central catalog."""
    sent = {"CatalogId": CENTRAL, "MaxResults": PAGE, **params}
    if token:
        sent["NextToken"] = token
    return sent


def permission_entry(table: str) -> dict[str, Any]:
    return {
        "Principal": {"DataLakePrincipalIdentifier": CONSUMER},
        "Resource": {"Table": {"CatalogId": CENTRAL, "DatabaseName": "sales", "Name": table}},
        "Permissions": ["SELECT"],
        "PermissionsWithGrantOption": ["SELECT"],
    }


# Grant shapes (Stubber) ----------------------------------------------------------------------


def test_table_request_grants_select_and_describe_with_grant_option_on_the_table(
    lake: LakeFormation, lf_stub: Stubber
) -> None:
    # GIVEN the grants a table request needs, and Lake Formation expecting exactly this call
    specs = grants_for(
        Scope(database="sales", table="orders"), account=CONSUMER, catalog_id=CENTRAL
    )
    expected = {
        "Principal": {"DataLakePrincipalIdentifier": CONSUMER},
        "Resource": {"Table": {"CatalogId": CENTRAL, "DatabaseName": "sales", "Name": "orders"}},
        "Permissions": ["SELECT", "DESCRIBE"],
        "PermissionsWithGrantOption": ["SELECT", "DESCRIBE"],
    }
    lf_stub.add_response("grant_permissions", {}, expected_params=expected)
    # WHEN each grant is sent
    sent = [lake.grant(spec) for spec in specs]
    # THEN one call went out, with the CatalogId inside the resource and none at the top level
    assert sent == [expected]
    lf_stub.assert_no_pending_responses()


def test_database_request_grants_database_describe_then_all_tables_with_grant_option(
    lake: LakeFormation, lf_stub: Stubber
) -> None:
    # GIVEN the grants a database request needs, and Lake Formation expecting two exact calls
    specs = grants_for(Scope(database="sales"), account=CONSUMER, catalog_id=CENTRAL)
    principal = {"DataLakePrincipalIdentifier": CONSUMER}
    describe_database = {
        "Principal": principal,
        "Resource": {"Database": {"CatalogId": CENTRAL, "Name": "sales"}},
        "Permissions": ["DESCRIBE"],
        "PermissionsWithGrantOption": ["DESCRIBE"],
    }
    read_all_tables = {
        "Principal": principal,
        "Resource": {"Table": {"CatalogId": CENTRAL, "DatabaseName": "sales", "TableWildcard": {}}},
        "Permissions": ["SELECT", "DESCRIBE"],
        "PermissionsWithGrantOption": ["SELECT", "DESCRIBE"],
    }
    lf_stub.add_response("grant_permissions", {}, expected_params=describe_database)
    lf_stub.add_response("grant_permissions", {}, expected_params=read_all_tables)
    # WHEN each grant is sent
    sent = [lake.grant(spec) for spec in specs]
    # THEN the explicit database DESCRIBE went first, then the table wildcard
    assert sent == [describe_database, read_all_tables]
    lf_stub.assert_no_pending_responses()


# Batch grants and revokes (Stubber) ----------------------------------------------------------


def _table_specs(count: int) -> list[Any]:
    """One table grant per consumer account: ``count`` distinct entries."""
    return [
        grants_for(
            Scope(database="sales", table="orders"),
            account=f"{500000000000 + i:012d}",
            catalog_id=CENTRAL,
        )[0]
        for i in range(count)
    ]


def test_batch_grant_sends_entries_with_unique_ids_and_reports_each_entrys_failure(
    lake: LakeFormation, lf_stub: Stubber
) -> None:
    # GIVEN three grants, and Lake Formation refusing the second entry only
    specs = _table_specs(3)
    entries = [{"Id": str(i), **spec.to_api()} for i, spec in enumerate(specs)]
    lf_stub.add_response(
        "batch_grant_permissions",
        {
            "Failures": [
                {
                    "RequestEntry": entries[1],
                    "Error": {
                        "ErrorCode": "AccessDeniedException",
                        "ErrorMessage": "no grant option on sales.orders",
                    },
                }
            ]
        },
        expected_params={"Entries": entries},
    )
    # WHEN they are granted in one batch
    outcomes = lake.batch_grant(specs)
    # THEN one call carried them all, the second failed with its cause, the others succeeded
    assert [o.spec for o in outcomes] == specs
    assert [o.ok for o in outcomes] == [True, False, True]
    failure = outcomes[1].failure
    assert type(failure) is AwsFailure
    assert failure.code == "AccessDeniedException"
    assert "no grant option on sales.orders" in failure.message
    lf_stub.assert_no_pending_responses()


def test_batch_grant_of_45_entries_makes_calls_of_20_20_and_5(
    lake: LakeFormation, lf_stub: Stubber
) -> None:
    # GIVEN 45 grants, and Lake Formation expecting three calls with ids unique across them
    specs = _table_specs(45)
    for start, size in ((0, 20), (20, 20), (40, 5)):
        chunk = [
            {"Id": str(start + i), **spec.to_api()}
            for i, spec in enumerate(specs[start : start + size])
        ]
        lf_stub.add_response(
            "batch_grant_permissions", {"Failures": []}, expected_params={"Entries": chunk}
        )
    # WHEN they are granted
    outcomes = lake.batch_grant(specs)
    # THEN every entry succeeded, in order
    assert [o.spec for o in outcomes] == specs
    assert all(o.ok for o in outcomes)
    lf_stub.assert_no_pending_responses()


def test_batch_revoke_whose_second_call_is_throttled_fails_only_that_calls_entries(
    lake: LakeFormation, lf_stub: Stubber
) -> None:
    # GIVEN 25 revokes: the first call of 20 succeeds, the second call is throttled
    specs = _table_specs(25)
    lf_stub.add_response(
        "batch_revoke_permissions",
        {},
        expected_params={
            "Entries": [{"Id": str(i), **s.to_api()} for i, s in enumerate(specs[:20])]
        },
    )
    lf_stub.add_client_error(
        "batch_revoke_permissions",
        service_error_code="ThrottlingException",
        service_message="slow down",
        http_status_code=400,
        expected_params={
            "Entries": [{"Id": str(20 + i), **s.to_api()} for i, s in enumerate(specs[20:])]
        },
    )
    # WHEN they are revoked
    outcomes = lake.batch_revoke(specs)
    # THEN the first 20 succeeded and the last 5 carry the call's error, as a passing fault
    assert [o.ok for o in outcomes] == [True] * 20 + [False] * 5
    assert all(type(o.failure) is AwsUnavailable for o in outcomes[20:])
    assert {o.failure.code for o in outcomes[20:] if o.failure} == {"ThrottlingException"}
    lf_stub.assert_no_pending_responses()


def test_batch_failure_naming_no_entry_we_sent_fails_the_whole_call(
    lake: LakeFormation, lf_stub: Stubber
) -> None:
    # GIVEN a failure Lake Formation does not attribute to an entry we sent
    specs = _table_specs(2)
    lf_stub.add_response(
        "batch_grant_permissions",
        {"Failures": [{"Error": {"ErrorCode": "InternalServiceException", "ErrorMessage": "?"}}]},
    )
    # WHEN the grants are sent
    outcomes = lake.batch_grant(specs)
    # THEN neither is recorded as made (a retry reads Lake Formation first)
    assert [o.ok for o in outcomes] == [False, False]
    lf_stub.assert_no_pending_responses()


def test_empty_batch_makes_no_call(lake: LakeFormation, lf_stub: Stubber) -> None:
    assert lake.batch_grant([]) == []
    lf_stub.assert_no_pending_responses()


# Listing permissions (Stubber) ---------------------------------------------------------------


def test_list_permissions_follows_next_token_across_three_pages(
    lake: LakeFormation, lf_stub: Stubber
) -> None:
    # GIVEN Lake Formation answering in three pages
    lf_stub.add_response(
        "list_permissions",
        {"PrincipalResourcePermissions": [permission_entry("a")], "NextToken": "p2"},
        expected_params={},
    )
    lf_stub.add_response(
        "list_permissions",
        {"PrincipalResourcePermissions": [permission_entry("b")], "NextToken": "p3"},
        expected_params={"NextToken": "p2"},
    )
    lf_stub.add_response(
        "list_permissions",
        {"PrincipalResourcePermissions": [permission_entry("c")]},
        expected_params={"NextToken": "p3"},
    )
    # WHEN every permission is listed
    entries = lake.list_permissions()
    # THEN the entries of every page come back, in page order
    assert [e["Resource"]["Table"]["Name"] for e in entries] == ["a", "b", "c"]
    lf_stub.assert_no_pending_responses()


def test_list_permissions_for_a_principal_sends_principal_and_resource_on_every_page(
    lake: LakeFormation, lf_stub: Stubber
) -> None:
    # GIVEN a filter on one principal and one table, answered in two pages
    resource = {"Table": {"CatalogId": CENTRAL, "DatabaseName": "sales", "Name": "a"}}
    filters = {"Principal": {"DataLakePrincipalIdentifier": CONSUMER}, "Resource": resource}
    lf_stub.add_response(
        "list_permissions",
        {"PrincipalResourcePermissions": [permission_entry("a")], "NextToken": "p2"},
        expected_params=filters,
    )
    lf_stub.add_response(
        "list_permissions",
        {"PrincipalResourcePermissions": [permission_entry("a")]},
        expected_params={**filters, "NextToken": "p2"},
    )
    # WHEN the permissions are listed with that filter
    entries = lake.list_permissions(principal=CONSUMER, resource=resource)
    # THEN both pages were read with the same filter
    assert entries == [permission_entry("a"), permission_entry("a")]
    lf_stub.assert_no_pending_responses()


# Glue pagination (Stubber) -------------------------------------------------------------------


def test_databases_reads_three_pages_and_skips_resource_links(
    catalog: GlueCatalog, glue_stub: Stubber
) -> None:
    # GIVEN three pages of databases, one of them a resource link to another catalog
    glue_stub.add_response("get_databases", databases_page(["a", "b"], "t2"), paged())
    second = databases_page(["c"], "t3")
    second["DatabaseList"].append(database_link("shared_from_partner"))
    glue_stub.add_response("get_databases", second, paged("t2"))
    glue_stub.add_response("get_databases", databases_page(["d"]), paged("t3"))
    # WHEN the catalog lists its databases
    names = [d.name for d in catalog.databases()]
    # THEN every page was read from the central catalog, without the link
    assert names == ["a", "b", "c", "d"]
    glue_stub.assert_no_pending_responses()


def test_tables_reads_every_page_and_keeps_columns_partition_keys_and_parameters(
    catalog: GlueCatalog, glue_stub: Stubber
) -> None:
    # GIVEN three pages of tables, with PII flags on a column and a partition key, and a link
    customers = raw_table(
        "sales",
        "customers",
        Parameters={"pii_flag": "false"},
        StorageDescriptor={
            "Columns": [
                {"Name": "id", "Type": "bigint"},
                {
                    "Name": "email",
                    "Type": "string",
                    "Comment": "c",
                    "Parameters": {"pii_flag": "Y"},
                },
            ]
        },
        PartitionKeys=[{"Name": "country", "Type": "string", "Parameters": {"pii_flag": "1"}}],
    )
    glue_stub.add_response(
        "get_tables", tables_page([raw_table("sales", "orders")], "t2"), paged(DatabaseName="sales")
    )
    glue_stub.add_response(
        "get_tables",
        tables_page([customers, table_link("sales", "partner_orders")], "t3"),
        paged("t2", DatabaseName="sales"),
    )
    glue_stub.add_response(
        "get_tables", tables_page([raw_table("sales", "stores")]), paged("t3", DatabaseName="sales")
    )
    # WHEN the catalog lists the tables of the database
    tables = catalog.tables("sales")
    # THEN every page was read, the link skipped, and the schema kept whole
    assert [t.name for t in tables] == ["orders", "customers", "stores"]
    read = tables[1]
    assert read.parameters == {"pii_flag": "false"}
    assert [(c.name, c.type, c.parameters) for c in read.columns] == [
        ("id", "bigint", {}),
        ("email", "string", {"pii_flag": "Y"}),
    ]
    assert read.columns[1].comment == "c"
    assert [(c.name, c.parameters, c.is_partition_key) for c in read.partition_keys] == [
        ("country", {"pii_flag": "1"}, True)
    ]
    glue_stub.assert_no_pending_responses()


def test_snapshot_reads_every_table_of_every_database_across_pages(
    catalog: GlueCatalog, glue_stub: Stubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN one reader thread: Stubber answers in the order responses were added, and the
    # snapshot reads databases concurrently (the moto round trip covers the concurrent path)
    monkeypatch.setattr(mesh.catalog, "_READERS", 1)
    # AND two pages of databases (one a resource link), then paged tables for each database
    glue_stub.add_response("get_databases", databases_page(["sales"], "d2"), paged())
    last = databases_page(["hr"])
    last["DatabaseList"].append(database_link("partner"))
    glue_stub.add_response("get_databases", last, paged("d2"))
    glue_stub.add_response(
        "get_tables",
        tables_page([raw_table("sales", "orders"), raw_table("sales", "lines")], "s2"),
        paged(DatabaseName="sales"),
    )
    glue_stub.add_response(
        "get_tables",
        tables_page([raw_table("sales", "customers")], "s3"),
        paged("s2", DatabaseName="sales"),
    )
    glue_stub.add_response(
        "get_tables", tables_page([raw_table("sales", "stores")]), paged("s3", DatabaseName="sales")
    )
    glue_stub.add_response(
        "get_tables",
        tables_page([raw_table("hr", "people"), table_link("hr", "partner_people")]),
        paged(DatabaseName="hr"),
    )
    # WHEN the whole catalog is read
    snapshot = catalog.snapshot()
    # THEN every table of every database is there, and no link
    assert [d.name for d in snapshot.databases] == ["sales", "hr"]
    assert {db: [t.name for t in tables] for db, tables in snapshot.tables.items()} == {
        "sales": ["orders", "lines", "customers", "stores"],
        "hr": ["people"],
    }
    assert snapshot.table("sales", "stores") is not None
    glue_stub.assert_no_pending_responses()


# Error mapping (Stubber) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        # refused: the caller must change something
        ("AccessDeniedException", 403, AwsFailure),
        ("InvalidInputException", 400, AwsFailure),
        # a grant on something missing is a failed grant, not a missing request
        ("EntityNotFoundException", 400, AwsFailure),
        # transient: trying again later may work
        ("ThrottlingException", 400, AwsUnavailable),
        ("InternalServiceException", 500, AwsUnavailable),
        ("OperationTimeoutException", 400, AwsUnavailable),
    ],
)
def test_grant_error_maps_to_domain_error_with_the_aws_code(
    lake: LakeFormation, lf_stub: Stubber, code: str, status: int, expected: type[Exception]
) -> None:
    # GIVEN Lake Formation refusing the grant with this error code
    spec = grants_for(Scope(database="sales", table="orders"), account=CONSUMER, catalog_id=CENTRAL)
    lf_stub.add_client_error(
        "grant_permissions",
        service_error_code=code,
        service_message="nope",
        http_status_code=status,
    )
    # WHEN the grant is sent
    with pytest.raises(AwsFailure) as caught:
        lake.grant(spec[0])
    # THEN it is exactly this domain error, carrying the code and chained to the ClientError
    assert type(caught.value) is expected
    assert caught.value.code == code
    assert code in str(caught.value)
    assert isinstance(caught.value.__cause__, ClientError)
    lf_stub.assert_no_pending_responses()


def test_access_denied_while_paginating_databases_is_an_aws_failure(
    catalog: GlueCatalog, glue_stub: Stubber
) -> None:
    # GIVEN Glue refusing the second page of databases
    glue_stub.add_response("get_databases", databases_page(["a"], "t2"), paged())
    glue_stub.add_client_error(
        "get_databases", service_error_code="AccessDeniedException", http_status_code=400
    )
    # WHEN the databases are listed
    with pytest.raises(AwsFailure) as caught:
        catalog.databases()
    # THEN the refusal surfaces as a failure with its code, not as a partial list
    assert type(caught.value) is AwsFailure
    assert caught.value.code == "AccessDeniedException"
    glue_stub.assert_no_pending_responses()


def test_throttled_list_permissions_is_aws_unavailable(
    lake: LakeFormation, lf_stub: Stubber
) -> None:
    # GIVEN Lake Formation throttling the second page
    lf_stub.add_response(
        "list_permissions",
        {"PrincipalResourcePermissions": [permission_entry("a")], "NextToken": "p2"},
        expected_params={},
    )
    lf_stub.add_client_error("list_permissions", service_error_code="ThrottlingException")
    # WHEN every permission is listed
    with pytest.raises(AwsUnavailable) as caught:
        lake.list_permissions()
    # THEN the caller is told to try again later
    assert caught.value.code == "ThrottlingException"
    lf_stub.assert_no_pending_responses()


def test_missing_database_is_not_found_naming_it(catalog: GlueCatalog, glue_stub: Stubber) -> None:
    # GIVEN Glue has no such database
    glue_stub.add_client_error(
        "get_database",
        service_error_code="EntityNotFoundException",
        expected_params={"CatalogId": CENTRAL, "Name": "ghost"},
    )
    # WHEN it is read
    with pytest.raises(NotFound) as caught:
        catalog.database("ghost")
    # THEN the error names the database
    assert caught.value.code == "EntityNotFoundException"
    assert "'ghost'" in str(caught.value)
    glue_stub.assert_no_pending_responses()


def test_missing_table_is_not_found_naming_table_and_database(
    catalog: GlueCatalog, glue_stub: Stubber
) -> None:
    # GIVEN Glue has no such table
    glue_stub.add_client_error(
        "get_table",
        service_error_code="EntityNotFoundException",
        expected_params={"CatalogId": CENTRAL, "DatabaseName": "sales", "Name": "ghost"},
    )
    # WHEN it is read
    with pytest.raises(NotFound) as caught:
        catalog.table("sales", "ghost")
    # THEN the error names both the table and its database
    assert caught.value.code == "EntityNotFoundException"
    assert "'ghost'" in str(caught.value)
    assert "'sales'" in str(caught.value)
    glue_stub.assert_no_pending_responses()


def test_tables_of_a_missing_database_is_not_found_naming_it(
    catalog: GlueCatalog, glue_stub: Stubber
) -> None:
    # GIVEN Glue has no such database
    glue_stub.add_client_error(
        "get_tables",
        service_error_code="EntityNotFoundException",
        expected_params=paged(DatabaseName="ghost"),
    )
    # WHEN its tables are listed
    with pytest.raises(NotFound) as caught:
        catalog.tables("ghost")
    # THEN the error names the database
    assert "'ghost'" in str(caught.value)
    glue_stub.assert_no_pending_responses()


def test_unreachable_endpoint_is_aws_unavailable(
    closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an endpoint on loopback that nothing listens on
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    sts = ClientFactory(max_attempts=1, timeout=2).client("sts")
    # WHEN the central account is asked for
    with pytest.raises(AwsUnavailable) as caught:
        central_account(sts)
    # THEN the connection failure is a domain error, not a botocore exception
    assert caught.value.code == "EndpointConnectionError"


# The client factory --------------------------------------------------------------------------


class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def _sent_requests(client: Any, *, status: int, body: bytes) -> list[Any]:
    """Answer every request the client sends with ``status`` and ``body``; return them."""
    sent: list[Any] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        sent.append(request)
        return AWSResponse(request.url, status, {}, _Body(body))

    client.meta.events.register("before-send", answer)
    return sent


def test_aws_mode_client_honours_aws_endpoint_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN AWS_ENDPOINT_URL points at an AWS-compatible endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    # WHEN the factory builds clients in aws mode
    clients = [ClientFactory().client(s) for s in ("glue", "lakeformation", "sts")]
    # THEN every client goes there
    assert {c.meta.endpoint_url for c in clients} == {"http://127.0.0.1:4566"}


def test_aws_mode_client_sends_user_agent_suffix(
    closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an aws mode client whose requests are answered before they leave the process
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    glue = ClientFactory(max_attempts=1).client("glue")
    sent = _sent_requests(glue, status=200, body=b'{"DatabaseList": []}')
    # WHEN it makes a call
    glue.get_databases()
    # THEN the request carries the app's user agent suffix
    assert len(sent) == 1
    user_agent = sent[0].headers["User-Agent"]
    if isinstance(user_agent, bytes):
        user_agent = user_agent.decode()
    assert user_agent.endswith(f" {USER_AGENT}")


def test_aws_mode_client_makes_the_given_number_of_attempts_in_standard_mode() -> None:
    # GIVEN a factory asked for three attempts per call (MESH_AWS_MAX_ATTEMPTS)
    client = ClientFactory(max_attempts=3).client("glue")
    # WHEN its retry configuration is read (botocore normalises it to total attempts)
    retries = client.meta.config.retries
    # THEN botocore retries in standard mode, three attempts in all, the first one included
    assert retries["mode"] == "standard"
    assert retries["total_max_attempts"] == 3


def test_one_attempt_client_sends_a_throttled_call_once(
    closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a one-attempt client whose every request is throttled
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    glue = ClientFactory(max_attempts=1).client("glue")
    throttled = b'{"__type": "ThrottlingException", "message": "slow down"}'
    sent = _sent_requests(glue, status=400, body=throttled)
    # WHEN the catalog reads its databases
    with pytest.raises(AwsUnavailable):
        GlueCatalog(glue, catalog_id=CENTRAL).databases()
    # THEN the request went out exactly once
    assert len(sent) == 1


def test_aws_mode_without_a_region_is_a_setting_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN no region anywhere
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    # WHEN an aws mode client is built
    with pytest.raises(SettingError) as caught:
        ClientFactory().client("glue")
    # THEN the message names the setting to set
    assert "AWS_REGION" in str(caught.value)


def test_demo_mode_client_uses_the_given_endpoint_and_demo_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN an environment pointing elsewhere
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    # WHEN the factory builds a client for the demo stand-in
    factory = ClientFactory(demo_endpoint="http://127.0.0.1:5999", max_attempts=2)
    client = factory.client("glue")
    # THEN it goes to the stand-in, in the demo region, configured as an aws mode client is
    assert client.meta.endpoint_url == "http://127.0.0.1:5999"
    assert client.meta.region_name == DEMO_REGION
    aws_mode = ClientFactory(max_attempts=2).client("glue")
    assert client.meta.config.retries == aws_mode.meta.config.retries
    assert client.meta.config.user_agent_extra == USER_AGENT


# Round trips over HTTP (moto) ----------------------------------------------------------------


@pytest.fixture
def demo_catalog(aws: str) -> GlueCatalog:
    """The catalog adapter over the seeded moto server, built as the app builds it."""
    factory = ClientFactory(max_attempts=1)
    return GlueCatalog(factory.client("glue"), catalog_id=central_account(factory.client("sts")))


@pytest.fixture
def demo_lake(aws: str) -> LakeFormation:
    return LakeFormation(ClientFactory(max_attempts=1).client("lakeformation"))


def _schema(columns: list[dict[str, Any]]) -> list[tuple[str, str, str, dict[str, str]]]:
    return [
        (c["Name"], c.get("Type", ""), c.get("Comment", ""), c.get("Parameters", {}))
        for c in columns
    ]


def test_catalog_reads_the_whole_seeded_demo_mesh(demo_catalog: GlueCatalog) -> None:
    # GIVEN the seeded demo mesh
    # WHEN the whole catalog is read over HTTP
    snapshot = demo_catalog.snapshot()
    # THEN every database and every table is there
    assert {d.name for d in snapshot.databases} == set(data.DATABASES)
    assert sum(len(t) for t in snapshot.tables.values()) == sum(
        len(tables) for _, _, tables in data.DATABASES.values()
    )
    # AND database parameters, columns and partition keys keep their Parameters
    for name, (description, parameters, tables) in data.DATABASES.items():
        database = snapshot.database(name)
        assert database is not None
        assert (database.description, database.parameters) == (description, parameters)
        for table_name, (_, columns, partitions, table_parameters) in tables.items():
            table = snapshot.table(name, table_name)
            assert table is not None, f"{name}.{table_name}"
            assert table.parameters == table_parameters
            assert _schema_of(table.columns) == _schema(columns)
            assert _schema_of(table.partition_keys) == _schema(partitions)


def _schema_of(columns: Any) -> list[tuple[str, str, str, dict[str, str]]]:
    return [(c.name, c.type, c.comment, c.parameters) for c in columns]


def test_catalog_reads_one_table_and_refuses_a_missing_one(demo_catalog: GlueCatalog) -> None:
    # GIVEN the seeded demo mesh, whose sales_orders.customers has PII columns
    # WHEN that table is read, and then one that does not exist
    customers = demo_catalog.table("sales_orders", "customers")
    with pytest.raises(NotFound):
        demo_catalog.table("sales_orders", "no_such_table")
    # THEN the existing one comes with its column flags
    flagged = {c.name: c.parameters["pii_flag"] for c in customers.columns if c.parameters}
    _, columns, _, _ = data.DATABASES["sales_orders"][2]["customers"]
    assert flagged == {c["Name"]: c["Parameters"]["pii_flag"] for c in columns if "Parameters" in c}


def test_granted_table_is_listed_back_for_its_principal(demo_lake: LakeFormation) -> None:
    # GIVEN a table grant sent to Lake Formation
    (spec,) = grants_for(
        Scope(database="sales_orders", table="orders"),
        account=CONSUMER,
        catalog_id=data.CENTRAL_ACCOUNT,
    )
    demo_lake.grant(spec)
    # WHEN the permissions of that principal on that table are listed
    entries = demo_lake.list_permissions(principal=CONSUMER, resource=spec.resource)
    # THEN the grant is there, with its grant option
    assert len(entries) == 1
    assert entries[0]["Principal"] == {"DataLakePrincipalIdentifier": CONSUMER}
    assert entries[0]["Resource"] == spec.resource
    assert set(entries[0]["Permissions"]) == {"SELECT", "DESCRIBE"}
    assert set(entries[0]["PermissionsWithGrantOption"]) == {"SELECT", "DESCRIBE"}


def test_database_grants_are_both_listed_back(demo_lake: LakeFormation) -> None:
    # GIVEN the two grants of a database request sent to Lake Formation
    specs = grants_for(
        Scope(database="sales_orders"), account=CONSUMER, catalog_id=data.CENTRAL_ACCOUNT
    )
    for spec in specs:
        demo_lake.grant(spec)
    # WHEN every permission is listed
    entries = demo_lake.list_permissions()
    # THEN both resources are held by the consumer
    mine = [e for e in entries if e["Principal"]["DataLakePrincipalIdentifier"] == CONSUMER]
    assert sorted(map(repr, (e["Resource"] for e in mine))) == sorted(
        map(repr, (s.resource for s in specs))
    )


# The demo stand-in's patches (moto) ----------------------------------------------------------


@pytest.fixture(scope="module")
def moto_lf(moto_endpoint: str) -> Any:
    return boto3.client("lakeformation", region_name=REGION, endpoint_url=moto_endpoint)


@pytest.fixture
def fresh_lf(moto_endpoint: str, moto_lf: Any) -> Any:
    """A Lake Formation client on the patched moto server, with nothing granted."""
    reset_moto(moto_endpoint)
    return moto_lf


def _table_resource(name: str | None) -> dict[str, Any]:
    table: dict[str, Any] = {"CatalogId": data.CENTRAL_ACCOUNT, "DatabaseName": "sales_orders"}
    if name is None:
        table["TableWildcard"] = {}
    else:
        table["Name"] = name
    return {"Table": table}


def _grant(lf: Any, resource: dict[str, Any], permissions: list[str]) -> None:
    lf.grant_permissions(
        Principal={"DataLakePrincipalIdentifier": CONSUMER},
        Resource=resource,
        Permissions=permissions,
        PermissionsWithGrantOption=permissions,
    )


def test_repeated_identical_grant_can_then_be_revoked(fresh_lf: Any) -> None:
    # GIVEN the same table grant made twice (a retry after a lost answer does this)
    (spec,) = grants_for(
        Scope(database="sales_orders", table="orders"),
        account=CONSUMER,
        catalog_id=data.CENTRAL_ACCOUNT,
    )
    params = spec.to_api()
    fresh_lf.grant_permissions(**params)
    fresh_lf.grant_permissions(**params)
    # WHEN it is revoked
    fresh_lf.revoke_permissions(**params)
    # THEN the revoke succeeds and nothing is left
    assert fresh_lf.list_permissions()["PrincipalResourcePermissions"] == []


@pytest.mark.parametrize("by_principal", [False, True], ids=["resource-only", "with-principal"])
@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        # a named table matches only its own grant, never the wildcard or another table
        ("orders", ["orders"]),
        ("customers", ["customers"]),
        ("stores", []),
        # the wildcard matches only the wildcard grant
        (None, [None]),
    ],
)
def test_filtered_list_permissions_with_wildcard_and_named_table_grants(
    fresh_lf: Any, wanted: str | None, expected: list[str | None], by_principal: bool
) -> None:
    # GIVEN a wildcard grant, two named table grants and a database grant, for one principal
    _grant(fresh_lf, _table_resource(None), ["SELECT"])
    _grant(fresh_lf, _table_resource("orders"), ["SELECT", "DESCRIBE"])
    _grant(fresh_lf, _table_resource("customers"), ["SELECT"])
    database = {"Database": {"CatalogId": data.CENTRAL_ACCOUNT, "Name": "sales_orders"}}
    _grant(fresh_lf, database, ["DESCRIBE"])
    # WHEN the permissions are listed for one table resource
    filters: dict[str, Any] = {"Resource": _table_resource(wanted)}
    if by_principal:
        filters["Principal"] = {"DataLakePrincipalIdentifier": CONSUMER}
    entries = fresh_lf.list_permissions(**filters)["PrincipalResourcePermissions"]
    # THEN only the matching grants come back
    assert [e["Resource"]["Table"].get("Name") for e in entries] == expected
    assert all(e["Resource"] == _table_resource(wanted) for e in entries)


def test_batch_grant_keeps_the_grant_option_and_batch_revoke_removes_it(
    moto_endpoint: str, fresh_lf: Any
) -> None:
    # GIVEN a database request's two grants made in one batch on the stand-in (a demo-mode
    # client: its credentials never depend on the order fixtures are set up in)
    lf = ClientFactory(demo_endpoint=moto_endpoint, max_attempts=1).client("lakeformation")
    lake = LakeFormation(lf)
    specs = grants_for(
        Scope(database="sales_orders"), account=CONSUMER, catalog_id=data.CENTRAL_ACCOUNT
    )
    granted = lake.batch_grant(specs)
    assert all(o.ok for o in granted), [o.failure for o in granted]
    # THEN both are held with their grant option (moto read a key the API does not have)
    assert all(lake.holds(spec) for spec in specs)
    # WHEN they are revoked in one batch
    assert all(o.ok for o in lake.batch_revoke(specs))
    # THEN nothing is left, grant option included
    assert lf.list_permissions()["PrincipalResourcePermissions"] == []
