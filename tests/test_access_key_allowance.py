"""The organization's allowance for temporary S3 access keys: 7 days unless an admin allows longer
(up to the hard ceiling of 365 days), enforced when keys are minted, with a 422 stating the limit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from tokensmith.db.models import AuditEvent, Token
from tokensmith.errors import InvalidInput
from tokensmith.objectstore.crypto import KeyRing
from tokensmith.objectstore.limits import CEILING, DEFAULT_MAX_DURATION, MIN_ALLOWANCE
from tokensmith.objectstore.service import AccessKeyService
from tokensmith.policy import ExpiryPolicy, PolicyService

KEYS = "/v1/object-storage/access-keys"
POLICY = "/v1/org/policy"
DAY = 86400


def mint(client, account, duration: int):
    return client.post(KEYS, json={"durationSeconds": duration, "attributes": {"name": "k"}}, headers=account.headers)


def allow(client, admin, seconds: int, **rest):
    return client.put(POLICY, json={"max_access_key_seconds": seconds, **rest}, headers=admin.headers)


# --- over the API ------------------------------------------------------------------------------


def test_the_default_allowance_is_seven_days(client, alice):
    assert client.get(POLICY, headers=alice.headers).json()["max_access_key_seconds"] == 7 * DAY
    assert mint(client, alice, 7 * DAY).status_code == 201
    refused = mint(client, alice, 7 * DAY + 1)
    assert refused.status_code == 422
    assert "900 to 604800 (7 days, this organization's limit)" in refused.json()["detail"]


def test_an_admin_allows_longer_keys_and_the_422_states_the_new_limit(client, admin, alice, clock):
    assert allow(client, admin, 30 * DAY).status_code == 200
    created = mint(client, alice, 30 * DAY)
    assert created.status_code == 201
    assert created.json()["expiry"].startswith(str((clock.now() + timedelta(days=30)).date()))
    refused = mint(client, alice, 30 * DAY + 1)
    assert refused.status_code == 422
    assert "900 to 2592000 (30 days, this organization's limit)" in refused.json()["detail"]


def test_a_wrongly_typed_duration_also_states_the_organizations_limit(client, admin, alice):
    allow(client, admin, 90 * DAY)
    refused = mint(client, alice, "3600")  # type: ignore[arg-type]
    assert refused.status_code == 422 and "(90 days, this organization's limit)" in refused.json()["detail"]


def test_the_allowance_is_bounded_by_one_hour_and_the_hard_ceiling_of_365_days(client, admin):
    assert allow(client, admin, CEILING).status_code == 200
    for seconds in (CEILING + 1, MIN_ALLOWANCE - 1, 0, -1, 10**12):
        response = allow(client, admin, seconds)
        assert response.status_code == 422, seconds
    assert allow(client, admin, "7d").status_code == 422  # type: ignore[arg-type]
    assert client.get(POLICY, headers=admin.headers).json()["max_access_key_seconds"] == CEILING


def test_a_lower_allowance_refuses_keys_the_default_would_allow(client, admin, alice):
    allow(client, admin, MIN_ALLOWANCE)
    assert mint(client, alice, 2 * 3600).status_code == 422
    assert mint(client, alice, 3600).status_code == 201
    assert mint(client, alice, 0).status_code == 201  # permanent keys are not affected


def test_members_cannot_change_the_allowance(client, alice):
    assert allow(client, alice, 30 * DAY).status_code == 403
    assert client.get(POLICY, headers=alice.headers).json()["max_access_key_seconds"] == DEFAULT_MAX_DURATION


def test_the_allowance_is_per_organization(client, mallory, alice):
    assert allow(client, mallory, 365 * DAY).status_code == 200
    assert mint(client, mallory, 365 * DAY).status_code == 201
    assert mint(client, alice, 8 * DAY).status_code == 422


def test_put_replaces_the_whole_policy_so_an_omitted_allowance_returns_to_seven_days(client, admin):
    allow(client, admin, 30 * DAY)
    client.put(POLICY, json={"max_lifetime_days": 90}, headers=admin.headers)
    assert client.get(POLICY, headers=admin.headers).json()["max_access_key_seconds"] == 7 * DAY


def test_the_policy_description_mentions_the_allowance(client, admin):
    described = allow(client, admin, 14 * DAY).json()["description"]
    assert "temporary access keys at most 14 days" in described


def test_changing_the_allowance_is_audited_with_before_and_after(client, database, admin):
    allow(client, admin, 14 * DAY)
    with database.session() as session:
        [event] = session.query(AuditEvent).filter(AuditEvent.action == "policy.updated").all()
        assert event.actor_user == "admin" and event.client_ip
        assert "at most 7 days" in event.details and "at most 14 days" in event.details


# --- in the services -------------------------------------------------------------------------


@dataclass(frozen=True)
class Minter:
    user_id: int
    org_id: int
    is_admin: bool
    token_id: int
    expires_at: datetime | None
    token_name: str


@pytest.fixture
def minter(database, clock, make_account) -> Minter:
    """A token that never expires, so only the allowance bounds a key's lifetime."""
    account = make_account("keeper", expiration="never")
    with database.session() as session:
        token = session.scalars(select(Token).where(Token.public_id == account.token_id)).one()
        return Minter(token.user_id, token.org_id, False, token.id, token.expires_at, token.name)


def keys(session, clock) -> AccessKeyService:
    return AccessKeyService(session, clock, KeyRing([b"k" * 32]))


def test_service_reads_the_allowance_from_the_policy(database, clock, minter):
    with database.session() as session:
        assert keys(session, clock).max_duration(minter.org_id) == DEFAULT_MAX_DURATION
        PolicyService(session, clock).set(minter.org_id, ExpiryPolicy(max_access_key_seconds=60 * DAY))
        assert keys(session, clock).max_duration(minter.org_id) == 60 * DAY
        created = keys(session, clock).create(minter, 60 * DAY, "long")
        assert created.key.expires_at == clock.now() + timedelta(days=60)


def test_service_refuses_beyond_the_allowance_with_the_field_named(database, clock, minter):
    with database.session() as session, pytest.raises(InvalidInput) as refused:
        keys(session, clock).create(minter, 7 * DAY + 1, "too long")
    assert refused.value.field == "durationSeconds" and "7 days, this organization's limit" in refused.value.detail


def test_policy_service_refuses_an_allowance_outside_the_bounds(database, clock, minter):
    with database.session() as session:
        policies = PolicyService(session, clock)
        for seconds in (MIN_ALLOWANCE - 1, CEILING + 1):
            with pytest.raises(InvalidInput) as refused:
                policies.set(minter.org_id, ExpiryPolicy(max_access_key_seconds=seconds))
            assert refused.value.field == "max_access_key_seconds" and "365 days" in refused.value.detail
        assert policies.get(minter.org_id).max_access_key_seconds == DEFAULT_MAX_DURATION
