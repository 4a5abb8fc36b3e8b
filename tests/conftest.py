"""Shared fixtures: a moto server on loopback seeded with the demo mesh, and the services.

Tests talk to moto over HTTP, the same code path as real AWS. The server runs once per test
session; each test that asks for ``aws`` gets it reset and freshly seeded.
"""

from __future__ import annotations

import functools
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest

import mesh.store
from mesh import auditlog
from mesh.demo import data, standin
from mesh.moments import iso, utc_now
from mesh.services import Services, build
from mesh.settings import DEMO_USERS, Settings, load_settings
from mesh.store import PgStore, Store
from mesh.workflow import Marketplace
from tests import pgsupport
from tests.support import AUDIT_KEY, LINK_SECRET, REGION, moto_env

# A store a test makes without an audit key keeps one beside its database, as the demo does
# (production code never does: Store.audit_key).
mesh.store.KEY_FILE_BESIDE_BY_DEFAULT = True


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
    """st.cache_data and st.cache_resource outlive an AppTest; clear them around each test,
    and the web app's process singletons (services, background job) with them."""
    import sys

    import streamlit as st

    def clear() -> None:
        st.cache_data.clear()
        st.cache_resource.clear()
        ui = sys.modules.get("mesh.ui")
        if ui is not None:
            ui.reset_process_for_tests()

    clear()
    yield
    clear()


_shared_loader = functools.cache(botocore.loaders.create_loader)


@pytest.fixture(autouse=True)
def logging_as_it_was() -> Iterator[None]:
    """Each test leaves the process's logging as it found it.

    The CLI run in this process (cli.main) sets the root level from MESH_LOG (error by
    default) and holds the AWS libraries' loggers; the web app's set-up runs once per
    process. Without this, a later test saw an earlier test's levels and filters.
    """
    import logging

    from mesh import logs

    names = ("", "mesh", *logs.WIRE_LOGGERS)
    levels = {name: logging.getLogger(name).level for name in names}
    root = logging.getLogger()
    handlers = list(root.handlers)
    masked = {h for h in handlers if logs._FILTER in h.filters}
    configured = logs._configured
    yield
    root.handlers[:] = handlers
    for handler in handlers:
        if handler not in masked:
            handler.removeFilter(logs._FILTER)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    logs._configured = configured


@pytest.fixture(autouse=True)
def one_botocore_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let every boto3 session share one botocore data loader (read-only data), for speed."""
    monkeypatch.setattr(botocore.session, "create_loader", _shared_loader)


@pytest.fixture
def running_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Page routing as in a server that has already run app.py once.

    A `pages/` folder beside the main script makes Streamlit start in its legacy folder
    mode, until the first st.navigation() call switches it off for the process. AppTest
    resets that switch before every run, so without this each run would route like a
    server's very first run. test_page_url_on_a_fresh_server_shows_the_sign_in_form covers
    that first run.
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def without_page_folder(self: PagesManager, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", without_page_folder)


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


@pytest.fixture(scope="module")
def module_env(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Settings and AWS variables for aws mode against the shared moto server, set for the
    whole module, with a migrated template store (a module may override this fixture to add
    a setting)."""
    template = tmp_path_factory.mktemp("template") / "mesh.db"
    Store(template).migrate(create=True)  # as `mesh init` makes it
    env = {
        "MESH_MODE": "aws",
        "MESH_DB": str(template),
        "MESH_USERS": str(DEMO_USERS),
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
        **moto_env(moto_endpoint),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield env


@pytest.fixture(scope="module")
def seeded(module_env: dict[str, str]) -> str:
    """The shared moto server, reset and seeded with the demo mesh once for this module."""
    endpoint = module_env["AWS_ENDPOINT_URL"]
    reset_moto(endpoint)
    data.seed(client("glue", endpoint))
    return endpoint


@pytest.fixture
def aws_env(aws: str, tmp_path: Path) -> dict[str, str]:
    """Environment variables for aws mode against the seeded moto server, with the store
    made as `mesh init` makes it (aws mode never creates one by itself), its audit anchor
    started with it."""
    store = Store(tmp_path / "mesh.db", audit_key=AUDIT_KEY)
    store.migrate(create=True)
    auditlog.initialise_anchor(store, auditlog.FileAnchor(), by="cli init", at=iso(utc_now()))
    store.close()
    return {
        "MESH_MODE": "aws",
        "MESH_DB": str(tmp_path / "mesh.db"),
        "MESH_USERS": str(DEMO_USERS),
        "MESH_AUDIT_KEY": AUDIT_KEY,
        "MESH_LINK_SECRET": LINK_SECRET,
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


# PostgreSQL: the throwaway server `scripts/dev test` starts (tests/pgsupport.py). Read at import,
# since fake_aws_environment takes every MESH_* variable out of each test's environment.
_PG_SERVER_URL = pgsupport.server_url_from_environment()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """The test PostgreSQL server's superuser URL. Without one the test fails, never skips:
    a skipped PostgreSQL suite would let a run that tested nothing look green."""
    if _PG_SERVER_URL is None:
        pytest.fail(pgsupport.NO_SERVER, pytrace=False)
    yield _PG_SERVER_URL
    pgsupport.close_admin_connections()


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database on the test server for this test (its URL), dropped after it."""
    with pgsupport.temporary_database(pg_server_url) as url:
        yield url


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite store for a module's tests to copy: migrating for each is slow."""
    store = Store(tmp_path_factory.mktemp("template") / "mesh.db", audit_key=AUDIT_KEY)
    store.migrate()
    store.close()
    return store.path


@pytest.fixture(scope="module")
def pg_template(pg_server_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database for a module's tests to copy (CREATE DATABASE ...
    TEMPLATE): nothing may stay connected to it."""
    with pgsupport.temporary_database(pg_server_url, prefix="tmpl") as url:
        store = PgStore(url, audit_key=AUDIT_KEY)
        store.migrate()
        store.close()
        yield url


# The real-browser tests' chromium and pages (Playwright is imported only when they run).


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, once per browser-test module."""
    from tests.browser_support import chromium

    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh browser context (no cookies), with the module's UI_TIMEOUT_MS; a screenshot
    lands in tmp_path if the test fails."""
    from tests.browser_support import fresh_page

    timeout = getattr(request.module, "UI_TIMEOUT_MS", 30_000)
    with fresh_page(browser, request, tmp_path, timeout_ms=timeout) as opened:
        yield opened
