"""Which clusters a new token grants, and the kubeconfig handed out with it at creation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tokensmith.actor import Actor
from tokensmith.clusters.service import ClusterService
from tokensmith.db.models import Cluster
from tokensmith.errors import InvalidInput
from tokensmith.kube import kubeconfig, levels
from tokensmith.kube.tokenreview import SCOPE


def resolve_clusters(
    clusters: ClusterService, actor: Actor, refs: Sequence[str], *, want_kubeconfig: bool,
    scopes: Sequence[str] | None,
) -> list[Cluster]:
    """The caller's organization's clusters named by ``refs`` (ids or names, each optionally ``=LEVEL``),
    each once, in order.

    Raises NotFound for an unknown or other-organization cluster, InvalidInput when a kubeconfig is
    asked for without clusters, or when explicit scopes leave out ``kubernetes`` for a token that
    grants clusters (it could never be used on them). Nothing is written.
    """
    if want_kubeconfig and not refs:
        raise InvalidInput("a kubeconfig needs at least one cluster: list them in clusters", "kubeconfig")
    resolved: dict[int, Cluster] = {}
    for ref in refs:
        cluster = clusters.get(actor, levels.split_ref(ref)[0])
        resolved.setdefault(cluster.id, cluster)
    if resolved and scopes is not None and SCOPE not in {s.strip() for s in scopes}:
        raise InvalidInput(f"a token that grants clusters needs the {SCOPE!r} scope", "scopes")
    return list(resolved.values())


def with_levels(cluster_ids: Sequence[str], choices: Sequence[str]) -> list[str]:
    """The console's form: chosen cluster ids and a ``CLUSTER_ID=LEVEL`` choice for every cluster listed;
    the refs ``resolve_clusters``/``requested_levels`` take (``ID=LEVEL`` for the chosen ones)."""
    chosen_levels = dict(choice.partition("=")[::2] for choice in choices)
    return [f"{c}={chosen_levels[c]}" if chosen_levels.get(c) else c for c in cluster_ids]


def requested_levels(refs: Sequence[str], granted: Sequence[Cluster]) -> dict[int, str]:
    """Cluster id -> the level ``refs`` ask for (``prod=view``); clusters named without one are left out.

    InvalidInput when a level is not one of view, edit, admin, cluster-admin, or when one cluster is
    named twice with different levels.
    """
    asked: dict[int, str] = {}
    for ref in refs:
        name, level = levels.split_ref(ref)
        cluster = next((c for c in granted if name in (c.public_id, c.name)), None)
        if cluster is None or level is None:
            continue
        if asked.setdefault(cluster.id, level) != level:
            raise InvalidInput(f"cluster {cluster.name!r} is named twice with different levels", "clusters")
    return asked


@dataclass(frozen=True)
class IssuedKubeconfig:
    text: str
    filename: str


class NamedToken(Protocol):
    """What a kubeconfig names of its token (a Token row, or a federated exchange's FederatedToken)."""

    @property
    def public_id(self) -> str: ...

    @property
    def name(self) -> str: ...


def issue(token: NamedToken, secret: str, clusters: Sequence[Cluster]) -> IssuedKubeconfig:
    """The kubeconfig for a just-created token, in the order its clusters were asked for."""
    entries = [kubeconfig.ClusterEntry(c.organization.name, c.name, c.server, c.certificate_authority)
               for c in clusters]
    org = clusters[0].organization.name
    config = kubeconfig.build(entries, secret, org, token.public_id)
    return IssuedKubeconfig(kubeconfig.render(config), kubeconfig.filename(token.public_id, token.name))
