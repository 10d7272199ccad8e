"""Crash and resume: a process killed mid-step; another takes over at the first unsettled step."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from tests.crash_runner import STEPS
from tests.servers import Downstream, MongoDeployment, Reply
from tests.support import ROOT, catalog_with, engine_for, store_of, stored_logs

Db = AsyncDatabase[dict[str, Any]]
LEASE_MS = 500


@pytest.mark.asyncio
async def test_sigkill_during_step_three_resumes_at_step_three(
    mongodb: MongoDeployment, mongo_db_name: str, mongo_db: Db, downstream: Downstream
) -> None:
    for name in ("one", "two"):
        downstream.script("POST", f"/{name}", [Reply(200, json={name: True})])
    downstream.script("POST", "/three", [Reply(200, hang=True)])
    ops = [{"op": "set", "path": "/done", "value": True}]
    downstream.script("POST", "/four", [Reply(200, json={"ops": ops})])

    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.crash_runner",
        mongodb.url,
        mongo_db_name,
        downstream.url,
        str(LEASE_MS),
        cwd=ROOT,
    )
    try:
        interrupted = await downstream.wait_for_calls("POST", "/three", count=1, timeout_s=30)
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()

    document = await mongo_db["executions"].find_one({})
    assert document is not None
    assert [s["status"] for s in document["steps"]] == [
        "completed",
        "completed",
        "pending",
        "pending",
    ]

    downstream.script("POST", "/three", [Reply(200, json={"three": True})])
    await asyncio.sleep(LEASE_MS / 1000 + 0.2)  # the dead worker's lease runs out
    catalog = catalog_with(STEPS, output_map={"delta_operations": "$.steps.four.output.ops"})
    async with engine_for(catalog, mongo_db, downstream, lease_ms=LEASE_MS) as engine:
        resumed = await engine.resume(document["_id"])

    assert resumed is not None
    assert resumed.status == "completed", resumed.error
    assert len(downstream.calls("POST", "/one")) == 1
    assert len(downstream.calls("POST", "/two")) == 1
    retried = downstream.calls("POST", "/three")
    assert len(retried) == 2
    assert retried[1].headers["Idempotency-Key"] == interrupted[0].headers["Idempotency-Key"]
    assert await mongo_db["deltas"].count_documents({}) == 1
    logs = [line.message for line in await stored_logs(store_of(engine), resumed.id)]
    assert logs[0] == "execution started"
    assert "execution resumed" in logs
