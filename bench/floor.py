"""The floor: the standard workload done by hand, with no engine.

Pull a batch, make the four calls of each event with one session, store the
batch's deltas with one `insert_many`, publish three delta events per event,
ack. No leases, no checkpoints, no versions, no retries: what blobflow does
beyond this is what its durability costs.

`python -m bench.floor NATS_URL MONGODB_URL DATABASE SERVICE_URL` runs until
SIGTERM; it prints `ready` once subscribed and, on exit, the MongoDB commands
it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

import aiohttp
import nats
import orjson
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError
from pymongo import AsyncMongoClient, monitoring

from blobflow.core.subjects import delta_subject

BATCH = 32
CALLS = ("/blobs/validate", "/blobs/metadata", "/providers/trigger", "/deltas/generate")
PROVIDER_ID = "bench"
Json = dict[str, Any]


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def deltas_of(http: aiohttp.ClientSession, event: Json) -> list[Json]:
    """The four calls in sequence; the last answer's operations and blobs as deltas."""
    body: Json = {"blob_id": event["blob_id"]}
    answer: Json = {}
    for path in CALLS:
        async with http.post(path, data=orjson.dumps(body)) as response:
            answer = orjson.loads(await response.read())
        body = {"blob_id": event["blob_id"], "previous": answer}
    changes = [*answer["delta_operations"], *answer["created_blobs"]]
    return [
        {
            "_id": f"{event['event_id']}:{index}",
            "event_id": event["event_id"],
            "blob_id": event["blob_id"],
            "provider_id": PROVIDER_ID,
            "change": change,
        }
        for index, change in enumerate(changes)
    ]


async def run(nats_url: str, mongodb_url: str, database: str, service_url: str) -> int:
    commands = Commands()
    nc = await nats.connect(nats_url)
    mongo: AsyncMongoClient[Json] = AsyncMongoClient(mongodb_url, event_listeners=[commands])
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer("BLOBS", "floor")
    config = ConsumerConfig(durable_name="floor", ack_policy=AckPolicy.EXPLICIT)
    await js.add_consumer("BLOBS", config)
    subscription = await js.pull_subscribe("", durable="floor", stream="BLOBS")
    collection = mongo[database]["deltas"]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    async with aiohttp.ClientSession(base_url=service_url) as http:
        batch = 1
        while not stop.is_set():
            try:
                # A fetch of n waits for all n or its timeout: start small, double while full.
                messages = await subscription.fetch(batch, timeout=0.25)
            except (NatsTimeoutError, TimeoutError):
                batch = 1
                continue
            batch = min(BATCH, batch * 2) if len(messages) == batch else max(1, len(messages))
            events = [orjson.loads(message.data) for message in messages]
            batches = await asyncio.gather(*(deltas_of(http, event) for event in events))
            documents = [document for batch in batches for document in batch]
            await collection.insert_many(documents, ordered=False)
            await asyncio.gather(
                *(
                    js.publish(
                        delta_subject(PROVIDER_ID, document["blob_id"]),
                        orjson.dumps(document),
                        headers={"Nats-Msg-Id": document["_id"]},
                    )
                    for document in documents
                )
            )
            await asyncio.gather(*(message.ack() for message in messages))
    await nc.close()
    await mongo.close()
    print(f"mongodb_commands {commands.count}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(run(*sys.argv[1:5])))
