"""Organizations and users: creation, lookup and password sign-in."""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tokensmith import secrets
from tokensmith.accounts.passwords import hash_password, verify_password
from tokensmith.clock import Clock
from tokensmith.db.database import flush_or_conflict
from tokensmith.db.models import ConsoleSession, Organization, User
from tokensmith.errors import AuthenticationFailed, Conflict, Forbidden, InvalidInput, NotFound
from tokensmith.validation import clean_identifier

MIN_PASSWORD_LENGTH = 8
log = logging.getLogger("tokensmith.accounts")


class AccountService:
    def __init__(self, session: Session, clock: Clock) -> None:
        self.session = session
        self.clock = clock

    def get_or_create_org(self, name: str) -> Organization:
        """Return the organization called ``name``, creating it if needed."""
        name = clean_identifier(name, "organization")
        org = self.session.scalar(select(Organization).where(Organization.name == name))
        if org is None:
            org = Organization(public_id=secrets.public_id("org"), name=name, created_at=self.clock.now())
            self.session.add(org)
            self.session.flush()
        return org

    def create_user(
        self, org: Organization, username: str, password: str | None, *, is_admin: bool = False,
        must_change_password: bool = False,
    ) -> User:
        """Create a user; raises Conflict if the user name is taken, InvalidInput for a weak password."""
        username = clean_identifier(username, "username")
        conflict = Conflict(f"user {username!r} already exists")
        if self.session.scalar(select(User.id).where(User.username == username)) is not None:
            raise conflict
        if password is not None and len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters", "password")
        user = User(
            public_id=secrets.public_id("usr"), org_id=org.id, username=username,
            password_hash=hash_password(password) if password is not None else None,
            is_admin=is_admin, disabled=False, must_change_password=must_change_password,
            created_at=self.clock.now(),
        )
        self.session.add(user)
        flush_or_conflict(self.session, conflict)
        return user

    def find_user(self, username: str) -> User | None:
        return self.session.scalar(select(User).where(User.username == username))

    def get_user_in_org(self, org_id: int, ref: str) -> User:
        """A user of the organization by public id or user name; NotFound otherwise."""
        user = self.session.scalar(
            select(User).where(User.org_id == org_id, (User.public_id == ref) | (User.username == ref))
        )
        if user is None:
            raise NotFound(f"user {ref!r} not found")
        return user

    def authenticate(self, username: str, password: str) -> User:
        """The active user with this password; AuthenticationFailed (same message either way) otherwise."""
        user = self.find_user(username)
        ok = verify_password(user.password_hash if user else None, password)
        if user is None or not ok or user.disabled or user.kind == "service":
            raise AuthenticationFailed("invalid username or password", error=None)
        return user

    def authenticate_for_token(self, username: str, password: str) -> User:
        """``authenticate``, for minting an API token: Forbidden while the password must be changed.

        An initial or reset password is for one thing only: choosing a new one (in the console).
        Checked after the password, so it tells nothing to someone who does not know it.
        """
        user = self.authenticate(username, password)
        if user.must_change_password:
            raise Forbidden("this password must be changed before it can mint tokens; "
                            "sign in to the console and choose a new one")
        return user

    def set_password(self, user: User, password: str, *, keep_session_digest: str | None = None,
                     reason: str = "password_changed", end_sessions: bool = True) -> None:
        """Set a new password and end the user's console sessions but the one (digest) that changed it.

        Whoever knew the old password may hold a session in another browser; it ends at once.
        """
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters", "password")
        user.password_hash = hash_password(password)
        user.must_change_password = False
        if end_sessions:
            self.end_sessions(user, reason, keep_digest=keep_session_digest)

    def end_sessions(self, user: User, reason: str, *, keep_digest: str | None = None) -> int:
        """End the user's console sessions (but ``keep_digest``); how many ended.

        ``reason`` is for the log; the audit event is the operation's own (password changed, reset,
        user disabled), recorded once by the use-case layer.
        """
        query = delete(ConsoleSession).where(ConsoleSession.user_id == user.id)
        if keep_digest is not None:
            query = query.where(ConsoleSession.digest != keep_digest)
        result = self.session.execute(query.execution_options(synchronize_session=False))
        ended = int(getattr(result, "rowcount", 0) or 0)  # a DELETE's CursorResult
        if ended:
            log.info("ended %d console session(s) of user %s: %s", ended, user.public_id, reason)
        return ended
