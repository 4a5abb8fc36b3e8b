"""The CLI in aws mode against a moto server that someone else started and seeded.

The server is the stock `moto_server` in its own process, without this project's demo
patches, so nothing here leans on the stand-in: the same statuses, exit codes, JSON fields
and grant shapes hold as against AWS.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from mesh.demo import data
from mesh.settings import DEMO_USERS
from tests.support import AUDIT_KEY, LINK_SECRET, run_mesh

REGION = "us-east-1"
CENTRAL = "123456789012"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def external_moto() -> Iterator[str]:
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    glue = boto3.client(
        "glue",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    data.seed(glue)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def cli(external_moto: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "AWS_"))}
    env.update(
        {
            "MESH_MODE": "aws",
            "MESH_USERS": str(DEMO_USERS),
            "MESH_AUDIT_KEY": AUDIT_KEY,
            "MESH_LINK_SECRET": LINK_SECRET,
            "MESH_DB": str(tmp_path / "m.db"),
            "AWS_ENDPOINT_URL": external_moto,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
        }
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_mesh(*args, env=env, timeout=60)

    initialised = run("init")  # aws mode never makes its database by itself
    assert initialised.returncode == 0, initialised.stderr
    return run


def test_cli_contract_holds_against_a_separately_started_moto_server(
    cli,
    external_moto: str,  # type: ignore[no-untyped-def]
) -> None:
    # GIVEN a stock moto server seeded by someone else
    # WHEN the catalog is listed
    listed = cli("catalog", "--json")
    # THEN it has the demo databases with owners and PII facts
    assert listed.returncode == 0, listed.stderr
    catalog = {d["name"]: d for d in json.loads(listed.stdout)}
    assert catalog["legacy_exports"]["owner_account"] is None
    assert catalog["sales_orders"]["sensitive"] is True
    assert catalog["sales_orders"]["pii_flag"] is False

    # WHEN carol requests a table without PII, THEN it is granted at once by the policy
    clean = cli(
        "request",
        "--as",
        "carol",
        "--database",
        "supply_chain",
        "--table",
        "inventory",
        "--account",
        "444455556666",
        "--reason",
        "stock report",
        "--json",
    )
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["status"] == "granted"
    assert json.loads(clean.stdout)["decided_by"] is None

    # WHEN dan requests a whole database whose tables hold PII, THEN it waits for the owner
    pending = cli(
        "request",
        "--as",
        "dan",
        "--database",
        "sales_orders",
        "--account",
        "777788889999",
        "--reason",
        "partner analytics",
        "--json",
    )
    assert pending.returncode == 0, pending.stderr
    request = json.loads(pending.stdout)
    assert request["status"] == "pending_approval"
    assert request["table"] is None

    # WHEN the same request is made again, THEN it is a conflict naming the first one
    again = cli(
        "request",
        "--as",
        "dan",
        "--database",
        "sales_orders",
        "--account",
        "777788889999",
        "--reason",
        "partner analytics",
    )
    assert again.returncode == 5
    assert request["id"] in again.stderr

    # WHEN a Marketing owner tries to approve it, THEN it is not allowed
    wrong_owner = cli("approve", request["id"], "--as", "mia")
    assert wrong_owner.returncode == 3

    # WHEN the Sales owner approves, THEN it is granted with the exact two grants
    approved = cli("approve", request["id"], "--as", "sam", "--comment", "ok", "--json")
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["status"] == "granted"
    lf = boto3.client(
        "lakeformation",
        region_name=REGION,
        endpoint_url=external_moto,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    entries = [
        e
        for e in lf.list_permissions()["PrincipalResourcePermissions"]
        if e["Principal"]["DataLakePrincipalIdentifier"] == "777788889999"
    ]
    resources = sorted(json.dumps(e["Resource"], sort_keys=True) for e in entries)
    assert resources == sorted(
        [
            json.dumps(
                {"Database": {"CatalogId": CENTRAL, "Name": "sales_orders"}}, sort_keys=True
            ),
            json.dumps(
                {
                    "Table": {
                        "CatalogId": CENTRAL,
                        "DatabaseName": "sales_orders",
                        "TableWildcard": {},
                    }
                },
                sort_keys=True,
            ),
        ]
    )
    for entry in entries:
        assert sorted(entry["Permissions"]) == sorted(entry["PermissionsWithGrantOption"])

    # WHEN the decision is repeated, THEN it is a conflict
    assert cli("deny", request["id"], "--as", "ada", "--comment", "late").returncode == 5
    # AND the audit log tells the whole story
    audit = json.loads(cli("audit", "--request", request["id"], "--json").stdout)
    story = [row["action"] for row in audit if not row["action"].startswith("notification_")]
    assert story == [
        "request_submitted",
        "policy_evaluated",
        "approved",
        "grant_attempted",
        "grant_attempted",
        "grant_succeeded",
    ]
