"""Introspection with OAuth 2.0 client authentication: HTTP Basic (client_secret_basic), as
standard client libraries send by default, next to the bearer form.

Authlib's real OAuth2Session talks to the app served by uvicorn on loopback (SQLite and
PostgreSQL, through the usual fixtures).
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from authlib.integrations.requests_client import OAuth2Session

from tests.conftest import SECRET_KEY
from tests.servers import free_port
from tokensmith import scopes, secrets
from tokensmith.tokens.service import TokenService

INTROSPECT = "/v1/oauth2/introspect"


@pytest.fixture
def live_url(app) -> Iterator[str]:
    """The test's app on a real loopback port, for clients that bring their own HTTP stack."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def test_authlibs_default_client_authentication_introspects_an_active_token(live_url, admin, alice):
    session = OAuth2Session(client_id=admin.token_id, client_secret=admin.secret)
    assert session.token_endpoint_auth_method == "client_secret_basic"  # the premise: Authlib's default
    response = session.introspect_token(f"{live_url}{INTROSPECT}", token=alice.secret)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["active"] is True and body["username"] == "alice" and body["client_id"] == alice.token_id


def test_authlib_introspecting_an_unknown_token_gets_exactly_inactive(live_url, admin):
    session = OAuth2Session(client_id=admin.token_id, client_secret=admin.secret)
    response = session.introspect_token(f"{live_url}{INTROSPECT}", token="tsm_" + "x" * 40)
    assert response.json() == {"active": False}


def test_a_secret_under_another_tokens_id_is_refused_with_a_basic_challenge(client, admin, alice):
    # Valid secret, wrong client id: authentication fails, it does not fall back to the secret alone.
    response = client.post(INTROSPECT, data={"token": alice.secret}, headers=basic(alice.token_id, admin.secret))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="tokensmith"'
    assert admin.secret not in response.text


def test_a_wrong_secret_is_refused_with_a_basic_challenge(client, admin, alice):
    response = client.post(INTROSPECT, data={"token": alice.secret},
                           headers=basic(admin.token_id, admin.secret[:-3] + "abc"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="tokensmith"'


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"no-colon").decode(),
                                   base64.b64encode(b"\xff\xfe:x").decode(), ""])
def test_malformed_basic_credentials_are_a_401_never_a_500(client, alice, value):
    response = client.post(INTROSPECT, data={"token": alice.secret}, headers={"Authorization": f"Basic {value}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="tokensmith"'


def test_basic_with_a_token_lacking_introspect_is_403(client, alice, bob):
    response = client.post(INTROSPECT, data={"token": bob.secret}, headers=basic(alice.token_id, alice.secret))
    assert response.status_code == 403
    assert "introspect" in response.json()["detail"]


def test_a_service_token_granted_introspect_authenticates_with_basic(client, database, clock, alice, make_account):
    gateway = make_account("gateway")
    with database.session() as session:
        created = TokenService(session, clock, SECRET_KEY).create(
            gateway.user, "gw", scopes=sorted(scopes.default_scopes(False) | {"introspect"}),
            grant_service_scopes=True)
        token_id = created.token.public_id
    response = client.post(INTROSPECT, data={"token": alice.secret}, headers=basic(token_id, created.secret))
    assert response.json()["active"] is True


def test_guessing_basic_client_secrets_hits_the_brute_force_limit(client, admin, alice):
    statuses = [client.post(INTROSPECT, data={"token": alice.secret},
                            headers=basic(admin.token_id, secrets.generate())).status_code for _ in range(35)]
    assert statuses[:30] == [401] * 30  # TOKENSMITH_AUTH_FAILURES_PER_IP's default
    assert statuses[-1] == 429


def test_a_valid_secret_under_the_wrong_id_counts_as_a_failure(client, admin, alice):
    statuses = [client.post(INTROSPECT, data={"token": alice.secret},
                            headers=basic(alice.token_id, admin.secret)).status_code for _ in range(31)]
    assert statuses[-1] == 429


def test_the_bearer_form_still_works(client, admin, alice):
    response = client.post(INTROSPECT, data={"token": alice.secret}, headers=admin.headers)
    assert response.json()["active"] is True

