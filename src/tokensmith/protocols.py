"""uvicorn's HTTP protocols with a header read timeout and pre-encoded answers, in a module of their own.

With ``--workers N`` uvicorn pickles the protocol class by name, so every worker process imports
this module before it can answer the supervisor's health check (5 s). It must stay light: importing
the whole application here (as ``tokensmith.server`` does) took longer than that on a loaded
machine, and uvicorn killed and restarted its workers in a loop.
"""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import (
        HEADER_RE,
        HEADER_VALUE_RE,
        STATUS_LINE,
        HttpToolsProtocol,
        RequestResponseCycle,
    )
except ImportError:  # uvicorn without its [standard] extra: h11 only
    HttpToolsProtocol = None  # type: ignore[assignment,misc]
    RequestResponseCycle = object  # type: ignore[assignment,misc]
    # What uvicorn refuses in a header name or value (as its httptools protocol checks them).
    HEADER_RE = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
    HEADER_VALUE_RE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")

from tokensmith.config import Settings

__all__ = ["BODY_RECEIVED", "ENCODED_HEADERS", "EncodedHeaders", "HeaderTimeoutH11Protocol",
           "HeaderTimeoutHttpToolsProtocol", "HttpToolsProtocol"]

# An extension key of an ASGI ``http.response.start`` message: the same headers as its "headers",
# checked and encoded once (``EncodedHeaders``). Servers that do not know it ignore it, as ASGI
# asks of unknown keys, and send "headers"; ours writes the encoded block as it is.
ENCODED_HEADERS = "tokensmith.encoded_headers"
# An extension of an HTTP scope (in ``scope["extensions"]``): a callable that says whether the
# request's whole body is already in the server's memory, so that ``receive()`` returns it at once
# and a door reading it needs no deadline of its own (asyncio.timeout costs a timer per request).
BODY_RECEIVED = "tokensmith.body_received"


def _line(name: bytes, value: bytes) -> bytes:
    """One header as uvicorn writes it; ValueError for what uvicorn refuses, or a header only the
    server may write (it decides keep-alive and framing)."""
    if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
        raise ValueError("invalid HTTP header")
    name = name.lower()
    if name in (b"transfer-encoding", b"connection"):
        raise ValueError(f"{name!r} is the server's to write")
    return b"".join((name, b": ", value, b"\r\n"))


@dataclass(frozen=True, slots=True)
class EncodedHeaders:
    """Response headers checked and encoded once, for an answer sent many times (api/fastpath.py).

    uvicorn checks each header of each answer against two regular expressions and re-encodes it:
    about 1.3 µs a header, so 15 µs for a forward-auth answer's 11 headers, half of what the whole
    raw server costs a request. An answer kept with a cached identity is checked here once instead.
    """

    block: bytes  # b"name: value\r\n" per header, names in lower case, in order
    content_length: int

    @classmethod
    def of(cls, headers: list[tuple[bytes, bytes]]) -> EncodedHeaders:
        """``headers`` encoded exactly as uvicorn writes them; ValueError for what uvicorn refuses, or
        for a missing Content-Length (an encoded answer always declares its length)."""
        lengths = [int(value) for name, value in headers if name.lower() == b"content-length"]
        if not lengths:
            raise ValueError("an encoded answer declares its Content-Length")
        return cls(b"".join(_line(name, value) for name, value in headers), lengths[0])

    def plus(self, name: bytes, value: bytes) -> EncodedHeaders:
        """These headers and one more, checked like the others."""
        return EncodedHeaders(self.block + _line(name, value), self.content_length)


class _HeaderDeadline:
    """A header read timeout for uvicorn's HTTP protocols, which uvicorn lacks.

    A connection must deliver a request's headers within ``header_timeout`` seconds of opening
    (or of its previous response): a client dribbling headers a byte at a time is cut off instead
    of holding a connection slot for ever. The body's own timeout is in api/bodylimit.py.
    """

    _header_deadline: asyncio.TimerHandle | None = None
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    @property
    def header_timeout(self) -> float:
        return float(_header_timeout_seconds())

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm_header_deadline()  # headers complete: a request is being served

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm_header_deadline()  # the next request on this keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()




class _EncodedHeadersCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, writing an answer's ``ENCODED_HEADERS`` as they are, with its
    body in the same write.

    uvicorn writes a response's head and its body as two ``transport.write`` calls, so two send(2)
    system calls, and the client's reader wakes up twice: for a small answer that was a third of the
    server's time per request. The encoded head is held until the body comes (the next message of
    every answer sent with it) and both go out as one write.
    """

    _held_head: bytes | None = None

    def body_received(self) -> bool:
        """Whether the whole request body is in memory (``BODY_RECEIVED``): uvicorn has parsed the
        end of the request, and the app has not taken its body yet or takes it now."""
        return not self.more_body and not self.disconnected

    async def send(self, message: Any) -> None:
        head = self._held_head
        if head is not None:
            self._held_head = None
            await self._send_with_head(head, message)
            return
        encoded = message.get(ENCODED_HEADERS)
        if (encoded is None or self.response_started or self.access_log or self.flow.write_paused
                or self.disconnected):
            await super().send(message)  # uvicorn's own way: it logs, waits for the reader, or refuses
            return
        # What uvicorn's send() does for a response start, with the headers already checked.
        self.response_started = True
        self.waiting_for_100_continue = False
        self.expected_content_length = encoded.content_length
        self.chunked_encoding = False
        content = [STATUS_LINE[message["status"]]]
        for name, value in self.default_headers:  # the server's Date (and Server) headers, as uvicorn writes them
            content += (name, b": ", value, b"\r\n")
        content.append(encoded.block)
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        content.append(b"\r\n")
        self._held_head = b"".join(content)

    async def _send_with_head(self, head: bytes, message: Any) -> None:
        """The held head and this message: one write for a whole body, as uvicorn finishes a response;
        anything else (a HEAD request, a body in parts, a wrong length) goes the head first, then
        uvicorn's own way, which checks and refuses as it always does."""
        body = message.get("body", b"")
        if (message["type"] != "http.response.body" or message.get("more_body", False)
                or self.scope["method"] == "HEAD" or len(body) != self.expected_content_length
                or self.flow.write_paused or self.disconnected):
            if not self.disconnected:
                self.transport.write(head)
            await super().send(message)
            return
        self.transport.write(head + body)
        self.expected_content_length = 0
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()


class HeaderTimeoutHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):  # type: ignore[misc]
    """uvicorn's httptools protocol (the fast parser, what the hot path is measured on) with the deadline,
    writing pre-encoded answers (``ENCODED_HEADERS``) without checking them again."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # uvicorn makes the cycle here and starts its ASGI task, which first runs on the next turn of
        # the event loop: the cycle is ours before it sends anything.
        cycle = self.cycle
        if type(cycle) is RequestResponseCycle:
            cycle.__class__ = _EncodedHeadersCycle
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[BODY_RECEIVED] = cast(_EncodedHeadersCycle, cycle).body_received


class HeaderTimeoutH11Protocol(_HeaderDeadline, H11Protocol):  # type: ignore[misc]
    """The pure-Python h11 protocol with the deadline (where httptools is not installed)."""


@functools.cache
def _header_timeout_seconds() -> int:
    # Read in each worker process: with --workers N uvicorn pickles the protocol class by name.
    return Settings.from_env().header_timeout_seconds
