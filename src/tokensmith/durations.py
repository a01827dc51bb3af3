"""One duration grammar for every door: API, console and CLI.

A duration is a whole number and one unit letter, with no space: ``30s``, ``30m`` (minutes),
``8h``, ``30d``, ``12w``, ``1y`` (365 days), ``0s``. There is no unit for months: ``m`` always
means minutes, and ``1M``/``1mo`` are refused with a hint, because "1m" silently meaning one
minute to someone who wanted a month is the mistake this grammar exists to prevent.

Where an absolute expiry is allowed, :func:`parse_instant` also takes a date ``YYYY-MM-DD``
(00:00 UTC that day) or an RFC 3339 instant with a timezone.

Callers decide the allowed range (a grace period is 0s..7d, a token lifetime is positive);
this module only decides what the text means.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Final

from tokensmith.errors import InvalidInput

UNITS: Final[dict[str, timedelta]] = {
    "s": timedelta(seconds=1), "m": timedelta(minutes=1), "h": timedelta(hours=1),
    "d": timedelta(days=1), "w": timedelta(weeks=1), "y": timedelta(days=365),
}
GRAMMAR: Final = "a number and a unit s, m (minutes), h, d, w or y, e.g. 30m, 8h, 30d, 12w, 1y"
DATE_GRAMMAR: Final = "a date YYYY-MM-DD or an RFC 3339 instant with a timezone, e.g. 2027-01-31T12:00:00Z"
MONTHS_HINT: Final = "there is no unit for months: use 30d or 4w, not 1M/1mo"
# Bounded so that amount * unit can never overflow timedelta (a 500 found by fuzzing once);
# callers set their own, far shorter, limits.
LONGEST: Final = timedelta(days=100 * 365)
_DURATION: Final = re.compile(r"(\d+)(\s*)([a-zA-Z]+)", re.ASCII)  # ASCII: "٣d" is not a duration
_WORDS: Final = {"sec": "s", "second": "s", "min": "m", "minute": "m", "hour": "h", "hr": "h", "day": "d",
                 "week": "w", "wk": "w", "year": "y", "yr": "y"}


def parse_duration(text: str, field: str = "duration") -> timedelta:
    """``30m`` -> 30 minutes; InvalidInput (naming the grammar, and ``field``) for anything else.

    Zero is a duration (``0s``); negative numbers are not.
    """
    value = text.strip()
    match = _DURATION.fullmatch(value)
    if match is None:
        if value.isdigit():
            raise InvalidInput(f"{field} {text!r} has no unit; use {GRAMMAR}", field)
        raise InvalidInput(f"{field} {text!r} is not a duration; use {GRAMMAR}", field)
    digits, space, unit = match.groups()
    if unit == "M" or unit.lower().startswith("mo"):
        raise InvalidInput(f"{field} {text!r} is ambiguous; {MONTHS_HINT}", field)
    letter = unit if unit in UNITS else _WORDS.get(unit.lower().removesuffix("s")) or (
        unit.lower() if unit.lower() in UNITS else None)
    if letter is None or space or letter != unit.lower():
        hint = f"; write {int(digits)}{letter}" if letter else ""
        raise InvalidInput(f"{field} {text!r} is not a duration{hint}; use {GRAMMAR}", field)
    if len(digits) > 12 or int(digits) > LONGEST // UNITS[letter]:
        raise InvalidInput(f"{field} {text!r} is far too long (at most 100y)", field)
    return int(digits) * UNITS[letter]


def parse_instant(text: str, field: str = "expires_at") -> datetime:
    """``2027-01-31`` (00:00 UTC) or an RFC 3339 instant with a timezone, as an aware datetime."""
    value = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return datetime.combine(date.fromisoformat(value), time(0, 0), tzinfo=UTC)
        except ValueError:
            raise InvalidInput(f"{field} {text!r} is not a calendar date; use {DATE_GRAMMAR}", field) from None
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise InvalidInput(f"{field} {text!r} is not a date; use {DATE_GRAMMAR}", field) from None
    if "T" not in value.upper() and " " not in value:
        raise InvalidInput(f"{field} {text!r} is not a date; use {DATE_GRAMMAR}", field)
    if moment.tzinfo is None:
        raise InvalidInput(f"{field} {text!r} has no timezone; add Z or an offset, e.g. {value}Z", field)
    return moment


def humanize(delta: timedelta) -> str:
    """A short, honest remaining time: ``23 hours``, ``3 days``, ``45 minutes`` (never ``0 d`` for 23 h)."""
    seconds = int(abs(delta.total_seconds()))
    # Years only from two on: "365 days" says more than "1 year" about a 400-day token.
    for size, unit, least in ((365 * 86400, "year", 2), (86400, "day", 1), (3600, "hour", 1), (60, "minute", 1),
                              (1, "second", 1)):
        if seconds >= size * least:
            # Rounded, not cut: a 30d token one second old has "30 days" left, not "29 days".
            count = (seconds + size // 2) // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "0 seconds"


def relative(moment: datetime, now: datetime) -> str:
    """``in 30 days`` or ``2 hours ago``."""
    delta = moment - now
    return f"in {humanize(delta)}" if delta >= timedelta(0) else f"{humanize(delta)} ago"
