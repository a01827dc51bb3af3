"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokensmith import __version__
from tokensmith.api import problems
from tokensmith.api.context import AppContext
from tokensmith.api.routes import clusters, identity, tokens, verification
from tokensmith.clock import Clock, SystemClock
from tokensmith.config import Settings
from tokensmith.db.database import Database
from tokensmith.verify.core import Verifier

DESCRIPTION = """Self-hosted API access tokens. Authenticate with `Authorization: Bearer <secret>`.
Errors are RFC 9457 `application/problem+json`."""


class NoStoreForApi:
    """API answers describe credentials; no shared cache or browser history should keep them.

    Plain ASGI rather than ``@app.middleware("http")``: that wrapper costs a task and a stream
    per request, a large share of the hot forward-auth path.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_no_store)


def create_app(settings: Settings, database: Database, secret_key: bytes, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()
    verifier = Verifier(database, secret_key, clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Background: other replicas' invalidations, cache sweeps, last-used flushes (and a final one).
        verifier.start()
        try:
            yield
        finally:
            verifier.stop()

    app = FastAPI(title="tokensmith", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.context = AppContext(
        settings=settings, database=database, clock=clock, secret_key=secret_key, verifier=verifier,
    )
    problems.install(app)
    for router in (identity.router, tokens.router, clusters.clusters, clusters.vpcs, verification.router):
        app.include_router(router)
    app.add_middleware(NoStoreForApi)
    return app
