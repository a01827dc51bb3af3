"""The RFC 8693 token exchange as plain ASGI: ``POST /v1/oauth2/token``, grant type token-exchange.

Through FastAPI an exchange paid for the route machinery around it (the router's matching, the
request object, Starlette's multipart-capable form parser, dependency solving, the grant dispatch)
about as much CPU as for the exchange itself (docs/performance.md, "Workload identity federation").
This door reads a plain urlencoded form with ``urllib.parse`` and hands it to the one implementation
of the grant, ``api.routes.federation.exchange_grant`` (the use case, the rate limit, the audit,
the RFC 6749 errors), in one worker-thread hop, and sends its answer rendered by the same function
the route uses (``render_grant``). It decides nothing: what to answer is ``exchange_grant``'s.

Anything else goes on to the route, unchanged: other grant types, other content types, a form
``urllib`` would not read exactly as Starlette does (``;`` separators, a field without ``=``, an
empty field), a body that is not ASCII.

The grant runs on the door's own two threads (``EXCHANGE_THREADS``), not on the shared pool
through anyio: at concurrency 8 the shared pool ran eight exchanges at once, which then took turns
at the GIL and at the one SQLite write lock (futex wake-ups, forced GIL drops); two threads keep
one exchange on the CPU while the other writes. An exchange that waits ``SPILL_AFTER`` for one of
them (both held up by an issuer slow to serve its keys, say) goes to the shared pool instead, so a
stuck exchange never holds up the others for longer than that (docs/performance.md, "Workload
identity federation").

Position: inside the body limit (``api/middleware.stack``), so the body is already read and bounded
(413, 408), and inside the security headers, HSTS and the server-error layers, which treat its
answers as they treat the route's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from tokensmith.api.bodylimit import replay, whole_body
from tokensmith.api.routes.federation import TOKEN_EXCHANGE, exchange_grant, render_grant
from tokensmith.clientaddress import first_headers, scope_ip
from tokensmith.usecases import RequestContext

TOKEN_PATH: Final = "/v1/oauth2/token"  # noqa: S105 - a path
FORM: Final = b"application/x-www-form-urlencoded"
EXCHANGE_THREADS: Final = 2
SPILL_AFTER: Final = 0.25  # seconds an exchange waits for one of the door's threads before it takes the shared pool
T = TypeVar("T")


def plain_form(body: bytes) -> dict[str, str] | None:
    """The fields of a plain urlencoded form (the first of each name), read as Starlette reads them;
    None for anything Starlette might read differently (the route then reads it)."""
    if b";" in body:  # older python-multipart versions also split fields on ";", urllib does not
        return None
    try:
        # Starlette unquotes with unquote_plus (UTF-8, errors replaced), as parse_qsl does.
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


class TokenExchangeDoor:
    """Answers well-formed token exchange forms at ``POST /v1/oauth2/token``; anything else goes on to ``app``."""

    def __init__(self, app: ASGIApp, threads: int = EXCHANGE_THREADS, spill_after: float = SPILL_AFTER) -> None:
        self.app = app
        self.spill_after = spill_after
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="token-exchange")  # started on first use

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != TOKEN_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = first_headers(scope)
        if headers.get(b"content-type", b"").partition(b";")[0].strip().lower() != FORM:
            await self.app(scope, receive, send)
            return
        body = await whole_body(receive)  # read and bounded by the body limit above
        if body is None:
            return  # the client went away: nobody is left to answer
        fields = plain_form(body)
        if fields is None or fields.get("grant_type") != TOKEN_EXCHANGE:
            await self.app(scope, replay(body, receive), send)
            return
        context = scope["app"].state.context  # the composition root (api/context.py)
        user_agent = headers.get(b"user-agent")
        who = RequestContext(client_ip=scope_ip(scope, headers, context.trusted_proxies),
                             user_agent=user_agent.decode("latin-1") if user_agent is not None else None)
        answer = await self.run(exchange_grant, context, who, fields)
        await render_grant(answer)(scope, receive, send)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on one of the door's threads; on the shared pool if none takes it within ``spill_after``.

        A timer, not ``asyncio.wait_for`` around a shielded future: that cost about 50 µs more per
        exchange (docs/performance.md, "Workload identity federation").
        """
        loop = asyncio.get_running_loop()
        queued = self._threads.submit(fn, *args)
        spilled = False

        def spill() -> None:
            nonlocal spilled
            spilled = queued.cancel()  # only while it still waits for a thread; a running one is only slow

        timer = loop.call_later(self.spill_after, spill)
        try:
            return await asyncio.wrap_future(queued, loop=loop)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not spilled or (task is not None and task.cancelling()):
                raise  # the request itself was cancelled (perhaps just as the exchange spilled)
        finally:
            timer.cancel()
        return await run_in_threadpool(fn, *args)
