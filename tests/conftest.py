"""Shared fixtures: a moto server on loopback seeded with the demo mesh, and the services.

Tests talk to moto over HTTP, the same code path as real AWS. The server runs once per test
session; each test that asks for ``aws`` gets it reset and freshly seeded.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from mesh.demo import data, standin
from mesh.services import Services, build
from mesh.settings import DEMO_USERS, Settings, load_settings
from mesh.workflow import Marketplace

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def fake_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test can reach real AWS, and no MESH_* setting leaks in from the shell."""
    for name in list(os.environ):
        if name.startswith(("MESH_", "AWS_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.fixture(autouse=True)
def clear_streamlit_caches() -> Iterator[None]:
    """st.cache_data and st.cache_resource outlive an AppTest; clear them around each test."""
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One patched moto server on 127.0.0.1 for the whole session."""
    server, endpoint = standin.serve()
    yield endpoint
    server.stop()


def reset_moto(endpoint: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A reset moto server seeded with the demo mesh; AWS_ENDPOINT_URL points at it."""
    reset_moto(moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    data.seed(boto3.client("glue", region_name=REGION, endpoint_url=moto_endpoint))
    return moto_endpoint


def client(service: str, endpoint: str) -> object:
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


@pytest.fixture
def aws_env(aws: str, tmp_path: Path) -> dict[str, str]:
    """Environment variables for aws mode against the seeded moto server."""
    return {
        "MESH_MODE": "aws",
        "MESH_DB": str(tmp_path / "mesh.db"),
        "MESH_USERS": str(DEMO_USERS),
        "AWS_ENDPOINT_URL": aws,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }


@pytest.fixture
def settings(aws_env: dict[str, str]) -> Settings:
    return load_settings(aws_env, {})


@pytest.fixture
def services(settings: Settings) -> Services:
    return build(settings)


@pytest.fixture
def market(services: Services) -> Marketplace:
    return services.marketplace


def lake_formation_entries(endpoint: str, account: str | None = None) -> list[dict[str, object]]:
    """What moto's Lake Formation holds, optionally for one principal (read directly)."""
    lf = boto3.client("lakeformation", region_name=REGION, endpoint_url=endpoint)
    entries = lf.list_permissions()["PrincipalResourcePermissions"]
    if account is None:
        return list(entries)
    return [e for e in entries if e["Principal"]["DataLakePrincipalIdentifier"] == account]


def dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True)
