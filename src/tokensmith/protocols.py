"""uvicorn's HTTP protocols with a header read timeout, in a module of their own.

With ``--workers N`` uvicorn pickles the protocol class by name, so every worker process imports
this module before it can answer the supervisor's health check (5 s). It must stay light: importing
the whole application here (as ``tokensmith.server`` does) took longer than that on a loaded
machine, and uvicorn killed and restarted its workers in a loop.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without its [standard] extra: h11 only
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from tokensmith.config import Settings

__all__ = ["HeaderTimeoutH11Protocol", "HeaderTimeoutHttpToolsProtocol", "HttpToolsProtocol"]


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




class HeaderTimeoutHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):  # type: ignore[misc]
    """uvicorn's httptools protocol (the fast parser, what the hot path is measured on) with the deadline."""


class HeaderTimeoutH11Protocol(_HeaderDeadline, H11Protocol):  # type: ignore[misc]
    """The pure-Python h11 protocol with the deadline (where httptools is not installed)."""


@functools.cache
def _header_timeout_seconds() -> int:
    # Read in each worker process: with --workers N uvicorn pickles the protocol class by name.
    return Settings.from_env().header_timeout_seconds
