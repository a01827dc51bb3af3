"""Who is asking, and what this request may do: the one authorization model behind every door.

An :class:`Actor` is built by a door from the credential it authenticated:

* an API token (:meth:`Actor.for_token`): its scopes are the token's own, already cut to what its
  owner may hold *now* (``scopes.effective``), and it reaches only the clusters the token grants;
  a rotated-out secret in its grace period authenticates, but may not manage credentials;
* a console session (:meth:`Actor.for_session`): a person at the console holds everything their
  role permits;
* the operator at the CLI acting on the database directly (:meth:`Actor.operator`): an
  organization admin with every scope, recorded in the audit log as ``operator:<login>``.

Every use case asks the actor, never the door: :meth:`Actor.require` (a scope),
:meth:`Actor.require_admin`, :meth:`Actor.require_credential_management`, and the subset rules
:meth:`Actor.grantable_scopes` / :meth:`Actor.check_clusters` that keep anything minted from a
credential within what that credential holds.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from tokensmith import scopes as scope_rules
from tokensmith.actor import require_admin
from tokensmith.errors import Forbidden
from tokensmith.kube import levels

if TYPE_CHECKING:
    from tokensmith.verify.core import Identity

ActorKind = Literal["token", "session", "operator", "anonymous"]
# No user has id 0 (ids start at 1): the operator is nobody's account.
OPERATOR_USER_ID = 0


@dataclass(frozen=True)
class RequestContext:
    """Where a request came from, for the audit log."""

    client_ip: str | None = None
    user_agent: str | None = None
    via: str = "api"  # api, console or cli


@dataclass(frozen=True)
class Actor:
    """The caller of a use case. Satisfies the services' ``tokensmith.actor.Actor`` protocol."""

    kind: ActorKind
    user_id: int
    org_id: int
    is_admin: bool
    username: str
    scopes: frozenset[str]
    # The clusters this credential may reach; None: any of the organization's (sessions, operator).
    cluster_ids: frozenset[int] | None = None
    # The access level this credential holds on each of those clusters (view ... cluster-admin).
    cluster_levels: Mapping[int, str] = field(default_factory=dict)
    token_id: int | None = None
    token_public_id: str | None = None
    # A token created from this one without explicit scopes gets the owner's (dynamic) scopes only
    # when this credential has them too; otherwise it inherits this credential's explicit list.
    holds_owner_scopes: bool = True
    # False for a rotated-out secret during its grace period: it works, but manages nothing.
    may_manage_credentials: bool = True
    request: RequestContext = field(default_factory=RequestContext)

    # --- construction (one per door kind) -----------------------------------------------------

    @classmethod
    def for_token(cls, identity: Identity, request: RequestContext | None = None) -> Actor:
        """The actor of a verified token.

        A token made with neither a scope list nor clusters is its owner's full credential (the
        CLI's login, a token made at the console with "all my permissions"): it acts with all its
        owner may do, any of the organization's clusters included. A token limited either way (a
        scope list, or clusters it grants, as a kubeconfig's token does) passes on only what it holds.
        """
        full = identity.holds_owner_scopes and not identity.cluster_ids
        return cls(
            kind="token", user_id=identity.user_id, org_id=identity.org_id, is_admin=identity.is_admin,
            username=identity.username, scopes=identity.scopes, cluster_ids=None if full else identity.cluster_ids,
            cluster_levels={} if full else dict(identity.cluster_levels),
            token_id=identity.token_id, token_public_id=identity.token_public_id,
            holds_owner_scopes=identity.holds_owner_scopes,
            may_manage_credentials=not identity.rotated_out, request=request or RequestContext(),
        )

    @classmethod
    def for_session(
        cls, *, user_id: int, org_id: int, is_admin: bool, username: str, request: RequestContext | None = None,
    ) -> Actor:
        return cls(
            kind="session", user_id=user_id, org_id=org_id, is_admin=is_admin, username=username,
            scopes=scope_rules.permitted(is_admin), request=request or RequestContext(via="console"),
        )

    @classmethod
    def anonymous(cls, request: RequestContext) -> Actor:
        """Nobody yet: a sign-in before its password is checked. Holds nothing."""
        return cls(kind="anonymous", user_id=OPERATOR_USER_ID, org_id=0, is_admin=False, username="",
                   scopes=frozenset(), may_manage_credentials=False, request=request)

    @classmethod
    def operator(cls, org_id: int) -> Actor:
        """The person running ``tokensmith admin ...`` on the server's own database."""
        try:
            login = getpass.getuser()
        except Exception:  # no login name (a container without /etc/passwd entry): still audited
            login = "unknown"
        return cls(
            kind="operator", user_id=OPERATOR_USER_ID, org_id=org_id, is_admin=True,
            username=f"operator:{login}", scopes=scope_rules.ALL,
            request=RequestContext(user_agent=f"tokensmith-cli on {socket.gethostname()}", via="cli"),
        )

    # --- checks --------------------------------------------------------------------------------

    @property
    def credential(self) -> str:
        """How refusals name the caller's credential."""
        return {"token": "this token", "session": "your account", "operator": "the operator",
                "anonymous": "an anonymous caller"}[self.kind]

    def require(self, scope: str) -> None:
        """Forbidden naming ``scope`` unless this request holds it."""
        if scope in self.scopes:
            return
        if self.kind == "session" and scope in scope_rules.ADMIN_ONLY:
            raise Forbidden(f"only organization admins can do this (it needs the {scope!r} scope)")
        raise Forbidden(f"{self.credential} lacks the {scope!r} scope")

    def require_admin(self, what: str) -> None:
        """Forbidden unless the caller's owner is an organization admin (now)."""
        require_admin(self, what)

    def require_credential_management(self) -> None:
        """Forbidden for a rotated-out secret: during its grace it authenticates, but manages nothing."""
        if not self.may_manage_credentials:
            raise Forbidden(
                "this secret was rotated out and only works until its grace period ends; it cannot create, "
                "rotate or delete credentials: use the token's new secret"
            )

    def grantable_scopes(self, requested: Iterable[str] | None) -> frozenset[str] | None:
        """The scopes to store on a credential minted by this actor: never more than it holds.

        ``None`` asked (all of the owner's) stays ``None`` when this actor holds all of its owner's
        scopes, and becomes this actor's own explicit list otherwise. Forbidden names what is missing.
        """
        if requested is None:
            return None if self.holds_owner_scopes else self.scopes
        wanted = frozenset(s.strip() for s in requested)
        missing = sorted(wanted - self.scopes)
        if missing:
            names = ", ".join(repr(s) for s in missing)
            raise Forbidden(f"{self.credential} lacks the {names} scope{'s' if len(missing) > 1 else ''}, "
                            "so it cannot grant it")
        return wanted

    def check_clusters(self, cluster_ids: Iterable[int], names: dict[int, str] | None = None,
                       wanted_levels: Mapping[int, str] | None = None) -> None:
        """Forbidden unless every cluster is one this credential may reach itself, at no higher a level."""
        if self.cluster_ids is None:
            return
        wanted = list(cluster_ids)
        beyond = [c for c in wanted if c not in self.cluster_ids]
        if beyond:
            label = ", ".join(repr((names or {}).get(c, str(c))) for c in beyond)
            raise Forbidden(f"{self.credential} does not grant cluster {label}, so it cannot grant it")
        for cluster_id, level in (wanted_levels or {}).items():
            held = self.cluster_levels.get(cluster_id, levels.DEFAULT_LEVEL)
            if levels.rank(level) > levels.rank(held):
                name = (names or {}).get(cluster_id, str(cluster_id))
                raise Forbidden(f"{self.credential} holds {held!r} on cluster {name!r}, so it cannot grant {level!r}")

    def max_levels(self) -> Mapping[int, str] | None:
        """The highest level this credential may pass on per cluster; None: whatever the owner may hold."""
        return None if self.cluster_ids is None else self.cluster_levels
