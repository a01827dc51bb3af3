"""Lifecycle numbers: verification with rotated secrets, webhook delivery throughput, scan speed.

    PYTHONPATH=. .venv/bin/python -m bench.bench_lifecycle [DATABASE_URL]

Prints median verify latency for a current secret and for a rotated-out one in its grace period
(with 5,000 tokens in the table), deliveries per second for two workers draining 500 events into
a local receiver, and files per second for `scan` over 2,000 small files.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import insert, select
from tests.receiver import start_receiver

from tokensmith import secrets
from tokensmith.accounts.service import AccountService
from tokensmith.clock import FrozenClock
from tokensmith.db.database import Database
from tokensmith.db.migrate import upgrade
from tokensmith.db.models import Base, Token, Webhook
from tokensmith.leaks.scan import iter_files, scan_file
from tokensmith.net.outbound import OutboundPolicy, parse_networks
from tokensmith.objectstore.crypto import KeyRing
from tokensmith.tokens.service import TokenService
from tokensmith.verify.core import Verifier
from tokensmith.webhooks.service import emit
from tokensmith.webhooks.worker import DeliveryWorker

KEY = b"bench-key-0123456789abcdef-0123456789abcdef"


def fresh(url: str) -> Database:
    database = Database(url)
    upgrade(database.engine)
    with database.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    return database


def bench_verify(database: Database, clock: FrozenClock) -> None:
    with database.session() as session:
        accounts = AccountService(session, clock)
        user = accounts.create_user(accounts.get_or_create_org("bench"), "bench", None)
        service = TokenService(session, clock, KEY)
        now = clock.now()
        session.execute(insert(Token), [
            {"public_id": secrets.public_id("tok"), "user_id": user.id, "org_id": user.org_id, "name": f"t{n}",
             "note": "", "secret_digest": secrets.digest(secrets.generate(), KEY), "hint": "xxxx",
             "created_at": now, "expires_at": now + timedelta(days=30)} for n in range(5000)
        ])
        created = service.create(user, "rotating")
        old = created.secret
        actor = SimpleNamespace(user_id=user.id, org_id=user.org_id, is_admin=False)
        new = service.rotate(actor, created.token.public_id, "1h").secret
    verifier = Verifier(database, KEY, clock)
    for label, secret in (("current secret", new), ("rotated-out secret in grace", old)):
        samples = []
        for _ in range(300):
            started = time.perf_counter()
            verifier.verify(secret)
            samples.append(time.perf_counter() - started)
        print(f"verify, {label}: median {statistics.median(samples) * 1e3:.2f} ms, "
              f"p95 {sorted(samples)[int(len(samples) * 0.95)] * 1e3:.2f} ms")


def bench_webhooks(database: Database, clock: FrozenClock) -> None:
    keyring = KeyRing([os.urandom(32)])
    receiver = start_receiver()
    with database.session() as session:
        org_id = session.scalars(select(Token.org_id)).first()
        session.add(Webhook(public_id="whk_bench", org_id=org_id, url=receiver.url,
                            signing_secret=keyring.encrypt("whsec_x", "whk_bench"),
                            created_at=clock.now()))
        session.flush()
        for n in range(500):
            emit(session, org_id, "token.revoked", {"n": n}, clock.now())
    replicas = [Database(database.url), Database(database.url)]
    loopback = OutboundPolicy(parse_networks("127.0.0.0/8"))  # the receiver is local
    workers = [DeliveryWorker(db, clock, keyring=keyring, outbound=loopback, batch=20) for db in replicas]
    started = time.perf_counter()
    threads = [threading.Thread(target=lambda w=w: [None for _ in iter(w.run_once, 0)]) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ids = {r.headers["x-tokensmith-delivery"] for r in receiver.received}
    print(f"webhooks: {len(receiver.received)} deliveries ({len(ids)} distinct) by 2 workers in {elapsed:.2f} s "
          f"= {len(receiver.received) / elapsed:.0f}/s")
    receiver.server.shutdown()


def bench_scan() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in range(2000):
            (root / f"d{n % 20}").mkdir(exist_ok=True)
            (root / f"d{n % 20}" / f"f{n}.txt").write_text(("lorem ipsum tsm_lookalike " * 40 + "\n") * 20)
        (root / "d0" / "leak.txt").write_text(secrets.generate())
        started = time.perf_counter()
        files = iter_files([root])
        found = [f for p in files for f in scan_file(p)]
        elapsed = time.perf_counter() - started
        print(f"scan: {len(files)} files ({sum(p.stat().st_size for p in files) / 1e6:.1f} MB), "
              f"{len(found)} found, {elapsed:.2f} s = {len(files) / elapsed:.0f} files/s")


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    database = fresh(url)
    clock = FrozenClock()
    print(f"database: {database.engine.dialect.name}")
    bench_verify(database, clock)
    bench_webhooks(database, clock)
    bench_scan()
    database.dispose()


if __name__ == "__main__":
    main()
