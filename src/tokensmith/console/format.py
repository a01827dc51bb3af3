"""How the console shows instants: relative ("in 3 days") next to exact UTC."""

from __future__ import annotations

from datetime import datetime

_UNITS = ((365 * 86400, "year"), (30 * 86400, "month"), (7 * 86400, "week"), (86400, "day"), (3600, "hour"),
          (60, "minute"))


def relative(moment: datetime | None, now: datetime) -> str:
    """``in 3 days``, ``5 minutes ago``, ``just now``; ``never`` for None."""
    if moment is None:
        return "never"
    seconds = (moment - now).total_seconds()
    distance = abs(seconds)
    if distance < 60:
        return "just now" if seconds <= 0 else "in under a minute"
    for size, unit in _UNITS:
        if distance >= size:
            count = int(distance // size)
            text = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {text}" if seconds > 0 else f"{text} ago"
    return "just now"  # unreachable: distance >= 60 matches minutes


def exact(moment: datetime | None) -> str:
    """``2030-01-01 12:00 UTC``; empty for None."""
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment is not None else ""
