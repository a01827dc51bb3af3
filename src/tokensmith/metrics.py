"""Prometheus metrics: a small API every door and the verification cache can feed.

    metrics.observe_verification("api", "ok", seconds)   # outcome: ok, invalid, expired, rate_limited
    metrics.observe_cache(hit=True)                      # each verification-cache lookup (verify/core.py)
    metrics.set_active_tokens(n)                         # refreshed from the database at scrape time

Counters live in one module-level registry (per process). With several uvicorn workers each worker
answers for itself; scale with replicas of one worker each (docs/operations.md).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

OUTCOMES = ("ok", "invalid", "expired", "rate_limited")
# Every door that checks a credential (docs/operations.md lists what each one counts).
DOORS = ("api", "forward-auth", "introspection", "tokenreview", "tokenreview-credential", "s3-exchange",
         "s3-verify", "password", "console")
REGISTRY = CollectorRegistry(auto_describe=True)

VERIFICATIONS = Counter(
    "tokensmith_verifications", "Credential verifications by door and outcome.", ["door", "outcome"],
    registry=REGISTRY,
)
VERIFY_SECONDS = Histogram(
    "tokensmith_verification_seconds", "Time to verify a credential, by door.", ["door"], registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CACHE_LOOKUPS = Counter(
    "tokensmith_verification_cache_lookups", "Verification cache lookups by result (hit or miss).", ["result"],
    registry=REGISTRY,
)
CACHE_HIT_RATIO = Gauge(
    "tokensmith_verification_cache_hit_ratio", "Hits / lookups of the verification cache since start.",
    registry=REGISTRY,
)
ACTIVE_TOKENS = Gauge(
    "tokensmith_active_tokens", "Tokens neither revoked nor expired, all organizations.", registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "tokensmith_rate_limited", "Requests refused by the brute-force limits (429, or the door's own refusal).",
    registry=REGISTRY,
)
CONTENT_TYPE = CONTENT_TYPE_LATEST

_cache = {"hit": 0, "miss": 0}
_lookups = {"hit": CACHE_LOOKUPS.labels("hit"), "miss": CACHE_LOOKUPS.labels("miss")}


# Label children looked up once: ``labels()`` costs several µs, a verification from cache about five.
_counters = {(door, outcome): VERIFICATIONS.labels(door, outcome) for door in DOORS for outcome in OUTCOMES}
_timers = {door: VERIFY_SECONDS.labels(door) for door in DOORS}


def observe_verification(door: str, outcome: str, seconds: float) -> None:
    counter = _counters.get((door, outcome)) or VERIFICATIONS.labels(door, outcome)
    counter.inc()
    (_timers.get(door) or VERIFY_SECONDS.labels(door)).observe(seconds)


def observe_cache(hit: bool) -> None:
    """One verification-cache lookup (on every verification: counters only, the ratio at scrape time)."""
    result = "hit" if hit else "miss"
    _lookups[result].inc()
    _cache[result] += 1


def observe_rate_limited() -> None:
    RATE_LIMITED.inc()


def set_active_tokens(count: int) -> None:
    ACTIVE_TOKENS.set(count)


def exposition() -> bytes:
    """The Prometheus text exposition of every metric."""
    lookups = _cache["hit"] + _cache["miss"]
    if lookups:
        CACHE_HIT_RATIO.set(_cache["hit"] / lookups)
    return generate_latest(REGISTRY)
