"""Isolation matrix: every core endpoint x every kind of caller gets its documented status.

Callers: no token, a malformed one, an unknown one, an expired one, a revoked one (all 401),
an admin of another organization (other organizations' resources are 404, lists hold none of
them) and a member who is not an admin (403 for admin-only actions, 404 for other users' tokens).
No answer to an outsider contains any identifier of the organization it probes.
"""

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest

from tests.oidc import OidcIssuer
from tests.pki import CA_PEM
from tokensmith import secrets
from tokensmith.api.routing import api_routes

OIDC_KEYS = OidcIssuer().jwks()  # never served: given inline
REJECTED = ("none", "malformed", "unknown", "expired", "revoked")
CALLERS = (*REJECTED, "other_org", "non_admin")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {token}, {cluster}, {vpc}, {key}, {credential}, {webhook}, {user}: the default organization's
    other_org: int  # what an admin of another organization gets
    non_admin: int  # what a member of the same organization gets
    body: str | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS = (
    Endpoint("GET", "/v1/whoami", 200, 200),
    Endpoint("GET", "/v1/tokens", 200, 200),
    Endpoint("GET", "/v1/tokens?all=true", 200, 403),
    Endpoint("GET", "/v1/tokens?user=admin", 404, 404),
    Endpoint("POST", "/v1/tokens", 201, 201, body="token"),
    Endpoint("GET", "/v1/tokens/{token}", 404, 404),
    Endpoint("DELETE", "/v1/tokens/{token}", 404, 404),
    Endpoint("PATCH", "/v1/tokens/{token}", 404, 404, body="extend"),
    Endpoint("GET", "/v1/tokens/{token}/usage", 404, 404),
    Endpoint("GET", "/v1/clusters", 200, 200),
    Endpoint("POST", "/v1/clusters", 201, 403, body="cluster"),
    Endpoint("GET", "/v1/clusters/{cluster}", 404, 200),
    Endpoint("DELETE", "/v1/clusters/{cluster}", 404, 403),
    Endpoint("GET", "/v1/vpcs", 200, 200),
    Endpoint("POST", "/v1/vpcs", 201, 403, body="vpc"),
    Endpoint("GET", "/v1/vpcs/{vpc}", 404, 200),
    Endpoint("DELETE", "/v1/vpcs/{vpc}", 404, 403),
    Endpoint("PATCH", "/v1/clusters/{cluster}", 404, 403, body="audience"),
    Endpoint("GET", "/v1/clusters/{cluster}/webhook-credentials", 404, 403),
    Endpoint("POST", "/v1/clusters/{cluster}/kube-credential", 404, 201),
    Endpoint("POST", "/v1/clusters/{cluster}/webhook-credentials", 404, 403),
    Endpoint("DELETE", "/v1/clusters/{cluster}/webhook-credentials/{credential}", 404, 403),
    Endpoint("POST", "/v1/tokens/{token}/rotate", 404, 404, body="rotate"),
    Endpoint("GET", "/v1/object-storage/access-keys", 200, 200),
    Endpoint("POST", "/v1/object-storage/access-keys", 201, 201, body="access_key"),
    Endpoint("GET", "/v1/object-storage/access-keys/{key}", 404, 404),
    Endpoint("DELETE", "/v1/object-storage/access-keys/{key}", 404, 404),
    Endpoint("GET", "/v1/org/policy", 200, 200),
    Endpoint("PUT", "/v1/org/policy", 200, 403, body="policy"),
    Endpoint("GET", "/v1/audit-events", 200, 403),
    Endpoint("GET", "/v1/webhooks", 200, 403),
    Endpoint("POST", "/v1/webhooks", 201, 403, body="webhook"),
    Endpoint("DELETE", "/v1/webhooks/{webhook}", 404, 403),
    Endpoint("GET", "/metrics", 200, 403),
    Endpoint("GET", "/v1/service-accounts", 200, 403),
    Endpoint("POST", "/v1/service-accounts", 201, 403, body="service_account"),
    Endpoint("PATCH", "/v1/service-accounts/{sa}", 404, 403, body="sa_update"),
    Endpoint("DELETE", "/v1/service-accounts/{sa}", 404, 403),
    Endpoint("POST", "/v1/service-accounts/{sa}/tokens", 404, 403, body="token"),
    Endpoint("GET", "/v1/trust-policies", 200, 403),
    Endpoint("POST", "/v1/trust-policies", 404, 403, body="trust_policy"),
    Endpoint("DELETE", "/v1/trust-policies/{policy}", 404, 403),
    Endpoint("GET", "/v1/users", 200, 403),
    Endpoint("POST", "/v1/users", 201, 403, body="user"),
    Endpoint("POST", "/v1/users/{user}/disable", 404, 403),
    Endpoint("POST", "/v1/users/{user}/enable", 404, 403),
    Endpoint("POST", "/v1/users/{user}/reset-password", 404, 403),
)
# Doors whose caller is not a bearer token of this organization's users, each with its own tests.
ELSEWHERE = {
    ("POST", "/v1/auth/token"): "takes passwords: test_ratelimit.py, test_tokens_api.py",
    ("POST", "/v1/auth/password"): "takes passwords: test_accounts_hardening.py, test_serve.py",
    ("GET", "/v1/auth/verify"): "forward-auth, any live token passes: test_forward_auth.py",
    ("POST", "/v1/oauth2/introspect"): "a service-scoped caller asks about any token: test_introspect.py",
    ("POST", "/v1/clusters/{cluster}/tokenreview"): "the cluster's webhook credential: test_kube_api.py",
    ("POST", "/v1/clusters/{cluster}/subjectaccessreview"): "the cluster's webhook credential: test_kube_levels.py",
    ("POST", "/v1/leaks"): "a leak-reporter credential, same answer for all: test_leaks.py",
    ("GET", "/v1/object-storage/temporary-credentials"): "the SDK's bare secret: test_objectstore_api.py",
    ("POST", "/v1/object-storage/verify"): "a gateway's service-scoped token: test_objectstore_api.py",
    ("POST", "/v1/oauth2/device_authorization"): "an anonymous device (RFC 8628): test_device_grant.py",
    ("POST", "/v1/oauth2/token"): "authenticated by its grant (a device code, an external JWT): "
                                  "test_device_grant.py, test_federation.py",
    ("POST", "/v1/sts"): "the external JWT is the credential: test_federation_sts.py",
    ("POST", "/v1/sts/"): "the same STS door: test_federation_sts.py",
}
BODIES = {
    "token": {"name": "probe"},
    "cluster": {"name": "probe", "server": "https://10.0.0.9:6443", "certificate_authority": CA_PEM,
                "region": "eu-1"},
    "vpc": {"name": "probe", "region": "eu-1", "cidr": "10.9.0.0/16"},
    "audience": {"audience": "probe"},
    "rotate": {"grace": "0s"},
    "extend": {"expiration": "90d"},
    "access_key": {"durationSeconds": 900, "attributes": {"name": "probe"}},
    "policy": {"max_lifetime_days": None, "allow_never": True, "default_expiration": "30d"},
    "webhook": {"url": "http://127.0.0.1:9/hook"},
    "service_account": {"name": "probe-sa"},
    "sa_update": {"disabled": False},
    "user": {"username": "probe-user"},
    # By name: the other organization gets 404 without the body's own value counting as a leak.
    "trust_policy": {"name": "probe", "service_account": "world-sa", "issuer": "https://issuer.invalid",
                     "audience": "a", "subject": "x", "jwks": OIDC_KEYS},
}


@pytest.fixture
def world(client, clock, make_account, admin, alice, mallory):
    """The default organization's resources, and a credential of every kind."""
    cluster = client.post("/v1/clusters", json=BODIES["cluster"] | {"name": "prod"}, headers=admin.headers).json()
    vpc = client.post("/v1/vpcs", json=BODIES["vpc"] | {"name": "net"}, headers=admin.headers).json()
    credential = client.post(f"/v1/clusters/{cluster['id']}/webhook-credentials", headers=admin.headers).json()
    key = client.post("/v1/object-storage/access-keys", json=BODIES["access_key"], headers=admin.headers).json()
    webhook = client.post("/v1/webhooks", json=BODIES["webhook"], headers=admin.headers).json()
    account = client.post("/v1/service-accounts", json={"name": "world-sa"}, headers=admin.headers).json()
    policy = client.post("/v1/trust-policies", json=BODIES["trust_policy"] | {"name": "world-policy"},
                         headers=admin.headers).json()
    expired = make_account("old-timer", expiration="1h")
    revoked = make_account("leaver")
    assert client.delete(f"/v1/tokens/{revoked.token_id}", headers=revoked.headers).status_code == 204
    clock.advance(timedelta(hours=2))
    unknown = secrets.generate()
    credentials = {
        "none": {},
        "malformed": {"Authorization": "Bearer " + unknown[:-1] + ("A" if unknown[-1] != "A" else "B")},
        "unknown": {"Authorization": "Bearer " + unknown},
        "expired": expired.headers,
        "revoked": revoked.headers,
        "other_org": mallory.headers,
        "non_admin": alice.headers,
    }
    paths = {"{token}": admin.token_id, "{cluster}": cluster["id"], "{vpc}": vpc["id"], "{key}": key["accessKeyId"],
             "{credential}": credential["credential"]["id"], "{webhook}": webhook["webhook"]["id"],
             "{sa}": account["id"], "{policy}": policy["id"],
             "{user}": client.get("/v1/whoami", headers=alice.headers).json()["user"]["id"]}
    whoami = client.get("/v1/whoami", headers=admin.headers).json()
    secrets_of_org = {admin.token_id, alice.token_id, cluster["id"], vpc["id"], whoami["organization"]["id"],
                      whoami["user"]["id"], *(v for k, v in paths.items() if k != "{token}")}
    return credentials, paths, secrets_of_org


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_isolation_matrix(client, world, endpoint):
    """One endpoint against all seven callers (one test per endpoint keeps the fixtures affordable)."""
    credentials, paths, organization_ids = world
    path = endpoint.path
    for placeholder, value in paths.items():
        path = path.replace(placeholder, value)
    body = BODIES[endpoint.body] if endpoint.body else None
    wrong = []
    for caller in CALLERS:
        response = client.request(endpoint.method, path, json=body, headers=credentials[caller])
        expected = 401 if caller in REJECTED else getattr(endpoint, caller)
        if response.status_code != expected:
            wrong.append(f"{caller}: {response.status_code}, expected {expected}: {response.text[:200]}")
        if expected == 401 and not response.headers.get("WWW-Authenticate", "").startswith('Bearer realm='):
            wrong.append(f"{caller}: 401 without a WWW-Authenticate challenge")
        if response.status_code >= 400 and response.headers["content-type"] != "application/problem+json":
            wrong.append(f"{caller}: error {response.status_code} is not a problem document")
        if caller == "other_org":
            # Echoing the id the caller sent reveals nothing; any other of the organization's ids does.
            leaked = {value for value in organization_ids if value in response.text and value not in path}
            if leaked:
                wrong.append(f"{caller}: showed another organization's {sorted(leaked)}")
    assert not wrong, f"{endpoint}:\n" + "\n".join(wrong)


def test_the_matrix_covers_every_core_route(app):
    def shape(path: str) -> str:  # parameter names differ between routes and this table
        return re.sub(r"\{[^}]+\}", "{}", path.split("?")[0])

    documented = {(m, shape(r.path)) for r in api_routes(app.routes) for m in r.methods
                  if r.path.startswith("/v1/") or r.path == "/metrics"}
    assert len(documented) > 20  # the route listing itself works
    covered = {(e.method, shape(e.path)) for e in ENDPOINTS} | {(m, shape(p)) for m, p in ELSEWHERE}
    assert documented - covered == set()
