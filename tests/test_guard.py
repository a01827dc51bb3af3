"""The door guard's refusals and the one declared wire answer per protocol (api/guard.py)."""

import pytest

from tokensmith.api.guard import (
    API_STATUS,
    EXPIRED,
    FORWARD_AUTH_STATUS,
    INVALID,
    LIMITED,
    MISSING,
    Refusal,
    introspection_answer,
    tokenreview_error,
)
from tokensmith.errors import AuthenticationFailed
from tokensmith.ratelimit import RateLimited

REFUSALS = {
    MISSING: AuthenticationFailed("authentication required", error=None),
    INVALID: AuthenticationFailed("invalid token"),
    EXPIRED: AuthenticationFailed("token expired"),
    LIMITED: RateLimited(42),
}


@pytest.mark.parametrize("reason", list(REFUSALS))
def test_a_refusal_keeps_its_reason(reason):
    assert Refusal.of(REFUSALS[reason]).reason == reason


def test_a_rate_limit_refusal_says_when_to_retry():
    assert Refusal.of(RateLimited(42)).retry_after == 42


@pytest.mark.parametrize("reason", list(REFUSALS))
def test_every_reason_has_a_status_for_the_api_and_forward_auth(reason):
    assert API_STATUS[reason] in (401, 429) and FORWARD_AUTH_STATUS[reason] in (401, 403)


def test_forward_auth_says_403_where_the_api_says_429():
    assert (API_STATUS[LIMITED], FORWARD_AUTH_STATUS[LIMITED]) == (429, 403)


def test_a_missing_credential_gets_no_rfc_6750_error_code():
    assert Refusal.of(REFUSALS[MISSING]).authentication_failed().error is None
    assert Refusal.of(REFUSALS[INVALID]).authentication_failed().error == "invalid_token"


@pytest.mark.parametrize("reason", list(REFUSALS))
def test_introspection_answers_every_refusal_exactly_inactive(reason):
    assert introspection_answer(Refusal.of(REFUSALS[reason])) == {"active": False}


def test_tokenreview_says_why_and_when_to_retry():
    assert tokenreview_error(Refusal.of(REFUSALS[EXPIRED]), "cluster over its limit") == "token expired"
    limited = tokenreview_error(Refusal.of(RateLimited(7)), "cluster over its limit")
    assert limited == "cluster over its limit; retry after 7 s"


# --- hot doors answer a cached caller from memory, with the same rules -------------------------


def test_a_cached_caller_without_the_scope_is_still_refused_naming_it(client, alice):
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 200  # alice is cached now
    for _ in range(2):
        refused = client.post("/v1/oauth2/introspect", data={"token": alice.secret}, headers=alice.headers)
        assert refused.status_code == 403 and "introspect" in refused.json()["detail"]


def test_a_cached_caller_with_the_scope_gets_the_same_answer_from_memory(client, admin, alice):
    first = client.post("/v1/oauth2/introspect", data={"token": alice.secret}, headers=admin.headers)
    again = client.post("/v1/oauth2/introspect", data={"token": alice.secret}, headers=admin.headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and again.json()["active"] is True


def test_a_cached_caller_from_a_new_address_is_still_audited(app, admin, alice, database):
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from tokensmith.db.models import AuditEvent

    with TestClient(app, client=("192.0.2.1", 1)) as first, TestClient(app, client=("192.0.2.2", 1)) as second:
        first.post("/v1/oauth2/introspect", data={"token": alice.secret}, headers=admin.headers)
        second.post("/v1/oauth2/introspect", data={"token": alice.secret}, headers=admin.headers)
    with database.session() as session:
        addresses = set(session.scalars(select(AuditEvent.client_ip).where(
            AuditEvent.action == "token.used_from_new_ip", AuditEvent.actor_token == admin.token_id)))
    assert {"192.0.2.1", "192.0.2.2"} <= addresses
