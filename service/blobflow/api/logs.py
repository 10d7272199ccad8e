"""An execution's log lines: filtered and paged as JSON, or downloaded whole as a file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import get_args

from aiohttp import web

from blobflow.api.access import principal
from blobflow.api.context import context
from blobflow.api.params import choice_param, int_param, text_param
from blobflow.api.responses import json_bytes, json_response
from blobflow.api.views import log_lines
from blobflow.core.jsonvalues import rfc3339
from blobflow.core.listings import ExecutionLogs
from blobflow.core.records import LogLevel, LogLine, log_document
from blobflow.errors import not_found

LEVELS = frozenset(get_args(LogLevel))
FORMATS = frozenset({"text", "json"})
# Lines per write: a download streams without building one large body.
CHUNK_LINES = 500


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/executions/{id}/logs", get_logs),
        web.get("/v1/executions/{id}/logs/download", download_logs),
    ]


async def get_logs(request: web.Request) -> web.Response:
    choose = _filter(request)
    limit = int_param(request, "limit", default=1000, minimum=1, maximum=10_000)
    offset = int_param(request, "offset", default=0, minimum=0)
    execution_id, found = await _visible_logs(request)
    lines = [line for line in log_lines(found.lines) if choose(line)]
    body = {
        "execution_id": execution_id,
        "workflow_id": found.workflow_id,
        "total_logs": len(lines),
        "logs": [log_document(line) for line in lines[offset : offset + limit]],
        "limit": limit,
        "offset": offset,
    }
    return json_response(body)


async def download_logs(request: web.Request) -> web.StreamResponse:
    fmt = choice_param(request, "format", FORMATS) or "text"
    choose = _filter(request)
    execution_id, found = await _visible_logs(request)
    lines = [line for line in log_lines(found.lines) if choose(line)]
    chunks = (
        _text_chunks(lines)
        if fmt == "text"
        else _json_chunks(execution_id, found.workflow_id, lines)
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/plain; charset=utf-8" if fmt == "text" else "application/json",
            "Content-Disposition": f'attachment; filename="{_filename(execution_id, fmt)}"',
        }
    )
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


def text_line(line: LogLine) -> str:
    """`2026-11-23T12:00:00.123Z INFO    [load] started: POST studio/load`"""
    where = f"[{line.step_id}] " if line.step_id else ""
    # One line per entry, whatever the message holds.
    message = line.message.replace("\r", "\\r").replace("\n", "\\n")
    return f"{rfc3339(line.timestamp)} {line.level.upper():<7} {where}{message}\n"


def _text_chunks(lines: list[LogLine]) -> Iterator[bytes]:
    for start in range(0, len(lines), CHUNK_LINES):
        yield "".join(text_line(line) for line in lines[start : start + CHUNK_LINES]).encode()


def _json_chunks(execution_id: str, workflow_id: str, lines: list[LogLine]) -> Iterator[bytes]:
    head = {"execution_id": execution_id, "workflow_id": workflow_id, "total_logs": len(lines)}
    yield json_bytes(head)[:-1] + b',"logs":['
    for start in range(0, len(lines), CHUNK_LINES):
        batch = lines[start : start + CHUNK_LINES]
        body = b",".join(json_bytes(log_document(line)) for line in batch)
        yield (b"," if start else b"") + body
    yield b"]}\n"


def _filter(request: web.Request) -> Callable[[LogLine], bool]:
    """The `level` and `step_id` filters of the request, as one predicate."""
    level = choice_param(request, "level", LEVELS)
    step_id = text_param(request, "step_id")

    def chosen(line: LogLine) -> bool:
        return (level is None or line.level == level) and (
            step_id is None or line.step_id == step_id
        )

    return chosen


async def _visible_logs(request: web.Request) -> tuple[str, ExecutionLogs]:
    execution_id = request.match_info["id"]
    found = await context(request).queries.execution_logs(execution_id)
    if found is None or not principal(request).sees(found.user_id):
        raise not_found(f"execution {execution_id!r}")
    return execution_id, found


def _filename(execution_id: str, fmt: str) -> str:
    # Ids are free text: keep the header and the file system safe.
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in execution_id)
    return f"execution-{safe[:80]}-logs.{'txt' if fmt == 'text' else 'json'}"
