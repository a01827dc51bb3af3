"""Console pages for signing in, tokens, clusters, VPCs and users; ``install`` wires the console into the app.

Thin like the API routes: read the form, call the services, render a template. The plumbing
they share (viewer, CSRF, flash, rendering) lives in ``common``.
"""

from __future__ import annotations

import inspect
import secrets
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokensmith.api.guard import guarded_password, request_ip
from tokensmith.api.middleware import is_console
from tokensmith.console import (
    access_keys,  # noqa: F401 - registers the Access Keys pages on the router
    audit_page,  # noqa: F401 - registers the audit log page on the router
    cluster_webhooks,
    device,  # also registers the device sign-in page (/device) on the router
    exec_kubeconfig,
    policy,  # noqa: F401 - registers the Policy page on the router
    service_accounts,  # noqa: F401 - registers the Service accounts page on the router
    token_lifecycle,
)
from tokensmith.console.common import (
    HERE,
    PRE_COOKIE,
    SESSION_COOKIE,
    Csrf,
    PasswordChangeRequired,
    Refused,
    Signed,
    SignedAny,
    SignInRequired,
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
from tokensmith.console.sessions import SessionService, Viewer, csrf_token, csrf_valid
from tokensmith.db.models import Token
from tokensmith.errors import AuthenticationFailed, InvalidInput, TokensmithError
from tokensmith.kube import access, levels
from tokensmith.objectstore.service import AccessKeyService
from tokensmith.ratelimit import RateLimited
from tokensmith.tokens.expiration import resolve_expiry
from tokensmith.usecases import Actor, RequestContext, auth, tokens
from tokensmith.usecases import clusters as clusters_uc
from tokensmith.usecases import users as users_uc
from tokensmith.usecases.clusters import ClusterRequest
from tokensmith.usecases.tokens import TokenRequest
from tokensmith.validation import clean_name, clean_note

# --- sign-in ---------------------------------------------------------------------------------


def _set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    response.set_cookie(name, value, httponly=True, samesite="lax", secure=request.url.scheme == "https", path="/")


def _sign_in_page(request: Request, status: int = 200, error: str = "", username: str = "") -> HTMLResponse:
    pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "sign_in.html", status, csrf=csrf_token(context_of(request).secret_key, "pre:" + pre),
                      error=error, username=username)
    _set_cookie(request, response, PRE_COOKIE, pre)
    return response


def _wait(limited: RateLimited) -> str:
    seconds = limited.retry_after
    return f"{seconds} seconds" if seconds < 120 else f"{round(seconds / 60)} minutes"


@router.get("/sign-in")
def sign_in_form(request: Request) -> Response:
    return _sign_in_page(request)


@router.post("/sign-in")
async def sign_in(request: Request, csrf: Csrf = "", username: Text = "", password: Text = "") -> Response:
    ctx = context_of(request)
    if not csrf_valid(ctx.secret_key, "pre:" + request.cookies.get(PRE_COOKIE, ""), csrf):
        return _sign_in_page(request, 403, "The sign-in form expired. Please try again.", username)

    anonymous = Actor.anonymous(RequestContext(request_ip(request), request.headers.get("user-agent"), "console"))

    def checked() -> tuple[str, bool]:
        with ctx.unit_of_work() as uow:  # the failure's audit record is committed before it is counted
            signed = auth.sign_in_to_console(uow, anonymous, username, password)
            session_id = SessionService(uow.session, ctx.clock, ctx.secret_key).start(signed.user)
            return session_id, signed.must_change_password

    try:  # the same shared limits as API sign-in: per address and per user name, on every replica
        result = await run_in_threadpool(guarded_password, request, username, checked, "console")
    except RateLimited as limited:
        response: Response = _sign_in_page(
            request, 429, f"Too many failed sign-ins. Please try again in {_wait(limited)}.", username)
        response.headers["Retry-After"] = str(limited.retry_after)
        return response
    except AuthenticationFailed:
        return _sign_in_page(request, 401, "That user name and password do not match.", username)
    session_id, must_change = result
    response = redirect("/account/password" if must_change else device.next_page(request) or "/tokens")
    _set_cookie(request, response, SESSION_COOKIE, session_id)
    response.delete_cookie(PRE_COOKIE, path="/")
    response.delete_cookie(device.NEXT_COOKIE, path="/")
    return response


@router.post("/sign-out")
def sign_out(request: Request, who: SignedAny, csrf: Csrf = "") -> Response:
    check_csrf(request, who, csrf)
    ctx = context_of(request)
    with ctx.services() as s:
        SessionService(s.session, ctx.clock, ctx.secret_key).end(who.session_id)
    response = redirect("/sign-in")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/account/password")
def password_form(request: Request, who: SignedAny) -> Response:
    return render(request, "password.html", who=who, errors={})


@router.post("/account/password")
def change_password(
    request: Request, who: SignedAny, csrf: Csrf = "", current: Text = "", new: Text = "", confirm: Text = "",
) -> Response:
    check_csrf(request, who, csrf)
    ctx = context_of(request)
    errors: dict[str, str] = {}
    if new != confirm:
        errors["confirm"] = "The two new passwords are not the same."
    status = 422
    if not errors:
        def change() -> None:
            with ctx.unit_of_work() as uow:  # the same operation as POST /v1/auth/password
                auth.change_password(uow, actor_of(request, who), current, new, keep_session_digest=SessionService(
                    uow.session, ctx.clock, ctx.secret_key).digest_of(who.session_id))  # other browsers end

        try:  # a stolen session must not guess the current password faster than sign-in could
            guarded_password(request, who.username, change, "console")
        except RateLimited as limited:
            errors["current"] = f"Too many wrong passwords. Please try again in {_wait(limited)}."
            status = 429
        except AuthenticationFailed:
            errors["current"] = "The current password is not right."
        except InvalidInput as exc:
            errors.update(field_error(exc, "new"))
    if errors:
        return render(request, "password.html", status, who=who, errors=errors)
    return redirect("/tokens")


# --- tokens ----------------------------------------------------------------------------------


def _token_row(token: Token, now: datetime) -> dict[str, Any]:
    return {
        "id": token.public_id, "name": token.name, "note": token.note, "hint": token.hint,
        "owner": token.user.username, "created_at": token.created_at, "expires_at": token.expires_at,
        "expired": token.expires_at is not None and now >= token.expires_at,
        "last_used_at": token.last_used_at, "clusters": [c.name for c in token.clusters],
        "cluster_levels": {c.name: token.cluster_levels.get(c.id, levels.DEFAULT_LEVEL) for c in token.clusters},
        "service_account": token.user.kind == "service",
        "federated": f"{token.federated_issuer} {token.federated_subject}" if token.federated_issuer else None,
        **token_lifecycle.row_extras(token, now),
    }


def _tokens_page(
    request: Request, who: Viewer, *, whole_org: bool = False, cursor: str | None = None,
    form: dict[str, Any] | None = None, errors: dict[str, str] | None = None, status: int = 200,
    rotate_error: dict[str, str] | None = None,
) -> HTMLResponse:
    ctx = context_of(request)
    actor = actor_of(request, who)
    with ctx.unit_of_work() as uow, refusals():
        page = tokens.list_tokens(uow, actor, whole_org=whole_org and who.is_admin, cursor=cursor, limit=100)
        rows = [_token_row(t, ctx.clock.now()) for t in page.items]
        # What the delete dialog says: how many permanent S3 access keys each token leaves behind.
        surviving = AccessKeyService(uow.session, ctx.clock, ctx.keyring) \
            .surviving_after_tokens_delete([t.id for t in page.items])
        for row, token in zip(rows, page.items, strict=True):
            row["surviving_keys"] = surviving.get(token.id, 0)
        clusters = [{"id": c.public_id, "name": c.name, "region": c.region,
                     "levels": levels.up_to(levels.owner_ceiling(who.is_admin, c.member_max_level))}
                    for c in tokens.grantable_clusters(uow, actor)]
        lifecycle = token_lifecycle.page_extras(uow, request, who, page.items)
        # The one-time flash is read (and so destroyed) only by a plain page view.
        plain_view = form is None and rotate_error is None
        flash = pop_flash(request, uow.session, who) if plain_view else None
    return render(
        request, "tokens.html", status, who=who, tokens=rows, clusters=clusters, whole_org=whole_org and who.is_admin,
        next_cursor=page.next_cursor, flash=flash, errors=errors or {}, rotate_error=rotate_error, **lifecycle,
        form=form or {"name": "", "note": "", "expiration": lifecycle["default_expiration"], "expires_on": "",
                      "kind": "secret", "clusters": [],
                      "scope_mode": token_lifecycle.ALL_SCOPES, "scopes": []},
    )


def tokens_page_with_error(request: Request, who: Viewer, *, whole_org: bool, rotate_error: dict[str, str]) -> Response:
    """The tokens page with a rotate dialog reopened on its error (422)."""
    return _tokens_page(request, who, whole_org=whole_org, rotate_error=rotate_error, status=422)


@router.get("/")
def home(who: Signed) -> Response:
    return redirect("/tokens")


@router.get("/tokens")
def tokens_page(request: Request, who: Signed, all: bool = False, cursor: str | None = None) -> Response:
    return _tokens_page(request, who, whole_org=all, cursor=cursor)


def _expiry_fields(expiration: str, expires_on: str) -> dict[str, Any]:
    chosen, at = _expiry_input(expiration, expires_on)
    return {"expiration": chosen, "expires_at": at}


_expiry_input = token_lifecycle.expiry_input  # the create, rotate and extend dialogs read expiry alike


@router.post("/tokens")
def create_token(
    request: Request, who: Signed, csrf: Csrf = "", name: Text = "", note: Text = "", expiration: Text = "30d",
    expires_on: Text = "", kind: Text = "secret", clusters: Annotated[list[str], Form()] = [],  # noqa: B006
    scope_mode: Text = token_lifecycle.ALL_SCOPES, scopes: Annotated[list[str], Form()] = [],  # noqa: B006
    cluster_levels: Annotated[list[str], Form(alias="levels")] = [],  # noqa: B006 - "CLUSTER_ID=LEVEL" each
) -> Response:
    check_csrf(request, who, csrf)
    ctx = context_of(request)
    form = {"name": name, "note": note, "expiration": expiration, "expires_on": expires_on, "kind": kind,
            "clusters": clusters, "scope_mode": scope_mode, "scopes": scopes, "levels": cluster_levels}
    refs = access.with_levels(clusters, cluster_levels)  # issue 16: each chosen cluster with its level
    if kind == "exec":  # no token at all: a kubeconfig whose users run the tokensmith CLI
        try:
            return exec_kubeconfig.download(request, who, clusters)
        except InvalidInput as exc:
            return _tokens_page(request, who, form=form, errors=field_error(exc, "clusters"), status=422)
    # Check every field first, so the dialog can mark all wrong fields at once.
    errors: dict[str, str] = {}
    for check in (lambda: clean_name(name), lambda: clean_note(note),
                  lambda: resolve_expiry(ctx.clock.now(), *_expiry_input(expiration, expires_on)),
                  lambda: token_lifecycle.requested_scopes(scope_mode, scopes)):
        try:
            check()
        except InvalidInput as exc:
            errors.update(field_error(exc, "name"))
    if kind not in ("secret", "kubeconfig"):
        errors["kind"] = "Choose Token Secret, Kubeconfig or No secret."
    elif kind == "kubeconfig" and not clusters:
        errors["clusters"] = "Pick at least one cluster for the kubeconfig."
    if errors:
        return _tokens_page(request, who, form=form, errors=errors, status=422)
    wants_kubeconfig = kind == "kubeconfig"
    token_request = TokenRequest(
        name=name, note=note, clusters=refs if wants_kubeconfig else [], kubeconfig=wants_kubeconfig,
        scopes=token_lifecycle.requested_scopes(scope_mode, scopes), **_expiry_fields(expiration, expires_on),
    )
    try:
        with ctx.unit_of_work() as uow:  # the same operation as POST /v1/tokens
            issued = tokens.issue_token(uow, actor_of(request, who), token_request)
            flash: dict[str, Any] = {"kind": "token", "name": issued.token.name, "secret": issued.secret}
            if issued.kubeconfig is not None:
                flash.update(kubeconfig=issued.kubeconfig.text, filename=issued.kubeconfig.filename)
            put_flash(request, uow.session, who, flash)
    except InvalidInput as exc:
        return _tokens_page(request, who, form=form, errors=field_error(exc, "name"), status=422)
    except TokensmithError as exc:  # a cluster that vanished meanwhile, for instance
        return _tokens_page(request, who, form=form, errors={"clusters": exc.detail}, status=exc.status)
    return redirect("/tokens")


@router.post("/tokens/{public_id}/delete")
def delete_token(
    request: Request, who: Signed, public_id: str, csrf: Csrf = "", all: Text = "", revoke_access_keys: Text = "",
) -> Response:
    check_csrf(request, who, csrf)
    ctx = context_of(request)
    with ctx.unit_of_work() as uow, refusals():
        # The same operation as DELETE /v1/tokens/{id}?revoke_access_keys=true: temporary keys always go.
        outcome = tokens.delete_token(uow, actor_of(request, who), public_id,
                                      revoke_access_keys=bool(revoke_access_keys))
        token = outcome.token
        text = f"Token “{token.name}” was deleted; its secret stops working."
        if outcome.revoked_access_keys:
            text += f" Access keys revoked with it: {outcome.revoked_access_keys}."
        if outcome.surviving_access_keys:
            text += f" Permanent access keys it minted that keep working: {outcome.surviving_access_keys}."
        put_flash(request, uow.session, who, {"kind": "notice", "text": text})
    return redirect("/tokens?all=1" if all else "/tokens")


# --- clusters and VPCs -----------------------------------------------------------------------


def _clusters_page(request: Request, who: Viewer, form: dict[str, str] | None = None,
                   errors: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
    ctx = context_of(request)
    with ctx.services() as s:
        clusters = [{"id": c.public_id, "name": c.name, "server": c.server, "region": c.region,
                     "vpc": c.vpc.name if c.vpc else "", "created_at": c.created_at,
                     "username_prefix": c.username_prefix, "member_max_level": c.member_max_level}
                    for c in s.clusters.list(who, limit=200).items]
        vpcs = [v.name for v in s.vpcs.list(who, limit=200).items]
        flash = pop_flash(request, s.session, who) if form is None else None
    return render(request, "clusters.html", status, who=who, clusters=clusters, vpcs=vpcs, errors=errors or {},
                  flash=flash, form=form or {"name": "", "server": "", "certificate_authority": "", "region": "",
                                             "vpc": ""},
                  http_refused=cluster_webhooks.http_refusal(request))


@router.get("/clusters")
def clusters_page(request: Request, who: Signed) -> Response:
    return _clusters_page(request, who)


@router.post("/clusters")
def create_cluster(
    request: Request, who: Signed, csrf: Csrf = "", name: Text = "", server: Text = "",
    certificate_authority: Text = "", region: Text = "", vpc: Text = "",
) -> Response:
    check_csrf(request, who, csrf)
    require_admin(who)
    ctx = context_of(request)
    form = {"name": name, "server": server, "certificate_authority": certificate_authority, "region": region,
            "vpc": vpc}
    try:
        with ctx.unit_of_work() as uow, refusals():
            actor = actor_of(request, who)
            cluster = clusters_uc.create_cluster(
                uow, actor, ClusterRequest(name, server, certificate_authority, region, vpc or None))
            # Its API server needs a webhook credential to ask for TokenReviews: mint one and reveal it once.
            put_flash(request, uow.session, who, cluster_webhooks.first_credential(request, uow, actor, cluster))
    except InvalidInput as exc:
        return _clusters_page(request, who, form, field_error(exc, "name"), 422)
    except Refused as exc:
        if exc.status != 409:
            raise
        return _clusters_page(request, who, form, {"name": exc.message}, 409)
    return redirect("/clusters")


@router.post("/clusters/{public_id}/delete")
def delete_cluster(request: Request, who: Signed, public_id: str, csrf: Csrf = "") -> Response:
    check_csrf(request, who, csrf)
    require_admin(who)
    ctx = context_of(request)
    with ctx.unit_of_work() as uow, refusals():
        clusters_uc.delete_cluster(uow, actor_of(request, who), public_id)
    return redirect("/clusters")


def _vpcs_page(request: Request, who: Viewer, form: dict[str, str] | None = None,
               errors: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
    ctx = context_of(request)
    with ctx.services() as s:
        vpcs = [{"id": v.public_id, "name": v.name, "region": v.region, "cidr": v.cidr, "created_at": v.created_at}
                for v in s.vpcs.list(who, limit=200).items]
    return render(request, "vpcs.html", status, who=who, vpcs=vpcs, errors=errors or {},
                  form=form or {"name": "", "region": "", "cidr": ""})


@router.get("/vpcs")
def vpcs_page(request: Request, who: Signed) -> Response:
    return _vpcs_page(request, who)


@router.post("/vpcs")
def create_vpc(request: Request, who: Signed, csrf: Csrf = "", name: Text = "", region: Text = "",
               cidr: Text = "") -> Response:
    check_csrf(request, who, csrf)
    require_admin(who)
    form = {"name": name, "region": region, "cidr": cidr}
    try:
        with context_of(request).unit_of_work() as uow, refusals():
            clusters_uc.create_vpc(uow, actor_of(request, who), name, region, cidr)
    except InvalidInput as exc:
        return _vpcs_page(request, who, form, field_error(exc, "name"), 422)
    except Refused as exc:
        if exc.status != 409:
            raise
        return _vpcs_page(request, who, form, {"name": exc.message}, 409)
    return redirect("/vpcs")


@router.post("/vpcs/{public_id}/delete")
def delete_vpc(request: Request, who: Signed, public_id: str, csrf: Csrf = "") -> Response:
    check_csrf(request, who, csrf)
    require_admin(who)
    with context_of(request).unit_of_work() as uow, refusals():
        clusters_uc.delete_vpc(uow, actor_of(request, who), public_id)
    return redirect("/vpcs")


# --- users (admins) --------------------------------------------------------------------------


def _users_page(request: Request, who: Viewer, form: dict[str, Any] | None = None,
                errors: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
    require_admin(who)
    ctx = context_of(request)
    with ctx.unit_of_work() as uow, refusals():
        users = [{"id": u.public_id, "username": u.username, "is_admin": u.is_admin, "disabled": u.disabled,
                  "must_change_password": u.must_change_password, "created_at": u.created_at,
                  "is_me": u.id == who.user_id}
                 for u in users_uc.list_users(uow, actor_of(request, who))]
        flash = pop_flash(request, uow.session, who) if form is None else None
    return render(request, "users.html", status, who=who, users=users, errors=errors or {}, flash=flash,
                  form=form or {"username": "", "is_admin": False})


@router.get("/users")
def users_page(request: Request, who: Signed) -> Response:
    return _users_page(request, who)


@router.post("/users")
def create_user(request: Request, who: Signed, csrf: Csrf = "", username: Text = "", password: Text = "",
                is_admin: Text = "") -> Response:
    check_csrf(request, who, csrf)
    require_admin(who)
    ctx = context_of(request)
    form = {"username": username, "is_admin": bool(is_admin)}
    try:
        with ctx.unit_of_work() as uow, refusals():
            users_uc.create_user(uow, actor_of(request, who), username, password, is_admin=bool(is_admin))
    except InvalidInput as exc:
        return _users_page(request, who, form, field_error(exc, "username"), 422)
    except Refused as exc:
        if exc.status != 409:
            raise
        return _users_page(request, who, form, {"username": exc.message}, 409)
    return redirect("/users")


@router.post("/users/{public_id}/disable")
def disable_user(request: Request, who: Signed, public_id: str, csrf: Csrf = "", enable: Text = "") -> Response:
    check_csrf(request, who, csrf)
    require_admin(who)
    ctx = context_of(request)
    try:
        with ctx.unit_of_work() as uow, refusals():
            change = users_uc.enable_user if enable else users_uc.disable_user
            change(uow, actor_of(request, who), public_id)
    except InvalidInput as exc:
        raise Refused(422, exc.detail) from None
    return redirect("/users")


@router.post("/users/{public_id}/reset-password")
def reset_password(request: Request, who: Signed, public_id: str, csrf: Csrf = "") -> Response:
    check_csrf(request, who, csrf)
    require_admin(who)
    ctx = context_of(request)
    with ctx.unit_of_work() as uow, refusals():
        user, password = users_uc.reset_password(uow, actor_of(request, who), public_id)
        put_flash(request, uow.session, who, {"kind": "password", "username": user.username, "password": password})
    return redirect("/users")


# --- wiring ----------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """Serve the console at ``/`` next to the API: pages and static files (headers: api/middleware.py)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.exception_handler(SignInRequired)
    async def to_sign_in(_request: Request, _exc: SignInRequired) -> Response:
        return redirect("/sign-in")

    @app.exception_handler(PasswordChangeRequired)
    async def to_password(_request: Request, _exc: PasswordChangeRequired) -> Response:
        return redirect("/account/password")

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        ctx = context_of(request)
        with ctx.services() as s:
            who = SessionService(s.session, ctx.clock, ctx.secret_key).resume(request.cookies.get(SESSION_COOKIE))
        return render(request, "error.html", exc.status, who=who, message=exc.message)

    api_http_error = app.exception_handlers[StarletteHTTPException]  # problem+json (api/problems.py)

    @app.exception_handler(StarletteHTTPException)
    async def not_found(request: Request, exc: StarletteHTTPException) -> Response:
        # An unknown console URL is a page a person typed or followed: answer with the console's
        # HTML 404. The API (and static files) keep their problem+json.
        path = request.url.path
        if exc.status_code != 404 or not is_console(path) or path.startswith("/static/"):
            answer = api_http_error(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        ctx = context_of(request)
        with ctx.services() as s:
            who = SessionService(s.session, ctx.clock, ctx.secret_key).resume(request.cookies.get(SESSION_COOKIE))
        return render(request, "not_found.html", 404, who=who)
