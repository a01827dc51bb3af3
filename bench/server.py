"""The server the benchmarks hit: tokensmith's app plus a no-op endpoint, on a chosen server stack.

    python -m bench.server --stack uvicorn-httptools --port 8100   (env: TOKENSMITH_DATABASE_URL, ..._SECRET_KEY)
    python -m bench.server --app raw --port 8101                   # the ceiling: a raw ASGI app, no framework
    python -m bench.server --workers 2 --port 8102                 # tokensmith with two worker processes
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from fastapi import FastAPI, Response

from tokensmith.api.app import create_app
from tokensmith.bootstrap import prepare
from tokensmith.config import Settings

STACKS = ("uvicorn-httptools", "uvicorn-h11", "granian")


def build() -> FastAPI:
    settings = Settings.from_env()
    boot = prepare(settings)
    app = create_app(settings, boot.database, boot.secret_key, freeze_heap=True)  # as `tokensmith serve`

    @app.get("/v1/bench/noop", include_in_schema=False)
    async def noop() -> Response:
        # The ceiling: same app, same middleware, no verification.
        return Response(status_code=200)

    first_in_line(app)
    return app


async def raw(scope: dict, receive: Any, send: Any) -> None:
    """The true ceiling: an ASGI app that answers 200 with no framework at all, on the same server."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def first_in_line(app: FastAPI) -> None:
    """Match the no-op route before every other: routing then costs it nothing, a true ceiling.

    FastAPI matches routes in order; a route added after ``create_app`` would otherwise be tried
    last, paying for every route before it, which no real door does.
    """
    app.router.routes.insert(0, app.router.routes.pop())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", choices=STACKS, default="uvicorn-httptools")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", choices=("tokensmith", "raw"), default="tokensmith")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    target, factory = ("bench.server:raw", False) if args.app == "raw" else ("bench.server:build", True)
    if args.stack == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops

        os.environ.setdefault("PYTHONPATH", os.getcwd())
        Granian("bench.server:build", address="127.0.0.1", port=args.port, interface=Interfaces.ASGI,
                factory=True, workers=1, loop=Loops.uvloop, log_enabled=False).serve()
        return
    import uvicorn

    from tokensmith.protocols import HeaderTimeoutH11Protocol, HeaderTimeoutHttpToolsProtocol

    # The protocols ``tokensmith serve`` runs (uvicorn's, with its header read deadline), for the
    # raw ASGI ceiling too: the same server stack under every app measured.
    http = HeaderTimeoutHttpToolsProtocol if args.stack == "uvicorn-httptools" else HeaderTimeoutH11Protocol
    loop = "uvloop" if args.stack == "uvicorn-httptools" else "asyncio"
    uvicorn.run(target, factory=factory, host="127.0.0.1", port=args.port, http=http, loop=loop,
                log_level="warning", access_log=False, server_header=False, workers=args.workers)


if __name__ == "__main__":
    main()
