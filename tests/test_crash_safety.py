"""Crash safety: SIGKILL a real server in a storm of creates and deletes, restart, check the promises.

Every acknowledged create verifies; every acknowledged delete stays deleted; nothing is
half-written. On SQLite and on PostgreSQL.
"""

import os
import random
import sqlite3
import threading
import time
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests import hygiene
from tests.conftest import PG_ENV, require
from tests.servers import ServerProcess, admin_password, free_port, server_env

WORKERS = 4


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def crash_server(request, tmp_path):
    """A real server on its own database; the test kills and restarts it."""
    data = tmp_path / "data"
    database_url = None
    admin_engine = name = None
    if request.param == "postgresql":
        server = os.environ.get(PG_ENV)
        require(bool(server), f"PostgreSQL tests need {PG_ENV}")
        url = make_url(server)
        name = f"tsm_crash_{uuid.uuid4().hex[:8]}"
        admin_engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin_engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        database_url = url.set(database=name).render_as_string(hide_password=False)
    env = server_env(data, database_url, TOKENSMITH_AUTH_FAILURES_PER_IP="100000", TOKENSMITH_LOG_LEVEL="INFO")
    proc = ServerProcess(data, free_port(), env)
    yield proc.start(), database_url or f"sqlite:///{data / 'tokensmith.db'}"
    proc.stop()
    if admin_engine is not None:
        hygiene.scan_postgres(database_url)
        with admin_engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()


def sign_in(server: ServerProcess) -> dict[str, str]:
    password = admin_password(server.url, server.data_dir)
    response = httpx.post(f"{server.url}/v1/auth/token", timeout=30,
                          json={"username": "admin", "password": password, "name": "storm"})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['secret']}"}


def storm(server: ServerProcess, headers: dict[str, str], stop: threading.Event,
          created: dict[str, str], deleted: set[str], lock: threading.Lock, attempted: set[str]) -> None:
    """Create tokens and delete some of them until the server dies; record what was acknowledged."""
    rng = random.Random()
    mine: list[str] = []
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        while not stop.is_set():
            try:
                if mine and rng.random() < 0.4:
                    token_id = mine.pop(rng.randrange(len(mine)))
                    with lock:
                        attempted.add(token_id)  # the kill may land after the commit, before the answer
                    if client.delete(f"/v1/tokens/{token_id}").status_code == 204:
                        with lock:
                            deleted.add(token_id)
                else:
                    response = client.post("/v1/tokens", json={"name": f"storm-{uuid.uuid4().hex[:8]}"})
                    if response.status_code == 201:
                        body = response.json()
                        with lock:
                            created[body["token"]["id"]] = body["secret"]
                        mine.append(body["token"]["id"])
            except httpx.HTTPError:
                if server.process.poll() is not None:
                    return


def check_nothing_half_written(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT t.public_id, t.name, t.secret_digest, t.created_at, u.id FROM tokens t "
            "LEFT JOIN users u ON u.id = t.user_id"
        )).all()
    engine.dispose()
    for public_id, name, digest, created_at, user_id in rows:
        assert public_id and name and created_at and user_id is not None, f"half-written token {public_id}"
        assert len(digest) == 64, f"token {public_id} has a truncated digest"
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_sigkill_during_a_storm_loses_no_acknowledged_write(crash_server):
    server, database_url = crash_server
    headers = sign_in(server)
    created: dict[str, str] = {}
    deleted: set[str] = set()
    attempted: set[str] = set()
    lock, stop = threading.Lock(), threading.Event()
    threads = [threading.Thread(target=storm, args=(server, headers, stop, created, deleted, lock, attempted))
               for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(created) < 40 and time.monotonic() < deadline:  # mid-storm, with some of each acknowledged
        time.sleep(0.05)
    time.sleep(random.uniform(0, 0.3))
    server.process.kill()  # SIGKILL: no shutdown hooks, no flush, no goodbye
    server.process.wait()
    stop.set()
    for thread in threads:
        thread.join(30)
    assert created and deleted, "the storm acknowledged nothing before the kill"

    check_nothing_half_written(database_url)
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for token_id, secret in created.items():
            status = client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"}).status_code
            if token_id in deleted:
                assert status == 401, f"acknowledged delete of {token_id} lost: {status}"
            elif token_id not in attempted:
                assert status == 200, f"acknowledged create of {token_id} lost: {status}"
            else:  # a delete in flight at the kill: either outcome is honest, but nothing else
                assert status in (200, 401), f"{token_id} after restart: {status}"
