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


@pytest.mark.parametrize("reason", list(REFUSALS))
def test_an_http_door_raises_what_problems_render(reason):
    error = Refusal.of(REFUSALS[reason]).as_error()
    assert error.status == API_STATUS[reason]
