"""Two ``tokensmith serve`` processes on one PostgreSQL: a supported, tested deployment."""

import base64
import os
import time
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests import hygiene
from tests.conftest import PG_ENV, SECRET_KEY, require
from tests.s3sign import signed
from tests.servers import ServerProcess, free_port, server_env
from tokensmith.accounts.service import AccountService
from tokensmith.clock import SystemClock
from tokensmith.db.database import Database
from tokensmith.tokens.service import TokenService

pytestmark = pytest.mark.postgres
# One encryption key for both: either replica decrypts the S3 keys the other minted.
ENCRYPTION_KEY = base64.b64encode(bytes(range(32))).decode()


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
            env = server_env(data, database_url, TOKENSMITH_SECRET_KEY=SECRET_KEY.decode(),
                             TOKENSMITH_ENCRYPTION_KEYS=ENCRYPTION_KEY)
            servers.append(ServerProcess(data, free_port(), env).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


def make_token(database_url: str, username: str, *, admin: bool = False) -> tuple[str, str]:
    database = Database(database_url)
    clock = SystemClock()
    try:
        with database.session() as session:
            accounts = AccountService(session, clock)
            user = accounts.create_user(accounts.get_or_create_org("default"), username, None, is_admin=admin)
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


def s3_verify(server: ServerProcess, secret: str, payload: dict) -> dict:
    response = httpx.post(f"{server.url}/v1/object-storage/verify", json=payload,
                          headers={"Authorization": f"Bearer {secret}"}, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def test_an_access_key_deleted_on_one_replica_is_refused_by_the_other_within_a_second(replicas, database_url):
    one, two = replicas
    secret, _ = make_token(database_url, "keeper", admin=True)
    headers = {"Authorization": f"Bearer {secret}"}
    key = httpx.post(f"{one.url}/v1/object-storage/access-keys", json={"durationSeconds": 3600}, headers=headers,
                     timeout=5).json()
    payload = signed("GET", "/bucket/object", key["accessKeyId"], key["secretKey"])
    assert s3_verify(two, secret, payload)["valid"] is True  # now cached on the second replica
    assert s3_verify(two, secret, payload)["valid"] is True
    deleted = httpx.delete(f"{one.url}/v1/object-storage/access-keys/{key['accessKeyId']}", headers=headers, timeout=5)
    assert deleted.status_code == 204
    started = time.monotonic()
    while s3_verify(two, secret, payload)["valid"]:
        assert time.monotonic() - started < 1.0, "the other replica still accepted the deleted key after 1 s"
        time.sleep(0.01)
