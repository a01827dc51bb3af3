"""Clusters and VPCs: admins create and delete, members read; names work wherever ids do."""

import pytest

from tests.pki import CA_PEM


def cluster_body(**overrides):
    return {"name": "prod", "server": "https://10.0.0.1:6443", "certificate_authority": CA_PEM, "region": "eu-1",
            **overrides}


def test_admin_creates_a_vpc_and_a_cluster_in_it(client, admin):
    vpc = client.post("/v1/vpcs", json={"name": "main", "region": "eu-1", "cidr": "10.0.0.0/16"},
                      headers=admin.headers)
    assert vpc.status_code == 201
    assert vpc.json()["id"].startswith("vpc_")
    cluster = client.post("/v1/clusters", json=cluster_body(vpc="main"), headers=admin.headers)
    assert cluster.status_code == 201, cluster.text
    assert cluster.json()["vpc"] == vpc.json()["id"]
    assert cluster.json()["id"].startswith("cls_")
    assert "BEGIN CERTIFICATE" in cluster.json()["certificate_authority"]


def test_members_read_clusters_by_id_or_name(client, admin, alice):
    created = client.post("/v1/clusters", json=cluster_body(), headers=admin.headers).json()
    assert client.get(f"/v1/clusters/{created['id']}", headers=alice.headers).json()["name"] == "prod"
    assert client.get("/v1/clusters/prod", headers=alice.headers).json()["id"] == created["id"]
    assert [c["name"] for c in client.get("/v1/clusters", headers=alice.headers).json()["items"]] == ["prod"]


def test_the_audience_defaults_to_the_server_url(client, admin):
    created = client.post("/v1/clusters", json=cluster_body(), headers=admin.headers).json()
    assert created["audience"] == "https://10.0.0.1:6443"


def test_an_admin_sets_and_resets_the_audience(client, admin):
    created = client.post("/v1/clusters", json=cluster_body(audience="tokensmith"), headers=admin.headers)
    assert created.json()["audience"] == "tokensmith"
    reset = client.patch("/v1/clusters/prod", json={"audience": None}, headers=admin.headers)
    assert reset.status_code == 200 and reset.json()["audience"] == "https://10.0.0.1:6443"


@pytest.mark.parametrize("audience", ["two words", "tab\there", "x" * 2049], ids=["space", "control", "too-long"])
def test_a_bad_audience_is_422_and_changes_nothing(client, admin, audience):
    client.post("/v1/clusters", json=cluster_body(), headers=admin.headers)
    response = client.patch("/v1/clusters/prod", json={"audience": audience}, headers=admin.headers)
    assert response.status_code == 422
    assert "audience" in response.text
    assert client.get("/v1/clusters/prod", headers=admin.headers).json()["audience"] == "https://10.0.0.1:6443"


def test_members_cannot_change_the_audience(client, admin, alice):
    client.post("/v1/clusters", json=cluster_body(), headers=admin.headers)
    assert client.patch("/v1/clusters/prod", json={"audience": "x"}, headers=alice.headers).status_code == 403


def test_members_cannot_create_or_delete(client, admin, alice):
    assert client.post("/v1/clusters", json=cluster_body(), headers=alice.headers).status_code == 403
    client.post("/v1/clusters", json=cluster_body(), headers=admin.headers)
    assert client.delete("/v1/clusters/prod", headers=alice.headers).status_code == 403
    assert client.post("/v1/vpcs", json={"name": "v", "region": "r", "cidr": "10.0.0.0/8"},
                       headers=alice.headers).status_code == 403


def test_admin_deletes_by_name(client, admin):
    client.post("/v1/clusters", json=cluster_body(), headers=admin.headers)
    assert client.delete("/v1/clusters/prod", headers=admin.headers).status_code == 204
    assert client.get("/v1/clusters/prod", headers=admin.headers).status_code == 404


def test_duplicate_names_conflict(client, admin):
    client.post("/v1/clusters", json=cluster_body(), headers=admin.headers)
    response = client.post("/v1/clusters", json=cluster_body(), headers=admin.headers)
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"server": "http://10.0.0.1:6443"}, "https"),
        ({"server": "not a url"}, "https"),
        ({"server": "https://user:pw@10.0.0.1"}, "credentials"),
        ({"server": "https://10.0.0.1:99999"}, "valid https URL"),
        ({"certificate_authority": "garbage"}, "PEM"),
        ({"certificate_authority": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}, "PEM"),
        ({"name": "bad name!"}, "may contain only"),
        ({"vpc": "nope"}, "not found"),
    ],
)
def test_bad_cluster_input_is_refused(client, admin, overrides, fragment):
    response = client.post("/v1/clusters", json=cluster_body(**overrides), headers=admin.headers)
    assert response.status_code in (404, 422)
    assert fragment in response.json()["detail"]
    assert client.get("/v1/clusters", headers=admin.headers).json()["items"] == []


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "10.0.0.1/16", "banana", "300.0.0.0/8"])
def test_bad_cidr_is_422(client, admin, cidr):
    response = client.post("/v1/vpcs", json={"name": "v", "region": "r", "cidr": cidr}, headers=admin.headers)
    assert response.status_code == 422
    assert "cidr" in response.json()["detail"]


def test_ipv6_cidr_is_accepted(client, admin):
    response = client.post("/v1/vpcs", json={"name": "v6", "region": "r", "cidr": "fd00::/48"}, headers=admin.headers)
    assert response.status_code == 201
