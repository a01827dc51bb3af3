"""Brute-force limits and verification metrics around any door's credential check.

Two shapes of door (docs/threat-model.md, "Brute force"):

* A client presents its own credential (API bearer, S3 token exchange, a gateway's or API server's
  own credential, password sign-in): failures count against the client's address, and a client
  over its limit is refused outright (``guarded_verify``, ``guarded_password``).
* An intermediary asks about someone else's token (forward-auth, introspection, TokenReview):
  ``guarded_subject`` counts an invalid subject against the original client when one is known
  (refused outright over its limit) and against the intermediary (proxy, gateway credential,
  cluster) with a much higher ceiling. Over that ceiling the intermediary is never refused: its
  subjects are answered from the verification cache only, so tokens in use keep passing while
  unknown ones stop reaching the database.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request

from tokensmith import metrics, secrets
from tokensmith.clientaddress import peer as _peer
from tokensmith.clientaddress import request_ip as request_ip  # re-exported: doors import it from here
from tokensmith.errors import AuthenticationFailed, InvalidInput
from tokensmith.ratelimit import FailureLimiter, RateLimited, ip_key, is_trusted, user_key, via_key
from tokensmith.verify.core import EXPIRED, Identity

# How an authenticated gateway (introspection, S3 verify) names the client it asks for.
CLIENT_ADDRESS_HEADER = "Tokensmith-Client-Address"
# The header as an OpenAPI parameter, for the gateway doors that read it (``openapi_extra``).
CLIENT_ADDRESS_PARAMETER = {
    "name": CLIENT_ADDRESS_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
    "description": "The IP address of the client the gateway is asking for, so brute-force limits apply "
                   "to that client and not to the gateway (422 if it is not an IP address).",
}
T = TypeVar("T")


def limiter_of(request: Request) -> FailureLimiter:
    return request.app.state.limiter


def _observe(door: str, outcome: str, started: float) -> None:
    metrics.observe_verification(door, outcome, time.perf_counter() - started)


def _observe_limited(door: str, started: float) -> None:
    _observe(door, "rate_limited", started)
    metrics.observe_rate_limited()


def _outcome_of(failure: AuthenticationFailed) -> str:
    return "expired" if failure.detail == EXPIRED else "invalid"


def _is_well_formed(secret: str) -> bool:
    return secrets.is_credential(secret)


def guarded_verify(request: Request, door: str, secret: str, verify: Callable[[str], T]) -> T:
    """``verify(secret)`` under the brute-force limit for the client's IP, with verification metrics.

    Only failures are counted, and only for well-formed secrets: a malformed one is refused offline
    and costs nothing. A client already over its limit is refused before ``verify`` runs.
    """
    limiter, key, started = limiter_of(request), ip_key(request_ip(request)), time.perf_counter()
    try:
        limiter.check_local(key)
        result = verify(secret)
    except RateLimited:
        _observe_limited(door, started)
        raise
    except AuthenticationFailed as exc:
        _observe(door, _outcome_of(exc), started)
        if _is_well_formed(secret):
            try:
                limiter.record_failure(key)
            except RateLimited:
                metrics.observe_rate_limited()
                raise
        raise
    _observe(door, "ok", started)
    return result


def guarded_password(request: Request, username: str, check: Callable[[], T], door: str = "password") -> T:
    """Run a password ``check`` under the per-IP and per-user-name limits.

    The shared counters are read first (sign-in is rare and argon2 is the expensive path);
    a failure counts against both the client's IP and the user name.
    """
    limiter, started = limiter_of(request), time.perf_counter()
    keys = (ip_key(request_ip(request)), user_key(username))
    try:
        limiter.check_shared(*keys)
    except RateLimited:
        _observe_limited(door, started)
        raise
    try:
        result = check()
    except AuthenticationFailed:
        _observe(door, "invalid", started)
        try:
            limiter.record_failure(*keys)
        except RateLimited:
            metrics.observe_rate_limited()
            raise
        raise
    _observe(door, "ok", started)
    return result


# --- doors where an intermediary asks about someone else's token ----------------------------


@dataclass(frozen=True)
class SubjectKeys:
    """Whom an invalid subject token is counted against."""

    client: str | None  # the original client: refused outright over its limit
    intermediary: str | None  # the proxy/gateway/cluster: answered from memory only over its ceiling

    def all(self) -> tuple[str, ...]:
        return tuple(key for key in (self.client, self.intermediary) if key is not None)


def forward_auth_keys(request: Request) -> SubjectKeys:
    """Forward-auth: the original client when a trusted proxy named it, never the proxy's own address.

    Without a forwarded client the caller is either a proxy (no trusted proxies configured, or a
    trusted one that sent no X-Forwarded-For) or, when trusted proxies are configured and the peer
    is not one of them, a client calling directly.
    """
    peer, client = _peer(request), request_ip(request)
    if client != peer:
        return SubjectKeys(ip_key(client), None)
    trusted = request.app.state.trusted_proxies
    if trusted and not is_trusted(peer, trusted):
        return SubjectKeys(ip_key(peer), None)
    return SubjectKeys(None, via_key(f"proxy:{peer}"))


def named_client(request: Request) -> str | None:
    """The ``ip:`` key of the client an authenticated gateway names in Tokensmith-Client-Address, if any.

    Believed because the caller is an authenticated principal holding the door's scope; a value
    that is not an IP address is refused (400).
    """
    named = request.headers.get(CLIENT_ADDRESS_HEADER)
    if named is None or not named.strip():
        return None
    try:
        return ip_key(str(ipaddress.ip_address(named.strip())))
    except ValueError:
        raise InvalidInput(f"{CLIENT_ADDRESS_HEADER} must be an IP address") from None


def gateway_keys(request: Request, caller: str) -> SubjectKeys:
    """Introspection: the client the gateway names, if any, and the authenticated ``caller`` itself."""
    return SubjectKeys(named_client(request), via_key(caller))


def guarded_for_client(request: Request, door: str, client: str | None, check: Callable[[], T],
                       failed: Callable[[T], bool]) -> T:
    """``check()`` under the limit of a named ``client`` (no limit without one), with metrics.

    For doors whose failures are answers, not exceptions (S3 verify): ``failed(result)`` says
    whether to count it. Raises RateLimited before ``check`` for a client over its limit, and
    instead of the answer that takes it over.
    """
    limiter, started = limiter_of(request), time.perf_counter()
    try:
        if client is not None:
            limiter.check_local(client)
        result = check()
        if not failed(result):
            _observe(door, "ok", started)
            return result
        _observe(door, "invalid", started)
        if client is not None:
            limiter.record_failure(client)
        return result
    except RateLimited:
        _observe_limited(door, started)
        raise


def from_memory(request: Request, door: str, secret: str, cached: Callable[[str], Identity | None],
                keys: SubjectKeys) -> Identity | None:
    """The fast path of an async door: a cache hit, with no I/O, when no key is blocked; None otherwise.

    None sends the caller to ``guarded_subject`` (in a thread): a miss, a failure to count, a block.
    """
    limiter, started = limiter_of(request), time.perf_counter()
    if limiter.has_blocks() and any(limiter.blocked_local(key) is not None for key in keys.all()):
        return None
    try:
        identity = cached(secret)
    except AuthenticationFailed:
        return None
    if identity is not None:
        _observe(door, "ok", started)
    return identity


def guarded_subject(request: Request, door: str, secret: str, verify: Callable[[str], Identity],
                    cached: Callable[[str], Identity | None], keys: SubjectKeys) -> Identity:
    """Verify a subject token an intermediary asked about, under the client and intermediary limits.

    Raises AuthenticationFailed (invalid, expired) or RateLimited (the client is over its limit, or
    the intermediary is over its ceiling and the cache cannot vouch for the token). Blocking I/O:
    call it from a thread in async code.
    """
    limiter, started, degraded = limiter_of(request), time.perf_counter(), False
    try:
        if keys.client is not None:
            limiter.check_local(keys.client)
        retry_after = limiter.blocked_local(keys.intermediary) if keys.intermediary is not None else None
        degraded = retry_after is not None
        if retry_after is None:
            identity = verify(secret)
        else:
            remembered = cached(secret)  # over the ceiling: memory only, never the database
            if remembered is None:
                raise RateLimited(retry_after)
            identity = remembered
    except RateLimited:
        _observe_limited(door, started)
        raise
    except AuthenticationFailed as exc:
        _observe(door, _outcome_of(exc), started)
        # Over its ceiling the intermediary is not counted any more: memory-only answers cost no I/O.
        counted = (keys.client,) if degraded else keys.all()
        if _is_well_formed(secret) and any(counted):
            over = limiter.count_failure(*[key for key in counted if key is not None])
            if keys.client is not None and keys.client in over:
                metrics.observe_rate_limited()
                raise limiter.limited(keys.client) from None
        raise
    _observe(door, "ok", started)
    return identity


def guarded_exchange(request: Request, door: str, exchange: Callable[[], T], refused: type[Exception]) -> T:
    """An exchange door (RFC 8693, STS): the presented JWT is the client's credential.

    A client over its limit is refused before ``exchange`` runs; each refusal (``refused``) counts one
    failure against the client's address, like a wrong bearer token at the API.
    """
    limiter, key, started = limiter_of(request), ip_key(request_ip(request)), time.perf_counter()
    try:
        limiter.check_local(key)
        result = exchange()
    except RateLimited:
        _observe_limited(door, started)
        raise
    except refused:
        _observe(door, "invalid", started)
        try:
            limiter.record_failure(key)
        except RateLimited:
            metrics.observe_rate_limited()  # this refusal is answered; the next one is limited
        raise
    _observe(door, "ok", started)
    return result
