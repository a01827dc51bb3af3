"""RFC 8628 for ``tokensmith login --web``: the device authorization endpoint and the device-code grant.

``POST /v1/oauth2/device_authorization`` (form: ``scope``, ``client_id``, and ``device_name``, what
the approver is shown) answers the device code, the user code and where to enter it. The device
then polls ``POST /v1/oauth2/token`` with ``grant_type=urn:ietf:params:oauth:grant-type:device_code``;
that endpoint (``oauth_token.py``) hands the request to :func:`device_code_grant` here.
Errors are RFC 6749 JSON (``{"error": ..., "error_description": ...}``), not problem documents,
because OAuth clients read those.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tokensmith.api.auth import request_context
from tokensmith.api.context import context_of
from tokensmith.api.guard import limiter_of
from tokensmith.clientaddress import request_ip
from tokensmith.errors import InvalidInput
from tokensmith.ratelimit import RateLimited, ip_key
from tokensmith.tokens.device_grant import DeviceGrantError
from tokensmith.usecases import Actor, device

router = APIRouter(prefix="/v1/oauth2", tags=["oauth2"])

DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def oauth_error(
    error: str, description: str, status: int = 400, headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An RFC 6749 §5.2 error answer (never echoing a code or a secret)."""
    return JSONResponse({"error": error, "error_description": description}, status_code=status,
                        headers={**NO_STORE, **(headers or {})})


def _rate_limited(limited: RateLimited) -> JSONResponse:
    return oauth_error("slow_down", str(limited), 429, {"Retry-After": str(limited.retry_after)})


async def form_fields(request: Request) -> dict[str, str] | None:
    """The urlencoded form's text fields (the first of each name); None when the body is not a form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type and not await request.body():
        return {}  # no parameters at all: an empty form
    if content_type != "application/x-www-form-urlencoded":
        return None
    form = await request.form()
    return {key: value for key, value in form.multi_items()[::-1] if isinstance(value, str)}


@router.post(
    "/device_authorization",
    responses={200: {"description": "device_code, user_code, verification_uri(_complete), expires_in, interval"},
               400: {"description": "RFC 6749 error JSON"}, 429: {"description": "too many requests"}},
)
async def device_authorization(request: Request) -> JSONResponse:
    """Start a browser sign-in (RFC 8628 §3.1): form fields ``scope`` (optional, space-separated; default: all
    of the approving person's), ``device_name`` (shown to the approver), ``client_id`` (ignored)."""
    fields = await form_fields(request)
    if fields is None:
        return oauth_error("invalid_request", "send the parameters as application/x-www-form-urlencoded")
    ctx = context_of(request)
    ip = request_ip(request)
    scope = fields.get("scope", "").split()

    def start() -> dict[str, Any]:
        # Every request counts against its address: nobody needs more than a few sign-ins a minute.
        limiter_of(request).record_failure(f"device-request:{ip}")
        with ctx.unit_of_work() as uow:
            made = device.request_device_authorization(
                uow, Actor.anonymous(request_context(request)), fields.get("device_name"), scope or None,
                lifetime=timedelta(seconds=ctx.settings.device_code_seconds))
        base = str(request.base_url).rstrip("/")
        return {
            "device_code": made.device_code, "user_code": made.user_code,
            "verification_uri": f"{base}/device",
            "verification_uri_complete": f"{base}/device?user_code={made.user_code}",
            "expires_in": made.expires_in, "interval": made.interval,
        }

    try:
        answer = await run_in_threadpool(start)
    except RateLimited as limited:
        return _rate_limited(limited)
    except InvalidInput as exc:
        return oauth_error("invalid_scope" if exc.field == "scopes" else "invalid_request", exc.detail)
    return JSONResponse(answer, headers=NO_STORE)


def device_code_grant(request: Request, fields: Mapping[str, str]) -> JSONResponse:
    """``grant_type=urn:ietf:params:oauth:grant-type:device_code`` (RFC 8628 §3.4-3.5), run in a thread."""
    device_code = fields.get("device_code", "")
    if not device_code:
        return oauth_error("invalid_request", "device_code is required")
    ctx = context_of(request)
    limiter = limiter_of(request)
    key = ip_key(request_ip(request))
    anonymous = Actor.anonymous(request_context(request))
    try:
        limiter.check_local(key)
        failure: DeviceGrantError | None = None
        with ctx.unit_of_work() as uow:  # committed even when it answers pending: the poll time counts
            try:
                device.poll_device_code(uow, anonymous, device_code)
            except DeviceGrantError as exc:
                if exc.error != "invalid_grant":
                    return oauth_error(exc.error, exc.detail)
                failure = exc
        if failure is not None:  # an unknown device code is a failed authentication, counted per address
            limiter.record_failure(key)
            return oauth_error(failure.error, failure.detail)
        with ctx.unit_of_work() as uow:
            issued = device.redeem_device_code(uow, anonymous, device_code)
            token = issued.token
            answer = {
                "access_token": issued.secret, "token_type": "Bearer",
                "expires_in": None if token.expires_at is None else
                int((token.expires_at - ctx.clock.now()).total_seconds()),
                "scope": " ".join(sorted(t for t in (token.scopes or "").split())) or None,
                "token_id": token.public_id,
            }
    except RateLimited as limited:
        return _rate_limited(limited)
    except DeviceGrantError as exc:
        return oauth_error(exc.error, exc.detail)
    return JSONResponse({k: v for k, v in answer.items() if v is not None}, headers=NO_STORE)
