"""Bad input gets a clear 4xx, never a 500, and changes nothing."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tokensmith import secrets
from tokensmith.db.models import Token


def token_count(database) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(Token))


def assert_problem(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["detail"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": ""}, "name must not be empty"),
        ({"name": "   "}, "name must not be empty"),
        ({"name": "x" * 10_000}, "at most 100 characters"),
        ({"name": "bad\x00name"}, "control characters"),
        ({"name": "bad\nname"}, "control characters"),
        ({"name": "ok", "note": "n" * 1001}, "at most 1000 characters"),
        ({"name": "ok", "note": "bell\x07"}, "control characters"),
        ({"name": "ok", "note": "old one: tsm_" + "A" * 38}, "must not contain a token secret"),
        ({"name": "tsw_" + "b" * 38}, "must not contain a token secret"),
        ({"name": "ok", "color": "red"}, "color is not a known field"),
        ({"name": "ok", "expiration": "0d"}, "positive duration"),
        ({"name": "ok", "expiration": "-5d"}, "is not a duration"),
        ({"name": "ok", "expiration": "soon"}, "is not a duration"),
        ({"name": "ok", "expiration": "1M"}, "use 30d or 4w, not 1M/1mo"),
        ({"name": "ok", "expiration": "99999y"}, "at most"),
        ({"name": "ok", "expires_at": "2000-01-01T00:00:00Z"}, "in the future"),
        ({"name": "ok", "expires_at": "2099-01-01T00:00:00"}, "timezone"),
        ({"name": "ok", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "ok", "expiration": "1d", "expires_at": "2099-01-01T00:00:00Z"}, "not both"),
        ({"name": 5}, "name"),
        ({}, "name is required"),
        ([1, 2], "body"),
    ],
)
def test_bad_token_requests_are_422_and_create_nothing(client, alice, database, body, fragment):
    before = token_count(database)
    response = client.post("/v1/tokens", json=body, headers=alice.headers)
    assert_problem(response, 422)
    assert fragment in response.json()["detail"]
    assert token_count(database) == before


def test_expiration_error_says_what_is_accepted(client, alice):
    detail = client.post("/v1/tokens", json={"name": "x", "expiration": "soon"}, headers=alice.headers).json()
    assert "1h, 1d, 7d, 30d, 90d, 1y, never" in detail["detail"]
    assert detail["errors"][0]["field"] == "expiration"


def test_non_json_body_is_400(client, alice, database):
    before = token_count(database)
    response = client.post(
        "/v1/tokens", content=b"{not json", headers={**alice.headers, "Content-Type": "application/json"}
    )
    assert_problem(response, 400)
    assert token_count(database) == before


def test_form_encoded_body_is_a_clear_4xx(client, alice):
    response = client.post("/v1/tokens", data={"name": "x"}, headers=alice.headers)
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token tsm_abc",
        "Bearer a b",
        "Bearer tsm_" + "A" * 38,
        "Bearer " + "x" * 10_000,
        "Bearer tsm_é" + "A" * 37,
    ],
)
def test_malformed_authorization_is_401_invalid_token(client, header):
    response = client.get("/v1/whoami", headers={"Authorization": header.encode()})
    assert_problem(response, 401)
    assert response.json()["detail"] == "invalid token"
    assert response.headers["www-authenticate"].startswith('Bearer realm="tokensmith", error="invalid_token"')


def test_missing_authorization_asks_for_a_bearer_token(client):
    response = client.get("/v1/whoami")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer realm="tokensmith"'


def test_secret_with_wrong_checksum_is_rejected_without_a_query(client, alice, database):
    from sqlalchemy import event

    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(database.engine, "before_cursor_execute", listener)
    try:
        tampered = alice.secret[:-1] + ("A" if alice.secret[-1] != "A" else "B")
        response = client.get("/v1/whoami", headers={"Authorization": f"Bearer {tampered}"})
    finally:
        event.remove(database.engine, "before_cursor_execute", listener)
    assert response.status_code == 401
    assert statements == []


def test_well_formed_but_unknown_secret_is_the_same_neutral_401(client):
    response = client.get("/v1/whoami", headers={"Authorization": f"Bearer {secrets.generate()}"})
    assert_problem(response, 401)
    assert response.json()["detail"] == "invalid token"


def test_unknown_route_is_a_problem_404(client, alice):
    assert_problem(client.get("/v1/nothing-here", headers=alice.headers), 404)


def test_wrong_method_is_a_problem_405(client, alice):
    assert_problem(client.put("/v1/tokens", json={}, headers=alice.headers), 405)


@pytest.mark.parametrize("limit", ["0", "201", "-1", "many"])
def test_out_of_range_limit_is_422(client, alice, limit):
    assert_problem(client.get(f"/v1/tokens?limit={limit}", headers=alice.headers), 422)


def test_expired_token_cannot_create_tokens(client, alice, clock, database):
    clock.advance(timedelta(days=31))
    before = token_count(database)
    assert_problem(client.post("/v1/tokens", json={"name": "x"}, headers=alice.headers), 401)
    assert token_count(database) == before
