"""End to end: a real tokensmith server, an HTTPS stand-in for a cluster's API server that
authenticates bearer tokens through tokensmith's TokenReview webhook (as kube-apiserver's webhook
authenticator does), and the real kubectl, kubernetes Python client and tokensmith CLI."""

import base64
import json
import os
import ssl
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from tests.kubetools import kubectl_binary
from tests.pki import make_pki
from tests.servers import ServerProcess, admin_password, free_port, server_env
from tokensmith import secrets
from tokensmith.kube import webhooks

VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "0" * 40, "gitTreeState": "clean",
           "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.3", "compiler": "gc", "platform": "linux/amd64"}
ISSUER = "https://kubernetes.default.svc.cluster.local"
PUBLIC_URL = "https://tokensmith.example.com"


class StubApiServer:
    """Does what kube-apiserver's webhook token authenticator does, then serves /version if authenticated.

    It reads its webhook kubeconfig (the one ``webhook-config`` printed): the TokenReview goes to
    ``clusters[0].cluster.server`` with ``users[0].user.token`` as bearer, asking for the API
    server's audiences (the service-account issuer and its own URL, as --api-audiences would).
    """

    def __init__(self, directory: Path) -> None:
        pki = make_pki()
        self.ca_pem = pki.ca_pem
        cert, key = pki.write_server_files(directory)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                stub.handle(self)

            do_POST = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.webhook: dict | None = None
        self.reviews: list[dict] = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> "StubApiServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def authenticate(self, token: str) -> dict | None:
        """The TokenReview round trip; None unless tokensmith says authenticated (fail closed)."""
        assert self.webhook is not None
        endpoint = self.webhook["clusters"][0]["cluster"]["server"]
        credential = self.webhook["users"][0]["user"]["token"]
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                  "spec": {"token": token, "audiences": [ISSUER, self.url]}}
        try:
            response = httpx.post(endpoint, json=review, headers={"Authorization": f"Bearer {credential}"},
                                  timeout=10)
        except httpx.HTTPError:
            return None
        self.reviews.append({"code": response.status_code, "body": response.text})
        if response.status_code != 200:
            return None
        status = response.json().get("status", {})
        if status.get("authenticated") is not True:
            return None
        if status.get("audiences") and self.url not in status["audiences"]:
            return None
        return status["user"]

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        header = request.headers.get("Authorization", "")
        user = self.authenticate(header[7:]) if header.startswith("Bearer ") else None
        if user is None:
            self.reply(request, 401, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        elif request.path.split("?")[0].rstrip("/") == "/version":
            self.reply(request, 200, VERSION)
        else:
            self.reply(request, 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})

    @staticmethod
    def reply(request: BaseHTTPRequestHandler, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        request.send_response(code)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One tokensmith server for the module: starting one costs seconds."""
    data = tmp_path_factory.mktemp("kube-e2e") / "data"
    proc = ServerProcess(data, free_port(), server_env(data))
    yield proc.start()
    proc.stop()


@pytest.fixture(scope="module")
def admin_secret(server):
    password = admin_password(server.url, server.data_dir)
    response = httpx.post(f"{server.url}/v1/auth/token", json={"username": "admin", "password": password,
                                                               "name": "e2e"})
    assert response.status_code == 201, response.text
    return response.json()["secret"]


def api(server, secret, method, path, **kwargs):
    return httpx.request(method, f"{server.url}{path}", headers={"Authorization": f"Bearer {secret}"}, timeout=30,
                         **kwargs)


def run_cli(server, *args, input=None, env=None, check=True):
    result = subprocess.run([sys.executable, "-m", "tokensmith", *args], input=input, capture_output=True, text=True,
                            timeout=60, env={**server.env, **(env or {})})
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def stub(server, admin_secret, tmp_path_factory):
    """The cluster 'kind' registered with the stub's URL and CA; the stub set up from webhook-config."""
    stub = StubApiServer(tmp_path_factory.mktemp("stub")).start()
    created = api(server, admin_secret, "POST", "/v1/clusters", json={
        "name": "kind", "server": stub.url, "certificate_authority": stub.ca_pem, "region": "local"})
    assert created.status_code == 201, created.text
    api(server, admin_secret, "POST", "/v1/clusters", json={
        "name": "elsewhere", "server": "https://127.0.0.1:1", "certificate_authority": stub.ca_pem,
        "region": "local"})
    # What webhook-config prints is https-only (tests/test_kube_real.py runs it against a real API
    # server); this stand-in reaches the module's plain-http server with a credential minted by the API.
    printed = run_cli(server, "admin", "cluster", "webhook-config", "kind", "--url", PUBLIC_URL).stdout
    stub.printed = printed
    stub.cluster_id = created.json()["id"]
    minted = api(server, admin_secret, "POST", "/v1/clusters/kind/webhook-credentials").json()
    stub.webhook = webhooks.webhook_kubeconfig(f"{server.url}{minted['tokenreview_path']}", minted["secret"])
    yield stub
    stub.stop()


def create(server, secret, **body):
    response = api(server, secret, "POST", "/v1/tokens", json={"name": "laptop", **body})
    assert response.status_code == 201, response.text
    return response.json()


def write_kubeconfig(tmp_path, created) -> Path:
    path = tmp_path / created["kubeconfig_filename"]
    path.write_text(created["kubeconfig"])
    path.chmod(0o600)
    return path


def kubectl_version(path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([kubectl_binary(), "--kubeconfig", str(path), "get", "--raw", "/version"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECACHEDIR": str(tmp_path / "cache")})


# --- webhook-config ---------------------------------------------------------------------------------


def test_webhook_config_prints_the_kubeconfig_and_the_apiserver_flags(stub, server):
    webhook = yaml.safe_load(stub.printed)
    assert webhook["clusters"][0]["cluster"]["server"] == f"{PUBLIC_URL}/v1/clusters/{stub.cluster_id}/tokenreview"
    assert secrets.is_well_formed(webhook["users"][0]["user"]["token"], secrets.WEBHOOK_PREFIX)
    for flag in ("--authentication-token-webhook-config-file=", "--authentication-token-webhook-version=v1",
                 "--authentication-token-webhook-cache-ttl=10s"):
        assert flag in stub.printed


def test_webhook_config_refuses_a_plain_http_url_and_says_why(server, stub):
    result = run_cli(server, "admin", "cluster", "webhook-config", "kind", "--url", server.url, check=False)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "sends the webhook credential only over https" in message
    assert "tokensmith serve --tls-cert FILE --tls-key FILE" in message
    assert "tsw_" not in result.stdout + result.stderr  # nothing was minted


def test_webhook_config_embeds_the_certificate_authority_it_is_given(server, stub, tmp_path):
    ca_file = tmp_path / "tokensmith-ca.pem"
    ca_file.write_text(stub.ca_pem)
    printed = run_cli(server, "admin", "cluster", "webhook-config", "kind", "--url", PUBLIC_URL,
                      "--certificate-authority", str(ca_file)).stdout
    embedded = yaml.safe_load(printed)["clusters"][0]["cluster"]["certificate-authority-data"]
    assert base64.b64decode(embedded).decode() == stub.ca_pem
    assert "No CA embedded" not in printed


def test_webhook_config_shows_the_user_name_prefix_and_the_level_groups(stub):
    assert "User names: tokensmith:<tokensmith user name>" in stub.printed
    assert "tokensmith:view, tokensmith:edit, tokensmith:admin, tokensmith:cluster-admin" in stub.printed


def test_webhook_config_with_authz_prints_the_authorization_webhook(server, stub):
    printed = run_cli(server, "admin", "cluster", "webhook-config", "kind", "--url", PUBLIC_URL, "--authz").stdout
    config = yaml.safe_load(printed)
    endpoint = config["clusters"][0]["cluster"]["server"]
    assert endpoint == f"{PUBLIC_URL}/v1/clusters/{stub.cluster_id}/subjectaccessreview"
    for flag in ("--authorization-mode=Node,Webhook,RBAC", "--authorization-webhook-version=v1",
                 "--authorization-webhook-config-file=/etc/kubernetes/tokensmith-authz-webhook.yaml"):
        assert flag in printed


def test_rbac_prints_a_binding_per_level_to_the_built_in_role(server, stub):
    documents = list(yaml.safe_load_all(run_cli(server, "admin", "cluster", "rbac", "kind").stdout))
    assert [(d["kind"], d["roleRef"]["name"], d["subjects"][0]["name"]) for d in documents] == [
        ("ClusterRoleBinding", level, f"tokensmith:{level}") for level in ("view", "edit", "admin", "cluster-admin")]


def test_webhook_config_for_an_unknown_cluster_fails_clearly(server, stub):
    result = run_cli(server, "admin", "cluster", "webhook-config", "nope", "--url", PUBLIC_URL, check=False)
    assert result.returncode == 1
    assert "cluster 'nope' not found" in result.stderr


# --- kubectl against the stub -------------------------------------------------------------------------


def test_kubectl_works_with_the_kubeconfig_from_creation_until_the_token_is_deleted(
        server, admin_secret, stub, tmp_path):
    created = create(server, admin_secret, clusters=["kind"], kubeconfig=True)
    path = write_kubeconfig(tmp_path, created)
    result = kubectl_version(path, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["gitVersion"] == "v1.32.0"
    assert api(server, admin_secret, "DELETE", f"/v1/tokens/{created['token']['id']}").status_code == 204
    result = kubectl_version(path, tmp_path)
    assert result.returncode == 1
    assert "Unauthorized" in result.stderr


def test_kubectl_reads_the_kubeconfig_from_the_create_response(server, admin_secret, stub, tmp_path):
    created = create(server, admin_secret, clusters=["kind", "elsewhere"], kubeconfig=True)
    path = write_kubeconfig(tmp_path, created)

    def config(*args: str) -> str:
        result = subprocess.run([kubectl_binary(), "--kubeconfig", str(path), "config", *args], capture_output=True,
                                text=True, timeout=60, env={**os.environ, "KUBECACHEDIR": str(tmp_path / "cache")})
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert config("view", "--raw", "-o", "jsonpath={.users[0].user.token}") == created["secret"]
    assert sorted(config("get-contexts", "-o", "name").split()) == ["tokensmith-default-elsewhere",
                                                                   "tokensmith-default-kind"]
    assert config("current-context").strip() == "tokensmith-default-kind"
    config("use-context", "tokensmith-default-elsewhere")
    assert config("current-context").strip() == "tokensmith-default-elsewhere"


def test_the_reviewed_user_is_the_tokensmith_user(server, admin_secret, stub, tmp_path):
    created = create(server, admin_secret, clusters=["kind"], kubeconfig=True)
    assert kubectl_version(write_kubeconfig(tmp_path, created), tmp_path).returncode == 0
    user = json.loads(stub.reviews[-1]["body"])["status"]["user"]
    assert user["username"] == "tokensmith:admin"
    assert user["groups"] == ["tokensmith:org:default", "tokensmith:admins", "tokensmith:view", "system:authenticated"]
    assert user["extra"]["tokensmith.io/token-id"] == [created["token"]["id"]]


def test_a_token_not_granting_the_cluster_fails(server, admin_secret, stub, tmp_path):
    other = create(server, admin_secret, clusters=["elsewhere"])
    built = run_cli(server, "kubeconfig", "--cluster", "kind", input=other["secret"] + "\n",
                    env={"TOKENSMITH_URL": server.url, "TOKENSMITH_TOKEN": admin_secret})
    assert "does not grant cluster kind" in built.stderr
    path = tmp_path / "other.yaml"
    path.write_text(built.stdout)
    result = kubectl_version(path, tmp_path)
    assert result.returncode == 1 and "Unauthorized" in result.stderr
    assert json.loads(stub.reviews[-1]["body"])["status"]["error"] == "token does not grant this cluster"


def test_an_expired_token_fails(server, admin_secret, stub, tmp_path):
    expires_at = datetime.now(UTC) + timedelta(seconds=3)
    created = create(server, admin_secret, clusters=["kind"], kubeconfig=True, expires_at=expires_at.isoformat())
    path = write_kubeconfig(tmp_path, created)
    before = httpx.get(f"{stub.url}/version", verify=ssl.create_default_context(cadata=stub.ca_pem),
                       headers={"Authorization": f"Bearer {created['secret']}"}, timeout=10)
    if datetime.now(UTC) < expires_at:  # on a very slow machine the token may already be gone
        assert before.status_code == 200
    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.2)
    result = kubectl_version(path, tmp_path)
    assert result.returncode == 1 and "Unauthorized" in result.stderr
    assert json.loads(stub.reviews[-1]["body"])["status"]["error"] == "token expired"


def test_a_revoked_webhook_credential_locks_the_api_server_out(server, admin_secret, stub, tmp_path):
    created = create(server, admin_secret, clusters=["kind"], kubeconfig=True)
    path = write_kubeconfig(tmp_path, created)
    spare = api(server, admin_secret, "POST", "/v1/clusters/kind/webhook-credentials").json()
    original = stub.webhook
    stub.webhook = {**original, "users": [{"name": "kube-apiserver", "user": {"token": spare["secret"]}}]}
    try:
        assert kubectl_version(path, tmp_path).returncode == 0
        gone = api(server, admin_secret, "DELETE", f"/v1/clusters/kind/webhook-credentials/{spare['credential']['id']}")
        assert gone.status_code == 204
        assert kubectl_version(path, tmp_path).returncode == 1
        assert stub.reviews[-1]["code"] == 401
    finally:
        stub.webhook = original
    assert kubectl_version(path, tmp_path).returncode == 0


# --- the kubernetes Python client ----------------------------------------------------------------------


def test_the_kubernetes_python_client_loads_the_kubeconfig_and_calls_the_api_server(
        server, admin_secret, stub, tmp_path):
    from kubernetes import client, config

    created = create(server, admin_secret, clusters=["kind", "elsewhere"], kubeconfig=True)
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(write_kubeconfig(tmp_path, created)),
                            client_configuration=configuration)
    assert configuration.host == stub.url
    assert configuration.api_key == {"BearerToken": f"Bearer {created['secret']}"}
    with client.ApiClient(configuration) as api_client:
        assert client.VersionApi(api_client).get_code().git_version == "v1.32.0"
    api(server, admin_secret, "DELETE", f"/v1/tokens/{created['token']['id']}")
    with client.ApiClient(configuration) as api_client, pytest.raises(client.exceptions.ApiException) as refused:
        client.VersionApi(api_client).get_code()
    assert refused.value.status == 401


# --- the CLI: build, merge and check client-side --------------------------------------------------------


@pytest.fixture
def cli_env(server, admin_secret, tmp_path):
    return {"TOKENSMITH_URL": server.url, "TOKENSMITH_TOKEN": admin_secret,
            "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}


def test_cli_builds_a_kubeconfig_from_a_secret_file_that_kubectl_uses(server, admin_secret, stub, tmp_path, cli_env):
    created = create(server, admin_secret, clusters=["kind"])
    secret_file = tmp_path / "secret"
    secret_file.write_text(created["secret"] + "\n")
    out = tmp_path / "built.yaml"
    run_cli(server, "kubeconfig", "--cluster", "kind", "--token-file", str(secret_file), "-o", str(out), env=cli_env)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert kubectl_version(out, tmp_path).returncode == 0


def test_cli_merges_into_kubeconfigs_first_file_keeping_the_rest(server, admin_secret, stub, tmp_path, cli_env):
    existing = tmp_path / "config"
    existing.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "home",
        "clusters": [{"name": "home", "cluster": {"server": "https://192.168.1.10:6443"}}],
        "users": [{"name": "me", "user": {"token": "other-token"}}],
        "contexts": [{"name": "home", "context": {"cluster": "home", "user": "me"}}]}))
    existing.chmod(0o600)
    created = create(server, admin_secret, clusters=["kind"])
    env = {**cli_env, "KUBECONFIG": f"{existing}:{tmp_path / 'second'}"}
    for _ in range(2):
        run_cli(server, "kubeconfig", "--cluster", "kind", "--merge", input=created["secret"], env=env)
    merged = yaml.safe_load(existing.read_text())
    assert merged["current-context"] == "home"
    assert [c["name"] for c in merged["contexts"]] == ["home", "tokensmith-default-kind"]
    assert [u["name"] for u in merged["users"]] == ["me", f"tokensmith-default-{created['token']['id']}"]
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("config.*.bak"))  # removed once each merge was verified
    run_cli(server, "kubeconfig", "--cluster", "kind", "--merge", "--backup", input=created["secret"], env=env)
    [kept] = tmp_path.glob("config.*.bak")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    result = subprocess.run([kubectl_binary(), "--kubeconfig", str(existing), "--context", "tokensmith-default-kind",
                             "get", "--raw", "/version"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "KUBECACHEDIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr


def test_cli_merge_into_garbage_fails_clearly_and_leaves_it(server, admin_secret, stub, tmp_path, cli_env):
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("clusters: [unclosed\n")
    created = create(server, admin_secret, clusters=["kind"])
    result = run_cli(server, "kubeconfig", "--cluster", "kind", "--merge", str(garbage), input=created["secret"],
                     env=cli_env, check=False)
    assert result.returncode == 1
    assert "not valid YAML" in result.stderr and "left untouched" in result.stderr
    assert garbage.read_text() == "clusters: [unclosed\n"
    assert created["secret"] not in result.stderr + result.stdout


def test_cli_refuses_what_is_not_a_secret(server, stub, cli_env):
    result = run_cli(server, "kubeconfig", "--cluster", "kind", input="hunter2\n", env=cli_env, check=False)
    assert result.returncode == 2
    assert "not a tokensmith token secret" in result.stderr


def test_cli_refuses_a_deleted_secret(server, admin_secret, stub, cli_env):
    created = create(server, admin_secret, clusters=["kind"])
    api(server, admin_secret, "DELETE", f"/v1/tokens/{created['token']['id']}")
    result = run_cli(server, "kubeconfig", "--cluster", "kind", input=created["secret"], env=cli_env, check=False)
    assert result.returncode == 3
    assert "refused that secret" in result.stderr and created["secret"] not in result.stderr


def test_cli_check_reads_every_file_in_kubeconfig_as_kubectl_does(server, admin_secret, stub, tmp_path, cli_env):
    fresh, dead = create(server, admin_secret, clusters=["kind"]), create(server, admin_secret, clusters=["kind"])
    first, second = tmp_path / "first", tmp_path / "second"
    for token, path in ((fresh, first), (dead, second)):
        run_cli(server, "kubeconfig", "--cluster", "kind", "-o", str(path), input=token["secret"], env=cli_env)
    api(server, admin_secret, "DELETE", f"/v1/tokens/{dead['token']['id']}")
    env = {**cli_env, "KUBECONFIG": f"{first}:{tmp_path / 'missing'}:{second}"}
    result = run_cli(server, "kubeconfig", "check", env=env, check=False)
    assert result.returncode == 1
    assert f"{second}: user" in result.stdout and "revoked or unknown" in result.stdout
    assert str(first) not in result.stdout


def test_cli_check_reports_loose_permissions_and_dead_or_expiring_tokens(server, admin_secret, stub, tmp_path,
                                                                         cli_env):
    soon = create(server, admin_secret, clusters=["kind"], expiration="3d")
    dead = create(server, admin_secret, clusters=["elsewhere"])
    path = tmp_path / "k"
    for token in (soon, dead):
        cluster = "kind" if token is soon else "elsewhere"
        run_cli(server, "kubeconfig", "--cluster", cluster, "--merge", str(path), input=token["secret"], env=cli_env)
    api(server, admin_secret, "DELETE", f"/v1/tokens/{dead['token']['id']}")
    path.chmod(0o644)
    result = run_cli(server, "kubeconfig", "check", str(path), env=cli_env, check=False)
    assert result.returncode == 1
    assert "mode 0644" in result.stdout
    assert "expires within 7 days" in result.stdout and soon["token"]["id"] in result.stdout
    assert "revoked or unknown" in result.stdout
    path.chmod(0o600)
    api(server, admin_secret, "DELETE", f"/v1/tokens/{soon['token']['id']}")
    fresh = create(server, admin_secret, clusters=["kind"])
    clean = tmp_path / "clean"
    run_cli(server, "kubeconfig", "--cluster", "kind", "-o", str(clean), input=fresh["secret"], env=cli_env)
    result = run_cli(server, "kubeconfig", "check", str(clean), env=cli_env)
    assert "no problems found" in result.stdout
