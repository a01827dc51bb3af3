"""``POST /v1/oauth2/token``: one OAuth 2.0 token endpoint, dispatched on ``grant_type``.

Each grant lives in its own module and registers one entry in :data:`GRANTS`: a function
``(request, fields) -> Response`` run in a worker thread, where ``fields`` are the form's text
fields. An unknown ``grant_type`` answers ``unsupported_grant_type`` (RFC 6749 §5.2). Adding a
grant (RFC 8693 token exchange, say) is one import and one dict entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tokensmith.api.routes.device_authorization import DEVICE_CODE_GRANT, device_code_grant, form_fields, oauth_error
from tokensmith.api.routes.federation import TOKEN_EXCHANGE, TOKEN_FORM_SCHEMA, token_exchange_grant

router = APIRouter(prefix="/v1/oauth2", tags=["oauth2"])

GrantHandler = Callable[[Request, Mapping[str, str]], Response]
GRANTS: Final[dict[str, GrantHandler]] = {
    DEVICE_CODE_GRANT: device_code_grant,  # RFC 8628: tokensmith login --web
    TOKEN_EXCHANGE: token_exchange_grant,  # RFC 8693: workload identity federation
}


@router.post(
    "/token", openapi_extra=TOKEN_FORM_SCHEMA,
    responses={200: {"description": "access_token, token_type, expires_in, scope"},
               400: {"description": "RFC 6749 error JSON: {error, error_description}",
                     "content": {"application/json": {}}}, 429: {"description": "too many requests"}},
)
async def token(request: Request) -> Response:
    """The OAuth 2.0 token endpoint (form-encoded).

    Grant types: ``urn:ietf:params:oauth:grant-type:device_code`` (RFC 8628, ``tokensmith login --web``)
    and ``urn:ietf:params:oauth:grant-type:token-exchange`` (RFC 8693: an external OIDC token for a
    short-lived token under a trust policy, docs/federation.md).
    """
    fields = await form_fields(request)
    if fields is None:
        return oauth_error("invalid_request", "send the parameters as application/x-www-form-urlencoded")
    grant_type = fields.get("grant_type", "")
    handler = GRANTS.get(grant_type)
    if handler is None:
        return oauth_error("unsupported_grant_type", "supported grant types: " + ", ".join(sorted(GRANTS)))
    return await run_in_threadpool(handler, request, fields)
