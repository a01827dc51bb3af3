"""Rotation without downtime: a new secret for the same token, the old one works for a grace period."""

import os
import shutil
import subprocess
from datetime import timedelta

from sqlalchemy import select

from tests.conftest import SECRET_KEY, require
from tests.pki import CA_PEM
from tokensmith.db.models import Cluster, User
from tokensmith.tokens.service import TokenService


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def rotate(client, account, token_id, **body):
    return client.post(f"/v1/tokens/{token_id}/rotate", json=body, headers=account.headers)


def whoami_token(client, secret):
    return client.get("/v1/whoami", headers=bearer(secret))


def test_rotation_returns_a_new_secret_for_the_same_token(client, alice):
    created = client.post("/v1/tokens", json={"name": "ci", "note": "deploys", "scopes": ["tokens:read"]},
                          headers=alice.headers).json()
    response = rotate(client, alice, created["token"]["id"], grace="1h")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    rotated = response.json()
    assert rotated["secret"] != created["secret"]
    for field in ("id", "name", "note", "scopes", "clusters", "expires_at"):
        assert rotated["token"][field] == created["token"][field]
    assert rotated["token"]["hint"] == rotated["secret"][-4:]


def test_old_secret_works_during_grace_and_is_refused_after_it(client, alice, clock):
    rotated = rotate(client, alice, alice.token_id, grace="1h").json()
    old, new = whoami_token(client, alice.secret), whoami_token(client, rotated["secret"])
    assert old.status_code == new.status_code == 200
    assert old.json()["token"]["id"] == new.json()["token"]["id"] == alice.token_id
    clock.advance(timedelta(minutes=59))
    assert whoami_token(client, alice.secret).status_code == 200
    clock.advance(timedelta(minutes=1))
    assert whoami_token(client, alice.secret).status_code == 401
    assert whoami_token(client, rotated["secret"]).status_code == 200


def test_grace_zero_refuses_the_old_secret_at_once(client, alice):
    rotated = rotate(client, alice, alice.token_id, grace="0s").json()
    assert whoami_token(client, alice.secret).status_code == 401
    assert whoami_token(client, rotated["secret"]).status_code == 200


def test_default_grace_is_zero(client, alice):
    assert client.post(f"/v1/tokens/{alice.token_id}/rotate", headers=alice.headers).status_code == 200
    assert whoami_token(client, alice.secret).status_code == 401


def test_rotating_again_ends_the_first_secrets_grace(client, alice):
    first = rotate(client, alice, alice.token_id, grace="1d").json()
    second = client.post(f"/v1/tokens/{alice.token_id}/rotate", json={"grace": "1h"},
                         headers=bearer(first["secret"])).json()
    assert whoami_token(client, alice.secret).status_code == 401
    assert whoami_token(client, first["secret"]).status_code == 200
    assert whoami_token(client, second["secret"]).status_code == 200


def test_grace_beyond_seven_days_or_malformed_is_422(client, alice):
    for grace in ("8d", "169h", "soon", "-1h"):
        response = rotate(client, alice, alice.token_id, grace=grace)
        assert response.status_code == 422, grace
        assert "grace" in response.json()["detail"]
    assert whoami_token(client, alice.secret).status_code == 200


def test_rotation_can_set_a_new_expiry(client, alice, clock):
    rotated = rotate(client, alice, alice.token_id, expiration="90d").json()
    assert rotated["token"]["expires_at"].startswith(str((clock.now() + timedelta(days=90)).date()))


def test_others_tokens_cannot_be_rotated(client, alice, bob, mallory):
    assert rotate(client, bob, alice.token_id).status_code == 404
    assert rotate(client, mallory, alice.token_id).status_code == 404
    assert whoami_token(client, alice.secret).status_code == 200


def test_revoking_a_rotated_token_refuses_both_secrets(client, alice):
    rotated = rotate(client, alice, alice.token_id, grace="1h").json()
    assert client.delete(f"/v1/tokens/{alice.token_id}", headers=bearer(rotated["secret"])).status_code == 204
    assert whoami_token(client, alice.secret).status_code == 401
    assert whoami_token(client, rotated["secret"]).status_code == 401


def test_rotation_can_reissue_a_kubeconfig_that_kubectl_reads(client, admin, database, clock, tmp_path):
    require(shutil.which("kubectl") is not None, "kubectl checks the re-issued kubeconfig")
    body = {"name": "prod", "server": "https://10.0.0.1:6443", "certificate_authority": CA_PEM, "region": "eu-1"}
    assert client.post("/v1/clusters", json=body, headers=admin.headers).status_code == 201
    with database.session() as session:
        owner = session.scalar(select(User).where(User.username == "admin"))
        cluster = session.scalar(select(Cluster))
        token_id = TokenService(session, clock, SECRET_KEY).create(owner, "kube", clusters=[cluster]).token.public_id
    rotated = rotate(client, admin, token_id, grace="0s", kubeconfig=True).json()
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(rotated["kubeconfig"])
    result = subprocess.run(
        ["kubectl", "config", "view", "--raw", "--kubeconfig", str(path), "-o", "jsonpath={.users[0].user.token}"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "KUBECACHEDIR": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == rotated["secret"]


def test_kubeconfig_for_a_token_without_clusters_is_422(client, alice):
    response = rotate(client, alice, alice.token_id, kubeconfig=True)
    assert response.status_code == 422
    assert whoami_token(client, alice.secret).status_code == 200  # nothing half-done


def test_a_cached_rotated_out_secret_stops_at_the_end_of_its_grace(client, alice, clock):
    old = alice.headers
    client.post(f"/v1/tokens/{alice.token_id}/rotate", json={"grace": "1h"}, headers=old)
    assert client.get("/v1/whoami", headers=old).status_code == 200  # now in the verification cache
    clock.advance(timedelta(minutes=59, seconds=59))
    assert client.get("/v1/whoami", headers=old).status_code == 200
    clock.advance(timedelta(seconds=1))
    assert client.get("/v1/whoami", headers=old).status_code == 401
