"""Webhook credentials of clusters in the console (admins): minted, then revealed once.

What the reveal shows is what ``tokensmith admin cluster webhook-config`` prints: the webhook
kubeconfig the cluster's API server reads (with the credential in it) and the flags that make
kube-apiserver ask tokensmith for TokenReviews.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import Request, Response

from tokensmith.console.common import (
    Csrf,
    Signed,
    actor_of,
    check_csrf,
    context_of,
    put_flash,
    redirect,
    refusals,
    require_admin,
    router,
)
from tokensmith.db.models import Cluster
from tokensmith.kube import kubeconfig, tls, webhooks
from tokensmith.usecases import Actor, UnitOfWork
from tokensmith.usecases import clusters as clusters_uc

# Where the operator saves the file on the API server's host (the CLI's default too).
CONFIG_PATH: Final = "/etc/kubernetes/tokensmith-webhook.yaml"


def _reveal(request: Request, uow: UnitOfWork, actor: Actor, cluster: Cluster, *, added: bool) -> dict[str, Any]:
    minted = clusters_uc.mint_webhook_credential(uow, actor, cluster.public_id).minted
    # The address this browser reached tokensmith at; the dialog says to change it if the API server differs.
    endpoint = webhooks.tokenreview_url(str(request.base_url), cluster)
    # Over http the API server would call without the credential (it sends it only over https):
    # refuse to hand out a kubeconfig that cannot work, and say why and what to do (issue 16).
    refused = http_refusal(request)
    ca = served_ca(request)
    return {
        "kind": "webhook", "added": added, "cluster": cluster.name, "credential": minted.credential.public_id,
        "secret": minted.secret, "endpoint": endpoint, "config_path": CONFIG_PATH, "refused": refused,
        "kubeconfig": "" if refused else kubeconfig.render(webhooks.webhook_kubeconfig(endpoint, minted.secret, ca)),
        "flags": "\n".join(webhooks.apiserver_flags(CONFIG_PATH, cluster.token_audience)),
        "filename": kubeconfig.webhook_filename(cluster.name), "username_prefix": cluster.username_prefix,
        "cluster_id": cluster.public_id,
    }


def http_refusal(request: Request) -> str | None:
    """Why a webhook kubeconfig built from this page's address cannot work, or None (https)."""
    if request.url.scheme == "https":
        return None
    return tls.HTTP_REFUSED + "; or build it with: tokensmith admin cluster webhook-config CLUSTER --url https://…"


def served_ca(request: Request) -> str | None:
    """The CA of tokensmith's own TLS certificate chain (serve --tls-cert), if it has one."""
    cert = context_of(request).settings.tls_cert
    try:
        return tls.ca_from_chain(cert.read_text()) if cert else None
    except (OSError, ValueError):
        return None


def first_credential(request: Request, uow: UnitOfWork, actor: Actor, cluster: Cluster) -> dict[str, Any]:
    """The flash for a cluster just added: its first webhook credential, minted now."""
    return _reveal(request, uow, actor, cluster, added=True)


@router.post("/clusters/{public_id}/webhook-credentials")
def new_webhook_credential(request: Request, who: Signed, public_id: str, csrf: Csrf = "") -> Response:
    """Another credential for the cluster's API server; the ones it has keep working."""
    check_csrf(request, who, csrf)
    require_admin(who)
    ctx = context_of(request)
    with ctx.unit_of_work() as uow, refusals():
        actor = actor_of(request, who)
        reveal = _reveal(request, uow, actor, clusters_uc.get_cluster(uow, actor, public_id), added=False)
        put_flash(request, uow.session, who, reveal)
    return redirect("/clusters")
