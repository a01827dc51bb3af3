"""Kubernetes over the REST API: clusters and kubeconfigs on token creation, webhook credentials,
and the TokenReview webhook an API server calls (authentication.k8s.io/v1 and v1beta1)."""

from datetime import timedelta

import pytest
import yaml

from tests.pki import CA_PEM
from tokensmith import secrets

V1 = "authentication.k8s.io/v1"
V1BETA1 = "authentication.k8s.io/v1beta1"


def add_cluster(client, account, name, server="https://10.0.0.1:6443"):
    response = client.post("/v1/clusters", headers=account.headers, json={
        "name": name, "server": server, "certificate_authority": CA_PEM, "region": "eu-1"})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def prod(client, admin):
    return add_cluster(client, admin, "prod", "https://10.0.0.1:6443")


@pytest.fixture
def staging(client, admin):
    return add_cluster(client, admin, "staging", "https://10.0.0.2:6443")


def create_token(client, account, **body):
    return client.post("/v1/tokens", headers=account.headers, json={"name": "kube", **body})


def mint(client, admin, cluster):
    response = client.post(f"/v1/clusters/{cluster['id']}/webhook-credentials", headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def review(client, cluster, credential, token, api_version=V1, **spec):
    body = {"apiVersion": api_version, "kind": "TokenReview", "spec": {"token": token, **spec}}
    return client.post(f"/v1/clusters/{cluster['id']}/tokenreview", json=body,
                       headers={"Authorization": f"Bearer {credential}"})


# --- clusters and kubeconfigs on token creation ---------------------------------------------


def test_token_grants_clusters_named_by_id_or_name(client, alice, prod, staging):
    response = create_token(client, alice, clusters=[prod["id"], "staging"])
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    assert sorted(c["name"] for c in token["clusters"]) == ["prod", "staging"]
    listed = client.get(f"/v1/tokens/{token['id']}", headers=alice.headers).json()
    assert sorted(c["id"] for c in listed["clusters"]) == sorted([prod["id"], staging["id"]])


def test_a_token_may_grant_no_cluster(client, alice):
    response = create_token(client, alice)
    assert response.status_code == 201
    assert response.json()["token"]["clusters"] == []
    assert response.json()["kubeconfig"] is None


def test_unknown_cluster_is_404_and_nothing_is_created(client, alice, prod):
    response = create_token(client, alice, clusters=["prod", "nope"])
    assert response.status_code == 404
    assert "cluster 'nope' not found" in response.json()["detail"]
    assert len(client.get("/v1/tokens", headers=alice.headers).json()["items"]) == 1  # alice's own


def test_another_organizations_cluster_is_404(client, alice, mallory):
    theirs = add_cluster(client, mallory, "evil")
    response = create_token(client, alice, clusters=[theirs["id"]])
    assert response.status_code == 404
    assert theirs["id"] in response.json()["detail"]


def test_kubeconfig_without_clusters_is_422(client, alice):
    response = create_token(client, alice, kubeconfig=True)
    assert response.status_code == 422
    assert "at least one cluster" in response.json()["detail"]


def test_clusters_with_explicit_scopes_lacking_kubernetes_is_422(client, alice, prod):
    response = create_token(client, alice, clusters=["prod"], scopes=["tokens:read"])
    assert response.status_code == 422
    assert "kubernetes" in response.json()["detail"]


def test_create_response_carries_the_kubeconfig_once_with_no_store(client, alice, prod, staging):
    response = create_token(client, alice, name="ci / deploy: prod*", clusters=["staging", "prod"], kubeconfig=True)
    assert response.status_code == 201, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    config = yaml.safe_load(body["kubeconfig"])
    assert config["apiVersion"] == "v1" and config["kind"] == "Config"
    assert [c["name"] for c in config["clusters"]] == ["tokensmith-default-staging", "tokensmith-default-prod"]
    assert config["clusters"][1]["cluster"]["server"] == "https://10.0.0.1:6443"
    assert config["users"] == [{"name": f"tokensmith-default-{body['token']['id']}",
                                "user": {"token": body["secret"]}}]
    assert config["current-context"] == "tokensmith-default-staging"
    assert body["kubeconfig_filename"] == f"kubeconfig-{body['token']['id']}-ci-deploy-prod.yaml"
    listed = client.get(f"/v1/tokens/{body['token']['id']}", headers=alice.headers).json()
    assert "kubeconfig" not in listed and body["secret"] not in str(listed)


# --- webhook credentials ----------------------------------------------------------------------


def test_admin_mints_lists_and_revokes_webhook_credentials(client, admin, prod):
    first, second = mint(client, admin, prod), mint(client, admin, prod)
    assert secrets.is_well_formed(first["secret"], secrets.WEBHOOK_PREFIX)
    assert first["tokenreview_path"] == f"/v1/clusters/{prod['id']}/tokenreview"
    listed = client.get("/v1/clusters/prod/webhook-credentials", headers=admin.headers)
    assert [c["id"] for c in listed.json()] == [first["credential"]["id"], second["credential"]["id"]]
    assert first["secret"] not in listed.text
    gone = client.delete(f"/v1/clusters/prod/webhook-credentials/{first['credential']['id']}", headers=admin.headers)
    assert gone.status_code == 204
    assert [c["id"] for c in client.get("/v1/clusters/prod/webhook-credentials",
                                        headers=admin.headers).json()] == [second["credential"]["id"]]


def test_only_the_digest_of_a_webhook_credential_is_stored(client, admin, prod, database):
    from sqlalchemy import select

    from tokensmith.db.models import WebhookCredential

    secret = mint(client, admin, prod)["secret"]
    with database.session() as session:
        stored = session.scalars(select(WebhookCredential)).one()
        assert secret not in (stored.secret_digest, stored.hint, stored.public_id)
        assert len(stored.secret_digest) == 64


def test_members_cannot_touch_webhook_credentials(client, admin, alice, prod):
    assert client.post("/v1/clusters/prod/webhook-credentials", headers=alice.headers).status_code == 403
    assert client.get("/v1/clusters/prod/webhook-credentials", headers=alice.headers).status_code == 403


def test_another_organizations_cluster_credentials_are_404(client, admin, mallory, prod):
    assert client.post(f"/v1/clusters/{prod['id']}/webhook-credentials", headers=mallory.headers).status_code == 404
    assert client.get(f"/v1/clusters/{prod['id']}/webhook-credentials", headers=mallory.headers).status_code == 404


def test_revoking_an_unknown_credential_is_404(client, admin, prod):
    response = client.delete("/v1/clusters/prod/webhook-credentials/whc_nope", headers=admin.headers)
    assert response.status_code == 404


# --- TokenReview --------------------------------------------------------------------------------


@pytest.fixture
def kube(client, admin, alice, prod, staging):
    """alice holds a token granting prod; prod's API server holds a webhook credential."""
    created = create_token(client, alice, clusters=["prod"]).json()
    return {"secret": created["secret"], "token_id": created["token"]["id"],
            "credential": mint(client, admin, prod)["secret"], "prod": prod, "staging": staging}


def test_review_authenticates_a_token_granting_the_cluster(client, kube, alice):
    response = review(client, kube["prod"], kube["credential"], kube["secret"])
    assert response.status_code == 200
    body = response.json()
    assert body["apiVersion"] == V1 and body["kind"] == "TokenReview"
    assert body["status"]["authenticated"] is True
    assert body["status"]["user"] == {
        "username": "tokensmith:alice", "uid": alice.user.public_id,
        "groups": ["tokensmith:org:default", "tokensmith:view", "system:authenticated"],
        "extra": {"tokensmith.io/token-id": [kube["token_id"]], "tokensmith.io/organization": ["default"]},
    }
    assert "audiences" not in body["status"]


def test_v1beta1_is_answered_in_v1beta1(client, kube):
    body = review(client, kube["prod"], kube["credential"], kube["secret"], api_version=V1BETA1).json()
    assert body["apiVersion"] == V1BETA1
    assert body["status"]["authenticated"] is True


def test_admins_get_the_admins_group(client, admin, kube):
    secret = create_token(client, admin, clusters=["prod"]).json()["secret"]
    groups = review(client, kube["prod"], kube["credential"], secret).json()["status"]["user"]["groups"]
    assert groups == ["tokensmith:org:default", "tokensmith:admins", "tokensmith:view", "system:authenticated"]


def test_a_token_not_granting_the_cluster_is_refused(client, admin, kube):
    staging_credential = mint(client, admin, kube["staging"])["secret"]
    status = review(client, kube["staging"], staging_credential, kube["secret"]).json()["status"]
    assert status == {"authenticated": False, "error": "token does not grant this cluster"}


def test_a_token_without_the_kubernetes_scope_is_refused(client, alice, kube, database, clock):
    # The API refuses to create such a token; it can still exist (scopes stored before, or by an admin tool).
    from sqlalchemy import select

    from tests.conftest import SECRET_KEY
    from tokensmith.db.models import Cluster, User
    from tokensmith.tokens.service import TokenService

    with database.session() as session:
        owner = session.scalars(select(User).where(User.username == "alice")).one()
        cluster = session.scalars(select(Cluster).where(Cluster.name == "prod")).one()
        secret = TokenService(session, clock, SECRET_KEY).create(
            owner, "no-kube", clusters=[cluster], scopes=["tokens:read"]).secret
    status = review(client, kube["prod"], kube["credential"], secret).json()["status"]
    assert status == {"authenticated": False, "error": "token lacks the kubernetes scope"}


def test_a_deleted_token_is_refused(client, alice, kube):
    assert client.delete(f"/v1/tokens/{kube['token_id']}", headers=alice.headers).status_code == 204
    status = review(client, kube["prod"], kube["credential"], kube["secret"]).json()["status"]
    assert status == {"authenticated": False, "error": "invalid token"}


def test_an_expired_token_is_refused(client, kube, clock):
    clock.advance(timedelta(days=31))
    status = review(client, kube["prod"], kube["credential"], kube["secret"]).json()["status"]
    assert status == {"authenticated": False, "error": "token expired"}


@pytest.mark.parametrize(
    "token", ["tsm_garbage", "not-a-token", "x" * 5000, secrets.generate()],
    ids=["bad-checksum", "not-a-token", "huge", "unknown-well-formed"],
)
def test_unknown_or_malformed_tokens_are_refused(client, kube, token):
    status = review(client, kube["prod"], kube["credential"], token).json()["status"]
    assert status == {"authenticated": False, "error": "invalid token"}


def test_audiences_must_include_the_clusters_and_are_echoed(client, kube):
    ok = review(client, kube["prod"], kube["credential"], kube["secret"],
                audiences=["https://kubernetes.default.svc", "https://10.0.0.1:6443"]).json()["status"]
    assert ok["authenticated"] is True
    assert ok["audiences"] == ["https://10.0.0.1:6443"]
    other = review(client, kube["prod"], kube["credential"], kube["secret"],
                   audiences=["https://10.0.0.2:6443"]).json()["status"]
    assert other["authenticated"] is False
    assert "audiences" not in other


def test_a_configured_audience_replaces_the_server_url(client, admin, kube):
    changed = client.patch("/v1/clusters/prod", headers=admin.headers, json={"audience": "tokensmith:prod"})
    assert changed.status_code == 200, changed.text
    mine = review(client, kube["prod"], kube["credential"], kube["secret"],
                  audiences=["https://kubernetes.default.svc", "tokensmith:prod"]).json()["status"]
    assert mine["authenticated"] is True and mine["audiences"] == ["tokensmith:prod"]
    by_url = review(client, kube["prod"], kube["credential"], kube["secret"],
                    audiences=["https://10.0.0.1:6443"]).json()["status"]
    assert by_url["authenticated"] is False


def test_a_wrong_webhook_credential_is_401(client, kube):
    for credential in (secrets.generate(secrets.WEBHOOK_PREFIX), kube["secret"], "garbage"):
        response = review(client, kube["prod"], credential, kube["secret"])
        assert response.status_code == 401
        assert "authenticated" not in response.text


def test_another_clusters_credential_is_401(client, admin, kube):
    staging_credential = mint(client, admin, kube["staging"])["secret"]
    assert review(client, kube["prod"], staging_credential, kube["secret"]).status_code == 401


def test_a_revoked_credential_is_401_and_the_other_keeps_working(client, admin, kube):
    second = mint(client, admin, kube["prod"])
    client.delete(f"/v1/clusters/prod/webhook-credentials/{second['credential']['id']}", headers=admin.headers)
    assert review(client, kube["prod"], second["secret"], kube["secret"]).status_code == 401
    assert review(client, kube["prod"], kube["credential"], kube["secret"]).json()["status"]["authenticated"]


def test_no_credential_is_401(client, kube):
    response = client.post(f"/v1/clusters/{kube['prod']['id']}/tokenreview",
                           json={"apiVersion": V1, "kind": "TokenReview", "spec": {"token": kube["secret"]}})
    assert response.status_code == 401


def test_the_cluster_may_be_named_in_the_path(client, kube):
    response = client.post("/v1/clusters/prod/tokenreview", headers={"Authorization": f"Bearer {kube['credential']}"},
                           json={"apiVersion": V1, "kind": "TokenReview", "spec": {"token": kube["secret"]}})
    assert response.json()["status"]["authenticated"] is True


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"apiVersion": V1, "kind": "TokenReview", "spec": {}}, "spec.token is required"),
        ({"apiVersion": V1, "kind": "TokenReview", "spec": {"token": ""}}, "spec.token is required"),
        ({"apiVersion": V1, "kind": "TokenReview"}, "spec is required"),
        ({"apiVersion": "authentication.k8s.io/v2", "kind": "TokenReview", "spec": {"token": "t"}}, "apiVersion"),
        ({"apiVersion": "v1", "kind": "TokenReview", "spec": {"token": "t"}}, "apiVersion"),
        ({"kind": "TokenReview", "spec": {"token": "t"}}, "apiVersion"),
        ({"apiVersion": V1, "kind": "SubjectAccessReview", "spec": {"token": "t"}}, "kind"),
        ({"apiVersion": V1, "kind": "TokenReview", "spec": {"token": "t", "audiences": "x"}}, "audiences"),
        ({"apiVersion": V1, "kind": "TokenReview", "spec": {"token": 42}}, "spec.token"),
        ([1, 2], "TokenReview object"),
    ],
)
def test_malformed_reviews_are_400(client, kube, body, fragment):
    response = client.post(f"/v1/clusters/{kube['prod']['id']}/tokenreview", json=body,
                           headers={"Authorization": f"Bearer {kube['credential']}"})
    assert response.status_code == 400
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize("body", [b"\xff{not json", b"", b"[" * 30000 + b"]" * 30000, b"null"])
def test_a_body_that_is_not_a_json_object_is_400(client, kube, body):
    response = client.post(f"/v1/clusters/{kube['prod']['id']}/tokenreview", content=body,
                           headers={"Authorization": f"Bearer {kube['credential']}"})
    assert response.status_code == 400


def test_a_1mb_review_is_refused_with_413(client, kube):
    body = b'{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "' + \
        b"a" * (1024 * 1024) + b'"}}'
    response = client.post(f"/v1/clusters/{kube['prod']['id']}/tokenreview", content=body,
                           headers={"Authorization": f"Bearer {kube['credential']}",
                                    "Content-Type": "application/json"})
    assert response.status_code == 413


def test_a_1mb_chunked_review_is_refused_with_413(client, kube):
    def chunks():
        yield b'{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "'
        for _ in range(16):
            yield b"a" * 65536
        yield b'"}}'

    response = client.post(f"/v1/clusters/{kube['prod']['id']}/tokenreview", content=chunks(),
                           headers={"Authorization": f"Bearer {kube['credential']}"})
    assert response.status_code == 413


def test_deleting_the_cluster_revokes_its_credentials(client, admin, kube):
    assert client.delete("/v1/clusters/prod", headers=admin.headers).status_code == 204
    response = client.post(f"/v1/clusters/{kube['prod']['id']}/tokenreview",
                           headers={"Authorization": f"Bearer {kube['credential']}"},
                           json={"apiVersion": V1, "kind": "TokenReview", "spec": {"token": kube["secret"]}})
    assert response.status_code == 401


def test_any_json_is_either_a_review_or_a_clear_400():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tokensmith.kube.tokenreview import MalformedReview, Review, parse

    leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.sampled_from(["apiVersion", "kind", "spec", "token", "audiences", "x"]),
                                            inner, max_size=5), max_leaves=20)
    reviews = st.fixed_dictionaries({}, optional={
        "apiVersion": st.sampled_from([V1, V1BETA1, "v1"]) | values, "kind": st.just("TokenReview") | values,
        "spec": st.fixed_dictionaries({}, optional={"token": st.text(max_size=50) | values, "audiences": values})
        | values})

    @settings(max_examples=200, deadline=None)
    @given(st.one_of(values, reviews))
    def check(document):
        import contextlib
        import json

        with contextlib.suppress(MalformedReview):
            assert isinstance(parse(json.dumps(document).encode()), Review)

    check()


def test_an_overlong_cluster_reference_is_422(client, alice):
    response = create_token(client, alice, clusters=["x" * 5000])
    assert response.status_code == 422
    assert "x" * 200 not in response.text
