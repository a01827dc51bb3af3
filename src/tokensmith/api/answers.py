"""What the verification doors answer about a verified identity, written once for the route and the
fast path alike (api/fastpath.py encodes these once per cached identity)."""

from __future__ import annotations

from typing import Any

from tokensmith.verify.core import Identity

INACTIVE: dict[str, Any] = {"active": False}


def identity_headers(identity: Identity) -> dict[str, str]:
    """Forward-auth: what a proxy passes on to the service behind it (ids and names; secrets never)."""
    return {
        "X-Auth-Request-User": identity.username,
        "X-Tokensmith-User-Id": identity.user_public_id,
        "X-Tokensmith-Org": identity.org_name,
        "X-Tokensmith-Token-Id": identity.token_public_id,
    }


def introspection(caller: Identity, identity: Identity) -> dict[str, Any]:
    """The RFC 7662 answer about ``identity`` for ``caller``: inactive across organizations."""
    if identity.org_id != caller.org_id:
        return INACTIVE
    body: dict[str, Any] = {
        "active": True,
        "scope": " ".join(sorted(identity.scopes)),
        "client_id": identity.token_public_id,
        "username": identity.username,
        "token_type": "Bearer",
        "iat": int(identity.created_at.timestamp()),
        "sub": identity.user_public_id,
        "org": identity.org_public_id,
        "org_name": identity.org_name,
        "token_name": identity.token_name,
        "admin": identity.is_admin,
    }
    if identity.expires_at is not None:
        body["exp"] = int(identity.expires_at.timestamp())
    return body
