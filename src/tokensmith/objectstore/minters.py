"""Which token mints an S3 access key when the caller has no token in hand (the web console).

An API caller mints with the token it presents. A console user has a session instead, so they
pick one of their own tokens; it must be one that could mint the key itself through the API:
live, not expired, and holding the ``object-storage:write`` scope. The key then records it, and
deleting that token revokes the temporary keys it minted, exactly as for keys minted over the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tokensmith import scopes
from tokensmith.actor import Actor
from tokensmith.db.models import Token
from tokensmith.errors import InvalidInput
from tokensmith.tokens.liveness import live_token

MINT_SCOPE = "object-storage:write"


@dataclass(frozen=True)
class TokenMinter:
    """A user minting with one of their tokens (AccessKeyService's Minter)."""

    user_id: int
    org_id: int
    is_admin: bool
    token_id: int
    token_public_id: str
    token_name: str
    expires_at: datetime | None


def minting_tokens(session: Session, actor: Actor, now: datetime) -> list[Token]:
    """The caller's own tokens that may mint keys now, the most recently created first."""
    candidates = session.scalars(
        select(Token).where(
            Token.user_id == actor.user_id, Token.org_id == actor.org_id, live_token(now),
        ).order_by(Token.created_at.desc(), Token.id.desc())
    )
    return [t for t in candidates if MINT_SCOPE in scopes.effective(scopes.deserialize(t.scopes), actor.is_admin)]


def minter_for(session: Session, actor: Actor, token_public_id: str, now: datetime) -> TokenMinter:
    """The caller minting with their token ``token_public_id``; InvalidInput (field "token") otherwise."""
    for token in minting_tokens(session, actor, now):
        if token.public_id == token_public_id:
            return TokenMinter(actor.user_id, actor.org_id, actor.is_admin, token.id, token.public_id, token.name,
                               token.expires_at)
    raise InvalidInput("choose one of your active tokens with the object-storage:write scope", "token")
