"""Operator endpoints and cross-cutting middleware: health, readiness, metrics, security headers,
brute-force limits (429), and shutdown hooks.

``install(app)`` wires everything; other doors reuse ``api.guard.guarded_verify`` and
``add_shutdown_hook``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import func, or_, select, text
from starlette.datastructures import MutableHeaders

from tokensmith import metrics
from tokensmith.api.auth import Context, requires
from tokensmith.api.headers import ResponseHeaders
from tokensmith.api.problems import problem
from tokensmith.api.routing import api_routes
from tokensmith.api.schemas import problem_responses
from tokensmith.db.migrate import is_current
from tokensmith.db.models import Token
from tokensmith.ratelimit import FailureLimiter, Limits, RateLimited, parse_networks
from tokensmith.verify.core import Identity

log = logging.getLogger("tokensmith.operations")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# HTML pages: nothing from elsewhere, no inline script, never framed.
STRICT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# /docs and /redoc load their UI from tokensmith itself (api/docs.py) with an inline bootstrap script;
# those two pages only get this looser policy (they hold no secrets; tokens pasted there stay in the
# page). Nothing from elsewhere: the docs work offline, and no CDN is trusted.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src blob:; base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")

ShutdownHook = Callable[[], Any]
router = APIRouter(tags=["operations"])


def security_headers(path: str, headers: MutableHeaders) -> None:
    """Never sniffed, never framed, no referrer; HTML pages get a strict CSP (/docs a looser one)."""
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
    if headers.get("content-type", "").startswith("text/html"):
        headers.setdefault("Content-Security-Policy", DOCS_CSP if path in DOCS_PATHS else STRICT_CSP)


def add_shutdown_hook(app: FastAPI, hook: ShutdownHook) -> None:
    """Run ``hook`` when the server stops gracefully (SIGTERM/SIGINT), e.g. to flush last-used times."""
    app.state.shutdown_hooks.append(hook)


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    for hook in list(getattr(app.state, "shutdown_hooks", [])):
        try:
            result = hook()
            if hasattr(result, "__await__"):
                await result
        except Exception as exc:  # one failing hook must not stop the others
            log.error("shutdown hook %s failed: %s", getattr(hook, "__name__", hook), type(exc).__name__)


@router.get("/healthz", include_in_schema=True, responses={200: {"description": "The process is up."}})
def healthz() -> dict[str, str]:
    """Liveness: the process answers. Touches nothing else."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready", **problem_responses(503)[503]}})
def readyz(ctx: Context) -> Any:
    """Readiness: the database answers and its schema is at the migrations' head."""
    try:
        with ctx.database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current = is_current(ctx.database.engine)
    except Exception as exc:
        log.warning("readiness: database unreachable (%s)", type(exc).__name__)
        return problem(503, "the database is unreachable")
    if not current:
        return problem(503, "the database schema is not at the current migration; run tokensmith db upgrade")
    return {"status": "ready"}


@router.get(
    "/metrics", response_class=Response, responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
        **problem_responses(401, 403, 429),
    },
)
def prometheus(caller: Annotated[Identity, requires("metrics:read")], ctx: Context) -> Response:
    """Prometheus metrics (text exposition); needs the metrics:read scope (admins)."""
    now = ctx.clock.now()
    with ctx.database.session() as session:
        active = session.scalar(
            select(func.count()).select_from(Token)
            .where(Token.revoked_at.is_(None), or_(Token.expires_at.is_(None), Token.expires_at > now))
        )
    metrics.set_active_tokens(int(active or 0))
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)


def install(app: FastAPI) -> None:
    """Health, readiness, metrics, 429 problems, security headers, limiter and shutdown hooks."""
    context = app.state.context
    settings = context.settings
    app.state.shutdown_hooks = []
    app.state.trusted_proxies = parse_networks(settings.trusted_proxies)
    app.state.limiter = FailureLimiter(context.database, context.clock, Limits(
        per_ip=settings.failures_per_ip, per_user=settings.failures_per_user,
        window_seconds=settings.failure_window_seconds, per_gateway=settings.failures_per_gateway,
    ))
    app.include_router(router)
    # Every authenticated route can answer 429 once a client is over its limit; forward-auth answers
    # 403 instead (nginx auth_request turns a 429 into a 500).
    for route in api_routes(app.routes):
        if (route.path.startswith("/v1/") or route.path == "/metrics") and route.path != "/v1/auth/verify":
            route.responses.setdefault(429, problem_responses(429)[429])

    @app.exception_handler(RateLimited)
    async def rate_limited(_request: Request, exc: RateLimited) -> JSONResponse:
        return problem(429, exc.detail, {"Retry-After": str(exc.retry_after)})

    app.add_middleware(ResponseHeaders, edit=security_headers)
