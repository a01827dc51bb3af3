"""A real kube-apiserver's service-account token, exchanged for a tokensmith token (inline JWKS).

``kubectl create token`` mints a projected service-account JWT signed by the API server's key; a
trust policy holding the server's JWKS inline (as for an air-gapped cluster, taken with
``kubectl get --raw /openid/v1/jwks``) turns it into a short-lived token of a service account.

The API server is the session's (tests/conftest.py's real_kube, tests/kubeapi.py); the CLI test talks to the
session's tokensmith too (names it makes are its own), the other to an in-process app.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC
from pathlib import Path

import httpx
import pytest

from tests.conftest import LOOPBACK_NETWORKS
from tests.kubeapi import SA_ISSUER, KubeApiServer, RealCluster
from tests.kubeapi import kubectl as kubectl_binary
from tests.servers import admin_password
from tokensmith.config import Settings
from tokensmith.net.outbound import parse_networks

pytestmark = pytest.mark.xdist_group("kube-apiserver")
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


@pytest.fixture
def apiserver(real_kube: RealCluster) -> KubeApiServer:
    """The session's real API server (tests/conftest.py's real_kube); only its service-account issuer is used."""
    return real_kube.kube


def kubectl(apiserver: KubeApiServer, *args: str) -> str:
    return apiserver.kubectl(*args, check=True).stdout


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
def test_one_cli_command_registers_the_clusters_issuer_from_kubectl(real_kube: RealCluster, tmp_path):
    """``tokensmith trust-policy create --from-kubectl``: issuer and JWKS from the current context."""
    apiserver, server = real_kube.kube, real_kube.server  # the session's tokensmith: starting one costs seconds
    binary, kubeconfig = kubectl_binary(), apiserver.admin_kubeconfig
    bin_dir = tmp_path / "bin"  # `kubectl` on PATH: the version that matches this API server
    bin_dir.mkdir()
    (bin_dir / "kubectl").symlink_to(binary)
    env = {**server.env, "XDG_CONFIG_HOME": str(tmp_path / "config"), "KUBECONFIG": str(kubeconfig),
           "KUBECACHEDIR": str(tmp_path / "kube-cache"), "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "SSL_CERT_FILE": str(server.ca_file)}

    def cli(*args: str, input: str | None = None) -> str:
        done = subprocess.run([sys.executable, "-m", "tokensmith", *args], env=env, input=input,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    password = admin_password(server.url, server.data_dir, verify=real_kube.trust())
    cli("login", "--url", server.url, "--username", "admin", input=password + "\n")
    cli("service-account", "create", "ci-runner")
    created = cli("trust-policy", "create", "cluster-ci", "--service-account", "ci-runner", "--from-kubectl",
                  "--audience", "tokensmith", "--subject", "system:serviceaccount:default:*",
                  "--scope", "tokens:read")
    assert "AWS_ROLE_ARN=arn:tokensmith:iam::default:role/cluster-ci" in created
    [policy] = [p for p in json.loads(cli("trust-policy", "list", "--json")) if p["name"] == "cluster-ci"]
    assert policy["issuer"] == SA_ISSUER and policy["inline_jwks"] is True
    name = f"runner-{uuid.uuid4().hex[:6]}"
    kubectl(apiserver, "create", "serviceaccount", name, "--namespace", "default")
    token = kubectl(apiserver, "create", "token", name, "--namespace", "default", "--audience",
                    "tokensmith").strip()
    answer = httpx.post(f"{server.url}/v1/oauth2/token", verify=real_kube.trust(),
                        data={"grant_type": GRANT, "subject_token": token, "subject_token_type": JWT_TYPE})
    assert answer.status_code == 200, answer.text
