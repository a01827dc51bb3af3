"""Who is asking: the small interface services need from an authenticated caller."""

from __future__ import annotations

from typing import Protocol

from tokensmith.errors import Forbidden


class Actor(Protocol):
    @property
    def user_id(self) -> int: ...

    @property
    def org_id(self) -> int: ...

    @property
    def is_admin(self) -> bool: ...


def require_admin(actor: Actor, action: str) -> None:
    """Forbidden unless ``actor`` is an organization admin now: the one "requires an admin" rule."""
    if not actor.is_admin:
        raise Forbidden(f"{action} requires an organization admin")
