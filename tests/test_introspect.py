"""POST /v1/oauth2/introspect (RFC 7662) and the CLI's --introspect service tokens."""

import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.conftest import SECRET_KEY
from tokensmith import secrets
from tokensmith.accounts.service import AccountService
from tokensmith.db.models import Token
from tokensmith.tokens.service import TokenService

INACTIVE = {"active": False}


def introspect(client, caller, token: str):
    return client.post("/v1/oauth2/introspect", data={"token": token}, headers=caller.headers)


def test_an_active_token_is_described(client, admin, alice, clock):
    response = introspect(client, admin, alice.secret)
    assert response.status_code == 200
    body = response.json()
    assert body["active"] is True
    assert body["sub"] == alice.user.public_id
    assert body["username"] == "alice"
    assert body["client_id"] == alice.token_id
    assert body["token_type"] == "Bearer"
    assert body["iat"] == int(clock.now().timestamp())
    assert body["exp"] == int((clock.now() + timedelta(days=30)).timestamp())
    assert "tokens:read" in body["scope"].split()
    assert response.headers["Cache-Control"] == "no-store"


def test_an_expired_token_is_exactly_inactive(client, admin, alice, clock):
    clock.advance(timedelta(days=30))
    # The admin's own token expires at the same instant; make the caller a fresh one.
    with client.app.state.context.services() as s:
        owner = s.accounts.get_user_in_org(admin.user.org_id, admin.user.public_id)
        fresh = s.tokens.create(owner, "gateway", expiration="1d").secret
    response = client.post("/v1/oauth2/introspect", data={"token": alice.secret},
                           headers={"Authorization": f"Bearer {fresh}"})
    assert response.json() == INACTIVE


def test_a_revoked_token_is_exactly_inactive(client, admin, alice):
    client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers)
    assert introspect(client, admin, alice.secret).json() == INACTIVE


def test_an_unknown_token_is_exactly_inactive(client, admin):
    assert introspect(client, admin, secrets.generate()).json() == INACTIVE


@pytest.mark.parametrize("token", ["", "nope", "tsm_" + "a" * 38, "Bearer x"])
def test_a_malformed_token_is_exactly_inactive(client, admin, token):
    response = introspect(client, admin, token)
    assert response.status_code == 200
    assert response.json() == INACTIVE


def test_another_organizations_token_is_inactive(client, admin, mallory):
    assert introspect(client, admin, mallory.secret).json() == INACTIVE


def test_a_caller_without_the_introspect_permission_is_refused(client, alice, bob):
    response = introspect(client, alice, bob.secret)
    assert response.status_code == 403
    assert "introspect" in response.json()["detail"]


def test_an_anonymous_caller_is_refused(client, alice):
    response = client.post("/v1/oauth2/introspect", data={"token": alice.secret})
    assert response.status_code == 401


def test_a_member_service_token_granted_introspect_may_introspect(client, database, clock, alice, make_account):
    gateway = make_account("gateway")
    with database.session() as session:
        owner = AccountService(session, clock).get_user_in_org(gateway.user.org_id, gateway.user.public_id)
        secret = TokenService(session, clock, SECRET_KEY).create(
            owner, "api-gateway", scopes=["introspect"], grant_service_scopes=True).secret
    response = client.post("/v1/oauth2/introspect", data={"token": alice.secret},
                           headers={"Authorization": f"Bearer {secret}"})
    assert response.json()["active"] is True


def test_cli_create_token_with_introspect_grants_the_scope(tmp_path):
    env = {"TOKENSMITH_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}

    def cli(*args: str, input: str | None = None) -> str:
        return subprocess.run([sys.executable, "-m", "tokensmith", *args], env=env, capture_output=True,
                              text=True, check=True, timeout=120, input=input).stdout

    cli("admin", "--init", "create-user", "gateway", "--password-stdin", input="correct-horse-battery-staple\n")
    secret = cli("admin", "create-token", "--user", "gateway", "--name", "api-gateway", "--introspect").strip()
    assert secrets.is_well_formed(secret)
    from tokensmith.db.database import Database

    database = Database(f"sqlite:///{tmp_path / 'data' / 'tokensmith.db'}")
    with database.session() as session:
        stored = session.scalar(select(Token.scopes).where(Token.name == "api-gateway")).split()
    database.dispose()
    assert "introspect" in stored
    assert "clusters:write" not in stored  # a member: their defaults plus introspect, nothing more
