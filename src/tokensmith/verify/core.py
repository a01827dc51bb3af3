"""Secret → identity. Parse, checksum, HMAC, cache or lookup, then expiry and revocation checks.

It fails closed: anything unexpected is a refusal, never a pass. Every failure
but expiry carries the same neutral "invalid token" so callers learn nothing.

Verified identities are cached by digest (see verify/cache.py); any committed change to a token
or its user drops them at once in this process (tokensmith.db.changes) and, on PostgreSQL,
within milliseconds on every other replica (verify/background.py). Expiry is checked against
the clock on every call, cached or not.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.exc import DBAPIError

from tokensmith import metrics, scopes, secrets
from tokensmith.clock import Clock
from tokensmith.db.database import Database
from tokensmith.db.models import Organization, Token, User, token_clusters
from tokensmith.errors import AuthenticationFailed
from tokensmith.refresher import Refresher
from tokensmith.tokens.expiration import is_expired
from tokensmith.verify.background import Background
from tokensmith.verify.cache import UNKNOWN, VerificationCache
from tokensmith.verify.feed import SQLiteChangeFeed, sqlite_path
from tokensmith.verify.usage import UsageRecorder

log = logging.getLogger("tokensmith.verify")
INVALID = "invalid token"
EXPIRED = "token expired"
_tokens, _users, _orgs = Token.__table__, User.__table__, Organization.__table__
_parents = _tokens.alias("parent")
# The cold path's one query: the token (by its current digest, or its previous one during a
# rotation's grace), its user, its organization, the token it was derived from (if any) and its
# clusters, as plain rows.
_LOOKUP = (
    select(
        _tokens.c.id.label("token_id"), _tokens.c.public_id.label("token_public_id"),
        _tokens.c.name.label("token_name"), _tokens.c.secret_digest, _tokens.c.previous_secret_digest,
        _tokens.c.previous_grace_until, _tokens.c.revoked_at, _tokens.c.expires_at, _tokens.c.created_at,
        _tokens.c.scopes, _tokens.c.parent_token_id, _users.c.id.label("user_id"),
        _users.c.public_id.label("user_public_id"),
        _users.c.username, _users.c.is_admin, _users.c.disabled, _orgs.c.id.label("org_id"),
        _orgs.c.public_id.label("org_public_id"), _orgs.c.name.label("org_name"), token_clusters.c.cluster_id,
        token_clusters.c.level, _parents.c.id.label("parent_id"), _parents.c.revoked_at.label("parent_revoked_at"),
        _parents.c.expires_at.label("parent_expires_at"),
    )
    .select_from(
        _tokens.join(_users, _users.c.id == _tokens.c.user_id)
        .join(_orgs, _orgs.c.id == _tokens.c.org_id)
        .outerjoin(_parents, _parents.c.id == _tokens.c.parent_token_id)
        .outerjoin(token_clusters, token_clusters.c.token_id == _tokens.c.id)
    )
    .where(or_(_tokens.c.secret_digest == bindparam("digest"), and_(
        _tokens.c.previous_secret_digest == bindparam("digest"), _tokens.c.previous_grace_until > bindparam("now"))))
)


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
    # Cluster id -> the token's access level there (view, edit, admin, cluster-admin); keys == cluster_ids.
    cluster_levels: Mapping[int, str] = field(default_factory=dict, hash=False, compare=False)
    # A door's answer for this identity, encoded once and reused while it is cached (api/fastpath.py).
    wire: dict[object, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
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
        # Commits in this process drop what they changed from the cache at once; other worker
        # processes on the same SQLite file are heard through the change feed, before every
        # verification (PostgreSQL replicas: LISTEN/NOTIFY in the background).
        self._unsubscribe = database.changes.subscribe(self.cache.invalidate)
        self.feed = _change_feed(database)
        self.background = Background(database, self.cache, self.usage, clock, feed=self.feed)
        # A busy caller's entry is looked up again in the background before it expires.
        self.refresher = Refresher(self._renew, "tokensmith-verify-refresh")
        self.cache.refresh = self.refresher.submit

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

    def recall(self, secret: str, now: datetime | None = None) -> Identity | None:
        """The cached identity behind ``secret``, unexpired at ``now`` (default: the clock's), or None;
        never raises, notes no use.

        For fast paths that may still hand the request to a slow path: a use is noted with
        ``note_use`` only once the fast path answers, so no use is counted twice.
        """
        try:
            _digest, cached = self._from_cache(secret, count=False)
        except AuthenticationFailed:
            return None
        if cached is None or is_expired(cached.expires_at, now or self.clock.now()):
            return None
        return cached

    def note_use(self, identity: Identity, client_ip: str | None, now: datetime | None = None) -> None:
        """Note a use of ``identity``'s token at ``now`` (default: the clock's), answered from the cache
        (last-used time, hourly count, and the cache-hit metric ``recall`` left uncounted; no I/O)."""
        metrics.observe_cache(hit=True)
        self.usage.record(identity.token_id, client_ip, now or self.clock.now())

    def hear_changes(self) -> None:
        """Apply what other worker processes committed (SQLite), before answering from any cache."""
        if self.feed is not None:
            self.feed.poll()

    def _from_cache(self, secret: str, count: bool = True) -> tuple[str, Identity | None]:
        """(digest, cached identity or None); AuthenticationFailed for malformed or known-unknown secrets.

        Only digests of well-formed secrets are ever cached, so a cache hit needs no checksum
        check; a miss gets the full one before anything can reach the database.
        """
        if self.feed is not None:
            self.feed.poll()
        if len(secret) != secrets.SECRET_LENGTH:
            raise AuthenticationFailed(INVALID)
        try:
            digest = secrets.digest(secret, self.secret_key)
        except UnicodeEncodeError:
            raise AuthenticationFailed(INVALID) from None
        cached = self.cache.get(digest)
        if count:
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
        """The live identity stored under ``digest``: None if unknown, revoked, or its user is disabled.

        The cold path: one indexed query (SQLAlchemy Core, no ORM objects; on PostgreSQL one round
        trip), one row per granted cluster (at least one row).
        """
        now = self.clock.now()
        try:
            rows = self._rows(digest, now)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # The connection was lost between its checkout and the query (the database restarted
            # just then). A read is safe to repeat, once, on a new connection.
            rows = self._rows(digest, now)
        if not rows:
            return None
        first = rows[0]
        current = secrets.digests_match(first.secret_digest, digest)
        previous = first.previous_secret_digest is not None and secrets.digests_match(
            first.previous_secret_digest, digest)
        if first.revoked_at is not None or first.disabled or not (current or previous):
            return None
        parent_expires_at = None
        if first.parent_token_id is not None:
            # A derived token (a cluster credential) lives only as long as the token it was derived
            # from: a parent gone, revoked or expired refuses the child (fail closed).
            if first.parent_id is None or first.parent_revoked_at is not None or is_expired(
                    first.parent_expires_at, now):
                return None
            parent_expires_at = first.parent_expires_at
        expires_at = first.expires_at
        if previous and not current and first.previous_grace_until is not None:
            # A rotated-out secret lives until its grace ends: as its expiry, a cached entry stops then too.
            grace = first.previous_grace_until
            expires_at = grace if expires_at is None or grace < expires_at else expires_at
        if parent_expires_at is not None and (expires_at is None or parent_expires_at < expires_at):
            expires_at = parent_expires_at
        return Identity(
            token_id=first.token_id, token_public_id=first.token_public_id, token_name=first.token_name,
            user_id=first.user_id, user_public_id=first.user_public_id, username=first.username,
            org_id=first.org_id, org_public_id=first.org_public_id, org_name=first.org_name,
            is_admin=first.is_admin, created_at=first.created_at, expires_at=expires_at,
            cluster_ids=frozenset(row.cluster_id for row in rows if row.cluster_id is not None),
            cluster_levels=MappingProxyType({row.cluster_id: row.level for row in rows if row.cluster_id is not None}),
            scopes=scopes.effective(scopes.deserialize(first.scopes), first.is_admin),
            holds_owner_scopes=first.scopes is None, rotated_out=previous and not current,
            parent_token_id=first.parent_token_id,
        )

    def _renew(self, digest: str) -> None:
        """The background lookup of a cached digest before its entry expires (verify/cache.py)."""
        renewal = self.cache.renewal(digest)  # before the lookup: a change after it drops the entry
        if renewal is not None:
            self.cache.renew(digest, renewal, self.lookup(digest))

    def _rows(self, digest: str, now: datetime) -> Sequence[Any]:
        with self.database.single_read() as connection:
            return connection.execute(_LOOKUP, {"digest": digest, "now": now}).all()

    def start(self) -> None:
        """Start hearing other replicas, sweeping and flushing last-used times (server start-up)."""
        self.background.start()

    def stop(self) -> None:
        """Stop the background work and write every pending last-used time (server shutdown)."""
        self.refresher.stop()
        self.background.stop()

    def close(self) -> None:
        """Stop receiving this process's invalidations (a Verifier being thrown away)."""
        self._unsubscribe()
        self.refresher.stop()
        if self.feed is not None:
            self.feed.close()


def _change_feed(database: Database) -> SQLiteChangeFeed | None:
    """Other workers' commits on the same SQLite file, published to every cache of this process."""
    path = sqlite_path(database.url)
    if path is None:
        return None
    try:
        return SQLiteChangeFeed(path, database.changes.publish)
    except sqlite3.Error as exc:  # a database not migrated yet (readyz refuses traffic then)
        log.warning("no cross-process invalidation for %s: %s", path, exc)
        return None
