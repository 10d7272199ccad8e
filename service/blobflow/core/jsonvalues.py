"""Plain JSON values: type-strict equality, ordering and path lookup.

Python's own `==` says `True == 1` and `1 == 1.0`; JSON has one number type
and a separate boolean type, and blobflow's comparisons follow JSON.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson

JsonKind = Literal["null", "boolean", "number", "string", "array", "object"]


class _Missing:
    """Marks a path that leads nowhere, as distinct from an explicit null."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


def kind(value: Any) -> JsonKind | None:
    """The JSON type of a Python value, or None for anything JSON cannot hold."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "number"
    if isinstance(value, float):
        return "number" if math.isfinite(value) else None
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None


def strict_equal(a: Any, b: Any) -> bool:
    """JSON equality: same kind and same value, recursively; 1 == 1.0, true != 1."""
    ka = kind(a)
    if ka is None or ka != kind(b):
        return False
    if ka == "array":
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if ka == "object":
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def compare(a: Any, b: Any) -> int | None:
    """-1, 0 or 1 for two numbers or two strings; None when they cannot be ordered."""
    ka = kind(a)
    if ka not in ("number", "string") or ka != kind(b):
        return None
    return int(a > b) - int(a < b)


def lookup(value: Any, path: Sequence[str | int]) -> Any:
    """Follow `path` into `value`; MISSING where it leads nowhere.

    A string part of digits indexes an array, so the dotted field
    `items.0.name` works on trigger fields as `items[0].name` does.
    """
    current = value
    for part in path:
        if isinstance(current, dict):
            if not isinstance(part, str) or part not in current:
                return MISSING
            current = current[part]
        elif isinstance(current, list | tuple):
            if isinstance(part, str):
                # Past 18 digits no array is that long, and int() would
                # hit Python's digit limit on hostile input.
                if not (part.isascii() and part.isdigit() and len(part) <= 18):
                    return MISSING
                part = int(part)
            if not 0 <= part < len(current):
                return MISSING
            current = current[part]
        else:
            return MISSING
    return current


def compact_json(value: Any) -> str:
    """Compact JSON text; falls back to the stdlib for integers beyond 64 bits."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_LONG_DIGITS: Final = re.compile(rb"[0-9]{19}")


def loads(payload: bytes) -> Any:
    """Parse JSON, keeping integers beyond 64 bits exact; raises ValueError.

    orjson turns such integers into floats (losing digits) or refuses them;
    those rare payloads go to the stdlib parser instead. A long digit run
    inside a string only costs a slower parse. orjson also refuses a lone
    surrogate escape (`"\\ud800"`), which is valid JSON text: the stdlib parses
    it, so that `blobflow.core.storable` can say why such a value cannot be kept.
    """
    if _LONG_DIGITS.search(payload) is None:
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            if b"\\u" not in payload:
                raise
            try:
                return _stdlib_loads(payload)
            except ValueError:
                raise exc from None
    return _stdlib_loads(payload)


def _stdlib_loads(payload: bytes) -> Any:
    text = payload.decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def rfc3339(moment: datetime) -> str:
    """`2025-01-02T03:04:05.678Z`; a naive datetime is taken to be UTC already."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
