"""Operator endpoints and cross-cutting wiring: health, readiness, metrics, brute-force limits (429),
and shutdown hooks (the security headers are api/middleware.py's).

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
from sqlalchemy import func, select, text

from tokensmith import metrics
from tokensmith.api.auth import Context, requires
from tokensmith.api.context import AppContext
from tokensmith.api.problems import problem
from tokensmith.api.routing import api_routes
from tokensmith.api.schemas import problem_responses
from tokensmith.db.migrate import is_current
from tokensmith.db.models import Token
from tokensmith.ratelimit import RateLimited
from tokensmith.tokens.liveness import live_token
from tokensmith.verify.core import Identity

log = logging.getLogger("tokensmith.operations")

ShutdownHook = Callable[[], Any]
router = APIRouter(tags=["operations"])


def add_shutdown_hook(app: FastAPI, hook: ShutdownHook) -> None:
    """Run ``hook`` when the server stops gracefully (SIGTERM/SIGINT), e.g. to flush last-used times."""
    context_of_app(app).shutdown_hooks.append(hook)


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    for hook in list(context_of_app(app).shutdown_hooks):
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
            .where(live_token(now))
        )
    metrics.set_active_tokens(int(active or 0))
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)


def install(app: FastAPI) -> None:
    """Health, readiness, metrics, 429 problems, limiter and shutdown hooks."""
    app.include_router(router)
    # Every authenticated route can answer 429 once a client is over its limit; forward-auth answers
    # 403 instead (nginx auth_request turns a 429 into a 500).
    for route in api_routes(app.routes):
        if (route.path.startswith("/v1/") or route.path == "/metrics") and route.path != "/v1/auth/verify":
            route.responses.setdefault(429, problem_responses(429)[429])

    @app.exception_handler(RateLimited)
    async def rate_limited(_request: Request, exc: RateLimited) -> JSONResponse:
        return problem(429, exc.detail, {"Retry-After": str(exc.retry_after)})



def context_of_app(app: FastAPI) -> AppContext:
    context: AppContext = app.state.context
    return context
