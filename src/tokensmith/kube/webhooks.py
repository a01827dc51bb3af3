"""Webhook credentials: how each cluster's API server proves itself when it asks for a TokenReview.

A cluster may hold several live credentials at once, so one can be replaced without downtime.
Each is shown once when minted; only its HMAC digest is kept, like a token's.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tokensmith import secrets
from tokensmith.clock import Clock
from tokensmith.db.models import Cluster, WebhookCredential
from tokensmith.errors import AuthenticationFailed, NotFound

INVALID_CREDENTIAL = "invalid webhook credential"
# last_used_at is for operators rotating credentials; minute precision spares a write per review.
LAST_USED_PRECISION = timedelta(minutes=1)
WEBHOOK_CACHE_TTL = "10s"
AUTHN_CONFIG_PATH = "/etc/kubernetes/tokensmith-webhook.yaml"
AUTHZ_CONFIG_PATH = "/etc/kubernetes/tokensmith-authz-webhook.yaml"


@dataclass(frozen=True)
class MintedCredential:
    """A new credential and its secret: the only moment the secret exists outside the API server."""

    credential: WebhookCredential
    secret: str


class WebhookCredentialService:
    def __init__(self, session: Session, clock: Clock, secret_key: bytes) -> None:
        self.session = session
        self.clock = clock
        self.secret_key = secret_key

    def mint(self, cluster: Cluster) -> MintedCredential:
        """A new live credential for ``cluster``; the cluster's other credentials keep working."""
        secret = secrets.generate(secrets.WEBHOOK_PREFIX)
        credential = WebhookCredential(
            public_id=secrets.public_id("whc"), cluster_id=cluster.id,
            secret_digest=secrets.digest(secret, self.secret_key), hint=secrets.hint(secret),
            created_at=self.clock.now(),
        )
        self.session.add(credential)
        self.session.flush()
        return MintedCredential(credential, secret)

    def list(self, cluster: Cluster) -> list[WebhookCredential]:
        """The cluster's live credentials, oldest first."""
        return list(self.session.scalars(
            select(WebhookCredential)
            .where(WebhookCredential.cluster_id == cluster.id, WebhookCredential.revoked_at.is_(None))
            .order_by(WebhookCredential.id)
        ))

    def revoke(self, cluster: Cluster, public_id: str) -> WebhookCredential:
        """Revoke one live credential of ``cluster``; NotFound if it has no such credential."""
        credential = self.session.scalar(
            select(WebhookCredential).where(
                WebhookCredential.cluster_id == cluster.id, WebhookCredential.public_id == public_id,
                WebhookCredential.revoked_at.is_(None),
            )
        )
        if credential is None:
            raise NotFound(f"webhook credential {public_id!r} not found for cluster {cluster.name!r}")
        credential.revoked_at = self.clock.now()
        self.session.flush()
        return credential

    def authenticate(self, cluster_ref: str, secret: str) -> Cluster:
        """The cluster whose live credential ``secret`` is, if ``cluster_ref`` (id or name) names it.

        Raises AuthenticationFailed (one neutral message) for anything else: a malformed, unknown or
        revoked credential, or one that belongs to another cluster.
        """
        return self.authenticate_credential(cluster_ref, secret).cluster

    def authenticate_credential(self, cluster_ref: str, secret: str) -> WebhookCredential:
        """``authenticate``, returning the credential itself (its cluster is ``.cluster``)."""
        if not secrets.is_well_formed(secret, secrets.WEBHOOK_PREFIX):
            raise AuthenticationFailed(INVALID_CREDENTIAL)
        digest = secrets.digest(secret, self.secret_key)
        credential = self.session.scalar(select(WebhookCredential).where(WebhookCredential.secret_digest == digest))
        if (
            credential is None
            or credential.revoked_at is not None
            or credential.cluster is None
            or not secrets.digests_match(credential.secret_digest, digest)
            or cluster_ref not in (credential.cluster.public_id, credential.cluster.name)
        ):
            raise AuthenticationFailed(INVALID_CREDENTIAL)
        now = self.clock.now()
        if credential.last_used_at is None or now - credential.last_used_at >= LAST_USED_PRECISION:
            credential.last_used_at = now
            self.session.flush()
        return credential


def tokenreview_url(base_url: str, cluster: Cluster) -> str:
    """Where the cluster's API server sends its TokenReviews (by cluster id: names are per organization)."""
    return f"{base_url.rstrip('/')}/v1/clusters/{cluster.public_id}/tokenreview"


def subjectaccessreview_url(base_url: str, cluster: Cluster) -> str:
    """Where the cluster's API server sends SubjectAccessReviews (the optional authorization webhook)."""
    return f"{base_url.rstrip('/')}/v1/clusters/{cluster.public_id}/subjectaccessreview"


def webhook_kubeconfig(url: str, secret: str, certificate_authority: str | None = None) -> dict[str, Any]:
    """The kubeconfig for ``--authentication-token-webhook-config-file``: tokensmith is the "cluster"."""
    server: dict[str, Any] = {"server": url}
    if certificate_authority:
        server["certificate-authority-data"] = base64.b64encode(certificate_authority.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "tokensmith", "cluster": server}],
        "users": [{"name": "kube-apiserver", "user": {"token": secret}}],
        "contexts": [{"name": "webhook", "context": {"cluster": "tokensmith", "user": "kube-apiserver"}}],
        "current-context": "webhook",
    }


def apiserver_flags(config_path: str, audience: str) -> list[str]:
    """The kube-apiserver flags that make it ask tokensmith; a short cache TTL so deletions bite fast."""
    return [
        f"--authentication-token-webhook-config-file={config_path}",
        "--authentication-token-webhook-version=v1",
        f"--authentication-token-webhook-cache-ttl={WEBHOOK_CACHE_TTL}",
        f"--api-audiences=<your service-account issuer>,{audience}",
    ]


def authorizer_flags(config_path: str) -> list[str]:
    """The kube-apiserver flags for the authorization webhook: asked before RBAC, short caches.

    (On 1.29+ the same can be said with --authorization-config; these flags still work.)
    """
    return [
        "--authorization-mode=Node,Webhook,RBAC",
        f"--authorization-webhook-config-file={config_path}",
        "--authorization-webhook-version=v1",
        f"--authorization-webhook-cache-authorized-ttl={WEBHOOK_CACHE_TTL}",
        f"--authorization-webhook-cache-unauthorized-ttl={WEBHOOK_CACHE_TTL}",
    ]
