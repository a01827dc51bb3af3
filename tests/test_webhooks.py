"""Organization webhooks: signed JSON events, retried with backoff, delivered once across replicas."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.receiver import start_receiver
from tokensmith.db.database import Database
from tokensmith.db.models import Webhook
from tokensmith.net.outbound import OutboundPolicy
from tokensmith.objectstore.crypto import KeyRing
from tokensmith.webhooks import signing
from tokensmith.webhooks.service import emit
from tokensmith.webhooks.worker import DeliveryWorker, backoff


@pytest.fixture(scope="module")
def receiver():
    r = start_receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def hook(client, admin, receiver):
    receiver.reset()
    response = client.post("/v1/webhooks", json={"url": receiver.url}, headers=admin.headers)
    assert response.status_code == 201
    return response.json()


@pytest.fixture
def keyring(settings):
    """The key ring the app under test encrypts signing secrets with."""
    return KeyRing.from_settings(settings)


@pytest.fixture
def outbound(settings):
    """The app's outbound rules: loopback allowed, as for the tests' receivers."""
    return OutboundPolicy(settings.webhook_allowed_networks)


@pytest.fixture
def worker(database, clock, keyring, outbound):
    return DeliveryWorker(database, clock, keyring=keyring, outbound=outbound, timeout=5)


def test_signing_secret_is_stored_encrypted(database, hook):
    from sqlalchemy import text

    with database.engine.connect() as connection:
        stored = connection.execute(text("SELECT signing_secret FROM webhooks")).scalar_one()
    assert hook["signing_secret"] not in stored
    assert hook["signing_secret"][6:] not in stored


def test_signing_secret_is_shown_once_and_list_omits_it(client, admin, hook):
    assert hook["signing_secret"].startswith("whsec_")
    listed = client.get("/v1/webhooks", headers=admin.headers).json()
    assert [h["id"] for h in listed] == [hook["webhook"]["id"]]
    assert "signing_secret" not in listed[0]


def test_revocation_is_posted_with_a_valid_hmac_signature(client, admin, alice, hook, receiver, worker):
    assert client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers).status_code == 204
    assert worker.run_once() == 1
    [got] = receiver.received
    assert got.json["type"] == "token.revoked"
    assert got.json["data"]["token"]["id"] == alice.token_id
    assert got.headers["x-tokensmith-event"] == "token.revoked"
    assert signing.verify(hook["signing_secret"], got.headers["x-tokensmith-signature"], got.body)
    assert not signing.verify("whsec_wrong", got.headers["x-tokensmith-signature"], got.body)
    assert alice.secret not in got.body.decode()


def test_a_failed_delivery_is_retried_after_backoff(client, alice, hook, receiver, worker, clock):
    receiver.fail_next = 1
    client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers)
    worker.run_once()
    assert len(receiver.received) == 1
    clock.advance(backoff(1) - timedelta(seconds=1))
    assert worker.run_once() == 0  # not yet due
    clock.advance(timedelta(seconds=1))
    assert worker.run_once() == 1
    first, second = receiver.received
    assert first.headers["x-tokensmith-delivery"] == second.headers["x-tokensmith-delivery"]
    assert worker.run_once() == 0  # delivered: never again


def test_backoff_doubles_and_is_capped():
    assert [backoff(n).total_seconds() for n in (1, 2, 3)] == [30, 60, 120]
    assert backoff(30) == timedelta(hours=6)


def test_expiring_warnings_at_seven_and_one_day_then_expired(client, make_account, hook, receiver, worker, clock):
    carol = make_account("carol", expiration="10d")

    def about_carol(event):
        return [r.json["data"]["token"] for r in receiver.of_type(event)
                if r.json["data"]["token"]["id"] == carol.token_id]

    worker.run_once()
    assert not about_carol("token.expiring")
    clock.advance(timedelta(days=3))
    worker.run_once()
    worker.run_once()
    assert [t["expires_in_days"] for t in about_carol("token.expiring")] == [7]
    clock.advance(timedelta(days=6))
    worker.run_once()
    assert [t["expires_in_days"] for t in about_carol("token.expiring")] == [7, 1]
    clock.advance(timedelta(days=1))
    worker.run_once()
    worker.run_once()
    assert len(about_carol("token.expired")) == 1


def test_webhooks_receive_only_their_organizations_events(client, mallory, alice, receiver, worker):
    receiver.reset()
    client.post("/v1/webhooks", json={"url": receiver.url}, headers=mallory.headers)
    client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers)
    worker.run_once()
    assert receiver.received == []


def test_only_admins_manage_webhooks(client, alice, receiver):
    assert client.post("/v1/webhooks", json={"url": receiver.url}, headers=alice.headers).status_code == 403


def test_bad_webhook_url_or_event_is_422(client, admin):
    assert client.post("/v1/webhooks", json={"url": "ftp://x"}, headers=admin.headers).status_code == 422
    assert client.post("/v1/webhooks", json={"url": "https://x", "events": ["token.eaten"]},
                       headers=admin.headers).status_code == 422


def test_deleted_webhook_receives_nothing(client, admin, alice, hook, receiver, worker):
    assert client.delete(f"/v1/webhooks/{hook['webhook']['id']}", headers=admin.headers).status_code == 204
    client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers)
    worker.run_once()
    assert receiver.received == []


def test_two_replicas_deliver_each_event_exactly_once(database, clock, hook, receiver, keyring, outbound):
    receiver.delay = 0.01
    with database.session() as session:
        org_id = session.scalars(select(Webhook.org_id)).one()
        for n in range(40):
            emit(session, org_id, "token.revoked", {"n": n}, clock.now())
    # Two replicas: separate engines and connection pools on the same database, running at once.
    replicas = [Database(database.url), Database(database.url)]
    workers = [DeliveryWorker(db, clock, keyring=keyring, outbound=outbound, batch=3, timeout=5) for db in replicas]
    barrier = threading.Barrier(2)

    def drain(worker):
        barrier.wait()
        while worker.run_once():
            pass

    threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for db in replicas:
        db.dispose()
    ids = [r.headers["x-tokensmith-delivery"] for r in receiver.received]
    assert len(ids) == 40
    assert len(set(ids)) == 40
    assert sorted(r.json["data"]["n"] for r in receiver.received) == list(range(40))
