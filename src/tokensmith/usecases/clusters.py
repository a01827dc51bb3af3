"""Clusters, their webhook credentials, and VPCs: admins change them, members read them."""

from __future__ import annotations

from dataclasses import dataclass

from tokensmith.db.models import Cluster, Vpc, WebhookCredential
from tokensmith.errors import InvalidInput
from tokensmith.kube.webhooks import MintedCredential, WebhookCredentialService
from tokensmith.pagination import DEFAULT_LIMIT, Page
from tokensmith.usecases.actor import Actor
from tokensmith.usecases.base import UnitOfWork, operation


@dataclass(frozen=True)
class ClusterRequest:
    name: str
    server: str
    certificate_authority: str
    region: str
    vpc: str | None = None
    audience: str | None = None
    username_prefix: str | None = None  # None: the default for new clusters (tokensmith:)
    member_max_level: str | None = None  # None: edit


@dataclass(frozen=True)
class ClusterChange:
    """What an admin changes on a cluster; None (and audience_given False) leave a field as it is."""

    audience: str | None = None
    audience_given: bool = False
    username_prefix: str | None = None
    member_max_level: str | None = None


@operation("clusters:write", audit="cluster.created")
def create_cluster(uow: UnitOfWork, actor: Actor, request: ClusterRequest) -> Cluster:
    """Register a cluster. Raises Conflict (a taken name), InvalidInput, NotFound (an unknown VPC)."""
    cluster = uow.clusters.create(actor, request.name, request.server, request.certificate_authority,
                                  request.region, request.vpc, request.audience,
                                  username_prefix=request.username_prefix, member_max_level=request.member_max_level)
    uow.record(actor, "cluster.created", target=cluster.public_id,
               details={"name": cluster.name, "server": cluster.server})
    return cluster


@operation("clusters:write", audit="cluster.updated")
def update_cluster(uow: UnitOfWork, actor: Actor, cluster: str, change: ClusterChange) -> Cluster:
    """Change a cluster's TokenReview audience, user-name prefix or member level ceiling.

    Raises InvalidInput when nothing is asked for or a value is bad, NotFound for an unknown cluster.
    """
    if not (change.audience_given or change.username_prefix is not None or change.member_max_level is not None):
        raise InvalidInput("send at least one of audience, username_prefix, member_max_level")
    changed = uow.clusters.get(actor, cluster)
    if change.audience_given:
        changed = uow.clusters.set_audience(actor, cluster, change.audience)
    if change.username_prefix is not None or change.member_max_level is not None:
        changed = uow.clusters.set_access(actor, cluster, username_prefix=change.username_prefix,
                                          member_max_level=change.member_max_level)
    uow.record(actor, "cluster.updated", target=changed.public_id,
               details={"audience": changed.token_audience, "username_prefix": changed.username_prefix,
                        "member_max_level": changed.member_max_level})
    return changed


@operation("clusters:write", audit="cluster.deleted")
def delete_cluster(uow: UnitOfWork, actor: Actor, cluster: str) -> Cluster:
    deleted = uow.clusters.delete(actor, cluster)
    uow.record(actor, "cluster.deleted", target=deleted.public_id, details={"name": deleted.name})
    return deleted


@operation("clusters:read")
def list_clusters(uow: UnitOfWork, actor: Actor, cursor: str | None = None,
                  limit: int = DEFAULT_LIMIT) -> Page[Cluster]:
    return uow.clusters.list(actor, cursor, limit)


@operation("clusters:read")
def get_cluster(uow: UnitOfWork, actor: Actor, cluster: str) -> Cluster:
    return uow.clusters.get(actor, cluster)


def _credentials(uow: UnitOfWork) -> WebhookCredentialService:
    return WebhookCredentialService(uow.session, uow.clock, uow.secret_key)


@dataclass(frozen=True)
class MintedForCluster:
    cluster: Cluster
    minted: MintedCredential


@operation("clusters:write", audit="webhook_credential.created", manages_credentials=True)
def mint_webhook_credential(uow: UnitOfWork, actor: Actor, cluster: str) -> MintedForCluster:
    """A new credential for a cluster's API server (shown once); the others keep working."""
    target = uow.clusters.get(actor, cluster)
    minted = _credentials(uow).mint(target)
    uow.record(actor, "webhook_credential.created", target=minted.credential.public_id,
               details={"cluster": target.public_id})
    return MintedForCluster(target, minted)


@operation("clusters:write")
def list_webhook_credentials(uow: UnitOfWork, actor: Actor, cluster: str) -> list[WebhookCredential]:
    return _credentials(uow).list(uow.clusters.get(actor, cluster))


@operation("clusters:write", audit="webhook_credential.revoked", manages_credentials=True)
def revoke_webhook_credential(uow: UnitOfWork, actor: Actor, cluster: str, credential: str) -> WebhookCredential:
    target = uow.clusters.get(actor, cluster)
    revoked = _credentials(uow).revoke(target, credential)
    uow.record(actor, "webhook_credential.revoked", target=revoked.public_id, details={"cluster": target.public_id})
    return revoked


@operation("vpcs:write", audit="vpc.created")
def create_vpc(uow: UnitOfWork, actor: Actor, name: str, region: str, cidr: str) -> Vpc:
    vpc = uow.vpcs.create(actor, name, region, cidr)
    uow.record(actor, "vpc.created", target=vpc.public_id, details={"name": vpc.name, "cidr": vpc.cidr})
    return vpc


@operation("vpcs:write", audit="vpc.deleted")
def delete_vpc(uow: UnitOfWork, actor: Actor, vpc: str) -> Vpc:
    found = uow.vpcs.get(actor, vpc)
    uow.vpcs.delete(actor, vpc)
    uow.record(actor, "vpc.deleted", target=found.public_id, details={"name": found.name})
    return found


@operation("vpcs:read")
def list_vpcs(uow: UnitOfWork, actor: Actor, cursor: str | None = None, limit: int = DEFAULT_LIMIT) -> Page[Vpc]:
    return uow.vpcs.list(actor, cursor, limit)


@operation("vpcs:read")
def get_vpc(uow: UnitOfWork, actor: Actor, vpc: str) -> Vpc:
    return uow.vpcs.get(actor, vpc)
