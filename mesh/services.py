"""Wire the adapters and use cases together from the settings (the app and CLI share this)."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.aws import ClientFactory, central_account
from mesh.catalog import GlueCatalog
from mesh.errors import SettingError
from mesh.grants import LakeFormation
from mesh.settings import Mode, Settings
from mesh.store import Store
from mesh.users import UserFile
from mesh.workflow import Marketplace


@dataclass(frozen=True, kw_only=True)
class Services:
    """Everything a front end needs: the use cases, plus the adapters for its own reads."""

    settings: Settings
    marketplace: Marketplace
    catalog: GlueCatalog
    lakeformation: LakeFormation
    users: UserFile
    central_account: str
    endpoint: str | None


def demo_endpoint(settings: Settings) -> str | None:
    """The running demo stand-in's URL: from MESH_DEMO_ENDPOINT or the state file."""
    from mesh.demo import standin

    if settings.demo_endpoint:
        return settings.demo_endpoint
    return standin.find_running(settings.demo_state_file)


def require_demo_endpoint(settings: Settings) -> str:
    endpoint = demo_endpoint(settings)
    if endpoint is None:
        raise SettingError(
            f"MESH_MODE is demo but no demo stand-in is running for {settings.db_path}; start "
            "the demo with `python -m mesh demo` (or `./run demo`) first, or set MESH_MODE=aws."
        )
    return endpoint


def build(settings: Settings, *, endpoint: str | None = None) -> Services:
    """Build the services; in demo mode ``endpoint`` is the stand-in's URL."""
    if settings.mode is Mode.DEMO and endpoint is None:
        endpoint = require_demo_endpoint(settings)
    factory = ClientFactory(
        max_attempts=settings.aws_max_attempts,
        timeout=settings.aws_timeout,
        demo_endpoint=endpoint if settings.mode is Mode.DEMO else None,
    )
    account = central_account(factory.client("sts"))
    catalog = GlueCatalog(factory.client("glue"), catalog_id=account)
    lakeformation = LakeFormation(factory.client("lakeformation"))
    users = UserFile(settings.users_path)
    users.directory()  # a broken users file stops start-up, not the first sign-in
    store = Store(settings.db_path)
    store.migrate()
    marketplace = Marketplace(
        store=store,
        catalog=catalog,
        grants=lakeformation,
        users=users,
        stale_granting=settings.stale_granting,
    )
    return Services(
        settings=settings,
        marketplace=marketplace,
        catalog=catalog,
        lakeformation=lakeformation,
        users=users,
        central_account=account,
        endpoint=endpoint,
    )
