"""Bearer authentication for API routes (RFC 6750), through the one verification core."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tokensmith.api.context import AppContext
from tokensmith.errors import AuthenticationFailed
from tokensmith.verify.core import Identity


def get_context(request: Request) -> AppContext:
    return request.app.state.context


def bearer_secret(authorization: str | None) -> str:
    """The secret from an ``Authorization: Bearer <secret>`` header value; AuthenticationFailed otherwise."""
    if authorization is None or not authorization.strip():
        raise AuthenticationFailed("authentication required: send Authorization: Bearer <token>", error=None)
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip() or " " in secret.strip():
        raise AuthenticationFailed("invalid token")
    return secret.strip()


def authenticate(request: Request) -> Identity:
    context: AppContext = request.app.state.context
    identity = context.verifier.verify(bearer_secret(request.headers.get("authorization")))
    request.state.identity = identity
    return identity


Caller = Annotated[Identity, Depends(authenticate)]
Context = Annotated[AppContext, Depends(get_context)]
