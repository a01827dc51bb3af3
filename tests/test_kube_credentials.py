"""Cluster credentials for kubectl's exec plugin: a token for one cluster, scope ``kubernetes``, at most an
hour, derived from the CLI's login and refused as soon as the login is revoked, expires or its owner is
disabled (the verification cache included)."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.pki import CA_PEM
from tokensmith.db.changes import Changes
from tokensmith.db.models import AuditEvent, Token, User
from tokensmith.verify.cache import VerificationCache
from tokensmith.verify.core import Identity


def add_cluster(client, account, name, server):
    response = client.post("/v1/clusters", headers=account.headers, json={
        "name": name, "server": server, "certificate_authority": CA_PEM, "region": "eu-1"})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def prod(client, admin):
    return add_cluster(client, admin, "prod", "https://10.0.0.1:6443")


@pytest.fixture
def staging(client, admin):
    return add_cluster(client, admin, "staging", "https://10.0.0.2:6443")


def derive(client, account, cluster="prod"):
    return client.post(f"/v1/clusters/{cluster}/kube-credential", headers=account.headers)


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def review(client, admin, cluster, token):
    credential = client.post(f"/v1/clusters/{cluster['id']}/webhook-credentials", headers=admin.headers).json()
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    response = client.post(f"/v1/clusters/{cluster['id']}/tokenreview", json=body,
                           headers=bearer(credential["secret"]))
    assert response.status_code == 200, response.text
    return response.json()["status"]


def test_a_cluster_credential_holds_kubernetes_and_that_one_cluster_for_at_most_an_hour(client, alice, prod, staging,
                                                                                         clock):
    response = derive(client, alice)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    token = response.json()["token"]
    assert token["scopes"] == ["kubernetes"]
    assert [c["name"] for c in token["clusters"]] == ["prod"]
    from datetime import datetime

    assert datetime.fromisoformat(token["expires_at"]) == clock.now() + timedelta(hours=1)


def test_a_cluster_credential_authenticates_at_its_cluster_only(client, admin, alice, prod, staging):
    secret = derive(client, alice).json()["secret"]
    assert review(client, admin, prod, secret)["authenticated"] is True
    # A new cluster names tokensmith's users with its default prefix (docs/kubernetes.md).
    assert review(client, admin, prod, secret)["user"]["username"] == "tokensmith:alice"
    assert review(client, admin, staging, secret)["authenticated"] is False


def test_a_cluster_credential_cannot_manage_tokens(client, alice, prod):
    secret = derive(client, alice).json()["secret"]
    assert client.get("/v1/whoami", headers=bearer(secret)).status_code == 200
    assert client.post("/v1/tokens", headers=bearer(secret), json={"name": "x"}).status_code == 403


def test_revoking_the_login_refuses_its_cluster_credentials_at_once(client, admin, alice, prod):
    secret = derive(client, alice).json()["secret"]
    assert review(client, admin, prod, secret)["authenticated"] is True  # now cached
    assert client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers).status_code == 204
    assert review(client, admin, prod, secret)["authenticated"] is False
    assert client.get("/v1/whoami", headers=bearer(secret)).status_code == 401


def test_disabling_the_user_refuses_their_cluster_credentials(client, admin, alice, prod, database):
    secret = derive(client, alice).json()["secret"]
    assert review(client, admin, prod, secret)["authenticated"] is True
    with database.session() as session:
        session.get(User, alice.user.id).disabled = True
    assert review(client, admin, prod, secret)["authenticated"] is False


def test_a_cluster_credential_never_outlives_its_login(client, make_account, prod, clock):
    carol = make_account("carol", expiration="30m")
    response = derive(client, carol)
    assert response.status_code == 201, response.text
    from datetime import datetime

    assert datetime.fromisoformat(response.json()["token"]["expires_at"]) == clock.now() + timedelta(minutes=30)
    clock.advance(timedelta(minutes=30))
    assert client.get("/v1/whoami", headers=bearer(response.json()["secret"])).status_code == 401


def test_a_login_expired_while_its_credential_is_cached_refuses_the_credential(client, make_account, prod, clock,
                                                                               database):
    carol = make_account("carol", expiration="2h")
    secret = derive(client, carol).json()["secret"]
    assert client.get("/v1/whoami", headers=bearer(secret)).status_code == 200
    # The login's expiry moves earlier behind the cache's back (a rotation with a new expiry does this).
    with database.session() as session:
        session.scalar(select(Token).where(Token.public_id == carol.token_id)).expires_at = clock.now() + \
            timedelta(minutes=10)
    clock.advance(timedelta(minutes=10))
    assert client.get("/v1/whoami", headers=bearer(secret)).status_code == 401


def test_a_token_that_does_not_reach_the_cluster_cannot_derive_a_credential_for_it(client, alice, prod, staging):
    limited = client.post("/v1/tokens", headers=alice.headers, json={"name": "staging only", "clusters": ["staging"]})
    assert limited.status_code == 201, limited.text
    response = derive(client, type(alice)(alice.user, limited.json()["secret"], limited.json()["token"]["id"]))
    assert response.status_code == 403
    assert "prod" in response.json()["detail"]


def test_a_token_without_the_kubernetes_scope_cannot_derive_a_credential(client, alice, prod):
    limited = client.post("/v1/tokens", headers=alice.headers, json={"name": "no kube", "scopes": ["tokens:read"]})
    response = client.post("/v1/clusters/prod/kube-credential", headers=bearer(limited.json()["secret"]))
    assert response.status_code == 403
    assert "kubernetes" in response.json()["detail"]


def test_a_cluster_credential_cannot_derive_another(client, alice, prod):
    secret = derive(client, alice).json()["secret"]
    response = client.post("/v1/clusters/prod/kube-credential", headers=bearer(secret))
    assert response.status_code == 403


def test_an_unknown_cluster_is_not_found_and_mints_nothing(client, alice, prod, database):
    assert derive(client, alice, "nope").status_code == 404
    with database.session() as session:
        assert session.scalar(select(Token).where(Token.parent_token_id.is_not(None))) is None


def test_cluster_credentials_are_not_listed_among_tokens(client, alice, prod):
    derive(client, alice)
    listed = client.get("/v1/tokens", headers=alice.headers).json()["items"]
    assert [t["id"] for t in listed] == [alice.token_id]


def test_the_derivation_is_audited_with_its_login(client, alice, prod, database):
    made = derive(client, alice).json()["token"]
    with database.session() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.target == made["id"]))
    assert event.action == "token.created"
    assert event.actor_token == alice.token_id
    assert f'"parent": "{alice.token_id}"' in event.details


def _identity(token_id: int, parent: int | None) -> Identity:
    from datetime import UTC, datetime

    return Identity(token_id=token_id, token_public_id=f"tok_{token_id}", token_name="t", user_id=1,
                    user_public_id="usr_1", username="u", org_id=1, org_public_id="org_1", org_name="o",
                    is_admin=False, created_at=datetime.now(UTC), expires_at=None, cluster_ids=frozenset(),
                    scopes=frozenset(), parent_token_id=parent)


def test_the_cache_drops_a_derived_identity_when_its_parent_changes():
    cache = VerificationCache()
    cache.put("child", _identity(2, parent=1), cache.generation)
    cache.put("other", _identity(3, parent=None), cache.generation)
    cache.invalidate(Changes(token_ids={1}))
    assert cache.get("child") is None
    assert cache.get("other") is not None


def test_the_cache_sweep_sees_parents_of_cached_derived_identities():
    cache = VerificationCache()
    cache.put("child", _identity(2, parent=1), cache.generation)
    assert sorted(cache.cached_token_ids()) == [1, 2]


@pytest.mark.postgres
def test_a_second_replica_refuses_a_cluster_credential_once_its_login_is_revoked(database_url, client, alice, prod,
                                                                                 clock):
    import time

    from tests.conftest import SECRET_KEY
    from tokensmith.db.database import Database
    from tokensmith.errors import AuthenticationFailed
    from tokensmith.verify.core import Verifier

    if database_url.startswith("sqlite"):
        pytest.skip("replicas share PostgreSQL")
    secret = derive(client, alice).json()["secret"]
    other = Database(database_url)  # another process's engine
    replica = Verifier(other, SECRET_KEY, clock)
    replica.start()
    try:
        assert replica.background.listening.wait(5)
        assert replica.verify(secret).parent_token_id is not None  # cached there now
        assert client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers).status_code == 204
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            try:
                replica.verify(secret)
            except AuthenticationFailed:
                break
            time.sleep(0.005)
        else:
            pytest.fail("the second replica still accepted the cluster credential 1 s after its login was revoked")
    finally:
        replica.stop()
        replica.close()
        other.dispose()
