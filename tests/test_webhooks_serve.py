"""Webhooks against a real ``tokensmith serve``, on SQLite and PostgreSQL: hostile answers cost the
server no memory, and the per-organization cap holds under concurrent creates."""

import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import SECRET_KEY
from tests.receiver import start_hostile
from tests.servers import ServerProcess, admin_password, free_port, server_env
from tokensmith.db.database import Database
from tokensmith.db.models import WebhookDelivery
from tokensmith.webhooks.service import MAX_WEBHOOKS_PER_ORG

RSS_GROWTH_LIMIT_KB = 50 * 1024


@pytest.fixture
def server(tmp_path, database):
    """A real server on the test's database (emptied; the first start creates the admin)."""
    data = tmp_path / "data"
    env = server_env(data, database.url, TOKENSMITH_SECRET_KEY=SECRET_KEY.decode(), TOKENSMITH_WEBHOOK_INTERVAL="0.2")
    process = ServerProcess(data, free_port(), env).start()
    yield process
    process.stop()


@pytest.fixture
def server_database(server, database):
    """The database the server writes to (on SQLite, the file in its data directory)."""
    if database.is_sqlite:
        own = Database(f"sqlite:///{server.data_dir / 'tokensmith.db'}")
        yield own
        own.dispose()
    else:
        yield database


@pytest.fixture
def admin_headers(server):
    password = admin_password(server.url, server.data_dir)
    created = httpx.post(f"{server.url}/v1/auth/token", json={"username": "admin", "password": password},
                         timeout=60).json()
    return {"Authorization": f"Bearer {created['secret']}"}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_hostile_answers_leave_server_memory_flat_and_every_attempt_is_recorded(server, server_database,
                                                                                admin_headers):
    hostiles = [start_hostile(mode) for mode in ("gzip", "endless", "slow")]
    try:
        for hostile in hostiles:
            response = httpx.post(f"{server.url}/v1/webhooks", json={"url": hostile.url}, headers=admin_headers)
            assert response.status_code == 201
        tokens = [httpx.post(f"{server.url}/v1/tokens", json={"name": f"t{n}", "expiration": "30d"},
                             headers=admin_headers).json()["token"]["id"] for n in range(5)]
        time.sleep(1)  # a few idle worker passes: the baseline includes the worker's own steady state
        before = rss_kb(server.process.pid)
        for token_id in tokens:  # each revocation: one delivery to each hostile receiver
            assert httpx.delete(f"{server.url}/v1/tokens/{token_id}", headers=admin_headers).status_code == 204

        def all_answered():
            with server_database.session() as session:
                done = session.scalar(select(func.count(WebhookDelivery.id))
                                      .where(WebhookDelivery.status == "delivered"))
            return done == len(hostiles) * len(tokens)

        assert wait_for(all_answered)
        growth = rss_kb(server.process.pid) - before
        print(f"server RSS {before // 1024} MB before, growth {growth} kB")  # shown with -s, for the record
        assert [len(h.requests) for h in hostiles] == [len(tokens)] * len(hostiles)
        assert growth < RSS_GROWTH_LIMIT_KB, f"server RSS grew by {growth // 1024} MB"
    finally:
        for hostile in hostiles:
            hostile.stop()


def test_the_webhook_cap_holds_under_concurrent_creates(server, admin_headers):
    barrier = threading.Barrier(40)
    codes: list[int] = []

    def create(n: int) -> None:
        barrier.wait()
        response = httpx.post(f"{server.url}/v1/webhooks", json={"url": f"http://127.0.0.1:9/hook/{n}"},
                              headers=admin_headers, timeout=60)
        codes.append(response.status_code)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(codes) == [201] * MAX_WEBHOOKS_PER_ORG + [422] * (40 - MAX_WEBHOOKS_PER_ORG)
    listed = httpx.get(f"{server.url}/v1/webhooks", headers=admin_headers).json()
    assert len(listed) == MAX_WEBHOOKS_PER_ORG
