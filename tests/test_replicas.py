"""Two ``tokensmith serve`` processes on one PostgreSQL: a supported, tested deployment."""

import os
import time
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests import hygiene
from tests.conftest import PG_ENV, SECRET_KEY, require
from tests.servers import ServerProcess, free_port, server_env
from tokensmith.accounts.service import AccountService
from tokensmith.clock import SystemClock
from tokensmith.db.database import Database
from tokensmith.tokens.service import TokenService

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def database_url():
    """A database of its own: the servers outlive single tests, other tests empty theirs."""
    server = os.environ.get(PG_ENV)
    require(bool(server), f"the replica test needs {PG_ENV}")
    url = make_url(server)
    name = f"tsm_replicas_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    database_url = url.set(database=name).render_as_string(hide_password=False)
    yield database_url
    hygiene.scan_postgres(database_url)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, database_url):
    servers = []
    try:
        for name in ("one", "two"):
            data = tmp_path_factory.mktemp(f"replica-{name}") / "data"
            env = server_env(data, database_url, TOKENSMITH_SECRET_KEY=SECRET_KEY.decode())
            servers.append(ServerProcess(data, free_port(), env).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


def make_token(database_url: str, username: str) -> tuple[str, str]:
    database = Database(database_url)
    clock = SystemClock()
    try:
        with database.session() as session:
            accounts = AccountService(session, clock)
            user = accounts.create_user(accounts.get_or_create_org("default"), username, None)
            created = TokenService(session, clock, SECRET_KEY).create(user, "replicated")
            return created.secret, created.token.public_id
    finally:
        database.dispose()


def verify(server: ServerProcess, secret: str) -> int:
    return httpx.get(f"{server.url}/v1/auth/verify", headers={"Authorization": f"Bearer {secret}"},
                     timeout=5).status_code


def test_a_token_made_anywhere_verifies_on_both(replicas, database_url):
    secret, _ = make_token(database_url, "both")
    assert [verify(server, secret) for server in replicas] == [200, 200]


def test_a_token_deleted_on_one_replica_is_refused_by_the_other_within_a_second(replicas, database_url):
    one, two = replicas
    secret, token_id = make_token(database_url, "leaver")
    assert verify(two, secret) == 200  # now cached on the second replica
    assert verify(two, secret) == 200
    deleted = httpx.delete(f"{one.url}/v1/tokens/{token_id}", headers={"Authorization": f"Bearer {secret}"},
                           timeout=5)
    assert deleted.status_code == 204
    started = time.monotonic()
    while verify(two, secret) != 401:
        assert time.monotonic() - started < 1.0, "the other replica still accepted the deleted token after 1 s"
        time.sleep(0.01)
