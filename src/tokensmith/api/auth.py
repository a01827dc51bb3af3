"""Bearer authentication for API routes (RFC 6750), through the one verification core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from tokensmith.api.context import AppContext
from tokensmith.api.guard import bearer_secret, guarded_verify, request_ip
from tokensmith.scopes import require_scope
from tokensmith.verify.core import Identity

__all__ = ["Caller", "Context", "authenticate", "bearer_secret", "requires", "scoped"]


def get_context(request: Request) -> AppContext:
    return request.app.state.context


def authenticate(request: Request) -> Identity:
    context: AppContext = request.app.state.context
    # Brute-force limit per client IP (only failures count) and verification metrics.
    secret = bearer_secret(request.headers.get("authorization"))
    client_ip = request_ip(request)
    identity = guarded_verify(request, "api", secret, lambda s: context.verifier.verify(s, client_ip),
                              lambda s: context.verifier.verify_cached(s, client_ip))
    request.state.identity = identity
    request.app.state.addresses.note(context, identity, request)  # audits a first use from a new IP, once
    return identity


def scoped(scope: str) -> Callable[[Request], Identity]:
    """A dependency: the authenticated caller, who must hold ``scope`` (403 naming it otherwise)."""

    def dependency(request: Request) -> Identity:
        identity = authenticate(request)
        require_scope(identity, scope)
        return identity

    dependency.__name__ = f"requires_{scope.replace(':', '_').replace('-', '_')}"
    return dependency


def requires(scope: str) -> Any:
    """``caller: Annotated[Identity, requires("tokens:write")]``."""
    return Depends(scoped(scope))


Caller = Annotated[Identity, Depends(authenticate)]
Context = Annotated[AppContext, Depends(get_context)]
