"""Cluster access levels: what a token may do on a cluster, mapped onto Kubernetes' built-in roles.

A token's grant for a cluster carries one level, lowest to highest: ``view``, ``edit``, ``admin``,
``cluster-admin``. The TokenReview answer puts the token's user in the group ``tokensmith:<level>``;
``tokensmith admin cluster rbac`` prints the ClusterRoleBindings of those groups to the built-in
roles of the same names, and the optional authorization webhook (kube/authz.py) enforces the level
even when a bigger role is bound to the user name.

Who may give what: admins up to ``cluster-admin``; members up to the cluster's ``member_max_level``
(``edit`` unless an admin raises it). With no level asked for, a new grant is ``view``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import yaml

from tokensmith.errors import InvalidInput

LEVELS: Final[tuple[str, ...]] = ("view", "edit", "admin", "cluster-admin")
DEFAULT_LEVEL: Final = "view"
MEMBER_MAX_DEFAULT: Final = "edit"
ADMIN_MAX: Final = "cluster-admin"
GROUP_PREFIX: Final = "tokensmith:"


def check(level: str, field: str = "level") -> str:
    """``level`` if it is one of LEVELS; InvalidInput naming the choices otherwise."""
    if level not in LEVELS:
        raise InvalidInput(f"{level!r} is not an access level; use one of {', '.join(LEVELS)}", field)
    return level


def rank(level: str) -> int:
    return LEVELS.index(level)


def lower(a: str, b: str) -> str:
    return a if rank(a) <= rank(b) else b


def up_to(ceiling: str) -> tuple[str, ...]:
    """The levels from view up to ``ceiling``: what an owner may choose."""
    return LEVELS[: rank(ceiling) + 1]


def group(level: str) -> str:
    """The Kubernetes group a TokenReview answer puts a token of ``level`` in."""
    return f"{GROUP_PREFIX}{level}"


def split_ref(ref: str) -> tuple[str, str | None]:
    """``"prod=view"`` -> ("prod", "view"); ``"prod"`` -> ("prod", None). InvalidInput for a bad level."""
    name, sep, level = ref.partition("=")
    if not sep:
        return ref, None
    return name, check(level.strip(), "clusters")


def owner_ceiling(is_admin: bool, member_max_level: str) -> str:
    """The highest level a token of this owner may have on a cluster whose member ceiling is given."""
    return ADMIN_MAX if is_admin else member_max_level


def decide(
    cluster_ids: Sequence[int], names: Mapping[int, str], requested: Mapping[int, str], *, is_admin: bool,
    member_max: Mapping[int, str], max_levels: Mapping[int, str] | None = None,
) -> dict[int, str]:
    """The level of each new grant: asked for (default view), never above the owner's ceiling nor
    ``max_levels`` (the parent token's levels, when a token mints a token: a cluster missing from it
    cannot be granted). InvalidInput naming the cluster and the ceiling otherwise."""
    decided: dict[int, str] = {}
    for cluster_id in cluster_ids:
        level = requested.get(cluster_id, DEFAULT_LEVEL)
        ceiling = owner_ceiling(is_admin, member_max[cluster_id])
        name = names[cluster_id]
        if max_levels is not None:
            if cluster_id not in max_levels:
                raise InvalidInput(f"cluster {name!r}: the token creating this one does not grant it", "clusters")
            ceiling = lower(ceiling, max_levels[cluster_id])
        if rank(level) > rank(ceiling):
            raise InvalidInput(f"cluster {name!r}: level {level!r} is above the most you may grant there "
                               f"({ceiling!r})", "clusters")
        decided[cluster_id] = level
    return decided


def cluster_role_bindings(cluster_name: str) -> str:
    """YAML: ClusterRoleBindings of the ``tokensmith:<level>`` groups to the built-in roles of that name."""
    documents = [{
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"tokensmith-{level}",
                     "labels": {"app.kubernetes.io/managed-by": "tokensmith"},
                     "annotations": {"tokensmith.io/cluster": cluster_name}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": level},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group(level)}],
    } for level in LEVELS]
    return yaml.safe_dump_all(documents, sort_keys=False)
