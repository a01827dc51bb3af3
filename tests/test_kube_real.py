"""End to end with a real kube-apiserver (v1.28.7) and tokensmith serving TLS itself.

The API server is set up exactly as docs/kubernetes.md says: the webhook kubeconfigs printed by
``tokensmith admin cluster webhook-config`` (authentication, and ``--authz`` for authorization),
with the CA taken from tokensmith's serving chain, and the ClusterRoleBindings printed by
``tokensmith admin cluster rbac`` applied with kubectl. One API server for the whole session
(tests/kubeapi.py's start_real_cluster), shared with the other modules marked
``xdist_group("kube-apiserver")``: they run in one xdist worker.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import yaml

from tests.kubeapi import RealCluster

pytestmark = pytest.mark.xdist_group("kube-apiserver")
DEPLOY = Path(__file__).parent.parent / "deploy"


@pytest.fixture
def real(real_kube: RealCluster) -> RealCluster:
    """The session's API server and tokensmith (tests/conftest.py's real_kube)."""
    return real_kube


# --- authentication ---------------------------------------------------------------------------------


def test_webhook_config_embeds_the_ca_from_tokensmiths_serving_chain(real):
    document = yaml.safe_load(real.printed)
    assert document["clusters"][0]["cluster"]["server"].startswith("https://127.0.0.1:")
    embedded = document["clusters"][0]["cluster"]["certificate-authority-data"]
    assert base64.b64decode(embedded).decode().strip() == Path(real.server.ca_file).read_text().strip()


def test_kubectl_auth_whoami_shows_the_prefixed_user_and_the_level_group(real):
    token = real.token("view")
    result = real.as_token(token, "auth", "whoami", "-o", "json")
    assert result.returncode == 0, result.stderr
    user = json.loads(result.stdout)["status"]["userInfo"]
    assert user["username"] == "tokensmith:admin"
    assert "tokensmith:view" in user["groups"] and "tokensmith:org:default" in user["groups"]
    assert user["extra"]["tokensmith.io/token-id"] == [token["token"]["id"]]


def test_a_deleted_token_is_locked_out_within_the_cache_ttl(real):
    token = real.token("view")
    assert real.as_token(token, "get", "--raw", "/version").returncode == 0
    assert real.api("DELETE", f"/v1/tokens/{token['token']['id']}").status_code == 204
    # The API server caches reviews (1 s here). Until its TokenReview cache lets go, the authorization
    # webhook (which looks the token up on every uncached review) may already refuse it as revoked.
    deadline = time.monotonic() + 15
    while "Unauthorized" not in (result := real.as_token(token, "get", "--raw", "/version")).stderr:
        assert result.returncode == 0 or "the token is unknown, revoked or expired" in result.stderr, result.stderr
        assert time.monotonic() < deadline, "a deleted token kept working"
        time.sleep(0.01)


def test_a_token_granting_another_cluster_is_unauthorized(real):
    other = real.api("POST", "/v1/clusters", json={"name": f"other-{time.monotonic_ns()}", "region": "local",
                                                     "server": "https://127.0.0.1:1", "certificate_authority":
                                                     real.kube.ca_pem}).json()
    created = real.api("POST", "/v1/tokens", json={"name": "elsewhere", "clusters": [other["id"]]}).json()
    path = real.workdir / "elsewhere.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "real", "cluster": {"server": real.kube.url, "certificate-authority-data":
                                                  base64.b64encode(real.kube.ca_pem.encode()).decode()}}],
        "users": [{"name": "u", "user": {"token": created["secret"]}}],
        "contexts": [{"name": "c", "context": {"cluster": "real", "user": "u"}}]}))
    result = real.kube.kubectl("get", "--raw", "/version", kubeconfig=path)
    assert result.returncode == 1 and "Unauthorized" in result.stderr


def test_the_kubernetes_python_client_sees_the_same_user(real):
    from kubernetes import client, config

    token = real.token("edit")
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(token["path"]), client_configuration=configuration)
    with client.ApiClient(configuration) as api_client:
        review = client.AuthenticationV1Api(api_client).create_self_subject_review(client.V1SelfSubjectReview())
    assert review.status.user_info.username == "tokensmith:admin"
    assert "tokensmith:edit" in review.status.user_info.groups


# --- RBAC with the printed bindings -------------------------------------------------------------------


def k8s_name(token: dict) -> str:
    """The token's id as a Kubernetes object name (lower case, no underscores)."""
    return token["token"]["id"].lower().replace("_", "-")


def can_i(real: RealCluster, *args: str, groups: tuple[str, ...]) -> str:
    """RBAC alone: the admin certificate impersonating a user without a tokensmith token id (the authz
    webhook has no opinion on those)."""
    impersonate = ["--as", "tokensmith:nobody"] + [a for g in groups for a in ("--as-group", g)]
    return real.kube.kubectl("auth", "can-i", *args, *impersonate).stdout.split()[0]


@pytest.mark.parametrize(("group", "allowed", "refused"), [
    ("tokensmith:view", ("get", "configmaps"), ("create", "configmaps")),
    ("tokensmith:edit", ("create", "configmaps"), ("create", "rolebindings")),
    ("tokensmith:admin", ("create", "rolebindings"), ("create", "namespaces")),
])
def test_the_printed_bindings_give_each_level_group_its_built_in_role(real, group, allowed, refused):
    assert can_i(real, *allowed, "-n", "default", groups=(group,)) == "yes"
    assert can_i(real, *refused, "-n", "default", groups=(group,)) == "no"


def test_a_view_token_can_get_but_not_create_or_delete(real):
    token = real.token("view")
    assert real.as_token(token, "get", "configmap", "existing", "-n", "default").returncode == 0
    created = real.as_token(token, "create", "configmap", "nope", "-n", "default", "--from-literal=a=b")
    assert created.returncode == 1 and "forbidden" in created.stderr
    deleted = real.as_token(token, "delete", "configmap", "existing", "-n", "default")
    assert deleted.returncode == 1 and "forbidden" in deleted.stderr


def test_an_edit_token_can_create_a_configmap_but_not_a_rolebinding(real):
    token = real.token("edit")
    created = real.as_token(token, "create", "configmap", f"made-by-{k8s_name(token)}", "-n", "default",
                            "--from-literal=a=b")
    assert created.returncode == 0, created.stderr
    binding = real.as_token(token, "create", "rolebinding", "sneaky", "-n", "default", "--clusterrole=admin",
                            "--user=tokensmith:admin")
    assert binding.returncode == 1 and "forbidden" in binding.stderr


def test_an_admin_token_can_create_a_rolebinding_in_a_namespace(real):
    token = real.token("admin")
    binding = real.as_token(token, "create", "rolebinding", f"rb-{k8s_name(token)}", "-n", "default",
                            "--clusterrole=view", "--group=tokensmith:view")
    assert binding.returncode == 0, binding.stderr


# --- the authorization webhook ------------------------------------------------------------------------


@pytest.fixture
def user_bound_to_cluster_admin(real):
    """Someone binds the bare (prefixed) user name to cluster-admin: the gap the authz webhook closes."""
    real.kube.kubectl("create", "clusterrolebinding", "too-much", "--clusterrole=cluster-admin",
                      "--user=tokensmith:admin", check=True)
    yield "tokensmith:admin"
    real.kube.kubectl("delete", "clusterrolebinding", "too-much", check=True)


def test_with_the_authz_webhook_a_view_token_stays_read_only_when_its_user_is_bound_to_cluster_admin(
        real, user_bound_to_cluster_admin):
    token = real.token("view")
    assert real.as_token(token, "get", "configmap", "existing", "-n", "default").returncode == 0
    deleted = real.as_token(token, "delete", "configmap", "existing", "-n", "default")
    assert deleted.returncode == 1 and "forbidden" in deleted.stderr
    assert "does not allow delete configmaps in namespace default" in deleted.stderr
    assert real.as_token(token, "auth", "can-i", "create", "namespaces").stdout.split()[0] == "no"


def test_the_authz_webhook_has_no_opinion_on_requests_not_made_with_a_tokensmith_token(
        real, user_bound_to_cluster_admin):
    # The admin certificate impersonating the same user, without a tokensmith token id: RBAC decides.
    answer = real.kube.kubectl("auth", "can-i", "delete", "configmaps", "-n", "default",
                               "--as", user_bound_to_cluster_admin, "--as-group", "tokensmith:view")
    assert answer.stdout.split()[0] == "yes", answer.stderr


def test_a_cluster_admin_token_is_not_limited_by_the_webhook(real):
    token = real.token("cluster-admin")
    assert real.as_token(token, "auth", "can-i", "create", "namespaces").stdout.split()[0] == "yes"


# --- deploy/ against the real schema ------------------------------------------------------------------


def test_deploy_manifests_pass_a_server_side_dry_run(real):
    result = real.kube.kubectl("apply", "--dry-run=server", "-n", "default", "-f", str(DEPLOY))
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/tokensmith created (server dry run)" in result.stdout
