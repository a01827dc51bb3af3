"""Workload identity federation: trust policies and the RFC 8693 exchange, against a real local OIDC issuer.

The issuer (tests/oidc.py) makes its own keys and serves discovery and JWKS on loopback; tokensmith
fetches them through the outbound rules with TOKENSMITH_ALLOW_LOOPBACK_HTTP_ISSUERS on.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import LOOPBACK_NETWORKS, SECRET_KEY
from tests.oidc import OidcIssuer
from tokensmith.api.app import create_app
from tokensmith.config import Settings
from tokensmith.db.models import AuditEvent, Token
from tokensmith.net.outbound import parse_networks

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


@pytest.fixture
def settings(tmp_path: Path, database) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database.url,
                    webhook_allowed_networks=parse_networks(LOOPBACK_NETWORKS), allow_loopback_http_issuers=True)


@pytest.fixture
def issuer():
    with OidcIssuer() as running:
        yield running


@pytest.fixture
def now(clock) -> float:
    return clock.now().timestamp()


@pytest.fixture
def deployer(client, admin) -> dict:
    response = client.post("/v1/service-accounts", json={"name": "deployer"}, headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def make_policy(client, admin, oidc: OidcIssuer, **fields) -> dict:
    body = {"name": "ci", "service_account": "deployer", "issuer": oidc.url, "audience": "tokensmith",
            "subject": "system:serviceaccount:ci:*", **fields}
    response = client.post("/v1/trust-policies", json=body, headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def exchange(client, subject_token: str, **extra):
    return client.post("/v1/oauth2/token", data={"grant_type": GRANT, "subject_token": subject_token,
                                                 "subject_token_type": JWT_TYPE, **extra})


def refused(response, status: int = 400, error: str = "invalid_grant") -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    return body["error_description"]


# --- the exchange ---------------------------------------------------------------------------------


def test_a_matching_token_is_exchanged_for_a_short_lived_token_of_the_service_account(
        client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer, scopes=["tokens:read", "clusters:read"])
    response = exchange(client, issuer.token(now))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "clusters:read tokens:read"
    who = client.get("/v1/whoami", headers={"Authorization": f"Bearer {body['access_token']}"}).json()
    assert who["user"] == {"id": deployer["id"], "username": "deployer", "is_admin": False, "kind": "service"}
    assert who["token"]["federated"] == {"issuer": issuer.url, "subject": "system:serviceaccount:ci:deployer"}


def test_the_exchanged_token_is_revocable_like_any_other(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    secret = exchange(client, issuer.token(now)).json()["access_token"]
    listed = client.get("/v1/tokens", params={"all": "true"}, headers=admin.headers).json()["items"]
    [federated] = [t for t in listed if t["federated"] is not None]
    assert federated["owner"]["kind"] == "service"
    assert client.delete(f"/v1/tokens/{federated['id']}", headers=admin.headers).status_code == 204
    assert client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_a_token_from_an_unregistered_issuer_is_refused(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    with OidcIssuer() as stranger:
        assert "issuer is not registered" in refused(exchange(client, stranger.token(now)))


def test_a_wrong_audience_is_refused_naming_the_audience(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    assert refused(exchange(client, issuer.token(now, aud="someone-else"))).startswith("audience")


def test_an_audience_list_containing_the_policy_audience_matches(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    assert exchange(client, issuer.token(now, aud=["other", "tokensmith"])).status_code == 200


def test_an_expired_token_is_refused(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    assert "expired" in refused(exchange(client, issuer.token(now - 3600, exp=int(now) - 61)))


def test_expiry_allows_sixty_seconds_of_clock_skew(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    assert exchange(client, issuer.token(now - 600, exp=int(now) - 59)).status_code == 200


def test_a_token_not_valid_yet_is_refused(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    assert "not valid yet" in refused(exchange(client, issuer.token(now, nbf=int(now) + 120)))
    assert "not valid yet" in refused(exchange(client, issuer.token(now + 120)))


def test_a_token_older_than_the_policys_maximum_age_is_refused(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer, max_token_age_seconds=600)
    old = issuer.token(now - 700, exp=int(now) + 3600)
    assert "too old" in refused(exchange(client, old))


def test_the_default_maximum_age_is_one_day(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    assert exchange(client, issuer.token(now - 86000, exp=int(now) + 60)).status_code == 200
    assert "too old" in refused(exchange(client, issuer.token(now - 86500, exp=int(now) + 60)))


def test_alg_none_is_refused(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    unsigned = jwt.encode(issuer.claims(now), None, algorithm="none")
    assert "'none' is not accepted" in refused(exchange(client, unsigned))


def test_an_hmac_token_signed_with_the_issuers_public_key_is_refused(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    public_pem = issuer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": issuer.kid}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(issuer.claims(now)).encode()).rstrip(b"=")
    import hashlib
    import hmac

    signature = base64.urlsafe_b64encode(hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest())
    forged = b".".join([header, payload, signature.rstrip(b"=")]).decode()
    assert "'HS256' is not accepted" in refused(exchange(client, forged))


def test_a_token_signed_by_another_key_with_the_issuers_kid_is_refused(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    with OidcIssuer() as impostor:
        impostor.kid = issuer.kid
        forged = impostor.token(now, iss=issuer.url)
    assert "signature does not verify" in refused(exchange(client, forged))


@pytest.fixture
def monotonic(client) -> list[float]:
    """The JWKS cache's clock, moved by the test: ``monotonic[0] += 11``."""
    moment = [1000.0]
    client.app.state.context.units.federation.jwks.monotonic = lambda: moment[0]
    return moment


def test_a_rotated_key_is_picked_up_by_its_new_kid(client, admin, deployer, issuer, now, monotonic):
    make_policy(client, admin, issuer)
    assert exchange(client, issuer.token(now)).status_code == 200
    fetches = issuer.requests.count("/jwks")
    issuer.rotate()
    monotonic[0] += 11  # the new key is first used a while after the last fetch
    assert exchange(client, issuer.token(now)).status_code == 200
    assert issuer.requests.count("/jwks") == fetches + 1


def test_unknown_key_ids_refetch_the_jwks_at_most_once_per_ten_seconds(client, admin, deployer, issuer, now,
                                                                     monotonic):
    make_policy(client, admin, issuer)
    assert exchange(client, issuer.token(now)).status_code == 200
    monotonic[0] += 11
    for n in range(5):
        refused(exchange(client, issuer.token(now, headers={"kid": f"forged-{n}"})))
    assert issuer.requests.count("/jwks") == 2


def test_the_jwks_is_cached_between_exchanges(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    for _ in range(3):
        assert exchange(client, issuer.token(now)).status_code == 200
    assert issuer.requests.count("/jwks") == 1


def test_a_subject_glob_star_matches_within_one_segment_only(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer, subject="repo:octo/*:ref:refs/heads/main")
    assert exchange(client, issuer.token(now, sub="repo:octo/app:ref:refs/heads/main")).status_code == 200
    assert refused(exchange(client, issuer.token(now, sub="repo:octo/a/b:ref:refs/heads/main"))).startswith(
        "condition sub")


def test_a_subject_glob_double_star_matches_across_segments(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer, subject="repo:octo/**")
    assert exchange(client, issuer.token(now, sub="repo:octo/a/b:ref:refs/tags/v1")).status_code == 200
    assert "condition sub" in refused(exchange(client, issuer.token(now, sub="repo:other/a")))


def test_an_exact_subject_must_match_exactly(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer, subject="system:serviceaccount:ci:deployer")
    assert exchange(client, issuer.token(now)).status_code == 200
    assert "condition sub" in refused(exchange(client, issuer.token(now, sub="system:serviceaccount:ci:other")))


def test_a_claim_condition_by_json_pointer_names_the_claim_that_did_not_match(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer, subject=None,
                conditions={"/repository": "octo-org/*", "/ref": "refs/heads/main"})
    good = issuer.token(now, repository="octo-org/app", ref="refs/heads/main")
    assert exchange(client, good).status_code == 200
    description = refused(exchange(client, issuer.token(now, repository="evil/app", ref="refs/heads/main")))
    assert description.startswith("condition /repository") and "evil" not in description


def test_a_nested_claim_with_a_dotted_key_is_addressed_by_json_pointer(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer, subject=None, conditions={
        "/kubernetes.io/namespace": "ci", "/kubernetes.io/serviceaccount/name": "deploy*"})
    nested = {"kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "deployer", "uid": "u1"}}}
    assert exchange(client, issuer.token(now, **nested)).status_code == 200
    other = {"kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "deployer"}}}
    assert "condition /kubernetes.io/namespace" in refused(exchange(client, issuer.token(now, **other)))
    flat = {"kubernetes.io/namespace": "ci"}  # a flat key with a slash is not the nested claim
    assert "condition /kubernetes.io/namespace" in refused(exchange(client, issuer.token(now, **flat)))


def test_a_missing_claim_never_matches(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer, conditions={"/environment": "*"})
    assert "condition /environment" in refused(exchange(client, issuer.token(now)))


def test_boolean_and_list_claims_match_in_their_json_spelling(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer, conditions={"/protected": "true", "/groups": "deployers"})
    assert exchange(client, issuer.token(now, protected=True, groups=["devs", "deployers"])).status_code == 200
    assert "condition /protected" in refused(exchange(client, issuer.token(now, protected=False,
                                                                             groups=["deployers"])))


def test_a_client_may_ask_for_fewer_scopes_but_not_more(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer, scopes=["tokens:read", "clusters:read"])
    assert exchange(client, issuer.token(now), scope="tokens:read").json()["scope"] == "tokens:read"
    assert "does not grant" in refused(exchange(client, issuer.token(now), scope="clusters:write"), 400,
                                       "invalid_scope")


def test_a_disabled_service_account_gets_no_token(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    client.patch("/v1/service-accounts/deployer", json={"disabled": True}, headers=admin.headers)
    assert "disabled" in refused(exchange(client, issuer.token(now)))


def test_federated_tokens_do_not_count_against_the_per_user_token_cap(
        settings, database, clock, admin, issuer, now):
    # A service account shared by many workloads exchanges far more often than a person makes tokens.
    capped = create_app(dataclasses.replace(settings, max_tokens_per_user=2), database, SECRET_KEY, clock)
    with TestClient(capped, raise_server_exceptions=False) as client:
        assert client.post("/v1/service-accounts", json={"name": "deployer"}, headers=admin.headers).status_code == 201
        make_policy(client, admin, issuer)
        assert [exchange(client, issuer.token(now)).status_code for _ in range(4)] == [200] * 4


def test_malformed_requests_get_rfc_6749_errors(client, admin, deployer, issuer, now):
    assert refused(client.post("/v1/oauth2/token", data={"grant_type": "password"}), 400, "unsupported_grant_type")
    assert refused(client.post("/v1/oauth2/token", data={"grant_type": GRANT}), 400, "invalid_request")
    assert refused(exchange(client, "not-a-jwt"), 400, "invalid_grant").startswith("the subject token is not a JWT")
    assert refused(exchange(client, issuer.token(now), subject_token_type="urn:x"), 400, "invalid_request")


def test_every_refusal_is_audited_without_the_token(client, admin, deployer, issuer, now, database):
    make_policy(client, admin, issuer)
    token = issuer.token(now, aud="nope")
    exchange(client, token)
    with database.session() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "token.exchange_refused")).all()
        assert event.outcome == "denied" and event.actor_user == "federated:system:serviceaccount:ci:deployer"
        assert "audience" in event.details and token.split(".")[2] not in event.details
        assert event.org_id == deployer_org(session)


def deployer_org(session) -> int:
    from tokensmith.db.models import User

    return session.scalar(select(User.org_id).where(User.username == "deployer"))


def test_a_success_is_audited_with_the_external_issuer_and_subject(client, admin, deployer, issuer, now, database):
    make_policy(client, admin, issuer)
    exchange(client, issuer.token(now))
    with database.session() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "token.exchanged")).all()
        details = json.loads(event.details)
        assert (details["issuer"], details["subject"], details["policy"]) == (
            issuer.url, "system:serviceaccount:ci:deployer", "ci")
        assert event.actor_user == "deployer"


def test_repeated_refusals_from_one_client_are_rate_limited(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    bad = issuer.token(now, aud="nope")
    statuses = [exchange(client, bad).status_code for _ in range(32)]
    assert statuses[0] == 400 and statuses[-1] == 429
    assert exchange(client, issuer.token(now)).status_code == 429  # even a good token, until the window ends


def test_expired_federated_tokens_are_deleted(client, admin, deployer, issuer, clock, database):
    make_policy(client, admin, issuer)
    assert exchange(client, issuer.token(clock.now().timestamp())).status_code == 200
    clock.advance(timedelta(hours=2))
    app_runtime = client.app.state.context.units.federation
    app_runtime._last_sweep = float("-inf")  # the next exchange sweeps now, not a minute later
    assert exchange(client, issuer.token(clock.now().timestamp())).status_code == 200
    with database.session() as session:
        federated = session.scalars(select(Token).where(Token.federated_issuer.is_not(None))).all()
        assert len(federated) == 1 and federated[0].expires_at > clock.now()


# --- trust policies -------------------------------------------------------------------------------


def test_a_policy_needs_a_subject_or_a_condition(client, admin, deployer, issuer):
    body = {"name": "any", "service_account": "deployer", "issuer": issuer.url, "audience": "tokensmith"}
    response = client.post("/v1/trust-policies", json=body, headers=admin.headers)
    assert response.status_code == 422 and "subject" in response.text


def test_a_policy_cannot_grant_more_than_the_service_account_holds(client, admin, deployer, issuer):
    response = client.post("/v1/trust-policies", headers=admin.headers, json={
        "name": "p", "service_account": "deployer", "issuer": issuer.url, "audience": "a", "subject": "x",
        "scopes": ["org:admin"]})
    assert response.status_code == 422 and "org:admin" in response.text


def test_a_plain_http_issuer_is_refused_unless_loopback_issuers_are_allowed(client, admin, deployer):
    response = client.post("/v1/trust-policies", headers=admin.headers, json={
        "name": "p", "service_account": "deployer", "issuer": "http://issuer.example.com", "audience": "a",
        "subject": "x"})
    assert response.status_code == 422 and "https" in response.text


def test_a_policy_with_an_inline_jwks_needs_no_reachable_issuer(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer, issuer="https://kubernetes.default.svc", jwks=issuer.jwks())
    assert exchange(client, issuer.token(now, iss="https://kubernetes.default.svc")).status_code == 200
    assert issuer.requests == []


def test_an_inline_jwks_without_a_public_key_is_refused(client, admin, deployer, issuer):
    body = {"name": "p", "service_account": "deployer", "issuer": "https://k", "audience": "a", "subject": "x",
            "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}
    response = client.post("/v1/trust-policies", json=body, headers=admin.headers)
    assert response.status_code == 422 and "no usable public signing key" in response.text


def test_a_policy_lifetime_is_at_most_twelve_hours(client, admin, deployer, issuer):
    body = {"name": "p", "service_account": "deployer", "issuer": issuer.url, "audience": "a", "subject": "x",
            "lifetime_seconds": 12 * 3600 + 1}
    assert client.post("/v1/trust-policies", json=body, headers=admin.headers).status_code == 422


def test_members_cannot_manage_trust_policies(client, alice, deployer, issuer):
    assert client.get("/v1/trust-policies", headers=alice.headers).status_code == 403


def test_a_deleted_policy_exchanges_nothing(client, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    assert client.delete("/v1/trust-policies/ci", headers=admin.headers).status_code == 204
    assert "not registered" in refused(exchange(client, issuer.token(now)))


@pytest.mark.parametrize("alg", ["PS256", "ES256", "ES384", "EdDSA"])
def test_every_accepted_asymmetric_algorithm_verifies(client, admin, deployer, now, alg):
    with OidcIssuer(alg) as other:
        make_policy(client, admin, other)
        assert exchange(client, other.token(now)).status_code == 200


def test_the_console_shows_an_exchanged_token_as_federated(client, console, admin, deployer, issuer, now):
    make_policy(client, admin, issuer)
    exchange(client, issuer.token(now))
    console(admin.user)
    page = client.get("/tokens", params={"all": "true"}).text
    assert ">federated</span>" in page and "federated: ci" in page


def test_a_policy_granting_a_cluster_answers_a_kubeconfig_when_asked(client, admin, deployer, issuer, now):
    from tests.pki import CA_PEM

    cluster = {"name": "prod", "server": "https://127.0.0.1:6443", "certificate_authority": CA_PEM, "region": "r1"}
    assert client.post("/v1/clusters", json=cluster, headers=admin.headers).status_code == 201
    make_policy(client, admin, issuer, scopes=["kubernetes"], clusters=["prod"])
    body = exchange(client, issuer.token(now), kubeconfig="true").json()
    assert "server: https://127.0.0.1:6443" in body["kubeconfig"] and body["access_token"] in body["kubeconfig"]


def test_a_policy_granting_clusters_needs_the_kubernetes_scope(client, admin, deployer, issuer):
    from tests.pki import CA_PEM

    cluster = {"name": "prod", "server": "https://127.0.0.1:6443", "certificate_authority": CA_PEM, "region": "r1"}
    client.post("/v1/clusters", json=cluster, headers=admin.headers)
    body = {"name": "p", "service_account": "deployer", "issuer": issuer.url, "audience": "a", "subject": "x",
            "scopes": ["tokens:read"], "clusters": ["prod"]}
    response = client.post("/v1/trust-policies", json=body, headers=admin.headers)
    assert response.status_code == 422 and "kubernetes" in response.text


def test_key_discovery_obeys_the_outbound_address_rules(database, tmp_path, clock, make_account, issuer, now):
    """Without the operator allowing loopback, an https issuer on 127.0.0.1 is never contacted."""
    from fastapi.testclient import TestClient

    from tests.conftest import SECRET_KEY
    from tokensmith.api.app import create_app

    strict = Settings(data_dir=tmp_path / "strict", database_url=database.url)
    admin = make_account("strict-admin", admin=True)
    with TestClient(create_app(strict, database, SECRET_KEY, clock)) as strict_client:
        strict_client.post("/v1/service-accounts", json={"name": "deployer"}, headers=admin.headers)
        https_issuer = issuer.url.replace("http://", "https://")
        make_policy(strict_client, admin, issuer, issuer=https_issuer)
        description = refused(exchange(strict_client, issuer.token(now, iss=https_issuer)))
    assert "signing keys are unavailable" in description and "loopback" in description
    assert issuer.requests == []


def test_a_discovery_document_naming_another_issuer_is_not_trusted(client, admin, deployer, issuer, now):
    issuer.advertised_issuer = "https://token.actions.githubusercontent.com"
    make_policy(client, admin, issuer)
    description = refused(exchange(client, issuer.token(now)))
    assert "keys are unavailable" in description and "names another issuer" in description
    assert "/jwks" not in issuer.requests


def test_cached_keys_keep_working_while_the_issuer_is_down(client, admin, deployer, now):
    with OidcIssuer() as flaky:
        make_policy(client, admin, flaky)
        assert exchange(client, flaky.token(now)).status_code == 200
        token = flaky.token(now)
    # The issuer's server is gone now; its keys are still in the cache.
    assert exchange(client, token).status_code == 200


def test_a_policy_for_an_admin_service_account_grants_no_admin_scope_unless_named(client, admin, issuer, now):
    client.post("/v1/service-accounts", json={"name": "deployer", "admin": True}, headers=admin.headers)
    policy = make_policy(client, admin, issuer)
    assert not {"org:admin", "tokens:write", "introspect"} & set(policy["scopes"])
    assert "org:admin" not in exchange(client, issuer.token(now)).json()["scope"]
