"""How long a temporary S3 access key may live: the fixed floor, the default limit and the hard ceiling.

An organization may set its limit anywhere from ``MIN_ALLOWANCE`` to ``CEILING`` (its policy, see
tokensmith.policy); without a policy the limit is ``DEFAULT_MAX_DURATION``, 7 days.
"""

from __future__ import annotations

from typing import Final

MIN_DURATION: Final = 900  # 15 minutes
DEFAULT_MAX_DURATION: Final = 7 * 24 * 3600  # 7 days
# The SDK exchange hands out one-hour keys whatever the organization's limit: no limit goes below that.
MIN_ALLOWANCE: Final = 3600
CEILING: Final = 365 * 24 * 3600  # 365 days: no organization may allow longer-lived temporary keys


def in_words(seconds: int) -> str:
    """``604800`` → ``7 days``, ``3600`` → ``1 hour``, ``5400`` → ``90 minutes``: for messages."""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} seconds"
