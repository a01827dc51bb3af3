"""Secret → identity. Parse, checksum, HMAC, cache or lookup, then expiry and revocation checks.

It fails closed: anything unexpected is a refusal, never a pass. Every failure
but expiry carries the same neutral "invalid token" so callers learn nothing.

Verified identities are cached by digest (see verify/cache.py); any committed change to a token
or its user drops them at once in this process (tokensmith.db.changes) and, on PostgreSQL,
within milliseconds on every other replica (verify/background.py). Expiry is checked against
the clock on every call, cached or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import lazyload

from tokensmith import metrics, scopes, secrets
from tokensmith.clock import Clock
from tokensmith.db import changes
from tokensmith.db.database import Database
from tokensmith.db.models import Organization, Token, User, token_clusters
from tokensmith.errors import AuthenticationFailed
from tokensmith.tokens.expiration import is_expired
from tokensmith.verify.background import Background
from tokensmith.verify.cache import UNKNOWN, VerificationCache
from tokensmith.verify.usage import UsageRecorder

INVALID = "invalid token"
EXPIRED = "token expired"
# The lookup selects exactly what it needs; the models' eager relationships would cost two more
# joins and a query per lookup.
_NO_RELATIONSHIPS = (lazyload(Token.user), lazyload(Token.clusters), lazyload(User.organization))


@dataclass(frozen=True)
class Identity:
    """Everything a door needs to know about the caller behind a verified secret."""

    token_id: int
    token_public_id: str
    token_name: str
    user_id: int
    user_public_id: str
    username: str
    org_id: int
    org_public_id: str
    org_name: str
    is_admin: bool
    created_at: datetime
    expires_at: datetime | None
    cluster_ids: frozenset[int]
    scopes: frozenset[str]
    # The token stores no scope list of its own: it holds whatever its owner may hold.
    holds_owner_scopes: bool = True
    # Verified by a rotated-out secret during its grace period (authenticates, manages nothing).
    rotated_out: bool = False
    # The token this one was derived from (a cluster credential's CLI login): revoking that one
    # drops this identity from the cache too (verify/cache.py indexes it under both ids).
    parent_token_id: int | None = None


class Verifier:
    def __init__(
        self, database: Database, secret_key: bytes, clock: Clock, cache: VerificationCache | None = None
    ) -> None:
        self.database = database
        self.secret_key = secret_key
        self.clock = clock
        self.cache = cache if cache is not None else VerificationCache()
        self.usage = UsageRecorder(database, clock)
        self.background = Background(database, self.cache, self.usage, clock)
        # Commits in this process drop what they changed from the cache at once.
        self._unsubscribe = changes.subscribe(database.engine, self.cache.invalidate)

    def verify(self, secret: str, client_ip: str | None = None) -> Identity:
        """The identity behind ``secret``; raises AuthenticationFailed ("token expired" or "invalid token")."""
        digest, cached = self._from_cache(secret)
        if cached is not None:
            return self._accept(cached, client_ip)
        generation = self.cache.generation
        identity = self.lookup(digest)
        if identity is None:
            self.cache.put_unknown(digest, generation)
            raise AuthenticationFailed(INVALID)
        self.cache.put(digest, identity, generation)
        return self._accept(identity, client_ip)

    def verify_cached(self, secret: str, client_ip: str | None = None) -> Identity | None:
        """Answer from memory only, without I/O: the identity, None when the cache cannot tell,
        or AuthenticationFailed for a malformed, known-unknown or expired secret."""
        _digest, cached = self._from_cache(secret)
        return None if cached is None else self._accept(cached, client_ip)

    def _from_cache(self, secret: str) -> tuple[str, Identity | None]:
        """(digest, cached identity or None); AuthenticationFailed for malformed or known-unknown secrets.

        Only digests of well-formed secrets are ever cached, so a cache hit needs no checksum
        check; a miss gets the full one before anything can reach the database.
        """
        if len(secret) != secrets.SECRET_LENGTH:
            raise AuthenticationFailed(INVALID)
        try:
            digest = secrets.digest(secret, self.secret_key)
        except UnicodeEncodeError:
            raise AuthenticationFailed(INVALID) from None
        cached = self.cache.get(digest)
        metrics.observe_cache(hit=cached is not None)  # a remembered unknown secret is a hit too
        if cached is UNKNOWN:
            raise AuthenticationFailed(INVALID)
        if cached is None and not secrets.is_well_formed(secret):
            raise AuthenticationFailed(INVALID)
        return digest, cached  # type: ignore[return-value]

    def _accept(self, identity: Identity, client_ip: str | None) -> Identity:
        now = self.clock.now()
        if is_expired(identity.expires_at, now):
            raise AuthenticationFailed(EXPIRED)
        self.usage.record(identity.token_id, client_ip, now)
        return identity

    def lookup(self, digest: str) -> Identity | None:
        """The live identity stored under ``digest``: None if unknown, revoked, or its user is disabled."""
        with self.database.session() as session:
            row = session.execute(
                select(Token, User, Organization)
                .options(*_NO_RELATIONSHIPS)
                .join(User, User.id == Token.user_id)
                .join(Organization, Organization.id == Token.org_id)
                .where(or_(Token.secret_digest == digest, and_(  # a rotated-out secret, during its grace
                    Token.previous_secret_digest == digest, Token.previous_grace_until > self.clock.now())))
            ).first()
            if row is None:
                return None
            token, user, org = row
            current = secrets.digests_match(token.secret_digest, digest)
            previous = token.previous_secret_digest is not None and secrets.digests_match(
                token.previous_secret_digest, digest)
            if token.revoked_at is not None or user.disabled or not (current or previous):
                return None
            parent_expires_at = None
            if token.parent_token_id is not None:
                # A derived token lives only as long as the token it was derived from (fail closed:
                # a parent gone, revoked or expired refuses the child).
                parent = session.execute(
                    select(Token.revoked_at, Token.expires_at).where(Token.id == token.parent_token_id)
                ).first()
                if parent is None or parent.revoked_at is not None or is_expired(parent.expires_at, self.clock.now()):
                    return None
                parent_expires_at = parent.expires_at
            cluster_ids = frozenset(
                session.scalars(select(token_clusters.c.cluster_id).where(token_clusters.c.token_id == token.id))
            )
            expires_at = token.expires_at
            if previous and not current and token.previous_grace_until is not None:
                # A rotated-out secret lives until its grace ends: as its expiry, a cached entry stops then too.
                grace = token.previous_grace_until
                expires_at = grace if expires_at is None or grace < expires_at else expires_at
            if parent_expires_at is not None and (expires_at is None or parent_expires_at < expires_at):
                expires_at = parent_expires_at
            return Identity(
                token_id=token.id, token_public_id=token.public_id, token_name=token.name,
                user_id=user.id, user_public_id=user.public_id, username=user.username,
                org_id=org.id, org_public_id=org.public_id, org_name=org.name, is_admin=user.is_admin,
                created_at=token.created_at, expires_at=expires_at, cluster_ids=cluster_ids,
                scopes=scopes.effective(scopes.deserialize(token.scopes), user.is_admin),
                holds_owner_scopes=token.scopes is None, rotated_out=previous and not current,
                parent_token_id=token.parent_token_id,
            )

    def start(self) -> None:
        """Start hearing other replicas, sweeping and flushing last-used times (server start-up)."""
        self.background.start()

    def stop(self) -> None:
        """Stop the background work and write every pending last-used time (server shutdown)."""
        self.background.stop()

    def close(self) -> None:
        """Stop receiving this process's invalidations (a Verifier being thrown away)."""
        self._unsubscribe()
