"""Prometheus metrics: plain integers counted per request, turned into metrics only at scrape time.

    metrics.observe_verification("api", "ok", seconds)   # outcome: ok, invalid, expired, rate_limited
    metrics.observe_cache(hit=True)                      # every verification cache lookup (the verifier)
    metrics.observe_rate_limited()
    metrics.observe_fast_answer("forward-auth")          # a hot door answered by the fast path (api/fastpath.py)
    metrics.set_active_tokens(n)                         # refreshed from the database at scrape time

Why not prometheus_client's Counter and Histogram objects: each ``inc()``/``observe()`` takes a lock
and walks label children, several µs on a path (a cached forward-auth answer) whose whole budget is
about 20 µs. Here a request adds to a dict of ints; ``_Collector`` builds the metric families when
Prometheus scrapes. ``+=`` on a dict entry is not atomic across threads, so a race between two
threads can lose an increment (rare, never a wrong answer): acceptable for monitoring counters.

Counters live per process. With several uvicorn workers each worker answers for itself; scale with
replicas of one worker each (docs/operations.md).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

OUTCOMES = ("ok", "invalid", "expired", "rate_limited")
# Every door that checks a credential (docs/operations.md lists what each one counts).
DOORS = ("api", "forward-auth", "introspection", "tokenreview", "tokenreview-credential", "s3-exchange",
         "s3-verify", "password", "console", "leaks")
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# door -> outcome -> count; door -> per-bucket counts (the last one is +Inf) and the sum of seconds.
_verifications: dict[str, dict[str, int]] = {door: dict.fromkeys(OUTCOMES, 0) for door in DOORS}
_buckets: dict[str, list[int]] = {door: [0] * (len(BUCKETS) + 1) for door in DOORS}
_seconds: dict[str, float] = dict.fromkeys(DOORS, 0.0)
_cache = {"hit": 0, "miss": 0}
_rate_limited = [0]
_active_tokens = [0]
_fast_answers: dict[str, int] = {}


def observe_verification(door: str, outcome: str, seconds: float) -> None:
    outcomes = _verifications.get(door)
    if outcomes is None:  # a door not declared above: counted all the same
        outcomes = _verifications[door] = dict.fromkeys(OUTCOMES, 0)
        _buckets[door], _seconds[door] = [0] * (len(BUCKETS) + 1), 0.0
    outcomes[outcome] = outcomes.get(outcome, 0) + 1
    _buckets[door][bisect_left(BUCKETS, seconds)] += 1
    _seconds[door] += seconds


def observe_cache(hit: bool) -> None:
    _cache["hit" if hit else "miss"] += 1


def observe_rate_limited() -> None:
    _rate_limited[0] += 1


def observe_fast_answer(door: str) -> None:
    _fast_answers[door] = _fast_answers.get(door, 0) + 1


def set_active_tokens(count: int) -> None:
    _active_tokens[0] = count


def cache_hit_ratio() -> float:
    """Hits / lookups of the verification cache since start (0 before the first lookup)."""
    hits, misses = _cache["hit"], _cache["miss"]
    return hits / (hits + misses) if hits + misses else 0.0


class _Collector(Collector):
    """Reads the integers above when the registry is collected (a scrape, or a test's get_sample_value)."""

    def collect(self) -> Iterator[Metric]:
        verifications = CounterMetricFamily(
            "tokensmith_verifications", "Credential verifications by door and outcome.", labels=["door", "outcome"])
        seconds = HistogramMetricFamily(
            "tokensmith_verification_seconds", "Time to verify a credential, by door.", labels=["door"])
        for door, outcomes in list(_verifications.items()):
            for outcome, count in list(outcomes.items()):
                verifications.add_metric([door, outcome], count)
            cumulative, buckets = 0, []
            for bound, count in zip((*map(str, BUCKETS), "+Inf"), _buckets[door], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            seconds.add_metric([door], buckets, _seconds[door])
        yield verifications
        yield seconds
        lookups = CounterMetricFamily(
            "tokensmith_verification_cache_lookups", "Verification cache lookups by result (hit or miss).",
            labels=["result"])
        for result, count in _cache.items():
            lookups.add_metric([result], count)
        yield lookups
        yield GaugeMetricFamily("tokensmith_verification_cache_hit_ratio",
                                "Hits / lookups of the verification cache since start.", value=cache_hit_ratio())
        yield GaugeMetricFamily("tokensmith_active_tokens", "Tokens neither revoked nor expired, all organizations.",
                                value=_active_tokens[0])
        fast = CounterMetricFamily(
            "tokensmith_fast_path_answers", "Hot-door requests answered from memory by the fast path, by door "
            "(the others of tokensmith_verifications_total took the routes).", labels=["door"])
        for door, count in list(_fast_answers.items()):
            fast.add_metric([door], count)
        yield fast
        yield CounterMetricFamily("tokensmith_rate_limited",
                                  "Requests refused by the brute-force limits (429, or the door's own refusal).",
                                  value=_rate_limited[0])


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(_Collector())


def exposition() -> bytes:
    """The Prometheus text exposition of every metric."""
    return generate_latest(REGISTRY)
