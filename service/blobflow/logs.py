"""Structured logs: JSON lines (or text), with context bound once per unit of work.

`bound(execution_id=…, workflow_id=…)` puts fields on every record logged
inside it, in this task and the tasks it starts, without passing them around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson

_EMPTY: Mapping[str, Any] = MappingProxyType({})
# What a line of text must not carry raw: line breaks and other control characters
# (an event id with a newline would forge a log line), and lone surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "log_context", default=_EMPTY
)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_context.get(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(entry, default=str).decode()
        except orjson.JSONEncodeError:  # a lone surrogate: ASCII JSON escapes it
            return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        saved = record.msg, record.args
        record.msg, record.args = escaped(record.getMessage()), None
        try:
            text = super().format(record)
        finally:
            record.msg, record.args = saved
        context = _context.get()
        if context:
            text += " " + " ".join(f"{key}={escaped(str(value))}" for key, value in context.items())
        return text


def escaped(text: str) -> str:
    """`text` with control characters and lone surrogates written as escapes (`\\n`)."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter at info level drowns what blobflow says.
    for noisy in ("aiohttp.access", "pymongo", "nats"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
