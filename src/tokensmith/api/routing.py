"""The app's API routes, however FastAPI nests included routers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.routing import APIRoute


def api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, looking inside included routers.

    FastAPI >= 0.160 includes routers lazily: ``app.routes`` then holds wrappers, not the routes,
    and a plain ``isinstance(route, APIRoute)`` loop silently finds nothing.
    """
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from api_routes(included.routes)
        elif isinstance(route, APIRoute):
            yield route
