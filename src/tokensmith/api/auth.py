"""Bearer authentication for API routes (RFC 6750), through the one verification core.

A route names the use case it calls; its dependency authenticates the bearer secret, builds the
:class:`~tokensmith.usecases.Actor` and checks the operation's declared scope before the body is
even parsed (so a credential lacking the scope learns nothing about the request's shape). The
operation checks it again when it runs: the scope is written once, on the operation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from tokensmith.api.context import AppContext, context_of
from tokensmith.api.guard import bearer_secret, guarded_verify, request_ip
from tokensmith.usecases import Actor, Operation, RequestContext
from tokensmith.verify.core import Identity

__all__ = ["Context", "authenticate", "bearer_secret", "requires", "scoped"]


def get_context(request: Request) -> AppContext:
    return context_of(request)


def authenticate(request: Request) -> Identity:
    context = context_of(request)
    # Brute-force limit per client IP (only failures count) and verification metrics.
    secret = bearer_secret(request.headers.get("authorization"))
    client_ip = request_ip(request)
    identity = guarded_verify(request, "api", secret, lambda s: context.verifier.verify(s, client_ip),
                              lambda s: context.verifier.verify_cached(s, client_ip))
    request.state.identity = identity
    context.addresses.note(context, identity, request)  # audits a first use from a new IP, once
    return identity


def request_context(request: Request, via: str = "api") -> RequestContext:
    return RequestContext(client_ip=request_ip(request), user_agent=request.headers.get("user-agent"), via=via)


def token_actor(request: Request) -> Actor:
    """The caller as the use-case layer sees it: the verified token, its scopes and clusters."""
    return Actor.for_token(authenticate(request), request_context(request))


def acting_for(op: Operation[Any, Any]) -> Callable[[Request], Actor]:
    """A dependency: the authenticated caller of ``op``, who must hold its scope (403 naming it otherwise)."""
    scope = op.spec.scope

    def dependency(request: Request) -> Actor:
        actor = token_actor(request)
        if scope is not None:
            actor.require(scope)
        return actor

    # The scope matrix test and the OpenAPI description read the scope from this name.
    dependency.__name__ = f"requires_{(scope or 'nothing').replace(':', '_').replace('-', '_')}"
    return dependency


def acting(op: Operation[Any, Any]) -> Any:
    """``caller: Annotated[Actor, acting(tokens.issue_token)]``."""
    return Depends(acting_for(op))


def scoped(scope: str) -> Callable[[Request], Identity]:
    """A dependency for the verification doors (not use cases): the caller, holding ``scope``."""

    def dependency(request: Request) -> Identity:
        identity = authenticate(request)
        Actor.for_token(identity).require(scope)
        return identity

    dependency.__name__ = f"requires_{scope.replace(':', '_').replace('-', '_')}"
    return dependency


def requires(scope: str) -> Any:
    """``caller: Annotated[Identity, requires("introspect")]`` (verification doors and metrics)."""
    return Depends(scoped(scope))


CallerActor = Annotated[Actor, Depends(token_actor)]
Context = Annotated[AppContext, Depends(get_context)]
