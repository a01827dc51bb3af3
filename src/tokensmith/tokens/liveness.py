"""When a token counts: "expired" and "live", written once, in Python and as SQL.

``is_expired`` (tokens/expiration.py) is the rule for one instant; ``unexpired`` is the same rule
as a SQL condition, and ``live_token`` the whole "this token works" condition that every query
over usable tokens filters with (metrics, minting, the verification cache's sweep, expiry lists).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from tokensmith.db.models import Token, User
from tokensmith.tokens.expiration import is_expired

__all__ = ["is_expired", "live_token", "unexpired"]


def unexpired(expires_at: InstrumentedAttribute[datetime | None], now: datetime) -> ColumnElement[bool]:
    """SQL for ``not is_expired(expires_at, now)``: no expiry, or one still ahead."""
    return or_(expires_at.is_(None), expires_at > now)


def live_token(now: datetime) -> ColumnElement[bool]:
    """SQL: the token works at ``now``: not revoked, not expired, and its owner not disabled."""
    return and_(
        Token.revoked_at.is_(None),
        unexpired(Token.expires_at, now),
        Token.user_id.in_(select(User.id).where(User.disabled.is_(False))),
    )
