"""The fast path (api/fastpath.py) answers forward-auth exactly as the forward-auth route does.

The first request for a token is answered by the route (a cache miss: database lookup); the
next ones by the fast path, from the verification cache, before the router. Every kind of token
and refusal gets the same status, headers and body either way, counts the same metrics and notes
the same last-used time and address. Whatever the fast path cannot answer reaches the route with
what the fast path already worked out.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import SECRET_KEY, Account
from tokensmith import metrics, secrets
from tokensmith.api.app import create_app
from tokensmith.api.fastpath import HANDOFF, Handoff, HotDoors
from tokensmith.clock import FrozenClock
from tokensmith.config import Settings
from tokensmith.db.models import Token

PATH = "/v1/auth/verify"
PROXY = ("10.0.0.2", 40000)
CLIENT = "203.0.113.9"
PER_IP = 3


def answer(response) -> tuple[int, dict[str, str], bytes]:
    """Everything a proxy sees, but the Date header (it ticks)."""
    return response.status_code, {k: v for k, v in response.headers.items() if k != "date"}, response.content


def ok_count() -> float:
    return metrics.REGISTRY.get_sample_value("tokensmith_verifications_total",
                                             {"door": "forward-auth", "outcome": "ok"}) or 0.0


def outcome_count(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("tokensmith_verifications_total",
                                             {"door": "forward-auth", "outcome": outcome}) or 0.0


@pytest.fixture
def proxied(database, clock, tmp_path):
    """Behind a trusted proxy that names the client (X-Forwarded-For), with a low per-address limit."""
    settings = Settings(tmp_path / "data", database.url, trusted_proxies=("10.0.0.0/8",), failures_per_ip=PER_IP)
    with TestClient(create_app(settings, database, SECRET_KEY, clock), client=PROXY,
                    raise_server_exceptions=False) as test_client:
        yield test_client


def via_proxy(client: TestClient, authorization: str | None, forwarded_for: str = CLIENT):
    headers = {"X-Forwarded-For": forwarded_for}
    if authorization is not None:
        headers["Authorization"] = authorization
    return client.get(PATH, headers=headers)


def rotated(client: TestClient, account: Account) -> tuple[str, str]:
    """(old secret, new secret) of ``account``'s token rotated with an hour of grace."""
    response = client.post(f"/v1/tokens/{account.token_id}/rotate", json={"grace": "1h"}, headers=account.headers)
    assert response.status_code == 200
    return account.secret, response.json()["secret"]


# --- same answers for every kind of token ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["member", "admin", "rotated-out in grace", "rotated-in", "never expires"])
def test_the_fast_answer_is_the_routes_answer_for_every_kind_of_token(proxied, make_account, kind):
    account = make_account("carol", admin=kind == "admin", expiration="never" if kind == "never expires" else "30d")
    secret = account.secret
    if kind.startswith("rotated"):
        old, new = rotated(proxied, account)
        secret = old if kind == "rotated-out in grace" else new
    slow = via_proxy(proxied, f"Bearer {secret}")  # a miss: the route
    fast = via_proxy(proxied, f"Bearer {secret}")  # a hit: the fast path
    assert answer(fast) == answer(slow)
    assert fast.status_code == 200 and fast.headers["X-Auth-Request-User"] == "carol"


def test_the_fast_answer_carries_the_security_headers_and_no_store(proxied, alice):
    via_proxy(proxied, f"Bearer {alice.secret}")
    fast = via_proxy(proxied, f"Bearer {alice.secret}")
    assert fast.headers["Cache-Control"] == "no-store"
    assert fast.headers["X-Content-Type-Options"] == "nosniff"
    assert fast.headers["X-Frame-Options"] == "DENY"
    assert fast.headers["Referrer-Policy"] == "no-referrer"
    assert fast.content == b"" and fast.headers["content-length"] == "0"


def test_the_scheme_is_case_insensitive_on_both_paths(proxied, alice):
    slow = via_proxy(proxied, f"bearer {alice.secret}")
    fast = via_proxy(proxied, f"BEARER   {alice.secret} ")
    assert answer(fast) == answer(slow) and fast.status_code == 200


# --- same refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer tsm_nope", f"Basic {secrets.generate()}", f"Bearer {secrets.generate()}",
    "Bearer a b",
], ids=["missing", "empty", "no secret", "malformed", "basic", "unknown", "two words"])
def test_refusals_are_the_routes_whichever_request_brings_them(proxied, authorization):
    first, second = via_proxy(proxied, authorization), via_proxy(proxied, authorization)
    assert answer(first) == answer(second)
    assert first.status_code == 401 and first.headers["WWW-Authenticate"].startswith('Bearer realm="tokensmith"')


def test_a_cached_token_that_expired_meanwhile_is_refused_as_expired(proxied, make_account, clock):
    account = make_account("dave", expiration="1h")
    assert via_proxy(proxied, f"Bearer {account.secret}").status_code == 200
    assert via_proxy(proxied, f"Bearer {account.secret}").status_code == 200
    clock.advance(timedelta(hours=2))
    refused = via_proxy(proxied, f"Bearer {account.secret}")
    assert refused.status_code == 401 and "expired" in refused.headers["WWW-Authenticate"]


def test_a_cached_token_revoked_meanwhile_is_refused(proxied, alice):
    assert via_proxy(proxied, f"Bearer {alice.secret}").status_code == 200
    assert via_proxy(proxied, f"Bearer {alice.secret}").status_code == 200
    assert proxied.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers).status_code == 204
    assert via_proxy(proxied, f"Bearer {alice.secret}").status_code == 401


def test_a_rotated_out_secret_is_refused_once_its_grace_ends(proxied, alice, clock):
    old, _new = rotated(proxied, alice)
    assert via_proxy(proxied, f"Bearer {old}").status_code == 200
    assert via_proxy(proxied, f"Bearer {old}").status_code == 200
    clock.advance(timedelta(hours=1, seconds=1))
    assert via_proxy(proxied, f"Bearer {old}").status_code == 401


# --- limits: a blocked address keeps the tokens the cache knows ------------------------------------


def test_a_blocked_client_keeps_a_token_the_cache_knows(proxied, alice):
    assert via_proxy(proxied, f"Bearer {alice.secret}").status_code == 200  # now cached
    for _ in range(PER_IP + 1):
        via_proxy(proxied, f"Bearer {secrets.generate()}")
    assert via_proxy(proxied, f"Bearer {secrets.generate()}").status_code == 403  # blocked
    assert via_proxy(proxied, f"Bearer {alice.secret}").status_code == 200


def test_a_blocked_client_is_refused_a_valid_token_the_cache_does_not_know(proxied, bob):
    for _ in range(PER_IP + 1):
        via_proxy(proxied, f"Bearer {secrets.generate()}")
    refused = via_proxy(proxied, f"Bearer {bob.secret}")
    assert refused.status_code == 403 and "Retry-After" in refused.headers


def test_the_api_answers_a_blocked_address_for_a_token_the_cache_knows(database, clock, tmp_path, alice, bob):
    settings = Settings(tmp_path / "data", database.url, failures_per_ip=PER_IP)
    app = create_app(settings, database, SECRET_KEY, clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        if database.engine.dialect.name == "postgresql":  # its listener clears every cache once on connecting
            assert app.state.context.verifier.background.listening.wait(10)
        assert client.get("/v1/whoami", headers=alice.headers).status_code == 200  # now cached
        for _ in range(PER_IP + 1):
            client.get("/v1/whoami", headers={"Authorization": f"Bearer {secrets.generate()}"})
        assert client.get("/v1/whoami", headers=alice.headers).status_code == 200
        assert client.get("/v1/whoami", headers=bob.headers).status_code == 429


# --- metrics and last-used ---------------------------------------------------------------------


def test_both_paths_count_one_ok_verification(proxied, alice):
    before = ok_count()
    via_proxy(proxied, f"Bearer {alice.secret}")
    assert ok_count() == before + 1  # the route
    via_proxy(proxied, f"Bearer {alice.secret}")
    assert ok_count() == before + 2  # the fast path


def test_a_refusal_is_counted_once_not_by_both_paths(proxied):
    before = outcome_count("invalid")
    via_proxy(proxied, f"Bearer {secrets.generate()}")
    assert outcome_count("invalid") == before + 1


def test_the_fast_path_notes_last_use_with_the_forwarded_client(proxied, app, database, clock, alice):
    via_proxy(proxied, f"Bearer {alice.secret}")
    clock.advance(timedelta(minutes=5))
    via_proxy(proxied, f"Bearer {alice.secret}", forwarded_for="198.51.100.4")  # the fast path
    verifier = proxied.app.state.context.verifier
    verifier.usage.flush(force=True)
    with database.session() as session:
        token = session.scalar(select(Token).where(Token.public_id == alice.token_id))
        assert token.last_used_ip == "198.51.100.4"
        assert token.last_used_at.replace(tzinfo=None) == clock.now().replace(tzinfo=None)


# --- what the slow path receives ----------------------------------------------------------------


def test_the_route_receives_what_the_fast_path_worked_out():
    seen: list[Handoff] = []

    async def route(scope, receive, send):
        seen.append(scope[HANDOFF])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    class State:
        class context:  # stands in for AppContext: only its proxies, clock and verifier are read
            trusted_proxies = ()
            clock = FrozenClock()

            class verifier:
                @staticmethod
                def recall(_secret, _now):
                    return None  # a miss

    route.state = State  # type: ignore[attr-defined]
    client = TestClient(HotDoors(route), client=("192.0.2.7", 1234))  # no lifespan: no `with`
    client.get(PATH, headers={"Authorization": "Bearer " + secrets.generate()})
    assert seen[0].client_ip == "192.0.2.7" and seen[0].keys.intermediary == "via:proxy:192.0.2.7"


def test_the_fast_path_answers_the_same_when_it_wraps_the_whole_app(app, database, alice):
    """Outermost (before FastAPI's own middleware) it needs no header middleware to be complete."""
    inner = TestClient(app, raise_server_exceptions=False)
    outer = TestClient(HotDoors(app), raise_server_exceptions=False)
    with inner, outer:
        slow = inner.get(PATH, headers=alice.headers)
        fast_inner = inner.get(PATH, headers=alice.headers)
        fast_outer = outer.get(PATH, headers=alice.headers)
    assert answer(fast_outer) == answer(fast_inner) == answer(slow)
