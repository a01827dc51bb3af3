"""Verification for software tokensmith does not own: reverse proxies (forward-auth) and
gateways (RFC 7662 introspection). Both go through the one verification core."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from tokensmith.api import problems
from tokensmith.api.auth import Context, bearer_secret
from tokensmith.api.client_auth import client_with_scope
from tokensmith.api.context import AppContext
from tokensmith.api.guard import (
    CLIENT_ADDRESS_PARAMETER,
    forward_auth_keys,
    from_memory,
    gateway_keys,
    guarded_subject,
    request_ip,
)
from tokensmith.api.schemas import problem_responses
from tokensmith.errors import AuthenticationFailed
from tokensmith.ratelimit import RateLimited
from tokensmith.verify.core import Identity

router = APIRouter(tags=["verification"])
FORWARD_AUTH_PATH = "/v1/auth/verify"
# Bearer, or HTTP Basic (client_secret_basic: token id and secret) as OAuth client libraries send.
Introspector = Annotated[Identity, Depends(client_with_scope("introspect"))]
INACTIVE: dict[str, Any] = {"active": False}


def identity_headers(identity: Identity) -> dict[str, str]:
    """What a proxy passes on to the service behind it (ids and names are safe to log; secrets never)."""
    return {
        "X-Auth-Request-User": identity.username,
        "X-Tokensmith-User-Id": identity.user_public_id,
        "X-Tokensmith-Org": identity.org_name,
        "X-Tokensmith-Token-Id": identity.token_public_id,
    }


@router.get(
    FORWARD_AUTH_PATH, status_code=200, response_class=Response,
    responses={200: {"description": "The token is valid; identity in the X-Auth-Request-User and "
                                    "X-Tokensmith-* headers."},
               **problem_responses(401, 403)},
)
async def forward_auth(request: Request) -> Response:
    """Forward-auth for nginx ``auth_request``, Traefik ForwardAuth and Caddy ``forward_auth``.

    Reads ``Authorization: Bearer <secret>`` only (never a query string). A cached answer never
    reaches this route: ``ForwardAuthFastPath`` gives it on the event loop, before the router.
    What arrives here (a miss, a refusal, a block) goes to a thread for the database lookup.

    Brute force: invalid tokens count against the original client when a trusted proxy forwarded
    it (403 with Retry-After once over the limit: nginx ``auth_request`` passes 401 and 403 on but
    turns a 429 into a 500), else against the proxy with a much higher ceiling, over which answers
    come from the verification cache only (docs/forward-auth.md).
    """
    context: AppContext = request.app.state.context
    client_ip = request_ip(request)
    keys = forward_auth_keys(request)

    def cached(secret: str) -> Identity | None:
        return context.verifier.verify_cached(secret, client_ip)

    try:
        secret = bearer_secret(request.headers.get("authorization"))
        identity = await run_in_threadpool(
            guarded_subject, request, "forward-auth", secret,
            lambda s: context.verifier.verify(s, client_ip), cached, keys,
        )
    except RateLimited as limited:
        return problems.problem(403, limited.detail, {"Retry-After": str(limited.retry_after)})
    except AuthenticationFailed as exc:
        return problems.problem(401, exc.detail, problems.www_authenticate(exc))
    return Response(status_code=200, headers=identity_headers(identity))


def forward_auth_from_memory(request: Request) -> Identity | None:
    """Forward-auth's answer when the cache alone can give it (a hit, nothing blocked); else None."""
    try:
        secret = bearer_secret(request.headers.get("authorization"))
    except AuthenticationFailed:
        return None
    verifier, client_ip = request.app.state.context.verifier, request_ip(request)
    return from_memory(request, "forward-auth", secret, lambda s: verifier.verify_cached(s, client_ip),
                       forward_auth_keys(request))


class ForwardAuthFastPath:
    """Answers ``GET /v1/auth/verify`` for a cached, unblocked token before FastAPI's router.

    The hot path of every proxied request: matching routes, solving dependencies and building a
    response class cost several times the verification itself. Anything else (a miss, a refusal,
    a block) falls through to ``forward_auth``, which gives the same answer the slow way.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == FORWARD_AUTH_PATH and scope["method"] == "GET":
            identity = forward_auth_from_memory(Request(scope))
            if identity is not None:
                await Response(status_code=200, headers=identity_headers(identity))(scope, receive, send)
                return
        await self.app(scope, receive, send)


@router.post(
    "/v1/oauth2/introspect",
    responses={200: {"description": 'RFC 7662: {"active": true, ...} or exactly {"active": false}.'},
               **problem_responses(401, 403, 422)},
    openapi_extra={"parameters": [CLIENT_ADDRESS_PARAMETER]},
)
def introspect(
    caller: Introspector,
    ctx: Context,
    request: Request,
    token: Annotated[str, Form(description="The secret to introspect.")] = "",
    token_type_hint: Annotated[str | None, Form(description="Ignored: there is one kind of token.")] = None,
) -> JSONResponse:
    """RFC 7662 token introspection for gateways holding a token with the ``introspect`` scope.

    The gateway authenticates with ``Authorization: Bearer <secret>`` or HTTP Basic
    (``client_secret_basic``: its token id ``tok_...`` as client id, that token's secret as password).

    Expired, revoked, unknown, malformed and other organizations' tokens are all exactly
    ``{"active": false}``: an introspector learns nothing about why.

    Brute force: invalid tokens count against the client the gateway names in the
    Tokensmith-Client-Address header (inactive for it once over its limit) and against the
    caller's token with a much higher ceiling, over which answers come from the verification
    cache only (docs/threat-model.md).
    """
    keys = gateway_keys(request, f"token:{caller.token_public_id}")
    try:
        identity = guarded_subject(request, "introspection", token, ctx.verifier.verify,
                                   ctx.verifier.verify_cached, keys)
    except (AuthenticationFailed, RateLimited):
        return JSONResponse(INACTIVE)
    if identity.org_id != caller.org_id:
        return JSONResponse(INACTIVE)
    body: dict[str, Any] = {
        "active": True,
        "scope": " ".join(sorted(identity.scopes)),
        "client_id": identity.token_public_id,
        "username": identity.username,
        "token_type": "Bearer",
        "iat": int(identity.created_at.timestamp()),
        "sub": identity.user_public_id,
        "org": identity.org_public_id,
        "org_name": identity.org_name,
        "token_name": identity.token_name,
        "admin": identity.is_admin,
    }
    if identity.expires_at is not None:
        body["exp"] = int(identity.expires_at.timestamp())
    return JSONResponse(body)
