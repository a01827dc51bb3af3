"""The server the benchmarks hit: tokensmith's app plus a no-op endpoint, on a chosen server stack.

    python -m bench.server --stack uvicorn-httptools --port 8100   (env: TOKENSMITH_DATABASE_URL, ..._SECRET_KEY)
"""

from __future__ import annotations

import argparse
import os

from fastapi import FastAPI, Response

from tokensmith.api.app import create_app
from tokensmith.bootstrap import prepare
from tokensmith.config import Settings

STACKS = ("uvicorn-httptools", "uvicorn-h11", "granian")


def build() -> FastAPI:
    settings = Settings.from_env()
    boot = prepare(settings)
    app = create_app(settings, boot.database, boot.secret_key)

    @app.get("/v1/bench/noop", include_in_schema=False)
    async def noop() -> Response:
        # The ceiling: same app, same middleware, no verification.
        return Response(status_code=200)

    first_in_line(app)
    return app


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
    args = parser.parse_args()
    if args.stack == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops

        os.environ.setdefault("PYTHONPATH", os.getcwd())
        Granian("bench.server:build", address="127.0.0.1", port=args.port, interface=Interfaces.ASGI,
                factory=True, workers=1, loop=Loops.uvloop, log_enabled=False).serve()
        return
    import uvicorn

    http = "httptools" if args.stack == "uvicorn-httptools" else "h11"
    loop = "uvloop" if args.stack == "uvicorn-httptools" else "asyncio"
    uvicorn.run("bench.server:build", factory=True, host="127.0.0.1", port=args.port, http=http, loop=loop,
                log_level="warning", access_log=False, server_header=False)


if __name__ == "__main__":
    main()
