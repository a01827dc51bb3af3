"""Verification for software tokensmith does not own: reverse proxies (forward-auth) and
gateways (RFC 7662 introspection). Both go through the one verification core."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tokensmith.api import problems
from tokensmith.api.answers import identity_headers, introspection
from tokensmith.api.auth import bearer_secret
from tokensmith.api.client_auth import client_with_scope
from tokensmith.api.context import AppContext
from tokensmith.api.fastpath import DOOR, FORWARD_AUTH_PATH, HANDOFF, INTROSPECTION_PATH, Handoff
from tokensmith.api.guard import (
    CLIENT_ADDRESS_PARAMETER,
    FORWARD_AUTH_STATUS,
    LIMITED,
    Refusal,
    cached_scoped,
    check_subject,
    forward_auth_keys,
    from_memory,
    gateway_keys,
    introspection_answer,
    request_ip,
)
from tokensmith.api.schemas import problem_responses
from tokensmith.errors import AuthenticationFailed
from tokensmith.verify.core import Identity

router = APIRouter(tags=["verification"])


@router.get(
    FORWARD_AUTH_PATH, status_code=200, response_class=Response,
    responses={200: {"description": "The token is valid; identity in the X-Auth-Request-User and "
                                    "X-Tokensmith-* headers."},
               **problem_responses(401, 403)},
)
async def forward_auth(request: Request) -> Response:
    """Forward-auth for nginx ``auth_request``, Traefik ForwardAuth and Caddy ``forward_auth``.

    Reads ``Authorization: Bearer <secret>`` only (never a query string). A cached answer never
    reaches this route: ``HotDoors`` (api/fastpath.py) gives it as plain ASGI and hands
    what it computed on. What arrives here (a miss, a refusal) goes to a thread for the lookup.

    Brute force: invalid tokens count against the original client when a trusted proxy forwarded
    it (403 with Retry-After once over the limit: nginx ``auth_request`` passes 401 and 403 on but
    turns a 429 into a 500), else against the proxy with a much higher ceiling, over which answers
    come from the verification cache only (docs/forward-auth.md).
    """
    context: AppContext = request.app.state.context
    handoff: Handoff | None = request.scope.get(HANDOFF)  # what the fast path already worked out
    client_ip = handoff.client_ip if handoff is not None else request_ip(request)
    keys = handoff.keys if handoff is not None else forward_auth_keys(request)

    def cached(secret: str) -> Identity | None:
        return context.verifier.verify_cached(secret, client_ip)

    try:
        secret = bearer_secret(request.headers.get("authorization"))
    except AuthenticationFailed as missing:
        return forward_auth_refusal(Refusal.of(missing))
    checked = await run_in_threadpool(
        check_subject, request, DOOR, secret, lambda s: context.verifier.verify(s, client_ip), cached, keys,
    )
    if isinstance(checked, Refusal):
        return forward_auth_refusal(checked)
    return Response(status_code=200, headers=identity_headers(checked))


def forward_auth_refusal(refusal: Refusal) -> Response:
    """Forward-auth's wire answer for a refusal (``FORWARD_AUTH_STATUS``): a problem, with
    WWW-Authenticate on 401 and Retry-After on 403."""
    status = FORWARD_AUTH_STATUS[refusal.reason]
    if refusal.reason == LIMITED:
        return problems.problem(status, refusal.detail, {"Retry-After": str(refusal.retry_after)})
    return problems.problem(status, refusal.detail, problems.www_authenticate(refusal.authentication_failed()))


# Bearer (answered from memory when cached), or HTTP Basic (client_secret_basic: token id and secret)
# as OAuth client libraries send it.
Introspector = Annotated[Identity, Depends(cached_scoped("introspect", client_with_scope("introspect")))]


@router.post(
    INTROSPECTION_PATH,
    responses={200: {"description": 'RFC 7662: {"active": true, ...} or exactly {"active": false}.'},
               **problem_responses(401, 403, 422)},
    openapi_extra={"parameters": [CLIENT_ADDRESS_PARAMETER]},
)
async def introspect(
    caller: Introspector,
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

    A cached caller asking about a cached token is answered by the fast path (api/fastpath.py);
    here a token in the verification cache is answered on the event loop, anything else is looked
    up in a thread.
    """
    verifier = request.app.state.context.verifier
    keys = gateway_keys(request, f"token:{caller.token_public_id}")
    client = request_ip(request)
    identity = from_memory(request, "introspection", token, lambda s: verifier.verify_cached(s, client), keys)
    if identity is None:
        checked = await run_in_threadpool(check_subject, request, "introspection", token, verifier.verify,
                                          verifier.verify_cached, keys)
        if isinstance(checked, Refusal):
            return JSONResponse(introspection_answer(checked))
        identity = checked
    return JSONResponse(introspection(caller, identity))
