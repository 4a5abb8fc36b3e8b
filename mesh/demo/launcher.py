"""``python -m mesh demo``: start the stand-in, print how to reach it, run the web app."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping

from mesh.demo import standin
from mesh.services import activate_policy, build
from mesh.settings import PROJECT_ROOT, Settings

DEMO_USERS = (
    "carol (consumer)",
    "dan (consumer)",
    "sam (owner: Sales)",
    "mia (owner: Marketing, consumer)",
    "hank (owner: People)",
    "fiona (owner: Finance)",
    "priya (approver: privacy-office)",
    "ada (admin)",
)


def app_environment(
    environ: Mapping[str, str], *, endpoint: str, db: str, base_url: str
) -> dict[str, str]:
    """The web app's environment: the demo's settings, and a peer uvicorn leaves alone.

    uvicorn (Streamlit's server) replaces a loopback peer with an X-Forwarded-For entry
    unless FORWARDED_ALLOW_IPS says otherwise; it is empty unless the operator set it, so
    the client's address is decided in one place (ui.client_address, MESH_TRUSTED_PROXY).
    """
    return {
        **environ,
        "MESH_MODE": "demo",
        "MESH_DEMO_ENDPOINT": endpoint,
        "MESH_DB": db,
        "MESH_BASE_URL": base_url,
        "FORWARDED_ALLOW_IPS": environ.get("FORWARDED_ALLOW_IPS", ""),
    }


def run_demo(settings: Settings, *, port: int, standin_port: int, with_app: bool) -> int:
    """Run until interrupted; the stand-in's state lives only as long as this process."""
    base_url = os.environ.get("MESH_BASE_URL") or f"http://localhost:{port}"
    running = standin.start(
        state_file=settings.demo_state_file,
        db_path=settings.db_path,
        port=standin_port,
        policy=settings.policy_path,
        base_url=base_url,
    )
    try:
        # The demo's policy is in force before any process can act (the CLI adopts it).
        activate_policy(settings, by="demo")
        # The catalog index is there before the first page view (pages never sync).
        synced = build(settings, endpoint=running.endpoint, by="demo").sync.run(actor="demo")
    except Exception:
        running.stop()
        raise
    print(
        f"Catalog index synced: {synced.databases} databases, {synced.tables} tables in "
        f"{(synced.duration_ms or 0) / 1000:.1f} s.",
        flush=True,
    )
    env = app_environment(
        os.environ, endpoint=running.endpoint, db=str(settings.db_path), base_url=base_url
    )
    print(
        f"Demo AWS stand-in (moto) on {running.endpoint}: 10 databases, "
        f"{running.tables} tables, central account 123456789012.",
        flush=True,
    )
    policy = f"MESH_POLICY={settings.policy_path} " if settings.policy_path else ""
    print(
        "CLI, from another shell in this folder (it finds the running demo, its policy and "
        "its address by itself):\n"
        f"  MESH_DB={settings.db_path} .venv/bin/python -m mesh catalog\n"
        "  or, as in aws mode against the same stand-in:\n"
        f"  MESH_MODE=aws AWS_ENDPOINT_URL={running.endpoint} AWS_REGION=us-east-1 "
        "AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo "
        f"MESH_USERS=mesh/demo/users.yaml {policy}MESH_DB={settings.db_path} "
        ".venv/bin/python -m mesh "
        "catalog",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    app = None
    try:
        if with_app:
            print(
                f"Web app on http://localhost:{port}; users: {', '.join(DEMO_USERS)}; "
                "password: mesh-demo",
                flush=True,
            )
            app = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streamlit",
                    "run",
                    str(PROJECT_ROOT / "app.py"),
                    "--server.port",
                    str(port),
                    # Loopback only: the demo's passwords are published in the README.
                    "--server.address",
                    "127.0.0.1",
                    "--server.headless",
                    "true",
                    "--browser.gatherUsageStats",
                    "false",
                ],
                env=env,
                cwd=PROJECT_ROOT,
            )
            while not stop.is_set() and app.poll() is None:
                stop.wait(0.5)
        else:
            stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if app is not None and app.poll() is None:
            app.terminate()
            app.wait(timeout=10)
        running.stop()
    return 0 if app is None or app.returncode in (0, -signal.SIGTERM, None) else 1
