"""Users of the caller's organization, for admins: list, create, disable, enable, reset a password.

The rules (admins only, never disable yourself, new users change their first password) live in
``accounts.admin.UserAdminService``; the operations in ``usecases.users`` (scope ``org:admin``)
are shared with the console and the CLI. This module only maps HTTP to them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from tokensmith.accounts.passwords import generate_password
from tokensmith.api.auth import Context, acting
from tokensmith.api.schemas import Request as RequestBody
from tokensmith.api.schemas import problem_responses
from tokensmith.db.models import User
from tokensmith.usecases import Actor, users

router = APIRouter(prefix="/v1/users", tags=["users"], responses=problem_responses(401, 403))


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
def list_users(caller: Annotated[Actor, acting(users.list_users)], ctx: Context) -> list[AdminUserOut]:
    """The organization's users, by user name (admins)."""
    with ctx.unit_of_work() as uow:
        return [AdminUserOut.of(u) for u in users.list_users(uow, caller)]


@router.post("", status_code=201, response_model=UserWithPassword, responses=problem_responses(409, 422))
def create_user(body: UserCreate, caller: Annotated[Actor, acting(users.create_user)], ctx: Context,
                response: Response) -> UserWithPassword:
    """A new user, who must change the first password at sign-in (admins)."""
    password = body.password if body.password is not None else generate_password()
    with ctx.unit_of_work() as uow:
        user = users.create_user(uow, caller, body.username, password, is_admin=body.is_admin)
        out = UserWithPassword(user=AdminUserOut.of(user), password=None if body.password is not None else password)
    response.headers["Cache-Control"] = "no-store"
    return out


@router.post("/{user}/disable", response_model=AdminUserOut, responses=problem_responses(404, 422))
def disable_user(user: str, caller: Annotated[Actor, acting(users.disable_user)], ctx: Context) -> AdminUserOut:
    """Disable a user (id or user name): their tokens and sessions stop working at once."""
    with ctx.unit_of_work() as uow:
        return AdminUserOut.of(users.disable_user(uow, caller, user))


@router.post("/{user}/enable", response_model=AdminUserOut, responses=problem_responses(404))
def enable_user(user: str, caller: Annotated[Actor, acting(users.enable_user)], ctx: Context) -> AdminUserOut:
    """Re-enable a disabled user."""
    with ctx.unit_of_work() as uow:
        return AdminUserOut.of(users.enable_user(uow, caller, user))


@router.post("/{user}/reset-password", response_model=UserWithPassword, responses=problem_responses(404))
def reset_password(user: str, caller: Annotated[Actor, acting(users.reset_password)], ctx: Context,
                   response: Response) -> UserWithPassword:
    """A new random password (returned once), to be changed at the next sign-in."""
    with ctx.unit_of_work() as uow:
        changed, password = users.reset_password(uow, caller, user)
        out = UserWithPassword(user=AdminUserOut.of(changed), password=password)
    response.headers["Cache-Control"] = "no-store"
    return out
