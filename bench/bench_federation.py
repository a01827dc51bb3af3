"""The RFC 8693 exchange under load: one server process, SQLite, JWKS cached, concurrency 8.

    PYTHONPATH=. .venv/bin/python -m bench.bench_federation [--seconds 10] [--rounds 3]

A test-local OIDC issuer (tests/oidc.py) serves discovery and JWKS on loopback; after the first
exchange its keys are cached, so the numbers are tokensmith's own work per exchange: JWT parse,
RS256 signature check, policy match, one token row and one audit event written and committed.
wrk (one thread) POSTs the form with a pool of 200 distinct valid tokens. Targets (issue 15):
>= 500 exchanges/s and p99 <= 50 ms. Also printed: the same work in-process on one thread
(no HTTP), to tell the server's overhead from the exchange's, and the server's CPU time per
exchange (from /proc), which says what one free core could do when the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
from tests.oidc import OidcIssuer
from tests.servers import free_port, wait_for_http

from tokensmith.accounts.service import AccountService
from tokensmith.clock import SystemClock
from tokensmith.config import Settings
from tokensmith.db.database import Database
from tokensmith.db.migrate import upgrade
from tokensmith.federation.policies import PolicyRequest
from tokensmith.net.outbound import parse_networks
from tokensmith.objectstore.crypto import KeyRing
from tokensmith.usecases import Actor, RequestContext, federation
from tokensmith.usecases.base import UnitsOfWork

KEY = b"bench-secret-key-0123456789abcdef-0123456789"
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def seed(database: Database, issuer: OidcIssuer) -> None:
    settings = Settings(data_dir=Path(tempfile.mkdtemp()), database_url=database.url,
                        webhook_allowed_networks=parse_networks("127.0.0.0/8"), allow_loopback_http_issuers=True)
    units = UnitsOfWork(database=database, clock=SystemClock(), secret_key=KEY, keyring=KeyRing([b"k" * 32]),
                        settings=settings)
    with database.session() as session:
        accounts = AccountService(session, SystemClock())
        admin = accounts.create_user(accounts.get_or_create_org("default"), "bench-admin", None, is_admin=True)
        actor = Actor.for_session(user_id=admin.id, org_id=admin.org_id, is_admin=True, username=admin.username)
    with units() as uow:
        federation.create_service_account(uow, actor, "bench-sa")
        federation.create_trust_policy(uow, actor, PolicyRequest(
            name="bench", service_account="bench-sa", issuer=issuer.url, audience="tokensmith",
            subject="system:serviceaccount:ci:*", scopes=["tokens:read"]))


def in_process(database: Database, issuer: OidcIssuer, count: int = 300) -> tuple[float, float]:
    """(median ms, exchanges/s) of the use case on one thread, JWKS cached."""
    settings = Settings(data_dir=Path(tempfile.mkdtemp()), database_url=database.url,
                        webhook_allowed_networks=parse_networks("127.0.0.0/8"), allow_loopback_http_issuers=True)
    units = UnitsOfWork(database=database, clock=SystemClock(), secret_key=KEY, keyring=KeyRing([b"k" * 32]),
                        settings=settings)
    anonymous = Actor.anonymous(RequestContext())
    tokens = [issuer.token() for _ in range(count)]
    with units() as uow:
        federation.exchange_token(uow, anonymous, tokens[0])  # fills the key cache
    times = []
    started = time.perf_counter()
    for token in tokens:
        t0 = time.perf_counter()
        with units() as uow:
            federation.exchange_token(uow, anonymous, token)
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return statistics.median(times) * 1e3, count / elapsed


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_numbers(output: str) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from wrk --latency; RuntimeError on any non-2xx answer."""
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} exchanges were refused")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
        return float(value) * _UNIT[unit]

    return rps, pct("50"), pct("99")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): the server's own work, whatever the load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def lua_script(path: Path, tokens: list[str]) -> None:
    bodies = ",\n".join(
        '"' + urlencode({"grant_type": GRANT, "subject_token": t, "subject_token_type": JWT_TYPE}) + '"'
        for t in tokens)
    path.write_text(
        f"bodies = {{\n{bodies}\n}}\ni = 0\n"
        "request = function()\n  i = i % #bodies + 1\n"
        '  return wrk.format("POST", "/v1/oauth2/token", '
        '{["Content-Type"] = "application/x-www-form-urlencoded"}, bodies[i])\nend\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("install wrk first: apt-get install -y wrk")
    tmp = Path(tempfile.mkdtemp(prefix="tsm-bench-fed-"))
    with OidcIssuer() as issuer:
        db_url = f"sqlite:///{tmp / 'bench.db'}"
        database = Database(db_url)
        upgrade(database.engine)
        seed(database, issuer)
        median_ms, rate = in_process(database, issuer)
        print(f"in-process, 1 thread: median {median_ms:.2f} ms per exchange, {rate:.0f} exchanges/s", flush=True)
        database.dispose()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
        env.update(TOKENSMITH_DATA_DIR=str(tmp / "data"), TOKENSMITH_DATABASE_URL=db_url,
                   TOKENSMITH_SECRET_KEY=KEY.decode(), PYTHONPATH=os.getcwd(),
                   TOKENSMITH_ALLOW_LOOPBACK_HTTP_ISSUERS="1", TOKENSMITH_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
                   TOKENSMITH_LOG_LEVEL="WARNING")
        process = subprocess.Popen([sys.executable, "-m", "bench.server", "--stack", "uvicorn-httptools", "--port",
                                    str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{url}/v1/bench/noop", timeout=120, process=process)
            tokens = [issuer.token(time.time() + 60) for _ in range(200)]  # valid for the whole run
            first = httpx.post(f"{url}/v1/oauth2/token", data={"grant_type": GRANT, "subject_token": tokens[0],
                                                               "subject_token_type": JWT_TYPE})
            assert first.status_code == 200, first.text  # and the JWKS is now cached
            script = tmp / "exchange.lua"
            lua_script(script, tokens)
            runs, ceilings, cpu_ms = [], [], []
            for n in range(args.rounds):
                # The same server's no-op endpoint in between: the machine's ceiling at that moment.
                noop = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
                                       f"{url}/v1/bench/noop"], capture_output=True, text=True, check=True).stdout
                ceilings.append(wrk_numbers(noop)[0])
                cpu_before = cpu_seconds(process.pid)
                output = subprocess.run(["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
                                         "-s", str(script), url], capture_output=True, text=True, check=True).stdout
                cpu_used = cpu_seconds(process.pid) - cpu_before
                rps, p50, p99 = wrk_numbers(output)
                exchanges = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
                runs.append((rps, p50, p99))
                cpu_ms.append(cpu_used / exchanges * 1e3)
                print(f"round {n + 1}: {rps:.0f} exchanges/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
                      f"server CPU {cpu_ms[-1]:.2f} ms per exchange (no-op endpoint: {ceilings[-1]:.0f} req/s)",
                      flush=True)
            rps, p50, p99 = (statistics.median(r[i] for r in runs) for i in range(3))
            print(f"median of {args.rounds} x {args.seconds} s at c={args.connections}: {rps:.0f} exchanges/s, "
                  f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (targets: >= 500/s, p99 <= 50 ms)")
            print(f"no-op endpoint, same server, median: {statistics.median(ceilings):.0f} req/s")
            # The CPU the server spent per exchange (all its threads): 1000 / this is what one free
            # core could do, a figure the machine's load does not move much (latency it does).
            print(f"server CPU per exchange, median: {statistics.median(cpu_ms):.2f} ms "
                  f"(one free core: at most {1e3 / statistics.median(cpu_ms):.0f} exchanges/s)")
            print(f"JWKS fetches (in-process part and server together): {issuer.requests.count('/jwks')}")
            print(f"load average: {os.getloadavg()}")
        finally:
            stop(process)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
