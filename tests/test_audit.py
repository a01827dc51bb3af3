"""The audit log: append-only events for every lifecycle action, readable by admins, never a secret."""

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import SECRET_KEY
from tests.pki import CA_PEM
from tokensmith import secrets
from tokensmith.accounts.service import AccountService
from tokensmith.db.models import AuditEvent
from tokensmith.leaks import LeakService
from tokensmith.objectstore.crypto import KeyRing
from tokensmith.webhooks.worker import DeliveryWorker

PASSWORD = "correct horse battery staple"


def events(database, **where):
    with database.session() as session:
        query = select(AuditEvent).order_by(AuditEvent.id)
        for column, value in where.items():
            query = query.where(getattr(AuditEvent, column) == value)
        return list(session.scalars(query))


@pytest.fixture
def dora(database, clock, admin):
    with database.session() as session:
        accounts = AccountService(session, clock)
        accounts.create_user(accounts.get_or_create_org("default"), "dora", PASSWORD)


def test_sign_in_success_and_failure_are_recorded(client, database, dora):
    wrong = client.post("/v1/auth/token", json={"username": "dora", "password": "wrong password"})
    assert wrong.status_code == 401
    assert client.post("/v1/auth/token", json={"username": "dora", "password": PASSWORD}).status_code == 201
    failure, success = events(database, action="auth.sign_in")
    assert (failure.outcome, failure.actor_user) == ("failure", "dora")
    assert (success.outcome, success.actor_user) == ("success", "dora")
    assert success.user_agent and success.client_ip


def test_token_actions_record_actor_ip_agent_and_target(client, database, alice):
    created = client.post("/v1/tokens", json={"name": "ci"}, headers={**alice.headers, "User-Agent": "ci-bot/1"})
    token_id = created.json()["token"]["id"]
    client.post(f"/v1/tokens/{token_id}/rotate", json={"grace": "1h"}, headers=alice.headers)
    client.delete(f"/v1/tokens/{token_id}", headers=alice.headers)
    actions = [(e.action, e.target) for e in events(database, target=token_id) if e.action != "token.used_from_new_ip"]
    assert actions == [("token.created", token_id), ("token.rotated", token_id), ("token.deleted", token_id)]
    [first] = events(database, action="token.created")
    assert (first.actor_user, first.actor_token, first.user_agent) == ("alice", alice.token_id, "ci-bot/1")
    assert first.client_ip == "testclient"


def test_first_use_from_a_new_ip_is_recorded_once_per_address(app, client, database, alice):
    for _ in range(3):
        client.get("/v1/whoami", headers=alice.headers)
    with TestClient(app, client=("203.0.113.7", 5000)) as elsewhere:
        elsewhere.get("/v1/whoami", headers=alice.headers)
        elsewhere.get("/v1/whoami", headers=alice.headers)
    assert [e.client_ip for e in events(database, action="token.used_from_new_ip")] == ["testclient", "203.0.113.7"]


def test_expiry_and_policy_changes_are_recorded(client, database, clock, admin, alice, settings):
    client.put("/v1/org/policy", json={"max_lifetime_days": 90, "default_expiration": "30d"}, headers=admin.headers)
    [policy] = events(database, action="policy.updated")
    assert "at most 90 days" in policy.details and policy.actor_user == "admin"
    clock.advance(timedelta(days=31))
    DeliveryWorker(database, clock, keyring=KeyRing.from_settings(settings)).run_once()
    assert alice.token_id in {e.target for e in events(database, action="token.expired")}


def test_audit_api_filters_and_paginates_for_admins_only(client, admin, alice, bob, mallory):
    for n in range(5):
        client.post("/v1/tokens", json={"name": f"t{n}"}, headers=alice.headers)
    assert client.get("/v1/audit-events", headers=alice.headers).status_code == 403
    query = {"action": "token.created", "limit": 2}
    page = client.get("/v1/audit-events", params=query, headers=admin.headers).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    seen = [e["id"] for e in page["items"]]
    while page["next_cursor"]:
        page = client.get("/v1/audit-events", params={**query, "cursor": page["next_cursor"]},
                          headers=admin.headers).json()
        seen += [e["id"] for e in page["items"]]
    assert len(seen) == len(set(seen)) == 5
    assert seen == sorted(seen, reverse=True)
    by_prefix = client.get("/v1/audit-events", params={"action": "token.", "actor": "alice"},
                           headers=admin.headers).json()["items"]
    assert {e["action"] for e in by_prefix} == {"token.created", "token.used_from_new_ip"}
    theirs = client.get("/v1/audit-events", headers=mallory.headers).json()["items"]
    assert {e["actor_user"] for e in theirs} == {"mallory"}  # only their own organization's


def test_no_event_ever_contains_a_secret(client, app, database, clock, admin, alice, dora, settings):
    every_secret = [admin.secret, alice.secret]
    login = client.post("/v1/auth/token", json={"username": "dora", "password": PASSWORD}).json()
    client.post("/v1/auth/token", json={"username": "dora", "password": alice.secret})
    client.post("/v1/auth/token", json={"username": alice.secret, "password": "x"})
    refused = client.post("/v1/tokens", json={"name": "pasted", "note": alice.secret}, headers=alice.headers)
    assert refused.status_code == 422
    created = client.post("/v1/tokens", json={"name": alice.secret[:20], "note": "ok"},
                          headers=alice.headers).json()
    rotated = client.post(f"/v1/tokens/{created['token']['id']}/rotate", json={"grace": "1h"},
                          headers=alice.headers).json()
    hook = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=admin.headers).json()
    with database.session() as session:
        reporter = LeakService(session, clock, SECRET_KEY).create_reporter("scanner")
    client.post("/v1/leaks", json=[{"token": rotated["secret"], "url": f"https://x/?t={rotated['secret']}",
                                    "source": created["secret"]}],
                headers={"Authorization": f"Bearer {reporter.secret}"})
    client.put("/v1/org/policy", json={"default_expiration": "7d"}, headers=admin.headers)
    # TokenReview denials (kube/denials.py): the reviewed secrets and the webhook credentials stay out.
    cluster = client.post("/v1/clusters", json={"name": "prod", "server": "https://10.0.0.1:6443", "region": "eu-1",
                                "certificate_authority": CA_PEM},
                          headers=admin.headers).json()
    webhook = client.post(f"/v1/clusters/{cluster['id']}/webhook-credentials", headers=admin.headers).json()
    for credential, token in ((webhook["secret"], alice.secret), (webhook["secret"], secrets.generate()),
                              (alice.secret, created["secret"]), (webhook["secret"][:-1], alice.secret)):
        client.post(f"/v1/clusters/{cluster['id']}/tokenreview", headers={"Authorization": f"Bearer {credential}"},
                    json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}})
    app.state.context.denials.flush(force=True)
    assert {e.action for e in events(database)} >= {"kube.tokenreview.denied", "kube.webhook_credential.refused"}
    client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers)
    clock.advance(timedelta(days=40))
    DeliveryWorker(database, clock, keyring=KeyRing.from_settings(settings), timeout=0.5).run_once()
    every_secret += [login["secret"], created["secret"], rotated["secret"], hook["signing_secret"],
                     reporter.secret, webhook["secret"], PASSWORD]
    dump = json.dumps([{c.name: str(getattr(e, c.name)) for c in AuditEvent.__table__.columns}
                       for e in events(database)])
    assert len(events(database)) >= 10
    for secret in every_secret:
        assert secret not in dump


def test_admin_audit_export_writes_json_lines(client, database, alice, tmp_path):
    client.post("/v1/tokens", json={"name": "exported"}, headers=alice.headers)
    env = {**os.environ, "TOKENSMITH_DATABASE_URL": database.url, "TOKENSMITH_DATA_DIR": str(tmp_path / "d")}
    out = tmp_path / "audit.jsonl"
    result = subprocess.run([sys.executable, "-m", "tokensmith", "admin", "audit", "export", "-o", str(out)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(e["action"] == "token.created" and e["details"]["name"] == "exported" for e in lines)
    assert all(e["organization"] == "default" for e in lines)


def test_access_key_creation_and_deletion_are_recorded(client, database, alice):
    body = {"durationSeconds": 0, "attributes": {"name": "backup"}}
    created = client.post("/v1/object-storage/access-keys", json=body, headers=alice.headers).json()
    key_id = created["accessKeyId"]
    assert client.delete(f"/v1/object-storage/access-keys/{key_id}", headers=alice.headers).status_code == 204
    [made] = events(database, action="access_key.created")
    [gone] = events(database, action="access_key.deleted")
    assert made.target == gone.target == key_id
    assert made.actor_user == "alice" and made.actor_token == alice.token_id
    assert created["secretKey"] not in made.details


def test_cluster_changes_are_recorded(client, database, admin):
    body = {"name": "prod", "server": "https://10.0.0.1:6443", "certificate_authority": CA_PEM, "region": "eu-1"}
    cluster_id = client.post("/v1/clusters", json=body, headers=admin.headers).json()["id"]
    client.patch("/v1/clusters/prod", json={"audience": "tokensmith:prod"}, headers=admin.headers)
    assert client.delete("/v1/clusters/prod", headers=admin.headers).status_code == 204
    actions = [(e.action, e.actor_user) for e in events(database, target=cluster_id)]
    assert actions == [("cluster.created", "admin"), ("cluster.updated", "admin"), ("cluster.deleted", "admin")]


def test_webhook_credentials_minted_and_revoked_are_recorded_without_their_secret(client, database, admin):
    body = {"name": "prod", "server": "https://10.0.0.1:6443", "certificate_authority": CA_PEM, "region": "eu-1"}
    cluster_id = client.post("/v1/clusters", json=body, headers=admin.headers).json()["id"]
    minted = client.post("/v1/clusters/prod/webhook-credentials", headers=admin.headers).json()
    credential = minted["credential"]["id"]
    revoked = client.delete(f"/v1/clusters/prod/webhook-credentials/{credential}", headers=admin.headers)
    assert revoked.status_code == 204
    recorded = [(e.action, json.loads(e.details)["cluster"]) for e in events(database, target=credential)]
    assert recorded == [("webhook_credential.created", cluster_id), ("webhook_credential.revoked", cluster_id)]
    assert all(minted["secret"] not in (e.details or "") for e in events(database))


def test_behind_a_trusted_proxy_events_record_the_forwarded_client(database, clock, tmp_path, alice):
    from fastapi.testclient import TestClient

    from tests.conftest import SECRET_KEY
    from tokensmith.api.app import create_app
    from tokensmith.config import Settings

    settings = Settings(tmp_path / "proxied", database.url, trusted_proxies=("10.0.0.0/8",))
    app = create_app(settings, database, SECRET_KEY, clock)
    with TestClient(app, client=("10.1.2.3", 40000)) as via_proxy:
        via_proxy.post("/v1/tokens", json={"name": "proxied"},
                       headers={**alice.headers, "X-Forwarded-For": "198.51.100.23"})
    [created] = [e for e in events(database, action="token.created") if e.target != alice.token_id]
    assert created.client_ip == "198.51.100.23"
