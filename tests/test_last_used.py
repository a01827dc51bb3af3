"""last_used_at and last_used_ip: coalesced in memory, written at most once a minute per token."""

from datetime import timedelta

import pytest
from sqlalchemy import event, select

from tests.conftest import SECRET_KEY
from tokensmith.db.models import Token
from tokensmith.verify.core import Verifier


@pytest.fixture
def verifier(database, clock):
    verifier = Verifier(database, SECRET_KEY, clock)
    yield verifier
    verifier.close()


@pytest.fixture
def token_writes(database):
    """Each UPDATE of the tokens table that reaches the database (an executemany counts rows)."""
    writes: list[int] = []

    @event.listens_for(database.engine, "before_cursor_execute")
    def record(_conn, _cursor, statement, parameters, _context, executemany):
        if statement.lstrip().upper().startswith("UPDATE TOKENS"):
            writes.append(len(parameters) if executemany else 1)

    return writes


def last_used(database, public_id):
    with database.session() as session:
        token = session.scalar(select(Token).where(Token.public_id == public_id))
        return token.last_used_at, token.last_used_ip


def test_a_hundred_uses_cost_one_write(verifier, database, alice, token_writes, clock):
    for _ in range(100):
        verifier.verify(alice.secret, "10.0.0.7")
    assert token_writes == []
    assert verifier.usage.flush() == 1
    assert sum(token_writes) == 1
    assert last_used(database, alice.token_id) == (clock.now(), "10.0.0.7")


def test_a_token_is_written_at_most_once_a_minute(verifier, database, alice, token_writes, clock):
    verifier.verify(alice.secret, "10.0.0.7")
    verifier.usage.flush()
    for _ in range(30):
        clock.advance(timedelta(seconds=1))
        verifier.verify(alice.secret, "10.0.0.8")
        verifier.usage.flush()
    assert sum(token_writes) == 1
    clock.advance(timedelta(seconds=30))
    verifier.usage.flush()
    assert sum(token_writes) == 2
    assert last_used(database, alice.token_id)[1] == "10.0.0.8"


def test_several_tokens_are_written_in_one_batch(verifier, alice, bob, token_writes):
    verifier.verify(alice.secret)
    verifier.verify(bob.secret)
    assert verifier.usage.flush() == 2
    assert len(token_writes) == 1


def test_shutdown_writes_what_is_pending(verifier, database, alice, token_writes, clock):
    verifier.verify(alice.secret, "10.0.0.7")
    verifier.usage.flush()
    clock.advance(timedelta(seconds=5))
    verifier.verify(alice.secret, "10.0.0.9")
    verifier.stop()
    assert sum(token_writes) == 2
    assert last_used(database, alice.token_id) == (clock.now(), "10.0.0.9")


def test_the_app_records_the_client_address_and_flushes_on_shutdown(app, database, alice):
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        for _ in range(5):
            assert client.get("/v1/auth/verify", headers=alice.headers).status_code == 200
    used_at, ip = last_used(database, alice.token_id)
    assert used_at is not None
    assert ip == "testclient"
