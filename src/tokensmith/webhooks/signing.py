"""How deliveries are signed, and how a receiver checks them.

Header ``X-Tokensmith-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(signing secret, "<t>.<body>")>``.
The timestamp inside the signed text lets receivers refuse replays of old deliveries.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

SIGNATURE_HEADER: Final = "X-Tokensmith-Signature"
EVENT_HEADER: Final = "X-Tokensmith-Event"
DELIVERY_HEADER: Final = "X-Tokensmith-Delivery"


def sign(signing_secret: str, timestamp: int, body: bytes) -> str:
    """The header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(signing_secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(signing_secret: str, header: str, body: bytes) -> bool:
    """True when ``header`` is a valid signature of ``body`` under ``signing_secret``."""
    try:
        parts = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    return hmac.compare_digest(sign(signing_secret, timestamp, body), f"t={timestamp},v1={parts.get('v1', '')}")
