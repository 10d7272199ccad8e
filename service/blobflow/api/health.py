"""Liveness and readiness over HTTP: `/healthz` and `/readyz` (§9).

Readiness asks each dependency; a probe that hangs counts as not ready. The
answer is at most `READINESS_MAX_AGE_S` old, and calls in that time share one
round of probes: a flood of `/readyz` costs MongoDB and NATS one ping a second.
`details` says what the definitions in use disable (registered by an older
version, refused by this one) and whether the latest registered ones failed to
load (the last good are in use): the replica still works, so it stays ready.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web

from blobflow.api.context import CONTEXT
from blobflow.core.catalog import Catalog

Probe = Callable[[], Awaitable[bool]]
PROBE_TIMEOUT_S = 2.0
READINESS_MAX_AGE_S = 1.0


class Readiness:
    """The probes' results, asked again once they are `READINESS_MAX_AGE_S` old."""

    def __init__(self, probes: Mapping[str, Probe]) -> None:
        self.probes = probes
        self.rounds = 0
        self._lock = asyncio.Lock()
        self._checked_at = -math.inf
        self._results: dict[str, bool] = {}

    async def results(self) -> dict[str, bool]:
        async with self._lock:  # callers meanwhile wait for this round, not a round each
            if time.monotonic() - self._checked_at >= READINESS_MAX_AGE_S:
                names = list(self.probes)
                answers = await asyncio.gather(*(_probe(self.probes[n]) for n in names))
                self._results = dict(zip(names, answers, strict=True))
                self._checked_at = time.monotonic()
                self.rounds += 1
            return dict(self._results)


READINESS: web.AppKey[Readiness] = web.AppKey("readiness", Readiness)


def health_routes(app: web.Application, probes: Mapping[str, Probe]) -> None:
    app[READINESS] = Readiness(probes)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)


async def _healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    results = await request.app[READINESS].results()
    ready = all(results.values())
    body: dict[str, object] = {"status": "ready" if ready else "not ready", "checks": results}
    context = request.app.get(CONTEXT)
    if context is not None:
        body["details"] = readiness_details(context.catalog(), context.definitions_problem())
    return _json(body, status=200 if ready else 503)


def readiness_details(catalog: Catalog, definitions_problem: str | None) -> dict[str, object]:
    """What the definitions in use disable, and why the latest failed to load, if they did."""
    return {
        "definitions_problem": definitions_problem,
        "disabled_bindings": [
            {"provider_id": b.provider_id, "workflow_id": b.workflow_id, "reason": b.reason}
            for b in catalog.disabled_bindings
        ],
        "disabled_schemas": [
            {"schema_id": s.schema_id, "reason": s.reason} for s in catalog.disabled_schemas
        ],
    }


async def _probe(probe: Probe) -> bool:
    try:
        return await asyncio.wait_for(probe(), PROBE_TIMEOUT_S)
    except Exception:  # any failure of a dependency means "not ready", never a 500
        return False


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
