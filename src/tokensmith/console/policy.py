"""The Policy page: the organization's token expiry policy and its allowance for temporary S3 access keys.

Every member may read it (it explains why a lifetime is refused); only admins may change it. The
rules and their checks live in tokensmith.policy; a change is audited as ``policy.updated``, like
``PUT /v1/org/policy``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse

from tokensmith.console.common import (
    Csrf,
    Signed,
    Text,
    actor_of,
    check_csrf,
    context_of,
    pop_flash,
    put_flash,
    redirect,
    render,
    require_admin,
    router,
)
from tokensmith.console.sessions import Viewer
from tokensmith.errors import InvalidInput
from tokensmith.objectstore.limits import CEILING, MIN_ALLOWANCE, in_words
from tokensmith.policy import ExpiryPolicy, PolicyService
from tokensmith.tokens.expiration import DEFAULT_EXPIRATION, MAX_LIFETIME, PRESETS
from tokensmith.usecases import org

ALLOWANCES = (3600, 86400, 7 * 86400, 14 * 86400, 30 * 86400, 90 * 86400, 180 * 86400, 365 * 86400)


def _choices(values: list[str], current: str) -> list[str]:
    """The offered values, plus the current one when it was set to something else (say, over the API)."""
    return values if current in values else [*values, current]


def _form_of(policy: ExpiryPolicy) -> dict[str, Any]:
    return {"max_lifetime_days": str(policy.max_lifetime_days or ""), "allow_never": policy.allow_never,
            "default_expiration": policy.default_expiration,
            "max_access_key_seconds": str(policy.max_access_key_seconds)}


def _page(request: Request, who: Viewer, form: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
          status: int = 200) -> HTMLResponse:
    ctx = context_of(request)
    with ctx.services() as s:
        policy = PolicyService(s.session, ctx.clock).get(who.org_id)
        flash = pop_flash(request, s.session, who) if form is None else None
    form = form or _form_of(policy)
    allowances = _choices([str(a) for a in ALLOWANCES], form["max_access_key_seconds"])
    return render(
        request, "policy.html", status, who=who, policy=policy, form=form, errors=errors or {}, flash=flash,
        expirations=_choices(list(PRESETS), form["default_expiration"]),
        allowances=[(a, in_words(int(a)) if a.isdigit() else a) for a in allowances],
        access_keys_words=in_words(policy.max_access_key_seconds), max_days=MAX_LIFETIME.days,
        floor_words=in_words(MIN_ALLOWANCE), ceiling_words=in_words(CEILING),
    )


@router.get("/policy")
def policy_page(request: Request, who: Signed) -> Response:
    return _page(request, who)


def _whole_number(text: str, field: str, what: str) -> int:
    if not text.strip().isdigit() or len(text.strip()) > 12:
        raise InvalidInput(f"{what} must be a whole number", field)
    return int(text.strip())


@router.post("/policy")
def save_policy(
    request: Request, who: Signed, csrf: Csrf = "", max_lifetime_days: Text = "", allow_never: Text = "",
    default_expiration: Text = DEFAULT_EXPIRATION, max_access_key_seconds: Text = "",
) -> Response:
    check_csrf(request, who, csrf)
    require_admin(who)
    ctx = context_of(request)
    form = {"max_lifetime_days": max_lifetime_days, "allow_never": bool(allow_never),
            "default_expiration": default_expiration, "max_access_key_seconds": max_access_key_seconds}
    errors: dict[str, str] = {}
    days: int | None = None
    seconds = 0
    try:
        days = _whole_number(max_lifetime_days, "max_lifetime_days", "The maximum lifetime") \
            if max_lifetime_days.strip() else None
    except InvalidInput as exc:
        errors["max_lifetime_days"] = exc.detail
    try:
        seconds = _whole_number(max_access_key_seconds, "max_access_key_seconds", "The access key allowance")
    except InvalidInput as exc:
        errors["max_access_key_seconds"] = exc.detail
    if not errors:
        try:
            with ctx.unit_of_work() as uow:  # the same operation as PUT /v1/org/policy
                org.set_policy(uow, actor_of(request, who),
                               ExpiryPolicy(days, bool(allow_never), default_expiration, seconds))
                put_flash(request, uow.session, who, {
                    "kind": "notice", "text": "The policy was saved. It applies to tokens and access keys created "
                                              "from now on."})
        except InvalidInput as exc:
            message = exc.detail.replace("max_lifetime_days", "the maximum lifetime") \
                .replace("default_expiration", "the default expiration") \
                .replace("max_access_key_seconds", "the access key allowance")
            errors[exc.field or "max_lifetime_days"] = message[:1].upper() + message[1:]
    if errors:
        return _page(request, who, form, errors, 422)
    return redirect("/policy")
