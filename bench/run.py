"""`make bench`: the standard workload against blobflow and the floor, on a fresh stack.

Each run starts its own nats-server and MongoDB-wire server (SecantusDB slows
as data accumulates, so no run inherits another's data) beside one downstream
process, then measures one mode:

- saturation: N events published before the contender starts; the time until
  all 3N deltas are stored and all 3N delta events are on DELTAS;
- latency: 20 events/s offered for 20 s; publish to the event's last delta event.

Every run is checked (exactly 3 deltas and 3 delta events per event). Each
figure is the median of `--runs` runs. Latency runs for the floor and one
replica (20 events/s is one replica's job); saturation for every replica count.
Then the shapes (`bench/shapes.py`): one replica, saturation, steps 1/4/16
and deltas 1/3/10/100. The tables go to stdout and to bench/results/<date>.md.

The backlog defaults to 500 events, not 1,000: at blobflow's speed on
SecantusDB, 1,000 would take `make bench` past 10 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
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
from nats.js import JetStreamContext
from pymongo import AsyncMongoClient

from bench import shapes
from bench.contenders import ROOT, Blobflow, Contender, Floor
from bench.measure import DELTAS_PER_EVENT, cpu_s, peak_rss_mib, percentile, verify
from bench.shapes import Shape
from blobflow.core.subjects import StreamNames
from blobflow.devtools.embedded import embedded_servers
from blobflow.devtools.managed_process import free_port
from blobflow.messaging.streams import ensure_streams

DATABASE = "bench"
NAMES = StreamNames()
# How the cost grows: with steps (1, 4, 16) and with deltas (1, 3, 10, 100).
SHAPES = (Shape(1, 3), Shape(4, 3), Shape(16, 3), Shape(4, 1), Shape(4, 10), Shape(4, 100))


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


async def publish_backlog(js: JetStreamContext, events: int) -> None:
    for start in range(0, events, 500):
        chunk = range(start, min(events, start + 500))
        await asyncio.gather(*(js.publish(NAMES.created_subject, event(n)) for n in chunk))


class DeltaEvents:
    """The distinct delta ids seen on DELTAS; `all_arrived` once `expected` have.

    Deltas are stored before their events are published, by both contenders."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.ids: set[str] = set()
        self.all_arrived = asyncio.Event()

    async def seen(self, msg: Msg) -> None:
        data = orjson.loads(msg.data)
        self.ids.add(data.get("id") or data["_id"])  # blobflow's "id", the floor's "_id"
        if len(self.ids) == self.expected:
            self.all_arrived.set()


async def saturation(
    contender: Contender, stack: Stack, events: int, deltas_per_event: int = DELTAS_PER_EVENT
) -> Sample:
    await publish_backlog(stack.nc.jetstream(), events)
    arrivals = DeltaEvents(deltas_per_event * events)
    subscription = await stack.nc.subscribe(f"{NAMES.deltas_prefix}.>", cb=arrivals.seen)
    started = time.monotonic()
    await contender.start(stack.nats_url, stack.mongodb_url, DATABASE, stack.service_url)
    cpu_at_start = _cpu(contender)
    await asyncio.wait_for(arrivals.all_arrived.wait(), 1800)
    elapsed_s = time.monotonic() - started
    await subscription.unsubscribe()
    return await _finish(
        contender,
        stack,
        events,
        cpu_at_start,
        deltas_per_event=deltas_per_event,
        events_per_s=events / elapsed_s,
    )


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
    contender: Contender,
    stack: Stack,
    events: int,
    cpu_at_start: float,
    *,
    deltas_per_event: int = DELTAS_PER_EVENT,
    **figures: float,
) -> Sample:
    """CPU counts from the moment the contender took work: not its imports and start."""
    cpu = _cpu(contender) - cpu_at_start
    rss = max(peak_rss_mib(pid) for pid in contender.pids)
    commands = await contender.stop()
    outcome = await verify(stack.mongo[DATABASE], stack.nc.jetstream(), events, deltas_per_event)
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
    parser.add_argument("--events", type=int, default=500, help="saturation backlog")
    parser.add_argument("--runs", type=int, default=2, help="runs per figure (median)")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--replicas", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument(
        "--scale-events", type=int, default=100, help="backlog of each shape run (0: none)"
    )
    options = parser.parse_args(argv)
    rows: list[tuple[str, Sample, Sample]] = []
    scaled: list[tuple[Shape, Sample]] = []
    async with downstream_process() as service_url:
        for make, with_latency in _contenders(options.replicas):
            sat, lat = [], []
            for _ in range(options.runs):
                async with fresh_stack(service_url) as stack:
                    sat.append(await saturation(make(), stack, options.events))
                if with_latency:
                    async with fresh_stack(service_url) as stack:
                        lat.append(await latency(make(), stack, options.rate, options.seconds))
            name = make().name
            rows.append((name, _median(sat), _median(lat) if lat else Sample()))
            print(f"{name}: done", file=sys.stderr, flush=True)
        if options.scale_events:
            with tempfile.TemporaryDirectory(prefix="blobflow-shapes-") as folder:
                for shape in SHAPES:
                    definitions = shapes.definitions(shape, Path(folder) / str(len(scaled)))
                    async with fresh_stack(service_url) as stack:
                        sample = await saturation(
                            Blobflow(1, definitions), stack, options.scale_events, shape.deltas
                        )
                    scaled.append((shape, sample))
                    print(f"{shape.label}: done", file=sys.stderr, flush=True)
    table = render(rows, options) + render_shapes(scaled, options)
    print(table)
    results = ROOT / "bench" / "results" / f"{date.today().isoformat()}.md"
    results.write_text(table)
    return 0


def _contenders(replicas: list[int]) -> list[tuple[Callable[[], Contender], bool]]:
    """What to run, and whether in latency mode too: 20 events/s is one replica's job."""
    chosen: list[tuple[Callable[[], Contender], bool]] = [(Floor, True)]
    for count in replicas:
        chosen.append((functools.partial(Blobflow, count), count == 1))
    return chosen


@asynccontextmanager
async def downstream_process() -> AsyncIterator[str]:
    """The downstream stub in a process of its own; its URL."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.downstream", str(port), cwd=ROOT
    )
    try:
        await asyncio.sleep(1)  # it binds its port
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await process.wait()


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
            f"| {sat.round_trips:.1f} | {sat.peak_rss_mib:.0f} | {_ms(lat.p50_ms)} "
            f"| {_ms(lat.p95_ms)} | {_ms(lat.p99_ms)} |"
        )
    return "\n".join(lines) + "\n"


def render_shapes(scaled: list[tuple[Shape, Sample]], options: argparse.Namespace) -> str:
    if not scaled:
        return ""
    lines = [
        "",
        f"Shapes: blobflow, 1 replica, saturation with {options.scale_events} events, one run"
        " each.",
        "",
        "| steps | deltas | events/s | CPU ms/event | MongoDB round trips/event | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for shape, sample in scaled:
        lines.append(
            f"| {shape.steps} | {shape.deltas} | {sample.events_per_s:.1f} "
            f"| {sample.cpu_ms_per_event:.1f} | {sample.round_trips:.1f} "
            f"| {sample.peak_rss_mib:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _ms(value: float) -> str:
    """A latency in whole ms; a dash where the mode did not run."""
    return "-" if math.isnan(value) else f"{value:.0f}"


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
