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
