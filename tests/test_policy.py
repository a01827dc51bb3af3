"""Expiry policy per organization: maximum lifetime, "never" allowed or not, default expiration."""

from datetime import timedelta


def set_policy(client, account, **policy):
    return client.put("/v1/org/policy", json=policy, headers=account.headers)


def create(client, account, **body):
    return client.post("/v1/tokens", json={"name": "t", **body}, headers=account.headers)


def test_default_policy_is_30d_never_allowed(client, alice):
    policy = client.get("/v1/org/policy", headers=alice.headers).json()
    assert policy["max_lifetime_days"] is None and policy["allow_never"] is True
    assert policy["default_expiration"] == "30d"


def test_token_beyond_max_lifetime_is_refused_with_the_policy_in_the_message(client, admin, alice):
    policy = set_policy(client, admin, max_lifetime_days=90, allow_never=False, default_expiration="30d")
    assert policy.status_code == 200
    response = create(client, alice, expiration="1y")
    assert response.status_code == 422
    assert "at most 90 days" in response.json()["detail"]
    assert "organization policy" in response.json()["detail"]
    assert create(client, alice, expiration="90d").status_code == 201


def test_never_is_refused_when_the_policy_forbids_it(client, admin, alice):
    set_policy(client, admin, allow_never=False, default_expiration="7d")
    response = create(client, alice, expiration="never")
    assert response.status_code == 422
    assert "'never' not allowed" in response.json()["detail"]


def test_default_expiration_comes_from_the_policy(client, admin, alice, clock):
    set_policy(client, admin, default_expiration="7d")
    token = create(client, alice).json()["token"]
    assert token["expires_at"].startswith(str((clock.now() + timedelta(days=7)).date()))


def test_rotation_is_held_to_the_policy(client, admin, alice):
    never = create(client, alice, expiration="never").json()["token"]["id"]
    set_policy(client, admin, max_lifetime_days=30, allow_never=False, default_expiration="30d")
    response = client.post(f"/v1/tokens/{never}/rotate", json={}, headers=alice.headers)
    assert response.status_code == 422
    assert "at most 30 days" in response.json()["detail"]
    ok = client.post(f"/v1/tokens/{never}/rotate", json={"expiration": "30d"}, headers=alice.headers)
    assert ok.status_code == 200


def test_only_admins_set_the_policy(client, alice):
    response = set_policy(client, alice, max_lifetime_days=1)
    assert response.status_code == 403


def test_a_self_contradicting_policy_is_422(client, admin):
    assert set_policy(client, admin, max_lifetime_days=7, default_expiration="30d").status_code == 422
    assert set_policy(client, admin, allow_never=False, default_expiration="never").status_code == 422
    assert set_policy(client, admin, max_lifetime_days=0).status_code == 422


def test_policy_is_per_organization(client, admin, mallory):
    set_policy(client, mallory, max_lifetime_days=1, default_expiration="1d")
    assert create(client, admin, expiration="90d").status_code == 201
    assert client.get("/v1/org/policy", headers=admin.headers).json()["max_lifetime_days"] is None


def test_a_maximum_lifetime_answers_allow_never_false_as_it_enforces(client, admin, alice):
    response = set_policy(client, admin, max_lifetime_days=90)
    assert response.status_code == 200
    policy = response.json()
    assert policy["allow_never"] is False and "'never' not allowed" in policy["description"]
    assert client.get("/v1/org/policy", headers=alice.headers).json()["allow_never"] is False
    assert create(client, alice, expiration="never").status_code == 422


def test_allow_never_true_with_a_maximum_lifetime_is_stored_as_false(client, admin):
    policy = set_policy(client, admin, max_lifetime_days=90, allow_never=True).json()
    assert policy["max_lifetime_days"] == 90 and policy["allow_never"] is False


def test_without_a_maximum_allow_never_is_what_was_set(client, admin):
    assert set_policy(client, admin, allow_never=True).json()["allow_never"] is True
    assert set_policy(client, admin, allow_never=False, default_expiration="30d").json()["allow_never"] is False
