
"""GET /v1/auth/verify: forward-auth for reverse proxies (in-process; nginx in test_forward_auth_nginx)."""

import logging
from datetime import timedelta


def test_a_valid_token_gets_200_and_identity_headers(client, alice):
    response = client.get("/v1/auth/verify", headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["X-Auth-Request-User"] == "alice"
    assert response.headers["X-Tokensmith-User-Id"] == alice.user.public_id
    assert response.headers["X-Tokensmith-Org"] == "default"
    assert response.headers["X-Tokensmith-Token-Id"] == alice.token_id
    assert response.headers["Cache-Control"] == "no-store"


def test_a_cached_answer_is_the_same_as_the_first_one(client, alice):
    """The second call is answered by HotDoors from the cache, the first by the route."""
    first = client.get("/v1/auth/verify", headers=alice.headers)
    cached = client.get("/v1/auth/verify", headers=alice.headers)
    assert (cached.status_code, cached.content) == (first.status_code, first.content) == (200, b"")
    assert {k: v for k, v in cached.headers.items() if k != "date"} == \
        {k: v for k, v in first.headers.items() if k != "date"}


def test_a_deleted_token_is_refused_even_after_cached_answers(client, alice):
    for _ in range(2):
        assert client.get("/v1/auth/verify", headers=alice.headers).status_code == 200
    assert client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers).status_code == 204
    assert client.get("/v1/auth/verify", headers=alice.headers).status_code == 401


def test_no_token_gets_401_with_www_authenticate(client):
    response = client.get("/v1/auth/verify")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="tokensmith"')


def test_a_bad_token_gets_401_invalid_token(client):
    response = client.get("/v1/auth/verify", headers={"Authorization": "Bearer tsm_nope"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_secret_in_the_query_string_is_ignored(client, alice):
    # The test client logs URLs at INFO; this one holds a secret on purpose, so keep it out of the logs.
    httpx_log = logging.getLogger("httpx")
    level = httpx_log.level
    httpx_log.setLevel(logging.WARNING)
    try:
        assert client.get(f"/v1/auth/verify?access_token={alice.secret}").status_code == 401
    finally:
        httpx_log.setLevel(level)


def test_basic_auth_is_not_accepted(client, alice):
    assert client.get("/v1/auth/verify", headers={"Authorization": f"Basic {alice.secret}"}).status_code == 401


def test_an_expired_token_gets_401_token_expired(client, alice, clock):
    assert client.get("/v1/auth/verify", headers=alice.headers).status_code == 200
    clock.advance(timedelta(days=31))
    response = client.get("/v1/auth/verify", headers=alice.headers)
    assert response.status_code == 401
    assert "token expired" in response.headers["WWW-Authenticate"]


def test_a_deleted_token_gets_401(client, alice):
    assert client.get("/v1/auth/verify", headers=alice.headers).status_code == 200
    client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers)
    assert client.get("/v1/auth/verify", headers=alice.headers).status_code == 401


def test_a_non_ascii_token_gets_401_not_500(client):
    secret = "tsm_" + "é" * 38
    response = client.get("/v1/auth/verify", headers={"Authorization": f"Bearer {secret}".encode("latin-1")})
    assert response.status_code == 401
