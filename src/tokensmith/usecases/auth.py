"""Signing in and passwords: password sign-in (API and CLI login), console sign-in, password change.

Sign-in has no caller yet: the door passes an anonymous actor carrying only the request's
address; the use case authenticates the password and records the outcome either way (a failure
in its own transaction, so the refusal's rollback cannot erase it).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensmith import audit
from tokensmith.bootstrap import forget_initial_password
from tokensmith.db.models import User
from tokensmith.errors import AuthenticationFailed, InvalidInput
from tokensmith.usecases.actor import Actor
from tokensmith.usecases.base import UnitOfWork, operation
from tokensmith.usecases.tokens import IssuedToken, TokenRequest, _issue


def _authenticate(uow: UnitOfWork, actor: Actor, username: str, password: str, *, for_token: bool = False) -> User:
    """The active user with this password; records the failure apart and raises AuthenticationFailed.

    ``for_token``: an initial or reset password mints no token (Forbidden: change it first).
    """
    try:
        if for_token:
            return uow.accounts.authenticate_for_token(username.strip(), password)
        return uow.accounts.authenticate(username.strip(), password)
    except AuthenticationFailed:
        known = uow.accounts.find_user(username.strip())
        # A password typed into the user-name field is never stored: only a name that exists is.
        uow.record_apart(actor, "auth.sign_in", outcome=audit.FAILURE, org_id=known.org_id if known else None,
                         actor_user=audit.typed_username(known))
        raise


def signed_in(user: User, actor: Actor) -> Actor:
    """The actor a successful sign-in acts as: the user, with the request's address."""
    return Actor.for_session(user_id=user.id, org_id=user.org_id, is_admin=user.is_admin, username=user.username,
                             request=actor.request)


@operation(None, audit="auth.sign_in")
def sign_in_with_password(
    uow: UnitOfWork, actor: Actor, username: str, password: str, *, token_name: str, expiration: str | None = None,
) -> IssuedToken:
    """Password sign-in that mints a token of the user's (how the CLI logs in).

    Raises AuthenticationFailed (the same message for every wrong input), Forbidden (the password
    must be changed first), InvalidInput (name, expiry).
    """
    user = _authenticate(uow, actor, username, password, for_token=True)
    me = signed_in(user, actor)
    issued = _issue(uow, me, user, TokenRequest(name=token_name, expiration=expiration))
    uow.record(me, "auth.sign_in", target=issued.token.public_id)
    return issued


@dataclass(frozen=True)
class ConsoleSignIn:
    user: User
    must_change_password: bool


@operation(None, audit="auth.sign_in")
def sign_in_to_console(uow: UnitOfWork, actor: Actor, username: str, password: str) -> ConsoleSignIn:
    """Password sign-in at the console; the door starts the browser session for the returned user."""
    user = _authenticate(uow, actor, username, password)
    uow.record(signed_in(user, actor), "auth.sign_in")
    return ConsoleSignIn(user, user.must_change_password)


@operation(None, audit="auth.password_changed")
def change_password(
    uow: UnitOfWork, actor: Actor, current: str, new: str, *, username: str | None = None,
    keep_session_digest: str | None = None,
) -> User:
    """A person changes their own password, proving the current one; their other console sessions end.

    A signed-in caller changes their own; an anonymous one (``POST /v1/auth/password``) names the
    user. ``keep_session_digest``: the console session that made the change stays signed in.
    Raises AuthenticationFailed (wrong current password), InvalidInput (a weak new password, or the
    current one again).
    """
    if new == current:
        raise InvalidInput("the new password must differ from the current one", "new_password")
    user = uow.accounts.authenticate(username if actor.kind == "anonymous" and username else actor.username, current)
    uow.accounts.set_password(user, new, keep_session_digest=keep_session_digest)
    forget_initial_password(uow.settings, user.username)  # the printed first password no longer works
    uow.record(signed_in(user, actor) if actor.kind == "anonymous" else actor, "auth.password_changed",
               target=user.public_id)
    return user
