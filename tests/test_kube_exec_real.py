"""A kubeconfig that holds no secret, against a real Kubernetes API server.

A real kube-apiserver (v1.28.7 from ../shared/kube, on Debian's etcd) authenticates bearer tokens
through tokensmith's TokenReview webhook; tokensmith is served over TLS (the API server sends the
webhook credential only to https URLs). ``tokensmith kubeconfig --exec`` writes a kubeconfig whose
user runs ``tokensmith kube-credential``; the real kubectl uses it for ``auth whoami``, and the
access ends once the CLI's login is revoked (within the API server's webhook cache TTL).

The API server and tokensmith are the session's (tests/conftest.py's real_kube); the CLI here has a
login of its own, so revoking it touches no other module's tokens.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.kubeapi import CLUSTER, WEBHOOK_CACHE_TTL, RealCluster, kubectl
from tests.servers import admin_password

pytestmark = pytest.mark.xdist_group("kube-apiserver")
TOKENSMITH = str(Path(sys.executable).parent / "tokensmith")  # the installed CLI, as a person runs it


@dataclass
class World:
    directory: Path
    env: dict[str, str]  # the CLI's (and kubectl's) environment: its own config, cache and trusted CA

    def cli(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([TOKENSMITH, *args], env=self.env, capture_output=True, text=True, timeout=60,
                                input=input)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def kubectl(self, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
        binary = kubectl()
        assert binary is not None
        return subprocess.run([binary, "--kubeconfig", str(kubeconfig), *args], env=self.env, capture_output=True,
                              text=True, timeout=60)


@pytest.fixture(scope="module")
def world(real_kube: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> World:
    """The CLI, logged in to the session's tokensmith as the admin with its own config and cache."""
    assert os.access(TOKENSMITH, os.X_OK), f"the tokensmith CLI at {TOKENSMITH}"
    d = tmp_path_factory.mktemp("kube-exec")
    server = real_kube.server
    password = admin_password(server.url, server.data_dir, verify=real_kube.trust())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENSMITH_", "KUBECONFIG"))}
    env.update({"TOKENSMITH_CONFIG": str(d / "cli" / "config.toml"), "XDG_CACHE_HOME": str(d / "cache"),
                "SSL_CERT_FILE": str(server.ca_file), "KUBECACHEDIR": str(d / "kubectl-cache"),
                "HOME": str(d / "home")})
    world = World(d, env)
    world.cli("login", "--url", server.url, "--username", "admin", input=password + "\n")
    return world


@pytest.fixture(scope="module")
def exec_kubeconfig(world: World) -> Path:
    path = world.directory / "exec-kubeconfig.yaml"
    world.cli("kubeconfig", "--exec", "--cluster", CLUSTER, "-o", str(path))
    return path


def test_the_exec_kubeconfig_holds_no_secret(exec_kubeconfig: Path):
    text = exec_kubeconfig.read_text()
    document = yaml.safe_load(text)
    assert "tsm_" not in text
    assert all("token" not in user["user"] for user in document["users"])
    [user] = document["users"]
    assert user["user"]["exec"]["apiVersion"] == "client.authentication.k8s.io/v1"
    assert user["user"]["exec"]["args"] == ["kube-credential", "--cluster", CLUSTER]


def test_kube_credential_prints_an_exec_credential_and_caches_it_0600(world: World, exec_kubeconfig: Path):
    first = json.loads(world.cli("kube-credential", "--cluster", CLUSTER).stdout)
    assert (first["apiVersion"], first["kind"]) == ("client.authentication.k8s.io/v1", "ExecCredential")
    assert first["status"]["token"].startswith("tsm_")
    expires = datetime.datetime.fromisoformat(first["status"]["expirationTimestamp"].replace("Z", "+00:00"))
    assert datetime.timedelta(minutes=50) < expires - datetime.datetime.now(datetime.UTC) <= datetime.timedelta(hours=1)
    again = json.loads(world.cli("kube-credential", "--cluster", CLUSTER).stdout)
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
        time.sleep(0.01)
    assert after.returncode != 0, "kubectl still authenticated after the CLI login was revoked"
    assert "Unauthorized" in after.stderr or "must be logged in" in after.stderr, after.stderr
    shutil.rmtree(world.directory / "cache" / "tokensmith" / "kube-credentials")
    plugin = world.cli("kube-credential", "--cluster", CLUSTER, check=False)
    assert plugin.returncode == 3  # no new credential from a revoked login either: sign in again
    assert "sign in again" in plugin.stderr
