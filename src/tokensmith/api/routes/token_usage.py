"""Extending a token's expiry and reading its usage: thin wrappers over TokenService."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from tokensmith.api.auth import Context, acting
from tokensmith.api.schemas import Request as RequestBody
from tokensmith.api.schemas import TokenOut, problem_responses
from tokensmith.usecases import Actor, tokens
from tokensmith.verify.usage import MAX_HOURS, Usage

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], responses=problem_responses(401, 403))


class TokenUpdate(RequestBody):
    expiration: str | None = Field(default=None, description="A new lifetime from now (e.g. 30d, 90d, never).",
                                   examples=["90d"])
    expires_at: datetime | None = Field(default=None, description="A new RFC 3339 expiry instant, instead.")


@router.patch("/{token_id}", response_model=TokenOut, responses=problem_responses(404, 409, 422))
def extend_token(
    token_id: str, body: TokenUpdate, caller: Annotated[Actor, acting(tokens.extend_token)], ctx: Context,
) -> TokenOut:
    """Set a token's expiry to a new date within the organization's policy (extend it).

    The secret, name, clusters and scopes stay. A revoked token is 404; an expired one is 409
    (create a new token instead).
    """
    with ctx.unit_of_work() as uow:
        token = tokens.extend_token(uow, caller, token_id, expiration=body.expiration, expires_at=body.expires_at)
        return TokenOut.of(token, ctx.clock.now())


class UsageHour(BaseModel):
    hour: datetime = Field(description="Start of the UTC hour.")
    count: int = Field(description="Verifications of the token in that hour, summed over every replica.")


class UsageOut(BaseModel):
    token_id: str
    hours: list[UsageHour] = Field(description="Every hour of the window, oldest first; hours without use are 0.")
    total: int
    last_used_at: datetime | None
    unused_days: int = Field(description="Whole days since the token was last used (since created, if never).")

    @classmethod
    def of(cls, token_id: str, usage: Usage) -> UsageOut:
        return cls(token_id=token_id, hours=[UsageHour(hour=h, count=n) for h, n in usage.hours], total=usage.total,
                   last_used_at=usage.last_used_at, unused_days=usage.unused_days)


@router.get("/{token_id}/usage", response_model=UsageOut, responses=problem_responses(404, 422))
def token_usage(
    token_id: str, caller: Annotated[Actor, acting(tokens.token_usage)], ctx: Context,
    hours: Annotated[int, Query(ge=1, le=MAX_HOURS, description="How many hours, up to now.")] = 24,
) -> UsageOut:
    """Verifications of a token per hour (counted in memory, written about once a minute)."""
    with ctx.unit_of_work() as uow:
        return UsageOut.of(token_id, tokens.token_usage(uow, caller, token_id, hours))
