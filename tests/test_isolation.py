"""Organizations see nothing of each other: other organizations' resources are 404, never 403."""

import pytest

from tests.pki import CA_PEM


@pytest.fixture
def alice_token(client, alice):
    return client.post("/v1/tokens", json={"name": "alice-private"}, headers=alice.headers).json()["token"]["id"]


def test_other_orgs_admin_cannot_see_a_token(client, mallory, alice_token):
    assert client.get(f"/v1/tokens/{alice_token}", headers=mallory.headers).status_code == 404


def test_other_orgs_admin_cannot_delete_a_token(client, mallory, alice, alice_token):
    assert client.delete(f"/v1/tokens/{alice_token}", headers=mallory.headers).status_code == 404
    assert client.get(f"/v1/tokens/{alice_token}", headers=alice.headers).status_code == 200


def test_other_orgs_admin_cannot_list_a_user(client, mallory, alice):
    assert client.get("/v1/tokens?user=alice", headers=mallory.headers).status_code == 404


def test_whole_org_listing_stays_in_the_org(client, mallory, alice_token):
    items = client.get("/v1/tokens?all=true", headers=mallory.headers).json()["items"]
    assert alice_token not in {t["id"] for t in items}


def test_other_orgs_clusters_are_404(client, admin, mallory):
    body = {"name": "prod", "server": "https://10.0.0.1:6443", "certificate_authority": CA_PEM, "region": "eu-1"}
    cluster = client.post("/v1/clusters", json=body, headers=admin.headers).json()
    assert client.get(f"/v1/clusters/{cluster['id']}", headers=mallory.headers).status_code == 404
    assert client.get("/v1/clusters/prod", headers=mallory.headers).status_code == 404
    assert client.delete("/v1/clusters/prod", headers=mallory.headers).status_code == 404
    assert client.get("/v1/clusters", headers=mallory.headers).json()["items"] == []


def test_same_names_in_two_orgs_do_not_collide(client, admin, mallory):
    body = {"name": "prod", "server": "https://10.0.0.1:6443", "certificate_authority": CA_PEM, "region": "eu-1"}
    assert client.post("/v1/clusters", json=body, headers=admin.headers).status_code == 201
    assert client.post("/v1/clusters", json=body, headers=mallory.headers).status_code == 201
