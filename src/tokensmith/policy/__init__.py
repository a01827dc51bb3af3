"""Per-organization policy: token expiry (maximum lifetime, whether "never" is allowed, default
expiration) and how long temporary S3 access keys may live.

No stored row means the built-in behaviour (default 30d, "never" allowed, at most 3650 days;
temporary access keys at most 7 days). An admin may allow access keys up to 365 days.

One source of truth: a maximum lifetime excludes "never", so ``allow_never`` is forced false
whenever ``max_lifetime_days`` is set (what the API returns is what is enforced).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from tokensmith.clock import Clock
from tokensmith.db.models import OrgPolicy
from tokensmith.errors import InvalidInput
from tokensmith.objectstore.limits import CEILING, DEFAULT_MAX_DURATION, MIN_ALLOWANCE, in_words
from tokensmith.tokens.expiration import CHOICES, DEFAULT_EXPIRATION, MAX_LIFETIME, NEVER, parse_duration


@dataclass(frozen=True)
class ExpiryPolicy:
    max_lifetime_days: int | None = None
    allow_never: bool = True
    default_expiration: str = DEFAULT_EXPIRATION
    # The longest lifetime of a temporary S3 access key, in seconds (MIN_ALLOWANCE..CEILING).
    max_access_key_seconds: int = DEFAULT_MAX_DURATION

    def __post_init__(self) -> None:
        # A maximum lifetime and "never" cannot both hold: the maximum wins, so the stored and
        # returned allow_never is the one enforced (a PUT of {"max_lifetime_days": 90} answers false).
        if self.max_lifetime_days is not None:
            object.__setattr__(self, "allow_never", False)

    def allows(self, expiration: str) -> bool:
        """Whether a token created now with the duration ``expiration`` (or "never") would be accepted."""
        duration = parse_duration(expiration)
        if duration is None:
            return self.allow_never
        return not self.max_lifetime_days or duration <= timedelta(days=self.max_lifetime_days)

    def choices(self) -> list[tuple[str, str]]:
        """The console's expiration choices this policy accepts (value, label), in their usual order."""
        return [(value, label) for value, label in CHOICES if self.allows(value)]

    def latest(self, now: datetime) -> datetime | None:
        """The latest expiry a token may get at ``now`` (None: no maximum)."""
        return now + timedelta(days=self.max_lifetime_days) if self.max_lifetime_days else None

    def describe_access_keys(self) -> str:
        """The access-key allowance as one phrase, for error messages and audit events."""
        return f"temporary access keys at most {in_words(self.max_access_key_seconds)}"

    def describe(self) -> str:
        """The policy as one sentence, for error messages."""
        longest = f"at most {self.max_lifetime_days} days" if self.max_lifetime_days else "no maximum lifetime"
        never = "'never' allowed" if self.allow_never else "'never' not allowed"
        return f"organization policy: {longest}, {never}, default {self.default_expiration}"

    def enforce(self, now: datetime, expiry: datetime | None, field: str = "expiration") -> datetime | None:
        """Return ``expiry`` if the policy allows it; InvalidInput stating the policy otherwise."""
        if expiry is None:
            if not self.allow_never:
                raise InvalidInput(f"a token that never expires is refused by the {self.describe()}", field)
            return None
        if self.max_lifetime_days and expiry - now > timedelta(days=self.max_lifetime_days):
            raise InvalidInput(f"this lifetime is refused by the {self.describe()}", field)
        return expiry

    def check_consistent(self) -> None:
        """InvalidInput when the policy contradicts itself (its own default would be refused)."""
        if self.max_lifetime_days is not None and not 1 <= self.max_lifetime_days <= MAX_LIFETIME.days:
            raise InvalidInput(f"max_lifetime_days must be between 1 and {MAX_LIFETIME.days}", "max_lifetime_days")
        if isinstance(self.max_access_key_seconds, bool) or not isinstance(self.max_access_key_seconds, int) \
                or not MIN_ALLOWANCE <= self.max_access_key_seconds <= CEILING:
            raise InvalidInput(f"max_access_key_seconds must be a whole number of seconds from {MIN_ALLOWANCE} "
                               f"({in_words(MIN_ALLOWANCE)}) to {CEILING} ({in_words(CEILING)})",
                               "max_access_key_seconds")
        duration = parse_duration(self.default_expiration)
        if duration is None and not self.allow_never:
            raise InvalidInput("default_expiration 'never' contradicts the policy", "default_expiration")
        if duration is not None and self.max_lifetime_days and duration > timedelta(days=self.max_lifetime_days):
            raise InvalidInput("default_expiration is longer than max_lifetime_days", "default_expiration")


def policy_change(before: ExpiryPolicy, after: ExpiryPolicy) -> dict[str, str]:
    """What an audit event records about a policy change (API and console alike)."""
    return {"before": before.describe(), "after": after.describe(),
            "access_keys_before": before.describe_access_keys(), "access_keys_after": after.describe_access_keys()}


class PolicyService:
    def __init__(self, session: Session, clock: Clock) -> None:
        self.session = session
        self.clock = clock

    def get(self, org_id: int) -> ExpiryPolicy:
        """The organization's policy (built-in defaults when none was set)."""
        row = self.session.get(OrgPolicy, org_id)
        if row is None:
            return ExpiryPolicy()
        return ExpiryPolicy(row.max_lifetime_days, row.allow_never, row.default_expiration or DEFAULT_EXPIRATION,
                            row.max_access_key_seconds or DEFAULT_MAX_DURATION)

    def set(self, org_id: int, policy: ExpiryPolicy) -> ExpiryPolicy:
        """Store a policy; InvalidInput if it contradicts itself. Existing tokens are not changed."""
        policy = ExpiryPolicy(
            policy.max_lifetime_days, policy.allow_never, policy.default_expiration.strip().lower() or NEVER,
            policy.max_access_key_seconds,
        )
        policy.check_consistent()
        row = self.session.get(OrgPolicy, org_id)
        if row is None:
            row = OrgPolicy(org_id=org_id)
            self.session.add(row)
        row.max_lifetime_days = policy.max_lifetime_days
        row.allow_never = policy.allow_never
        row.default_expiration = policy.default_expiration
        row.max_access_key_seconds = policy.max_access_key_seconds
        row.updated_at = self.clock.now()
        self.session.flush()
        return policy
