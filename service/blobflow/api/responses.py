"""JSON in and out, and the one error shape: `{"error": {"code", "message"}}`.

Every failure leaves the API in that shape, whether raised by a handler
(`ApiError`), by aiohttp's router (unknown route, wrong method, body too
large) or by a bug (500, logged, details not shown).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from blobflow.core.jsonvalues import loads, rfc3339
from blobflow.errors import ApiError, StoreUnavailable

logger = logging.getLogger(__name__)
# Datetimes go through `_fallback`, so every timestamp has the same shape.
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME

# aiohttp's status texts turned into codes a client can switch on.
_HTTP_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def json_bytes(body: Any) -> bytes:
    return orjson.dumps(body, option=_OPTIONS, default=_fallback)


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    data = json_bytes(body)
    return web.Response(body=data, status=status, content_type="application/json", headers=headers)


def error_body(code: str, message: str, details: tuple[object, ...] = ()) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = list(details)
    return {"error": error}


def error_response(error: ApiError) -> web.Response:
    body = error_body(error.code, error.message, error.details)
    return json_response(body, error.status, headers=error.headers)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; 415 for another content type, 400 if malformed."""
    if request.content_type != "application/json":
        raise ApiError(
            415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)"
        )
    payload = await request.read()
    try:
        data = loads(payload)
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return data


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "error")
        message = _message(exc)
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return json_response(error_body(code, message), exc.status, headers=headers)
    except StoreUnavailable as exc:
        logger.warning("%s %s: MongoDB unavailable: %s", request.method, request.path, exc)
        body = error_body("unavailable", "the database is not answering; try again shortly")
        return json_response(body, 503, headers={"Retry-After": "1"})
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return json_response(error_body("internal", "internal error; see the service log"), 500)


def _message(exc: web.HTTPException) -> str:
    if exc.status == 413:
        return "the request body is too large"
    if exc.status == 404:
        return "no such route"
    if exc.status == 405:
        return f"method not allowed; allowed: {exc.headers.get('Allow', '')}"
    return exc.reason


def _fallback(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    # Values MongoDB hands back that JSON has no type for (ObjectId, Decimal128, bytes).
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
