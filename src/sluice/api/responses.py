"""JSON responses and the one error type handlers raise.

Every error leaves the API as ``{"error": {"status": 400, "code": ..., "message": ...}}``:
``status`` repeats the HTTP status (for logs and proxies that lose it), ``code`` is the
machine-readable reason, listed in :data:`ERROR_CODES` so the OpenAPI document and the
middleware agree, and a 400 about one query parameter names it in ``param``. A 503 also
carries a ``Retry-After`` header (seconds).
"""

from __future__ import annotations

from typing import Any, Optional

import orjson
from aiohttp import web

__all__ = ["ERROR_CODES", "RETRY_AFTER_S", "ApiError", "error_body", "json_response", "wants_pretty"]

#: what a 503 tells clients to wait before trying again: about one store health check
RETRY_AFTER_S = 5

ERROR_CODES = (
    "bad_parameter",
    "unknown_parameter",
    "not_found",
    "method_not_allowed",
    "store_unavailable",
    "store_error",
    "internal",
    "unauthorized",
    "forbidden",
)


class ApiError(Exception):
    """An answer other than 200, with a machine-readable ``code`` and a human message."""

    def __init__(self, status: int, code: str, message: str, *, param: Optional[str] = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.param = param

    @classmethod
    def bad_parameter(cls, name: str, message: str) -> ApiError:
        return cls(400, "bad_parameter", f"parameter '{name}': {message}", param=name)

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.status, param=self.param)


def error_body(code: str, message: str, status: int, *, param: Optional[str] = None) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "code": code, "message": message}
    if param is not None:
        error["param"] = param
    return {"error": error}


def wants_pretty(request: web.Request) -> bool:
    # ``?pretty`` alone arrives as an empty string; only an explicit false turns it off.
    value = request.query.get("pretty")
    return value is not None and value != "false"


def json_response(request: web.Request, data: Any, status: int = 200) -> web.Response:
    option = orjson.OPT_NON_STR_KEYS
    if wants_pretty(request):
        option |= orjson.OPT_INDENT_2
    body = orjson.dumps(data, option=option)
    if option & orjson.OPT_INDENT_2:
        body += b"\n"
    return web.Response(body=body, status=status, content_type="application/json")
