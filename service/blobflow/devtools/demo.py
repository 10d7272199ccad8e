"""Demo downstream services for `blobflow dev`: `studio` and `core` in one aiohttp app.

It answers every endpoint the example workflows (workflows/*.yaml) call, plausibly
and deterministically: answers are derived from the request by hashing, never by
chance, and nothing leaves the process. Blobs saved with POST /blobs are kept in
memory and served by GET /blobs/{blob_id}; any other id gets a made-up chapter.

| endpoint                  | answers                                              |
|---------------------------|------------------------------------------------------|
| POST /blobs/validate      | `{valid, blob_id, content_type, problems}`           |
| POST /blobs/metadata      | the `extract_fields` asked for (content_type, size, checksum) |
| POST /providers/trigger   | `{blob_id, triggered: [{provider_id, job_id, status}]}` |
| POST /providers/rollback  | `{blob_id, execution_id, rolled_back: [job_id]}`     |
| POST /deltas/generate     | `{delta_operations: [2 ops], created_blobs: [1 blob]}` |
| GET  /blobs/{blob_id}     | `{id, content, metadata: {chapter_number, ...}}`     |
| POST /generate            | `{text, word_count, model, finish_reason}`           |
| POST /consistency/check   | `{score, issues, book_id, chapter_number}`           |
| POST /blobs               | `{id, deltas: [...]}`                                |

Every endpoint honours `Idempotency-Key` as blobflow sends it: the first answer for
a key (per method and path) is kept and replayed, marked `Idempotent-Replayed: true`,
without doing the work again; side effects (job and blob numbering) show when it
matters. A body that is not a JSON object with the fields an endpoint needs gets
400 `{"error": {"code": "bad_request", "message": ...}}`. A blob id starting with
`slow-` makes POST /providers/trigger answer after 30 s: a run to cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from blobflow.devtools.demo_answers import (
    BadRequest,
    Compute,
    DemoState,
    Json,
    check_consistency,
    generate,
    generate_deltas,
    get_blob,
    metadata,
    rollback,
    save_blob,
    trigger,
    validate,
)

# A blob whose id starts with `slow-` makes provider processing take this long.
SLOW_PATHS = frozenset({"/providers/trigger"})
SLOW_S = 30.0
DEMO_STATE = web.AppKey("blobflow_demo_state", DemoState)


# -- plumbing -------------------------------------------------------------------------


def _endpoint(compute: Compute, *, reads_body: bool = True) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[DEMO_STATE]
        # The body is read before the idempotency check so that nothing is awaited
        # between the check and the remembering: two concurrent requests with one key
        # cannot both do the work.
        body: Json = {}
        if reads_body:
            try:
                parsed = json.loads(await request.text())
            except ValueError as exc:
                return _error(400, "bad_request", f"the body is not JSON: {exc}")
            if not isinstance(parsed, dict):
                return _error(400, "bad_request", "the body must be a JSON object")
            body = parsed
        if request.path in SLOW_PATHS and str(body.get("blob_id", "")).startswith("slow-"):
            # Something to cancel in the README's walkthrough.
            await asyncio.sleep(SLOW_S)
        key = request.headers.get("Idempotency-Key")
        scope = (request.method, request.path, key) if key else None
        if scope is not None and scope in state.answers:
            return web.json_response(state.answers[scope], headers={"Idempotent-Replayed": "true"})
        try:
            answer = compute(state, body, request.match_info)
        except BadRequest as exc:
            return _error(400, "bad_request", str(exc))
        if scope is not None:
            state.remember(scope, answer)
        return web.json_response(answer)

    return handle


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    # aiohttp answers unknown routes and oversized bodies in plain text; clients of a
    # JSON service should not have to care.
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)


def demo_app() -> web.Application:
    """A fresh app with empty state: the `studio` and `core` services at one base URL."""
    app = web.Application(middlewares=[_json_errors])
    app[DEMO_STATE] = DemoState()
    posts: dict[str, Compute] = {
        "/blobs/validate": validate,
        "/blobs/metadata": metadata,
        "/providers/trigger": trigger,
        "/providers/rollback": rollback,
        "/deltas/generate": generate_deltas,
        "/generate": generate,
        "/consistency/check": check_consistency,
        "/blobs": save_blob,
    }
    for path, compute in posts.items():
        app.router.add_post(path, _endpoint(compute))
    app.router.add_get("/blobs/{blob_id}", _endpoint(get_blob, reads_body=False))
    return app


@contextlib.asynccontextmanager
async def serve_demo(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `demo_app()` on `host:port` (0: a free port); yields the base URL."""
    runner = web.AppRunner(demo_app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1])
        yield f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    finally:
        await runner.cleanup()
