"""Who the client of a request is: the one rule, for every door and for the audit log.

The TCP peer, unless the peer is a trusted proxy (TOKENSMITH_TRUSTED_PROXIES, docs/operations.md);
then X-Forwarded-For read from the right (``ratelimit.client_ip``). Neutral ground: the API, the
console and the domain packages (audit) all ask, and none of them owns the answer.
"""

from __future__ import annotations

import ipaddress

from starlette.requests import Request
from starlette.types import Scope

from tokensmith.ratelimit import client_ip


def peer(request: Request) -> str:
    """The TCP peer's address, or "unknown" (e.g. a test client without one)."""
    return request.client.host if request.client else "unknown"


def request_ip(request: Request) -> str:
    """Who the client is: worked out once per request (kept on ``request.state``), several doors ask."""
    known: str | None = getattr(request.state, "client_ip", None)
    if known is None:
        trusted = request.app.state.context.trusted_proxies
        known = client_ip(peer(request), request.headers.get("x-forwarded-for"), trusted)
        request.state.client_ip = known
    return known


def first_headers(scope: Scope) -> dict[bytes, bytes]:
    """A raw ASGI request's headers, the first of each name, as Starlette's ``headers.get()`` reads them
    (for the plain-ASGI doors, which build no ``Request``)."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name, value)
    return headers


def scope_ip(scope: Scope, headers: dict[bytes, bytes],
             trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> str:
    """``request_ip`` for a raw ASGI request whose ``first_headers`` are ``headers``."""
    client = scope.get("client")
    forwarded_for = headers.get(b"x-forwarded-for")
    return client_ip(client[0] if client else "unknown",
                     forwarded_for.decode("latin-1") if forwarded_for is not None else None, trusted)
