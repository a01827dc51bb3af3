"""The ``tokensmith`` CLI against a running server: login, whoami, tokens, admin commands."""

import json
import os
import stat
import subprocess
import sys

import pytest

from tests.pki import CA_PEM
from tests.servers import ServerProcess, admin_password, free_port, server_env
from tokensmith import secrets


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module: starting one costs seconds."""
    data = tmp_path_factory.mktemp("serve") / "data"
    proc = ServerProcess(data, free_port(), server_env(data))
    yield proc.start()
    proc.stop()


@pytest.fixture
def cli(tmp_path, server):
    base_env = {**server.env, "XDG_CONFIG_HOME": str(tmp_path / "config")}

    def run(*args: str, input: str | None = None, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "tokensmith", *args], env={**base_env, **(env or {})},
                                input=input,
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"exit {result.returncode}: {result.stderr}")
        return result

    run.config_file = tmp_path / "config" / "tokensmith" / "config.toml"
    return run


@pytest.fixture
def logged_in(cli, server):
    password = admin_password(server.url, server.data_dir)
    cli("login", "--url", server.url, "--username", "admin", input=password + "\n")
    return cli


def test_login_stores_a_token_in_a_0600_config(logged_in):
    assert stat.S_IMODE(os.stat(logged_in.config_file).st_mode) == 0o600
    assert "token = \"tsm_" in logged_in.config_file.read_text()


def test_whoami(logged_in):
    assert "admin (admin) in default" in logged_in("whoami").stdout


def test_token_create_prints_only_the_secret_on_stdout(logged_in):
    result = logged_in("token", "create", "--name", "grafana", "--expires-in", "7d", "--note", "dashboards")
    assert secrets.is_well_formed(result.stdout.strip())
    assert "not shown again" in result.stderr


def test_token_create_json(logged_in):
    body = json.loads(logged_in("token", "create", "--name", "ci", "--json").stdout)
    assert body["token"]["name"] == "ci"
    assert secrets.is_well_formed(body["secret"])


def test_token_list_shows_a_table_without_secrets(logged_in):
    secret = logged_in("token", "create", "--name", "grafana").stdout.strip()
    table = logged_in("token", "list", "--wide").stdout
    assert "grafana" in table
    assert f"…{secret[-4:]}" in table
    assert secret not in table


def test_token_delete(logged_in):
    created = json.loads(logged_in("token", "create", "--name", "temp", "--json").stdout)
    logged_in("token", "delete", created["token"]["id"])
    assert created["token"]["id"] not in logged_in("token", "list").stdout


def test_errors_are_one_line_and_non_zero(logged_in):
    result = logged_in("token", "create", "--name", "x", "--expires-in", "soon", check=False)
    assert result.returncode == 2  # refused before any request, with the server's own grammar
    assert result.stderr.startswith("error: --expires-in: expiration 'soon' is not a duration")
    assert "Traceback" not in result.stderr
    result = logged_in("token", "delete", "tok_doesnotexist", check=False)
    assert result.returncode == 1
    assert "not found" in result.stderr


def test_not_logged_in_exits_3(cli):
    result = cli("whoami", check=False)
    assert result.returncode == 3
    assert "tokensmith login" in result.stderr


def test_wrong_password_exits_3(cli, server):
    result = cli("login", "--url", server.url, "--username", "admin", input="nope-nope\n", check=False)
    assert result.returncode == 3
    assert "invalid username or password" in result.stderr


def test_admin_create_user_and_token_print_secret_alone(cli):
    cli("admin", "create-user", "gateway", "--org", "ops")
    result = cli("admin", "create-token", "--user", "gateway", "--name", "api-gateway", "--expires-in", "90d")
    assert secrets.is_well_formed(result.stdout.strip())
    assert result.stdout.count("\n") == 1


def test_admin_create_token_for_unknown_user_fails_cleanly(cli):
    result = cli("admin", "create-token", "--user", "ghost", "--name", "x", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: user 'ghost' not found"


def test_help_lists_commands(cli):
    out = cli("--help").stdout
    for command in ("serve", "login", "whoami", "token", "admin"):
        assert command in out


@pytest.fixture
def cluster_with_credential(logged_in, server):
    """A cluster 'edge' added over the API with the CLI login's token, and one webhook credential."""
    import tomllib

    import httpx

    token = tomllib.loads(logged_in.config_file.read_text())["token"]
    headers = {"Authorization": f"Bearer {token}"}
    name = f"edge-{os.urandom(3).hex()}"
    created = httpx.post(f"{server.url}/v1/clusters", headers=headers, json={
        "name": name, "server": "https://edge.example:6443", "certificate_authority": CA_PEM, "region": "eu"})
    assert created.status_code == 201, created.text
    minted = httpx.post(f"{server.url}/v1/clusters/{name}/webhook-credentials", headers=headers)
    assert minted.status_code == 201, minted.text
    return name, minted.json()


def test_cluster_list_shows_the_organizations_clusters(logged_in, cluster_with_credential):
    name, _ = cluster_with_credential
    listed = json.loads(logged_in("cluster", "list", "--json").stdout)
    assert name in [c["name"] for c in listed]


def test_cluster_credentials_list_shows_hints_never_secrets(logged_in, cluster_with_credential):
    name, minted = cluster_with_credential
    result = logged_in("cluster", "credentials", "list", name)
    assert minted["credential"]["id"] in result.stdout
    assert minted["secret"] not in result.stdout


def test_cluster_credentials_revoke_removes_the_credential(logged_in, cluster_with_credential):
    name, minted = cluster_with_credential
    credential = minted["credential"]["id"]
    logged_in("cluster", "credentials", "revoke", name, credential)
    listed = json.loads(logged_in("cluster", "credentials", "list", name, "--json").stdout)
    assert credential not in [c["id"] for c in listed]


def test_cluster_credentials_revoke_of_an_unknown_credential_is_one_line_exit_1(logged_in, cluster_with_credential):
    name, _ = cluster_with_credential
    result = logged_in("cluster", "credentials", "revoke", name, "whc_nope", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: 404") and "Traceback" not in result.stderr


def test_token_list_shows_each_clusters_access_level(logged_in, server, cluster_with_credential):
    import tomllib

    import httpx

    name, _ = cluster_with_credential
    login = tomllib.loads(logged_in.config_file.read_text())["token"]
    created = httpx.post(f"{server.url}/v1/tokens", headers={"Authorization": f"Bearer {login}"},
                         json={"name": "deployer", "clusters": [f"{name}=edit"]})
    assert created.status_code == 201, created.text
    table = logged_in("token", "list", env={"COLUMNS": "250"}).stdout
    row = next(line for line in table.splitlines() if created.json()["token"]["id"] in line)
    assert f"{name}=edit" in row
