"""A real Kubernetes API server (v1.28.7) on loopback for end-to-end tests.

Debian's etcd, the kube-apiserver from ../shared/kube (unpacked into a temporary directory), and a
kube-controller-manager running only the clusterrole-aggregation controller, so the built-in
``view``, ``edit`` and ``admin`` roles get their rules. A throwaway PKI: a CA, a serving
certificate for 127.0.0.1, an admin client certificate in ``system:masters`` and an RSA key for
service-account tokens. Start it once per test session: it costs a few seconds and ~300 MB.

``start_real_cluster`` wires one to a tokensmith server over TLS exactly as docs/kubernetes.md says
(authentication and authorization webhooks, the printed RBAC bindings): the session fixture
``real_kube`` in tests/conftest.py, shared by every module that needs a real API server (they carry
``xdist_group("kube-apiserver")`` so one worker runs them all on one API server).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import lzma
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.pki import make_pki
from tests.servers import ServerProcess, admin_password, free_port, server_env

SHARED = Path(os.environ.get("TOKENSMITH_KUBE_BINARIES", Path(__file__).resolve().parents[2] / "shared" / "kube"))
APISERVER_XZ = "kube-apiserver-v1.28.7-linux-amd64.xz"
CONTROLLER_MANAGER_XZ = "kube-controller-manager-v1.28.7-linux-amd64.xz"
ETCD = "/usr/bin/etcd"
KUBECTL_1_28 = "/usr/lib/google-cloud-sdk/bin/kubectl.1.28"
SA_ISSUER = "https://kubernetes.default.svc"
WEBHOOK_CACHE_TTL = 1  # seconds the API server trusts a TokenReview (and SubjectAccessReview) answer


def shared_dir() -> Path:
    """Where the binaries are: ../shared/kube next to the work tree, or $TOKENSMITH_KUBE_BINARIES."""
    for candidate in (SHARED, Path("/work/shared/kube")):
        if (candidate / APISERVER_XZ).exists():
            return candidate
    return SHARED


def missing_parts() -> list[str]:
    """What this machine lacks to run the real API server (empty: all there)."""
    missing = []
    if not (shared_dir() / APISERVER_XZ).exists() or not (shared_dir() / CONTROLLER_MANAGER_XZ).exists():
        missing.append(f"the kube-apiserver binaries in {SHARED}")
    if not os.access(ETCD, os.X_OK):
        missing.append("etcd (apt-get install etcd-server)")
    if kubectl() is None:
        missing.append("kubectl")
    return missing


def kubectl() -> str | None:
    """kubectl 1.28 (matches the server, no pre-flight request) when present, else PATH's."""
    return KUBECTL_1_28 if os.access(KUBECTL_1_28, os.X_OK) else shutil.which("kubectl")


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, ca: bool = False,
                 server: bool = False, client: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class KubePki:
    """Files for the API server, written into ``directory``."""

    directory: Path

    def __post_init__(self) -> None:
        d = self.directory
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate(_name("kube-test-ca"), ca_key, _name("kube-test-ca"), ca_key, ca=True)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _certificate(_name("kube-apiserver"), server_key, ca.subject, ca_key, server=True)
        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin = _certificate(_name("kube-admin", "system:masters"), admin_key, ca.subject, ca_key, client=True)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        files = {
            "ca.crt": ca.public_bytes(serialization.Encoding.PEM), "apiserver.crt": server.public_bytes(
                serialization.Encoding.PEM), "apiserver.key": _pem(server_key),
            "admin.crt": admin.public_bytes(serialization.Encoding.PEM), "admin.key": _pem(admin_key),
            "sa.key": _pem(sa_key), "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        }
        for name, data in files.items():
            (d / name).write_bytes(data)
            (d / name).chmod(0o600)

    def path(self, name: str) -> str:
        return str(self.directory / name)


def _unpack(source: Path, target: Path) -> Path:
    with lzma.open(source) as compressed, target.open("wb") as out:
        shutil.copyfileobj(compressed, out, 1 << 20)
    target.chmod(0o755)
    return target


@dataclass
class KubeApiServer:
    """etcd + kube-apiserver + the aggregation controller, all on 127.0.0.1; ``stop()`` ends all three."""

    directory: Path
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pki = KubePki(self.directory)
        self.admin_kubeconfig = self.directory / "admin.kubeconfig"
        self.admin_kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "admin",
            "clusters": [{"name": "test", "cluster": {"server": self.url,
                                                      "certificate-authority": self.pki.path("ca.crt")}}],
            "users": [{"name": "admin", "user": {"client-certificate": self.pki.path("admin.crt"),
                                                 "client-key": self.pki.path("admin.key")}}],
            "contexts": [{"name": "admin", "context": {"cluster": "test", "user": "admin"}}],
        }))
        self.admin_kubeconfig.chmod(0o600)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> str:
        return self.pki.ca_pem

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.directory / f"{name}.log").open("ab")
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory)
        self.processes.append(process)
        return process

    def start(self, *, authn_webhook: Path, audience: str, authz_webhook: Path | None = None,
              timeout: float = 120.0) -> KubeApiServer:
        """Start everything; returns once /readyz answers and the aggregated roles are filled."""
        d = self.directory
        etcd_port, etcd_peer = free_port(), free_port()
        self._spawn("etcd", [
            ETCD, "--data-dir", str(d / "etcd"), "--name", "test",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{etcd_peer}", "--unsafe-no-fsync",
        ])
        apiserver = _unpack(shared_dir() / APISERVER_XZ, d / "kube-apiserver")
        mode = "Node,Webhook,RBAC" if authz_webhook else "Node,RBAC"
        args = [
            str(apiserver), "--bind-address=127.0.0.1", f"--secure-port={self.port}",
            "--advertise-address=127.0.0.1", f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--tls-cert-file={self.pki.path('apiserver.crt')}",
            f"--tls-private-key-file={self.pki.path('apiserver.key')}",
            f"--client-ca-file={self.pki.path('ca.crt')}",
            f"--service-account-issuer={SA_ISSUER}", f"--service-account-key-file={self.pki.path('sa.pub')}",
            f"--service-account-signing-key-file={self.pki.path('sa.key')}",
            "--service-cluster-ip-range=10.0.0.0/24", "--endpoint-reconciler-type=none",
            f"--authorization-mode={mode}",
            f"--authentication-token-webhook-config-file={authn_webhook}",
            "--authentication-token-webhook-version=v1",
            f"--authentication-token-webhook-cache-ttl={WEBHOOK_CACHE_TTL}s",
            f"--api-audiences={SA_ISSUER},{audience}",
            "--enable-priority-and-fairness=false", "--profiling=false",
        ]
        if authz_webhook:
            args += [f"--authorization-webhook-config-file={authz_webhook}",
                     "--authorization-webhook-version=v1",
                     f"--authorization-webhook-cache-authorized-ttl={WEBHOOK_CACHE_TTL}s",
                     f"--authorization-webhook-cache-unauthorized-ttl={WEBHOOK_CACHE_TTL}s"]
        server = self._spawn("kube-apiserver", args)
        self._wait_ready(server, timeout)
        controller = _unpack(shared_dir() / CONTROLLER_MANAGER_XZ, d / "kube-controller-manager")
        self._spawn("kube-controller-manager", [
            str(controller), f"--kubeconfig={self.admin_kubeconfig}", "--controllers=clusterrole-aggregation",
            "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0",
        ])
        self._wait_aggregated(timeout)
        return self

    def _client(self) -> httpx.Client:
        import ssl

        context = ssl.create_default_context(cafile=self.pki.path("ca.crt"))
        context.load_cert_chain(self.pki.path("admin.crt"), self.pki.path("admin.key"))
        return httpx.Client(base_url=self.url, verify=context, timeout=5)

    def _wait_ready(self, process: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._client() as client:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"kube-apiserver exited with {process.returncode}:\n{self.log('kube-apiserver')}")
                try:
                    if client.get("/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.01)
        raise TimeoutError(f"kube-apiserver not ready within {timeout} s:\n{self.log('kube-apiserver')}")

    def _wait_aggregated(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._client() as client:
            while time.monotonic() < deadline:
                roles = [client.get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}").json()
                         for name in ("view", "edit", "admin")]
                if all(role.get("rules") for role in roles):
                    return
                time.sleep(0.01)
        raise TimeoutError(f"the aggregated roles stayed empty:\n{self.log('kube-controller-manager')}")

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None,
                check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run kubectl (as the admin unless ``kubeconfig`` is given)."""
        binary = kubectl()
        assert binary is not None
        result = subprocess.run(
            [binary, "--kubeconfig", str(kubeconfig or self.admin_kubeconfig), *args], input=input,
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "KUBECACHEDIR": str(self.directory / "kubectl-cache")},
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def ca_data(pem: str) -> str:
    return base64.b64encode(pem.encode()).decode()


# --- tokensmith and the API server, wired together ------------------------------------------------------

CLUSTER = "real"  # the name tokensmith knows the API server by


def trusting(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def run_cli(env: dict[str, str], *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokensmith", *args], input=input, capture_output=True, text=True,
                          timeout=60, env=env)


@dataclass
class RealCluster:
    """tokensmith (TLS) + the API server, wired together; helpers to make tokens and run kubectl with them."""

    server: ServerProcess
    kube: KubeApiServer
    admin_secret: str
    workdir: Path
    cluster: dict
    printed: str  # the authentication webhook kubeconfig as `admin cluster webhook-config` printed it

    def trust(self) -> ssl.SSLContext:
        """A TLS context trusting tokensmith's serving certificate."""
        return trusting(self.server.ca_file)

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, f"{self.server.url}{path}", verify=self.trust(), timeout=30,
                             headers={"Authorization": f"Bearer {self.admin_secret}"}, **kwargs)

    def token(self, level: str, name: str = "e2e") -> dict:
        created = self.api("POST", "/v1/tokens", json={"name": name, "clusters": [f"{CLUSTER}={level}"],
                                                        "kubeconfig": True})
        assert created.status_code == 201, created.text
        body = created.json()
        path = self.workdir / f"{body['token']['id']}.yaml"
        path.write_text(body["kubeconfig"])
        path.chmod(0o600)
        body["path"] = path
        return body

    def as_token(self, token: dict, *args: str) -> subprocess.CompletedProcess[str]:
        return self.kube.kubectl(*args, kubeconfig=token["path"])


@contextmanager
def start_real_cluster(work: Path) -> Iterator[RealCluster]:
    """tokensmith serving TLS itself, then the API server set up with what tokensmith printed: the webhook
    kubeconfigs of ``admin cluster webhook-config`` (authentication, and ``--authz``), with the CA taken
    from tokensmith's serving chain, and the ClusterRoleBindings of ``admin cluster rbac`` applied."""
    pki = make_pki()
    chain, key = work / "tls-chain.pem", work / "tls.key"
    chain.write_text(pki.server_cert_pem + pki.ca_pem)  # leaf, then its CA: webhook-config takes the CA from here
    key.write_text(pki.server_key_pem)
    ca_file = work / "ca.pem"
    ca_file.write_text(pki.ca_pem)
    data = work / "data"
    env = server_env(data, TOKENSMITH_TLS_CERT=str(chain), TOKENSMITH_TLS_KEY=str(key))
    server = ServerProcess(data, free_port(), env, ca_file=str(ca_file)).start()
    kube = KubeApiServer(work / "kube")
    try:
        password = admin_password(server.url, data, verify=trusting(str(ca_file)))
        login = httpx.post(f"{server.url}/v1/auth/token", verify=trusting(str(ca_file)), timeout=30,
                           json={"username": "admin", "password": password, "name": "e2e"})
        assert login.status_code == 201, login.text
        cluster = httpx.post(f"{server.url}/v1/clusters", verify=trusting(str(ca_file)), timeout=30,
                             headers={"Authorization": f"Bearer {login.json()['secret']}"},
                             json={"name": CLUSTER, "server": kube.url, "certificate_authority": kube.ca_pem,
                                   "region": "local"})
        assert cluster.status_code == 201, cluster.text
        authn, authz = work / "authn-webhook.yaml", work / "authz-webhook.yaml"
        for path, extra in ((authn, ()), (authz, ("--authz",))):
            printed = run_cli(env, "admin", "cluster", "webhook-config", CLUSTER, "--url", server.url, *extra)
            assert printed.returncode == 0, printed.stderr
            path.write_text(printed.stdout)
            path.chmod(0o600)
        kube.start(authn_webhook=authn, authz_webhook=authz, audience=cluster.json()["audience"])
        bindings = run_cli(env, "admin", "cluster", "rbac", CLUSTER)
        assert bindings.returncode == 0, bindings.stderr
        kube.kubectl("apply", "-f", "-", input=bindings.stdout, check=True)
        kube.kubectl("create", "configmap", "existing", "-n", "default", "--from-literal=a=b", check=True)
        yield RealCluster(server, kube, login.json()["secret"], work, cluster.json(), authn.read_text())
    finally:
        kube.stop()
        server.stop()
