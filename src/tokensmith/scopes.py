"""What a token may do: a fixed, documented set of scopes, and one check that serves every door.

A token holds either an explicit list of scopes or, by default, all of its owner's. What a
token can actually use is always cut down to what its owner may do *now*: demote or disable
the owner and the token loses the permission on the next request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from tokensmith.errors import InvalidInput

SCOPES: Final[dict[str, str]] = {
    "tokens:read": "list and read your tokens",
    "tokens:write": "create, rotate and delete tokens",
    "clusters:read": "list and read clusters",
    "clusters:write": "add and remove clusters (admins)",
    "vpcs:read": "list and read VPCs",
    "vpcs:write": "add and remove VPCs (admins)",
    "object-storage:read": "list S3 access keys",
    "object-storage:write": "mint and delete S3 access keys",
    "object-storage:verify": "verify SigV4 signatures for an S3 gateway (service tokens)",
    "kubernetes": "authenticate to Kubernetes clusters through their webhook",
    "introspect": "introspect other tokens, RFC 7662 (service tokens)",
    "metrics:read": "read Prometheus metrics (admins)",
    "org:admin": "change the organization's policy, webhooks and users (admins)",
    "audit:read": "read the organization's audit log (admins)",
}
ALL: Final = frozenset(SCOPES)
# Only admins hold these; a member's token never can.
ADMIN_ONLY: Final = frozenset({"clusters:write", "vpcs:write", "metrics:read", "org:admin", "audit:read"})
# Service permissions: admins hold them by default; a member's token only when an admin grants them.
SERVICE: Final = frozenset({"introspect", "object-storage:verify"})
MEMBER_DEFAULT: Final = ALL - ADMIN_ONLY - SERVICE


def permitted(is_admin: bool) -> frozenset[str]:
    """Everything a user may ever hold on a token right now."""
    return ALL if is_admin else ALL - ADMIN_ONLY


def default_scopes(is_admin: bool) -> frozenset[str]:
    return ALL if is_admin else MEMBER_DEFAULT


def effective(stored: Iterable[str] | None, is_admin: bool) -> frozenset[str]:
    """The scopes a token can use: its stored list (or its owner's default), cut to the owner's permissions."""
    held = frozenset(stored) if stored is not None else default_scopes(is_admin)
    return held & permitted(is_admin)


def parse(scopes: Iterable[str]) -> frozenset[str]:
    """Validate requested scope names; InvalidInput lists the known ones."""
    requested = frozenset(s.strip() for s in scopes)
    unknown = sorted(requested - ALL)
    if unknown:
        raise InvalidInput(f"unknown scope(s) {', '.join(unknown)}; known scopes: {', '.join(sorted(ALL))}", "scopes")
    return requested


def serialize(scopes: Iterable[str] | None) -> str | None:
    return None if scopes is None else " ".join(sorted(scopes))


def deserialize(text: str | None) -> frozenset[str] | None:
    return None if text is None else frozenset(text.split())
