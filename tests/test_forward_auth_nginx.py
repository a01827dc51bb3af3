"""The real nginx, with auth_request in front of a small upstream, asking a real tokensmith serve."""

import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET_KEY, require
from tests.servers import ServerProcess, free_port, server_env, wait_for_http
from tokensmith import secrets
from tokensmith.accounts.service import AccountService
from tokensmith.clock import FrozenClock, SystemClock
from tokensmith.db.database import Database
from tokensmith.tokens.service import TokenService

pytestmark = pytest.mark.nginx
NGINX = "/usr/sbin/nginx"

NGINX_CONF = """
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
  server {{
    listen 127.0.0.1:{port};
    location = /_tokensmith {{
      internal;
      proxy_pass http://127.0.0.1:{tokensmith_port}/v1/auth/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
    location / {{
      auth_request /_tokensmith;
      auth_request_set $tokensmith_user $upstream_http_x_auth_request_user;
      auth_request_set $tokensmith_token $upstream_http_x_tokensmith_token_id;
      auth_request_set $tokensmith_retry_after $upstream_http_retry_after;
      add_header Retry-After $tokensmith_retry_after always;
      proxy_set_header X-Auth-Request-User $tokensmith_user;
      proxy_set_header X-Tokensmith-Token-Id $tokensmith_token;
      proxy_set_header Authorization "";
      proxy_pass http://127.0.0.1:{upstream_port};
    }}
  }}
}}
"""


class Upstream(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        Upstream.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b"upstream ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


@contextmanager
def running_stack(root: Path, **server_settings: str) -> Iterator[dict]:
    """tokensmith serve (with ``server_settings`` as environment), an upstream, and nginx in front."""
    data = root / "data"
    server = ServerProcess(data, free_port(), server_env(data, TOKENSMITH_SECRET_KEY=SECRET_KEY.decode(),
                                                         **server_settings)).start()
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    prefix = root / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, tokensmith_port=server.port,
                                      upstream_port=upstream.server_address[1]))
    nginx = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(prefix)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", process=nginx)
        yield {"url": f"http://127.0.0.1:{port}", "server": server}
    finally:
        nginx.terminate()
        nginx.wait(10)
        upstream.shutdown()
        server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require(shutil.which(NGINX) is not None, "the nginx test needs Debian's nginx package")
    with running_stack(tmp_path_factory.mktemp("nginx-stack")) as running:
        yield running


def make_token(server: ServerProcess, username: str, clock=None, expiration: str = "1d") -> tuple[str, str]:
    clock = clock or SystemClock()
    database = Database(f"sqlite:///{server.data_dir / 'tokensmith.db'}")
    try:
        with database.session() as session:
            accounts = AccountService(session, clock)
            user = accounts.find_user(username) or accounts.create_user(
                accounts.get_or_create_org("default"), username, None)
            created = TokenService(session, clock, SECRET_KEY).create(user, "proxied", expiration=expiration)
            return created.secret, created.token.public_id
    finally:
        database.dispose()


def get(stack, secret: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.get(f"{stack['url']}/dashboard", headers=headers, timeout=10)


def test_a_valid_token_passes_and_the_upstream_sees_the_user(stack):
    secret, token_id = make_token(stack["server"], "grafana-viewer")
    Upstream.seen.clear()
    response = get(stack, secret)
    assert response.status_code == 200
    assert response.text == "upstream ok"
    assert Upstream.seen[-1]["x-auth-request-user"] == "grafana-viewer"
    assert Upstream.seen[-1]["x-tokensmith-token-id"] == token_id
    assert "authorization" not in Upstream.seen[-1]


def test_a_missing_token_gets_401(stack):
    assert get(stack).status_code == 401


def test_a_bad_token_gets_401(stack):
    assert get(stack, "tsm_not-a-token").status_code == 401
    assert get(stack, secrets.generate()).status_code == 401


def test_an_expired_token_gets_401(stack):
    two_hours_ago = FrozenClock(datetime.now(UTC) - timedelta(hours=2))
    secret, _ = make_token(stack["server"], "expired-user", clock=two_hours_ago, expiration="1h")
    assert get(stack, secret).status_code == 401


def test_a_deleted_token_gets_401(stack):
    secret, token_id = make_token(stack["server"], "leaving-user")
    assert get(stack, secret).status_code == 200
    deleted = httpx.delete(f"{stack['server'].url}/v1/tokens/{token_id}",
                           headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert deleted.status_code == 204
    assert get(stack, secret).status_code == 401


# --- brute force behind nginx: one client's flood, another client passes --------------------------

FLOOD_LIMIT = 5


@pytest.fixture(scope="module")
def limited_stack(tmp_path_factory):
    """nginx is the trusted proxy and forwards each client's address; a small per-client limit."""
    require(shutil.which(NGINX) is not None, "the nginx test needs Debian's nginx package")
    with running_stack(tmp_path_factory.mktemp("nginx-limited"), TOKENSMITH_TRUSTED_PROXIES="127.0.0.1/32",
                       TOKENSMITH_AUTH_FAILURES_PER_IP=str(FLOOD_LIMIT)) as running:
        yield running


def get_from(stack, source_address: str, secret: str) -> httpx.Response:
    """A request from another loopback address: to nginx, a different client."""
    transport = httpx.HTTPTransport(local_address=source_address)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(f"{stack['url']}/dashboard", headers={"Authorization": f"Bearer {secret}"})


def test_behind_nginx_a_flooding_client_is_refused_with_403_and_retry_after_never_500(limited_stack):
    statuses = [get_from(limited_stack, "127.0.0.2", secrets.generate()).status_code for _ in range(FLOOD_LIMIT)]
    assert statuses == [401] * FLOOD_LIMIT
    refused = get_from(limited_stack, "127.0.0.2", secrets.generate())
    assert refused.status_code == 403
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_behind_nginx_another_client_with_a_valid_token_passes_during_the_flood(limited_stack):
    secret, _ = make_token(limited_stack["server"], "bystander")
    for _ in range(FLOOD_LIMIT + 2):
        assert get_from(limited_stack, "127.0.0.4", secrets.generate()).status_code in (401, 403)
    passed = get_from(limited_stack, "127.0.0.5", secret)
    assert passed.status_code == 200 and passed.text == "upstream ok"
    # The flooding address keeps a token the cache knows as valid (one bad pod behind a NAT must not
    # lock out the others); anything the cache cannot vouch for stays refused there.
    assert get_from(limited_stack, "127.0.0.4", secret).status_code == 200
    assert get_from(limited_stack, "127.0.0.4", secrets.generate()).status_code == 403
