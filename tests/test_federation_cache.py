"""The exchange's cache of trust policies: every change reaches the next exchange.

An exchange keeps its issuer's policies (with their clusters, service account and organization
policy) in memory (federation/exchange.py). Each test exchanges once first, so the cache holds the
policy, then changes something and exchanges again: the second answer must be the database's.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tests import test_federation
from tests.conftest import SECRET_KEY
from tests.test_federation import exchange, make_policy, refused
from tokensmith.api.app import create_app
from tokensmith.db.database import Database
from tokensmith.db.models import Token, User

# The federation module's fixtures (its settings, local issuer, clock and service account) serve here too.
settings, issuer, now, deployer = (test_federation.settings, test_federation.issuer, test_federation.now,
                                   test_federation.deployer)


@pytest.fixture
def cached(client, admin, deployer, issuer, now) -> dict:
    """A policy that has served one exchange, so this process holds it in its cache."""
    policy = make_policy(client, admin, issuer, scopes=["tokens:read", "kubernetes"])
    assert exchange(client, issuer.token(now)).status_code == 200
    return policy


@pytest.fixture
def other_worker(settings, database, clock):
    """A second server process's app on the same database (its own engine, change feed and caches)."""
    second = Database(database.url)
    with TestClient(create_app(settings, second, SECRET_KEY, clock), raise_server_exceptions=False) as client:
        yield client
    second.dispose()


def test_a_deleted_policy_is_refused_at_the_next_exchange(client, admin, cached, issuer, now):
    assert client.delete("/v1/trust-policies/ci", headers=admin.headers).status_code == 204
    assert "not registered" in refused(exchange(client, issuer.token(now)))


def test_a_new_policy_for_a_cached_issuer_matches_at_the_next_exchange(client, admin, cached, issuer, now):
    make_policy(client, admin, issuer, name="deploy", subject="system:serviceaccount:deploy:*")
    assert exchange(client, issuer.token(now, sub="system:serviceaccount:deploy:app")).status_code == 200


def test_a_disabled_service_account_is_refused_at_the_next_exchange(client, admin, cached, issuer, now):
    client.patch("/v1/service-accounts/deployer", json={"disabled": True}, headers=admin.headers)
    assert "disabled" in refused(exchange(client, issuer.token(now)))


def test_a_reenabled_service_account_exchanges_again(client, admin, cached, issuer, now):
    client.patch("/v1/service-accounts/deployer", json={"disabled": True}, headers=admin.headers)
    refused(exchange(client, issuer.token(now)))
    client.patch("/v1/service-accounts/deployer", json={"disabled": False}, headers=admin.headers)
    assert exchange(client, issuer.token(now)).status_code == 200


def test_a_deleted_service_account_is_refused_at_the_next_exchange(client, admin, cached, issuer, now):
    assert client.delete("/v1/service-accounts/deployer", headers=admin.headers).status_code == 204
    assert "not registered" in refused(exchange(client, issuer.token(now)))


def test_a_disabled_account_is_refused_even_when_no_cache_heard_of_it(client, cached, issuer, now, database):
    # Behind every cache's back (no ORM, no change feed): the token's INSERT itself checks the account.
    with database.engine.begin() as connection:
        connection.execute(update(User.__table__).where(User.__table__.c.username == "deployer")
                           .values(disabled=True))
    assert "disabled" in refused(exchange(client, issuer.token(now)))


def test_a_refusal_after_a_stale_cache_writes_no_token(client, cached, issuer, now, database):
    with database.engine.begin() as connection:
        connection.execute(update(User.__table__).where(User.__table__.c.username == "deployer")
                           .values(disabled=True))
    refused(exchange(client, issuer.token(now)))
    with database.session() as session:
        assert len(session.scalars(select(Token).where(Token.federated_issuer.is_not(None))).all()) == 1


def test_an_organization_policy_change_drops_the_cached_policies(client, app, admin, cached, issuer):
    # Its limits (maximum lifetime, S3 key allowance) are read with the policy: none may be stale.
    policies = app.state.context.units.federation.policies
    assert policies.held(issuer.url) is not None
    response = client.put("/v1/org/policy", json={"max_lifetime_days": 1, "default_expiration": "1d"},
                          headers=admin.headers)
    assert response.status_code == 200, response.text
    assert policies.held(issuer.url) is None


def test_a_removed_cluster_is_no_longer_granted_at_the_next_exchange(client, admin, deployer, issuer, now):
    from tests.pki import CA_PEM

    cluster = {"name": "prod", "server": "https://127.0.0.1:6443", "certificate_authority": CA_PEM, "region": "r1"}
    assert client.post("/v1/clusters", json=cluster, headers=admin.headers).status_code == 201
    make_policy(client, admin, issuer, scopes=["kubernetes"], clusters=["prod"])
    assert "kubeconfig" in exchange(client, issuer.token(now), kubeconfig="true").json()
    assert client.delete("/v1/clusters/prod", headers=admin.headers).status_code == 204
    assert "grants no clusters" in refused(exchange(client, issuer.token(now), kubeconfig="true"), 400,
                                           "invalid_request")


def test_another_worker_refuses_a_service_account_disabled_here(client, admin, cached, other_worker, issuer, now):
    assert exchange(other_worker, issuer.token(now)).status_code == 200  # its cache holds the policy too
    client.patch("/v1/service-accounts/deployer", json={"disabled": True}, headers=admin.headers)
    assert "disabled" in refused(exchange(other_worker, issuer.token(now)))


def test_another_worker_refuses_a_policy_deleted_here(client, admin, cached, other_worker, issuer, now):
    assert exchange(other_worker, issuer.token(now)).status_code == 200
    assert client.delete("/v1/trust-policies/ci", headers=admin.headers).status_code == 204
    refused(exchange(other_worker, issuer.token(now)))
