"""Cross-origin requests (CORS), off unless ``--cors-origins`` names the origins allowed.

The API only reads (GET), so what a browser on another origin needs is small: the
``Access-Control-Allow-Origin`` header on answers (errors included, so a page can show
them), and an answer to the preflight ``OPTIONS`` a browser sends before a request with
custom headers (``Authorization``, say). A preflight is answered here, before any other
middleware, since browsers send it without credentials.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Callable

from aiohttp import web

if TYPE_CHECKING:  # a Protocol in aiohttp's typedefs; only the type checker needs it
    from aiohttp.typedefs import Middleware

__all__ = ["PREFLIGHT_MAX_AGE_S", "cors_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: how long a browser may reuse a preflight answer
PREFLIGHT_MAX_AGE_S = 600
_METHODS = "GET, HEAD, OPTIONS"


def cors_middleware(origins: Sequence[str]) -> Middleware:
    """Allow ``origins`` (exact ``scheme://host[:port]`` strings, or ``*`` for any)."""
    allowed = frozenset(o.rstrip("/") for o in origins)
    any_origin = "*" in allowed

    def allow(origin: str) -> bool:
        return any_origin or origin in allowed

    def decorate(response: web.StreamResponse, origin: str) -> None:
        response.headers["Access-Control-Allow-Origin"] = "*" if any_origin else origin
        response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        if not any_origin:
            response.headers.add("Vary", "Origin")

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or not allow(origin):
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            preflight = web.Response(status=204)
            decorate(preflight, origin)
            preflight.headers["Access-Control-Allow-Methods"] = _METHODS
            wanted = request.headers.get("Access-Control-Request-Headers")
            if wanted:
                preflight.headers["Access-Control-Allow-Headers"] = wanted
            preflight.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
            return preflight
        response = await handler(request)
        decorate(response, origin)
        return response

    return cors
