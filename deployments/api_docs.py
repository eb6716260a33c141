"""The ingress's API description and how its routes are served.

``/docs``, ``/redoc`` and ``/openapi.json`` are served without a key (the request models are
public knowledge for a documented API; the fuzz test reads the schema from there). A
deployment that does not publish its API sets ``api_docs: false`` (configs/serve.yaml):
:func:`remove_api_docs` makes them answer 404.

:func:`serve_lean` serves a documented FastAPI route by the same handler without FastAPI's
per-request machinery (dependency solving, the class-based view's instance lookup, response
validation): the hot routes (``POST /v1/recommend``, ``POST /v1/events``) parse their bodies
by hand and answer encoded bytes, so that machinery did nothing for them but cost CPU. The
FastAPI route stays where it is, so the OpenAPI schema still describes the route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def remove_api_docs(app) -> int:
    """Take the interactive docs and the OpenAPI schema off ``app`` (``args.api_docs: false``):
    they answer 404 like any unknown path. Returns how many routes were removed."""
    kept = [r for r in app.router.routes if getattr(r, "path", None) not in DOCS_PATHS]
    removed = len(app.router.routes) - len(kept)
    app.router.routes[:] = kept
    return removed


class LeanRoute(Route):
    """A plain Starlette route in front of the documented FastAPI route of the same path and
    method (which it shadows; the OpenAPI schema comes from that one)."""


def serve_lean(app, path: str, method: str,
               handler: Callable[[Request, str | None], Awaitable[Response]]) -> None:  # fmt: skip
    """Answer ``method path`` with ``handler(request, authorization header or None)`` ahead of
    ``app``'s routes. Errors it raises go through ``app``'s exception handlers as before; a
    body over the limit is still refused by the middleware. Calling it again for the same
    path and method replaces the earlier one (a replica built twice in one process)."""

    async def endpoint(request: Request) -> Response:
        return await handler(request, request.headers.get("authorization"))

    routes = [r for r in app.router.routes
              if not (isinstance(r, LeanRoute) and r.path == path and method in r.methods)]  # fmt: skip
    app.router.routes[:] = [LeanRoute(path, endpoint, methods=[method]), *routes]
