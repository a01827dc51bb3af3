"""Least privilege: a token holds a subset of its owner's permissions, never more."""

import pytest
from sqlalchemy import update

from tokensmith import scopes
from tokensmith.db.models import User


def create(client, account, **body):
    body.setdefault("name", "scoped")
    return client.post("/v1/tokens", json=body, headers=account.headers)


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def test_default_token_holds_all_of_a_members_scopes(client, alice):
    token = create(client, alice).json()["token"]
    assert set(token["scopes"]) == scopes.MEMBER_DEFAULT


def test_admin_token_holds_every_scope_by_default(client, admin):
    assert set(create(client, admin).json()["token"]["scopes"]) == scopes.ALL


def test_scoped_token_is_refused_outside_its_scopes_with_403_naming_the_scope(client, alice):
    secret = create(client, alice, scopes=["tokens:read"]).json()["secret"]
    assert client.get("/v1/tokens", headers=bearer(secret)).status_code == 200
    response = client.post("/v1/tokens", json={"name": "x"}, headers=bearer(secret))
    assert response.status_code == 403
    assert "'tokens:write'" in response.json()["detail"]
    assert "'clusters:read'" in client.get("/v1/clusters", headers=bearer(secret)).json()["detail"]


def test_whoami_needs_no_scope_and_shows_the_scopes(client, alice):
    secret = create(client, alice, scopes=["clusters:read"]).json()["secret"]
    me = client.get("/v1/whoami", headers=bearer(secret))
    assert me.status_code == 200
    assert me.json()["token"]["scopes"] == ["clusters:read"]


def test_a_member_cannot_ask_for_admin_or_service_scopes(client, alice):
    for scope in ("clusters:write", "introspect", "metrics:read"):
        response = create(client, alice, scopes=[scope])
        assert response.status_code == 422
        assert "cannot hold more than its owner" in response.json()["detail"]


def test_unknown_scope_is_422_listing_the_known_ones(client, alice):
    response = create(client, alice, scopes=["root"])
    assert response.status_code == 422
    assert "tokens:read" in response.json()["detail"]


def test_demoting_the_owner_removes_admin_scopes_from_existing_tokens(client, make_account, database):
    boss = make_account("boss", admin=True)
    assert client.post("/v1/vpcs", json={"name": "a", "region": "r", "cidr": "10.0.0.0/8"},
                       headers=boss.headers).status_code == 201
    with database.session() as session:
        session.execute(update(User).where(User.username == "boss").values(is_admin=False))
    response = client.post("/v1/vpcs", json={"name": "b", "region": "r", "cidr": "10.1.0.0/16"},
                           headers=boss.headers)
    assert response.status_code == 403
    assert "vpcs:write" not in client.get("/v1/whoami", headers=boss.headers).json()["token"]["scopes"]


@pytest.mark.parametrize(("stored", "is_admin", "expected"), [
    (None, False, scopes.MEMBER_DEFAULT),
    (None, True, scopes.ALL),
    ({"clusters:write", "tokens:read"}, False, {"tokens:read"}),
    ({"introspect"}, False, {"introspect"}),
])
def test_effective_scopes_are_cut_to_the_owners_permissions(stored, is_admin, expected):
    assert scopes.effective(stored, is_admin) == expected
