"""PATCH /v1/tokens/{id}: a token's expiry set to a new date within the policy, audited; never for a dead token."""

import json
from datetime import datetime, timedelta

from sqlalchemy import select

from tokensmith.db.models import AuditEvent


def extend(client, account, token_id, **body):
    return client.patch(f"/v1/tokens/{token_id}", json=body, headers=account.headers)


def expires_at(response) -> datetime:
    return datetime.fromisoformat(response.json()["expires_at"])


def test_extending_with_a_duration_sets_the_expiry_from_now(client, alice, clock):
    clock.advance(timedelta(days=20))
    response = extend(client, alice, alice.token_id, expiration="90d")
    assert response.status_code == 200, response.text
    assert expires_at(response) == clock.now() + timedelta(days=90)
    assert client.get(f"/v1/tokens/{alice.token_id}", headers=alice.headers).json()["expires_at"] \
        == response.json()["expires_at"]


def test_extending_with_an_instant_sets_exactly_that_instant(client, alice, clock):
    instant = (clock.now() + timedelta(days=200)).replace(microsecond=0)
    response = extend(client, alice, alice.token_id, expires_at=instant.isoformat())
    assert response.status_code == 200
    assert expires_at(response) == instant


def test_the_secret_keeps_working_past_its_old_expiry(client, alice, clock):
    assert extend(client, alice, alice.token_id, expiration="90d").status_code == 200
    clock.advance(timedelta(days=31))  # the token was made for 30 days
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 200


def test_an_extension_is_audited_with_the_old_and_new_expiry(client, alice, database, clock):
    before = client.get(f"/v1/tokens/{alice.token_id}", headers=alice.headers).json()["expires_at"]
    after = extend(client, alice, alice.token_id, expiration="90d").json()["expires_at"]
    with database.session() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "token.extended"))
        assert event is not None and event.target == alice.token_id and event.actor_user == "alice"
        details = json.loads(event.details)
    assert datetime.fromisoformat(details["expires_at_before"]) == datetime.fromisoformat(before)
    assert datetime.fromisoformat(details["expires_at"]) == datetime.fromisoformat(after)


def test_an_extension_beyond_the_policy_is_422_and_changes_nothing(client, admin, alice):
    client.put("/v1/org/policy", json={"max_lifetime_days": 90}, headers=admin.headers)
    before = client.get(f"/v1/tokens/{alice.token_id}", headers=alice.headers).json()["expires_at"]
    for body in ({"expiration": "1y"}, {"expiration": "never"}):
        response = extend(client, alice, alice.token_id, **body)
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "organization policy" in response.json()["detail"]
    assert client.get(f"/v1/tokens/{alice.token_id}", headers=alice.headers).json()["expires_at"] == before


def test_an_expired_token_cannot_be_extended(client, alice, clock):
    short = client.post("/v1/tokens", json={"name": "short", "expiration": "1h"}, headers=alice.headers).json()
    clock.advance(timedelta(hours=2))
    response = extend(client, alice, short["token"]["id"], expiration="30d")
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "expired" in response.json()["detail"]
    assert client.get("/v1/whoami", headers={"Authorization": f"Bearer {short['secret']}"}).status_code == 401


def test_a_revoked_token_is_404(client, alice):
    other = client.post("/v1/tokens", json={"name": "other"}, headers=alice.headers).json()["token"]["id"]
    assert client.delete(f"/v1/tokens/{other}", headers=alice.headers).status_code == 204
    assert extend(client, alice, other, expiration="30d").status_code == 404


def test_someone_elses_token_is_404(client, alice, bob, mallory):
    assert extend(client, bob, alice.token_id, expiration="30d").status_code == 404
    assert extend(client, mallory, alice.token_id, expiration="30d").status_code == 404


def test_an_admin_may_extend_a_members_token(client, admin, alice):
    assert extend(client, admin, alice.token_id, expiration="90d").status_code == 200


def test_no_new_expiry_or_both_is_422(client, alice):
    assert extend(client, alice, alice.token_id).status_code == 422
    both = extend(client, alice, alice.token_id, expiration="30d", expires_at="2031-01-01T00:00:00Z")
    assert both.status_code == 422


def test_an_unknown_field_is_422(client, alice):
    assert extend(client, alice, alice.token_id, name="renamed").status_code == 422


def test_extending_needs_the_write_scope(client, alice):
    reader = client.post("/v1/tokens", json={"name": "reader", "scopes": ["tokens:read"]},
                         headers=alice.headers).json()["secret"]
    response = client.patch(f"/v1/tokens/{alice.token_id}", json={"expiration": "30d"},
                            headers={"Authorization": f"Bearer {reader}"})
    assert response.status_code == 403


def test_an_extended_token_is_warned_again_before_its_new_expiry(client, alice, clock, database, settings):
    from tokensmith.db.models import Token, TokenNotice
    from tokensmith.objectstore.crypto import KeyRing
    from tokensmith.webhooks.worker import DeliveryWorker

    def notices(public_id: str) -> list[str]:
        with database.session() as session:
            return list(session.scalars(select(TokenNotice.kind).join(Token, Token.id == TokenNotice.token_id)
                                        .where(Token.public_id == public_id)))

    worker = DeliveryWorker(database, clock, keyring=KeyRing.from_settings(settings), timeout=5)
    short = client.post("/v1/tokens", json={"name": "short", "expiration": "2d"}, headers=alice.headers).json()
    worker.scan_expirations()
    assert notices(short["token"]["id"]) == ["expiring-7d"]
    assert extend(client, alice, short["token"]["id"], expiration="30d").status_code == 200
    assert notices(short["token"]["id"]) == []
    clock.advance(timedelta(days=25))
    worker.scan_expirations()
    assert notices(short["token"]["id"]) == ["expiring-7d"]  # the new expiry gets its own warning
