"""PostgreSQL connections: one round trip for an uncached verification, and a connection the server
ended (a restart, pg_terminate_backend, an idle timeout) fails no request.

Pooled connections are not pinged on checkout (that cost a round trip per verification): a
connection the server closed is recognised by its socket, and a verification whose connection is
lost under it is repeated once on a new one. These tests end real backends on a real server.
"""

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import event

from tests.conftest import SECRET_KEY
from tokensmith.accounts.service import AccountService
from tokensmith.db.database import Database
from tokensmith.verify.core import Verifier

pytestmark = pytest.mark.postgres


@pytest.fixture
def database_url(postgres_url: str) -> str:
    return postgres_url  # only a server can end a connection


@pytest.fixture
def verifier(database: Database, clock) -> Iterator[Verifier]:
    verifier = Verifier(database, SECRET_KEY, clock)
    yield verifier
    verifier.close()


@pytest.fixture
def terminate(database_url: str) -> Iterator:
    """End server backends from a connection of our own, as an operator (or a restart) would."""
    with psycopg.connect(database_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as admin:
        def end(pids: list[int]) -> None:
            for pid in pids:  # the timeout makes it wait until the backend is gone
                assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone() == (True,)
        yield end


def pooled_backends(database: Database, count: int = 1) -> list[int]:
    """Open ``count`` pooled connections at once, give them back, and return their server pids."""
    connections = [database.engine.raw_connection() for _ in range(count)]
    pids = [connection.driver_connection.info.backend_pid for connection in connections]
    for connection in connections:
        connection.close()
    return pids


def verify_uncached(verifier: Verifier, secret: str) -> str:
    verifier.cache.clear()
    return verifier.verify(secret).username


def test_an_uncached_verification_is_one_statement_and_nothing_else(verifier, database, alice, tmp_path: Path):
    for _ in range(6):  # past psycopg's prepare threshold: the steady state
        verify_uncached(verifier, alice.secret)
    connection = database.engine.raw_connection()
    pgconn = connection.driver_connection.pgconn
    connection.close()  # back to the pool: the only idle connection, the next one handed out
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as out:
        pgconn.trace(out.fileno())
        verify_uncached(verifier, alice.secret)
        pgconn.untrace()
    sent = [line.split("\t")[3] for line in trace.read_text().splitlines() if line.split("\t")[1] == "F"]
    # No ping, no BEGIN, no ROLLBACK (each a "Query"): one extended-protocol statement, one Sync.
    assert "Query" not in sent
    assert sent.count("Sync") == 1


def test_a_token_verifies_after_the_server_ended_its_pooled_connection(verifier, database, alice, terminate):
    verify_uncached(verifier, alice.secret)
    terminate(pooled_backends(database))
    assert verify_uncached(verifier, alice.secret) == "alice"


def test_tokens_verify_after_the_server_ended_every_pooled_connection(verifier, database, alice, bob, terminate):
    terminate(pooled_backends(database, count=3))  # what a server restart does to the pool
    assert [verify_uncached(verifier, account.secret) for account in (alice, bob, alice)] == ["alice", "bob", "alice"]


def test_a_write_after_the_server_ended_the_pooled_connection_succeeds(database, clock, alice, terminate):
    terminate(pooled_backends(database))
    with database.session() as session:
        accounts = AccountService(session, clock)
        accounts.create_user(accounts.get_or_create_org("default"), "carol", None)
    with database.session() as session:
        assert AccountService(session, clock).find_user("carol") is not None


def test_a_connection_lost_during_the_lookup_is_retried_once_on_a_new_one(verifier, database, alice, terminate):
    ended: list[int] = []

    @event.listens_for(database.engine, "before_cursor_execute")
    def end_this_backend_once(connection, *_args) -> None:
        if not ended:
            ended.append(connection.connection.driver_connection.info.backend_pid)
            terminate(ended)  # after the checkout, before the query: the query meets a dead connection

    assert verify_uncached(verifier, alice.secret) == "alice"
    assert ended
