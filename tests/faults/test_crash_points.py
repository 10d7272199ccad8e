"""A replica killed between two writes that matter; another one finishes its work.

The replica dies by SIGKILL at a named crash point (`blobflow.runtime.crashpoints`),
so the kill lands exactly there on every run, not merely near it.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase

from tests.faults.checker import check, settle
from tests.faults.stack import STREAMS, Stack
from tests.servers import Downstream
from tests.support import example_catalog, script_studio

pytestmark = pytest.mark.timeout(120)
Db = AsyncDatabase[dict[str, Any]]
CATALOG = example_catalog()
EVENT = {"event_id": "evt-crash", "blob_id": "blob-crash", "user_id": "u", "content": "T."}
STEP = "trigger_providers"


async def delta_events(nats_client: NatsClient) -> int:
    info = await nats_client.jetstream().stream_info(STREAMS.deltas)
    return int(info.state.messages)


@pytest.mark.asyncio
@pytest.mark.parametrize("point", [f"step_called:{STEP}", "deltas_stored", "deltas_published"])
async def test_a_replica_killed_at_a_crash_point_loses_and_doubles_nothing(
    stack: Stack, downstream: Downstream, nats_client: NatsClient, mongo_db: Db, point: str
) -> None:
    script_studio(downstream)
    doomed = await stack.start("doomed", env={"BLOBFLOW_CRASH_AT": point})
    js = nats_client.jetstream()
    await js.publish(STREAMS.created_subject, orjson.dumps(EVENT))
    assert await doomed.process.wait() == -9, doomed.log()[-2000:]
    died_at = time.monotonic()
    assert f"crash point {point} reached" in doomed.log()
    record = await mongo_db.executions.find_one({})
    assert record is not None
    steps = {step["id"]: step["status"] for step in record["steps"]}
    stored, published = await mongo_db.deltas.count_documents({}), await delta_events(nats_client)

    await stack.start("survivor")
    await settle(mongo_db, js, 1)
    recovered_s = time.monotonic() - died_at
    report = await check(mongo_db, js, CATALOG, [EVENT])
    print(
        f"\n{report}\nat the kill: steps {steps}, {stored} deltas stored, {published} "
        f"delta events; completed {recovered_s:.1f} s after the kill (lease 3 s)"
    )
    assert report.problems == [], str(report)
    assert report.terminal == Counter({"completed": 1})
    assert record["status"] == "running"
    calls = [r.headers["Idempotency-Key"] for r in downstream.calls("POST", "/providers/trigger")]
    if point.startswith("step_called"):
        # The call returned but its checkpoint never came: called again, same key.
        assert steps[STEP] != "completed"
        assert (stored, published) == (0, 0)
        assert calls == [f"{record['_id']}:{STEP}"] * 2
    else:
        # Every step had its checkpoint: none is called again.
        assert set(steps.values()) == {"completed"}
        assert len(calls) == 1
        assert stored == 3
        assert published == (0 if point == "deltas_stored" else 3)
    assert report.deltas == 3
    assert await delta_events(nats_client) == 3
