"""The reverse-proxy example (deploy/nginx/mesh.conf) in front of a real app.

Streamlit cannot set X-Frame-Options, a CSP frame-ancestors, X-Content-Type-Options or a
Referrer-Policy; the nginx example adds them and carries the WebSocket every page runs on.
This runs Debian's nginx with that very file (ports, upstream and certificate swapped for
free ports and a throwaway certificate), in front of `python -m mesh demo`, and signs in
through it in Debian's chromium: the form appears only if the WebSocket works.

nginx is required, not optional: scripts/dev test installs it (as it installs chromium), and
a machine without it fails here saying so.
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.sync_api import Browser, expect

from tests.browser_support import Demo, free_ports, started_demo, stop

pytestmark = [pytest.mark.browser, pytest.mark.flaky(reruns=2, reruns_delay=1)]

PROJECT = Path(__file__).resolve().parents[1]
EXAMPLE = PROJECT / "deploy" / "nginx" / "mesh.conf"
PASSWORD = "mesh-demo"
COOKIE = "mesh_marketplace_auth"
UI_TIMEOUT_MS = 30_000
STARTUP_SECONDS = 20
SECURITY_HEADERS = {
    "X-Frame-Options": "SAMEORIGIN",
    "Content-Security-Policy": "frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=31536000",
}


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        pytest.fail(
            "nginx is missing, and the reverse-proxy example must be tested: install Debian's "
            "nginx package (`apt-get install nginx`; `scripts/dev test` does it)."
        )
    return found


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 valid for a day, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def swap(text: str, old: str, new: str) -> str:
    """Replace the one line of the example that ``old`` names (the EDIT lines)."""
    assert text.count(old) == 1, f"deploy/nginx/mesh.conf should hold {old!r} once"
    return text.replace(old, new)


def site_config(*, app_port: int, http_port: int, https_port: int, folder: Path) -> str:
    """The example with its EDIT lines pointed at this test's ports and certificate."""
    cert, key = self_signed(folder)
    text = EXAMPLE.read_text()
    text = swap(text, "server 127.0.0.1:8501;", f"server 127.0.0.1:{app_port};")
    text = swap(text, "listen 80;", f"listen 127.0.0.1:{http_port};")
    text = swap(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    text = swap(text, "/etc/ssl/certs/mesh.example.com.pem", str(cert))
    return swap(text, "/etc/ssl/private/mesh.example.com.key", str(key))


def main_config(prefix: Path, site: Path) -> str:
    """An nginx.conf that keeps everything (pid, logs, temp files) under ``prefix``."""
    # As root nginx would switch its workers to `nobody`, which cannot read a private tmp dir.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / "access.log"};
{temp}
    include {site};
}}
"""


@dataclass(frozen=True, kw_only=True)
class Proxy:
    url: str
    http_url: str
    log: Path


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with started_demo(tmp_path_factory.mktemp("demo")) as running:
        yield running


@pytest.fixture
def proxy(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """Debian's nginx with the example config in front of the demo, on free ports."""
    binary = nginx_binary()
    prefix = tmp_path_factory.mktemp("nginx")
    http_port, https_port = free_ports(2)
    app_port = int(demo.url.rsplit(":", 1)[1])
    site = prefix / "mesh.conf"
    site.write_text(
        site_config(app_port=app_port, http_port=http_port, https_port=https_port, folder=prefix)
    )
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, site))
    checked = subprocess.run(
        [binary, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True
    )
    assert checked.returncode == 0, f"nginx refused deploy/nginx/mesh.conf:\n{checked.stderr}"
    log = prefix / "nginx.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not (listening(https_port) and listening(http_port)):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nginx did not start:\n{log.read_text()}")
            time.sleep(0.1)  # waiting on a real process
        yield Proxy(
            url=f"https://127.0.0.1:{https_port}",
            http_url=f"http://127.0.0.1:{http_port}",
            log=prefix / "error.log",
        )
    finally:
        stop(process)


def fetch(url: str) -> tuple[int, dict[str, str], str]:
    """GET ``url`` trusting the throwaway certificate; the status, headers and body."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), NoRedirect())
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), ""


# Headers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/_stcore/health", "/approvals?link=x"])
def test_proxy_adds_the_security_headers_streamlit_cannot_set(proxy: Proxy, path: str) -> None:
    # GIVEN the app behind the example nginx config
    # WHEN a page, the health check or a decision link's address is fetched through it
    status, headers, body = fetch(proxy.url + path)
    # THEN it answers, with every security header
    assert status == 200
    assert {name: headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
    if path == "/":
        assert "<title>" in body.lower() or "streamlit" in body.lower()


def test_plain_http_only_redirects_to_https(proxy: Proxy) -> None:
    # GIVEN the example's plain-http server
    # WHEN a page is asked for over http
    status, headers, _ = fetch(proxy.http_url + "/approvals")
    # THEN it is sent to the same path over https, and no page is served
    assert status == 301
    assert headers["Location"].startswith("https://127.0.0.1")
    assert headers["Location"].endswith("/approvals")


# The app through the proxy ---------------------------------------------------------------------


def test_app_loads_and_signs_in_through_the_proxy_over_its_websocket(
    proxy: Proxy, browser: Browser
) -> None:
    # GIVEN chromium opening the app through nginx over https
    context = browser.new_context(
        ignore_https_errors=True, viewport={"width": 1400, "height": 1000}
    )
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    try:
        # WHEN the page loads
        page.goto(proxy.url)
        # THEN the sign-in form appears (drawn over the WebSocket, through the proxy)
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        assert any(url.endswith("/_stcore/stream") and url.startswith("wss://") for url in sockets)
        # AND carol signs in: the cookie component's same-origin iframe is allowed
        signed_in = page.get_by_test_id("stSidebar").get_by_text("Signed in as carol")
        for _ in range(3):
            page.get_by_role("textbox", name="Username").fill("carol")
            page.get_by_role("textbox", name="Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            try:
                expect(signed_in).to_be_visible(timeout=5_000)
                break
            except AssertionError:
                if signed_in.is_visible():
                    break
        expect(signed_in).to_be_visible()
        page.wait_for_function(f"document.cookie.includes('{COOKIE}=')", timeout=UI_TIMEOUT_MS)
    finally:
        context.close()
