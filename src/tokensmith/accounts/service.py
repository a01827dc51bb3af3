"""Organizations and users: creation, lookup and password sign-in."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tokensmith import secrets
from tokensmith.accounts.passwords import hash_password, verify_password
from tokensmith.clock import Clock
from tokensmith.db.models import ConsoleSession, Organization, User
from tokensmith.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from tokensmith.validation import clean_identifier

MIN_PASSWORD_LENGTH = 8


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
        if self.session.scalar(select(User.id).where(User.username == username)) is not None:
            raise Conflict(f"user {username!r} already exists")
        if password is not None and len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters", "password")
        user = User(
            public_id=secrets.public_id("usr"), org_id=org.id, username=username,
            password_hash=hash_password(password) if password is not None else None,
            is_admin=is_admin, disabled=False, must_change_password=must_change_password,
            created_at=self.clock.now(),
        )
        self.session.add(user)
        self.session.flush()
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

    def set_password(self, user: User, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters", "password")
        user.password_hash = hash_password(password)
        user.must_change_password = False

    def end_console_sessions(self, user: User) -> None:
        """Sign a user out of the console everywhere (disabled, or a password set by someone else)."""
        self.session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
