"""Who am I, and password sign-in that mints a token (how the CLI logs in)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tokensmith.api.auth import CallerActor, Context, request_context
from tokensmith.api.fastpath import WHOAMI_PATH, encode_json, json_answer
from tokensmith.api.guard import guarded_password
from tokensmith.api.routes.tokens import created_out
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
from tokensmith.usecases import Actor, auth, tokens

router = APIRouter(prefix="/v1", tags=["identity"])


@router.get(WHOAMI_PATH.removeprefix("/v1"), response_model=WhoAmI, responses=problem_responses(401))
def whoami(caller: CallerActor, ctx: Context, request: Request) -> WhoAmI:
    """The user, organization and token behind the bearer secret."""
    identity = request.state.identity
    with ctx.unit_of_work() as uow:
        token = tokens.own_token(uow, caller)
        out = WhoAmI(
            user=UserOut(id=identity.user_public_id, username=identity.username, is_admin=identity.is_admin,
                         kind=token.user.kind),
            organization=OrgOut(id=identity.org_public_id, name=identity.org_name),
            token=TokenOut.of(token, ctx.clock.now()),
        )
    # The fast path answers this identity's next calls with this answer while it stays cached (any
    # change to the token, its user or its clusters drops it); last_used_at is minute-precise anyway.
    identity.wire[WHOAMI_PATH] = json_answer(encode_json(out.model_dump(mode="json")))
    return out


@router.post(
    "/auth/token", status_code=201, response_model=CreatedTokenOut, tags=["tokens"],
    responses=problem_responses(400, 401, 403, 422, 429),
)
def login(body: LoginRequest, ctx: Context, request: Request, response: Response) -> CreatedTokenOut:
    """Exchange a username and password for a new token of that user (429 after repeated failures)."""
    anonymous = Actor.anonymous(request_context(request))

    def sign_in() -> CreatedTokenOut:
        with ctx.unit_of_work() as uow:
            return created_out(auth.sign_in_with_password(
                uow, anonymous, body.username, body.password, token_name=body.name, expiration=body.expiration,
            ), ctx)

    out = guarded_password(request, body.username, sign_in)
    response.headers["Cache-Control"] = "no-store"
    return out


@router.post("/auth/password", status_code=204, responses=problem_responses(400, 401, 422, 429))
def change_password(body: PasswordChange, ctx: Context, request: Request) -> Response:
    """Change a password with the current one (the way out of "must change password" without a browser).

    Limited like sign-in; every console session of the user ends.
    """
    anonymous = Actor.anonymous(request_context(request))

    def change() -> None:
        with ctx.unit_of_work() as uow:  # the same operation as the console's password form
            auth.change_password(uow, anonymous, body.password, body.new_password, username=body.username)

    guarded_password(request, body.username, change)
    return Response(status_code=204)
