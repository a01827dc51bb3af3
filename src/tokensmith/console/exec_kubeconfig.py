"""The console's third choice in Create Token: a kubeconfig that holds no secret.

Nothing is minted: the file's users run ``tokensmith kube-credential`` (the CLI must be installed and
signed in, e.g. ``tokensmith login --web``), which derives a 1-hour token per cluster from the CLI's
login. So the download can be repeated freely and never needs to be kept secret.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Request, Response

from tokensmith.console.common import actor_of, context_of, refusals
from tokensmith.console.sessions import Viewer
from tokensmith.errors import InvalidInput
from tokensmith.kube import exec_kubeconfig, kubeconfig
from tokensmith.usecases import tokens

# The CLI as kubectl will find it on the person's PATH (the server cannot know where they installed it).
COMMAND = "tokensmith"


def download(request: Request, who: Viewer, cluster_ids: Sequence[str]) -> Response:
    """The exec kubeconfig for the clusters picked (ids), as a file download."""
    if not cluster_ids:
        raise InvalidInput("Pick at least one cluster for the kubeconfig.", "clusters")
    ctx = context_of(request)
    with ctx.unit_of_work() as uow, refusals():
        available = {c.public_id: c for c in tokens.grantable_clusters(uow, actor_of(request, who))}
        unknown = [ref for ref in cluster_ids if ref not in available]
        if unknown:
            raise InvalidInput(f"Cluster {unknown[0]!r} is not one you can use.", "clusters")
        chosen = [available[ref] for ref in dict.fromkeys(cluster_ids)]
        entries = [kubeconfig.ClusterEntry(c.organization.name, c.name, c.server, c.certificate_authority)
                   for c in chosen]
    text = kubeconfig.render(exec_kubeconfig.build_exec(entries, COMMAND))
    name = f"kubeconfig-{kubeconfig.file_slug(who.org_name, 'org')}-exec.yaml"
    return Response(text, media_type="application/yaml",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
