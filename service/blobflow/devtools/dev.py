"""`blobflow dev`: the whole service on this machine, with a demo event flowing through.

Starts nats-server and SecantusDB (data under `.blobflow/`) unless URLs are
given, the demo downstream services, and the service with the example
definitions; then publishes a demo chapter and prints its executions and
delta events as they happen. `--once` stops after the demo, with exit code 0
only if the demo produced its deltas.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blobflow import app
from blobflow.config import Settings, load_settings
from blobflow.core.records import TERMINAL
from blobflow.devtools.demo import serve_demo
from blobflow.devtools.embedded import embedded_servers
from blobflow.messaging.client import BlobflowClient

DEMO_TIMEOUT_S = 60.0
DEFAULT_HTTP_PORT = 8080


@dataclass(frozen=True, slots=True)
class DevOptions:
    data_dir: Path
    once: bool
    nats_url: str | None = None
    mongodb_url: str | None = None

    @property
    def embedded(self) -> bool:
        """Whether the embedded servers start: unless both URLs are given."""
        return self.nats_url is None or self.mongodb_url is None


async def run_dev(options: DevOptions, stop: asyncio.Event, out: Any) -> int:
    """Run until `stop` is set (with `once`, until the demo is done); the exit code.

    `stop` set while the service starts cancels the start, which can take minutes to
    fail on a server that does not answer; whatever had started stops again.
    """
    up = asyncio.Event()
    running = asyncio.ensure_future(_run(options, stop, up, out))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((running, stopping), return_when=asyncio.FIRST_COMPLETED)
        if not running.done() and not up.is_set():
            running.cancel()
            await asyncio.wait((running,))
            if running.cancelled():
                return 1 if options.once else 0
        return await running
    finally:
        stopping.cancel()
        running.cancel()  # when run_dev itself is cancelled


async def _run(options: DevOptions, stop: asyncio.Event, up: asyncio.Event, out: Any) -> int:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    async with AsyncExitStack() as stack:
        nats_url, mongodb_url = options.nats_url, options.mongodb_url
        if nats_url is None or mongodb_url is None:  # options.embedded, spelt out for mypy
            say(f"starting nats-server and SecantusDB under {options.data_dir}/ …")
            nats, mongo = await stack.enter_async_context(embedded_servers(options.data_dir))
            nats_url, mongodb_url = nats_url or nats.url, mongodb_url or mongo.url
        demo_url = await stack.enter_async_context(serve_demo())
        settings = _settings(os.environ, nats_url, mongodb_url, demo_url)
        gone = asyncio.Event()
        service = await stack.enter_async_context(app.start(settings, gone))
        up.set()
        say(f"NATS {nats_url} · MongoDB {mongodb_url} · demo services {demo_url}")
        say(f"blobflow is running: API on http://{settings.http_host}:{service.http_port}")
        ok = await _demo(service, say)
        if options.once:
            return 0 if ok else 1
        say("")
        say("In another terminal:")
        say(f"  export BLOBFLOW_NATS_URL={nats_url}")
        say("  .venv/bin/blobflow deltas")
        say("  .venv/bin/blobflow publish created --blob-id my-chapter --user-id me \\")
        say("      --metadata type=chapter --content 'Once upon a time'")
        say("Ctrl-C stops everything.")
        await _first(stop.wait(), gone.wait())
        return 1 if gone.is_set() else 0


async def _demo(service: app.Service, say: Any) -> bool:
    client = BlobflowClient(service.nc)
    event_id = f"demo-{uuid.uuid4().hex[:8]}"
    blob_id = "blob-chapter-7"
    if not service.engine.catalog.workflows:
        folder = service.settings.definitions.resolve()
        say(
            f"✗ no definitions in {folder}: "
            "run from the repository root, or set BLOBFLOW_DEFINITIONS"
        )
        return False
    async with client.deltas(blob_id=blob_id) as feed:
        await client.publish_event(
            "created",
            event_id=event_id,
            blob_id=blob_id,
            user_id="user-ada",
            metadata={"type": "chapter", "status": "draft", "chapter_number": 7},
            content="The rain had not stopped for three days.",
        )
        say(f"\n→ published demo event {event_id} (blob {blob_id}, a new chapter)")
        try:
            return await asyncio.wait_for(_follow(service, feed, event_id, say), DEMO_TIMEOUT_S)
        except TimeoutError:
            say(f"✗ the demo did not finish within {DEMO_TIMEOUT_S:.0f} s")
            return False


class _DeltaPrinter:
    """Prints delta events as they arrive and counts them."""

    def __init__(self, say: Any) -> None:
        self.say = say
        self.count = 0
        self._changed = asyncio.Condition()

    async def run(self, feed: AsyncIterator[dict[str, Any]]) -> None:
        async for delta in feed:
            value = str(delta.get("new_value"))
            value = value if len(value) <= 60 else value[:57] + "…"
            if delta.get("values_omitted"):
                value = "(too large for an event: read it with GET /v1/blobs/{id}/deltas)"
            self.say(
                f"  Δ v{delta['version']} {delta['provider_id']}/{delta['workflow_id']}: "
                f"{delta['type']} {delta['path']} = {value}"
            )
            async with self._changed:
                self.count += 1
                self._changed.notify_all()

    async def wait_for(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.count >= count)


async def _follow(
    service: app.Service, feed: AsyncIterator[dict[str, Any]], event_id: str, say: Any
) -> bool:
    printer = _DeltaPrinter(say)
    async with asyncio.TaskGroup() as group:
        printing = group.create_task(printer.run(feed))
        documents = await _until_finished(service, event_id, say)
        ids = [document["_id"] for document in documents]
        stored = await service.store.history.collection.count_documents(
            {"execution_id": {"$in": ids}}
        )
        await printer.wait_for(stored)
        printing.cancel()
    completed = all(document["status"] == "completed" for document in documents)
    ok = completed and stored > 0 and printer.count >= stored
    mark = "✓" if ok else "✗"
    say(f"{mark} {len(documents)} executions, {stored} deltas stored, {printer.count} delta events")
    return ok


async def _until_finished(service: app.Service, event_id: str, say: Any) -> list[dict[str, Any]]:
    """Show each execution's steps as they change, until all have ended."""
    shown: dict[str, str] = {}
    while True:
        cursor = service.store.executions.find({"event_id": event_id}, {"logs": False})
        documents = [document async for document in cursor]
        for document in documents:
            line = _progress(document)
            if shown.get(document["_id"]) != line:
                shown[document["_id"]] = line
                say(line)
        if documents and all(document["status"] in TERMINAL for document in documents):
            return documents
        await asyncio.sleep(0.2)  # a display refresh, not a correctness wait


def _progress(document: Mapping[str, Any]) -> str:
    steps = " ".join(
        f"{s['id']}:{s['status']}" for s in document.get("steps", []) if s.get("kind") == "step"
    )
    return f"  {document['workflow_id']} [{document['status']}] {steps}"


def _settings(
    environ: Mapping[str, str], nats_url: str, mongodb_url: str, demo_url: str
) -> Settings:
    values = {
        # The usual port unless something has it already: a dev run should not fail on it.
        "BLOBFLOW_HTTP_PORT": str(DEFAULT_HTTP_PORT) if _bindable(DEFAULT_HTTP_PORT) else "0",
        "BLOBFLOW_MONGODB_DATABASE": "blobflow_dev",
        "BLOBFLOW_LOG_FORMAT": "text",
        "BLOBFLOW_LOG_LEVEL": "warning",
        **environ,
        "BLOBFLOW_NATS_URL": nats_url,
        "BLOBFLOW_MONGODB_URL": mongodb_url,
        "BLOBFLOW_SERVICE_STUDIO_URL": demo_url,
        "BLOBFLOW_SERVICE_CORE_URL": demo_url,
    }
    return load_settings(values)


def _bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def _first(*waits: Any) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
