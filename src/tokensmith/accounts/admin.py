"""Organization admins managing their users: list, create, disable, reset a password."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tokensmith.accounts.passwords import generate_password
from tokensmith.accounts.service import AccountService
from tokensmith.actor import Actor, require_admin
from tokensmith.clock import Clock
from tokensmith.db.models import Organization, User
from tokensmith.errors import InvalidInput, NotFound


class UserAdminService:
    def __init__(self, session: Session, clock: Clock) -> None:
        self.session = session
        self.clock = clock
        self.accounts = AccountService(session, clock)

    def list(self, actor: Actor) -> list[User]:
        """The users of the admin's organization, by user name; Forbidden for non-admins."""
        require_admin(actor, "listing users")
        # Service accounts have their own page and rules (tokensmith.federation.accounts).
        return list(self.session.scalars(select(User).where(User.org_id == actor.org_id, User.kind != "service")
                                         .order_by(User.username)))

    def create(self, actor: Actor, username: str, password: str, *, is_admin: bool = False) -> User:
        """A new user of the admin's organization, who must change this first password."""
        require_admin(actor, "creating users")
        org = self.session.get(Organization, actor.org_id)
        assert org is not None
        return self.accounts.create_user(org, username, password, is_admin=is_admin, must_change_password=True)

    def _user(self, actor: Actor, ref: str) -> User:
        try:
            user = self.accounts.get_user_in_org(actor.org_id, ref)
        except NotFound:
            raise NotFound(f"user {ref!r} not found") from None
        if user.kind == "service":  # no password, ever: it must not become one that can sign in
            raise NotFound(f"user {ref!r} not found (it is a service account: see /v1/service-accounts)")
        return user

    def set_disabled(self, actor: Actor, ref: str, disabled: bool) -> User:
        """Disable (tokens and sessions stop working) or re-enable a user; admins cannot disable themselves."""
        require_admin(actor, "disabling users")
        user = self._user(actor, ref)
        if disabled and user.id == actor.user_id:
            raise InvalidInput("you cannot disable your own account", "user")
        user.disabled = disabled
        if disabled:
            self.accounts.end_sessions(user, "disabled")
        self.session.flush()
        return user

    def reset_password(self, actor: Actor, ref: str) -> tuple[User, str]:
        """Give a user a new random password (returned once), to be changed at next sign-in."""
        require_admin(actor, "resetting passwords")
        user = self._user(actor, ref)
        password = generate_password()
        # Another user's sessions end at once; an admin resetting their own password stays signed in.
        self.accounts.set_password(user, password, reason="password_reset", end_sessions=user.id != actor.user_id)
        user.must_change_password = True
        self.session.flush()
        return user, password
