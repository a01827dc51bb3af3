"""Every endpoint x a token lacking exactly its scope: 403 naming it; holding it: let through.

The endpoint list is read from the app itself, so a new endpoint without a scope fails here.
"""

import re

import pytest
from sqlalchemy import update

from tests.conftest import SECRET_KEY
from tokensmith import scopes
from tokensmith.api.app import create_app
from tokensmith.api.routing import api_routes
from tokensmith.config import Settings
from tokensmith.db.database import Database
from tokensmith.db.models import User

# The only /v1 endpoints without a scope, and why.
UNSCOPED = {
    ("POST", "/v1/auth/token"): "password sign-in mints the first token",
    ("POST", "/v1/auth/password"): "a password change proves the current password (the way out of a first one)",
    ("GET", "/v1/whoami"): "any valid token may ask who it is",
    ("POST", "/v1/leaks"): "authenticated by a leak-reporter credential, not a token",
    ("POST", "/v1/clusters/{cluster}/tokenreview"): "authenticated by the cluster's webhook credential (tsw_)",
    ("POST", "/v1/clusters/{cluster}/subjectaccessreview"): "authenticated by the cluster's webhook credential (tsw_)",
    ("GET", "/v1/object-storage/temporary-credentials"): "SDK container-credentials exchange; checks its scope itself",
    ("GET", "/v1/auth/verify"): "forward-auth for any upstream: any live token passes; the proxy decides the rest",
    ("POST", "/v1/oauth2/device_authorization"): "RFC 8628: an anonymous device starts a browser sign-in",
    ("POST", "/v1/oauth2/token"): "OAuth token endpoint: each grant authenticates itself (device code, external JWT)",
    ("POST", "/v1/sts"): "STS AssumeRoleWithWebIdentity: the external JWT is the credential (trust policy)",
    ("POST", "/v1/sts/"): "the same STS door as AWS SDKs address it (endpoint URL + '/')",
}
# Endpoints that, beyond their scope, require the owner to be an organization admin.
ADMIN_CHECKED = {
    ("PUT", "/v1/org/policy"), ("GET", "/v1/audit-events"), ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"), ("DELETE", "/v1/webhooks/{webhook_id}"),
}


def _scope_of(route) -> str | None:
    names = {d.call.__name__ for d in route.dependant.dependencies if hasattr(d.call, "__name__")}
    found = [s for s in scopes.ALL if f"requires_{s.replace(':', '_').replace('-', '_')}" in names]
    assert len(found) <= 1, route.path
    return found[0] if found else None




def endpoints():
    app = create_app(Settings(data_dir=None, database_url="sqlite://"), Database("sqlite://"), SECRET_KEY)  # type: ignore[arg-type]
    for route in api_routes(app.routes):
        if not getattr(route, "path", "").startswith("/v1/"):
            continue
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            yield method, route.path, _scope_of(route)


ENDPOINTS = list(endpoints())
SCOPED = [e for e in ENDPOINTS if e[2] is not None]


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "does-not-exist", path)


# Valid bodies where an admin check runs after validation (elsewhere the scope check comes first).
BODIES = {("POST", "/v1/webhooks"): {"url": "http://127.0.0.1:9/hook"}}


def call(client, method, path, secret):
    body = BODIES.get((method, path), {}) if method in ("POST", "PUT", "PATCH") else None
    return client.request(method, concrete(path), json=body, headers={"Authorization": f"Bearer {secret}"})


def test_every_endpoint_has_a_scope_or_a_stated_reason():
    missing = [(m, p) for m, p, s in ENDPOINTS if s is None and (m, p) not in UNSCOPED]
    assert missing == []
    assert len(SCOPED) >= 15, SCOPED


@pytest.fixture
def tokens_for(client, admin):
    """Secrets of the admin's tokens holding exactly a given set of scopes."""

    def make(held: frozenset[str]) -> str:
        response = client.post("/v1/tokens", json={"name": "matrix", "scopes": sorted(held)}, headers=admin.headers)
        assert response.status_code == 201, response.text
        return response.json()["secret"]

    return make


@pytest.mark.parametrize(("method", "path", "scope"), SCOPED, ids=[f"{m} {p}" for m, p, _ in SCOPED])
def test_lacking_exactly_its_scope_is_403_naming_it_and_holding_it_is_allowed(client, tokens_for, method, path,
                                                                                scope):
    lacking = call(client, method, path, tokens_for(scopes.ALL - {scope}))
    assert lacking.status_code == 403, lacking.text
    assert f"'{scope}'" in lacking.json()["detail"]
    holding = call(client, method, path, tokens_for(frozenset({scope})))
    assert holding.status_code not in (401, 403), holding.text


def test_demoting_the_owner_removes_admin_only_access_from_existing_tokens_at_once(client, make_account, database):
    boss = make_account("boss", admin=True)
    admin_only = [e for e in SCOPED if e[2] in scopes.ADMIN_ONLY or (e[0], e[1]) in ADMIN_CHECKED]
    assert all(call(client, m, p, boss.secret).status_code != 403 for m, p, _ in admin_only)
    with database.session() as session:
        session.execute(update(User).where(User.username == "boss").values(is_admin=False))
    for method, path, _ in admin_only:
        assert call(client, method, path, boss.secret).status_code == 403, (method, path)
