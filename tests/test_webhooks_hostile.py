"""Hostile receivers and poisoned rows: one organization's webhook never holds up another's, and no
answer can make a delivery unbounded in time or memory."""

import logging
import ssl
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from tests.pki import make_pki
from tests.receiver import fake_dns, start_hostile, start_receiver
from tokensmith.db.models import Organization, Webhook, WebhookDelivery
from tokensmith.net.outbound import OutboundError, OutboundPolicy, fetch, parse_networks
from tokensmith.objectstore.crypto import KeyRing
from tokensmith.webhooks.service import emit
from tokensmith.webhooks.worker import MAX_ATTEMPTS, DeliveryWorker

LOOPBACK = OutboundPolicy(parse_networks("127.0.0.0/8"))


@pytest.fixture
def receiver():
    r = start_receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def hostile():
    started = []

    def start(mode, location=""):
        started.append(start_hostile(mode, location))
        return started[-1]

    yield start
    for h in started:
        h.stop()


@pytest.fixture
def keyring(settings):
    return KeyRing.from_settings(settings)


def add_hook(database, keyring, org_name, url, public_id):
    """A webhook row as stored (also rows that predate today's URL checks)."""
    with database.session() as session:
        org = session.scalar(select(Organization).where(Organization.name == org_name))
        session.add(Webhook(public_id=public_id, org_id=org.id, url=url,
                            signing_secret=keyring.encrypt("whsec_test", public_id), created_at=org.created_at))
        return org.id


def queue(database, clock, org_id, count):
    with database.session() as session:
        for n in range(count):
            emit(session, org_id, "token.revoked", {"n": n}, clock.now())


def deliveries(database, webhook_public_id):
    with database.session() as session:
        return session.scalars(select(WebhookDelivery).join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                               .where(Webhook.public_id == webhook_public_id).order_by(WebhookDelivery.id)).all()


def test_a_hanging_receiver_of_one_org_does_not_delay_another_orgs_delivery_past_one_pass(
        database, clock, keyring, admin, mallory, receiver, hostile):
    hang = hostile("hang")
    evil = add_hook(database, keyring, "evil-corp", hang.url, "whk_hang")
    ours = add_hook(database, keyring, "default", receiver.url, "whk_ours")
    queue(database, clock, evil, 25)  # more than a whole batch, queued first
    queue(database, clock, ours, 1)
    worker = DeliveryWorker(database, clock, keyring=keyring, outbound=LOOPBACK, timeout=1)
    worker.run_once()
    assert len(receiver.received) == 1
    assert [d.status for d in deliveries(database, "whk_ours")] == ["delivered"]


def test_a_poisoned_url_row_fails_alone_and_the_pass_delivers_the_others(database, clock, keyring, admin, mallory,
                                                                          receiver):
    evil = add_hook(database, keyring, "evil-corp", "http://127.0.0.1:9/x\r\nX-Injected: 1", "whk_poison")
    ours = add_hook(database, keyring, "default", receiver.url, "whk_ours")
    queue(database, clock, evil, 3)
    queue(database, clock, ours, 1)
    worker = DeliveryWorker(database, clock, keyring=keyring, outbound=LOOPBACK, timeout=1)
    worker.run_once()
    assert len(receiver.received) == 1
    poisoned = deliveries(database, "whk_poison")[0]
    assert poisoned.status == "pending" and poisoned.attempts == 1
    assert poisoned.last_error.startswith("refused: ")


def test_an_undecryptable_signing_secret_fails_alone(database, clock, keyring, admin, mallory, receiver):
    evil = add_hook(database, keyring, "evil-corp", receiver.url, "whk_broken")
    with database.session() as session:
        session.scalar(select(Webhook).where(Webhook.public_id == "whk_broken")).signing_secret = "garbage"
    ours = add_hook(database, keyring, "default", receiver.url, "whk_ours")
    queue(database, clock, evil, 1)
    queue(database, clock, ours, 1)
    DeliveryWorker(database, clock, keyring=keyring, outbound=LOOPBACK, timeout=1).run_once()
    assert len(receiver.received) == 1
    assert deliveries(database, "whk_broken")[0].last_error.startswith("internal error")


def test_each_attempt_is_counted_before_it_is_sent_so_a_crashing_delivery_ends(database, clock, keyring, admin,
                                                                                 monkeypatch):
    ours = add_hook(database, keyring, "default", "http://127.0.0.1:9/hook", "whk_crash")
    queue(database, clock, ours, 1)
    worker = DeliveryWorker(database, clock, keyring=keyring, outbound=LOOPBACK, timeout=1, batch=1)

    def crash(*args, **kwargs):
        raise SystemExit("the process dies mid-request")  # as a kill -9 or an OOM would

    monkeypatch.setattr("tokensmith.webhooks.worker.fetch", crash)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with pytest.raises(SystemExit):
            worker.run_once()
        [row] = deliveries(database, "whk_crash")
        assert row.attempts == attempt  # recorded although the process never got to the outcome
        clock.advance(timedelta(hours=7))  # past any backoff and lease
    assert worker.run_once() == 0  # given up, not retried forever
    [row] = deliveries(database, "whk_crash")
    assert row.status == "failed"


def test_redirects_are_not_followed(database, clock, keyring, admin, receiver, hostile):
    redirect = hostile("redirect", location=receiver.url)
    ours = add_hook(database, keyring, "default", redirect.url, "whk_redirect")
    queue(database, clock, ours, 1)
    DeliveryWorker(database, clock, keyring=keyring, outbound=LOOPBACK, timeout=2).run_once()
    assert receiver.received == []
    assert deliveries(database, "whk_redirect")[0].last_error == "HTTP 302"


def test_deliveries_ask_for_an_uncompressed_answer(database, clock, keyring, admin, receiver):
    ours = add_hook(database, keyring, "default", receiver.url, "whk_ours")
    queue(database, clock, ours, 1)
    DeliveryWorker(database, clock, keyring=keyring, outbound=LOOPBACK, timeout=2).run_once()
    assert receiver.received[0].headers["accept-encoding"] == "identity"


def test_a_failed_delivery_is_logged_with_webhook_id_and_host_never_the_url(database, clock, keyring, admin,
                                                                              receiver, caplog):
    url = receiver.url + "?api_key=receiver-own-key-7f3a"
    ours = add_hook(database, keyring, "default", url, "whk_logged")
    queue(database, clock, ours, 1)
    receiver.fail_next = 1
    with caplog.at_level(logging.DEBUG):
        DeliveryWorker(database, clock, keyring=keyring, outbound=LOOPBACK, timeout=2).run_once()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "whk_logged" in text and f"127.0.0.1:{receiver.server.server_address[1]}" in text
    assert "receiver-own-key-7f3a" not in text and "/hook" not in text


# --- the client itself: bounded reads and one deadline ---------------------------------------


def test_an_answer_that_never_finishes_its_status_line_ends_at_the_deadline(hostile):
    drip = hostile("drip")
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_fetch_error(drip.url, timeout=1.0)), daemon=True)
    thread.start()
    thread.join(30)  # liveness only: without the overall deadline this never returns
    assert not thread.is_alive()
    assert outcome == ["timed out"]


def test_an_endless_body_is_not_read(hostile):
    endless = hostile("endless")
    response = fetch(LOOPBACK, "POST", endless.url, body=b"{}", timeout=5, max_bytes=4096)
    assert response.status == 200
    assert len(response.body) < 4096 and not response.complete


def test_a_gzip_answer_is_returned_raw_never_inflated(hostile):
    bomb = hostile("gzip")
    response = fetch(LOOPBACK, "POST", bomb.url, body=b"{}", timeout=5, max_bytes=4096)
    assert response.headers["content-encoding"] == "gzip"
    assert response.body[:2] == b"\x1f\x8b" and len(response.body) < 4096


def _fetch_error(url, timeout):
    try:
        fetch(LOOPBACK, "POST", url, body=b"{}", timeout=timeout, read_body=False)
    except OutboundError as exc:
        return str(exc)
    return "answered"


@pytest.fixture
def tls_receiver(tmp_path):
    """An HTTPS receiver on loopback with a certificate for localhost / 127.0.0.1; records SNI and Host."""
    pki = make_pki()
    cert, key = pki.write_server_files(tmp_path)
    seen: dict[str, list] = {"sni": [], "host": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen["host"].append(self.headers["host"])
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: seen["sni"].append(name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client_context = ssl.create_default_context(cadata=pki.ca_pem)
    yield server.server_address[1], client_context, seen
    server.shutdown()


def test_https_goes_to_the_checked_address_with_the_name_in_sni_host_and_certificate_check(tls_receiver,
                                                                                            monkeypatch):
    port, client_context, seen = tls_receiver
    fake_dns(monkeypatch, {"localhost": ["127.0.0.1"]})
    response = fetch(LOOPBACK, "POST", f"https://localhost:{port}/hook", body=b"{}", timeout=5,
                     tls_context=client_context, read_body=False)
    assert response.status == 204
    assert seen["sni"] == ["localhost"] and seen["host"] == [f"localhost:{port}"]


def test_https_to_a_name_the_certificate_does_not_cover_fails(tls_receiver, monkeypatch):
    port, client_context, seen = tls_receiver
    fake_dns(monkeypatch, {"hooks.example.test": ["127.0.0.1"]})  # the right address, the wrong name
    with pytest.raises(OutboundError, match="TLS failed"):
        fetch(LOOPBACK, "POST", f"https://hooks.example.test:{port}/hook", body=b"{}", timeout=5,
              tls_context=client_context)
    assert seen["host"] == []
