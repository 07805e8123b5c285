"""JSON responses and the one error type handlers raise.

Every error leaves the API as ``{"error": {"code": ..., "message": ...}}``; the codes are
listed in :data:`ERROR_CODES` so the OpenAPI document and the middleware agree.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

__all__ = ["ERROR_CODES", "ApiError", "error_body", "json_response", "wants_pretty"]

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

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def bad_parameter(cls, name: str, message: str) -> ApiError:
        return cls(400, "bad_parameter", f"parameter '{name}': {message}")


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


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
