"""What the brute-force limits cost on the hot path: a cached verification with and without them.

    PYTHONPATH=. .venv/bin/python -m bench.bench_limits [DATABASE_URL]

Median µs per call, in process (no HTTP), for a valid token already in the verification cache:
the bare ``Verifier.verify_cached``; the forward-auth fast path (``guard.from_memory``, with the key
choice); the API door (``guard.guarded_verify``); each with no client blocked, and with 5,000 other
clients blocked (the limiter's local block list is then non-empty, so every call takes its lock).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from types import SimpleNamespace

from starlette.requests import Request

from tokensmith import secrets
from tokensmith.accounts.service import AccountService
from tokensmith.api.guard import forward_auth_keys, from_memory, guarded_verify
from tokensmith.clock import SystemClock
from tokensmith.db.database import Database
from tokensmith.db.migrate import upgrade
from tokensmith.ratelimit import FailureLimiter, Limits, ip_key, parse_networks
from tokensmith.tokens.service import TokenService
from tokensmith.verify.core import Verifier

KEY = b"bench-key-0123456789abcdef-0123456789abcdef"
CALLS = 20_000


def median_us(call: Callable[[], object], calls: int = CALLS) -> float:
    for _ in range(1_000):
        call()
    samples = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        samples.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(samples)


def request_for(app: SimpleNamespace, secret: str) -> Request:
    return Request({
        "type": "http", "method": "GET", "path": "/v1/auth/verify", "app": app,
        "headers": [(b"authorization", f"Bearer {secret}".encode()), (b"x-forwarded-for", b"198.51.100.7")],
        "client": ("10.0.0.2", 40000),
    })


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    database = Database(url)
    upgrade(database.engine)
    clock = SystemClock()
    with database.session() as session:
        accounts = AccountService(session, clock)
        user = accounts.find_user("bench-limits") or accounts.create_user(
            accounts.get_or_create_org("default"), "bench-limits", None)
        secret = TokenService(session, clock, KEY).create(user, "bench").secret
    verifier = Verifier(database, KEY, clock)
    verifier.verify(secret)  # now cached
    limiter = FailureLimiter(database, clock, Limits())
    app = SimpleNamespace(state=SimpleNamespace(limiter=limiter, trusted_proxies=parse_networks(["10.0.0.0/8"])))
    request = request_for(app, secret)

    def bare() -> object:
        return verifier.verify_cached(secret, "198.51.100.7")

    def forward_auth() -> object:
        return from_memory(request, "forward-auth", secret, bare_cached, forward_auth_keys(request))

    def bare_cached(s: str) -> object:
        return verifier.verify_cached(s, "198.51.100.7")

    def api_door() -> object:
        return guarded_verify(request, "api", secret, verifier.verify)

    print(f"database: {database.engine.dialect.name}; median µs per call, valid cached token")
    results = {"verify_cached (no limits)": median_us(bare)}
    results["forward-auth fast path, nothing blocked"] = median_us(forward_auth)
    results["API door guarded_verify, nothing blocked"] = median_us(api_door)
    until = clock.now().replace(year=clock.now().year + 1)
    for n in range(5_000):
        limiter._block(ip_key(f"203.0.{n // 250}.{n % 250}"), until)
    results["forward-auth fast path, 5,000 others blocked"] = median_us(forward_auth)
    results["API door guarded_verify, 5,000 others blocked"] = median_us(api_door)
    for what, value in results.items():
        print(f"  {what:<50} {value:7.2f}")
    verifier.close()
    database.dispose()
    assert secrets.is_well_formed(secret)


if __name__ == "__main__":
    main()
