"""Console sign-in sessions, CSRF tokens and one-time flashes.

Failed sign-ins are limited by the shared brute-force limits (ratelimit.py), like API sign-in.

The browser holds a random session id; the database holds only its HMAC digest, so a copy of
the database cannot be replayed as a cookie. CSRF tokens are derived from the session id (no
storage), and the one-time flash (a secret being revealed) is encrypted under a key derived
from the session id, so it is readable only by the browser it was made for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets as stdlib_secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tokensmith import caps, secrets
from tokensmith.clock import Clock
from tokensmith.db.models import ConsoleSession, User

IDLE_TIMEOUT = timedelta(minutes=30)
MAX_AGE = timedelta(hours=12)
# Writing last_seen_at on every page view would turn reads into writes; a minute is precise enough.
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Viewer:
    """The signed-in person, as the services' Actor protocol wants it."""

    user_id: int
    org_id: int
    is_admin: bool
    username: str
    org_name: str
    must_change_password: bool
    session_id: str  # the raw id from the cookie: needed to derive CSRF and flash keys


def _derive(key: bytes, purpose: str, session_id: str) -> bytes:
    return hmac.new(key, f"{purpose}:{session_id}".encode(), hashlib.sha256).digest()


def csrf_token(key: bytes, session_id: str) -> str:
    """The CSRF token of a session (or of a pre-sign-in cookie): only that cookie's holder can know it."""
    return base64.urlsafe_b64encode(_derive(key, "csrf", session_id)).decode().rstrip("=")


def csrf_valid(key: bytes, session_id: str | None, submitted: str | None) -> bool:
    if not session_id or not submitted:
        return False
    return hmac.compare_digest(csrf_token(key, session_id).encode(), submitted.encode())


class SessionService:
    def __init__(self, session: Session, clock: Clock, secret_key: bytes) -> None:
        self.session = session
        self.clock = clock
        self.secret_key = secret_key

    def digest_of(self, session_id: str) -> str:
        """What the database keeps of a session id (to name the one session to keep)."""
        return self._digest(session_id)

    def _digest(self, session_id: str) -> str:
        return hmac.new(self.secret_key, f"session:{session_id}".encode(), hashlib.sha256).hexdigest()

    def start(self, user: User) -> str:
        """Start a session for ``user``; returns the id for the cookie (shown nowhere else)."""
        session_id = stdlib_secrets.token_urlsafe(32)
        now = self.clock.now()
        # Sessions that ran out are deleted when seen; this sweeps those never seen again.
        self.session.execute(delete(ConsoleSession).where(
            (ConsoleSession.last_seen_at < now - IDLE_TIMEOUT) | (ConsoleSession.created_at < now - MAX_AGE)))
        self.session.add(ConsoleSession(digest=self._digest(session_id), user_id=user.id, created_at=now,
                                        last_seen_at=now))
        self.session.flush()
        self._end_oldest_beyond_cap(user.id)
        return session_id

    def _end_oldest_beyond_cap(self, user_id: int) -> None:
        """Keep at most the cap's number of sessions per user: a new sign-in ends the oldest ones.

        Ending the oldest (not refusing the new one) keeps the owner able to sign in when
        forgotten browsers hold every slot; a thief's older session is ended, not kept.
        """
        caps.lock_owner(self.session, user_id)
        keep = caps.current().sessions_per_user
        kept = select(ConsoleSession.id).where(ConsoleSession.user_id == user_id) \
            .order_by(ConsoleSession.created_at.desc(), ConsoleSession.id.desc()).limit(keep)
        self.session.execute(delete(ConsoleSession).where(
            ConsoleSession.user_id == user_id, ConsoleSession.id.not_in(kept.scalar_subquery()))
            .execution_options(synchronize_session=False))

    def _row(self, session_id: str) -> ConsoleSession | None:
        if not session_id or len(session_id) > 100:
            return None
        row = self.session.scalar(select(ConsoleSession).where(ConsoleSession.digest == self._digest(session_id)))
        if row is None or not secrets.digests_match(row.digest, self._digest(session_id)):
            return None
        return row

    def resume(self, session_id: str | None) -> Viewer | None:
        """The viewer behind a cookie, refreshing its idle timer; None if unknown, idle, too old or disabled."""
        row = self._row(session_id or "")
        if row is None:
            return None
        now = self.clock.now()
        if now - row.last_seen_at > IDLE_TIMEOUT or now - row.created_at > MAX_AGE or row.user.disabled:
            self.session.delete(row)
            self.session.flush()
            return None
        if now - row.last_seen_at >= TOUCH_EVERY:
            row.last_seen_at = now
        user = row.user
        return Viewer(user.id, user.org_id, user.is_admin, user.username, user.organization.name,
                      user.must_change_password, session_id or "")

    def end(self, session_id: str | None) -> None:
        """Sign out: the cookie is worthless from now on."""
        row = self._row(session_id or "")
        if row is not None:
            self.session.delete(row)
            self.session.flush()

    def put_flash(self, session_id: str, message: dict[str, Any]) -> None:
        """Keep ``message`` for the next page view of this session only, encrypted."""
        row = self._row(session_id)
        if row is None:
            return
        nonce = os.urandom(12)
        sealed = AESGCM(_derive(self.secret_key, "flash", session_id)).encrypt(
            nonce, json.dumps(message).encode(), row.digest.encode()
        )
        row.flash = base64.b64encode(nonce + sealed).decode()
        self.session.flush()

    def pop_flash(self, session_id: str) -> dict[str, Any] | None:
        """The pending one-time message, removed as it is read; None if there is none."""
        row = self._row(session_id)
        if row is None or row.flash is None:
            return None
        raw = base64.b64decode(row.flash)
        row.flash = None
        self.session.flush()
        try:
            plain = AESGCM(_derive(self.secret_key, "flash", session_id)).decrypt(
                raw[:12], raw[12:], row.digest.encode()
            )
        except (InvalidTag, ValueError):
            return None
        return json.loads(plain)
