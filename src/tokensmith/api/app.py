"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from starlette.middleware.base import RequestResponseEndpoint

from tokensmith import __version__
from tokensmith.api import problems
from tokensmith.api.context import AppContext
from tokensmith.api.routes import clusters, identity, tokens
from tokensmith.clock import Clock, SystemClock
from tokensmith.config import Settings
from tokensmith.console import install as install_console
from tokensmith.db.database import Database
from tokensmith.verify.core import Verifier

DESCRIPTION = """Self-hosted API access tokens. Authenticate with `Authorization: Bearer <secret>`.
Errors are RFC 9457 `application/problem+json`."""


def create_app(settings: Settings, database: Database, secret_key: bytes, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()
    app = FastAPI(title="tokensmith", version=__version__, description=DESCRIPTION)
    app.state.context = AppContext(
        settings=settings, database=database, clock=clock, secret_key=secret_key,
        verifier=Verifier(database, secret_key, clock),
    )
    problems.install(app)
    for router in (identity.router, tokens.router, clusters.clusters, clusters.vpcs):
        app.include_router(router)
    install_console(app)  # the web console at /

    @app.middleware("http")
    async def no_store_for_api(request: Request, call_next: RequestResponseEndpoint) -> Response:
        # API answers describe credentials; no shared cache or browser history should keep them.
        response = await call_next(request)
        if request.url.path.startswith("/v1/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
