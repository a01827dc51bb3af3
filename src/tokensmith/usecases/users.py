"""Organization admins managing users: create, disable or enable, reset a password, list."""

from __future__ import annotations

from tokensmith.accounts.admin import UserAdminService
from tokensmith.bootstrap import forget_initial_password
from tokensmith.db.models import User
from tokensmith.usecases.actor import Actor
from tokensmith.usecases.base import UnitOfWork, operation


def _admin(uow: UnitOfWork) -> UserAdminService:
    return UserAdminService(uow.session, uow.clock)


@operation("org:admin")
def list_users(uow: UnitOfWork, actor: Actor) -> list[User]:
    return _admin(uow).list(actor)


@operation("org:admin", audit="user.created")
def create_user(uow: UnitOfWork, actor: Actor, username: str, password: str, *, is_admin: bool = False) -> User:
    """A new user of the admin's organization, who must change this first password.

    Raises Conflict (a taken name), InvalidInput (a bad name or a weak password).
    """
    user = _admin(uow).create(actor, username, password, is_admin=is_admin)
    uow.record(actor, "user.created", target=user.public_id, details={"username": user.username, "admin": is_admin})
    return user


def _set_disabled(uow: UnitOfWork, actor: Actor, user: str, *, disabled: bool) -> User:
    changed = _admin(uow).set_disabled(actor, user, disabled=disabled)  # ends their sessions when disabling
    uow.record(actor, "user.disabled" if disabled else "user.enabled", target=changed.public_id,
               details={"username": changed.username})
    return changed


@operation("org:admin", audit="user.disabled")
def disable_user(uow: UnitOfWork, actor: Actor, user: str) -> User:
    """Disable a user: their tokens stop working and their console sessions end, at once."""
    return _set_disabled(uow, actor, user, disabled=True)


@operation("org:admin", audit="user.enabled")
def enable_user(uow: UnitOfWork, actor: Actor, user: str) -> User:
    """Enable a disabled user again (their tokens that are still live work again)."""
    return _set_disabled(uow, actor, user, disabled=False)


@operation("org:admin", audit="user.password_reset", manages_credentials=True)
def reset_password(uow: UnitOfWork, actor: Actor, user: str) -> tuple[User, str]:
    """A new random password for a user (returned once); their console sessions end."""
    changed, password = _admin(uow).reset_password(actor, user)  # ends their sessions (not an admin's own)
    forget_initial_password(uow.settings, changed.username)
    uow.record(actor, "user.password_reset", target=changed.public_id, details={"username": changed.username})
    return changed, password
