"""Webhook URLs an org admin chooses: refused when they are malformed, carry credentials, or point at
addresses that are not public, in any spelling, at creation and again at delivery.

Nothing here sends traffic anywhere but loopback: refusals are asserted (nothing is sent), name
lookups are faked with ``fake_dns``, and ``guard_loopback`` refuses any other connect anyway.
"""

import contextlib

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from tests.conftest import SECRET_KEY
from tests.receiver import fake_dns, guard_loopback, start_receiver
from tokensmith.api.app import create_app
from tokensmith.config import Settings
from tokensmith.db.models import AuditEvent, Webhook, WebhookDelivery
from tokensmith.net.outbound import OutboundPolicy, OutboundRefused, Target, parse_networks, parse_url
from tokensmith.objectstore.crypto import KeyRing
from tokensmith.webhooks.worker import DeliveryWorker

# Every spelling of a forbidden address that a parser somewhere reads as one.
FORBIDDEN = [
    "http://127.0.0.1/hook", "http://127.1/hook", "http://2130706433/hook", "http://0177.0.0.1/hook",
    "http://0x7f.0.0.1/hook", "http://0x7f000001/hook", "http://017700000001/hook", "http://127.0.0.1./hook",
    "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook", "http://[::ffff:7f00:1]/hook",
    "http://[0:0:0:0:0:ffff:127.0.0.1]:8080/hook", "http://localhost/hook", "http://LOCALHOST./hook",
    "http://10.0.0.1/hook", "http://172.16.5.4/hook", "http://192.168.1.1/hook", "http://[fc00::1]/hook",
    "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/hook", "http://[::ffff:169.254.169.254]/",
    "http://100.64.0.1/hook", "http://224.0.0.1/hook", "http://[ff02::1]/hook", "http://0.0.0.0/hook",
    "http://0/hook", "http://[::]/hook", "http://240.0.0.1/hook", "http://255.255.255.255/hook",
    "http://[2002:7f00:1::]/hook", "http://[64:ff9b::a9fe:a9fe]/hook", "https://192.0.2.1/hook",
]

MALFORMED = [
    "http://127.0.0.1:9/hook\r\nX-Injected: 1", "http://127.0.0.1:9/ho\nok", "http://127.0.0.1:9/hook\t",
    "http://127.0.0.1:9/ho ok", " http://127.0.0.1:9/hook", "http://127.0.0.1:9/hook ", "http://127.0.0.1:9/\x00",
    "http://127.0.0.1:9/\x7f", "http://127.0.0.1:9/\u2028", "http://127.0.0.1:9/\u00a0", "http://127.0.0.1:9/\u200b",
    "ftp://127.0.0.1/x", "http:///hook", "http://127.0.0.1:0/hook", "http://127.0.0.1:99999/hook",
    "http://1.2.3.4.5/hook", "http://256.1.1.1/hook", "http://exa mple.com/", "http://ex%61mple.com/",
    "http://127.0.0.1\\@example.com/", "http://[::1%25eth0]/", "http://[/hook", "http://]/hook",
]


@pytest.fixture
def strict_client(tmp_path, database, clock):
    """The app with the default outbound rules: no range allowed beyond public addresses."""
    settings = Settings(data_dir=tmp_path / "strict", database_url=database.url)
    with TestClient(create_app(settings, database, SECRET_KEY, clock), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def connects(monkeypatch):
    return guard_loopback(monkeypatch)


@pytest.mark.parametrize("url", FORBIDDEN)
def test_a_non_public_address_in_any_spelling_is_refused_at_creation(strict_client, admin, url, connects,
                                                                     monkeypatch):
    fake_dns(monkeypatch, {"localhost": ["127.0.0.1", "::1"]})
    response = strict_client.post("/v1/webhooks", json={"url": url}, headers=admin.headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "not allowed" in response.json()["detail"]
    assert connects == []


@pytest.mark.parametrize("url", MALFORMED)
def test_control_characters_whitespace_and_odd_spellings_are_refused_at_creation(client, admin, url):
    response = client.post("/v1/webhooks", json={"url": url}, headers=admin.headers)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("url: ")


def test_a_refused_url_changes_nothing(client, admin, database):
    response = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/a\r\nb"}, headers=admin.headers)
    assert response.status_code == 422
    assert client.get("/v1/webhooks", headers=admin.headers).json() == []
    with database.session() as session:
        assert session.scalars(select(Webhook)).all() == []
        assert session.scalars(select(AuditEvent).where(AuditEvent.action.like("webhook.%"))).all() == []


@pytest.mark.parametrize("url", ["http://carol:s3cr3tpw@127.0.0.1:9/hook", "https://s3cr3tpw@127.0.0.1:9/hook",
                                 "http://:s3cr3tpw@127.0.0.1:9/hook"])
def test_credentials_in_the_url_are_refused_with_a_clear_422_that_does_not_echo_them(client, admin, url):
    response = client.post("/v1/webhooks", json={"url": url}, headers=admin.headers)
    assert response.status_code == 422
    assert "credentials" in response.json()["detail"]
    assert "s3cr3tpw" not in response.text


def test_a_name_that_resolves_to_a_private_address_now_is_refused_at_creation(strict_client, admin, monkeypatch):
    fake_dns(monkeypatch, {"hooks.example.com": ["203.0.113.9", "10.1.2.3"]})  # one bad address is enough
    response = strict_client.post("/v1/webhooks", json={"url": "https://hooks.example.com/x"}, headers=admin.headers)
    assert response.status_code == 422
    assert "private" in response.json()["detail"]


def test_a_name_that_resolves_to_public_addresses_is_accepted(strict_client, admin, monkeypatch):
    fake_dns(monkeypatch, {"hooks.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})
    response = strict_client.post("/v1/webhooks", json={"url": "https://hooks.example.com/x"}, headers=admin.headers)
    assert response.status_code == 201


def test_the_operator_setting_allows_a_chosen_range_and_nothing_else():
    policy = OutboundPolicy(parse_networks("10.20.0.0/16, 127.0.0.1"))
    policy.vet("http://10.20.3.4/hook")
    policy.vet("http://2130706433/hook")  # 127.0.0.1 spelled as a number is still 127.0.0.1
    policy.vet("http://[::ffff:10.20.0.1]/hook")
    for url in ("http://10.21.0.1/hook", "http://127.0.0.2/hook", "http://169.254.169.254/"):
        with pytest.raises(OutboundRefused):
            policy.vet(url)


def test_a_bad_allowed_networks_entry_stops_the_start_naming_it():
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        Settings.from_env({"TOKENSMITH_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,10.0.0.0/33"})
    settings = Settings.from_env({"TOKENSMITH_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8, fd00::/8"})
    assert [str(n) for n in settings.webhook_allowed_networks] == ["127.0.0.0/8", "fd00::/8"]


# --- at delivery -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver():
    r = start_receiver()
    yield r
    r.server.shutdown()


def _deliveries(database):
    with database.session() as session:
        return session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()


@pytest.mark.parametrize("rebound", ["127.0.0.1", "10.0.0.7", "169.254.169.254", "::1"])
def test_a_name_that_resolves_to_a_private_address_at_delivery_is_refused_and_nothing_is_sent(
        client, admin, alice, database, clock, settings, receiver, monkeypatch, connects, rebound):
    receiver.reset()
    dns = {"hooks.example.com": ["93.184.215.14"]}  # public when the webhook is made
    fake_dns(monkeypatch, dns)
    url = f"http://hooks.example.com:{receiver.server.server_address[1]}/hook"
    assert client.post("/v1/webhooks", json={"url": url}, headers=admin.headers).status_code == 201
    client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers)
    dns["hooks.example.com"] = [rebound]  # ... and rebinds to an internal address before delivery
    worker = DeliveryWorker(database, clock, keyring=KeyRing.from_settings(settings), timeout=2)
    assert worker.run_once() == 1
    [delivery] = _deliveries(database)
    assert delivery.last_error.startswith("refused: ")
    assert delivery.status == "pending" and delivery.attempts == 1
    assert connects == []
    assert receiver.received == []


def test_delivery_connects_to_the_address_it_checked_and_keeps_the_name_in_host(
        client, admin, alice, database, clock, settings, receiver, monkeypatch, connects):
    receiver.reset()
    asked = fake_dns(monkeypatch, {"hooks.internal.example": ["127.0.0.1"]})
    port = receiver.server.server_address[1]
    url = f"http://hooks.internal.example:{port}/hook"
    assert client.post("/v1/webhooks", json={"url": url}, headers=admin.headers).status_code == 201
    client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers)
    asked.clear()
    worker = DeliveryWorker(database, clock, keyring=KeyRing.from_settings(settings),
                            outbound=OutboundPolicy(settings.webhook_allowed_networks), timeout=5)
    worker.run_once()
    [got] = receiver.received
    assert got.headers["host"] == f"hooks.internal.example:{port}"
    assert asked == ["hooks.internal.example"]  # one lookup: checked and connected to the same answer
    assert connects == [("127.0.0.1", port)]


def test_a_webhook_made_under_a_wider_setting_is_refused_at_delivery_under_a_narrower_one(
        client, admin, alice, database, clock, settings, receiver, connects):
    receiver.reset()
    assert client.post("/v1/webhooks", json={"url": receiver.url}, headers=admin.headers).status_code == 201
    client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers)
    worker = DeliveryWorker(database, clock, keyring=KeyRing.from_settings(settings), timeout=2)  # defaults
    worker.run_once()
    [delivery] = _deliveries(database)
    assert "loopback" in delivery.last_error
    assert receiver.received == [] and connects == []


# --- the parser on its own -------------------------------------------------------------------


@pytest.mark.parametrize(("spelling", "address"), [
    ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("127.1", "127.0.0.1"),
    ("0x7F000001", "127.0.0.1"), ("127.0.0.1.", "127.0.0.1"), ("0xa9.0376.43518", "169.254.169.254"),
    ("[::ffff:a9fe:a9fe]", "::ffff:a9fe:a9fe"), ("3232235777", "192.168.1.1"),
])
def test_numeric_hosts_are_read_as_the_address_browsers_and_curl_read(spelling, address):
    assert str(parse_url(f"http://{spelling}/x").literal) == address


def test_a_plain_url_is_normalised_but_keeps_its_path_and_query():
    target = parse_url("https://Hooks.Example.COM.:8443/t/abc?x=1#frag")
    assert (target.host, target.port, target.request_target) == ("hooks.example.com", 8443, "/t/abc?x=1")
    assert target.host_header == "hooks.example.com:8443" and target.literal is None


@given(st.text(max_size=80) | st.builds(lambda s: "http://" + s, st.text(max_size=60)))
def test_any_text_is_parsed_or_refused_never_an_unexpected_error(text):
    with contextlib.suppress(OutboundRefused):  # anything else (ValueError ...) would be a 500 on creation
        assert isinstance(parse_url(text), Target)
