"""Readiness: a flood of /readyz costs the dependencies one round of probes a second."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from blobflow.api.health import READINESS, Probe, health_routes


@pytest.mark.asyncio
async def test_readyz_answers_from_probes_at_most_a_second_old() -> None:
    calls = {"mongodb": 0, "nats": 0}

    def counting(name: str, answer: bool) -> Probe:
        async def probe() -> bool:
            calls[name] += 1
            await asyncio.sleep(0.01)
            return answer

        return probe

    app = web.Application()
    health_routes(app, {"mongodb": counting("mongodb", True), "nats": counting("nats", False)})
    async with TestClient(TestServer(app)) as client:
        replies = await asyncio.gather(*(client.get("/readyz") for _ in range(50)))
        assert {reply.status for reply in replies} == {503}
        body = await replies[0].json()
        assert body["checks"] == {"mongodb": True, "nats": False}

    assert calls == {"mongodb": 1, "nats": 1}
    assert app[READINESS].rounds == 1
