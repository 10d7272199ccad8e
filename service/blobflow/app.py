"""The service: every part entered in one place, unwound in reverse.

Start: connect NATS and MongoDB, make sure streams, consumer and indexes
exist, register the definitions folder, then run intake, the dispatcher and
recovery side by side. Stop (SIGTERM, SIGINT, or NATS gone for good): stop
fetching, let running executions finish up to the drain timeout (the rest
keep their checkpoints and are resumed by whoever claims them), then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from pymongo import AsyncMongoClient

from blobflow.api.access import Access
from blobflow.api.app import api_app
from blobflow.api.context import ApiContext
from blobflow.api.ratelimit import RateLimiter
from blobflow.config import Settings
from blobflow.core.sources import KIND_FOLDERS, read_paths
from blobflow.core.subjects import CHANGED_SUBJECT, StreamNames
from blobflow.downstream.http_caller import ServiceClients
from blobflow.downstream.limits import LimitedCaller
from blobflow.errors import DefinitionError, NatsGone
from blobflow.messaging.cancel_requests import CancelResponder, NatsOwnerChannel
from blobflow.messaging.connection import connect_nats
from blobflow.messaging.consumer import Consumer
from blobflow.messaging.dead_letters import DeadLetterPublisher
from blobflow.messaging.publisher import DeltaPublisher
from blobflow.messaging.registration import RegistrationResponder, reloading_on_notice
from blobflow.messaging.streams import ensure_consumer, ensure_streams
from blobflow.metrics import MeteredCaller, Metrics
from blobflow.runtime.admission import Admission
from blobflow.runtime.cancellation import Canceller
from blobflow.runtime.catalogs import Catalogs
from blobflow.runtime.dispatcher import Dispatcher
from blobflow.runtime.engine import Engine
from blobflow.runtime.intake import Intake
from blobflow.runtime.submission import Submitter
from blobflow.store.definitions import DefinitionStore
from blobflow.store.executions import ExecutionStore
from blobflow.store.monitoring import MongoCommands
from blobflow.store.queries import Queries

logger = logging.getLogger(__name__)
T = TypeVar("T")
DRAIN_TIMEOUT_S = 20.0
CONSUMER_STOP_TIMEOUT_S = 5.0
MONGODB_TIMEOUT_MS = 10_000


@dataclass(slots=True)
class Service:
    """The running parts, for the HTTP API and for tests."""

    settings: Settings
    nc: NatsClient
    mongo: AsyncMongoClient[dict[str, Any]]
    definitions: DefinitionStore
    catalogs: Catalogs
    store: ExecutionStore
    engine: Engine
    dispatcher: Dispatcher
    admission: Admission
    consumer: Consumer
    canceller: Canceller
    metrics: Metrics
    http_port: int

    async def reload(self) -> None:
        """Use the latest registered definitions from now on (the last good if they fail)."""
        await self.catalogs.reload()

    async def announce(self) -> None:
        """Reload here, then tell the other replicas to reload too."""
        await self.reload()
        await self.nc.publish(CHANGED_SUBJECT, b"")


async def run(settings: Settings, stop: asyncio.Event, names: StreamNames | None = None) -> int:
    """Run until `stop` is set; the exit code: 0 after a clean stop, 1 when NATS is gone.

    A stop while the service is still starting (waiting for NATS or MongoDB to
    answer) cancels the start: what had started is closed, there is nothing to drain.
    """
    ready = asyncio.Event()
    serving = asyncio.ensure_future(_serve(settings, stop, ready, names))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((serving, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not serving.done() and not ready.is_set():
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        logger.info("stopped while starting")
        return 0
    lost = await serving
    if lost:
        logger.error("NATS connection closed for good; exiting")
        return 1
    return 0


async def _serve(
    settings: Settings, stop: asyncio.Event, ready: asyncio.Event, names: StreamNames | None
) -> bool:
    """Serve until `stop` is set; True when NATS closed for good instead."""
    gone = asyncio.Event()
    lost = False
    try:
        async with start(settings, gone, names) as service:
            ready.set()
            # The worker id names this process in execution leases and cancel subjects.
            logger.info(
                "blobflow ready: HTTP on port %d, worker %s",
                service.http_port,
                service.engine.worker_id,
            )
            waiters = [asyncio.ensure_future(e.wait()) for e in (stop, gone)]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            # Decided before unwinding: closing the client on the way out sets `gone` too.
            lost = gone.is_set()
    except* NatsGone:
        lost = True
    return lost


@asynccontextmanager
async def start(
    settings: Settings, gone: asyncio.Event, names: StreamNames | None = None
) -> AsyncIterator[Service]:
    names = names or StreamNames()
    async with AsyncExitStack() as stack:
        nc = await connect_nats(settings, gone)
        stack.push_async_callback(nc.close)
        metrics = Metrics()
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongodb_url,
            timeoutMS=MONGODB_TIMEOUT_MS,
            tz_aware=True,
            event_listeners=[MongoCommands(metrics)],
        )
        stack.push_async_callback(mongo.close)
        db = mongo[settings.mongodb_database]
        js = nc.jetstream()
        await ensure_streams(js, names)
        await ensure_consumer(
            js, names, ack_wait_s=settings.ack_wait_s, max_ack_pending=settings.max_concurrency * 8
        )
        definitions = DefinitionStore(db)
        await definitions.ensure_indexes()
        await _register_folder(settings, definitions)
        store = ExecutionStore(db, lease_ms=settings.lease_ms)
        await store.ensure_indexes()
        clients = await stack.enter_async_context(ServiceClients(settings.services))
        publisher = DeltaPublisher(js, prefix=names.deltas_prefix, metrics=metrics, nc=nc)
        catalogs = Catalogs(
            definitions, lambda catalog: setattr(engine, "catalog", catalog), metrics
        )
        engine = Engine(
            await catalogs.load(),
            store,
            MeteredCaller(LimitedCaller(clients, settings.service_limits), metrics),
            sink=publisher,
            versions=definitions,
            metrics=metrics,
        )
        dispatcher = Dispatcher(
            engine, concurrency=settings.max_concurrency, lease_ms=settings.lease_ms
        )
        admission = Admission(
            store,
            dispatcher,
            publisher,
            worker_id=engine.worker_id,
            capacity=settings.max_concurrency * 4,
            interval_s=settings.lease_ms / 2000,
            metrics=metrics,
        )
        intake = Intake(
            dead_letters=DeadLetterPublisher(js, names.dlq_subject),
            names=names,
            catalog=lambda: engine.catalog,
            admit=admission.admit,
            max_event_bytes=settings.max_event_bytes,
            metrics=metrics,
        )
        consumer = Consumer(
            js, names, intake.process, connection_closed=lambda: nc.is_closed, room=admission.room
        )
        metrics.watch_backlog(lambda: dispatcher.backlog)
        metrics.watch_disabled_bindings(lambda: len(engine.catalog.disabled_bindings))
        canceller = Canceller(
            NatsOwnerChannel(nc), store, engine, dispatcher, tokens=settings.api_tokens
        )
        service = Service(
            settings,
            nc,
            mongo,
            definitions,
            catalogs,
            store,
            engine,
            dispatcher,
            admission,
            consumer,
            canceller,
            metrics,
            http_port=0,
        )
        registrar = RegistrationResponder(
            nc, definitions, on_change=service.reload, tokens=settings.api_tokens
        )
        await stack.enter_async_context(_closing_quietly(registrar))
        reloader = await stack.enter_async_context(reloading_on_notice(nc, service.reload))
        await stack.enter_async_context(catalogs.following(reloader))
        service.http_port = await stack.enter_async_context(_http(service))
        async with _workers(service):
            yield service


@asynccontextmanager
async def _workers(service: Service) -> AsyncIterator[None]:
    dispatcher, consumer = service.dispatcher, service.consumer
    async with asyncio.TaskGroup() as group:
        dispatching = group.create_task(dispatcher.run())
        consuming = group.create_task(consumer.run())
        admitting = group.create_task(service.admission.run())
        answering = group.create_task(
            CancelResponder(
                service.nc, service.engine.worker_id, service.canceller.cancel_for
            ).run()
        )
        try:
            yield
        finally:
            # Stop fetching first: the batch in hand is settled, nothing new starts.
            dispatcher.close()
            consumer.stop()
            await asyncio.wait({consuming}, timeout=CONSUMER_STOP_TIMEOUT_S)
            consuming.cancel()
            admitting.cancel()
            answering.cancel()
            # Let a claim or an intake write in flight land first, so what they
            # leased is queued, and so handed back below.
            await asyncio.wait({consuming, admitting, answering}, timeout=CONSUMER_STOP_TIMEOUT_S)
            await service.admission.settle(CONSUMER_STOP_TIMEOUT_S)
            # Queued work goes back at once rather than when its lease runs out.
            await service.store.release(dispatcher.take_queued())
            if not await dispatcher.drain(DRAIN_TIMEOUT_S):
                logger.warning("stopping with executions still running; they will be resumed")
            dispatching.cancel()


@asynccontextmanager
async def _http(service: Service) -> AsyncIterator[int]:
    settings = service.settings

    async def nats_ready() -> bool:
        return bool(service.nc.is_connected)

    async def mongodb_ready() -> bool:
        await service.mongo.admin.command("ping")
        return True

    if not settings.api_tokens:
        logger.warning("BLOBFLOW_API_TOKENS is unset: the HTTP API is open to every caller")
    db = service.mongo[settings.mongodb_database]
    context = ApiContext(
        store=service.store,
        queries=Queries(db),
        definitions=service.definitions,
        catalog=lambda: service.engine.catalog,
        submitter=Submitter(service.dispatcher, service.admission.admit),
        canceller=service.canceller,
        metrics=service.metrics,
        announce=service.announce,
        definitions_problem=lambda: service.catalogs.problem,
    )
    access = Access(settings.api_tokens, RateLimiter(settings.rate_limit, settings.rate_burst))

    async def accepting_work() -> bool:
        return service.dispatcher.accepting

    probes = {"nats": nats_ready, "mongodb": mongodb_ready, "accepting_work": accepting_work}
    app = api_app(context, access, probes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, service.settings.http_host, service.settings.http_port)
    await site.start()
    try:
        yield _bound_port(runner, service.settings.http_port)
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _closing_quietly(context: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    value = await context.__aenter__()
    try:
        yield value
    finally:
        with contextlib.suppress(NatsError):
            await context.__aexit__(None, None, None)


async def _register_folder(settings: Settings, definitions: DefinitionStore) -> None:
    """Register the definitions folder at start; invalid definitions stop the start."""
    folder = settings.definitions
    # Only the kind folders: a definitions path of "." must not pick up
    # every YAML file of the working directory.
    documents, problems = read_paths(
        [folder / kind for kind in KIND_FOLDERS if (folder / kind).is_dir()]
    )
    if problems:
        raise DefinitionError(problems)
    if documents:
        results = await definitions.register(documents)
        changed = sum(1 for result in results if result.changed)
        logger.info(
            "registered %d definitions from %s (%d changed)",
            len(results),
            settings.definitions,
            changed,
        )


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested
