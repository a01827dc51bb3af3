"""A kubeconfig that holds no secret, against a real Kubernetes API server.

A real kube-apiserver (v1.28.7 from ../shared/kube, on Debian's etcd) authenticates bearer tokens
through tokensmith's TokenReview webhook; tokensmith is served over TLS (the API server sends the
webhook credential only to https URLs). ``tokensmith kubeconfig --exec`` writes a kubeconfig whose
user runs ``tokensmith kube-credential``; the real kubectl uses it for ``auth whoami``, and the
access ends once the CLI's login is revoked (within the API server's webhook cache TTL).

The fixture here is local and small on purpose (no controller manager: only authentication is
exercised); it should be merged with the shared real API server fixture (tests/kubeapi.py on the
kube branch) once both are on main.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import lzma
import os
import shutil
import ssl
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import require
from tests.pki import make_pki
from tests.servers import admin_password, free_port, server_env

SHARED = Path(__file__).resolve().parents[2] / "shared" / "kube"
APISERVER_XZ = "kube-apiserver-v1.28.7-linux-amd64.xz"
ETCD = "/usr/bin/etcd"
KUBECTL_1_28 = "/usr/lib/google-cloud-sdk/bin/kubectl.1.28"
WEBHOOK_CACHE_TTL = 2  # seconds: how long the API server trusts a TokenReview answer
TOKENSMITH = str(Path(sys.executable).parent / "tokensmith")  # the installed CLI, as a person runs it


def _shared() -> Path:
    for candidate in (SHARED, Path("/work/shared/kube")):
        if (candidate / APISERVER_XZ).exists():
            return candidate
    return SHARED


def _kubectl() -> str | None:
    return KUBECTL_1_28 if os.access(KUBECTL_1_28, os.X_OK) else shutil.which("kubectl")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _apiserver_pki(directory: Path) -> str:
    """CA, serving certificate for 127.0.0.1 and the service-account key pair; returns the CA PEM."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def certificate(subject, public_key, *, ca: bool):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(_name("kube-test-ca"))
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    ca_pem = certificate(_name("kube-test-ca"), ca_key.public_key(), ca=True)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {"ca.crt": ca_pem, "apiserver.crt": certificate(_name("kube-apiserver"), key.public_key(), ca=False),
             "apiserver.key": _pem_key(key), "sa.key": _pem_key(sa_key),
             "sa.pub": sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)}
    for name, data in files.items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o600)
    return ca_pem.decode()


@dataclass
class World:
    directory: Path
    apiserver_url: str
    env: dict[str, str]  # the CLI's (and kubectl's) environment: its own config, cache and trusted CA

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([TOKENSMITH, *args], env=self.env, capture_output=True, text=True, timeout=60,
                                input=input)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def kubectl(self, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
        binary = _kubectl()
        assert binary is not None
        return subprocess.run([binary, "--kubeconfig", str(kubeconfig), *args], env=self.env, capture_output=True,
                              text=True, timeout=60)


def _wait(check, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n"
                               f"{log.read_text(errors='replace')[-3000:] if log else ''}")
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    raise TimeoutError(f"{what} not ready within {timeout} s:\n{tail}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require((_shared() / APISERVER_XZ).exists(), f"the kube-apiserver binary in {SHARED}")
    require(os.access(ETCD, os.X_OK), "etcd (apt-get install etcd-server)")
    require(_kubectl() is not None, "kubectl")
    require(os.access(TOKENSMITH, os.X_OK), f"the tokensmith CLI at {TOKENSMITH}")
    d = tmp_path_factory.mktemp("kube-exec")
    processes: list[subprocess.Popen] = []

    def spawn(name: str, args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
        log = d / f"{name}.log"
        process = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=d, env=env)
        processes.append(process)
        return process, log

    try:
        # tokensmith over TLS (uvicorn's own TLS options; `serve` has none on this branch).
        pki = make_pki()
        cert, key = pki.write_server_files(d)
        tokensmith_ca = d / "tokensmith-ca.pem"
        tokensmith_ca.write_text(pki.ca_pem)
        port = free_port()
        tokensmith_url = f"https://127.0.0.1:{port}"
        server, server_log = spawn("tokensmith", [
            sys.executable, "-m", "uvicorn", "tokensmith.server:build_app", "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--log-level", "warning",
        ], env=server_env(d / "data"))
        trusted = ssl.create_default_context(cafile=str(tokensmith_ca))
        _wait(lambda: httpx.get(f"{tokensmith_url}/healthz", verify=trusted, timeout=2).status_code == 200,
              90, "tokensmith", server, server_log)
        password = admin_password(tokensmith_url, d / "data", verify=trusted)

        env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENSMITH_", "KUBECONFIG"))}
        env.update({"TOKENSMITH_CONFIG": str(d / "cli" / "config.toml"), "XDG_CACHE_HOME": str(d / "cache"),
                    "SSL_CERT_FILE": str(tokensmith_ca), "KUBECACHEDIR": str(d / "kubectl-cache"),
                    "HOME": str(d / "home")})
        world = World(d, "", env)
        world.cli("login", "--url", tokensmith_url, "--username", "admin", input=password + "\n")

        # The cluster, registered before its API server starts (the webhook kubeconfig names it).
        apiserver_port = free_port()
        world.apiserver_url = f"https://127.0.0.1:{apiserver_port}"
        kube_ca = _apiserver_pki(d)
        login = tomllib.loads((d / "cli" / "config.toml").read_text())["token"]
        created = httpx.post(f"{tokensmith_url}/v1/clusters", verify=trusted,
                             headers={"Authorization": f"Bearer {login}"},
                             json={"name": "prod", "server": world.apiserver_url, "certificate_authority": kube_ca,
                                   "region": "local"})
        assert created.status_code == 201, created.text
        webhook = subprocess.run(
            [TOKENSMITH, "admin", "cluster", "webhook-config", "prod", "--url", tokensmith_url,
             "--certificate-authority", str(tokensmith_ca), "--config-path", str(d / "webhook.yaml")],
            env=server_env(d / "data"), capture_output=True, text=True, timeout=60)
        assert webhook.returncode == 0, webhook.stderr
        (d / "webhook.yaml").write_text(webhook.stdout)
        (d / "webhook.yaml").chmod(0o600)

        etcd_port, etcd_peer = free_port(), free_port()
        spawn("etcd", [ETCD, "--data-dir", str(d / "etcd"), "--name", "test",
                       "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                       "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                       "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                       "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                       "--initial-cluster", f"test=http://127.0.0.1:{etcd_peer}", "--unsafe-no-fsync"])
        binary = d / "kube-apiserver"
        with lzma.open(_shared() / APISERVER_XZ) as packed, binary.open("wb") as out:
            shutil.copyfileobj(packed, out, 1 << 20)
        binary.chmod(0o755)
        apiserver, apiserver_log = spawn("kube-apiserver", [
            str(binary), "--bind-address=127.0.0.1", f"--secure-port={apiserver_port}",
            "--advertise-address=127.0.0.1", f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--tls-cert-file={d / 'apiserver.crt'}", f"--tls-private-key-file={d / 'apiserver.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--endpoint-reconciler-type=none",
            "--authorization-mode=Node,RBAC", f"--authentication-token-webhook-config-file={d / 'webhook.yaml'}",
            "--authentication-token-webhook-version=v1",
            f"--authentication-token-webhook-cache-ttl={WEBHOOK_CACHE_TTL}s",
            f"--api-audiences=https://kubernetes.default.svc,{world.apiserver_url}",
            "--enable-priority-and-fairness=false", "--profiling=false",
        ])
        kube_trusted = ssl.create_default_context(cafile=str(d / "ca.crt"))
        _wait(lambda: httpx.get(f"{world.apiserver_url}/readyz", verify=kube_trusted, timeout=2).status_code
              == 200, 120, "kube-apiserver", apiserver, apiserver_log)
        yield world
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(processes):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def exec_kubeconfig(world: World) -> Path:
    path = world.directory / "exec-kubeconfig.yaml"
    world.cli("kubeconfig", "--exec", "--cluster", "prod", "-o", str(path))
    return path


def test_the_exec_kubeconfig_holds_no_secret(exec_kubeconfig: Path):
    text = exec_kubeconfig.read_text()
    document = yaml.safe_load(text)
    assert "tsm_" not in text
    assert all("token" not in user["user"] for user in document["users"])
    [user] = document["users"]
    assert user["user"]["exec"]["apiVersion"] == "client.authentication.k8s.io/v1"
    assert user["user"]["exec"]["args"] == ["kube-credential", "--cluster", "prod"]


def test_kube_credential_prints_an_exec_credential_and_caches_it_0600(world: World, exec_kubeconfig: Path):
    first = json.loads(world.cli("kube-credential", "--cluster", "prod").stdout)
    assert (first["apiVersion"], first["kind"]) == ("client.authentication.k8s.io/v1", "ExecCredential")
    assert first["status"]["token"].startswith("tsm_")
    expires = datetime.datetime.fromisoformat(first["status"]["expirationTimestamp"].replace("Z", "+00:00"))
    assert datetime.timedelta(minutes=50) < expires - datetime.datetime.now(datetime.UTC) <= datetime.timedelta(hours=1)
    again = json.loads(world.cli("kube-credential", "--cluster", "prod").stdout)
    assert again["status"]["token"] == first["status"]["token"]  # from the cache, not a new token
    [cached] = (world.directory / "cache" / "tokensmith" / "kube-credentials").iterdir()
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600
    assert stat.S_IMODE(cached.parent.stat().st_mode) == 0o700


def test_kubectl_auth_whoami_works_with_the_exec_kubeconfig_then_stops_after_the_login_is_revoked(
        world: World, exec_kubeconfig: Path):
    whoami = world.kubectl(exec_kubeconfig, "auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    # A new cluster names tokensmith's users with its default prefix (docs/kubernetes.md).
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == "tokensmith:admin"

    login = json.loads(world.cli("whoami", "--json").stdout)["token"]["id"]
    world.cli("token", "delete", login)
    deadline = time.monotonic() + WEBHOOK_CACHE_TTL + 20
    while True:
        after = world.kubectl(exec_kubeconfig, "auth", "whoami", "-o", "json")
        if after.returncode != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert after.returncode != 0, "kubectl still authenticated after the CLI login was revoked"
    assert "Unauthorized" in after.stderr or "must be logged in" in after.stderr, after.stderr
    shutil.rmtree(world.directory / "cache" / "tokensmith" / "kube-credentials")
    plugin = world.cli("kube-credential", "--cluster", "prod", check=False)
    assert plugin.returncode == 3  # no new credential from a revoked login either: sign in again
    assert "sign in again" in plugin.stderr
