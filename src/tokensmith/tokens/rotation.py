"""Grace periods for rotation: how long a replaced secret keeps working."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

from tokensmith.errors import InvalidInput

MAX_GRACE: Final = timedelta(days=7)
_GRACE: Final = re.compile(r"(\d{1,7})([smhd])")
_UNITS: Final = {"s": timedelta(seconds=1), "m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


def parse_grace(text: str) -> timedelta:
    """Parse a grace period such as 0s, 90s, 15m, 1h, 7d; InvalidInput unless 0s..7d."""
    match = _GRACE.fullmatch(text.strip().lower())
    if not match:
        raise InvalidInput(f"grace {text!r} is not understood; use a duration from 0s to 7d, e.g. 0s, 15m, 1h", "grace")
    grace = int(match.group(1)) * _UNITS[match.group(2)]
    if grace > MAX_GRACE:
        raise InvalidInput("grace may be at most 7d", "grace")
    return grace
