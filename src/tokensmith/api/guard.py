"""The door guard: brute-force limits and verification metrics around any door's credential check.

One check per shape of door returns the identity or a ``Refusal`` with its reason; each protocol
declares once how a refusal goes on the wire (``FORWARD_AUTH_STATUS``, ``API_STATUS``,
``introspection_answer``, ``tokenreview_error``), so the doors never map refusals their own way.

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
from typing import Any, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from tokensmith import audit, metrics, secrets
from tokensmith.clientaddress import peer as _peer
from tokensmith.clientaddress import request_ip as request_ip  # re-exported: doors import it from here
from tokensmith.errors import AuthenticationFailed, InvalidInput
from tokensmith.ratelimit import FailureLimiter, RateLimited, ip_key, is_trusted, user_key, via_key
from tokensmith.verify.core import EXPIRED as EXPIRED_DETAIL
from tokensmith.verify.core import Identity

# How an authenticated gateway (introspection, S3 verify) names the client it asks for.
CLIENT_ADDRESS_HEADER = "Tokensmith-Client-Address"
# The header as an OpenAPI parameter, for the gateway doors that read it (``openapi_extra``).
CLIENT_ADDRESS_PARAMETER = {
    "name": CLIENT_ADDRESS_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
    "description": "The IP address of the client the gateway is asking for, so brute-force limits apply "
                   "to that client and not to the gateway (422 if it is not an IP address).",
}
T = TypeVar("T")


# --- refusals and their wire answers ---------------------------------------------------------

MISSING, INVALID, EXPIRED, LIMITED = "missing", "invalid", "expired", "rate_limited"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a door said no, with what each protocol needs to say it (never the secret)."""

    reason: str  # MISSING (no credential sent), INVALID, EXPIRED or LIMITED
    detail: str
    retry_after: int | None = None  # LIMITED: seconds until the client may try again

    @classmethod
    def of(cls, error: AuthenticationFailed | RateLimited) -> Refusal:
        if isinstance(error, RateLimited):
            return cls(LIMITED, error.detail, error.retry_after)
        if error.error is None:
            return cls(MISSING, error.detail)
        return cls(EXPIRED if error.detail == EXPIRED_DETAIL else INVALID, error.detail)

    def authentication_failed(self) -> AuthenticationFailed:
        """As a 401 (RFC 6750: no error code when no credential was sent)."""
        return AuthenticationFailed(self.detail, error=None if self.reason == MISSING else "invalid_token")


# HTTP status per reason. Forward-auth says 403 where the API says 429: nginx auth_request passes
# 401 and 403 on to the client but turns any other status (429 included) into a 500.
API_STATUS = {MISSING: 401, INVALID: 401, EXPIRED: 401, LIMITED: 429}
FORWARD_AUTH_STATUS = {**API_STATUS, LIMITED: 403}


def introspection_answer(_refusal: Refusal) -> dict[str, bool]:
    """RFC 7662: every refusal is exactly ``{"active": false}`` (an introspector learns nothing about why)."""
    return {"active": False}


def tokenreview_error(refusal: Refusal, limited_reason: str) -> str:
    """TokenReview ``status.error`` of a failed review (``authenticated: false``)."""
    if refusal.reason == LIMITED:
        return f"{limited_reason}; retry after {refusal.retry_after} s"
    return refusal.detail


def limiter_of(request: Request) -> FailureLimiter:
    return request.app.state.context.limiter


def _observe(door: str, outcome: str, started: float) -> None:
    metrics.observe_verification(door, outcome, time.perf_counter() - started)


def _observe_limited(door: str, started: float) -> None:
    _observe(door, "rate_limited", started)
    metrics.observe_rate_limited()


def _outcome_of(failure: AuthenticationFailed) -> str:
    return "expired" if failure.detail == EXPIRED_DETAIL else "invalid"


def _is_well_formed(secret: str) -> bool:
    return secrets.is_credential(secret)


def guarded_verify(request: Request, door: str, secret: str, verify: Callable[[str], T],
                   cached: Callable[[str], T | None] | None = None) -> T:
    """``verify(secret)`` under the brute-force limit for the client's IP, with verification metrics.

    Only failures are counted, and only for well-formed secrets: a malformed one is refused offline
    and costs nothing. A client already over its limit is refused before ``verify`` runs, unless
    ``cached(secret)`` (memory only, no I/O) vouches for the secret: a blocked address keeps the
    tokens already known as valid (docs/threat-model.md, "Brute force").
    """
    limiter, key, started = limiter_of(request), ip_key(request_ip(request)), time.perf_counter()
    try:
        retry_after = limiter.blocked_local(key)
        known = cached(secret) if retry_after is not None and cached is not None else None
        if retry_after is not None and known is None:
            raise RateLimited(retry_after)
        result = known if known is not None else verify(secret)
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


def caller_from_memory(request: Request, scope: str) -> Identity | None:
    """An API caller answered from memory, for async doors: the bearer's cached identity when it holds
    ``scope`` and its first use from this address is already noted; None sends the door to the usual
    ``api.auth`` dependency in a thread (a miss, a refusal, a missing scope, a first use to audit)."""
    try:
        secret = bearer_secret(request.headers.get("authorization"))
    except AuthenticationFailed:
        return None
    context = request.app.state.context
    verifier, client = context.verifier, request_ip(request)
    identity = from_memory(request, "api", secret, lambda s: verifier.verify_cached(s, client), SubjectKeys(None, None))
    if identity is None or scope not in identity.scopes or not context.addresses.known(identity.token_id, client):
        return None
    return identity


def cached_scoped(scope: str, scoped: Callable[[Request], Identity]) -> Callable[..., Any]:
    """An async dependency for a hot door: the caller holding ``scope``, answered from memory on the
    event loop when the cache knows it (``caller_from_memory``), else ``scoped`` (the usual
    ``api.auth`` dependency: lookup, limits, first-use audit, 403 naming the scope) in a thread.

    Named ``requires_<scope>`` like ``api.auth.scoped``'s dependencies, so the scope each route
    needs is read the same way (tests/test_scope_matrix.py).
    """
    async def dependency(request: Request) -> Identity:
        caller = caller_from_memory(request, scope)
        return caller if caller is not None else await run_in_threadpool(scoped, request)

    dependency.__name__ = f"requires_{scope.replace(':', '_').replace('-', '_')}"
    return dependency


def bearer_secret(authorization: str | None) -> str:
    """The secret of an ``Authorization: Bearer <secret>`` header value; AuthenticationFailed otherwise."""
    if authorization is None or not authorization.strip():
        raise AuthenticationFailed("authentication required: send Authorization: Bearer <token>", error=None)
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip() or " " in secret.strip():
        raise AuthenticationFailed("invalid token")
    return secret.strip()


def guarded_password(request: Request, username: str, check: Callable[[], T], door: str = "password") -> T:
    """Run a password ``check`` under the per-IP and per-user-name limits.

    The shared counters are read first (sign-in is rare and argon2 is the expensive path);
    a failure counts against both the client's IP and the user name. A user name over its
    limit does not lock its owner out: an address with no failures of its own may still try
    (``FailureLimiter.check_password``), and the right password from there is let in and
    audited (``auth.lockout_passed``) so the owner learns their name is being guessed.
    """
    limiter, started = limiter_of(request), time.perf_counter()
    keys = (ip_key(request_ip(request)), user_key(username))
    try:
        past_lockout = limiter.check_password(*keys)
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
    if past_lockout is not None:
        _tell_owner_of_lockout(request, username, past_lockout, door)
    return result


def _tell_owner_of_lockout(request: Request, username: str, failures: int, door: str) -> None:
    from tokensmith.accounts.service import AccountService  # the guard stays free of the domain at import

    ctx = request.app.state.context
    with ctx.database.session() as session:
        user = AccountService(session, ctx.clock).find_user(username.strip())
        if user is not None:
            audit.record(session, "auth.lockout_passed", at=ctx.clock.now(), actor_user=user.username,
                         org_id=user.org_id, target=user.public_id, client_ip=request_ip(request),
                         user_agent=request.headers.get("user-agent"),
                         details={"failed_attempts_in_window": failures, "via": door})


# --- doors where an intermediary asks about someone else's token ----------------------------


@dataclass(frozen=True)
class SubjectKeys:
    """Whom an invalid subject token is counted against."""

    client: str | None  # the original client: refused outright over its limit
    intermediary: str | None  # the proxy/gateway/cluster: answered from memory only over its ceiling

    def all(self) -> tuple[str, ...]:
        return tuple(key for key in (self.client, self.intermediary) if key is not None)


def forward_auth_keys(request: Request) -> SubjectKeys:
    """Forward-auth's keys for a request (``proxy_subject_keys`` of its peer and client)."""
    return proxy_subject_keys(_peer(request), request_ip(request), request.app.state.context.trusted_proxies)


def proxy_subject_keys(peer: str, client: str,
                       trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> SubjectKeys:
    """Forward-auth: the original client when a trusted proxy named it, never the proxy's own address.

    Without a forwarded client the caller is either a proxy (no trusted proxies configured, or a
    trusted one that sent no X-Forwarded-For) or, when trusted proxies are configured and the peer
    is not one of them, a client calling directly.
    """
    if client != peer:
        return SubjectKeys(ip_key(client), None)
    if trusted and not is_trusted(peer, trusted):
        return SubjectKeys(ip_key(peer), None)
    return SubjectKeys(None, via_key(f"proxy:{peer}"))


def named_client(request: Request) -> str | None:
    """The ``ip:`` key of the client an authenticated gateway names in Tokensmith-Client-Address, if any.

    Believed because the caller is an authenticated principal holding the door's scope; a value
    that is not an IP address is refused (400).
    """
    return client_key_of(request.headers.get(CLIENT_ADDRESS_HEADER))


def client_key_of(named: str | None) -> str | None:
    """The ``ip:`` key of a Tokensmith-Client-Address value; None when absent, InvalidInput (422) when
    it is not an IP address."""
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
    """The fast path of an async door: a cache hit, with no I/O; None otherwise.

    A hit answers even for a blocked client or intermediary: a token the cache already knows as
    valid keeps working from an address over its failure limit (one misconfigured pod behind a
    NAT must not lock out the others); only secrets the cache cannot vouch for are refused there.
    None sends the caller to ``guarded_subject`` (in a thread): a miss, a failure to count, a block.
    """
    started = time.perf_counter()
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
        retry_after = limiter.blocked_local(keys.client) if keys.client is not None else None
        if retry_after is not None:
            # A blocked client: tokens the cache knows as valid still pass, nothing else is tried.
            known = cached(secret)
            if known is None:
                raise RateLimited(retry_after)
            _observe(door, "ok", started)
            return known
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


def check_subject(request: Request, door: str, secret: str, verify: Callable[[str], Identity],
                  cached: Callable[[str], Identity | None], keys: SubjectKeys) -> Identity | Refusal:
    """``guarded_subject`` as an answer: the identity, or the refusal with its reason (blocking I/O)."""
    try:
        return guarded_subject(request, door, secret, verify, cached, keys)
    except (AuthenticationFailed, RateLimited) as error:
        return Refusal.of(error)


def guarded_exchange(request: Request, door: str, exchange: Callable[[], T], refused: type[Exception]) -> T:
    """``guard_exchange`` for the client of ``request``."""
    return guard_exchange(limiter_of(request), request_ip(request), door, exchange, refused)


def guard_exchange(limiter: FailureLimiter, client_ip: str, door: str, exchange: Callable[[], T],
                   refused: type[Exception]) -> T:
    """An exchange door (RFC 8693, STS): the presented JWT is the client's credential.

    A client over its limit is refused before ``exchange`` runs; each refusal (``refused``) counts one
    failure against the client's address, like a wrong bearer token at the API.
    """
    key, started = ip_key(client_ip), time.perf_counter()
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
