"""Users of the caller's organization, for admins: list, create, disable, enable, reset a password.

The rules (admins only, never disable yourself, new users change their first password) live in
``accounts.admin.UserAdminService``, shared with the console; this module only maps HTTP to it.
Until organization administration gets a scope of its own (issue 12), reading needs
``tokens:read`` and changing needs ``tokens:write``, as for the expiry policy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from tokensmith import audit
from tokensmith.accounts.admin import UserAdminService
from tokensmith.accounts.passwords import generate_password
from tokensmith.api.auth import Context, requires
from tokensmith.api.schemas import Request as RequestBody
from tokensmith.api.schemas import problem_responses
from tokensmith.console.sessions import SessionService
from tokensmith.db.models import User
from tokensmith.verify.core import Identity

router = APIRouter(prefix="/v1/users", tags=["users"], responses=problem_responses(401, 403))
Reader = Annotated[Identity, requires("tokens:read")]
Writer = Annotated[Identity, requires("tokens:write")]


class UserCreate(RequestBody):
    username: str
    password: str | None = Field(
        default=None, description="At least 8 characters; default: a generated one, returned once.")
    is_admin: bool = False


class AdminUserOut(BaseModel):
    id: str
    username: str
    is_admin: bool
    disabled: bool
    must_change_password: bool
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> AdminUserOut:
        return cls(id=user.public_id, username=user.username, is_admin=user.is_admin, disabled=user.disabled,
                   must_change_password=user.must_change_password, created_at=user.created_at)


class UserWithPassword(BaseModel):
    user: AdminUserOut
    password: str | None = Field(description="Only when tokensmith chose it: shown exactly once.")


@router.get("", response_model=list[AdminUserOut])
def list_users(caller: Reader, ctx: Context) -> list[AdminUserOut]:
    """The organization's users, by user name (admins)."""
    with ctx.services() as s:
        return [AdminUserOut.of(u) for u in UserAdminService(s.session, ctx.clock).list(caller)]


@router.post("", status_code=201, response_model=UserWithPassword, responses=problem_responses(409, 422))
def create_user(body: UserCreate, caller: Writer, ctx: Context, request: Request,
                response: Response) -> UserWithPassword:
    """A new user, who must change the first password at sign-in (admins)."""
    password = body.password if body.password is not None else generate_password()
    with ctx.services() as s:
        user = UserAdminService(s.session, ctx.clock).create(caller, body.username, password, is_admin=body.is_admin)
        audit.record_request(s.session, request, "user.created", target=user.public_id,
                             details={"username": user.username, "is_admin": user.is_admin})
        out = UserWithPassword(user=AdminUserOut.of(user), password=None if body.password is not None else password)
    response.headers["Cache-Control"] = "no-store"
    return out


def _set_disabled(user_ref: str, disabled: bool, caller: Identity, ctx: Context, request: Request) -> AdminUserOut:
    with ctx.services() as s:
        user = UserAdminService(s.session, ctx.clock).set_disabled(caller, user_ref, disabled=disabled)
        if disabled:
            SessionService(s.session, ctx.clock, ctx.secret_key).end_all_for(user.id)
        audit.record_request(s.session, request, "user.disabled" if disabled else "user.enabled",
                             target=user.public_id, details={"username": user.username})
        return AdminUserOut.of(user)


@router.post("/{user}/disable", response_model=AdminUserOut, responses=problem_responses(404, 422))
def disable_user(user: str, caller: Writer, ctx: Context, request: Request) -> AdminUserOut:
    """Disable a user (id or user name): their tokens and sessions stop working at once."""
    return _set_disabled(user, True, caller, ctx, request)


@router.post("/{user}/enable", response_model=AdminUserOut, responses=problem_responses(404))
def enable_user(user: str, caller: Writer, ctx: Context, request: Request) -> AdminUserOut:
    """Re-enable a disabled user."""
    return _set_disabled(user, False, caller, ctx, request)


@router.post("/{user}/reset-password", response_model=UserWithPassword, responses=problem_responses(404))
def reset_password(user: str, caller: Writer, ctx: Context, request: Request, response: Response) -> UserWithPassword:
    """A new random password (returned once), to be changed at the next sign-in."""
    with ctx.services() as s:
        changed, password = UserAdminService(s.session, ctx.clock).reset_password(caller, user)
        if changed.id != caller.user_id:
            SessionService(s.session, ctx.clock, ctx.secret_key).end_all_for(changed.id)
        audit.record_request(s.session, request, "user.password_reset", target=changed.public_id,
                             details={"username": changed.username})
        out = UserWithPassword(user=AdminUserOut.of(changed), password=password)
    response.headers["Cache-Control"] = "no-store"
    return out
