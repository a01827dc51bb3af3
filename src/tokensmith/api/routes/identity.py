"""Who am I, and password sign-in that mints a token (how the CLI logs in)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tokensmith import audit
from tokensmith.api.auth import Caller, Context
from tokensmith.api.guard import guarded_password
from tokensmith.api.schemas import (
    CreatedTokenOut,
    LoginRequest,
    OrgOut,
    PasswordChange,
    TokenOut,
    UserOut,
    WhoAmI,
    problem_responses,
)
from tokensmith.errors import AuthenticationFailed, InvalidInput

router = APIRouter(prefix="/v1", tags=["identity"])


@router.get("/whoami", response_model=WhoAmI, responses=problem_responses(401))
def whoami(caller: Caller, ctx: Context) -> WhoAmI:
    """The user, organization and token behind the bearer secret."""
    with ctx.services() as s:
        token = s.tokens.get(caller, caller.token_public_id)
        return WhoAmI(
            user=UserOut(id=caller.user_public_id, username=caller.username, is_admin=caller.is_admin),
            organization=OrgOut(id=caller.org_public_id, name=caller.org_name),
            token=TokenOut.of(token, ctx.clock.now()),
        )


@router.post(
    "/auth/token", status_code=201, response_model=CreatedTokenOut, tags=["tokens"],
    responses=problem_responses(400, 401, 403, 422, 429),
)
def login(body: LoginRequest, ctx: Context, request: Request, response: Response) -> CreatedTokenOut:
    """Exchange a username and password for a new token of that user (429 after repeated failures)."""
    try:
        with ctx.services() as s:
            user = guarded_password(
                request, body.username, lambda: s.accounts.authenticate_for_token(body.username, body.password)
            )
    except AuthenticationFailed:
        with ctx.services() as s:  # its own transaction: the failed one was rolled back
            known = s.accounts.find_user(body.username)
            audit.record_request(s.session, request, "auth.sign_in", outcome=audit.FAILURE,
                                 actor_user=audit.typed_username(known), org_id=known.org_id if known else None)
        raise
    with ctx.services() as s:
        user = s.accounts.get_user_in_org(user.org_id, user.public_id)
        created = s.tokens.create(user, body.name, expiration=body.expiration)
        audit.record_request(s.session, request, "auth.sign_in", actor_user=user.username, org_id=user.org_id,
                             target=created.token.public_id)
        out = CreatedTokenOut(token=TokenOut.of(created.token, ctx.clock.now()), secret=created.secret)
    response.headers["Cache-Control"] = "no-store"
    return out


@router.post("/auth/password", status_code=204, responses=problem_responses(400, 401, 422, 429))
def change_password(body: PasswordChange, ctx: Context, request: Request) -> Response:
    """Change a password with the current one (the way out of "must change password" without a browser).

    Limited like sign-in; every console session of the user ends.
    """
    if body.new_password == body.password:
        raise InvalidInput("new_password must differ from the current password", "new_password")

    def check() -> None:
        with ctx.services() as s:
            user = s.accounts.authenticate(body.username, body.password)
            s.accounts.set_password(user, body.new_password)
            audit.record_request(s.session, request, "user.password_changed", actor_user=user.username,
                                 org_id=user.org_id, target=user.public_id)

    guarded_password(request, body.username, check)
    return Response(status_code=204)
