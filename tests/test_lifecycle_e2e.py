"""Two real `tokensmith serve` replicas on one PostgreSQL database, with the real CLI.

Each replica runs its own webhook worker in the background; every event still arrives once.
"""

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import SECRET_KEY, _empty_all_tables
from tests.receiver import start_receiver
from tests.servers import ServerProcess, admin_password, free_port, server_env
from tokensmith import secrets
from tokensmith.db.database import Database
from tokensmith.webhooks import signing


@pytest.fixture(scope="module")
def receiver():
    r = start_receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, postgres_url):
    database = Database(postgres_url)
    _empty_all_tables(database)
    database.dispose()
    data = tmp_path_factory.mktemp("replicas") / "data"
    env = server_env(data, postgres_url, TOKENSMITH_SECRET_KEY=SECRET_KEY.decode(), TOKENSMITH_WEBHOOK_INTERVAL="0.2")
    servers = []
    try:
        for _ in range(2):  # one after the other: the first start creates the admin
            servers.append(ServerProcess(data, free_port(), env).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def admin_headers(replicas):
    password = admin_password(replicas[0].url, replicas[0].data_dir)
    created = httpx.post(f"{replicas[0].url}/v1/auth/token",
                         json={"username": "admin", "password": password}, timeout=30).json()
    return {"Authorization": f"Bearer {created['secret']}"}


@pytest.fixture(scope="module")
def hook(replicas, admin_headers, receiver):
    response = httpx.post(f"{replicas[0].url}/v1/webhooks", json={"url": receiver.url}, headers=admin_headers)
    assert response.status_code == 201
    return response.json()


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_each_event_is_delivered_exactly_once_by_two_replicas(replicas, admin_headers, hook, receiver):
    receiver.reset()
    ids = []
    for n in range(10):
        created = httpx.post(f"{replicas[0].url}/v1/tokens", json={"name": f"r{n}"}, headers=admin_headers).json()
        ids.append(created["token"]["id"])
    for n, token_id in enumerate(ids):
        server = replicas[n % 2]
        assert httpx.delete(f"{server.url}/v1/tokens/{token_id}", headers=admin_headers).status_code == 204
    assert wait_for(lambda: len(receiver.of_type("token.revoked")) >= 10)
    time.sleep(1.0)  # let both workers run several more passes
    revoked = receiver.of_type("token.revoked")
    assert sorted(r.json["data"]["token"]["id"] for r in revoked) == sorted(ids)
    assert len({r.headers["x-tokensmith-delivery"] for r in revoked}) == len(revoked) == 10
    assert all(signing.verify(hook["signing_secret"], r.headers["x-tokensmith-signature"], r.body) for r in revoked)


@pytest.fixture
def cli(tmp_path, replicas, admin_headers):
    config = tmp_path / "config"
    (config / "tokensmith").mkdir(parents=True)
    secret = admin_headers["Authorization"].removeprefix("Bearer ")
    (config / "tokensmith" / "config.toml").write_text(f'url = "{replicas[0].url}"\ntoken = "{secret}"\n')
    env = {**replicas[0].env, "XDG_CONFIG_HOME": str(config)}

    def run(*args, extra_env=None, check=True):
        result = subprocess.run([sys.executable, "-m", "tokensmith", *args], env={**env, **(extra_env or {})},
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"exit {result.returncode}: {result.stderr}")
        return result

    return run


def test_cli_rotate_prints_the_new_secret_and_the_old_one_keeps_working_for_the_grace(cli, replicas, admin_headers):
    created = httpx.post(f"{replicas[0].url}/v1/tokens", json={"name": "cli-rotate"}, headers=admin_headers).json()
    result = cli("token", "rotate", created["token"]["id"], "--grace", "1h")
    new = result.stdout.strip()
    assert secrets.is_well_formed(new) and new != created["secret"]
    for secret in (created["secret"], new):
        me = httpx.get(f"{replicas[1].url}/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
        assert me.json()["token"]["id"] == created["token"]["id"]


def test_scan_report_revokes_what_it_finds_and_the_org_hears_of_it(cli, replicas, admin_headers, receiver, hook,
                                                                   tmp_path):
    receiver.reset()
    created = httpx.post(f"{replicas[0].url}/v1/tokens", json={"name": "leaky"}, headers=admin_headers).json()
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "deploy.sh").write_text(f"#!/bin/sh\ncurl -H 'Authorization: Bearer {created['secret']}'\n")
    reporter = cli("admin", "create-reporter", "ci-scanner").stdout.strip()
    assert secrets.is_well_formed(reporter, secrets.REPORTER_PREFIX)
    result = cli("scan", "--report", str(tmp_path / "repo"), extra_env={"TOKENSMITH_REPORTER_TOKEN": reporter},
                 check=False)
    assert result.returncode == 1
    assert "deploy.sh:2:" in result.stdout and created["secret"] not in result.stdout
    me = httpx.get(f"{replicas[1].url}/v1/whoami", headers={"Authorization": f"Bearer {created['secret']}"})
    assert me.status_code == 401
    assert wait_for(lambda: receiver.of_type("token.leaked"))
    [leaked] = receiver.of_type("token.leaked")
    assert leaked.json["data"]["token"]["id"] == created["token"]["id"]
    assert "deploy.sh" in leaked.json["data"]["found"]["url"]


def test_audit_export_from_the_cli(cli, replicas, admin_headers):
    # A leak of its own (reported to the other replica), so the export has a line this test caused.
    created = httpx.post(f"{replicas[0].url}/v1/tokens", json={"name": "exported"}, headers=admin_headers).json()
    reporter = cli("admin", "create-reporter", "audit-export").stdout.strip()
    reported = httpx.post(f"{replicas[1].url}/v1/leaks", headers={"Authorization": f"Bearer {reporter}"},
                          json=[{"token": created["secret"], "url": "https://gist.example.com/x", "source": "test"}])
    assert reported.status_code == 202

    def exported() -> bool:  # the audit entry is written just after the answer (LeakService.announce)
        records = [json.loads(line) for line in cli("admin", "audit", "export").stdout.splitlines()]
        return any(r["action"] == "token.leaked" and r["target"] == created["token"]["id"] for r in records)

    assert wait_for(exported)
    assert os.environ.get("TOKENSMITH_REPORTER_TOKEN") is None
