"""Clusters and VPCs: admins create and delete, members read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from tokensmith.api.auth import Context, acting
from tokensmith.api.schemas import (
    ClusterCreate,
    ClusterOut,
    ClusterUpdate,
    Page,
    VpcCreate,
    VpcOut,
    problem_responses,
)
from tokensmith.usecases import Actor
from tokensmith.usecases import clusters as uc
from tokensmith.usecases.clusters import ClusterChange, ClusterRequest

clusters = APIRouter(prefix="/v1/clusters", tags=["clusters"], responses=problem_responses(401, 403))
vpcs = APIRouter(prefix="/v1/vpcs", tags=["vpcs"], responses=problem_responses(401, 403))
Limit = Annotated[int, Query(ge=1, le=200)]


@clusters.post("", status_code=201, response_model=ClusterOut, responses=problem_responses(400, 403, 404, 409, 422))
def create_cluster(
    body: ClusterCreate, caller: Annotated[Actor, acting(uc.create_cluster)], ctx: Context
) -> ClusterOut:
    request = ClusterRequest(body.name, body.server, body.certificate_authority, body.region, body.vpc,
                             body.audience, username_prefix=body.username_prefix,
                             member_max_level=body.member_max_level)
    with ctx.unit_of_work() as uow:
        return ClusterOut.of(uc.create_cluster(uow, caller, request))


@clusters.get("", response_model=Page[ClusterOut], responses=problem_responses(422))
def list_clusters(
    caller: Annotated[Actor, acting(uc.list_clusters)], ctx: Context, cursor: str | None = None, limit: Limit = 50
) -> Page[ClusterOut]:
    with ctx.unit_of_work() as uow:
        page = uc.list_clusters(uow, caller, cursor, limit)
        return Page[ClusterOut](items=[ClusterOut.of(c) for c in page.items], next_cursor=page.next_cursor)


@clusters.get("/{cluster}", response_model=ClusterOut, responses=problem_responses(404))
def get_cluster(cluster: str, caller: Annotated[Actor, acting(uc.get_cluster)], ctx: Context) -> ClusterOut:
    with ctx.unit_of_work() as uow:
        return ClusterOut.of(uc.get_cluster(uow, caller, cluster))


@clusters.patch("/{cluster}", response_model=ClusterOut, responses=problem_responses(400, 404, 422))
def update_cluster(
    cluster: str, body: ClusterUpdate, caller: Annotated[Actor, acting(uc.update_cluster)], ctx: Context,
) -> ClusterOut:
    """Change a cluster's TokenReview audience, user-name prefix or member level ceiling (only the fields sent);
    its webhook credentials and granted tokens stay."""
    change = ClusterChange(audience=body.audience, audience_given="audience" in body.model_fields_set,
                           username_prefix=body.username_prefix, member_max_level=body.member_max_level)
    with ctx.unit_of_work() as uow:
        return ClusterOut.of(uc.update_cluster(uow, caller, cluster, change))


@clusters.delete("/{cluster}", status_code=204, responses=problem_responses(403, 404))
def delete_cluster(cluster: str, caller: Annotated[Actor, acting(uc.delete_cluster)], ctx: Context) -> Response:
    with ctx.unit_of_work() as uow:
        uc.delete_cluster(uow, caller, cluster)
    return Response(status_code=204)


@vpcs.post("", status_code=201, response_model=VpcOut, responses=problem_responses(400, 403, 409, 422))
def create_vpc(body: VpcCreate, caller: Annotated[Actor, acting(uc.create_vpc)], ctx: Context) -> VpcOut:
    with ctx.unit_of_work() as uow:
        return VpcOut.of(uc.create_vpc(uow, caller, body.name, body.region, body.cidr))


@vpcs.get("", response_model=Page[VpcOut], responses=problem_responses(422))
def list_vpcs(
    caller: Annotated[Actor, acting(uc.list_vpcs)], ctx: Context, cursor: str | None = None, limit: Limit = 50
) -> Page[VpcOut]:
    with ctx.unit_of_work() as uow:
        page = uc.list_vpcs(uow, caller, cursor, limit)
        return Page[VpcOut](items=[VpcOut.of(v) for v in page.items], next_cursor=page.next_cursor)


@vpcs.get("/{vpc}", response_model=VpcOut, responses=problem_responses(404))
def get_vpc(vpc: str, caller: Annotated[Actor, acting(uc.get_vpc)], ctx: Context) -> VpcOut:
    with ctx.unit_of_work() as uow:
        return VpcOut.of(uc.get_vpc(uow, caller, vpc))


@vpcs.delete("/{vpc}", status_code=204, responses=problem_responses(403, 404))
def delete_vpc(vpc: str, caller: Annotated[Actor, acting(uc.delete_vpc)], ctx: Context) -> Response:
    with ctx.unit_of_work() as uow:
        uc.delete_vpc(uow, caller, vpc)
    return Response(status_code=204)
