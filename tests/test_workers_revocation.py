"""Revocation under ``tokensmith serve --workers 2`` on the embedded SQLite database.

Each worker process has its own verification cache. A token deleted through one worker must be
refused by the other from the very next request on (README), not after the background sweep:
the other worker learns it from the change feed (verify/feed.py) before its next verification.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.s3sign import signed
from tests.servers import ServerProcess, admin_password, free_port, server_env

ROUNDS = 40  # fresh connections: the kernel spreads them over both workers


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One ``serve --workers 2`` for the module: each test makes (and deletes) a credential of its own."""
    data = tmp_path_factory.mktemp("two-workers") / "data"
    server = ServerProcess(data, free_port(), server_env(data), options=("--workers", "2"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def admin_headers(two_workers: ServerProcess) -> dict[str, str]:
    password = admin_password(two_workers.url, two_workers.data_dir)
    minted = httpx.post(f"{two_workers.url}/v1/auth/token", timeout=60,
                        json={"username": "admin", "password": password, "name": "ops"})
    assert minted.status_code in (200, 201), minted.text
    return {"Authorization": f"Bearer {minted.json()['secret']}"}


def fresh_connections() -> httpx.Client:
    """A client that opens a new connection for each request (none is kept alive), so both workers answer some
    of them; one client rather than one per request (each builds a TLS context: ~40 ms of CPU)."""
    return httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def forward_auth_statuses(url: str, secret: str) -> set[int]:
    with fresh_connections() as http:
        return {http.get(f"{url}/v1/auth/verify", headers={"Authorization": f"Bearer {secret}"}).status_code
                for _ in range(ROUNDS)}


def test_a_token_deleted_through_one_worker_is_refused_by_every_worker_at_once(two_workers, admin_headers):
    url = two_workers.url
    created = httpx.post(f"{url}/v1/tokens", json={"name": "victim"}, headers=admin_headers, timeout=30).json()
    secret = created["secret"]
    assert forward_auth_statuses(url, secret) == {200}  # cached by both workers now
    deleted = httpx.delete(f"{url}/v1/tokens/{created['token']['id']}", headers=admin_headers, timeout=30)
    assert deleted.status_code == 204
    assert forward_auth_statuses(url, secret) == {401}


def s3_answers(url: str, headers: dict[str, str], payload: dict) -> set[str]:
    """``POST /v1/object-storage/verify`` on new connections: each worker's answers, as reasons ("valid" if valid)."""
    answers = set()
    with fresh_connections() as http:
        for _ in range(ROUNDS):
            answer = http.post(f"{url}/v1/object-storage/verify", json=payload, headers=headers).json()
            answers.add("valid" if answer["valid"] else answer["reason"])
    return answers


def test_an_access_key_deleted_through_one_worker_is_refused_by_every_worker_at_once(two_workers, admin_headers):
    url = two_workers.url
    key = httpx.post(f"{url}/v1/object-storage/access-keys", json={"durationSeconds": 3600},
                     headers=admin_headers, timeout=30).json()
    payload = signed("GET", "/bucket/object", key["accessKeyId"], key["secretKey"])
    assert s3_answers(url, admin_headers, payload) == {"valid"}  # cached by both workers now
    deleted = httpx.delete(f"{url}/v1/object-storage/access-keys/{key['accessKeyId']}", headers=admin_headers,
                           timeout=30)
    assert deleted.status_code == 204
    assert s3_answers(url, admin_headers, payload) == {"access key revoked"}


def test_a_verifier_on_the_same_sqlite_file_hears_another_engines_commits(tmp_path, clock):
    """Two engines on one file stand for two worker processes: no in-process notice passes between them."""
    from tests.conftest import SECRET_KEY
    from tokensmith.accounts.service import AccountService
    from tokensmith.db.database import Database
    from tokensmith.db.migrate import upgrade
    from tokensmith.db.models import Token
    from tokensmith.errors import AuthenticationFailed
    from tokensmith.tokens.service import TokenService
    from tokensmith.verify.core import Verifier

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    writer, reader = Database(url), Database(url)
    upgrade(writer.engine)
    with writer.session() as session:
        accounts = AccountService(session, clock)
        user = accounts.create_user(accounts.get_or_create_org("default"), "erin", None, is_admin=False)
        created = TokenService(session, clock, SECRET_KEY).create(user, "erin's token")
        token_id = created.token.id
    verifier = Verifier(reader, SECRET_KEY, clock)
    try:
        assert verifier.verify(created.secret).username == "erin"  # now cached by the reader
        with writer.session() as session:
            session.get(Token, token_id).revoked_at = clock.now()
        with pytest.raises(AuthenticationFailed):
            verifier.verify(created.secret)
    finally:
        verifier.close()
        writer.dispose()
        reader.dispose()
