"""The forward-auth fast path: a cached token's answer as plain ASGI, before anything else runs.

``GET /v1/auth/verify`` is asked once per request of every service behind a proxy, so its cached
answer is the one hot path of tokensmith. Profiled (cProfile over the ASGI call), a cached answer
through FastAPI cost ~45 µs in-process, of which the verification itself (HMAC + dict) was ~2 µs:
the rest went to building ``Request``/``Response`` objects, ``request.state``, header parsing,
per-request header middlewares re-scanning the header list, and prometheus_client calls.

Here a cached, valid token costs: one pass over the raw header list (Authorization and
X-Forwarded-For), the client address (memoized per peer), ``Verifier.verify_cached`` (HMAC, dict,
expiry, last-used note), a plain-integer metric, and one ``send`` of header bytes encoded once per
cached identity. Those bytes are exactly what the route answers (the same identity headers,
``Cache-Control: no-store`` and the security headers), so the answer is the same at any position
in the middleware stack; the test suite compares both paths header by header.

Anything else (no or malformed header, a cache miss, an expired or unknown token) falls through to
``routes.verification.forward_auth``, which gives the slow answer (database lookup in a thread,
brute-force counting, refusals). What the fast path worked out - the secret, the client address,
whom a failure counts against - travels with the request (``HANDOFF``), so the route does not
work it out again. A token the cache knows as valid passes even from an address over its failure
limit (docs/threat-model.md, "Brute force"); only unknown secrets are refused there.

Position: the answer is complete on its own, so this middleware is fastest outermost (before
FastAPI's error middleware and the header middlewares, which then never run for it); it is
correct innermost too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tokensmith import metrics
from tokensmith.api.guard import SubjectKeys, proxy_subject_keys
from tokensmith.api.headers import API_CSP, SECURITY_HEADERS
from tokensmith.errors import AuthenticationFailed
from tokensmith.ratelimit import client_ip
from tokensmith.verify.core import Identity

FORWARD_AUTH_PATH = "/v1/auth/verify"
DOOR = "forward-auth"
# Where the fast path leaves what it computed for the slow path (a key of the ASGI scope).
HANDOFF = "tokensmith.forward_auth"
# Sent with every forward-auth answer: the API's Cache-Control, the security headers and the API's
# CSP, exactly what api/middleware.py's policy adds to the route's answer (tests compare the two).
_COMMON_HEADERS = {"Cache-Control": "no-store", **SECURITY_HEADERS, "Content-Security-Policy": API_CSP}
_BODY = {"type": "http.response.body", "body": b"", "more_body": False}


@dataclass(frozen=True, slots=True)
class Handoff:
    """What the fast path knew about a request it could not answer (read by the slow path)."""

    authorization: str | None  # the raw header value, parsed again by the route (its errors are its own)
    client_ip: str
    keys: SubjectKeys


def identity_headers(identity: Identity) -> dict[str, str]:
    """What a proxy passes on to the service behind it (ids and names are safe to log; secrets never)."""
    return {
        "X-Auth-Request-User": identity.username,
        "X-Tokensmith-User-Id": identity.user_public_id,
        "X-Tokensmith-Org": identity.org_name,
        "X-Tokensmith-Token-Id": identity.token_public_id,
    }


def ok_headers(identity: Identity) -> list[tuple[bytes, bytes]]:
    """The 200 answer's raw headers for ``identity``, encoded once and kept with the cached identity."""
    encoded = identity.wire.get(DOOR)
    if encoded is None:
        # Encoded by Starlette itself, so the bytes are exactly the slow path's.
        encoded = identity.wire[DOOR] = Response(status_code=200, headers={
            **identity_headers(identity), **_COMMON_HEADERS}).raw_headers
    return encoded


def _bearer(authorization: str | None) -> str | None:
    """The secret of a well-shaped ``Bearer <secret>`` header value; None for anything the route must judge."""
    if authorization is None:
        return None
    scheme, _, secret = authorization.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or " " in secret:
        return None
    return secret


class ForwardAuthFastPath:
    """Answers ``GET /v1/auth/verify`` for a cached token as plain ASGI; anything else goes on to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != FORWARD_AUTH_PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        authorization = forwarded_for = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's headers.get() reads them
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"x-forwarded-for" and forwarded_for is None:
                forwarded_for = value.decode("latin-1")
        state = self._state(scope)
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        address = client_ip(peer, forwarded_for, state.context.trusted_proxies)
        secret = _bearer(authorization)
        if secret is not None:
            try:
                identity = state.context.verifier.verify_cached(secret, address)
            except AuthenticationFailed:
                identity = None  # expired or known-unknown: the route answers and counts it
            if identity is not None:
                metrics.observe_verification(DOOR, "ok", time.perf_counter() - started)
                await send({"type": "http.response.start", "status": 200, "headers": list(ok_headers(identity))})
                await send(_BODY)
                return
        keys = proxy_subject_keys(peer, address, state.context.trusted_proxies)
        scope[HANDOFF] = Handoff(authorization, address, keys)
        scope.setdefault("state", {})["client_ip"] = address  # api.guard.request_ip reads it from here
        await self.app(scope, receive, send)

    def _state(self, scope: Scope) -> Any:
        """The application's state: through the scope inside Starlette, or the wrapped app's own outermost."""
        app = scope.get("app")
        return cast(Any, app if app is not None else self.app).state
