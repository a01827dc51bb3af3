"""A real kube-apiserver's service-account token, exchanged for a tokensmith token (inline JWKS).

``kubectl create token`` mints a projected service-account JWT signed by the API server's key; a
trust policy holding the server's JWKS inline (as for an air-gapped cluster, taken with
``kubectl get --raw /openid/v1/jwks``) turns it into a short-lived token of a service account.

The API server helper here is deliberately small (etcd + kube-apiserver, one start for the module,
see ../shared/kube/README.md); the kube branch brings a session-wide fixture: dedupe on merge.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import lzma
import os
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import LOOPBACK_NETWORKS, require
from tests.servers import admin_password, free_port
from tokensmith.config import Settings
from tokensmith.net.outbound import parse_networks

SHARED = Path(__file__).resolve().parents[2] / "shared" / "kube"
APISERVER_XZ = "kube-apiserver-v1.28.7-linux-amd64.xz"
ETCD = "/usr/bin/etcd"
KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.28"
SA_ISSUER = "https://kubernetes.default.svc"
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def _binaries() -> tuple[Path, str]:
    source = next((d / APISERVER_XZ for d in (SHARED, Path("/work/shared/kube")) if (d / APISERVER_XZ).exists()),
                  None)
    kubectl = KUBECTL if os.access(KUBECTL, os.X_OK) else shutil.which("kubectl")
    require(source is not None, f"the kube-apiserver binary ({APISERVER_XZ}) from ../shared/kube")
    require(os.access(ETCD, os.X_OK), "etcd (apt-get install etcd-server)")
    require(kubectl is not None, "kubectl")
    assert source is not None and kubectl is not None
    return source, kubectl


def _cert(subject: str, key, issuer: x509.Name, issuer_key, *, org: str | None = None, ca: bool = False,
          server: bool = False) -> x509.Certificate:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, subject)]
    if org:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    now = datetime.datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name(attributes)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    path.chmod(0o600)
    return str(path)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """(kubectl binary, admin kubeconfig) of a running API server; stopped after the module."""
    source, kubectl = _binaries()
    root = tmp_path_factory.mktemp("kube")
    binary = root / "kube-apiserver"
    binary.write_bytes(lzma.decompress(source.read_bytes()))
    binary.chmod(0o755)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    ca = _cert("test-ca", ca_key, ca_name, ca_key, ca=True)
    server_key, admin_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca": _write(root / "ca.crt", _cert_pem(ca)),
        "server_crt": _write(root / "server.crt", _cert_pem(_cert("127.0.0.1", server_key, ca_name, ca_key,
                                                                  server=True))),
        "server_key": _write(root / "server.key", _key_pem(server_key)),
        "sa_key": _write(root / "sa.key", _key_pem(sa_key)),
        "sa_pub": _write(root / "sa.pub", sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)),
    }
    admin_crt = _cert_pem(_cert("admin", admin_key, ca_name, ca_key, org="system:masters"))
    etcd_port, etcd_peer, port = free_port(), free_port(), free_port()
    logs = (root / "etcd.log").open("wb"), (root / "apiserver.log").open("wb")
    etcd = subprocess.Popen([ETCD, "--data-dir", str(root / "etcd"), "--listen-client-urls",
                             f"http://127.0.0.1:{etcd_port}", "--advertise-client-urls",
                             f"http://127.0.0.1:{etcd_port}", "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                             "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}"],
                            stdout=logs[0], stderr=subprocess.STDOUT)
    server = subprocess.Popen([
        str(binary), "--bind-address=127.0.0.1", f"--secure-port={port}", "--advertise-address=127.0.0.1",
        f"--etcd-servers=http://127.0.0.1:{etcd_port}", f"--tls-cert-file={files['server_crt']}",
        f"--tls-private-key-file={files['server_key']}", f"--client-ca-file={files['ca']}",
        f"--service-account-issuer={SA_ISSUER}", f"--service-account-key-file={files['sa_pub']}",
        f"--service-account-signing-key-file={files['sa_key']}", "--service-cluster-ip-range=10.0.0.0/24",
        "--endpoint-reconciler-type=none", "--authorization-mode=RBAC",
        f"--api-audiences={SA_ISSUER},tokensmith",
    ], stdout=logs[1], stderr=subprocess.STDOUT)
    kubeconfig = root / "admin.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "admin",
        "clusters": [{"name": "test", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                  "certificate-authority": files["ca"]}}],
        "users": [{"name": "admin", "user": {"client-certificate": _write(root / "admin.crt", admin_crt),
                                             "client-key": _write(root / "admin.key", _key_pem(admin_key))}}],
        "contexts": [{"name": "admin", "context": {"cluster": "test", "user": "admin"}}],
    }))
    try:
        deadline = time.monotonic() + 90
        tls = ssl.create_default_context(cafile=files["ca"])
        tls.load_cert_chain(str(root / "admin.crt"), str(root / "admin.key"))
        with httpx.Client(verify=tls) as probe:
            while True:
                assert server.poll() is None, (root / "apiserver.log").read_text()[-3000:]
                try:
                    if probe.get(f"https://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "kube-apiserver did not become ready"
                time.sleep(0.3)
        yield kubectl, kubeconfig
    finally:
        for process in (server, etcd):
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


def kubectl(apiserver: tuple[str, Path], *args: str) -> str:
    binary, kubeconfig = apiserver
    done = subprocess.run([binary, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "KUBECACHEDIR": str(kubeconfig.parent / "cache")})
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def settings(tmp_path: Path, database) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database.url,
                    webhook_allowed_networks=parse_networks(LOOPBACK_NETWORKS))


@pytest.mark.kubectl
def test_kubectl_create_token_is_exchanged_for_a_tokensmith_token_with_the_jwks_inline(
        apiserver, client, admin, clock):
    clock.set(datetime.datetime.now(UTC))  # the API server signs with the real time
    name = f"deployer-{uuid.uuid4().hex[:6]}"  # the API server outlives one test (SQLite, then PostgreSQL)
    kubectl(apiserver, "create", "serviceaccount", name, "--namespace", "default")
    jwks = json.loads(kubectl(apiserver, "get", "--raw", "/openid/v1/jwks"))
    issuer = json.loads(kubectl(apiserver, "get", "--raw", "/.well-known/openid-configuration"))["issuer"]
    assert issuer == SA_ISSUER
    assert client.post("/v1/service-accounts", json={"name": "k8s-deployer"}, headers=admin.headers).is_success
    policy = client.post("/v1/trust-policies", headers=admin.headers, json={
        "name": "cluster-deployer", "service_account": "k8s-deployer", "issuer": issuer, "jwks": jwks,
        "audience": "tokensmith", "subject": "system:serviceaccount:default:*",
        "conditions": {"/kubernetes.io/namespace": "default", "/kubernetes.io/serviceaccount/name": "deployer-*"},
        "scopes": ["tokens:read"]})
    assert policy.status_code == 201, policy.text
    token = kubectl(apiserver, "create", "token", name, "--namespace", "default", "--audience", "tokensmith",
                    "--duration", "10m").strip()
    answer = client.post("/v1/oauth2/token", data={"grant_type": GRANT, "subject_token": token,
                                                   "subject_token_type": JWT_TYPE})
    assert answer.status_code == 200, answer.text
    who = client.get("/v1/whoami", headers={"Authorization": f"Bearer {answer.json()['access_token']}"}).json()
    assert who["user"]["username"] == "k8s-deployer"
    assert who["token"]["federated"]["subject"] == f"system:serviceaccount:default:{name}"
    other = kubectl(apiserver, "create", "token", name, "--namespace", "default", "--audience",
                    SA_ISSUER).strip()  # the cluster's own audience, not tokensmith's
    refused = client.post("/v1/oauth2/token", data={"grant_type": GRANT, "subject_token": other,
                                                    "subject_token_type": JWT_TYPE})
    assert refused.status_code == 400 and refused.json()["error_description"].startswith("audience")


@pytest.mark.kubectl
def test_one_cli_command_registers_the_clusters_issuer_from_kubectl(apiserver, tmp_path):
    """``tokensmith trust-policy create --from-kubectl``: issuer and JWKS from the current context."""
    from tests.servers import ServerProcess, server_env

    data = tmp_path / "data"
    server = ServerProcess(data, free_port(), server_env(data)).start()
    try:
        binary, kubeconfig = apiserver
        bin_dir = tmp_path / "bin"  # `kubectl` on PATH: the version that matches this API server
        bin_dir.mkdir()
        (bin_dir / "kubectl").symlink_to(binary)
        env = {**server.env, "XDG_CONFIG_HOME": str(tmp_path / "config"), "KUBECONFIG": str(kubeconfig),
               "KUBECACHEDIR": str(tmp_path / "kube-cache"), "PATH": f"{bin_dir}:{os.environ['PATH']}"}

        def cli(*args: str, input: str | None = None) -> str:
            done = subprocess.run([sys.executable, "-m", "tokensmith", *args], env=env, input=input,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout

        password = admin_password(server.url, data)
        cli("login", "--url", server.url, "--username", "admin", input=password + "\n")
        cli("service-account", "create", "ci-runner")
        created = cli("trust-policy", "create", "cluster-ci", "--service-account", "ci-runner", "--from-kubectl",
                      "--audience", "tokensmith", "--subject", "system:serviceaccount:default:*",
                      "--scope", "tokens:read")
        assert "AWS_ROLE_ARN=arn:tokensmith:iam::default:role/cluster-ci" in created
        [policy] = json.loads(cli("trust-policy", "list", "--json"))
        assert policy["issuer"] == SA_ISSUER and policy["inline_jwks"] is True
        name = f"runner-{uuid.uuid4().hex[:6]}"
        kubectl(apiserver, "create", "serviceaccount", name, "--namespace", "default")
        token = kubectl(apiserver, "create", "token", name, "--namespace", "default", "--audience",
                        "tokensmith").strip()
        answer = httpx.post(f"{server.url}/v1/oauth2/token", data={"grant_type": GRANT, "subject_token": token,
                                                                    "subject_token_type": JWT_TYPE})
        assert answer.status_code == 200, answer.text
    finally:
        server.stop()
