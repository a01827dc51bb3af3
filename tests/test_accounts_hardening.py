"""Accounts and sessions under a hostile network: sessions end with the password, lock-out bounded,
initial passwords mint nothing, TLS via a trusted proxy, caps on what one account holds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.conftest import PRODUCTION_PASSWORD_HASHER, SECRET_KEY
from tokensmith import caps
from tokensmith.accounts.admin import UserAdminService
from tokensmith.accounts.service import AccountService
from tokensmith.api.app import create_app
from tokensmith.config import Settings
from tokensmith.console.sessions import SessionService
from tokensmith.db.models import AuditEvent, ConsoleSession, User

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PROXY = ("10.0.0.5", 40000)


@dataclass(frozen=True)
class As:
    user_id: int
    org_id: int
    is_admin: bool


def as_actor(user: User) -> As:
    return As(user.id, user.org_id, user.is_admin)


def make_user(database, clock, username: str, password: str, **kwargs) -> User:
    with database.session() as session:
        accounts = AccountService(session, clock)
        return accounts.create_user(accounts.get_or_create_org("default"), username, password, **kwargs)


def open_session(database, clock, user: User) -> str:
    with database.session() as session:
        return SessionService(session, clock, SECRET_KEY).start(user)


def browser(app, session_id: str, address=("198.51.100.20", 1)) -> TestClient:
    client = TestClient(app, raise_server_exceptions=False, client=address)
    client.cookies.set("tsm_session", session_id)
    return client


def signed_in(client: TestClient) -> bool:
    return client.get("/tokens", follow_redirects=False).status_code == 200


def events(database, action: str) -> list[AuditEvent]:
    with database.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def change_password(client: TestClient, current: str, new: str):
    csrf = CSRF.search(client.get("/account/password").text).group(1)
    return client.post("/account/password", data={"csrf": csrf, "current": current, "new": new, "confirm": new},
                       follow_redirects=False)


# --- sessions end with the password ----------------------------------------------------------


def test_changing_a_password_ends_the_users_other_console_sessions_at_once(app, database, clock):
    carol = make_user(database, clock, "carol", "correct horse battery")
    here = browser(app, open_session(database, clock, carol))
    elsewhere = browser(app, open_session(database, clock, carol))
    assert change_password(here, "correct horse battery", "a brand new password").status_code == 303
    assert signed_in(here)
    assert not signed_in(elsewhere)
    [changed] = events(database, "auth.password_changed")  # one operation, one event
    assert changed.actor_user == "carol" and '"via": "console"' in changed.details


def test_an_admin_resetting_a_password_ends_all_of_that_users_sessions(app, database, clock, admin):
    carol = make_user(database, clock, "carol", "correct horse battery")
    hers = browser(app, open_session(database, clock, carol))
    with database.session() as session:
        UserAdminService(session, clock).reset_password(as_actor(admin.user), "carol")
    assert not signed_in(hers)


def test_disabling_a_user_ends_their_sessions_in_the_service_itself(app, database, clock, admin):
    carol = make_user(database, clock, "carol", "correct horse battery")
    open_session(database, clock, carol)
    with database.session() as session:
        UserAdminService(session, clock).set_disabled(as_actor(admin.user), "carol", disabled=True)
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(ConsoleSession)) == 0


# --- must change password ---------------------------------------------------------------------


def test_an_initial_password_cannot_mint_api_tokens(client, database, clock):
    make_user(database, clock, "dave", "initial-pass-1", must_change_password=True)
    response = client.post("/v1/auth/token", json={"username": "dave", "password": "initial-pass-1"})
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert "must be changed" in response.json()["detail"]


def test_after_changing_it_through_the_api_the_password_mints_tokens(client, database, clock):
    make_user(database, clock, "dave", "initial-pass-1", must_change_password=True)
    changed = client.post("/v1/auth/password", json={"username": "dave", "password": "initial-pass-1",
                                                     "new_password": "my own password"})
    assert changed.status_code == 204
    assert client.post("/v1/auth/token", json={"username": "dave", "password": "my own password"}).status_code == 201


def test_the_api_password_change_refuses_a_wrong_current_password(client, database, clock):
    make_user(database, clock, "dave", "initial-pass-1", must_change_password=True)
    response = client.post("/v1/auth/password", json={"username": "dave", "password": "wrong-password",
                                                      "new_password": "my own password"})
    assert response.status_code == 401


# --- the console's change-password form is rate limited ----------------------------------------


def test_the_console_change_password_form_is_limited_like_sign_in(database, clock, tmp_path):
    app = create_app(Settings(tmp_path / "data", database.url, failures_per_ip=50, failures_per_user=3),
                     database, SECRET_KEY, clock)
    carol = make_user(database, clock, "carol", "correct horse battery")
    thief = browser(app, open_session(database, clock, carol))
    answers = [change_password(thief, f"guess number {n}", "a brand new password").status_code for n in range(5)]
    assert answers[:3] == [422, 422, 422]
    assert answers[-1] == 429
    # The right password from the same browser is refused too until the window ends.
    assert change_password(thief, "correct horse battery", "a brand new password").status_code == 429


# --- the audit log does not keep what was typed into the user-name field -----------------------


def test_a_password_typed_as_a_user_name_is_not_stored_in_the_audit_log(client):
    client.post("/v1/auth/token", json={"username": "MyS3cretPassw0rd", "password": "x"})
    [event] = [e for e in [*events(client.app.state.context.database, "auth.sign_in")]]
    assert event.actor_user == "(unknown user name)"
    assert "MyS3cretPassw0rd" not in repr(vars(event))


def test_a_failed_sign_in_of_an_existing_user_names_the_user(client, database, clock):
    make_user(database, clock, "carol", "correct horse battery")
    client.post("/v1/auth/token", json={"username": "carol", "password": "wrong password"})
    assert events(database, "auth.sign_in")[0].actor_user == "carol"


# --- behind a trusted TLS proxy ----------------------------------------------------------------


@pytest.fixture
def proxied_app(database, clock, tmp_path):
    return create_app(Settings(tmp_path / "data", database.url, trusted_proxies=("10.0.0.0/8",)),
                      database, SECRET_KEY, clock)


def test_behind_a_trusted_tls_proxy_the_session_cookie_is_secure_and_hsts_is_sent(proxied_app):
    client = TestClient(proxied_app, client=PROXY)
    response = client.get("/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert "secure" in response.headers["set-cookie"].lower()
    assert response.headers["strict-transport-security"].startswith("max-age=")


def test_x_forwarded_proto_from_an_untrusted_client_is_ignored(proxied_app):
    client = TestClient(proxied_app, client=("203.0.113.9", 1))
    response = client.get("/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert "secure" not in response.headers["set-cookie"].lower()
    assert "strict-transport-security" not in response.headers


# --- caps ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def default_caps():
    yield
    caps.configure(caps.Caps())  # caps are process-wide; the next test's app sets its own anyway


def capped_app(database, clock, tmp_path, **limits):
    return create_app(Settings(tmp_path / "data", database.url, **limits), database, SECRET_KEY, clock)


def test_live_tokens_per_user_are_capped_with_a_422_naming_the_limit(database, clock, tmp_path, alice):
    client = TestClient(capped_app(database, clock, tmp_path, max_tokens_per_user=3))
    answers = [client.post("/v1/tokens", headers=alice.headers, json={"name": f"t{n}"}).status_code
               for n in range(3)]
    assert answers == [201, 201, 422]  # alice's fixture token is the first of three
    refused = client.post("/v1/tokens", headers=alice.headers, json={"name": "one more"})
    assert refused.status_code == 422 and "at most 3 live tokens" in refused.json()["detail"]
    assert "TOKENSMITH_MAX_TOKENS_PER_USER" in refused.json()["detail"]


def test_a_deleted_token_frees_its_place_under_the_cap(database, clock, tmp_path, alice):
    client = TestClient(capped_app(database, clock, tmp_path, max_tokens_per_user=2))
    created = client.post("/v1/tokens", headers=alice.headers, json={"name": "t"}).json()
    assert client.post("/v1/tokens", headers=alice.headers, json={"name": "u"}).status_code == 422
    assert client.delete(f"/v1/tokens/{created['token']['id']}", headers=alice.headers).status_code == 204
    assert client.post("/v1/tokens", headers=alice.headers, json={"name": "u"}).status_code == 201


def test_live_access_keys_per_user_are_capped(database, clock, tmp_path, alice):
    client = TestClient(capped_app(database, clock, tmp_path, max_access_keys_per_user=2))
    answers = [client.post("/v1/object-storage/access-keys", headers=alice.headers,
                           json={"durationSeconds": 3600}).status_code
               for _ in range(3)]
    assert answers == [201, 201, 422]


def test_a_sign_in_beyond_the_session_cap_ends_the_oldest_session(database, clock, tmp_path):
    app = capped_app(database, clock, tmp_path, max_sessions_per_user=2)
    carol = make_user(database, clock, "carol", "correct horse battery")
    oldest = browser(app, open_session(database, clock, carol))
    clock.advance(timedelta(seconds=1))
    middle = browser(app, open_session(database, clock, carol))
    clock.advance(timedelta(seconds=1))
    newest = browser(app, open_session(database, clock, carol))
    assert (signed_in(oldest), signed_in(middle), signed_in(newest)) == (False, True, True)


def test_passwords_are_hashed_with_argon2id_at_its_recommended_cost():
    # The other in-process tests hash cheaply (tests/conftest.py's cheap_password_hashing); production does not.
    hashed = PRODUCTION_PASSWORD_HASHER.hash("correct horse battery staple")
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PRODUCTION_PASSWORD_HASHER.verify(hashed, "correct horse battery staple")
