"""Bearer tokens for the API: who may read, and what stays open.

With ``--token-file`` every request needs ``Authorization: Bearer <token>`` for a token
whose entry has the ``read`` scope (the same file format as the ingest side, see
``sluice/auth.py``). A missing or unknown token is 401 (with ``WWW-Authenticate``), a
token without ``read`` is 403. Open without a token, because they reveal no data:
``/healthz`` and ``/readyz`` (probes), the dashboard's page and assets (the page then
asks its user for a token), and the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..auth import TokenFile
from .responses import error_body, json_response

__all__ = ["OPEN_PATHS", "bearer_auth", "is_open"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/api/v1/openapi.json"})
_OPEN_PREFIXES = ("/static/",)


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(_OPEN_PREFIXES)


def _refuse(request: web.Request, status: int, code: str, message: str) -> web.Response:
    response = json_response(request, error_body(code, message, status), status=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="sluice"'
    return response


def bearer_auth(tokens: TokenFile) -> Middleware:
    """Middleware that admits requests with a bearer token allowed to read."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" or is_open(request.path):
            return await handler(request)
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return _refuse(request, 401, "unauthorized",
                           "this API needs a token: send 'Authorization: Bearer <token>'")
        principal = tokens.lookup(value.strip())
        if principal is None:
            return _refuse(request, 401, "unauthorized", "the bearer token is not valid (unknown or revoked)")
        if not principal.may_read:
            return _refuse(request, 403, "forbidden", f"{principal.name} may not read (no 'read' scope)")
        return await handler(request)

    return middleware
