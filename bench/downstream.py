"""The standard workload's downstream service: four JSON endpoints, 5 ms each.

Run in its own process (`python -m bench.downstream PORT`), so its CPU is not
counted against the contender it serves.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

LATENCY_S = 0.005
Json = dict[str, Any]


def _validate(body: Json) -> Json:
    return {"valid": True}


def _metadata(body: Json) -> Json:
    return {"content_type": "text/plain", "size": 42}


def _trigger(body: Json) -> Json:
    return {"triggered": ["bench"]}


def _generate(body: Json) -> Json:
    """The standard answer (3 deltas); `deltas: N` in the request asks for N operations."""
    blob_id = body.get("blob_id", "")
    if isinstance(body.get("deltas"), int):
        operations = [
            {"op": "set", "path": f"/metadata/k{number}", "value": number}
            for number in range(body["deltas"])
        ]
        return {"delta_operations": operations}
    return {
        "delta_operations": [
            {"op": "set", "path": "/metadata/checked", "value": True},
            {"op": "set", "path": "/metadata/size", "value": 42, "old_value": 40},
        ],
        "created_blobs": [{"id": f"derived-{blob_id}", "type": "summary"}],
    }


ENDPOINTS: dict[str, Callable[[Json], Json]] = {
    "/blobs/validate": _validate,
    "/blobs/metadata": _metadata,
    "/providers/trigger": _trigger,
    "/deltas/generate": _generate,
}


def _handler(answer: Callable[[Json], Json]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read() or b"{}")
        await asyncio.sleep(LATENCY_S)
        return web.Response(body=orjson.dumps(answer(body)), content_type="application/json")

    return handle


def app() -> web.Application:
    application = web.Application()
    for path, answer in ENDPOINTS.items():
        application.router.add_post(path, _handler(answer))
    return application


if __name__ == "__main__":
    web.run_app(app(), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
