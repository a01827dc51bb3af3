"""Cluster credentials for kubectl's exec plugin (``tokensmith kube-credential``): parse, call, render.

The CLI's login token asks for a token holding ``kubernetes`` and one cluster, living at most an
hour and tied to the login (revoking the login ends it); the CLI caches it and hands it to kubectl.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response

from tokensmith.api.auth import Context, acting
from tokensmith.api.routes.tokens import created_out
from tokensmith.api.schemas import CreatedTokenOut, problem_responses
from tokensmith.usecases import Actor, tokens

router = APIRouter(prefix="/v1/clusters", tags=["kubernetes"])


@router.post(
    "/{cluster}/kube-credential", status_code=201, response_model=CreatedTokenOut,
    responses=problem_responses(401, 403, 404, 422),
)
def issue_cluster_credential(
    cluster: str, caller: Annotated[Actor, acting(tokens.issue_cluster_credential)], ctx: Context, response: Response,
) -> CreatedTokenOut:
    """A token for this cluster only (scope ``kubernetes``), living at most 1 hour, tied to the calling token.

    Revoking the calling token (or disabling its owner) refuses this one at once. What kubectl's
    exec plugin, ``tokensmith kube-credential --cluster NAME``, asks for.
    """
    with ctx.unit_of_work() as uow:
        out = created_out(tokens.issue_cluster_credential(uow, caller, cluster), ctx)
    response.headers["Cache-Control"] = "no-store"
    return out
