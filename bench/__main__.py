"""Verification benchmarks: one command, one table.

    apt-get install -y wrk                      # the HTTP load generator (C, not the bottleneck)
    .venv/bin/pip install -e '.[bench]'         # Granian, to compare with uvicorn
    TOKENSMITH_BENCH_PG=postgresql+psycopg://postgres@127.0.0.1:5432/postgres .venv/bin/python -m bench
    .venv/bin/python -m bench --million         # the scale rows with 1,000,000 tokens (slow)

Sections: in-process verification (µs), forward-auth vs a no-op endpoint over loopback HTTP
(wrk, 1 thread, concurrency 1/8/32), lookup latency with few vs many tokens stored (SQLite and
PostgreSQL), and revocation propagation between two replicas on PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets as pysecrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url
from tests.servers import free_port, wait_for_http

from tokensmith.accounts.service import AccountService
from tokensmith.clock import SystemClock
from tokensmith.db.database import Database
from tokensmith.db.migrate import upgrade
from tokensmith.db.models import Token
from tokensmith.tokens.service import TokenService
from tokensmith.verify.core import Verifier

KEY = b"bench-secret-key-0123456789abcdef-0123456789"
PG_ENV = "TOKENSMITH_BENCH_PG"
rows: list[tuple[str, str, str]] = []


def row(section: str, what: str, value: str) -> None:
    rows.append((section, what, value))
    print(f"  {section:<14} {what:<58} {value}", flush=True)


def seed(database: Database, username: str = "bench") -> tuple[str, str]:
    with database.session() as session:
        accounts = AccountService(session, SystemClock())
        user = accounts.find_user(username) or accounts.create_user(
            accounts.get_or_create_org("default"), username, None, is_admin=True)
        created = TokenService(session, SystemClock(), KEY).create(user, f"bench-{uuid.uuid4().hex[:6]}")
        return created.secret, created.token.public_id


def fill(database: Database, total: int) -> None:
    """Bulk-insert filler tokens (random digests) until ``total`` are stored."""
    with database.engine.connect() as connection:
        have = connection.execute(text("SELECT count(*) FROM tokens")).scalar_one()
        user_id, org_id = connection.execute(text("SELECT id, org_id FROM users LIMIT 1")).one()
    now = datetime.now(UTC)
    batch = 20_000
    while have < total:
        n = min(batch, total - have)
        values = [{"public_id": f"tok_f{uuid.uuid4().hex[:20]}", "user_id": user_id, "org_id": org_id,
                   "name": "filler", "note": "", "secret_digest": pysecrets.token_hex(32), "hint": "xxxx",
                   "created_at": now} for _ in range(n)]
        with database.engine.begin() as connection:
            connection.execute(insert(Token.__table__), values)
        have += n


def timed_us(call: Callable[[], object], n: int, repeats: int = 5) -> tuple[float, float]:
    """(median, best) over ``repeats`` runs of the mean µs per call."""
    results = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(n):
            call()
        results.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(results), min(results)


def uncached_us(verifier: Verifier, secret: str, n: int) -> tuple[float, float]:
    def call() -> None:
        verifier.cache.clear()
        verifier.verify(secret)

    return timed_us(call, n)


# --- sections --------------------------------------------------------------------------------


def in_process(tmp: Path) -> None:
    database = Database(f"sqlite:///{tmp / 'inproc.db'}")
    upgrade(database.engine)
    secret, _ = seed(database)
    verifier = Verifier(database, KEY, SystemClock())
    verifier.verify(secret)
    cached = timed_us(lambda: verifier.verify(secret), 20_000)
    row("in-process", "verify, cached: µs/call median | best of 5", "{:.2f} | {:.2f}".format(*cached))
    row("in-process", "verify, uncached, SQLite lookup: µs/call median | best",
        "{:.1f} | {:.1f}".format(*uncached_us(verifier, secret, 300)))
    pg = os.environ.get(PG_ENV)
    if pg:
        with temporary_pg_database(pg) as url:
            pgdb = Database(url)
            upgrade(pgdb.engine)
            secret, _ = seed(pgdb)
            pgv = Verifier(pgdb, KEY, SystemClock())
            pgv.verify(secret)
            row("in-process", "verify, uncached, PostgreSQL lookup: µs/call median | best",
                "{:.1f} | {:.1f}".format(*uncached_us(pgv, secret, 300)))
            pgv.close()
            pgdb.dispose()
    verifier.close()
    database.dispose()


def s3_in_process(tmp: Path) -> None:
    """S3 SigV4 verify in-process, µs per call: the old way (a session, the key read through the ORM,
    decrypted, the signing key derived) against the access key cache (parse, HMAC, dict)."""
    from tests.s3sign import presigned, signed

    from tokensmith.objectstore.crypto import KeyRing
    from tokensmith.objectstore.keycache import AccessKeyCache
    from tokensmith.objectstore.service import AccessKeyService

    database = Database(f"sqlite:///{tmp / 's3.db'}")
    upgrade(database.engine)
    secret, _ = seed(database)
    clock = SystemClock()
    verifier = Verifier(database, KEY, clock)
    identity = verifier.verify(secret)
    keyring = KeyRing([os.urandom(32)])
    with database.session() as session:
        created = AccessKeyService(session, clock, keyring).create(identity, 3600, "bench")  # type: ignore[arg-type]
        key_id, key_secret = created.key.access_key_id, created.secret
    cache = AccessKeyCache()
    org = identity.org_id
    for label, payload in (("header-signed GET", signed("GET", "/bucket/object", key_id, key_secret)),
                           ("presigned URL", presigned("GET", "/bucket/object", key_id, key_secret, expires=3600))):
        fields = (payload["method"], payload["path"], payload["query"], payload["headers"])

        def uncached(fields: tuple = fields) -> None:
            with database.session() as session:
                assert AccessKeyService(session, clock, keyring).verify_signature(org, *fields).valid

        def cached(fields: tuple = fields) -> None:
            verdict = cache.verify_cached(org, *fields, None, clock.now())
            assert verdict is not None and verdict.valid

        row("in-process", f"S3 verify {label}, uncached (ORM read, decrypt): µs median | best",
            "{:.1f} | {:.1f}".format(*timed_us(uncached, 200)))
        with database.session() as session:  # the fill: one miss (entries live 30 s)
            assert AccessKeyService(session, clock, keyring, cache).verify_signature(org, *fields).valid
        row("in-process", f"S3 verify {label}, cached (verify_cached): µs median | best",
            "{:.1f} | {:.1f}".format(*timed_us(cached, 5_000)))
    verifier.close()
    database.dispose()


def asgi(tmp: Path) -> None:
    """Every door called directly as ASGI (no sockets, no server), cached path: µs per request.

    Much less sensitive to a noisy machine than the HTTP runs, and it isolates what tokensmith adds
    on top of the server: the same doors, made the same way (``prepare_doors``) as the HTTP table.
    """
    import asyncio

    import httpx
    from fastapi import Response

    from bench.server import first_in_line
    from tokensmith.api.app import create_app
    from tokensmith.config import Settings

    database = Database(f"sqlite:///{tmp / 'asgi.db'}")
    upgrade(database.engine)
    admin, _ = seed(database)
    app = create_app(Settings(data_dir=tmp / "asgi-data", database_url=database.url), database, KEY)

    @app.get("/v1/bench/noop", include_in_schema=False)
    async def noop() -> Response:
        return Response(status_code=200)

    first_in_line(app)

    async def raw_asgi(_scope: dict, _receive: object, send: Callable) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    def scope_of(door: Door) -> dict:
        headers = [(b"host", b"bench")]
        if door.secret:
            headers.append((b"authorization", f"Bearer {door.secret}".encode()))
        if door.body is not None:
            headers.append((b"content-length", str(len(door.body.encode())).encode()))
        if door.content_type:
            headers.append((b"content-type", door.content_type.encode()))
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": door.method,
                "scheme": "http", "path": door.path, "raw_path": door.path.encode(), "query_string": b"",
                "root_path": "", "headers": headers, "client": ("127.0.0.1", 40000),
                "server": ("127.0.0.1", 8000), "state": {}}

    async def call(door: Door, target: Callable) -> int:
        status = 0
        body = {"type": "http.request", "body": (door.body or "").encode(), "more_body": False}

        async def receive() -> dict:
            return body

        async def send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await target(scope_of(door), receive, send)
        return status

    async def run() -> dict[str, list[float]]:
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                        base_url="http://bench") as client:
            table = await prepare_doors_async(client, admin)
            table = [door for door in table if door.server != "two"]
            for door in table:  # warm the caches: the route, then the fast path
                for _ in range(3):
                    assert await call(door, raw_asgi if door.server == "raw" else app) == 200, door.name
            times: dict[str, list[float]] = {door.name: [] for door in table}
            for _ in range(7):
                for door in table:
                    target = raw_asgi if door.server == "raw" else app
                    started = time.perf_counter()
                    for _ in range(1_000):
                        await call(door, target)
                    times[door.name].append((time.perf_counter() - started) / 1_000 * 1e6)
        return times

    times = asyncio.run(run())
    for name, values in times.items():
        row("asgi", f"{name}: µs/request median | best of 7", f"{statistics.median(values):.1f} | {min(values):.1f}")
    database.dispose()


def memory(n: int = 20_000) -> None:
    """Memory per cached identity: a cache filled with ``n`` distinct identities, as forward-auth leaves
    them (with their encoded answer), measured with tracemalloc."""
    import tracemalloc

    from tokensmith import scopes
    from tokensmith.api.fastpath import ok_headers
    from tokensmith.verify.cache import VerificationCache
    from tokensmith.verify.core import Identity

    now = datetime.now(UTC)
    cache = VerificationCache(max_size=n)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(n):
        identity = Identity(
            token_id=i, token_public_id=f"tok_{pysecrets.token_urlsafe(12)}", token_name=f"ci deploy {i}",
            user_id=i, user_public_id=f"usr_{pysecrets.token_urlsafe(12)}", username=f"user-{i:06d}",
            org_id=1, org_public_id="org_0123456789abcdef", org_name="default", is_admin=False,
            created_at=now, expires_at=now, cluster_ids=frozenset({1, 2}),
            scopes=scopes.effective(None, False))
        ok_headers(identity)
        cache.put(pysecrets.token_hex(32), identity, cache.generation)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    row("memory", f"verification cache: bytes per cached identity ({n:,} cached)", f"{grown / n:,.0f}")


class temporary_pg_database:
    def __init__(self, server: str) -> None:
        self.url = make_url(server)
        self.name = f"tsm_bench_{uuid.uuid4().hex[:8]}"
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT")

    def __enter__(self) -> str:
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        return self.url.set(database=self.name).render_as_string(hide_password=False)

    def __exit__(self, *_exc: object) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def start_server(stack: str, database_url: str, data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
    env.update(TOKENSMITH_DATA_DIR=str(data_dir), TOKENSMITH_DATABASE_URL=database_url,
               TOKENSMITH_SECRET_KEY=KEY.decode(), PYTHONPATH=os.getcwd())
    process = subprocess.Popen([sys.executable, "-m", "bench.server", "--stack", stack, "--port", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/v1/bench/noop", timeout=120, process=process)  # a loaded machine starts slowly
    return process, url


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, connections: int, seconds: int, secret: str | None) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from wrk with one thread."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if secret:
        args += ["-H", f"Authorization: Bearer {secret}"]
    output = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} non-2xx answers from {url}")

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * _UNIT[unit]

    return rps, pct("50"), pct("99")


def http(tmp: Path, stacks: list[str], seconds: int, rounds: int = 3) -> None:
    """The old comparison (kept as a second reference): forward-auth vs the FastAPI no-op, per server stack."""
    if shutil.which("wrk") is None:
        row("http", "skipped: install wrk (apt-get install -y wrk)", "-")
        return
    db_url = f"sqlite:///{tmp / 'http.db'}"
    database = Database(db_url)
    upgrade(database.engine)
    secret, _ = seed(database)
    database.dispose()
    for stack in stacks:
        process, url = start_server(stack, db_url, tmp / f"data-{stack}")
        try:
            httpx.get(f"{url}/v1/auth/verify", headers={"Authorization": f"Bearer {secret}"})  # warm the cache
            for c in (1, 32):
                runs: dict[str, list[tuple[float, float, float]]] = {"noop": [], "auth": []}
                for _ in range(rounds):
                    runs["noop"].append(wrk(f"{url}/v1/bench/noop", c, seconds, secret))
                    runs["auth"].append(wrk(f"{url}/v1/auth/verify", c, seconds, secret))
                noop, auth = (tuple(statistics.median(r[i] for r in runs[k]) for i in range(3))
                              for k in ("noop", "auth"))
                row(f"http {stack}", f"c={c:<2} FastAPI no-op req/s | p50 ms | p99 ms",
                    f"{noop[0]:.0f} | {noop[1]:.2f} | {noop[2]:.2f}")
                row(f"http {stack}", f"c={c:<2} forward-auth  req/s | p50 ms | p99 ms (ratio)",
                    f"{auth[0]:.0f} | {auth[1]:.2f} | {auth[2]:.2f} ({auth[0] / noop[0]:.0%})")
        finally:
            stop(process)


# --- every door against the raw ASGI ceiling ---------------------------------------------------


@dataclass
class Door:
    name: str
    server: str  # "raw", "one" (tokensmith, 1 worker) or "two" (--workers 2)
    path: str
    target: float | None = None  # the target ratio to the raw ceiling at c=32
    method: str = "GET"
    body: str | None = None
    content_type: str | None = None
    secret: str | None = None
    expect: str | None = None  # a substring of a good answer, checked once before measuring

    def script(self, tmp: Path) -> Path | None:
        """A wrk Lua script for a door wrk cannot express with -H alone (a body, a method)."""
        if self.body is None:
            return None
        path = tmp / f"{re.sub(r'[^a-z0-9]+', '-', self.name)}.lua"
        lines = [f'wrk.method = "{self.method}"', f"wrk.body = [==[{self.body}]==]"]
        if self.content_type:
            lines.append(f'wrk.headers["Content-Type"] = "{self.content_type}"')
        path.write_text("\n".join(lines) + "\n")
        return path


Result = tuple[float, float, float]  # req/s, p50 ms, p99 ms


def start(args: list[str], db_url: str, data_dir: Path, ready: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
    env.update(TOKENSMITH_DATA_DIR=str(data_dir), TOKENSMITH_DATABASE_URL=db_url,
               TOKENSMITH_SECRET_KEY=KEY.decode(), PYTHONPATH=os.getcwd())
    # The server's own log, to read when a door fails (wrk's error alone does not say why).
    with open(data_dir.parent / f"server-{port}.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bench.server", "--port", str(port), *args],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url + ready, timeout=120, process=process)
    return process, url


def doors_table(cluster: dict, subject_secret: str, credential: dict, key: dict, admin: str) -> list[Door]:
    """Every door with the request it is measured with (what ``prepare_doors`` made through the API)."""
    from tests.s3sign import presigned, signed

    review = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                         "spec": {"token": subject_secret}})
    header_signed = json.dumps(signed("GET", "/bucket/object", key["accessKeyId"], key["secretKey"]))
    query_signed = json.dumps(presigned("GET", "/bucket/object", key["accessKeyId"], key["secretKey"],
                                        expires=3600))
    return [
        Door("raw ASGI (the ceiling)", "raw", "/"),
        Door("FastAPI no-op route", "one", "/v1/bench/noop"),
        Door("forward-auth GET /v1/auth/verify", "one", "/v1/auth/verify", 0.5, secret=subject_secret),
        Door("forward-auth, --workers 2", "two", "/v1/auth/verify", secret=subject_secret),
        Door("GET /v1/whoami", "one", "/v1/whoami", 0.25, secret=subject_secret, expect='"username"'),
        Door("introspection (RFC 7662)", "one", "/v1/oauth2/introspect", 0.25, "POST",
             f"token={subject_secret}", "application/x-www-form-urlencoded", admin, '"active":true'),
        Door("TokenReview (v1 JSON)", "one", f"/v1/clusters/{cluster['id']}/tokenreview", 0.25, "POST",
             review, "application/json", credential["secret"], '"authenticated":true'),
        Door("S3 verify, header-signed GET", "one", "/v1/object-storage/verify", 0.25, "POST",
             header_signed, "application/json", admin, '"valid":true'),
        Door("S3 verify, presigned URL", "one", "/v1/object-storage/verify", 0.25, "POST",
             query_signed, "application/json", admin, '"valid":true'),
    ]


def new_cluster() -> dict:
    """A cluster to create for the TokenReview door (its API server is never contacted)."""
    from tests.pki import CA_PEM

    return {"name": f"bench-{uuid.uuid4().hex[:6]}", "server": "https://10.0.0.1:6443",
            "certificate_authority": CA_PEM, "region": "bench"}


KEY_REQUEST = {"durationSeconds": 0, "attributes": {"name": "bench"}}


def prepare_doors(url: str, admin: str) -> list[Door]:
    """Everything the doors need, made through the API: a cluster, a token for it and the cluster's
    webhook credential, a subject token, an S3 access key and requests signed with it."""
    headers = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as api:
        cluster = api.post("/v1/clusters", json=new_cluster()).raise_for_status().json()
        subject = api.post("/v1/tokens", json={"name": "subject", "clusters": [cluster["name"]]}).raise_for_status()
        credential = api.post(f"/v1/clusters/{cluster['id']}/webhook-credentials").raise_for_status().json()
        key = api.post("/v1/object-storage/access-keys", json=KEY_REQUEST).raise_for_status().json()
    return doors_table(cluster, subject.json()["secret"], credential, key, admin)


async def prepare_doors_async(api: httpx.AsyncClient, admin: str) -> list[Door]:
    """``prepare_doors`` through an in-process (ASGI) client."""
    headers = {"Authorization": f"Bearer {admin}"}
    cluster = (await api.post("/v1/clusters", json=new_cluster(), headers=headers)).raise_for_status().json()
    subject = (await api.post("/v1/tokens", json={"name": "subject", "clusters": [cluster["name"]]},
                              headers=headers)).raise_for_status()
    credential = (await api.post(f"/v1/clusters/{cluster['id']}/webhook-credentials",
                                 headers=headers)).raise_for_status().json()
    key = (await api.post("/v1/object-storage/access-keys", json=KEY_REQUEST,
                          headers=headers)).raise_for_status().json()
    return doors_table(cluster, subject.json()["secret"], credential, key, admin)


def wrk_door(door: Door, url: str, connections: int, seconds: int, tmp: Path) -> Result:
    script = door.script(tmp)
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if door.secret:
        args += ["-H", f"Authorization: Bearer {door.secret}"]
    if script is not None:
        args += ["-s", str(script)]
    ran = subprocess.run([*args, url + door.path], capture_output=True, text=True)
    if ran.returncode != 0:
        raise RuntimeError(f"{door.name}: wrk exited {ran.returncode}: {(ran.stderr or ran.stdout).strip()[-500:]}")
    output = ran.stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        raise RuntimeError(f"{door.name}: {non2xx.group(1)} non-2xx answers")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * _UNIT[unit]

    return rps, pct("50"), pct("99")


def check_door(door: Door, url: str) -> None:
    """One request the way wrk will send it: it must be a success, not a fast refusal."""
    headers = {"Authorization": f"Bearer {door.secret}"} if door.secret else {}
    if door.content_type:
        headers["Content-Type"] = door.content_type
    response = httpx.request(door.method, url + door.path, headers=headers, content=door.body, timeout=60)
    if response.status_code != 200 or (door.expect and door.expect not in response.text.replace(" ", "")):
        raise RuntimeError(f"{door.name}: {response.status_code} {response.text[:200]}")


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def doors(tmp: Path, seconds: int, rounds: int) -> None:
    """Every door, cached path, against a raw ASGI app on the same uvicorn/httptools/uvloop stack.

    Rounds are interleaved (each round runs every door at c=1, then at c=32) and each figure is the
    median over the rounds, so a busy neighbour slows every door alike and the ratios stay readable.
    """
    if shutil.which("wrk") is None:
        row("doors", "skipped: install wrk (apt-get install -y wrk)", "-")
        return
    db_url = f"sqlite:///{tmp / 'doors.db'}"
    database = Database(db_url)
    upgrade(database.engine)
    admin, _ = seed(database)
    database.dispose()
    started_load = load()
    servers = {"raw": start(["--app", "raw"], db_url, tmp / "data-raw", "/"),
               "one": start([], db_url, tmp / "data-one", "/v1/bench/noop"),
               "two": start(["--workers", "2"], db_url, tmp / "data-two", "/v1/bench/noop")}
    try:
        urls = {name: url for name, (_process, url) in servers.items()}
        table = prepare_doors(urls["one"], admin)
        for door in table:
            for _ in range(20 if door.server == "two" else 1):  # warm the caches (each worker's)
                check_door(door, urls[door.server])
        results: dict[tuple[str, int], list[Result]] = {}
        for round_ in range(rounds):
            for c in (1, 32):
                for door in table:
                    results.setdefault((door.name, c), []).append(wrk_door(door, urls[door.server], c, seconds, tmp))
            print(f"  doors: round {round_ + 1}/{rounds} done, load average {load()}", flush=True)
    except Exception:
        for log in sorted(tmp.glob("server-*.log")):  # why a door failed is in its server's log
            print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
        raise
    finally:
        for process, _url in servers.values():
            stop(process)
    med = {k: tuple(statistics.median(r[i] for r in v) for i in range(3)) for k, v in results.items()}
    ceiling = med[(table[0].name, 32)][0]
    one_worker = med[("forward-auth GET /v1/auth/verify", 32)][0]
    print(f"\nDoors, cached path, medians of {rounds} interleaved rounds of {seconds} s (wrk -t1, loopback);"
          f" load average (1, 5, 15 min) {started_load} at start, {load()} at end; {os.cpu_count()} cores.\n")
    print("| door | c=1 req/s | c=1 p50 ms | c=1 p99 ms | c=32 req/s | c=32 p50 ms | c=32 p99 ms "
          "| ratio to raw ASGI (c=32) | target |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for door in table:
        one, many = med[(door.name, 1)], med[(door.name, 32)]
        ratio = many[0] / ceiling
        if door.target is not None:
            p99_limit = 5.0 if door.target == 0.5 else 10.0
            def said(met: bool) -> str:
                return "met" if met else "NOT met"

            target = (f"≥ {door.target}x ({said(ratio >= door.target)}), "
                      f"p99 ≤ {p99_limit:.0f} ms ({said(many[2] <= p99_limit)})")
        elif door.server == "two":
            scaling = many[0] / one_worker
            target = f"≥ 1.6x one worker: {scaling:.2f}x ({'met' if scaling >= 1.6 else 'NOT met'})"
        else:
            target = "reference"
        print(f"| {door.name} | {one[0]:.0f} | {one[1]:.2f} | {one[2]:.2f} | {many[0]:.0f} | {many[1]:.2f} "
              f"| {many[2]:.2f} | {ratio:.2f}x | {target} |")
        row("doors", f"{door.name}: c=32 req/s | p99 ms | ratio", f"{many[0]:.0f} | {many[2]:.2f} | {ratio:.2f}")


def scale(tmp: Path, sizes: list[int]) -> None:
    pg = os.environ.get(PG_ENV)
    for label in ("SQLite", "PostgreSQL"):
        if label == "PostgreSQL" and not pg:
            row("scale", "PostgreSQL skipped: set TOKENSMITH_BENCH_PG", "-")
            continue
        context = temporary_pg_database(pg) if label == "PostgreSQL" else None
        url = context.__enter__() if context else f"sqlite:///{tmp / 'scale.db'}"
        try:
            database = Database(url)
            upgrade(database.engine)
            secret, _ = seed(database)
            verifier = Verifier(database, KEY, SystemClock())
            for size in sizes:
                started = time.perf_counter()
                fill(database, size)
                filled = time.perf_counter() - started
                if database.engine.dialect.name == "postgresql":
                    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                        c.execute(text("ANALYZE tokens"))
                uncached = uncached_us(verifier, secret, 300)
                cached = timed_us(lambda v=verifier, s=secret: v.verify(s), 10_000)
                row("scale", f"{label} {size:>9,} tokens: uncached µs | cached µs, medians (fill {filled:.0f} s)",
                    f"{uncached[0]:.1f} | {cached[0]:.2f}")
            verifier.close()
            database.dispose()
        finally:
            if context:
                context.__exit__(None, None, None)


def propagation(tmp: Path, rounds: int) -> None:
    pg = os.environ.get(PG_ENV)
    if not pg:
        row("propagation", "skipped: set TOKENSMITH_BENCH_PG", "-")
        return
    with temporary_pg_database(pg) as url:
        database = Database(url)
        upgrade(database.engine)
        one, url_one = start_server("uvicorn-httptools", url, tmp / "data-one")
        two, url_two = start_server("uvicorn-httptools", url, tmp / "data-two")
        times = []
        try:
            with httpx.Client(timeout=5) as client:
                for _ in range(rounds):
                    secret, token_id = seed(database)
                    headers = {"Authorization": f"Bearer {secret}"}
                    assert client.get(f"{url_two}/v1/auth/verify", headers=headers).status_code == 200
                    assert client.delete(f"{url_one}/v1/tokens/{token_id}", headers=headers).status_code == 204
                    started = time.perf_counter()
                    while client.get(f"{url_two}/v1/auth/verify", headers=headers).status_code != 401:
                        pass
                    times.append((time.perf_counter() - started) * 1e3)
        finally:
            stop(one)
            stop(two)
            database.dispose()
    row("propagation", f"DELETE on A -> 401 on B, ms (median | max of {rounds})",
        f"{statistics.median(times):.1f} | {max(times):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--million", action="store_true", help="scale rows with 1,000,000 tokens (else 100,000)")
    parser.add_argument("--seconds", type=int, default=3, help="wrk duration per run")
    parser.add_argument("--stacks", default="uvicorn-httptools,uvicorn-h11,granian")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per door (medians are quoted)")
    parser.add_argument("--only", default="doors,inproc,asgi,memory,scale,propagation",
                        help="sections: doors, inproc, asgi, memory, http (the old per-stack no-op comparison), "
                             "scale, propagation")
    args = parser.parse_args()
    only = set(args.only.split(","))
    stacks = [s for s in args.stacks.split(",") if s != "granian" or _has("granian")]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tsm-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if "doors" in only:
            doors(tmp, args.seconds, args.rounds)
        if "inproc" in only:
            in_process(tmp)
            s3_in_process(tmp)
        if "asgi" in only:
            asgi(tmp)
        if "memory" in only:
            memory()
        if "http" in only:
            http(tmp, stacks, args.seconds, args.rounds)
        if "scale" in only:
            scale(tmp, [1_000, 1_000_000 if args.million else 100_000])
        if "propagation" in only:
            propagation(tmp, 20)
    print("\n| section | measure | value |\n| --- | --- | --- |")
    for section, what, value in rows:
        print(f"| {section} | {what} | {value} |")


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    main()
