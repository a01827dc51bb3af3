"""Token routes: thin wrappers that call TokenService."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from tokensmith import audit
from tokensmith.api.auth import Context, requires
from tokensmith.api.schemas import CreatedTokenOut, Page, TokenCreate, TokenOut, problem_responses
from tokensmith.kube import access
from tokensmith.verify.core import Identity

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], responses=problem_responses(401, 403))
Reader = Annotated[Identity, requires("tokens:read")]
Writer = Annotated[Identity, requires("tokens:write")]


@router.post("", status_code=201, response_model=CreatedTokenOut, responses=problem_responses(400, 404, 422))
def create_token(
    body: TokenCreate, caller: Writer, ctx: Context, response: Response, request: Request
) -> CreatedTokenOut:
    """Create a token for the caller. The response is the only one that ever carries the secret."""
    with ctx.services() as s:
        owner = s.accounts.get_user_in_org(caller.org_id, caller.user_public_id)
        granted = access.resolve_clusters(
            s.clusters, caller, body.clusters, want_kubeconfig=body.kubeconfig, scopes=body.scopes
        )
        created = s.tokens.create(
            owner, body.name, body.note, body.expiration, body.expires_at, clusters=granted, scopes=body.scopes,
            cluster_levels=access.requested_levels(body.clusters, granted),  # issue 16: "prod=view"
        )
        audit.record_request(s.session, request, "token.created", target=created.token.public_id,
                             details={"name": created.token.name})
        out = CreatedTokenOut(token=TokenOut.of(created.token, ctx.clock.now()), secret=created.secret)
        if body.kubeconfig:
            issued = access.issue(created.token, created.secret, granted)
            out.kubeconfig, out.kubeconfig_filename = issued.text, issued.filename
            audit.record_request(s.session, request, "kubeconfig.issued", target=created.token.public_id,
                                 details={"clusters": [c.public_id for c in granted]})
    response.headers["Cache-Control"] = "no-store"
    return out


@router.get("", response_model=Page[TokenOut], responses=problem_responses(403, 404, 422))
def list_tokens(
    caller: Reader,
    ctx: Context,
    user: Annotated[str | None, Query(description="Admins: a user's id or name.")] = None,
    all: Annotated[bool, Query(description="Admins: the whole organization's tokens.")] = False,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[TokenOut]:
    """The caller's live tokens, newest first."""
    with ctx.services() as s:
        page = s.tokens.list(caller, user=user, whole_org=all, cursor=cursor, limit=limit)
        now = ctx.clock.now()
        return Page[TokenOut](items=[TokenOut.of(t, now) for t in page.items], next_cursor=page.next_cursor)


@router.get("/{token_id}", response_model=TokenOut, responses=problem_responses(404))
def get_token(token_id: str, caller: Reader, ctx: Context) -> TokenOut:
    with ctx.services() as s:
        return TokenOut.of(s.tokens.get(caller, token_id), ctx.clock.now())


SURVIVING_KEYS_HEADER = "Tokensmith-Surviving-Access-Keys"


@router.delete("/{token_id}", status_code=204, responses=problem_responses(404))
def delete_token(
    token_id: str,
    caller: Writer,
    ctx: Context,
    request: Request,
    revoke_access_keys: Annotated[
        bool, Query(description="Also revoke the permanent S3 access keys this token minted.")
    ] = False,
) -> Response:
    """Revoke a token: its secret is refused from the very next request on.

    The temporary S3 access keys it minted are revoked with it. The response header
    Tokensmith-Surviving-Access-Keys says how many permanent keys it minted are still live.
    """
    with ctx.services() as s:
        outcome = s.tokens.revoke_with_report(caller, token_id, revoke_access_keys=revoke_access_keys)
        audit.record_request(s.session, request, "token.deleted", target=outcome.token.public_id,
                             details={"name": outcome.token.name, "access_keys_revoked": outcome.revoked_access_keys})
    return Response(status_code=204, headers={SURVIVING_KEYS_HEADER: str(outcome.surviving_access_keys)})
