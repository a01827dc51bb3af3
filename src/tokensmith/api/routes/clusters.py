"""Clusters and VPCs: admins create and delete, members read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from tokensmith import audit
from tokensmith.api.auth import Context, requires
from tokensmith.api.schemas import (
    ClusterCreate,
    ClusterOut,
    ClusterUpdate,
    Page,
    VpcCreate,
    VpcOut,
    problem_responses,
)
from tokensmith.errors import InvalidInput
from tokensmith.verify.core import Identity

clusters = APIRouter(prefix="/v1/clusters", tags=["clusters"], responses=problem_responses(401, 403))
vpcs = APIRouter(prefix="/v1/vpcs", tags=["vpcs"], responses=problem_responses(401, 403))
Limit = Annotated[int, Query(ge=1, le=200)]
ClusterReader = Annotated[Identity, requires("clusters:read")]
ClusterWriter = Annotated[Identity, requires("clusters:write")]
VpcReader = Annotated[Identity, requires("vpcs:read")]
VpcWriter = Annotated[Identity, requires("vpcs:write")]


@clusters.post("", status_code=201, response_model=ClusterOut, responses=problem_responses(400, 403, 404, 409, 422))
def create_cluster(body: ClusterCreate, caller: ClusterWriter, ctx: Context, request: Request) -> ClusterOut:
    with ctx.services() as s:
        cluster = s.clusters.create(
            caller, body.name, body.server, body.certificate_authority, body.region, body.vpc, body.audience,
            username_prefix=body.username_prefix, member_max_level=body.member_max_level,
        )
        audit.record_request(s.session, request, "cluster.created", target=cluster.public_id,
                             details={"name": cluster.name, "server": cluster.server})
        return ClusterOut.of(cluster)


@clusters.get("", response_model=Page[ClusterOut], responses=problem_responses(422))
def list_clusters(
    caller: ClusterReader, ctx: Context, cursor: str | None = None, limit: Limit = 50
) -> Page[ClusterOut]:
    with ctx.services() as s:
        page = s.clusters.list(caller, cursor, limit)
        return Page[ClusterOut](items=[ClusterOut.of(c) for c in page.items], next_cursor=page.next_cursor)


@clusters.get("/{cluster}", response_model=ClusterOut, responses=problem_responses(404))
def get_cluster(cluster: str, caller: ClusterReader, ctx: Context) -> ClusterOut:
    with ctx.services() as s:
        return ClusterOut.of(s.clusters.get(caller, cluster))


@clusters.patch("/{cluster}", response_model=ClusterOut, responses=problem_responses(400, 404, 422))
def update_cluster(
    cluster: str, body: ClusterUpdate, caller: ClusterWriter, ctx: Context, request: Request
) -> ClusterOut:
    """Change a cluster's TokenReview audience, user-name prefix or member level ceiling (only the fields sent);
    its webhook credentials and granted tokens stay."""
    if not body.model_fields_set:
        raise InvalidInput("send at least one of audience, username_prefix, member_max_level")
    with ctx.services() as s:
        changed = s.clusters.get(caller, cluster)
        if "audience" in body.model_fields_set:
            changed = s.clusters.set_audience(caller, cluster, body.audience)
        if body.username_prefix is not None or body.member_max_level is not None:  # issue 16
            changed = s.clusters.set_access(caller, cluster, username_prefix=body.username_prefix,
                                            member_max_level=body.member_max_level)
        audit.record_request(s.session, request, "cluster.updated", target=changed.public_id,
                             details={"audience": changed.token_audience, "username_prefix": changed.username_prefix,
                                      "member_max_level": changed.member_max_level})
        return ClusterOut.of(changed)


@clusters.delete("/{cluster}", status_code=204, responses=problem_responses(403, 404))
def delete_cluster(cluster: str, caller: ClusterWriter, ctx: Context, request: Request) -> Response:
    with ctx.services() as s:
        deleted = s.clusters.delete(caller, cluster)
        audit.record_request(s.session, request, "cluster.deleted", target=deleted.public_id,
                             details={"name": deleted.name})
    return Response(status_code=204)


@vpcs.post("", status_code=201, response_model=VpcOut, responses=problem_responses(400, 403, 409, 422))
def create_vpc(body: VpcCreate, caller: VpcWriter, ctx: Context) -> VpcOut:
    with ctx.services() as s:
        return VpcOut.of(s.vpcs.create(caller, body.name, body.region, body.cidr))


@vpcs.get("", response_model=Page[VpcOut], responses=problem_responses(422))
def list_vpcs(caller: VpcReader, ctx: Context, cursor: str | None = None, limit: Limit = 50) -> Page[VpcOut]:
    with ctx.services() as s:
        page = s.vpcs.list(caller, cursor, limit)
        return Page[VpcOut](items=[VpcOut.of(v) for v in page.items], next_cursor=page.next_cursor)


@vpcs.get("/{vpc}", response_model=VpcOut, responses=problem_responses(404))
def get_vpc(vpc: str, caller: VpcReader, ctx: Context) -> VpcOut:
    with ctx.services() as s:
        return VpcOut.of(s.vpcs.get(caller, vpc))


@vpcs.delete("/{vpc}", status_code=204, responses=problem_responses(403, 404))
def delete_vpc(vpc: str, caller: VpcWriter, ctx: Context) -> Response:
    with ctx.services() as s:
        s.vpcs.delete(caller, vpc)
    return Response(status_code=204)
