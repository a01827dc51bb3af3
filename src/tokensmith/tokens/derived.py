"""Short-lived tokens derived from another: a cluster credential for kubectl's exec plugin.

``tokensmith kube-credential`` trades the CLI's login token for a token that holds only the
``kubernetes`` scope and one cluster, and lives at most an hour. It records its parent: verification
refuses it as soon as the parent is revoked, expires or its owner is disabled (verify/core.py), so
revoking the login ends every cluster's access at once, whatever the derived tokens' own expiry.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from tokensmith.clock import Clock
from tokensmith.db.models import Cluster, Token, User
from tokensmith.errors import Forbidden, InvalidInput
from tokensmith.kube.tokenreview import SCOPE as KUBERNETES
from tokensmith.tokens.service import CreatedToken, TokenService

# The longest a cluster credential lives; kubectl asks for a new one when it expires.
CLUSTER_CREDENTIAL_LIFETIME: Final = timedelta(hours=1)
CLUSTER_CREDENTIAL_SCOPES: Final = (KUBERNETES,)


def cluster_credential_name(cluster: Cluster) -> str:
    return f"kube-credential {cluster.name}"[:100]


def create_cluster_credential(
    tokens: TokenService, clock: Clock, owner: User, parent: Token, cluster: Cluster,
    lifetime: timedelta = CLUSTER_CREDENTIAL_LIFETIME,
) -> CreatedToken:
    """A token of ``owner``'s for ``cluster`` alone, holding ``kubernetes`` only, tied to ``parent``.

    It expires after ``lifetime`` (at most an hour), and never after its parent. Raises Forbidden
    when ``parent`` is itself derived (a derived token cannot extend its own life by deriving
    another), InvalidInput when the lifetime is not within (0, 1 h].
    """
    if parent.parent_token_id is not None:
        raise Forbidden("a derived credential cannot derive another; use the CLI's login token")
    if not timedelta(0) < lifetime <= CLUSTER_CREDENTIAL_LIFETIME:
        raise InvalidInput("a cluster credential lives between 1 second and 1 hour", "lifetime")
    now = clock.now()
    expiry = now + lifetime
    if parent.expires_at is not None and parent.expires_at < expiry:
        expiry = parent.expires_at
    created = tokens.create(owner, cluster_credential_name(cluster), expires_at=expiry, clusters=[cluster],
                            scopes=list(CLUSTER_CREDENTIAL_SCOPES))
    created.token.parent_token_id = parent.id
    tokens.session.flush()
    return created
