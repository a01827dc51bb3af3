"""RFC 9457 problem details for every error, and no traceback ever reaches a client."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokensmith.errors import AuthenticationFailed, InvalidInput, TokensmithError

log = logging.getLogger("tokensmith.api")
PROBLEM_JSON = "application/problem+json"
REALM = 'Bearer realm="tokensmith"'


def problem(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail, **extra}
    response = JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def www_authenticate(error: AuthenticationFailed) -> dict[str, str]:
    if error.error is None:
        return {"WWW-Authenticate": REALM}
    return {"WWW-Authenticate": f'{REALM}, error="{error.error}", error_description="{error.detail}"'}


def _describe(error: dict[str, Any]) -> dict[str, str]:
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
    message = error.get("msg", "is not valid")
    if error.get("type") == "extra_forbidden":
        message = "is not a known field"
    elif error.get("type") == "missing":
        message = "is required"
    return {"field": location, "message": message}


def install(app: FastAPI) -> None:
    @app.exception_handler(TokensmithError)
    async def domain_error(_request: Request, exc: TokensmithError) -> JSONResponse:
        headers = www_authenticate(exc) if isinstance(exc, AuthenticationFailed) else None
        extra: dict[str, Any] = {}
        if isinstance(exc, InvalidInput) and exc.field:
            extra["errors"] = [{"field": exc.field, "message": exc.detail}]
        return problem(exc.status, exc.detail, headers, **extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem(400, "the request body is not valid JSON")
        described = [_describe(e) for e in errors]
        summary = "; ".join(f"{e['field']} {e['message']}" for e in described[:5])
        return problem(422, f"the request is not valid: {summary}", errors=described)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem(exc.status_code, detail, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its type only: exception messages can quote request data.
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return problem(500, "internal error; the request was not completed")
