"""Races against a real ``tokensmith serve`` (SQLite and PostgreSQL): threads firing at once.

Rotations of one token: exactly one wins (200), the others get 409, and the winner's secret works.
Deletes of one token: exactly one 204, the rest 404, one audit event and one webhook event.
Creates past a per-user cap: the cap holds exactly, whatever the interleaving.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.servers import ServerProcess, admin_password, free_port, server_env
from tokensmith import secrets
from tokensmith.db.database import Database
from tokensmith.db.models import AuditEvent, Token, WebhookDelivery

THREADS = 8
CAP = 30


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    data = tmp_path_factory.mktemp(f"races-{request.param}") / "data"
    database_url = f"sqlite:///{data / 'tokensmith.db'}"
    if request.param == "postgresql":
        database_url = request.getfixturevalue("own_postgres")
    proc = ServerProcess(data, free_port(), server_env(
        data, database_url, TOKENSMITH_MAX_TOKENS_PER_USER=str(CAP), TOKENSMITH_LOG_LEVEL="INFO",
        TOKENSMITH_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8"))
    proc.start()
    try:
        yield proc, database_url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def admin_headers(served: tuple[ServerProcess, str]) -> dict[str, str]:
    server, _ = served
    password = admin_password(server.url, server.data_dir)
    created = httpx.post(f"{server.url}/v1/auth/token", timeout=60,
                         json={"username": "admin", "password": password, "name": "races", "expiration": "never"})
    assert created.status_code == 201, created.text
    headers = {"Authorization": f"Bearer {created.json()['secret']}"}
    hook = httpx.post(f"{server.url}/v1/webhooks", headers=headers, timeout=30,
                      json={"url": f"http://127.0.0.1:{free_port()}/hook", "events": ["token.revoked"]})
    assert hook.status_code == 201, hook.text
    return headers


def at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run the calls in threads released together; their responses in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(n: int) -> None:
        barrier.wait()
        try:
            results[n] = calls[n]()
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(isinstance(r, httpx.Response) for r in results), results
    return results


def new_token(server: ServerProcess, headers: dict[str, str], name: str) -> dict[str, Any]:
    created = httpx.post(f"{server.url}/v1/tokens", headers=headers, json={"name": name}, timeout=30)
    assert created.status_code == 201, created.text
    return created.json()


def works(server: ServerProcess, secret: str) -> bool:
    return httpx.get(f"{server.url}/v1/whoami", headers={"Authorization": f"Bearer {secret}"},
                     timeout=30).status_code == 200


def count(database_url: str, query: Any) -> int:
    database = Database(database_url)
    try:
        with database.session() as session:
            return session.scalar(query) or 0
    finally:
        database.dispose()


def test_concurrent_self_rotations_one_wins_the_rest_get_409_and_the_winners_secret_works(served, admin_headers):
    """A token rotating itself (as CI jobs do) proves its current secret: exactly one of 8 wins."""
    server, _ = served
    token = new_token(server, admin_headers, "rotates itself")
    own = {"Authorization": f"Bearer {token['secret']}"}
    url = f"{server.url}/v1/tokens/{token['token']['id']}/rotate"
    answers = at_once([lambda: httpx.post(url, headers=own, json={"grace": "1h"}, timeout=60)] * THREADS)
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] + [409] * (THREADS - 1), codes
    [winner] = [r for r in answers if r.status_code == 200]
    assert works(server, winner.json()["secret"])
    assert all(r.headers["content-type"] == "application/problem+json" for r in answers if r.status_code == 409)


def test_concurrent_rotations_lose_no_update_and_every_loser_gets_409(served, admin_headers):
    """Rotations that overlap: one wins, the others 409. Requests the server happens to finish one
    after the other each rotate in turn; either way no secret handed out was overwritten unseen:
    with a grace period, exactly the last two secrets handed out work (the original only if one
    rotation won), as if the rotations had run one at a time."""
    server, _ = served
    token = new_token(server, admin_headers, "rotated at once")
    url = f"{server.url}/v1/tokens/{token['token']['id']}/rotate"
    answers = at_once([lambda: httpx.post(url, headers=admin_headers, json={"grace": "1h"}, timeout=60)] * THREADS)
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 409} and 200 in codes, codes
    assert all(r.headers["content-type"] == "application/problem+json" for r in answers if r.status_code == 409)
    handed_out = [r.json()["secret"] for r in answers if r.status_code == 200]
    working = [secret for secret in handed_out if works(server, secret)]
    assert len(working) == min(2, len(handed_out)), (codes, len(working))
    assert works(server, token["secret"]) == (len(handed_out) == 1)


def test_concurrent_deletes_one_204_the_rest_404_one_audit_and_one_webhook_event(served, admin_headers):
    server, database_url = served
    token = new_token(server, admin_headers, "deleted at once")
    public_id = token["token"]["id"]
    url = f"{server.url}/v1/tokens/{public_id}"
    answers = at_once([lambda: httpx.delete(url, headers=admin_headers, timeout=60)] * THREADS)
    assert sorted(r.status_code for r in answers) == [204] + [404] * (THREADS - 1)
    assert count(database_url, select(func.count(AuditEvent.id)).where(
        AuditEvent.action == "token.deleted", AuditEvent.target == public_id)) == 1
    assert count(database_url, select(func.count(WebhookDelivery.id)).where(
        WebhookDelivery.event == "token.revoked", WebhookDelivery.payload.contains(public_id))) == 1


def test_rotate_racing_delete_never_leaves_a_working_secret_of_a_deleted_token(served, admin_headers):
    server, _ = served
    for round_ in range(4):
        token = new_token(server, admin_headers, f"rotate vs delete {round_}")
        public_id = token["token"]["id"]
        rotated, deleted = at_once([
            lambda: httpx.post(f"{server.url}/v1/tokens/{public_id}/rotate", headers=admin_headers, json={},
                               timeout=60),
            lambda: httpx.delete(f"{server.url}/v1/tokens/{public_id}", headers=admin_headers, timeout=60),
        ])
        assert deleted.status_code == 204
        assert rotated.status_code in (200, 404, 409), rotated.text
        assert not works(server, token["secret"])
        if rotated.status_code == 200:  # rotated first, then deleted: the new secret is refused as well
            assert not works(server, rotated.json()["secret"])


def test_concurrent_creates_never_exceed_the_live_token_cap(served, admin_headers):
    server, database_url = served
    live_before = count(database_url, select(func.count(Token.id)).where(Token.revoked_at.is_(None)))
    assert live_before < CAP
    attempts = CAP - live_before + 6
    answers = at_once([
        (lambda n=n: httpx.post(f"{server.url}/v1/tokens", headers=admin_headers, json={"name": f"cap {n}"},
                                timeout=60))
        for n in range(attempts)
    ])
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * (CAP - live_before) + [422] * 6, codes
    assert count(database_url, select(func.count(Token.id)).where(Token.revoked_at.is_(None))) == CAP
    assert "TOKENSMITH_MAX_TOKENS_PER_USER" in next(r for r in answers if r.status_code == 422).json()["detail"]


# --- deterministic interleavings: the other request commits between this one's read and write ---


@pytest.fixture
def olive_token(database, clock):
    from tests.conftest import SECRET_KEY
    from tokensmith.accounts.service import AccountService
    from tokensmith.tokens.service import TokenService

    with database.session() as session:
        accounts = AccountService(session, clock)
        owner = accounts.create_user(accounts.get_or_create_org("default"), "olive", None)
        created = TokenService(session, clock, SECRET_KEY).create(owner, "t")
    actor = type("Actor", (), {"user_id": owner.id, "org_id": owner.org_id, "is_admin": False})()
    return actor, created


def _meanwhile(monkeypatch, database, action: Callable[[Any], Any]) -> None:
    """Run ``action(session)`` in its own committed transaction between the service's read and write."""
    from tokensmith.policy import PolicyService

    real_get = PolicyService.get

    def interleaved(self: PolicyService, org_id: int) -> Any:
        monkeypatch.setattr(PolicyService, "get", real_get)
        with database.session() as other:
            action(other)
        return real_get(self, org_id)

    monkeypatch.setattr(PolicyService, "get", interleaved)


def test_a_rotation_that_lost_the_race_gets_409_and_the_winners_secret_stays(database, clock, monkeypatch,
                                                                              olive_token):
    from tests.conftest import SECRET_KEY
    from tokensmith.errors import Conflict
    from tokensmith.tokens.service import TokenService

    actor, created = olive_token
    winner: list[str] = []
    _meanwhile(monkeypatch, database, lambda other: winner.append(
        TokenService(other, clock, SECRET_KEY).rotate(actor, created.token.public_id).secret))
    with pytest.raises(Conflict), database.session() as session:
        TokenService(session, clock, SECRET_KEY).rotate(actor, created.token.public_id)
    with database.session() as session:
        token = session.scalar(select(Token).where(Token.public_id == created.token.public_id))
        assert token.secret_digest == secrets.digest(winner[0], SECRET_KEY)


def test_a_token_deleted_while_a_rotation_was_under_way_is_not_given_a_new_secret(database, clock, monkeypatch,
                                                                                   olive_token):
    from tests.conftest import SECRET_KEY
    from tokensmith.errors import Conflict
    from tokensmith.tokens.service import TokenService

    actor, created = olive_token
    _meanwhile(monkeypatch, database,
               lambda other: TokenService(other, clock, SECRET_KEY).revoke(actor, created.token.public_id))
    with pytest.raises(Conflict), database.session() as session:
        TokenService(session, clock, SECRET_KEY).rotate(actor, created.token.public_id)
    with database.session() as session:
        token = session.scalar(select(Token).where(Token.public_id == created.token.public_id))
        assert token.revoked_at is not None and token.secret_digest == created.token.secret_digest


def test_a_delete_that_lost_the_race_is_404_and_records_nothing(database, clock, monkeypatch, olive_token):
    from tests.conftest import SECRET_KEY
    from tokensmith.errors import NotFound
    from tokensmith.tokens.service import TokenService

    actor, created = olive_token
    _meanwhile(monkeypatch, database,
               lambda other: TokenService(other, clock, SECRET_KEY).revoke(actor, created.token.public_id))
    monkeypatch.setattr(TokenService, "get", _stale_get(created.token.public_id))
    with pytest.raises(NotFound), database.session() as session:
        TokenService(session, clock, SECRET_KEY).revoke(actor, created.token.public_id)


def _stale_get(public_id: str) -> Callable[..., Token]:
    """TokenService.get as a request that read the token before the other delete committed."""
    from tokensmith.policy import PolicyService

    def get(self: Any, actor: Any, ref: str) -> Token:
        token = self.session.scalar(select(Token).where(Token.public_id == public_id))
        PolicyService(self.session, self.clock).get(token.org_id)  # the other request commits here
        return token

    return get


