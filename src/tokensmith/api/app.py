"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders

from tokensmith import __version__, caps
from tokensmith.api import openapi, operations, problems
from tokensmith.api.bodylimit import BodyLimit
from tokensmith.api.context import AppContext
from tokensmith.api.headers import ResponseHeaders
from tokensmith.api.routes import clusters, identity, kube, lifecycle, objectstore, tokens, verification
from tokensmith.api.tls import TrustedTls
from tokensmith.audit.addresses import AddressBook
from tokensmith.clock import Clock, SystemClock
from tokensmith.config import Settings
from tokensmith.console import install as install_console
from tokensmith.db.database import Database
from tokensmith.kube.denials import DenialLog
from tokensmith.objectstore.crypto import KeyRing
from tokensmith.verify.core import Verifier
from tokensmith.webhooks.worker import BackgroundWorker, DeliveryWorker

DESCRIPTION = """Self-hosted API access tokens. Authenticate with `Authorization: Bearer <secret>`.
Errors are RFC 9457 `application/problem+json`."""


def no_store_for_api(path: str, headers: MutableHeaders) -> None:
    """API answers describe credentials; no shared cache or browser history should keep them."""
    if path.startswith("/v1/"):
        headers.setdefault("Cache-Control", "no-store")


def create_app(
    settings: Settings, database: Database, secret_key: bytes, clock: Clock | None = None,
    *, background_worker: bool = False,
) -> FastAPI:
    """The app. ``background_worker`` runs webhook delivery in a thread (the server; tests drive it)."""
    clock = clock or SystemClock()
    caps.configure(caps.Caps(settings.max_tokens_per_user, settings.max_access_keys_per_user,
                             settings.max_sessions_per_user))
    verifier = Verifier(database, secret_key, clock)

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
        # Background: other replicas' invalidations, cache sweeps, last-used flushes (a final one on stop).
        verifier.start()
        operations.add_shutdown_hook(app_, verifier.stop)
        operations.add_shutdown_hook(app_, lambda: app_.state.denials.flush(force=True))  # coalesced counts
        if background_worker:
            worker = BackgroundWorker(DeliveryWorker(database, clock, keyring=KeyRing.from_settings(settings)))
            worker.start()
            operations.add_shutdown_hook(app_, worker.stop)
        async with operations.lifespan(app_):
            yield

    app = FastAPI(title="tokensmith", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.context = AppContext(
        settings=settings, database=database, clock=clock, secret_key=secret_key, verifier=verifier,
    )
    app.state.addresses = AddressBook()  # first use of a token from a new IP (audit)
    app.state.denials = DenialLog(database, clock)  # TokenReview denials (audit, coalesced)
    problems.install(app)
    # Requests are matched against routers in this order, route by route: the verification doors
    # (forward-auth, introspection, TokenReview, SigV4) are the hot path, so they come first.
    routers = (verification.router, kube.router, objectstore.router, identity.router, tokens.router,
               clusters.clusters, clusters.vpcs, lifecycle.router)
    for router in routers:
        app.include_router(router)
    app.add_middleware(verification.ForwardAuthFastPath)  # innermost: the header middlewares still apply
    operations.install(app)  # health, readiness, metrics, brute-force limits (429), security headers
    install_console(app)  # the web console at /
    openapi.install(app)  # 400/422 documented as the problems they are
    # Body ceiling (413) and read timeout (408) before authentication and parsing (api/bodylimit.py).
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout_seconds)
    app.add_middleware(ResponseHeaders, edit=no_store_for_api)
    app.add_middleware(TrustedTls, trusted_proxies=settings.trusted_proxies)  # https via a trusted proxy: HSTS
    return app
