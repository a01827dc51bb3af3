"""Who am I, and password sign-in that mints a token (how the CLI logs in)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tokensmith.api.auth import Caller, Context
from tokensmith.api.guard import guarded_password
from tokensmith.api.schemas import (
    CreatedTokenOut,
    LoginRequest,
    OrgOut,
    TokenOut,
    UserOut,
    WhoAmI,
    problem_responses,
)

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
    responses=problem_responses(400, 401, 422, 429),
)
def login(body: LoginRequest, ctx: Context, request: Request, response: Response) -> CreatedTokenOut:
    """Exchange a username and password for a new token of that user (429 after repeated failures)."""
    with ctx.services() as s:
        user = guarded_password(request, body.username, lambda: s.accounts.authenticate(body.username, body.password))
        created = s.tokens.create(user, body.name, expiration=body.expiration)
        out = CreatedTokenOut(token=TokenOut.of(created.token, ctx.clock.now()), secret=created.secret)
    response.headers["Cache-Control"] = "no-store"
    return out
