"""Who is asking: the small interface services need from an authenticated caller."""

from __future__ import annotations

from typing import Protocol


class Actor(Protocol):
    @property
    def user_id(self) -> int: ...

    @property
    def org_id(self) -> int: ...

    @property
    def is_admin(self) -> bool: ...
