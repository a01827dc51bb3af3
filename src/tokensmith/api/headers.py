"""Response headers added on the way out, as plain ASGI middleware.

``@app.middleware("http")`` (Starlette's BaseHTTPMiddleware) costs a task and a memory stream per
request; two of them were most of a no-op request's time. Editing the ``http.response.start``
message directly costs almost nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HeaderEditor = Callable[[str, MutableHeaders], None]

# The security headers of every answer, and the API's CSP (api/middleware.py applies them; the
# forward-auth fast path pre-encodes the same values, api/fastpath.py).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# API answers: nothing may load or run from them, never framed (a JSON body opened in a tab included).
API_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


class ResponseHeaders:
    """Calls ``edit(path, headers)`` on every HTTP response's headers before they are sent."""

    def __init__(self, app: ASGIApp, edit: HeaderEditor) -> None:
        self.app = app
        self.edit = edit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]

        async def send_edited(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.edit(path, MutableHeaders(scope=message))
            await send(message)

        await self.app(scope, receive, send_edited)
