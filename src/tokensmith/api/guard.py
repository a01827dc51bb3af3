"""Brute-force limits and verification metrics around any door's credential check."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import Request

from tokensmith import metrics, secrets
from tokensmith.errors import AuthenticationFailed
from tokensmith.ratelimit import FailureLimiter, RateLimited, client_ip, ip_key, user_key
from tokensmith.verify.core import Identity

CREDENTIAL_PREFIXES = (secrets.PREFIX, secrets.WEBHOOK_PREFIX, secrets.REPORTER_PREFIX)


def limiter_of(request: Request) -> FailureLimiter:
    return request.app.state.limiter


def request_ip(request: Request) -> str:
    return client_ip(request.client.host if request.client else None,
                     request.headers.get("x-forwarded-for"), request.app.state.trusted_proxies)


def guarded_verify(request: Request, door: str, secret: str, verify: Callable[[str], Identity]) -> Identity:
    """``verify(secret)`` under the brute-force limit for the client's IP, with verification metrics.

    Only failures are counted, and only for well-formed secrets: a malformed one is refused offline
    and costs nothing. A client already over its limit is refused before ``verify`` runs.
    """
    limiter, key, started = limiter_of(request), ip_key(request_ip(request)), time.perf_counter()
    try:
        limiter.check_local(key)
        identity = verify(secret)
    except RateLimited:
        metrics.observe_verification(door, "rate_limited", time.perf_counter() - started)
        metrics.observe_rate_limited()
        raise
    except AuthenticationFailed as exc:
        outcome = "expired" if exc.detail == "token expired" else "invalid"
        metrics.observe_verification(door, outcome, time.perf_counter() - started)
        if any(secrets.is_well_formed(secret, prefix) for prefix in CREDENTIAL_PREFIXES):
            try:
                limiter.record_failure(key)
            except RateLimited:
                metrics.observe_rate_limited()
                raise
        raise
    metrics.observe_verification(door, "ok", time.perf_counter() - started)
    return identity


def guarded_password(request: Request, username: str, check: Callable[[], object]) -> object:
    """Run a password ``check`` under the per-IP and per-user-name limits.

    The shared counters are read first (sign-in is rare and argon2 is the expensive path);
    a failure counts against both the client's IP and the user name.
    """
    limiter = limiter_of(request)
    keys = (ip_key(request_ip(request)), user_key(username))
    try:
        limiter.check_shared(*keys)
    except RateLimited:
        metrics.observe_rate_limited()
        raise
    try:
        return check()
    except AuthenticationFailed:
        try:
            limiter.record_failure(*keys)
        except RateLimited:
            metrics.observe_rate_limited()
            raise
        raise
