"""POST /v1/leaks: latency of a matching report against a non-matching one, on a real server.

    PYTHONPATH=. .venv/bin/python -m bench.bench_leaks [--rounds N] [--database-url URL]

Starts ``tokensmith serve`` on loopback (SQLite in a temporary directory, or the PostgreSQL
server URL given, where it makes a database of its own), creates N live tokens of an
organization that has a webhook (so a match queues a ``token.leaked`` delivery), then sends, in
alternation, a report of one of those tokens (revoked by it) and a report of a random well-formed
secret. Prints median and p90 of each and the median ratio match / no match; 1.00 means a timing
observer learns nothing. With ``TOKENSMITH_BENCH_SERVER_PYTHONPATH`` the server runs another
checkout's code (e.g. ``/work/main/src``, to measure the behaviour before a change).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from tests.servers import ServerProcess, free_port, server_env

from tokensmith import secrets
from tokensmith.accounts.service import AccountService
from tokensmith.clock import SystemClock
from tokensmith.db.database import Database
from tokensmith.leaks import LeakService
from tokensmith.tokens.service import TokenService

KEY = "bench-leaks-key-0123456789abcdef-0123456789"


def prepare(database_url: str, rounds: int) -> tuple[str, str, list[str]]:
    """(reporter secret, admin secret, ``rounds`` live token secrets) in the server's database."""
    database = Database(database_url)
    clock = SystemClock()
    try:
        with database.session() as session:
            accounts = AccountService(session, clock)
            org = accounts.get_or_create_org("default")
            admin = accounts.create_user(org, f"bench-admin-{uuid.uuid4().hex[:6]}", None, is_admin=True)
            tokens = TokenService(session, clock, KEY.encode())
            admin_secret = tokens.create(admin, "bench-admin").secret
            owner = accounts.create_user(org, f"bench-owner-{uuid.uuid4().hex[:6]}", None)
            leaked = [tokens.create(owner, f"leak-{n}").secret for n in range(rounds)]
            reporter = LeakService(session, clock, KEY.encode()).create_reporter("bench").secret
        return reporter, admin_secret, leaked
    finally:
        database.dispose()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(server: ServerProcess, database_url: str, rounds: int) -> dict[str, float]:
    reporter, admin_secret, leaked = prepare(database_url, rounds + 20)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        hook = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"},
                           headers={"Authorization": f"Bearer {admin_secret}"})
        hook.raise_for_status()
        headers = {"Authorization": f"Bearer {reporter}"}

        def report(secret: str) -> float:
            started = time.perf_counter()
            answer = client.post("/v1/leaks", headers=headers,
                                 json=[{"token": secret, "url": "https://paste.example/x", "source": "bench"}])
            elapsed = time.perf_counter() - started
            assert answer.status_code == 202, answer.text
            return elapsed * 1000

        for secret in leaked[:20]:  # warm-up: both paths, connection, caches
            report(secret)
            report(secrets.generate())
        matching, missing = [], []
        for n, secret in enumerate(leaked[20:]):
            if n % 2:  # alternate which goes first, so drift hits both alike
                missing.append(report(secrets.generate()))
                matching.append(report(secret))
            else:
                matching.append(report(secret))
                missing.append(report(secrets.generate()))
    return {
        "match_p50": statistics.median(matching), "match_p90": percentile(matching, 0.9),
        "miss_p50": statistics.median(missing), "miss_p90": percentile(missing, 0.9),
        "ratio": statistics.median(matching) / statistics.median(missing),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--database-url", help="a PostgreSQL server URL (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-leaks-") as tmp:
        data = Path(tmp) / "data"
        database_url = f"sqlite:///{data / 'tokensmith.db'}"
        admin_engine = name = None
        if args.database_url:
            url = make_url(args.database_url)
            name = f"tsm_bench_leaks_{uuid.uuid4().hex[:8]}"
            admin_engine = create_engine(url, isolation_level="AUTOCOMMIT")
            with admin_engine.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            database_url = url.set(database=name).render_as_string(hide_password=False)
        extra = {"TOKENSMITH_SECRET_KEY": KEY, "TOKENSMITH_LOG_LEVEL": "WARNING"}
        if os.environ.get("TOKENSMITH_BENCH_SERVER_PYTHONPATH"):
            extra["PYTHONPATH"] = os.environ["TOKENSMITH_BENCH_SERVER_PYTHONPATH"]
        server = ServerProcess(data, free_port(), server_env(data, database_url, **extra)).start()
        try:
            result = run(server, database_url, args.rounds)
        finally:
            server.stop()
            if admin_engine is not None:
                with admin_engine.connect() as connection:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin_engine.dispose()
    kind = "postgresql" if args.database_url else "sqlite"
    print(f"POST /v1/leaks on {kind}, {args.rounds} rounds: "
          f"match p50 {result['match_p50']:.2f} ms (p90 {result['match_p90']:.2f}), "
          f"no match p50 {result['miss_p50']:.2f} ms (p90 {result['miss_p90']:.2f}), "
          f"median ratio match/no match {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
