"""The console's "Kubeconfig without a secret" choice in Create Token: a download whose users run the
tokensmith CLI (exec plugin); nothing is minted."""

import re

import yaml

from tests.pki import CA_PEM

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def add_cluster(client, account, name):
    response = client.post("/v1/clusters", headers=account.headers, json={
        "name": name, "server": "https://10.0.0.1:6443", "certificate_authority": CA_PEM, "region": "eu-1"})
    assert response.status_code == 201, response.text
    return response.json()


def choose_exec(browser_client, **fields):
    csrf = CSRF.search(browser_client.get("/tokens").text).group(1)
    return browser_client.post("/tokens", data={"csrf": csrf, "name": "", "kind": "exec", **fields})


def test_the_exec_choice_downloads_a_kubeconfig_without_a_secret_and_mints_nothing(console, client, admin, alice):
    prod = add_cluster(client, admin, "prod")
    browser_client = console(alice.user)
    response = choose_exec(browser_client, clusters=[prod["id"]])
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="kubeconfig-default-exec.yaml"'
    document = yaml.safe_load(response.text)
    [user] = document["users"]
    assert "token" not in user["user"] and "tsm_" not in response.text
    assert user["user"]["exec"]["command"] == "tokensmith"
    assert user["user"]["exec"]["args"] == ["kube-credential", "--cluster", "prod"]
    assert document["clusters"][0]["cluster"]["server"] == "https://10.0.0.1:6443"
    listed = client.get("/v1/tokens", headers=alice.headers).json()["items"]
    assert [t["id"] for t in listed] == [alice.token_id]


def test_the_exec_choice_without_clusters_reopens_the_dialog_with_the_error(console, alice):
    response = choose_exec(console(alice.user))
    assert response.status_code == 422
    assert "Pick at least one cluster" in response.text


def test_the_exec_choice_refuses_a_cluster_of_another_organization(console, client, mallory, alice):
    theirs = add_cluster(client, mallory, "secret-cluster")
    response = choose_exec(console(alice.user), clusters=[theirs["id"]])
    assert response.status_code == 422
    assert "secret-cluster" not in response.text
