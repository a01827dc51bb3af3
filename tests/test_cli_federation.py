"""``tokensmith service-account`` and ``tokensmith trust-policy`` against a running server."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.oidc import OidcIssuer
from tests.servers import ServerProcess, admin_password, free_port, server_env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("serve") / "data"
    proc = ServerProcess(data, free_port(), server_env(data, TOKENSMITH_ALLOW_LOOPBACK_HTTP_ISSUERS="1"))
    yield proc.start()
    proc.stop()


@pytest.fixture
def cli(tmp_path, server):
    env = {**server.env, "XDG_CONFIG_HOME": str(tmp_path / "config")}

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "tokensmith", *args], env=env, input=input,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
        return result

    password = admin_password(server.url, server.data_dir)
    run("login", "--url", server.url, "--username", "admin", input=password + "\n")
    return run


def test_service_account_commands_create_list_mint_and_disable(cli, server):
    cli("service-account", "create", "backup-bot")
    # The module's server is shared: other tests' service accounts may be listed too.
    listed = {a["name"]: a for a in json.loads(cli("service-account", "list", "--json").stdout)}
    assert listed["backup-bot"]["id"].startswith("svc_")
    secret = cli("service-account", "token", "backup-bot", "--name", "nightly", "--expires-in", "30d").stdout.strip()
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{server.url}/v1/whoami", headers=headers).json()["user"]["kind"] == "service"
    cli("service-account", "disable", "backup-bot")
    assert httpx.get(f"{server.url}/v1/whoami", headers=headers).status_code == 401
    cli("service-account", "delete", "backup-bot")
    assert "backup-bot" not in [a["name"] for a in json.loads(cli("service-account", "list", "--json").stdout)]


def test_trust_policy_create_with_a_jwks_file_then_exchange(cli, server, tmp_path):
    cli("service-account", "create", "ci-bot")
    with OidcIssuer() as issuer:
        jwks = tmp_path / "jwks.json"
        jwks.write_text(json.dumps(issuer.jwks()))
        created = cli("trust-policy", "create", "gha", "--service-account", "ci-bot", "--audience", "tokensmith",
                      "--issuer", "https://token.actions.githubusercontent.com", "--jwks-file", str(jwks),
                      "--condition", "/repository=octo-org/*", "--scope", "tokens:read").stdout
        assert "AWS_ROLE_ARN=arn:tokensmith:iam::default:role/gha" in created
        token = issuer.token(time.time(), iss="https://token.actions.githubusercontent.com",
                             repository="octo-org/app")
    answer = httpx.post(f"{server.url}/v1/oauth2/token", data={
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": token,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["scope"] == "tokens:read"
    assert "gha" in cli("trust-policy", "list").stdout
    cli("trust-policy", "delete", "gha")
    assert json.loads(cli("trust-policy", "list", "--json").stdout) == []
