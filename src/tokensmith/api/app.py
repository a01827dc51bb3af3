"""The FastAPI application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tokensmith import __version__, caps
from tokensmith.api import docs, openapi, operations, problems
from tokensmith.api.context import AppContext
from tokensmith.api.middleware import TokensmithAPI
from tokensmith.api.routes import (
    clusters,
    federation,
    identity,
    kube,
    lifecycle,
    objectstore,
    token_usage,
    tokens,
    users,
    verification,
)
from tokensmith.api.routes.device_authorization import router as device_authorization_router
from tokensmith.api.routes.kube_credentials import router as kube_credentials_router
from tokensmith.api.routes.oauth_token import router as oauth_token_router
from tokensmith.clock import Clock, SystemClock
from tokensmith.config import Settings
from tokensmith.console import install as install_console
from tokensmith.db.database import Database
from tokensmith.webhooks.worker import BackgroundWorker, DeliveryWorker

DESCRIPTION = """Self-hosted API access tokens. Authenticate with `Authorization: Bearer <secret>`.
Errors are RFC 9457 `application/problem+json`."""


def _freeze_heap() -> None:
    """Move every object start-up built (modules, classes, schemas, the app: ~290,000) out of the
    garbage collector's sight, for the life of the process.

    A full collection walks every tracked object: with them, one took 100 ms to over a second, and
    stopped every request meanwhile (the p99 of TokenReview and S3 verify at c=32, which allocate
    enough to trigger one every few seconds; docs/performance.md). Frozen objects are still freed
    when nothing refers to them; only cycles among them are never collected, so the garbage of
    start-up is collected first.
    """
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings, database: Database, secret_key: bytes, clock: Clock | None = None,
    *, background_worker: bool = False, freeze_heap: bool = False,
) -> FastAPI:
    """The app. ``background_worker`` runs webhook delivery in a thread (the server; tests drive it).
    ``freeze_heap`` (the server) hides what start-up built from the garbage collector (``_freeze_heap``)."""
    context = AppContext.build(settings, database, secret_key, clock or SystemClock())
    verifier = context.verifier
    caps.configure(caps.Caps(settings.max_tokens_per_user, settings.max_access_keys_per_user,
                             settings.max_sessions_per_user))

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
        # Background: other replicas' invalidations, cache sweeps, last-used flushes (a final one on stop).
        verifier.start()
        operations.add_shutdown_hook(app_, verifier.stop)
        operations.add_shutdown_hook(app_, lambda: context.denials.flush(force=True))  # coalesced counts
        if background_worker:
            worker = BackgroundWorker(DeliveryWorker(database, context.clock, keyring=context.keyring,
                                                     outbound=context.outbound))
            worker.start()
            operations.add_shutdown_hook(app_, worker.stop)
        if freeze_heap:
            _freeze_heap()
        async with operations.lifespan(app_):
            yield

    # The middleware stack (security headers, forward-auth fast path) is declared in api/middleware.py;
    # /docs and /redoc are installed by api/docs.py, with assets served here rather than from a CDN.
    app = TokensmithAPI(settings=settings, title="tokensmith", version=__version__, description=DESCRIPTION,
                        lifespan=lifespan,
                        docs_url=None, redoc_url=None)
    app.state.context = context  # the composition root (api/context.py); doors read it via context_of()
    problems.install(app)
    # Requests are matched against routers in this order, route by route: the verification doors
    # (forward-auth, introspection, TokenReview, SigV4; their cached answers never get here) and the
    # OAuth token endpoint (a workload's token exchange) are the hot paths, so they come first.
    routers = (verification.router, kube.router, objectstore.router, oauth_token_router, identity.router,
               tokens.router, token_usage.router, clusters.clusters, clusters.vpcs, lifecycle.router, users.router,
               kube_credentials_router, device_authorization_router, federation.router)
    for router in routers:
        app.include_router(router)
    operations.install(app)  # health, readiness, metrics, brute-force limits (429)
    install_console(app)  # the web console at /
    openapi.install(app)  # 400/422 documented as the problems they are
    docs.install(app)  # /docs and /redoc, assets included
    return app
