"""The whole middleware stack, declared once, and the one security-header policy.

The order (outermost first) and why:

1. ``HotDoors`` - outermost: answers the hot doors (forward-auth, whoami, introspection, TokenReview)
   for cached callers before anything else runs (~2.5x cheaper here than innermost,
   docs/performance.md). Its answers are complete on their own - the same body, identity, security,
   no-store and HSTS headers the routes send, encoded once per cached identity (``api/fastpath.py``;
   tests compare both paths). Every other request passes straight through.
2. ``TrustedTls`` - a request a trusted proxy says came over https (``X-Forwarded-Proto``) is
   treated as https below (``Secure`` session cookies) and its answer, whatever it is, carries HSTS.
3. ``ResponseHeaders(edit=security_headers)`` - so that *every* other response carries the security
   headers: the routes', the exception handlers' problems (404, 422, 429 ...), the body limit's 413
   and 408, and the 500 that Starlette's ``ServerErrorMiddleware`` sends itself. Starlette always
   places that middleware above every ``add_middleware`` one, so ``TokensmithAPI`` puts this above it.
4. ``SERVER_ERRORS`` - where Starlette's ``ServerErrorMiddleware`` (unhandled exception -> the 500
   problem of ``api/problems.py``) and FastAPI's own outer layers sit. A marker, not a middleware.
5. ``BodyLimit`` - the body ceiling (413) and read timeout (408), before authentication and parsing
   (``api/bodylimit.py``); requests without a body pass straight through.
6. ``TokenExchangeDoor`` - the RFC 8693 token exchange as plain ASGI (``api/exchange_door.py``): a
   plain form's exchange runs the grant's one implementation without the router and FastAPI's form
   parsing; every other request passes straight through. Below the body limit, so its body is
   bounded; above it all the layers that give its answers their headers, as to the route's.

Below the list: Starlette's ``ExceptionMiddleware`` (the problem handlers), then the router.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from tokensmith.api.bodylimit import BodyLimit
from tokensmith.api.exchange_door import TOKEN_PATH, TokenExchangeDoor
from tokensmith.api.fastpath import HotDoors, door_of
from tokensmith.api.headers import API_CSP, SECURITY_HEADERS, ResponseHeaders
from tokensmith.api.tls import TrustedTls
from tokensmith.config import Settings

# Machine endpoints; every other path is the web console's (pages, static files, its 404s).
API_PREFIXES = ("/v1/", "/docs", "/redoc", "/openapi.json", "/healthz", "/readyz", "/metrics")
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")

# The console: its own script, style and fonts only, forms post back to it, no plugins, never framed.
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
)
# /docs and /redoc load their UI from tokensmith itself (api/docs.py) with an inline bootstrap script; those two
# pages only get this looser policy (they hold no secrets; tokens pasted there stay in the page).
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src blob:; base-uri 'none'; frame-ancestors 'none'"
)


def is_console(path: str) -> bool:
    return not path.startswith(API_PREFIXES)


def content_security_policy(path: str) -> str:
    if is_console(path):
        return CONSOLE_CSP
    return DOCS_CSP if path in DOCS_PATHS else API_CSP


def security_headers(path: str, headers: MutableHeaders) -> None:
    """Never sniffed, framed or referred; each part's CSP; credentials never kept in a cache.

    ``setdefault``: a response that chose its own value keeps it.
    """
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
    headers.setdefault("Content-Security-Policy", content_security_policy(path))
    if path.startswith("/v1/"):
        # API answers describe credentials; no shared cache or browser history should keep them.
        headers.setdefault("Cache-Control", "no-store")
    elif is_console(path) and not path.startswith("/static/"):
        # Console pages show token lists and, once, secrets (a page never chooses otherwise).
        headers["Cache-Control"] = "no-store"


SERVER_ERRORS: Final = "starlette.ServerErrorMiddleware"

def stack(settings: Settings) -> list[Middleware | str]:
    """The middleware, outermost first (the order is explained at the top of this module)."""
    return [
        Middleware(HotDoors, body_timeout=settings.body_timeout_seconds, max_body=settings.max_body_bytes),
        Middleware(TrustedTls, trusted_proxies=settings.trusted_proxies),
        Middleware(ResponseHeaders, edit=security_headers),
        SERVER_ERRORS,
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout_seconds),
        Middleware(TokenExchangeDoor),
    ]


def _split(layers: list[Middleware | str]) -> tuple[list[Middleware], list[Middleware]]:
    """``layers`` as (those above Starlette's error middleware, those below it)."""
    at = layers.index(SERVER_ERRORS)
    outside = [layer for layer in layers[:at] if isinstance(layer, Middleware)]
    inside = [layer for layer in layers[at + 1:] if isinstance(layer, Middleware)]
    return outside, inside


class TokensmithAPI(FastAPI):
    """FastAPI with ``stack(settings)`` applied: its top layers wrap even Starlette's 500 answers."""

    def __init__(self, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._outside, inside = _split(stack(settings))
        self.user_middleware.extend(inside)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A hot door (and the token endpoint) goes straight to the stack: FastAPI's own
        ``__call__`` checks its telemetry configuration on every request, which tokensmith does not use
        and which costs the hot path as much as its whole verification."""
        if scope["type"] == "http" and (door_of(scope["method"], scope["path"]) is not None
                                        or scope["path"] == TOKEN_PATH):
            scope["app"] = self
            if self.middleware_stack is None:
                self.middleware_stack = self.build_middleware_stack()
            await self.middleware_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        for layer in reversed(self._outside):
            app = layer.cls(app, *layer.args, **layer.kwargs)
        return app
