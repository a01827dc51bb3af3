"""Revocation under ``tokensmith serve --workers 2`` on the embedded SQLite database.

Each worker process has its own verification cache. A token deleted through one worker must be
refused by the other from the very next request on (README), not after the background sweep:
the other worker learns it from the change feed (verify/feed.py) before its next verification.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.s3sign import signed
from tests.servers import admin_password, free_port, server_env, wait_for_http

ROUNDS = 40  # fresh connections: the kernel spreads them over both workers


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[str]:
    data = tmp_path / "data"
    port = free_port()
    log = (tmp_path / "serve.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "tokensmith", "serve", "--port", str(port), "--workers", "2"],
        env=server_env(data), stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/openapi.json", timeout=90.0, process=process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def admin_headers(url: str, data: Path) -> dict[str, str]:
    password = admin_password(url, data)
    minted = httpx.post(f"{url}/v1/auth/token", json={"username": "admin", "password": password, "name": "ops"},
                        timeout=60)
    assert minted.status_code in (200, 201), minted.text
    return {"Authorization": f"Bearer {minted.json()['secret']}"}


def forward_auth_statuses(url: str, secret: str) -> set[int]:
    """Each request on a new connection, so both workers answer some of them."""
    return {httpx.get(f"{url}/v1/auth/verify", headers={"Authorization": f"Bearer {secret}"}, timeout=30).status_code
            for _ in range(ROUNDS)}


def test_a_token_deleted_through_one_worker_is_refused_by_every_worker_at_once(two_workers, tmp_path):
    headers = admin_headers(two_workers, tmp_path / "data")
    created = httpx.post(f"{two_workers}/v1/tokens", json={"name": "victim"}, headers=headers, timeout=30).json()
    secret = created["secret"]
    assert forward_auth_statuses(two_workers, secret) == {200}  # cached by both workers now
    deleted = httpx.delete(f"{two_workers}/v1/tokens/{created['token']['id']}", headers=headers, timeout=30)
    assert deleted.status_code == 204
    assert forward_auth_statuses(two_workers, secret) == {401}


def s3_answers(url: str, headers: dict[str, str], payload: dict) -> set[str]:
    """``POST /v1/object-storage/verify`` on new connections: each worker's answers, as reasons ("valid" if valid)."""
    answers = set()
    for _ in range(ROUNDS):
        answer = httpx.post(f"{url}/v1/object-storage/verify", json=payload, headers=headers, timeout=30).json()
        answers.add("valid" if answer["valid"] else answer["reason"])
    return answers


def test_an_access_key_deleted_through_one_worker_is_refused_by_every_worker_at_once(two_workers, tmp_path):
    headers = admin_headers(two_workers, tmp_path / "data")
    key = httpx.post(f"{two_workers}/v1/object-storage/access-keys", json={"durationSeconds": 3600},
                     headers=headers, timeout=30).json()
    payload = signed("GET", "/bucket/object", key["accessKeyId"], key["secretKey"])
    assert s3_answers(two_workers, headers, payload) == {"valid"}  # cached by both workers now
    deleted = httpx.delete(f"{two_workers}/v1/object-storage/access-keys/{key['accessKeyId']}", headers=headers,
                           timeout=30)
    assert deleted.status_code == 204
    assert s3_answers(two_workers, headers, payload) == {"access key revoked"}


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
