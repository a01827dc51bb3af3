"""How long a token lives: presets, durations like ``45m``, or an explicit instant."""

from __future__ import annotations

from datetime import datetime, timedelta

from tokensmith import durations
from tokensmith.errors import InvalidInput

PRESETS = ("1h", "1d", "7d", "30d", "90d", "1y", "never")
# "1 month" of the cloud console this project follows is 30 days; the server's default when a
# request names no expiry, and the built-in policy's default (policy/ imports this one constant).
DEFAULT_EXPIRATION = "30d"
NEVER = "never"
CUSTOM = "custom"
# The expiration choices the console offers (value, label), in that console's order; a custom
# date comes after them. The organization's policy filters them (ExpiryPolicy.choices).
CHOICES: tuple[tuple[str, str], ...] = (
    ("1h", "1 hour"), ("8h", "8 hours"), (DEFAULT_EXPIRATION, "1 month"), ("90d", "90 days"),
    ("1y", "1 year"), (NEVER, "Never"),
)
# Far enough for any real use; keeps arithmetic and storage away from year 9999.
MAX_LIFETIME = timedelta(days=3650)

ACCEPTED = (
    "a preset (" + ", ".join(PRESETS) + f"), a positive duration ({durations.GRAMMAR}), "
    "or an RFC 3339 expires_at with a timezone in the future"
)


def parse_duration(text: str) -> timedelta | None:
    """``never`` (None) or a positive duration in the one grammar (tokensmith.durations); InvalidInput otherwise."""
    if text.strip().lower() == NEVER:
        return None
    try:
        duration = durations.parse_duration(text, "expiration")
    except InvalidInput as exc:
        raise InvalidInput(f"{exc.detail}; or a preset ({', '.join(PRESETS)})", "expiration") from None
    if duration <= timedelta(0):
        raise InvalidInput(f"expiration must be a positive duration; use {ACCEPTED}", "expiration")
    if duration > MAX_LIFETIME:
        raise InvalidInput(f"expiration may be at most {MAX_LIFETIME.days} days, or 'never'", "expiration")
    return duration


def resolve_expiry(
    now: datetime, expiration: str | None = None, expires_at: datetime | None = None
) -> datetime | None:
    """The expiry instant for a new token, or None for one that never expires."""
    if expiration is not None and expires_at is not None:
        raise InvalidInput("give either expiration or expires_at, not both", "expiration")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidInput("expires_at must include a timezone offset, e.g. 2030-01-01T00:00:00Z", "expires_at")
        if expires_at <= now:
            raise InvalidInput("expires_at must be in the future", "expires_at")
        if expires_at - now > MAX_LIFETIME:
            raise InvalidInput(f"expires_at may be at most {MAX_LIFETIME.days} days ahead", "expires_at")
        return expires_at
    duration = parse_duration(expiration if expiration is not None else DEFAULT_EXPIRATION)
    return None if duration is None else now + duration


def is_expired(expires_at: datetime | None, now: datetime) -> bool:
    """A token stops working at its expiry instant, not a moment later."""
    return expires_at is not None and now >= expires_at
