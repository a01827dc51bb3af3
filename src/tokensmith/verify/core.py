"""Secret → identity. Parse, checksum, HMAC, lookup, then expiry and revocation checks.

It fails closed: anything unexpected is a refusal, never a pass. Every failure
but expiry carries the same neutral "invalid token" so callers learn nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select

from tokensmith import scopes, secrets
from tokensmith.clock import Clock
from tokensmith.db.database import Database
from tokensmith.db.models import Organization, Token, User, token_clusters
from tokensmith.errors import AuthenticationFailed
from tokensmith.tokens.expiration import is_expired

INVALID = "invalid token"
EXPIRED = "token expired"


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


class Verifier:
    def __init__(self, database: Database, secret_key: bytes, clock: Clock) -> None:
        self.database = database
        self.secret_key = secret_key
        self.clock = clock

    def verify(self, secret: str) -> Identity:
        """The identity behind ``secret``; raises AuthenticationFailed ("token expired" or "invalid token")."""
        if not secrets.is_well_formed(secret):
            raise AuthenticationFailed(INVALID)
        identity = self.lookup(secrets.digest(secret, self.secret_key))
        if identity is None:
            raise AuthenticationFailed(INVALID)
        if is_expired(identity.expires_at, self.clock.now()):
            raise AuthenticationFailed(EXPIRED)
        return identity

    def lookup(self, digest: str) -> Identity | None:
        """The live identity stored under ``digest``: None if unknown, revoked, or its user is disabled."""
        with self.database.session() as session:
            row = session.execute(
                select(Token, User, Organization)
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
            cluster_ids = frozenset(
                session.scalars(select(token_clusters.c.cluster_id).where(token_clusters.c.token_id == token.id))
            )
            return Identity(
                token_id=token.id, token_public_id=token.public_id, token_name=token.name,
                user_id=user.id, user_public_id=user.public_id, username=user.username,
                org_id=org.id, org_public_id=org.public_id, org_name=org.name, is_admin=user.is_admin,
                created_at=token.created_at, expires_at=token.expires_at, cluster_ids=cluster_ids,
                scopes=scopes.effective(scopes.deserialize(token.scopes), user.is_admin),
            )
