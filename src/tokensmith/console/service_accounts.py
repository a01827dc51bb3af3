"""The Service accounts page (admins): service accounts, their tokens, and the trust policies.

Same operations as ``/v1/service-accounts`` and ``/v1/trust-policies`` (tokensmith.usecases.federation),
so the same authorization and audit. Trust policies are listed here and created over the API or
the CLI (their conditions and JWKS are JSON).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse

from tokensmith.console.common import (
    Csrf,
    Refused,
    Signed,
    Text,
    actor_of,
    check_csrf,
    context_of,
    field_error,
    pop_flash,
    put_flash,
    redirect,
    refusals,
    render,
    require_admin,
    router,
)
from tokensmith.console.sessions import Viewer
from tokensmith.errors import InvalidInput
from tokensmith.usecases import federation
from tokensmith.usecases.tokens import TokenRequest

PAGE = "/service-accounts"


def _page(request: Request, who: Viewer, form: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
          status: int = 200) -> HTMLResponse:
    require_admin(who)
    ctx = context_of(request)
    actor = actor_of(request, who)
    with ctx.unit_of_work() as uow, refusals():
        accounts = [{"id": a.public_id, "name": a.username, "admin": a.is_admin, "disabled": a.disabled,
                     "created_at": a.created_at} for a in federation.list_service_accounts(uow, actor)]
        policies = [{"name": p.name, "account": p.service_account.username, "issuer": p.issuer,
                     "inline": p.jwks is not None, "audience": p.audience, "subject": p.subject or "",
                     "scopes": (p.scopes or "").split(),
                     "role_arn": f"arn:tokensmith:iam::{who.org_name}:role/{p.name}"}
                    for p in federation.list_trust_policies(uow, actor)]
        flash = pop_flash(request, uow.session, who) if form is None else None
    return render(request, "service_accounts.html", status, who=who, accounts=accounts, policies=policies,
                  flash=flash, errors=errors or {}, form=form or {"name": "", "admin": False})


@router.get(PAGE)
def service_accounts_page(request: Request, who: Signed) -> Response:
    return _page(request, who)


@router.post(PAGE)
def create_service_account(request: Request, who: Signed, csrf: Csrf = "", name: Text = "",
                           admin: Text = "") -> Response:
    check_csrf(request, who, csrf)
    require_admin(who)
    form = {"name": name, "admin": bool(admin)}
    try:
        with context_of(request).unit_of_work() as uow, refusals():
            federation.create_service_account(uow, actor_of(request, who), name, admin=bool(admin))
    except InvalidInput as exc:
        return _page(request, who, form, field_error(exc, "name"), 422)
    except Refused as exc:
        if exc.status != 409:
            raise
        return _page(request, who, form, {"name": exc.message}, 409)
    return redirect(PAGE)


@router.post(PAGE + "/{public_id}/disable")
def disable_service_account(request: Request, who: Signed, public_id: str, csrf: Csrf = "",
                            enable: Text = "") -> Response:
    check_csrf(request, who, csrf)
    require_admin(who)
    with context_of(request).unit_of_work() as uow, refusals():
        federation.set_service_account_disabled(uow, actor_of(request, who), public_id, disabled=not enable)
    return redirect(PAGE)


@router.post(PAGE + "/{public_id}/delete")
def delete_service_account(request: Request, who: Signed, public_id: str, csrf: Csrf = "") -> Response:
    check_csrf(request, who, csrf)
    require_admin(who)
    with context_of(request).unit_of_work() as uow, refusals():
        federation.delete_service_account(uow, actor_of(request, who), public_id)
    return redirect(PAGE)


@router.post(PAGE + "/{public_id}/tokens")
def mint_token(request: Request, who: Signed, public_id: str, csrf: Csrf = "", name: Text = "",
               expiration: Text = "30d") -> Response:
    check_csrf(request, who, csrf)
    require_admin(who)
    try:
        with context_of(request).unit_of_work() as uow, refusals():
            issued = federation.issue_service_account_token(uow, actor_of(request, who), public_id,
                                                            TokenRequest(name=name, expiration=expiration or None))
            put_flash(request, uow.session, who, {"kind": "token", "name": issued.token.name,
                                                  "owner": issued.token.user.username, "secret": issued.secret})
    except InvalidInput as exc:
        raise Refused(422, exc.detail) from None
    return redirect(PAGE)
