"""Grace periods for rotation: how long a replaced secret keeps working."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from tokensmith import durations
from tokensmith.errors import InvalidInput

MAX_GRACE: Final = timedelta(days=7)


def parse_grace(text: str) -> timedelta:
    """A grace period in the one duration grammar (0s, 90s, 15m, 1h, 7d); InvalidInput unless 0s..7d."""
    grace = durations.parse_duration(text, "grace")
    if grace > MAX_GRACE:
        raise InvalidInput("grace may be at most 7d", "grace")
    return grace
