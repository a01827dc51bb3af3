"""``/device``: a signed-in person approves or denies a CLI's browser sign-in (RFC 8628).

The page shows what the request asks for before anything is decided: the machine's name (as the
CLI gave it), the address it asked from, the scopes, and when the code expires. Wrong codes are
counted per person and per address (the shared brute-force limits), so codes cannot be guessed.
"""

from __future__ import annotations

import re
from typing import Any, Final

from fastapi import Request, Response

from tokensmith.clientaddress import request_ip
from tokensmith.console.common import (
    Csrf,
    Signed,
    SignInRequired,
    Text,
    actor_of,
    check_csrf,
    context_of,
    redirect,
    render,
    router,
    viewer,
)
from tokensmith.console.sessions import Viewer
from tokensmith.db.models import DeviceAuthorization
from tokensmith.errors import InvalidInput, NotFound
from tokensmith.ratelimit import RateLimited
from tokensmith.usecases import device

# The CLI's link (verification_uri_complete) survives a sign-in: the page to return to is kept in a
# cookie, and only a /device address is ever accepted from it (never an open redirect).
NEXT_COOKIE: Final = "tsm_next"
_NEXT: Final = re.compile(r"/device(\?user_code=[A-Za-z0-9-]{1,20})?")


def next_page(request: Request) -> str | None:
    """Where to go after signing in, if the person came from a device link."""
    value = request.cookies.get(NEXT_COOKIE, "")
    return value if _NEXT.fullmatch(value) else None


def _guess_keys(request: Request, who: Viewer) -> tuple[str, str]:
    return f"device-code:user:{who.user_id}", f"device-code:ip:{request_ip(request)}"


def _shown(found: DeviceAuthorization, user_code: str) -> dict[str, Any]:
    return {
        "user_code": device.format_user_code(user_code.replace("-", "").replace(" ", "").upper()),
        "device_name": found.client_name, "device_ip": found.client_ip or "unknown",
        "scopes": found.scopes.split() if found.scopes else None, "expires_at": found.expires_at,
    }


def _page(request: Request, who: Viewer, status: int = 200, **values: Any) -> Response:
    values.setdefault("asked", None)
    values.setdefault("error", "")
    values.setdefault("decided", "")
    values.setdefault("user_code", "")
    return render(request, "device.html", status, who=who, **values)


def _lookup(request: Request, who: Viewer, user_code: str) -> tuple[DeviceAuthorization | None, Response | None]:
    """The pending request for ``user_code``, or the page to show instead (a wrong or rate-limited code)."""
    ctx = context_of(request)
    limiter = request.app.state.context.limiter
    keys = _guess_keys(request, who)
    try:
        limiter.check_shared(*keys)
        try:
            with ctx.unit_of_work() as uow:
                return device.pending_device_request(uow, actor_of(request, who), user_code), None
        except NotFound as exc:
            limiter.record_failure(*keys)
            return None, _page(request, who, 404, error=exc.detail, user_code=user_code)
    except RateLimited as limited:
        response = _page(request, who, 429, user_code=user_code,
                         error=f"Too many wrong codes. Please try again in {limited.retry_after} seconds.")
        response.headers["Retry-After"] = str(limited.retry_after)
        return None, response


@router.get("/device")
def device_page(request: Request, user_code: str = "") -> Response:
    """Enter a code (or arrive with ?user_code= from the CLI's link) and see what it asks for."""
    try:
        who = viewer(request)
    except SignInRequired:
        back = "/device" + (f"?user_code={user_code.strip()}" if user_code.strip() else "")
        response = redirect("/sign-in")
        if _NEXT.fullmatch(back):
            response.set_cookie(NEXT_COOKIE, back, max_age=900, httponly=True, samesite="lax", path="/",
                                secure=request.url.scheme == "https")
        return response
    if not user_code.strip():
        return _page(request, who)
    found, refusal = _lookup(request, who, user_code)
    if refusal is not None:
        return refusal
    assert found is not None
    return _page(request, who, asked=_shown(found, user_code), user_code=user_code)


@router.post("/device/decision")
def device_decision(request: Request, who: Signed, csrf: Csrf = "", user_code: Text = "",
                    decision: Text = "") -> Response:
    """Approve or deny the request shown; the CLI's next poll learns the answer."""
    check_csrf(request, who, csrf)
    if decision not in ("approve", "deny"):
        return _page(request, who, 422, error="Choose Approve or Deny.", user_code=user_code)
    found, refusal = _lookup(request, who, user_code)
    if refusal is not None:
        return refusal
    ctx = context_of(request)
    try:
        with ctx.unit_of_work() as uow:
            actor = actor_of(request, who)
            if decision == "approve":
                device.approve_device_request(uow, actor, user_code)
            else:
                device.deny_device_request(uow, actor, user_code)
    except (NotFound, InvalidInput) as exc:
        return _page(request, who, exc.status, error=exc.detail, user_code=user_code)
    assert found is not None
    return _page(request, who, decided="approved" if decision == "approve" else "denied",
                 asked=_shown(found, user_code))
