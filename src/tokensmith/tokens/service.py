"""The token service: every business rule about tokens lives here, not in the routes."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.orm import Session

from tokensmith import caps, secrets
from tokensmith import scopes as scope_rules
from tokensmith.accounts.service import AccountService
from tokensmith.actor import Actor
from tokensmith.clock import Clock
from tokensmith.db.models import Cluster, Token, TokenNotice, User, token_clusters
from tokensmith.errors import Conflict, Forbidden, InvalidInput, NotFound
from tokensmith.kube import levels
from tokensmith.objectstore.revocation import revoke_keys_minted_by
from tokensmith.pagination import DEFAULT_LIMIT, Page, paginate
from tokensmith.policy import ExpiryPolicy, PolicyService
from tokensmith.tokens.expiration import is_expired, resolve_expiry
from tokensmith.tokens.liveness import live_token
from tokensmith.tokens.rotation import parse_grace
from tokensmith.validation import clean_name, clean_note
from tokensmith.verify.usage import Usage, read_usage
from tokensmith.webhooks.service import emit, token_data

# When a token counts as expiring soon (the console's banner; the first token.expiring webhook).
EXPIRING_SOON = timedelta(days=7)


@dataclass(frozen=True)
class CreatedToken:
    """A new token and its secret: the only moment the secret exists outside the caller's hands."""

    token: Token
    secret: str


@dataclass(frozen=True)
class RevokedToken:
    """A revoked token and what became of the S3 access keys it minted."""

    token: Token
    revoked_access_keys: int
    surviving_access_keys: int  # permanent keys it minted that are still live


tokens = cast(Table, Token.__table__)


def _claim(session: Session, token_id: int, *still: Any) -> bool:
    """Lock the token's row if it still matches ``still`` (a no-op UPDATE); False if it no longer does.

    The row stays locked until the unit of work ends (PostgreSQL: row lock, and a waiting UPDATE
    re-checks its condition on the winner's row; SQLite: the database write lock), so the ORM
    change that follows is the only one. Core on the session's connection, not an ORM bulk UPDATE,
    so db/changes.py sees the ORM change for what it is and invalidates just this token.
    """
    result = session.connection().execute(
        update(tokens).where(tokens.c.id == token_id, *still).values(id=tokens.c.id))
    return result.rowcount == 1


class TokenService:
    def __init__(self, session: Session, clock: Clock, secret_key: bytes) -> None:
        self.session = session
        self.clock = clock
        self.secret_key = secret_key

    def create(
        self,
        owner: User,
        name: str,
        note: str | None = None,
        expiration: str | None = None,
        expires_at: datetime | None = None,
        clusters: Sequence[Cluster] = (),
        scopes: Sequence[str] | None = None,
        grant_service_scopes: bool = False,
        cluster_levels: Mapping[int, str] | None = None,
        max_levels: Mapping[int, str] | None = None,
        federated: tuple[str, str] | None = None,
        policy: ExpiryPolicy | None = None,
    ) -> CreatedToken:
        """Create a token for ``owner``. Raises InvalidInput for a bad name, note, expiry, scope or level.

        ``scopes`` None means all of the owner's. Service scopes (introspect, object-storage:verify)
        may be put on a member's token only with ``grant_service_scopes`` (admin paths).
        ``cluster_levels`` (cluster id -> level) are the access levels asked for (default view), each
        at most what the owner may hold there and, when given, ``max_levels`` (a parent token's).
        ``federated`` is the external (issuer, subject) a workload identity exchange issued it for;
        ``policy`` the organization's expiry policy when the caller has just read it.
        """
        now = self.clock.now()
        stored_scopes = self.check_scopes(owner, scopes, grant_service_scopes)
        granted_levels = levels.decide(
            [c.id for c in clusters], {c.id: c.name for c in clusters}, cluster_levels or {},
            is_admin=owner.is_admin, member_max={c.id: c.member_max_level for c in clusters}, max_levels=max_levels,
        )
        name = clean_name(name)
        note = clean_note(note)
        policy = policy or PolicyService(self.session, self.clock).get(owner.org_id)
        if expiration is None and expires_at is None:
            expiration = policy.default_expiration
        expiry = policy.enforce(now, resolve_expiry(now, expiration, expires_at))
        self._check_cap(owner, now)
        secret = secrets.generate()
        token = Token(
            public_id=secrets.public_id("tok"), user_id=owner.id, org_id=owner.org_id, name=name, note=note,
            secret_digest=secrets.digest(secret, self.secret_key), hint=secrets.hint(secret),
            created_at=now, expires_at=expiry, clusters=list(clusters),
            scopes=scope_rules.serialize(stored_scopes),
            federated_issuer=federated[0] if federated else None, federated_subject=federated[1] if federated else None,
        )
        self.session.add(token)
        self.session.flush()
        for cluster_id, level in granted_levels.items():  # the association rows exist now: give them levels
            self.session.execute(update(token_clusters).where(
                token_clusters.c.token_id == token.id, token_clusters.c.cluster_id == cluster_id).values(level=level))
        self.session.expire(token, ["grants"])
        return CreatedToken(token, secret)

    def _check_cap(self, owner: User, now: datetime) -> None:
        """Refuse (422 naming the limit) a token beyond the owner's cap of live tokens."""
        caps.lock_owner(self.session, owner.id)  # counted and inserted one create at a time
        live = self.session.scalar(select(func.count(Token.id)).where(
            Token.user_id == owner.id, Token.revoked_at.is_(None),
            (Token.expires_at.is_(None)) | (Token.expires_at > now)))
        caps.refuse_over(live or 0, caps.current().tokens_per_user, "live tokens",
                         "TOKENSMITH_MAX_TOKENS_PER_USER")

    @staticmethod
    def check_scopes(owner: User, scopes: Sequence[str] | None, grant_service_scopes: bool) -> frozenset[str] | None:
        if scopes is None:
            return None
        requested = scope_rules.parse(scopes)
        allowed = scope_rules.permitted(owner.is_admin)
        if not grant_service_scopes and not owner.is_admin:
            allowed = allowed - scope_rules.SERVICE
        beyond = sorted(requested - allowed)
        if beyond:
            raise InvalidInput(f"a token cannot hold more than its owner: {', '.join(beyond)} not permitted", "scopes")
        return requested

    def list(
        self, actor: Actor, *, user: str | None = None, whole_org: bool = False,
        cursor: str | None = None, limit: int = DEFAULT_LIMIT,
    ) -> Page[Token]:
        """Live (not revoked) tokens: the caller's own; admins may ask for a user's or the organization's.

        A non-admin asking for another user gets NotFound, as if the user did not exist.
        """
        # Derived cluster credentials (hourly, kubectl's) live and die with their parent: not listed.
        query = select(Token).where(Token.org_id == actor.org_id, Token.revoked_at.is_(None),
                                    Token.parent_token_id.is_(None))
        if whole_org:
            if not actor.is_admin:
                raise Forbidden("listing the whole organization's tokens requires an admin")
        elif user is not None:
            owner = AccountService(self.session, self.clock).get_user_in_org(actor.org_id, user)
            if owner.id != actor.user_id and not actor.is_admin:
                raise NotFound(f"user {user!r} not found")
            query = query.where(Token.user_id == owner.id)
        else:
            query = query.where(Token.user_id == actor.user_id)
        return paginate(self.session, query, Token.id, cursor, limit)

    def get(self, actor: Actor, public_id: str) -> Token:
        """A live token the caller may see (own, or any in the org for admins); NotFound otherwise."""
        query = select(Token).where(
            Token.public_id == public_id, Token.org_id == actor.org_id, Token.revoked_at.is_(None)
        )
        if not actor.is_admin:
            query = query.where(Token.user_id == actor.user_id)
        token = self.session.scalar(query)
        if token is None:
            raise NotFound(f"token {public_id!r} not found")
        return token

    def revoke(self, actor: Actor, public_id: str, *, revoke_access_keys: bool = False) -> Token:
        """Revoke a token the caller may see; its secret is refused from the next request on.

        The temporary S3 access keys it minted are revoked with it; permanent ones only with
        ``revoke_access_keys``. NotFound if the caller may not see the token.
        """
        return self.revoke_with_report(actor, public_id, revoke_access_keys=revoke_access_keys).token

    def revoke_with_report(self, actor: Actor, public_id: str, *, revoke_access_keys: bool = False) -> RevokedToken:
        """``revoke``, also saying how many access keys were revoked and how many permanent ones survive."""
        token = self.get(actor, public_id)
        now = self.clock.now()
        # Conditional: of concurrent deletes exactly one changes the row; the others were too late
        # and see what a later delete sees (404), with no second audit or webhook event.
        if not _claim(self.session, token.id, tokens.c.revoked_at.is_(None)):
            raise NotFound(f"token {public_id!r} not found")
        token.revoked_at = now
        outcome = revoke_keys_minted_by(self.session, token.id, now, include_permanent=revoke_access_keys)
        emit(self.session, token.org_id, "token.revoked", {"token": token_data(token)}, now)
        self.session.flush()
        return RevokedToken(token, outcome.revoked, outcome.surviving)

    def rotate(
        self, actor: Actor, public_id: str, grace: str = "0s",
        expiration: str | None = None, expires_at: datetime | None = None, *, presented_secret: str | None = None,
    ) -> CreatedToken:
        """Give a token the caller may see a new secret; same id, name, note, clusters and scopes.

        The old secret keeps working for ``grace`` ("0s".."7d"; 0 refuses it at once). The expiry is
        kept unless a new one is given; either way it must satisfy the organization's policy
        (InvalidInput stating it). Returns the token and its new secret.

        ``presented_secret``: the secret a token rotating itself authenticated with. It must still be
        the current one: a token already rotated by another request (its caller now holds only the
        previous secret, in its grace period) gets Conflict, so of concurrent self-rotations exactly
        one wins whatever the timing.
        """
        grace_period = parse_grace(grace)
        token = self.get(actor, public_id)
        if presented_secret is not None and not secrets.digests_match(
                token.secret_digest, secrets.digest(presented_secret, self.secret_key)):
            raise Conflict(f"token {public_id!r} was already rotated by another request; "
                           "authenticate with its new secret to rotate it again")
        now = self.clock.now()
        policy = PolicyService(self.session, self.clock).get(token.org_id)
        if expiration is not None or expires_at is not None:
            expiry = policy.enforce(now, resolve_expiry(now, expiration, expires_at))
        else:
            expiry = policy.enforce(now, token.expires_at)
        secret = secrets.generate()
        # Compare-and-set on the digest read above: of concurrent rotations exactly one writes its
        # secret (the others would hand out secrets that never work), and a token deleted meanwhile
        # is not given a new secret at all.
        if not _claim(self.session, token.id, tokens.c.secret_digest == token.secret_digest,
                      tokens.c.revoked_at.is_(None)):
            raise Conflict(f"token {public_id!r} was rotated or deleted by another request at the same time; "
                           "nothing was changed by this one")
        if grace_period > timedelta(0):
            token.previous_secret_digest, token.previous_grace_until = token.secret_digest, now + grace_period
        else:
            token.previous_secret_digest, token.previous_grace_until = None, None
        token.secret_digest = secrets.digest(secret, self.secret_key)
        token.hint = secrets.hint(secret)
        token.expires_at = expiry
        self.session.flush()
        return CreatedToken(token, secret)

    def extend(
        self, actor: Actor, public_id: str, expiration: str | None = None, expires_at: datetime | None = None,
    ) -> tuple[Token, datetime | None]:
        """Set a new expiry on a live token the caller may see; returns the token and its previous expiry.

        ``expiration`` (a duration from now, or "never") or ``expires_at`` (an instant), exactly one;
        the organization's policy holds as for a new token (InvalidInput stating it). A revoked or
        unknown token is NotFound; an expired one is a Conflict (its secret is dead, create a new
        token), so extending never brings a dead secret back to life. Secret, name, clusters and
        scopes are unchanged.
        """
        if expiration is None and expires_at is None:
            raise InvalidInput("give the new expiry: expiration (e.g. 30d) or expires_at", "expiration")
        token = self.get(actor, public_id)
        now = self.clock.now()
        if is_expired(token.expires_at, now):
            raise Conflict(f"token {public_id!r} has expired and cannot be extended; create a new token")
        policy = PolicyService(self.session, self.clock).get(token.org_id)
        expiry = policy.enforce(now, resolve_expiry(now, expiration, expires_at),
                                "expires_at" if expires_at is not None else "expiration")
        previous = token.expires_at
        token.expires_at = expiry
        # The "expires in 7 d / 1 d" webhooks were about the old expiry: the new one gets its own.
        self.session.execute(delete(TokenNotice).where(TokenNotice.token_id == token.id,
                                                       TokenNotice.kind.like("expiring-%")))
        self.session.flush()
        return token, previous

    def usage(self, actor: Actor, public_id: str, hours: int = 24) -> Usage:
        """Verifications per hour of a live token the caller may see, for the last ``hours`` hours."""
        return read_usage(self.session, self.get(actor, public_id), self.clock.now(), hours)

    def expiring_soon(self, actor: Actor, within: timedelta = EXPIRING_SOON) -> builtins.list[Token]:
        """The caller's own live tokens that expire within ``within`` and have not expired yet, soonest first."""
        now = self.clock.now()
        return list(self.session.scalars(
            select(Token).where(
                Token.org_id == actor.org_id, Token.user_id == actor.user_id, live_token(now),
                Token.expires_at <= now + within, Token.parent_token_id.is_(None),
            ).order_by(Token.expires_at, Token.id)
        ))
