"""Brute force: failed authentications are limited per client IP (and sign-in per user name) with 429.

Only failures count, the counters live in the database (so replicas share them), and a valid
token from another client is never slowed by someone else's flood.
"""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SECRET_KEY
from tokensmith import secrets
from tokensmith.accounts.service import AccountService
from tokensmith.api.app import create_app
from tokensmith.config import Settings
from tokensmith.ratelimit import client_ip, parse_networks

ATTACKER = ("203.0.113.66", 40000)
VICTIM = ("198.51.100.7", 40000)
PER_IP, PER_USER = 5, 3


def limited_app(database, clock, tmp_path, **overrides):
    settings = Settings(tmp_path / "data", database.url, failures_per_ip=PER_IP, failures_per_user=PER_USER,
                        failure_window_seconds=60, **overrides)
    return create_app(settings, database, SECRET_KEY, clock)


@pytest.fixture
def app(database, clock, tmp_path):
    return limited_app(database, clock, tmp_path)


def client_at(app, address) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, client=address)


def guess(client: TestClient, headers: dict[str, str] | None = None):
    return client.get("/v1/whoami", headers=headers or {"Authorization": "Bearer " + secrets.generate()})


def test_failures_beyond_the_limit_get_429_with_retry_after(app):
    attacker = client_at(app, ATTACKER)
    assert [guess(attacker).status_code for _ in range(PER_IP)] == [401] * PER_IP
    refused = guess(attacker)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["content-type"] == "application/problem+json"


def test_a_blocked_client_is_refused_even_with_a_valid_token(app, alice):
    attacker = client_at(app, ATTACKER)
    for _ in range(PER_IP + 1):
        guess(attacker)
    assert guess(attacker, alice.headers).status_code == 429


def test_someone_elses_flood_does_not_slow_a_valid_token(app, alice):
    attacker, victim = client_at(app, ATTACKER), client_at(app, VICTIM)
    for _ in range(PER_IP * 3):
        guess(attacker)
    assert guess(victim, alice.headers).status_code == 200


def test_successes_are_not_counted(app, alice):
    client = client_at(app, VICTIM)
    for _ in range(PER_IP * 3):
        assert guess(client, alice.headers).status_code == 200
    assert guess(client).status_code == 401  # the first failure, not the limit


def test_requests_without_credentials_are_not_guesses(app):
    client = client_at(app, ATTACKER)
    assert {client.get("/v1/whoami").status_code for _ in range(PER_IP * 2)} == {401}


def test_the_limit_lifts_when_the_window_passes(app, clock, alice):
    attacker = client_at(app, ATTACKER)
    for _ in range(PER_IP + 1):
        guess(attacker)
    clock.advance(timedelta(seconds=61))
    assert guess(attacker, alice.headers).status_code == 200
    assert guess(attacker).status_code == 401


def test_replicas_share_the_counters(database, clock, tmp_path):
    """Two app instances on one database, as two replicas: failures on one count on the other."""
    first, second = limited_app(database, clock, tmp_path), limited_app(database, clock, tmp_path)
    for _ in range(PER_IP - 1):
        assert guess(client_at(first, ATTACKER)).status_code == 401
    assert guess(client_at(second, ATTACKER)).status_code == 401  # the limit-th failure, on the other one
    assert guess(client_at(first, ATTACKER)).status_code == 429
    assert guess(client_at(second, ATTACKER)).status_code == 429


# --- password sign-in --------------------------------------------------------------------------


@pytest.fixture
def carol(database, clock):
    with database.session() as session:
        accounts = AccountService(session, clock)
        accounts.create_user(accounts.get_or_create_org("default"), "carol", "correct horse battery")
    return "carol"


def sign_in(client: TestClient, password: str, username: str = "carol"):
    return client.post("/v1/auth/token", json={"username": username, "password": password, "name": "cli"})


def test_sign_in_is_limited_per_user_name_across_addresses(app, carol):
    for octet in range(PER_USER):
        assert sign_in(client_at(app, (f"192.0.2.{octet}", 1)), "wrong password!").status_code == 401
    # Over the name's limit, an address that already failed is refused, even with the right password.
    refused = sign_in(client_at(app, ("192.0.2.0", 1)), "correct horse battery")
    assert refused.status_code == 429 and "Retry-After" in refused.headers


def test_a_locked_user_name_still_lets_the_right_password_in_from_an_address_with_no_failures(app, carol):
    for octet in range(PER_USER + 2):
        sign_in(client_at(app, (f"192.0.2.{octet}", 1)), "wrong password!")
    assert sign_in(client_at(app, ("198.51.100.7", 1)), "correct horse battery").status_code == 201


def test_a_fresh_address_guessing_a_locked_user_name_gets_one_try_then_429(app, carol):
    for octet in range(PER_USER):
        sign_in(client_at(app, (f"192.0.2.{octet}", 1)), "wrong password!")
    fresh = client_at(app, ("198.51.100.8", 1))
    assert sign_in(fresh, "another guess").status_code in (401, 429)
    assert sign_in(fresh, "correct horse battery").status_code == 429


def test_a_user_name_guessed_from_very_many_addresses_is_refused_everywhere(app, carol):
    from tokensmith.ratelimit import USER_HARD_FACTOR

    for n in range(PER_USER * USER_HARD_FACTOR):
        sign_in(client_at(app, (f"10.{n // 250}.{n % 250}.1", 1)), "wrong password!")
    assert sign_in(client_at(app, ("198.51.100.9", 1)), "correct horse battery").status_code == 429


def test_passing_a_lockout_is_audited_for_the_owner(app, carol, database):
    from sqlalchemy import select

    from tokensmith.db.models import AuditEvent

    for octet in range(PER_USER):
        sign_in(client_at(app, (f"192.0.2.{octet}", 1)), "wrong password!")
    assert sign_in(client_at(app, ("198.51.100.7", 1)), "correct horse battery").status_code == 201
    with database.session() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "auth.lockout_passed"))
    assert event is not None and event.actor_user == "carol" and event.client_ip == "198.51.100.7"
    assert '"failed_attempts_in_window": 3' in (event.details or "")


def test_sign_in_for_another_user_is_not_blocked_by_that_flood(app, carol, database, clock):
    with database.session() as session:
        accounts = AccountService(session, clock)
        accounts.create_user(accounts.get_or_create_org("default"), "erin", "erin's long password")
    for _ in range(PER_USER + 1):
        sign_in(client_at(app, ATTACKER), "wrong password!")
    assert sign_in(client_at(app, VICTIM), "erin's long password", "erin").status_code == 201


def test_a_correct_password_is_not_counted(app, carol):
    client = client_at(app, VICTIM)
    for _ in range(PER_USER + 1):
        assert sign_in(client, "correct horse battery").status_code == 201


# --- client address and trusted proxies --------------------------------------------------------


def test_x_forwarded_for_is_ignored_by_default(app):
    attacker = client_at(app, ATTACKER)
    for n in range(PER_IP):
        guess(attacker, {"Authorization": "Bearer " + secrets.generate(), "X-Forwarded-For": f"10.9.9.{n}"})
    assert guess(attacker, {"X-Forwarded-For": "10.9.9.250",
                            "Authorization": "Bearer " + secrets.generate()}).status_code == 429


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(database, clock, tmp_path, alice):
    app = limited_app(database, clock, tmp_path, trusted_proxies=("10.0.0.0/8",))
    proxy = client_at(app, ("10.0.0.2", 1))
    for _ in range(PER_IP + 1):
        guess(proxy, {"Authorization": "Bearer " + secrets.generate(), "X-Forwarded-For": "203.0.113.66"})
    assert guess(proxy, {**alice.headers, "X-Forwarded-For": "198.51.100.7"}).status_code == 200
    # The flooding client is refused its next guess; a token the cache knows still works from there
    # (a blocked address keeps its valid tokens: one bad pod behind a NAT locks out nobody else).
    assert guess(proxy, {"Authorization": "Bearer " + secrets.generate(),
                         "X-Forwarded-For": "203.0.113.66"}).status_code == 429
    assert guess(proxy, {**alice.headers, "X-Forwarded-For": "203.0.113.66"}).status_code == 200


def test_client_ip_reads_forwarded_for_from_the_right():
    trusted = parse_networks(["10.0.0.0/8"])
    assert client_ip("10.0.0.2", "6.6.6.6, 203.0.113.9, 10.0.0.3", trusted) == "203.0.113.9"
    assert client_ip("198.51.100.1", "6.6.6.6", trusted) == "198.51.100.1"  # the peer is no proxy
    assert client_ip("10.0.0.2", "not-an-ip", trusted) == "10.0.0.2"
    assert client_ip("10.0.0.2", "6.6.6.6", ()) == "10.0.0.2"


def test_a_bad_trusted_proxy_entry_is_refused_with_its_name():
    with pytest.raises(ValueError, match="TOKENSMITH_TRUSTED_PROXIES"):
        parse_networks(["10.0.0.0/8", "proxy.local"])


def test_sign_in_documents_429(client):
    assert "429" in client.get("/openapi.json").json()["paths"]["/v1/auth/token"]["post"]["responses"]


def test_malformed_secrets_are_refused_offline_and_not_counted(app, alice):
    client = client_at(app, ATTACKER)
    mangled = {"Authorization": "Bearer " + alice.secret[:-1] + ("A" if alice.secret[-1] != "A" else "B")}
    assert {guess(client, mangled).status_code for _ in range(PER_IP * 2)} == {401}
    assert guess(client, alice.headers).status_code == 200


def test_every_api_operation_documents_the_429_it_can_answer():
    from tokensmith.db.database import Database

    app = create_app(Settings(data_dir=None, database_url="sqlite://"), Database("sqlite://"), SECRET_KEY)  # type: ignore[arg-type]
    operations = [(method, path, operation) for path, item in app.openapi()["paths"].items()
                  if path.startswith("/v1/") for method, operation in item.items()]
    assert len(operations) > 20
    # Forward-auth answers 403 instead: nginx auth_request turns a 429 into a 500 (docs/forward-auth.md).
    assert [(m, p) for m, p, operation in operations
            if "429" not in operation["responses"] and p != "/v1/auth/verify"] == []
    forward_auth = app.openapi()["paths"]["/v1/auth/verify"]["get"]["responses"]
    assert "403" in forward_auth and "429" not in forward_auth
