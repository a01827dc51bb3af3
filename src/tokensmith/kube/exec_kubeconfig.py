"""A kubeconfig that holds no secret: kubectl runs ``tokensmith kube-credential`` for each cluster.

Each cluster gets its own user whose ``exec`` entry asks the tokensmith CLI for a short-lived
credential for that cluster (``client.authentication.k8s.io/v1``); the CLI trades its login for it
and caches it. The file names no tokensmith server either: the CLI uses the one it is logged in to,
so a kubeconfig from someone else cannot make it send the login token elsewhere.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, Final

from tokensmith.kube.kubeconfig import ClusterEntry, cluster_name

EXEC_API_VERSION: Final = "client.authentication.k8s.io/v1"
INSTALL_HINT: Final = (
    "This kubeconfig asks the tokensmith CLI for credentials. Install it (pip install tokensmith) "
    "and sign in with: tokensmith login --web --url URL"
)


def exec_user_name(org: str, cluster: str) -> str:
    return f"tokensmith-{org}-{cluster}-exec"


def exec_user(command: str, cluster: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``user`` entry: run ``command kube-credential --cluster CLUSTER``, never prompting."""
    return {
        "exec": {
            "apiVersion": EXEC_API_VERSION,
            "command": command,
            "args": ["kube-credential", "--cluster", cluster],
            "env": [{"name": k, "value": v} for k, v in sorted((env or {}).items())] or None,
            # The plugin never reads stdin: it fails with a clear message when the CLI is not logged in.
            "interactiveMode": "Never",
            "provideClusterInfo": False,
            "installHint": INSTALL_HINT,
        },
    }


def build_exec(clusters: Sequence[ClusterEntry], command: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The kubeconfig as a dict: per cluster one cluster entry, one exec user, one context; no token anywhere."""
    if not clusters:
        raise ValueError("a kubeconfig needs at least one cluster")
    cluster_entries, users, contexts = [], [], []
    for entry in clusters:
        name = cluster_name(entry.org, entry.name)
        user = exec_user_name(entry.org, entry.name)
        cluster_entries.append({
            "name": name,
            "cluster": {
                "server": entry.server,
                "certificate-authority-data": base64.b64encode(entry.certificate_authority.encode()).decode(),
            },
        })
        users.append({"name": user, "user": exec_user(command, entry.name, env)})
        contexts.append({"name": name, "context": {"cluster": name, "user": user}})
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {}, "clusters": cluster_entries, "users": users,
        "contexts": contexts, "current-context": contexts[0]["name"],
    }


def exec_credential(token: str, expiration_timestamp: str) -> dict[str, Any]:
    """What the plugin prints: the ExecCredential kubectl reads (``expirationTimestamp`` RFC 3339, UTC)."""
    return {
        "apiVersion": EXEC_API_VERSION, "kind": "ExecCredential",
        "status": {"token": token, "expirationTimestamp": expiration_timestamp},
    }
