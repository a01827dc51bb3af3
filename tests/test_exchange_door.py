"""The token exchange's plain-ASGI door (api/exchange_door.py) answers exactly as the route does.

Each test checks which way in answered: the route's grant function is wrapped to count its calls
(``route_calls``), and "the route's answer" is taken with the door closed (``closed_door``), so a
door's answer is never compared with itself. Forms the door cannot read exactly as Starlette does,
other grants and other content types go to the route.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests import test_federation
from tests.conftest import SECRET_KEY
from tests.test_federation import GRANT, JWT_TYPE, exchange, make_policy
from tokensmith.api import exchange_door
from tokensmith.api.app import create_app
from tokensmith.api.routes import oauth_token
from tokensmith.config import Settings
from tokensmith.db.models import AuditEvent

# The federation module's fixtures (its settings, local issuer, clock and service account) serve here too.
settings, issuer, now, deployer = (test_federation.settings, test_federation.issuer, test_federation.now,
                                   test_federation.deployer)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def route_calls(monkeypatch) -> list[int]:
    """How many token exchanges reached the route (one entry per call)."""
    calls: list[int] = []
    grant = oauth_token.GRANTS[GRANT]

    def counted(request, fields):
        calls.append(1)
        return grant(request, fields)

    monkeypatch.setitem(oauth_token.GRANTS, GRANT, counted)
    return calls


@pytest.fixture
def policy(client, admin, deployer, issuer) -> dict:
    return make_policy(client, admin, issuer, scopes=["tokens:read", "clusters:read"])


def closed_door(monkeypatch) -> None:
    """From now on the door lets every request through to the route."""
    monkeypatch.setattr(exchange_door, "TOKEN_PATH", "/nowhere")


def answer(response) -> tuple[int, dict[str, str], object]:
    """What a client sees, but the Date header (it ticks) and the new token's secret."""
    headers = {k: v for k, v in response.headers.items() if k != "date"}
    body = response.json()
    if "access_token" in body:
        assert body.pop("access_token").startswith("tsm_")
    return response.status_code, headers, body


def test_an_exchange_is_answered_by_the_door_not_the_route(client, policy, issuer, now, route_calls):
    response = exchange(client, issuer.token(now))
    assert response.status_code == 200, response.text
    assert route_calls == []


def test_the_doors_token_is_the_routes_answer(client, policy, issuer, now, route_calls, monkeypatch):
    fast = exchange(client, issuer.token(now))
    closed_door(monkeypatch)
    slow = exchange(client, issuer.token(now))
    assert len(route_calls) == 1
    assert answer(fast) == answer(slow)
    assert fast.headers["cache-control"] == "no-store" and fast.headers["pragma"] == "no-cache"
    assert fast.headers["x-frame-options"] == "DENY" and fast.headers["content-type"] == "application/json"


def test_the_doors_token_works_like_the_routes(client, policy, issuer, now):
    secret = exchange(client, issuer.token(now)).json()["access_token"]
    who = client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"}).json()
    assert who["token"]["federated"] == {"issuer": issuer.url, "subject": "system:serviceaccount:ci:deployer"}


@pytest.mark.parametrize("fields", [
    {"aud": "someone-else"},  # a refusal by the trust policy
    {"subject_token": "not-a-jwt"},
    {"subject_token": ""},
    {"subject_token_type": "urn:x"},
    {"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
    {"scope": "tokens:write"},  # more than the policy grants
    {"kubeconfig": "true"},  # the policy grants no clusters
], ids=lambda fields: next(iter(fields)))
def test_a_refusal_from_the_door_is_the_routes(client, policy, issuer, now, route_calls, monkeypatch, fields):
    asked = {k: v for k, v in fields.items() if k != "aud"}

    def ask():
        return exchange(client, **{"subject_token": issuer.token(now, aud=fields.get("aud", "tokensmith")), **asked})

    fast = ask()
    assert route_calls == []
    closed_door(monkeypatch)
    slow = ask()
    assert route_calls == [1]
    assert fast.status_code == 400 and answer(fast) == answer(slow)


def test_refusals_at_the_door_are_audited_like_the_routes(client, policy, issuer, now, database, monkeypatch):
    headers = {"User-Agent": "ci-runner/1.0"}
    client.post("/v1/oauth2/token", headers=headers, data={
        "grant_type": GRANT, "subject_token": issuer.token(now, aud="nope"), "subject_token_type": JWT_TYPE})
    closed_door(monkeypatch)
    client.post("/v1/oauth2/token", headers=headers, data={
        "grant_type": GRANT, "subject_token": issuer.token(now, aud="nope"), "subject_token_type": JWT_TYPE})
    with database.session() as session:
        fast, slow = session.scalars(select(AuditEvent).where(AuditEvent.action == "token.exchange_refused")
                                     .order_by(AuditEvent.id)).all()
        assert (fast.client_ip, fast.user_agent, fast.actor_user, fast.org_id, fast.details) == (
            slow.client_ip, slow.user_agent, slow.actor_user, slow.org_id, slow.details)
        assert fast.user_agent == "ci-runner/1.0"


def test_a_success_at_the_door_is_audited_with_the_external_issuer_and_subject(client, policy, issuer, now,
                                                                                  database):
    exchange(client, issuer.token(now))
    with database.session() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "token.exchanged")).all()
        details = json.loads(event.details)
        assert (details["issuer"], details["subject"], details["via"]) == (
            issuer.url, "system:serviceaccount:ci:deployer", "api")
        assert event.actor_user == "deployer" and event.client_ip == "testclient"


def test_a_client_over_its_limit_gets_the_routes_429_from_the_door(client, policy, issuer, now, route_calls,
                                                                   monkeypatch):
    bad = issuer.token(now, aud="nope")
    statuses = [exchange(client, bad).status_code for _ in range(32)]
    assert statuses[-1] == 429 and route_calls == []
    fast = exchange(client, issuer.token(now))
    closed_door(monkeypatch)
    slow = exchange(client, issuer.token(now))
    assert fast.status_code == slow.status_code == 429
    assert fast.json() == slow.json() and int(fast.headers["retry-after"]) > 0


def post_form(client, body: str | bytes):
    return client.post("/v1/oauth2/token", content=body, headers=FORM)


@pytest.mark.parametrize("shape", ["semicolons", "a field without =", "an empty field", "not ascii"])
def test_forms_the_door_cannot_read_plainly_get_the_routes_answer(client, policy, issuer, now, route_calls,
                                                                  monkeypatch, shape):
    fields = urlencode({"grant_type": GRANT, "subject_token": issuer.token(now), "subject_token_type": JWT_TYPE})
    body = {"semicolons": fields.replace("&", ";"), "a field without =": fields + "&debug",
            "an empty field": fields + "&&", "not ascii": fields + "&note=caf\u00e9"}[shape].encode("utf-8")
    fast = post_form(client, body)
    reached = len(route_calls)
    closed_door(monkeypatch)
    slow = post_form(client, body)
    assert len(route_calls) == 2 * reached  # the door let the first one through too
    assert answer(fast) == answer(slow)


def test_the_first_of_a_repeated_field_counts_at_the_door_as_at_the_route(client, policy, issuer, now, route_calls):
    body = urlencode([("grant_type", GRANT), ("subject_token", issuer.token(now)), ("subject_token_type", JWT_TYPE),
                      ("scope", "tokens:read"), ("scope", "tokens:write")])
    response = post_form(client, body)
    assert response.status_code == 200 and response.json()["scope"] == "tokens:read"
    assert route_calls == []


def test_other_grants_and_content_types_go_to_the_route(client, policy, issuer, now, route_calls):
    device = client.post("/v1/oauth2/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                                                   "device_code": "nope", "client_id": "tokensmith-cli"})
    assert device.status_code == 400 and device.json()["error"] == "invalid_grant"
    as_json = client.post("/v1/oauth2/token", json={"grant_type": GRANT, "subject_token": issuer.token(now)})
    assert as_json.status_code == 400 and "x-www-form-urlencoded" in as_json.json()["error_description"]
    assert route_calls == []  # neither was a token exchange the route ran


def test_a_body_over_the_limit_is_the_body_limits_413(database, clock, tmp_path, issuer, now):
    settings = Settings(tmp_path / "data", database.url, max_body_bytes=200)
    with TestClient(create_app(settings, database, SECRET_KEY, clock)) as client:
        response = exchange(client, issuer.token(now))
    assert response.status_code == 413 and response.headers["x-frame-options"] == "DENY"


@pytest.fixture
def behind_tls_proxy(settings, database, clock):
    proxied = Settings(settings.data_dir, database.url, trusted_proxies=("10.0.0.0/8",),
                       webhook_allowed_networks=settings.webhook_allowed_networks, allow_loopback_http_issuers=True)
    with TestClient(create_app(proxied, database, SECRET_KEY, clock), client=("10.0.0.2", 40000)) as test_client:
        yield test_client


def test_the_doors_answer_behind_a_trusted_tls_proxy_carries_hsts_like_the_routes(
        behind_tls_proxy, policy, issuer, now, database, route_calls, monkeypatch):
    def ask():
        return behind_tls_proxy.post("/v1/oauth2/token", headers={"X-Forwarded-Proto": "https",
                                                                  "X-Forwarded-For": "192.0.2.7"}, data={
            "grant_type": GRANT, "subject_token": issuer.token(now), "subject_token_type": JWT_TYPE})

    fast = ask()
    closed_door(monkeypatch)
    slow = ask()
    assert route_calls == [1] and answer(fast) == answer(slow)
    assert fast.headers["strict-transport-security"] == "max-age=31536000"
    with database.session() as session:
        addresses = session.scalars(select(AuditEvent.client_ip).where(AuditEvent.action == "token.exchanged")).all()
        assert addresses == ["192.0.2.7", "192.0.2.7"]  # the forwarded client, from the trusted proxy


def _on_thread(calls: list[str]) -> str:
    calls.append(threading.current_thread().name)
    return calls[-1]


def test_an_exchange_runs_on_the_doors_own_threads():
    door = exchange_door.TokenExchangeDoor(app=None)  # type: ignore[arg-type]
    calls: list[str] = []
    assert asyncio.run(door.run(_on_thread, calls)).startswith("token-exchange")


@asynccontextmanager
async def _busy_door() -> AsyncIterator[exchange_door.TokenExchangeDoor]:
    """A door whose one thread is held until the block ends (spill_after 0.05 s)."""
    door = exchange_door.TokenExchangeDoor(app=None, threads=1, spill_after=0.05)  # type: ignore[arg-type]
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)

    stuck = asyncio.ensure_future(door.run(hold))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
    try:
        yield door
    finally:
        release.set()
        await stuck


def test_an_exchange_waiting_for_the_doors_busy_threads_runs_on_the_shared_pool():
    calls: list[str] = []

    async def waiting() -> str:
        async with _busy_door() as door:
            return await door.run(_on_thread, calls)

    assert not asyncio.run(waiting()).startswith("token-exchange")
    assert len(calls) == 1


def test_an_exchange_already_running_when_it_is_slow_is_awaited_not_run_again():
    door = exchange_door.TokenExchangeDoor(app=None, threads=1, spill_after=0.01)  # type: ignore[arg-type]
    calls: list[str] = []

    def slow() -> str:
        time.sleep(0.2)  # longer than spill_after: the door must not run it a second time
        return _on_thread(calls)

    assert asyncio.run(door.run(slow)).startswith("token-exchange")
    assert len(calls) == 1


def test_a_cancelled_request_whose_exchange_still_waits_is_not_run_anywhere():
    calls: list[str] = []

    async def cancelled() -> None:
        async with _busy_door() as door:
            waiting = asyncio.ensure_future(door.run(_on_thread, calls))
            await asyncio.sleep(0.01)  # queued behind the held thread
            waiting.cancel()  # the client went away
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await asyncio.sleep(0.1)  # past spill_after: nothing may pick it up now

    asyncio.run(cancelled())
    assert calls == []
