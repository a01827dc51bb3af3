"""Build the kubeconfig ``kubectl`` expects for a token and the clusters it grants.

Names are deterministic and unique across organizations (``<org>-<cluster>``, user
``<org>-<token id>``), so files can be merged with others through ``KUBECONFIG=a:b``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class ClusterEntry:
    """What a kubeconfig needs of a cluster."""

    org: str
    name: str
    server: str
    certificate_authority: str  # PEM


def cluster_name(org: str, cluster: str) -> str:
    return f"tokensmith-{org}-{cluster}"


def user_name(org: str, token_public_id: str) -> str:
    return f"tokensmith-{org}-{token_public_id}"


def build(clusters: Sequence[ClusterEntry], secret: str, org: str, token_public_id: str) -> dict[str, Any]:
    """The kubeconfig as a dict: one cluster and one context per granted cluster, one user."""
    if not clusters:
        raise ValueError("a kubeconfig needs at least one cluster")
    user = user_name(org, token_public_id)
    cluster_entries, contexts = [], []
    for entry in clusters:
        name = cluster_name(entry.org, entry.name)
        cluster_entries.append({
            "name": name,
            "cluster": {
                "server": entry.server,
                "certificate-authority-data": base64.b64encode(entry.certificate_authority.encode()).decode(),
            },
        })
        contexts.append({"name": name, "context": {"cluster": name, "user": user}})
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": cluster_entries,
        "users": [{"name": user, "user": {"token": secret}}],
        "contexts": contexts,
        "current-context": contexts[0]["name"],
    }


def render(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def filename(token_public_id: str, token_name: str) -> str:
    """``kubeconfig-<token id>-<name>.yaml``, safe on every OS (ASCII, no separators or reserved chars)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", token_name).strip("-._")[:40] or "token"
    return f"kubeconfig-{token_public_id}-{slug}.yaml"
