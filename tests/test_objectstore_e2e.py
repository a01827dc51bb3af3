"""Object storage against a real ``tokensmith serve``: boto3's own container-credentials provider,
the access-key CLI, ``admin create-token --verify-s3`` and ``admin reencrypt``."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import boto3
import httpx
import pytest
from botocore.exceptions import CredentialRetrievalError

from tests import hygiene
from tests.s3sign import signed
from tests.servers import ServerProcess, admin_password, free_port, server_env
from tokensmith.accounts.service import AccountService
from tokensmith.bootstrap import prepare
from tokensmith.clock import SystemClock
from tokensmith.config import Settings
from tokensmith.objectstore.crypto import KeyRing
from tokensmith.objectstore.service import AccessKeyService
from tokensmith.tokens.service import TokenService
from tokensmith.verify.core import Verifier


def settings_for(data_dir, **env: str) -> Settings:
    return Settings.from_env({"TOKENSMITH_DATA_DIR": str(data_dir), **env})


def make_user_with_token(settings: Settings, username: str) -> str:
    """A token for ``username`` (created if missing), made in-process: a CLI call costs seconds."""
    boot = prepare(settings)
    with boot.database.session() as session:
        accounts = AccountService(session, SystemClock())
        user = accounts.find_user(username) or accounts.create_user(accounts.get_or_create_org("default"),
                                                                    username, None)
        secret = TokenService(session, SystemClock(), boot.secret_key).create(user, "sdk").secret
    boot.database.dispose()
    return secret


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module, with a user 'alice' whose token the tests use."""
    data = tmp_path_factory.mktemp("s3serve") / "data"
    proc = ServerProcess(data, free_port(), server_env(data))
    proc.alice = make_user_with_token(settings_for(data), "alice")
    proc.admin = make_user_with_token(settings_for(data), "admin")
    yield proc.start()
    proc.stop()


def run_cli(env: dict, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokensmith", *args], env=env, input=input, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Nothing from the machine's AWS set-up may leak in: only the container provider can answer."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def verify(server, gateway_secret: str, payload: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/object-storage/verify", json=payload,
                      headers={"Authorization": f"Bearer {gateway_secret}"})


@pytest.mark.parametrize("form", ["{}", "Bearer {}"], ids=["bare secret", "Bearer prefix"])
def test_boto3_container_provider_obtains_credentials_that_verify(server, aws_env, form):
    aws_env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{server.url}/v1/object-storage/temporary-credentials")
    aws_env.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", form.format(server.alice))
    credentials = boto3.Session().get_credentials()
    assert credentials.method == "container-role"
    frozen = credentials.get_frozen_credentials()
    assert frozen.access_key.startswith("TSMT") and len(frozen.secret_key) == 40
    hygiene.register(frozen.secret_key)  # fetched by botocore, not httpx: the server's log is checked for it
    # The credentials an SDK picked up by itself sign requests tokensmith accepts.
    payload = signed("PUT", "/bucket/from-boto3.txt", frozen.access_key, frozen.secret_key, body=b"hi")
    answer = verify(server, server.admin, payload).json()
    assert answer == {"valid": True, "accessKeyId": frozen.access_key, "user": "alice", "org": "default"}


def test_repeated_sdk_sessions_reuse_one_key(server, aws_env):
    aws_env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{server.url}/v1/object-storage/temporary-credentials")
    aws_env.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", server.alice)
    ids = {boto3.Session().get_credentials().get_frozen_credentials().access_key for _ in range(3)}
    assert len(ids) == 1


def test_boto3_with_a_bad_token_gets_no_credentials(server, aws_env):
    aws_env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{server.url}/v1/object-storage/temporary-credentials")
    aws_env.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "tsm_not_a_real_token")
    with pytest.raises(CredentialRetrievalError):
        boto3.Session().get_credentials()


def test_admin_create_token_verify_s3_makes_a_gateway_token(server):
    plain = make_user_with_token(settings_for(server.data_dir), "gateway-svc")
    result = run_cli(server.env, "admin", "create-token", "--user", "gateway-svc", "--name", "s3", "--verify-s3")
    assert result.returncode == 0, result.stderr
    gateway = result.stdout.strip()
    me = httpx.get(f"{server.url}/v1/whoami", headers={"Authorization": f"Bearer {gateway}"}).json()
    assert "object-storage:verify" in me["token"]["scopes"]
    response = verify(server, gateway, signed("GET", "/b/k", "TSMP" + "Z" * 16, "x" * 40))
    assert response.status_code == 200
    assert response.json() == {"valid": False, "reason": "unknown access key"}
    assert verify(server, plain, signed("GET", "/b/k", "TSMP" + "Z" * 16, "x" * 40)).status_code == 403


def test_access_key_cli_create_list_delete(server, tmp_path):
    env = {**server.env, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    password = admin_password(server.url, server.data_dir)
    assert run_cli(env, "login", "--url", server.url, "--username", "admin", input=password + "\n").returncode == 0
    created = run_cli(env, "access-key", "create", "--name", "backups", "--duration", "permanent")
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    assert lines[0].startswith("AWS_ACCESS_KEY_ID=TSMP") and lines[1].startswith("AWS_SECRET_ACCESS_KEY=")
    assert "not shown again" in created.stderr
    key_id, secret = lines[0].split("=", 1)[1], lines[1].split("=", 1)[1]
    listing = run_cli(env, "access-key", "list").stdout
    assert key_id in listing and "backups" in listing and "permanent" in listing and secret not in listing
    assert run_cli(env, "access-key", "delete", key_id).returncode == 0
    assert key_id not in run_cli(env, "access-key", "list").stdout
    bad = run_cli(env, "access-key", "create", "--name", "x", "--duration", "1m")
    assert bad.returncode == 1 and bad.stderr.startswith("error: 422") and "900" in bad.stderr
    assert run_cli(env, "access-key", "create", "--name", "x", "--duration", "soon").returncode == 2


def test_admin_reencrypt_moves_secrets_to_the_first_key(tmp_path):
    data = tmp_path / "data"
    old, new = os.urandom(32), os.urandom(32)
    b64 = lambda *keys: ",".join(base64.b64encode(k).decode() for k in keys)  # noqa: E731
    before = settings_for(data, TOKENSMITH_ENCRYPTION_KEYS=b64(old))
    secret = make_user_with_token(before, "alice")
    boot = prepare(before)
    identity = Verifier(boot.database, boot.secret_key, SystemClock()).verify(secret)
    with boot.database.session() as session:
        created = AccessKeyService(session, SystemClock(), KeyRing([old])).create(identity, 0, "k")
        key_id, secret_key = created.key.access_key_id, created.secret
    env = server_env(data)

    missing_old = run_cli({**env, "TOKENSMITH_ENCRYPTION_KEYS": b64(new)}, "admin", "reencrypt")
    assert missing_old.returncode == 1 and "nothing was changed" in missing_old.stderr

    result = run_cli({**env, "TOKENSMITH_ENCRYPTION_KEYS": b64(new, old)}, "admin", "reencrypt")
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 1 access key" in result.stdout
    with boot.database.session() as session:
        row = AccessKeyService(session, SystemClock(), KeyRing([new])).get(identity, key_id)
        assert AccessKeyService(session, SystemClock(), KeyRing([new])).secret_of(row) == secret_key
    boot.database.dispose()
