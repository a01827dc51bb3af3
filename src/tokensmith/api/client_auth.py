"""OAuth 2.0 client authentication for introspection (RFC 7662 section 2.1, RFC 6749 section 2.3.1).

Gateways authenticate with a token of their own, either as a bearer token or, as standard OAuth
client libraries do by default (``client_secret_basic``), with HTTP Basic: the token's public id
(``tok_...``) as client id and its secret as password. The secret must be that token's own.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from urllib.parse import unquote

from fastapi import Request
from starlette.exceptions import HTTPException

from tokensmith.api.auth import scoped
from tokensmith.api.context import context_of
from tokensmith.api.guard import guarded_verify, request_ip
from tokensmith.errors import AuthenticationFailed
from tokensmith.usecases import Actor
from tokensmith.verify.core import Identity

BASIC_CHALLENGE = 'Basic realm="tokensmith"'
WRONG_CLIENT = "invalid client credentials"


def _basic_credentials(value: str) -> tuple[str, str]:
    """(client id, secret) from the part after ``Basic ``; AuthenticationFailed if it is not that."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationFailed(WRONG_CLIENT) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id or not secret:
        raise AuthenticationFailed(WRONG_CLIENT)
    # RFC 6749 2.3.1: both are form-urlencoded before Basic encoding (tokensmith's never need it).
    return unquote(client_id), unquote(secret)


def _basic_client(request: Request, value: str, scope: str) -> Identity:
    context = context_of(request)
    verifier = context.verifier
    client_ip = request_ip(request)

    def verify(secret: str) -> Identity:
        identity = verifier.verify(secret, client_ip)
        if identity.token_public_id != client_id:
            # A valid secret under another token's id is a failed authentication, counted as one.
            raise AuthenticationFailed(WRONG_CLIENT)
        return identity

    try:
        client_id, secret = _basic_credentials(value)
        identity = guarded_verify(request, "api", secret, verify)
    except AuthenticationFailed as failed:
        raise HTTPException(401, failed.detail if failed.detail != "invalid token" else WRONG_CLIENT,
                            headers={"WWW-Authenticate": BASIC_CHALLENGE}) from None
    request.state.identity = identity
    context.addresses.note(context, identity, request)
    Actor.for_token(identity).require(scope)
    return identity


def client_with_scope(scope: str) -> Callable[[Request], Identity]:
    """A dependency: the caller by Bearer token or HTTP Basic (token id, secret), holding ``scope``."""
    bearer = scoped(scope)

    def dependency(request: Request) -> Identity:
        header = (request.headers.get("authorization") or "").strip()
        scheme, _, rest = header.partition(" ")
        if scheme.lower() == "basic":
            return _basic_client(request, rest, scope)
        return bearer(request)

    # The scope matrix test and the OpenAPI description read the scope from this name.
    dependency.__name__ = f"requires_{scope.replace(':', '_').replace('-', '_')}"
    return dependency

