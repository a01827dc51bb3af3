"""HTTPS as the client sees it: behind a trusted TLS proxy, the request is treated as https.

A trusted proxy (``TOKENSMITH_TRUSTED_PROXIES``) that sends ``X-Forwarded-Proto: https`` ended TLS
for the client: the request's scheme becomes ``https`` (so the console's session cookie is
``Secure``) and every answer carries ``Strict-Transport-Security``. The header is believed from
trusted proxies only; from anyone else it is ignored, like ``X-Forwarded-For``.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokensmith.ratelimit import is_trusted, parse_networks

HSTS = "max-age=31536000"  # a year; no includeSubDomains: other hosts of the domain are not ours to pin


def forwarded_https(scope: Scope, trusted: tuple) -> bool:
    """Whether a trusted proxy says the client spoke TLS to it (the last X-Forwarded-Proto hop)."""
    client = scope.get("client")
    if not trusted or not client or not is_trusted(client[0], trusted):
        return False
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-proto":
            return value.decode("latin-1").split(",")[-1].strip().lower() == "https"
    return False


class TrustedTls:
    def __init__(self, app: ASGIApp, trusted_proxies: tuple[str, ...] = ()) -> None:
        self.app = app
        self.trusted = parse_networks(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if forwarded_https(scope, self.trusted):
            scope["scheme"] = "https"
        if scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        await self.app(scope, receive, with_hsts)
