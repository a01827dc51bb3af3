"""Token routes: parse, call the use case, render."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from tokensmith.api.auth import Context, acting
from tokensmith.api.schemas import CreatedTokenOut, Page, TokenCreate, TokenOut, problem_responses
from tokensmith.usecases import Actor, tokens
from tokensmith.usecases.tokens import IssuedToken, TokenRequest

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], responses=problem_responses(401, 403))


def created_out(issued: IssuedToken, ctx: Context) -> CreatedTokenOut:
    """The one response that carries a new secret (and the kubeconfig, when asked for)."""
    out = CreatedTokenOut(token=TokenOut.of(issued.token, ctx.clock.now()), secret=issued.secret)
    if issued.kubeconfig is not None:
        out.kubeconfig, out.kubeconfig_filename = issued.kubeconfig.text, issued.kubeconfig.filename
    return out


@router.post("", status_code=201, response_model=CreatedTokenOut, responses=problem_responses(400, 404, 422))
def create_token(
    body: TokenCreate, caller: Annotated[Actor, acting(tokens.issue_token)], ctx: Context, response: Response,
) -> CreatedTokenOut:
    """Create a token for the caller, holding at most what the calling token holds.

    The response is the only one that ever carries the secret.
    """
    request = TokenRequest(name=body.name, note=body.note, expiration=body.expiration, expires_at=body.expires_at,
                           clusters=body.clusters, scopes=body.scopes, kubeconfig=body.kubeconfig)
    with ctx.unit_of_work() as uow:
        out = created_out(tokens.issue_token(uow, caller, request), ctx)
    response.headers["Cache-Control"] = "no-store"
    return out


@router.get("", response_model=Page[TokenOut], responses=problem_responses(403, 404, 422))
def list_tokens(
    caller: Annotated[Actor, acting(tokens.list_tokens)],
    ctx: Context,
    user: Annotated[str | None, Query(description="Admins: a user's id or name.")] = None,
    all: Annotated[bool, Query(description="Admins: the whole organization's tokens.")] = False,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[TokenOut]:
    """The caller's live tokens, newest first."""
    with ctx.unit_of_work() as uow:
        page = tokens.list_tokens(uow, caller, user=user, whole_org=all, cursor=cursor, limit=limit)
        now = ctx.clock.now()
        return Page[TokenOut](items=[TokenOut.of(t, now) for t in page.items], next_cursor=page.next_cursor)


@router.get("/{token_id}", response_model=TokenOut, responses=problem_responses(404))
def get_token(token_id: str, caller: Annotated[Actor, acting(tokens.get_token)], ctx: Context) -> TokenOut:
    with ctx.unit_of_work() as uow:
        return TokenOut.of(tokens.get_token(uow, caller, token_id), ctx.clock.now())


SURVIVING_KEYS_HEADER = "Tokensmith-Surviving-Access-Keys"


@router.delete("/{token_id}", status_code=204, responses=problem_responses(404))
def delete_token(
    token_id: str,
    caller: Annotated[Actor, acting(tokens.delete_token)],
    ctx: Context,
    revoke_access_keys: Annotated[
        bool, Query(description="Also revoke the permanent S3 access keys this token minted.")
    ] = False,
) -> Response:
    """Revoke a token: its secret is refused from the very next request on.

    The temporary S3 access keys it minted are revoked with it. The response header
    Tokensmith-Surviving-Access-Keys says how many permanent keys it minted are still live.
    """
    with ctx.unit_of_work() as uow:
        outcome = tokens.delete_token(uow, caller, token_id, revoke_access_keys=revoke_access_keys)
    return Response(status_code=204, headers={SURVIVING_KEYS_HEADER: str(outcome.surviving_access_keys)})
