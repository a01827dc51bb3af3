"""Per-user caps on what one account can hold, so one account cannot fill the database.

Set from the settings when the app is made (``configure``); the services read ``current()``.
Counting and inserting are serialized per user by ``lock_owner`` (an UPDATE of the owner's row:
a row lock on PostgreSQL, the write lock on SQLite), so concurrent creates cannot overshoot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, update
from sqlalchemy.orm import Session

from tokensmith.db.models import User
from tokensmith.errors import InvalidInput


@dataclass(frozen=True)
class Caps:
    tokens_per_user: int = 100  # live (not revoked, not expired) tokens
    access_keys_per_user: int = 100  # live S3 access keys
    sessions_per_user: int = 20  # console sessions; starting one more ends the oldest


_current = Caps()


def configure(caps: Caps) -> None:
    global _current
    _current = caps


def current() -> Caps:
    return _current


def lock_owner(session: Session, user_id: int) -> None:
    """Hold the owner's row until the unit of work ends: concurrent creates count one after another."""
    # Core, on the session's connection: an ORM bulk UPDATE would make db/changes.py drop every cache.
    users = cast(Table, User.__table__)
    session.connection().execute(update(users).where(users.c.id == user_id).values(id=users.c.id))


def refuse_over(count: int, limit: int, what: str, setting: str) -> None:
    """InvalidInput (422) naming the limit when ``count`` live things already reach it."""
    if count >= limit:
        raise InvalidInput(
            f"limit reached: a user may hold at most {limit} {what} ({setting}); delete some first", "limit")
