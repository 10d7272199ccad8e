"""`make bench`: the standard workload against blobflow and the floor, on a fresh stack.

Each run starts its own nats-server and MongoDB-wire server (SecantusDB slows
as data accumulates, so no run inherits another's data) beside one downstream
process, then measures one mode:

- saturation: N events published before the contender starts; the time until
  all 3N deltas are stored and all 3N delta events are on DELTAS;
- latency: 20 events/s offered for 20 s; publish to the event's last delta event.

Every run is checked (exactly 3 deltas and 3 delta events per event). Each
figure is the median of `--runs` runs; the table goes to stdout and to
bench/results/<date>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import operator
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from pymongo import AsyncMongoClient

from bench.contenders import ROOT, Blobflow, Contender, Floor
from bench.measure import DELTAS_PER_EVENT, cpu_s, peak_rss_mib, percentile, verify
from service.embedded import embedded_servers
from service.managed_process import free_port
from service.streams import StreamNames, ensure_streams

DATABASE = "bench"
NAMES = StreamNames()


@dataclass(frozen=True)
class Sample:
    events_per_s: float = float("nan")
    p50_ms: float = float("nan")
    p95_ms: float = float("nan")
    p99_ms: float = float("nan")
    cpu_ms_per_event: float = float("nan")
    round_trips: float = float("nan")
    peak_rss_mib: float = float("nan")


@dataclass
class Stack:
    nats_url: str
    mongodb_url: str
    service_url: str
    nc: NatsClient
    mongo: AsyncMongoClient[dict[str, Any]]


@asynccontextmanager
async def fresh_stack(service_url: str) -> AsyncIterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="blobflow-bench-") as folder:
        async with embedded_servers(Path(folder), durable=True) as (nats_server, mongo_server):
            nc = await nats.connect(nats_server.url)
            mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server.url)
            try:
                await ensure_streams(nc.jetstream(), NAMES)
                yield Stack(nats_server.url, mongo_server.url, service_url, nc, mongo)
            finally:
                await nc.close()
                await mongo.close()


def event(number: int) -> bytes:
    return orjson.dumps(
        {"event_id": f"evt-{number}", "blob_id": f"blob-{number % 50}", "user_id": "bench"}
    )


async def saturation(contender: Contender, stack: Stack, events: int) -> Sample:
    js = stack.nc.jetstream()
    for start in range(0, events, 500):
        chunk = range(start, min(events, start + 500))
        await asyncio.gather(*(js.publish(NAMES.created_subject, event(n)) for n in chunk))
    expected = DELTAS_PER_EVENT * events
    ids: set[str] = set()
    all_arrived = asyncio.Event()

    async def delta_event(msg: Msg) -> None:
        # Deltas are stored before their events are published, by both contenders.
        ids.add(orjson.loads(msg.data).get("id") or orjson.loads(msg.data)["_id"])
        if len(ids) == expected:
            all_arrived.set()

    subscription = await stack.nc.subscribe(f"{NAMES.deltas_prefix}.>", cb=delta_event)
    started = time.monotonic()
    await contender.start(stack.nats_url, stack.mongodb_url, DATABASE, stack.service_url)
    cpu_at_start = _cpu(contender)
    await asyncio.wait_for(all_arrived.wait(), 1800)
    elapsed_s = time.monotonic() - started
    await subscription.unsubscribe()
    return await _finish(contender, stack, events, cpu_at_start, events_per_s=events / elapsed_s)


async def latency(contender: Contender, stack: Stack, rate: float, duration_s: float) -> Sample:
    await contender.start(stack.nats_url, stack.mongodb_url, DATABASE, stack.service_url)
    cpu_at_start = _cpu(contender)
    js = stack.nc.jetstream()
    published: dict[str, float] = {}
    seen: dict[str, int] = {}
    done: dict[str, float] = {}
    events = int(rate * duration_s)
    finished = asyncio.Event()

    async def delta_event(msg: Msg) -> None:
        event_id = orjson.loads(msg.data)["event_id"]
        seen[event_id] = seen.get(event_id, 0) + 1
        if seen[event_id] == DELTAS_PER_EVENT:
            done[event_id] = time.monotonic()
            if len(done) == events:
                finished.set()

    subscription = await stack.nc.subscribe(f"{NAMES.deltas_prefix}.>", cb=delta_event)
    started = time.monotonic()
    for number in range(events):
        await asyncio.sleep(max(0.0, started + number / rate - time.monotonic()))
        published[f"evt-{number}"] = time.monotonic()
        await js.publish(NAMES.created_subject, event(number))
    await asyncio.wait_for(finished.wait(), 120)
    await subscription.unsubscribe()
    latencies_ms = [(done[key] - published[key]) * 1000 for key in published]
    return await _finish(
        contender,
        stack,
        events,
        cpu_at_start,
        p50_ms=percentile(latencies_ms, 0.5),
        p95_ms=percentile(latencies_ms, 0.95),
        p99_ms=percentile(latencies_ms, 0.99),
    )


def _cpu(contender: Contender) -> float:
    return sum(cpu_s(pid) for pid in contender.pids)


async def _finish(
    contender: Contender, stack: Stack, events: int, cpu_at_start: float, **figures: float
) -> Sample:
    """CPU counts from the moment the contender took work: not its imports and start."""
    cpu = _cpu(contender) - cpu_at_start
    rss = max(peak_rss_mib(pid) for pid in contender.pids)
    commands = await contender.stop()
    outcome = await verify(stack.mongo[DATABASE], stack.nc.jetstream(), events)
    if outcome.problems:
        raise AssertionError(f"{contender.name}: {'; '.join(outcome.problems)}")
    return Sample(
        **figures,
        cpu_ms_per_event=cpu * 1000 / events,
        round_trips=commands / events,
        peak_rss_mib=rss,
    )


def median(samples: list[Sample], pick: Callable[[Sample], float]) -> float:
    return statistics.median(pick(sample) for sample in samples)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__)
    parser.add_argument("--events", type=int, default=1000, help="saturation backlog")
    parser.add_argument("--runs", type=int, default=2, help="runs per figure (median)")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--replicas", type=int, nargs="*", default=[1, 2, 3])
    options = parser.parse_args(argv)
    port = free_port()
    downstream = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.downstream", str(port), cwd=ROOT
    )
    service_url = f"http://127.0.0.1:{port}"
    contenders: list[Callable[[], Contender]] = [Floor]
    contenders += [functools.partial(Blobflow, replicas) for replicas in options.replicas]
    rows: list[tuple[str, Sample, Sample]] = []
    try:
        await asyncio.sleep(1)  # the downstream process binds its port
        for make in contenders:
            sat, lat = [], []
            for _ in range(options.runs):
                async with fresh_stack(service_url) as stack:
                    sat.append(await saturation(make(), stack, options.events))
                async with fresh_stack(service_url) as stack:
                    lat.append(await latency(make(), stack, options.rate, options.seconds))
            name = make().name
            rows.append((name, _median(sat), _median(lat)))
            print(f"{name}: done", file=sys.stderr, flush=True)
    finally:
        downstream.terminate()
        await downstream.wait()
    table = render(rows, options)
    print(table)
    results = ROOT / "bench" / "results" / f"{date.today().isoformat()}.md"
    results.write_text(table)
    return 0


def _median(samples: list[Sample]) -> Sample:
    """Field by field: each figure is the median of its runs."""
    fields = Sample.__dataclass_fields__
    return Sample(**{name: median(samples, operator.attrgetter(name)) for name in fields})


def render(rows: list[tuple[str, Sample, Sample]], options: argparse.Namespace) -> str:
    floor = next(sat for name, sat, _ in rows if name == "floor")
    lines = [
        f"Saturation: {options.events} events published before the start. Latency: "
        f"{options.rate:g} events/s for {options.seconds:g} s. Median of {options.runs} runs.",
        "",
        "| contender | events/s | vs floor | CPU ms/event | vs floor | MongoDB round trips/event "
        "| peak RSS MiB | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, sat, lat in rows:
        lines.append(
            f"| {name} | {sat.events_per_s:.1f} | {sat.events_per_s / floor.events_per_s:.2f} "
            f"| {sat.cpu_ms_per_event:.1f} | {sat.cpu_ms_per_event / floor.cpu_ms_per_event:.2f} "
            f"| {sat.round_trips:.1f} | {sat.peak_rss_mib:.0f} | {lat.p50_ms:.0f} "
            f"| {lat.p95_ms:.0f} | {lat.p99_ms:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
