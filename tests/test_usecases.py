"""The use-case layer: least privilege that holds, scopes that mean what they say, audit for every change.

Each test here failed before the layer existed (issue "One path for every use case").
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.pki import CA_PEM
from tokensmith.db.models import AuditEvent


def limited(client, account, scopes, **extra):
    """A secret of ``account``'s holding exactly ``scopes`` (and whatever else ``extra`` asks)."""
    response = client.post("/v1/tokens", headers=account.headers, json={"name": "limited", "scopes": scopes, **extra})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['secret']}"}, response.json()["token"]["id"]


def add_cluster(client, admin, name):
    response = client.post("/v1/clusters", headers=admin.headers, json={
        "name": name, "server": "https://10.0.0.1:6443", "certificate_authority": CA_PEM, "region": "r1"})
    assert response.status_code == 201, response.text
    return response.json()


# --- a token never mints more than it holds --------------------------------------------------------


def test_a_tokens_write_token_cannot_mint_a_token_with_scopes_it_lacks(client, alice):
    writer, _ = limited(client, alice, ["tokens:write"])
    response = client.post("/v1/tokens", headers=writer, json={"name": "wider", "scopes": ["tokens:write",
                                                                                           "clusters:read"]})
    assert response.status_code == 403
    assert "'clusters:read'" in response.json()["detail"]


def test_a_token_minted_without_scopes_by_a_limited_token_inherits_its_limits(client, alice):
    writer, _ = limited(client, alice, ["tokens:write", "tokens:read"])
    response = client.post("/v1/tokens", headers=writer, json={"name": "child"})
    assert response.status_code == 201, response.text
    assert sorted(response.json()["token"]["scopes"]) == ["tokens:read", "tokens:write"]


def test_a_tokens_write_token_cannot_grant_a_cluster_it_lacks(client, admin, alice):
    add_cluster(client, admin, "prod")
    writer, _ = limited(client, alice, ["tokens:write", "kubernetes"])
    response = client.post("/v1/tokens", headers=writer, json={"name": "kube", "clusters": ["prod"],
                                                               "scopes": ["kubernetes"]})
    assert response.status_code == 403
    assert "cluster 'prod'" in response.json()["detail"]


def test_a_tokens_write_token_cannot_get_a_kubeconfig_for_a_cluster_it_lacks(client, admin, alice):
    add_cluster(client, admin, "prod")
    writer, _ = limited(client, alice, ["tokens:write"])
    response = client.post("/v1/tokens", headers=writer, json={"name": "kube", "clusters": ["prod"],
                                                               "kubeconfig": True})
    assert response.status_code in (403, 422)
    assert "kubeconfig" not in response.json()


def test_a_kubeconfig_token_passes_on_only_its_own_clusters(client, admin, alice):
    add_cluster(client, admin, "prod")
    add_cluster(client, admin, "staging")
    kube, _ = limited(client, alice, ["tokens:write", "kubernetes"], clusters=["prod"])
    same = client.post("/v1/tokens", headers=kube, json={"name": "same", "clusters": ["prod"]})
    other = client.post("/v1/tokens", headers=kube, json={"name": "other", "clusters": ["staging"]})
    assert same.status_code == 201, same.text
    assert other.status_code == 403 and "cluster 'staging'" in other.json()["detail"]


def test_a_narrow_token_cannot_rotate_a_wider_one(client, alice):
    reader_writer, _ = limited(client, alice, ["tokens:write", "tokens:read"])
    response = client.post(f"/v1/tokens/{alice.token_id}/rotate", headers=reader_writer, json={})
    assert response.status_code == 403


# --- scopes grant what their names say --------------------------------------------------------------


def test_tokens_read_on_an_admins_token_cannot_read_the_audit_log(client, admin):
    reader, _ = limited(client, admin, ["tokens:read"])
    response = client.get("/v1/audit-events", headers=reader)
    assert response.status_code == 403 and "'audit:read'" in response.json()["detail"]


def test_tokens_read_on_an_admins_token_cannot_list_webhooks(client, admin):
    reader, _ = limited(client, admin, ["tokens:read"])
    response = client.get("/v1/webhooks", headers=reader)
    assert response.status_code == 403 and "'org:admin'" in response.json()["detail"]


def test_tokens_write_on_an_admins_token_cannot_change_the_policy(client, admin):
    writer, _ = limited(client, admin, ["tokens:write", "tokens:read"])
    response = client.put("/v1/org/policy", headers=writer, json={"max_lifetime_days": 1, "allow_never": False,
                                                                  "default_expiration": "1d"})
    assert response.status_code == 403 and "'org:admin'" in response.json()["detail"]


def test_tokens_write_on_an_admins_token_cannot_add_webhooks(client, admin):
    writer, _ = limited(client, admin, ["tokens:write"])
    response = client.post("/v1/webhooks", headers=writer, json={"url": "https://hooks.example.com/x"})
    assert response.status_code == 403 and "'org:admin'" in response.json()["detail"]


def test_a_members_token_never_holds_the_org_admin_scopes(client, alice):
    response = client.post("/v1/tokens", headers=alice.headers, json={"name": "x", "scopes": ["org:admin"]})
    assert response.status_code == 422


# --- a rotated-out secret works but manages nothing -------------------------------------------------


@pytest.fixture
def rotated_out(client, alice):
    """Alice's old secret, rotated out with a day of grace."""
    response = client.post(f"/v1/tokens/{alice.token_id}/rotate", headers=alice.headers, json={"grace": "1d"})
    assert response.status_code == 200, response.text
    return alice.headers


def test_a_rotated_out_secret_still_authenticates(client, rotated_out):
    assert client.get("/v1/whoami", headers=rotated_out).status_code == 200


def test_a_rotated_out_secret_rotating_its_own_token_lost_a_race_409(client, alice, rotated_out):
    response = client.post(f"/v1/tokens/{alice.token_id}/rotate", headers=rotated_out, json={})
    assert response.status_code == 409 and "use the new secret" in response.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("DELETE", "/v1/tokens/{self}", None),
    ("POST", "/v1/tokens", {"name": "from the old secret"}),
    ("POST", "/v1/object-storage/access-keys", {"durationSeconds": 3600}),
], ids=["delete", "mint-token", "mint-access-key"])
def test_a_rotated_out_secret_cannot_manage_credentials(client, alice, rotated_out, method, path, body):
    response = client.request(method, path.format(self=alice.token_id), headers=rotated_out, json=body)
    assert response.status_code == 403, response.text
    assert "rotated out" in response.json()["detail"]


def test_a_rotated_out_secret_cannot_use_the_sdk_exchange(client, rotated_out):
    response = client.get("/v1/object-storage/temporary-credentials", headers=rotated_out)
    assert response.status_code == 403


# --- audited whichever door ----------------------------------------------------------------------


def count(database, action):
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action))


def test_creating_and_deleting_a_vpc_over_the_api_is_audited(client, admin, database):
    created = client.post("/v1/vpcs", headers=admin.headers, json={"name": "v1", "region": "r1",
                                                                   "cidr": "10.1.0.0/16"})
    assert created.status_code == 201, created.text
    assert client.delete(f"/v1/vpcs/{created.json()['id']}", headers=admin.headers).status_code == 204
    assert (count(database, "vpc.created"), count(database, "vpc.deleted")) == (1, 1)


def test_a_password_sign_in_is_refused_and_audited_the_same_for_an_unknown_user(client, database):
    response = client.post("/v1/auth/token", json={"username": "nobody", "password": "x" * 12, "name": "cli"})
    assert response.status_code == 401
    assert count(database, "auth.sign_in") == 1


def test_grace_expires_then_the_old_secret_is_refused(client, alice, rotated_out, clock):
    clock.advance(timedelta(days=1, seconds=1))
    assert client.get("/v1/whoami", headers=rotated_out).status_code == 401


def test_a_webhook_url_path_never_reaches_the_audit_log(client, admin, database, settings):
    response = client.post("/v1/webhooks", headers=admin.headers,
                           json={"url": "http://127.0.0.1:9/hooks/receiver-own-secret-path"})
    assert response.status_code == 201, response.text
    with database.session() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "webhook.created")).all()
    assert "receiver-own-secret-path" not in (event.details or "")
    assert "127.0.0.1" in (event.details or "")


def test_a_token_minted_by_a_view_token_cannot_get_edit_on_its_cluster(client, admin, alice):
    add_cluster(client, admin, "prod")
    viewer, _ = limited(client, alice, ["tokens:write", "kubernetes"], clusters=["prod=view"])
    wider = client.post("/v1/tokens", headers=viewer, json={"name": "wider", "clusters": ["prod=edit"]})
    assert wider.status_code == 403 and "'view'" in wider.json()["detail"]
    same = client.post("/v1/tokens", headers=viewer, json={"name": "same", "clusters": ["prod=view"]})
    assert same.status_code == 201, same.text


def test_a_view_token_cannot_rotate_an_edit_token_on_the_same_cluster(client, admin, alice):
    add_cluster(client, admin, "prod")
    _, editor_id = limited(client, alice, ["tokens:write", "kubernetes"], clusters=["prod=edit"])
    viewer, _ = limited(client, alice, ["tokens:write", "kubernetes"], clusters=["prod=view"])
    response = client.post(f"/v1/tokens/{editor_id}/rotate", headers=viewer, json={})
    assert response.status_code == 403


def test_a_new_password_equal_to_the_current_one_is_refused_by_the_operation_behind_every_door(client):
    response = client.post("/v1/auth/password", json={"username": "anyone", "password": "same-password-1",
                                                      "new_password": "same-password-1"})
    assert response.status_code == 422 and "must differ" in response.json()["detail"]
