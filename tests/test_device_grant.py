"""Browser sign-in for the CLI: the OAuth 2.0 device authorization grant (RFC 8628) over the API and the
console's /device page. Codes expire, are single use, rate limited and audited."""

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from tokensmith.db.models import AuditEvent

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
USER_CODE = re.compile(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def start(client, **fields):
    response = client.post("/v1/oauth2/device_authorization",
                           data={"client_id": "tokensmith-cli", "device_name": "laptop-7", **fields})
    assert response.status_code == 200, response.text
    return response.json()


def poll(client, device_code):
    return client.post("/v1/oauth2/token", data={"grant_type": DEVICE_GRANT, "device_code": device_code})


def decide(client, user_code, decision):
    page = client.get("/device", params={"user_code": user_code})
    assert page.status_code == 200, page.text
    return client.post("/device/decision", data={"csrf": CSRF.search(page.text).group(1), "user_code": user_code,
                                                 "decision": decision})


@pytest.fixture
def alice_console(console, alice):
    return console(alice.user)


def test_the_device_gets_a_device_code_a_short_user_code_and_where_to_enter_it(client):
    response = client.post("/v1/oauth2/device_authorization", data={"client_id": "tokensmith-cli"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    answer = response.json()
    assert USER_CODE.fullmatch(answer["user_code"])
    assert answer["device_code"].startswith("tsd_")
    assert answer["verification_uri"] == "http://testserver/device"
    assert answer["verification_uri_complete"] == f"http://testserver/device?user_code={answer['user_code']}"
    assert (answer["expires_in"], answer["interval"]) == (600, 5)


def test_polling_before_approval_answers_authorization_pending(client):
    response = poll(client, start(client)["device_code"])
    assert response.status_code == 400
    assert response.json()["error"] == "authorization_pending"


def test_polling_faster_than_the_interval_answers_slow_down_and_widens_it(client, clock):
    code = start(client)["device_code"]
    poll(client, code)
    assert poll(client, code).json()["error"] == "slow_down"
    clock.advance(timedelta(seconds=5))
    assert poll(client, code).json()["error"] == "slow_down"  # the interval was 10 s; now 15 s
    clock.advance(timedelta(seconds=15))
    assert poll(client, code).json()["error"] == "authorization_pending"


def test_an_approved_device_receives_a_token_of_the_approver_once(client, alice_console, clock):
    started = start(client)
    response = decide(alice_console, started["user_code"], "approve")
    assert response.status_code == 200 and 'id="device-approved"' in response.text
    answer = poll(client, started["device_code"])
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["access_token"].startswith("tsm_")
    me = client.get("/v1/whoami", headers={"Authorization": f"Bearer {body['access_token']}"}).json()
    assert me["user"]["username"] == "alice"
    assert me["token"]["name"] == "cli@laptop-7"
    clock.advance(timedelta(seconds=5))
    assert poll(client, started["device_code"]).json()["error"] == "invalid_grant"


def test_a_denied_request_answers_access_denied_and_mints_nothing(client, alice_console, alice):
    started = start(client)
    response = decide(alice_console, started["user_code"], "deny")
    assert 'id="device-denied"' in response.text
    assert poll(client, started["device_code"]).json()["error"] == "access_denied"
    assert len(client.get("/v1/tokens", headers=alice.headers).json()["items"]) == 1


def test_an_expired_code_answers_expired_token_and_cannot_be_approved(client, alice_console, clock):
    started = start(client)
    clock.advance(timedelta(minutes=10))
    assert poll(client, started["device_code"]).json()["error"] == "expired_token"
    page = alice_console.get("/device", params={"user_code": started["user_code"]})
    assert page.status_code == 404
    assert 'id="device-approve"' not in page.text


def test_an_approver_disabled_before_the_device_polls_gives_no_token(client, alice_console, alice, database):
    from tokensmith.db.models import User

    started = start(client)
    decide(alice_console, started["user_code"], "approve")
    with database.session() as session:
        session.get(User, alice.user.id).disabled = True
    assert poll(client, started["device_code"]).json()["error"] == "invalid_grant"


def test_an_approved_code_that_expires_before_the_device_polls_gives_no_token(client, alice_console, clock):
    started = start(client)
    decide(alice_console, started["user_code"], "approve")
    clock.advance(timedelta(minutes=10))
    assert poll(client, started["device_code"]).json()["error"] == "expired_token"


def test_requests_finished_a_day_ago_are_purged_by_the_next_request(client, clock, database):
    from tokensmith.db.models import DeviceAuthorization

    start(client)
    clock.advance(timedelta(days=1, minutes=11))
    start(client)
    with database.session() as session:
        assert len(list(session.scalars(select(DeviceAuthorization)))) == 1


def test_the_console_shows_the_machine_its_address_and_the_scopes_asked(client, alice_console):
    started = start(client, scope="tokens:read kubernetes")
    page = alice_console.get("/device", params={"user_code": started["user_code"].replace("-", "").lower()})
    assert page.status_code == 200
    assert 'id="device-name">laptop-7<' in page.text
    assert 'id="device-ip">testclient<' in page.text
    assert 'id="device-scopes">tokens:read, kubernetes<' in page.text or \
        'id="device-scopes">kubernetes, tokens:read<' in page.text


def test_the_token_holds_only_the_scopes_asked(client, alice_console):
    started = start(client, scope="kubernetes tokens:read")
    decide(alice_console, started["user_code"], "approve")
    body = poll(client, started["device_code"]).json()
    assert body["scope"] == "kubernetes tokens:read"
    me = client.get("/v1/whoami", headers={"Authorization": f"Bearer {body['access_token']}"}).json()
    assert me["token"]["scopes"] == ["kubernetes", "tokens:read"]


def test_a_member_cannot_approve_scopes_beyond_their_own(client, alice_console):
    started = start(client, scope="org:admin")
    response = decide(alice_console, started["user_code"], "approve")
    assert response.status_code == 422
    assert poll(client, started["device_code"]).json()["error"] == "authorization_pending"


def test_an_unknown_scope_is_refused_at_the_start(client):
    response = client.post("/v1/oauth2/device_authorization", data={"scope": "root"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_the_sign_in_page_is_for_signed_in_people_only(client):
    response = client.get("/device", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/sign-in"


def test_the_clis_link_survives_signing_in(client, database, clock):
    from tokensmith.accounts.service import AccountService

    with database.session() as session:
        accounts = AccountService(session, clock)
        accounts.create_user(accounts.get_or_create_org("default"), "dora", "dora's long password")
    started = start(client)
    client.get("/device", params={"user_code": started["user_code"]}, follow_redirects=False)
    csrf = CSRF.search(client.get("/sign-in").text).group(1)
    signed = client.post("/sign-in", data={"csrf": csrf, "username": "dora", "password": "dora's long password"},
                         follow_redirects=False)
    assert signed.headers["location"] == f"/device?user_code={started['user_code']}"
    assert 'id="device-approve"' in client.get(signed.headers["location"]).text


@pytest.mark.parametrize(("remembered", "goes_to"), [
    ("/device?user_code=BCDF-GHJK", "/device?user_code=BCDF-GHJK"), ("/device", "/device"),
    ("https://evil.example/device", None), ("//evil.example/device", None), ("/device?next=//evil", None),
])
def test_only_a_device_page_is_remembered_for_after_sign_in(remembered, goes_to):
    from types import SimpleNamespace

    from tokensmith.console.device import NEXT_COOKIE, next_page

    assert next_page(SimpleNamespace(cookies={NEXT_COOKIE: remembered})) == goes_to  # type: ignore[arg-type]


def test_wrong_codes_at_the_console_are_rate_limited(client, alice_console):
    statuses = [alice_console.get("/device", params={"user_code": "BBBB-BBBB"}).status_code for _ in range(31)]
    assert statuses[:30] == [404] * 30
    assert statuses[30] == 429
    started = start(client)  # even the right code now waits
    assert alice_console.get("/device", params={"user_code": started["user_code"]}).status_code == 429


def test_starting_sign_ins_is_rate_limited_per_address(client):
    statuses = [client.post("/v1/oauth2/device_authorization", data={}).status_code for _ in range(31)]
    assert statuses[:30] == [200] * 30
    assert statuses[30] == 429


def test_an_unknown_device_code_is_invalid_grant(client):
    response = poll(client, "tsd_" + "A" * 38)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_an_unknown_grant_type_is_unsupported(client):
    response = client.post("/v1/oauth2/token", data={"grant_type": "password", "username": "a", "password": "b"})
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_a_json_body_is_an_invalid_request(client):
    response = client.post("/v1/oauth2/token", json={"grant_type": DEVICE_GRANT, "device_code": "x"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_requests_decisions_and_the_sign_in_are_audited(client, alice_console, database, clock):
    approved = start(client)
    decide(alice_console, approved["user_code"], "approve")
    poll(client, approved["device_code"])
    denied = start(client)
    decide(alice_console, denied["user_code"], "deny")
    with database.session() as session:
        events = [(e.action, e.actor_user) for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
                  if e.action.startswith(("device.", "auth."))]
    assert events == [("device.requested", ""), ("device.approved", "alice"), ("auth.sign_in", "alice"),
                      ("device.requested", ""), ("device.denied", "alice")]


def test_a_token_cannot_approve_a_request(units_for_device, alice):
    from tokensmith.errors import Forbidden
    from tokensmith.usecases import Actor, RequestContext, device

    with units_for_device() as uow:
        made = device.request_device_authorization(uow, Actor.anonymous(RequestContext()), "x", None)
    token_actor = Actor(kind="token", user_id=alice.user.id, org_id=alice.user.org_id, is_admin=False,
                        username="alice", scopes=frozenset({"tokens:write"}), token_id=1, token_public_id="tok_1")
    with units_for_device() as uow, pytest.raises(Forbidden):
        device.approve_device_request(uow, token_actor, made.user_code)


@pytest.fixture
def units_for_device(database, settings, clock):
    from tests.conftest import SECRET_KEY
    from tokensmith.objectstore.crypto import KeyRing
    from tokensmith.usecases.base import UnitsOfWork

    return UnitsOfWork(database=database, clock=clock, secret_key=SECRET_KEY, keyring=KeyRing([b"k" * 32]),
                       settings=settings)
