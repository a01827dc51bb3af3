"""A request body limit for every route, applied before authentication and parsing.

A pure ASGI middleware: it reads the body as it streams in, counting bytes, and answers 413 as
soon as the count passes the limit, whatever Content-Length says (absent, or lying). A declared
Content-Length over the limit is refused before a byte of the body is read. A body that does not
arrive within the read timeout is answered 408. The body (at most the limit) is then handed to
the app as one message, so nothing downstream can read more than the limit.

Routes with a tighter limit of their own (TokenReview: 64 KiB) keep it: this is the ceiling.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from tokensmith.protocols import BODY_RECEIVED

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

T = TypeVar("T")
_NO_EXTENSIONS: dict[str, Any] = {}

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_BODY_TIMEOUT_SECONDS = 30.0


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Disconnected(Exception):
    pass


def _body_in_memory(scope: Scope) -> bool:
    """Whether the server says the request's whole body is already in its memory (tokensmith's own
    server does: ``protocols.BODY_RECEIVED``)."""
    received = scope.get("extensions", _NO_EXTENSIONS).get(BODY_RECEIVED)
    return received is not None and bool(received())


async def read_within(scope: Scope, seconds: float, read: Callable[[], Awaitable[T]]) -> T:
    """``read()`` (a reader of the request body) under a deadline of ``seconds`` (TimeoutError past
    it), unless the server says it holds the whole body already: then reading waits for nothing and
    arms no timer (``asyncio.timeout`` arms and cancels one per request)."""
    if _body_in_memory(scope):
        return await read()
    async with asyncio.timeout(seconds):
        return await read()


def timeout_detail(seconds: float) -> str:
    return f"the request body did not arrive within {seconds:g} s"


def refusal_message(status: int, detail: str) -> tuple[Message, Message]:
    """The 413 or 408 problem as its two ASGI messages (also sent by the hot doors, api/fastpath.py)."""
    title = "Content Too Large" if status == 413 else "Request Timeout"
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    start = {
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"), (b"connection", b"close")],
    }
    return start, {"type": "http.response.body", "body": body}


async def whole_body(receive: Receive) -> bytes | None:
    """The whole body as the server delivers it, or None if the client went away first (nobody is
    left to answer). For doors whose body is already bounded: by the declared length the server's
    parser enforces, or by ``BodyLimit`` above them."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app below: the body already read, as one message, then whatever the client
    sends next (only ``http.disconnect`` is left to hear)."""
    replayed = False

    async def replayed_receive() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed_receive


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` (413) or slower than ``timeout`` seconds in total (408)."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 timeout: float = DEFAULT_BODY_TIMEOUT_SECONDS) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            declared, chunked = self._framing(scope)
            if declared is not None and declared > self.max_bytes:
                raise _Refused(413, self._too_large())
            if not chunked and not declared:
                # No body at all (most GETs, the verification doors): nothing to count or wait for.
                await self.app(scope, receive, send)
                return
            try:
                body = await read_within(scope, self.timeout, lambda: self._count(receive))
            except TimeoutError:
                raise _Refused(408, timeout_detail(self.timeout)) from None
        except _Disconnected:
            return  # the client went away mid-body: nobody is left to answer
        except _Refused as refused:
            start, content = refusal_message(refused.status, refused.detail)
            await send(start)
            await send(content)
            return
        await self.app(scope, replay(body, receive), send)

    def _too_large(self) -> str:
        return f"the request body is larger than the limit of {self.max_bytes} bytes"

    def _framing(self, scope: Scope) -> tuple[int | None, bool]:
        """(Content-Length, whether the body is chunked) as the client declared them."""
        declared, chunked = None, False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise _Refused(413, "Content-Length is not a number") from None
            elif name == b"transfer-encoding":
                chunked = True
        return declared, chunked

    async def _count(self, receive: Receive) -> bytes:
        """The whole body, at most ``max_bytes``; raises _Refused past the limit, _Disconnected if the
        client goes away first. The deadline is the caller's."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _Refused(413, self._too_large())
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
