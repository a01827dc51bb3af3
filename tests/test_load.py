"""Load and soak: concurrent verifications, creates and deletes against a real server on loopback.

Bounded: it stops by itself (a few seconds by default, a minute with --run-slow). Zero errors,
p99 recorded (printed and written to the test's tmp dir as load.json), memory flat.
"""

import json
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import ServerProcess, admin_password, free_port, server_env

VERIFIERS, WRITERS = 4, 2
MAX_RSS_GROWTH_MB = 40  # a leak over a minute of churn shows up as far more


@pytest.fixture(scope="module")
def load_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("load") / "data"
    # INFO, not DEBUG: this module measures the server, not its logging.
    proc = ServerProcess(data, free_port(), server_env(data, TOKENSMITH_LOG_LEVEL="INFO"))
    yield proc.start()
    proc.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_load(server: ServerProcess, seconds: float) -> dict[str, object]:
    password = admin_password(server.url, server.data_dir)
    admin = httpx.post(f"{server.url}/v1/auth/token", timeout=60,
                       json={"username": "admin", "password": password, "name": f"load-{time.time()}"}).json()
    headers = {"Authorization": f"Bearer {admin['secret']}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        verified = [client.post("/v1/tokens", json={"name": f"v{i}"}).json()["secret"] for i in range(8)]
    latencies: dict[str, list[float]] = {"verify": [], "create": [], "delete": []}
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def timed(kind: str, call, expected: int) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = call()
        except httpx.HTTPError as exc:
            with lock:
                errors.append(f"{kind}: {type(exc).__name__}")
            return None
        elapsed = time.perf_counter() - started
        with lock:
            latencies[kind].append(elapsed)
            if response.status_code != expected:
                errors.append(f"{kind}: {response.status_code}")
        return response

    def verifier(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            i = n
            while time.monotonic() < stop_at:
                secret = verified[i % len(verified)]
                timed("verify", lambda s=secret: client.get("/v1/whoami", headers={"Authorization": f"Bearer {s}"}),
                      200)
                i += 1

    def writer(n: int) -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            while time.monotonic() < stop_at:
                created = timed("create", lambda: client.post("/v1/tokens", json={"name": f"churn-{n}"}), 201)
                if created is not None and created.status_code == 201:
                    token_id = created.json()["token"]["id"]
                    timed("delete", lambda t=token_id: client.delete(f"/v1/tokens/{t}"), 204)

    threads = [threading.Thread(target=verifier, args=(n,)) for n in range(VERIFIERS)]
    threads += [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    rss_samples: list[float] = []
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        if time.monotonic() - started > seconds * 0.2:  # after warm-up
            rss_samples.append(rss_mb(server.process.pid))
        time.sleep(min(1.0, seconds / 10))
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "seconds": round(elapsed, 1),
        "errors": errors,
        "requests": {k: len(v) for k, v in latencies.items()},
        "throughput_per_s": round(sum(len(v) for v in latencies.values()) / elapsed, 1),
        "p50_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in latencies.items() if v},
        "p99_ms": {k: round(percentile(v, 0.99) * 1000, 1) for k, v in latencies.items() if v},
        "rss_mb_first": round(rss_samples[0], 1) if rss_samples else None,
        "rss_mb_last": round(rss_samples[-1], 1) if rss_samples else None,
    }


def check(result: dict[str, object], tmp_path: Path) -> None:
    (tmp_path / "load.json").write_text(json.dumps(result, indent=2))
    print("\nload result:", json.dumps(result))
    assert result["errors"] == [], result["errors"][:10]
    assert all(result["requests"][k] > 0 for k in ("verify", "create", "delete"))
    if result["rss_mb_first"] is not None:
        assert result["rss_mb_last"] - result["rss_mb_first"] < MAX_RSS_GROWTH_MB


def test_short_load_has_no_errors_and_flat_memory(load_server, tmp_path):
    check(run_load(load_server, 4), tmp_path)


@pytest.mark.slow
def test_soak_for_a_minute(load_server, tmp_path):
    check(run_load(load_server, 60), tmp_path)
