"""Query parameters: parsed strictly, refused with the parameter's name."""

from __future__ import annotations

import re
from collections.abc import Collection

from aiohttp import web

from blobflow.errors import bad_parameter

_INTEGER = re.compile(r"-?[0-9]{1,18}")


def text_param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad_parameter(name, "given more than once")
    if not values:
        return None
    if not values[0]:
        raise bad_parameter(name, "must not be empty")
    return values[0]


def int_param(
    request: web.Request, name: str, *, default: int, minimum: int, maximum: int | None = None
) -> int:
    text = text_param(request, name)
    if text is None:
        return default
    bounds = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
    # int() would also take "+5", " 5" and "5_0"; a query parameter should be plain digits.
    if _INTEGER.fullmatch(text) is None:
        raise bad_parameter(name, f"must be an integer {bounds}, got {text!r}")
    value = int(text)
    if value < minimum or (maximum is not None and value > maximum):
        raise bad_parameter(name, f"must be an integer {bounds}, got {value}")
    return value


def choice_param(request: web.Request, name: str, choices: Collection[str]) -> str | None:
    value = text_param(request, name)
    if value is not None and value not in choices:
        raise bad_parameter(name, f"must be one of {', '.join(sorted(choices))}, got {value!r}")
    return value
