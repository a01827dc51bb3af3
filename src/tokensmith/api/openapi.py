"""The OpenAPI document says what the API really answers (schemathesis checks it: tests/test_fuzz.py).

FastAPI documents every validation error as a 422 ``application/json`` ``HTTPValidationError`` and
says nothing of a body that is not JSON at all. tokensmith answers both as RFC 9457 problems
(``application/problem+json``, see api/problems.py): 422 for a request that does not validate,
400 for a body that cannot be parsed. This corrects the document once for every route, rather than
on each decorator.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM_REF = "#/components/schemas/Problem"


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": {"$ref": PROBLEM_REF}}}}


def correct(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with the validation and unparseable-body answers documented as they are sent."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if "422" in responses:
                responses["422"] = _problem("The request does not validate; `errors` names each field.")
            if "requestBody" in operation:
                responses.setdefault("400", _problem("The body cannot be parsed (not JSON, or not UTF-8)."))
                responses.setdefault("422", _problem("The request does not validate; `errors` names each field."))
    schemas = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema


def install(app: FastAPI) -> None:
    """Serve the corrected document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = correct(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes,
            ))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
