"""Token use cases: issue, rotate, delete, list and read, for every door.

The rule that makes per-token least privilege real lives here: a credential never creates or
re-issues a token holding more than it holds itself (scopes and clusters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tokensmith import scopes as scope_rules
from tokensmith.db.models import Cluster, Token, User
from tokensmith.errors import Conflict, Forbidden, InvalidInput
from tokensmith.kube import access
from tokensmith.kube.access import IssuedKubeconfig
from tokensmith.pagination import DEFAULT_LIMIT, Page
from tokensmith.tokens import derived
from tokensmith.tokens.service import EXPIRING_SOON, RevokedToken, TokenService

__all__ = ["EXPIRING_SOON"]  # for the doors: what counts as expiring soon
from tokensmith.usecases.actor import Actor
from tokensmith.usecases.base import UnitOfWork, operation
from tokensmith.verify.usage import Usage


@dataclass(frozen=True)
class TokenRequest:
    """What a person asks for when creating a token (the same fields in API, console and CLI)."""

    name: str
    note: str | None = None
    expiration: str | None = None
    expires_at: datetime | None = None
    clusters: Sequence[str] = ()
    scopes: Sequence[str] | None = None  # None: all of the caller's
    kubeconfig: bool = False


@dataclass(frozen=True)
class IssuedToken:
    """A token and its new secret (shown once), with its kubeconfig when one was asked for."""

    token: Token
    secret: str
    kubeconfig: IssuedKubeconfig | None = None


def _owner(uow: UnitOfWork, actor: Actor) -> User:
    user = uow.session.get(User, actor.user_id)
    if user is None or user.org_id != actor.org_id:  # a session or token always has its user
        raise InvalidInput("this credential has no user to own a token", "user")
    return user


def _issue(uow: UnitOfWork, actor: Actor, owner: User, request: TokenRequest, *,
           grant_service_scopes: bool = False) -> IssuedToken:
    if request.scopes is not None:  # unknown names and more than the owner may hold: 422
        TokenService.check_scopes(owner, request.scopes, grant_service_scopes)
    stored = actor.grantable_scopes(request.scopes)  # more than this credential holds: 403
    clusters = access.resolve_clusters(uow.clusters, actor, request.clusters, want_kubeconfig=request.kubeconfig,
                                       scopes=None if stored is None else sorted(stored))
    requested_levels = access.requested_levels(request.clusters, clusters)  # "prod=view"
    actor.check_clusters([c.id for c in clusters], {c.id: c.name for c in clusters}, requested_levels)
    created = uow.tokens.create(owner, request.name, request.note, request.expiration, request.expires_at,
                                clusters=clusters, scopes=None if stored is None else sorted(stored),
                                grant_service_scopes=grant_service_scopes, cluster_levels=requested_levels,
                                max_levels=actor.max_levels())
    issued = access.issue(created.token, created.secret, clusters) if request.kubeconfig else None
    return IssuedToken(created.token, created.secret, issued)


def _creation_details(token: Token, issued: IssuedToken, **extra: object) -> dict[str, object]:
    details: dict[str, object] = {"name": token.name, **extra}
    if issued.kubeconfig is not None:
        details["kubeconfig"] = True
        details["clusters"] = [c.public_id for c in token.clusters]
    return details


@operation("tokens:write", audit="token.created", manages_credentials=True)
def issue_token(uow: UnitOfWork, actor: Actor, request: TokenRequest) -> IssuedToken:
    """A new token of the caller's, holding at most what the calling credential holds.

    Raises InvalidInput (name, note, expiry, policy, unknown scope, kubeconfig without clusters),
    Forbidden (a scope or cluster the caller does not hold), NotFound (an unknown cluster).
    """
    issued = _issue(uow, actor, _owner(uow, actor), request)
    uow.record(actor, "token.created", target=issued.token.public_id, details=_creation_details(issued.token, issued))
    return issued


@operation("tokens:write", audit="token.created", manages_credentials=True)
def issue_token_for(uow: UnitOfWork, actor: Actor, user: str, request: TokenRequest, *,
                    grant_service_scopes: bool = False) -> IssuedToken:
    """An admin creates a token owned by ``user`` (a service account's, a gateway's), service scopes allowed."""
    actor.require_admin("creating tokens for other users")
    owner = uow.accounts.get_user_in_org(actor.org_id, user)
    issued = _issue(uow, actor, owner, request, grant_service_scopes=grant_service_scopes)
    uow.record(actor, "token.created", target=issued.token.public_id,
               details=_creation_details(issued.token, issued, owner=owner.username))
    return issued


def _within_caller(actor: Actor, token: Token) -> None:
    """Re-issuing ``token`` must not hand the caller more than it holds (a narrower token rotating a wider one)."""
    owner_is_admin = token.user.is_admin
    actor.grantable_scopes(scope_rules.effective(scope_rules.deserialize(token.scopes), owner_is_admin))
    actor.check_clusters([c.id for c in token.clusters], {c.id: c.name for c in token.clusters},
                         token.cluster_levels)


# Credential management is checked in the body: a rotated-out secret rotating its own token lost a
# race with the rotation that replaced it (409, use the new secret), not a permission (403).
@operation("tokens:write", audit="token.rotated")
def rotate_token(
    uow: UnitOfWork, actor: Actor, token_id: str, *, grace: str = "0s", expiration: str | None = None,
    expires_at: datetime | None = None, kubeconfig: bool = False, presented_secret: str | None = None,
) -> IssuedToken:
    """A new secret for a token the caller may see; the old one works until ``grace`` ends.

    ``presented_secret``: a token rotating itself passes the secret it authenticated with; it must
    still be current (Conflict otherwise), so of concurrent self-rotations exactly one wins.

    Raises NotFound, InvalidInput (grace, expiry, policy, kubeconfig for a token without clusters),
    Forbidden (the token holds more than the calling credential).
    """
    if not actor.may_manage_credentials and token_id == actor.token_public_id:
        raise Conflict("this token was rotated meanwhile and its secret replaced: use the new secret")
    actor.require_credential_management()
    token = uow.tokens.get(actor, token_id)
    _within_caller(actor, token)
    if kubeconfig and not token.clusters:
        raise InvalidInput("this token grants no clusters, so there is no kubeconfig to issue", "kubeconfig")
    rotated = uow.tokens.rotate(actor, token_id, grace, expiration, expires_at, presented_secret=presented_secret)
    issued = access.issue(rotated.token, rotated.secret, rotated.token.clusters) if kubeconfig else None
    result = IssuedToken(rotated.token, rotated.secret, issued)
    uow.record(actor, "token.rotated", target=token.public_id,
               details=_creation_details(token, result, grace=grace))
    return result


@operation("tokens:write", audit="token.extended", manages_credentials=True)
def extend_token(
    uow: UnitOfWork, actor: Actor, token_id: str, *, expiration: str | None = None,
    expires_at: datetime | None = None,
) -> Token:
    """A new expiry for a live token the caller may see, within the policy; secret, scopes and clusters stay.

    Raises NotFound (revoked, unknown), Conflict (already expired), InvalidInput (the policy).
    """
    token, previous = uow.tokens.extend(actor, token_id, expiration, expires_at)
    uow.record(actor, "token.extended", target=token.public_id, details={
        "name": token.name, "expires_at_before": previous.isoformat() if previous else None,
        "expires_at": token.expires_at.isoformat() if token.expires_at else None})
    return token


@operation("tokens:read")
def token_usage(uow: UnitOfWork, actor: Actor, token_id: str, hours: int = 24) -> Usage:
    """Verifications of a token per hour (counted in memory, written about once a minute)."""
    return uow.tokens.usage(actor, token_id, hours)


@operation("tokens:write", audit="token.deleted", manages_credentials=True)
def delete_token(uow: UnitOfWork, actor: Actor, token_id: str, *, revoke_access_keys: bool = False) -> RevokedToken:
    """Revoke a token the caller may see (its secret is refused from the next request on).

    Its temporary S3 keys go with it; its permanent ones only with ``revoke_access_keys``.
    """
    outcome = uow.tokens.revoke_with_report(actor, token_id, revoke_access_keys=revoke_access_keys)
    uow.record(actor, "token.deleted", target=outcome.token.public_id,
               details={"name": outcome.token.name, "access_keys_revoked": outcome.revoked_access_keys})
    return outcome


@operation("tokens:read")
def list_tokens(
    uow: UnitOfWork, actor: Actor, *, user: str | None = None, whole_org: bool = False,
    cursor: str | None = None, limit: int = DEFAULT_LIMIT,
) -> Page[Token]:
    """Live tokens: the caller's own; admins may ask for a user's or the whole organization's."""
    if whole_org:
        actor.require_admin("listing the whole organization's tokens")
    return uow.tokens.list(actor, user=user, whole_org=whole_org, cursor=cursor, limit=limit)


@operation("tokens:read")
def get_token(uow: UnitOfWork, actor: Actor, token_id: str) -> Token:
    """A live token the caller may see; NotFound otherwise."""
    return uow.tokens.get(actor, token_id)


@operation(None)
def own_token(uow: UnitOfWork, actor: Actor) -> Token:
    """The calling token itself (whoami): any valid token may ask who it is."""
    assert actor.token_public_id is not None
    return uow.tokens.get(actor, actor.token_public_id)


@operation("tokens:read")
def expiring_soon(uow: UnitOfWork, actor: Actor) -> list[Token]:
    """The caller's own live tokens that expire within a week, soonest first."""
    return uow.tokens.expiring_soon(actor)


@operation("clusters:read")
def grantable_clusters(uow: UnitOfWork, actor: Actor) -> list[Cluster]:
    """The clusters the caller may put on a new token."""
    found = uow.clusters.list(actor, limit=200).items
    return [c for c in found if actor.cluster_ids is None or c.id in actor.cluster_ids]


@operation("kubernetes", audit="token.created", manages_credentials=True)
def issue_cluster_credential(uow: UnitOfWork, actor: Actor, cluster: str) -> IssuedToken:
    """A token for one cluster, scope ``kubernetes`` only, living at most an hour, tied to the calling token.

    What ``tokensmith kube-credential`` (kubectl's exec plugin) asks for with the CLI's login. The
    calling credential must be a token (the derived one dies with it) that holds ``kubernetes`` and
    reaches ``cluster``. Raises Forbidden (not a token, the cluster is beyond the caller, the caller
    is itself derived), NotFound (an unknown cluster).
    """
    if actor.kind != "token" or actor.token_id is None:
        raise Forbidden("a cluster credential is derived from a token: sign in with 'tokensmith login' first")
    actor.grantable_scopes(derived.CLUSTER_CREDENTIAL_SCOPES)
    target = uow.clusters.get(actor, cluster)
    actor.check_clusters([target.id], {target.id: target.name})
    parent = uow.session.get(Token, actor.token_id)
    if parent is None:  # the verified token was deleted since: nothing to derive from
        raise Forbidden("the calling token no longer exists")
    created = derived.create_cluster_credential(uow.tokens, uow.clock, _owner(uow, actor), parent, target)
    uow.record(actor, "token.created", target=created.token.public_id,
               details={"name": created.token.name, "cluster_credential": True, "parent": parent.public_id,
                        "clusters": [target.public_id]})
    return IssuedToken(created.token, created.secret)
