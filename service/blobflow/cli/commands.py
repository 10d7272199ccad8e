"""The commands that talk to a running blobflow over NATS, and `dev`.

Each returns an exit code; `cli` only parses arguments and calls them.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from blobflow.config import load_settings
from blobflow.devtools.dev import DevOptions, run_dev
from blobflow.errors import ConfigError, DefinitionError
from blobflow.messaging.client import BlobflowClient
from blobflow.messaging.connection import connect_nats

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def publish(
    kind: str,
    blob_id: str,
    user_id: str,
    metadata: Sequence[str],
    content: str | None,
    event_id: str | None,
    providers: Sequence[str],
) -> int:
    try:
        fields = dict(_pair(item) for item in metadata)
    except ValueError as exc:
        print(f"blobflow publish: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def go(client: BlobflowClient) -> int:
        published = await client.publish_event(
            "created" if kind == "created" else "updated",
            blob_id=blob_id,
            user_id=user_id,
            event_id=event_id,
            metadata=fields or None,
            content=content,
            provider_ids=list(providers) or None,
        )
        print(published)
        return EXIT_OK

    return _with_client(go)


def deltas(provider: str | None, blob: str | None, as_json: bool, from_start: bool) -> int:
    async def go(client: BlobflowClient) -> int:
        feed = client.deltas(provider_id=provider, blob_id=blob, deliver_new_only=not from_start)
        async with feed:
            async for delta in feed:
                if as_json:
                    print(orjson.dumps(delta).decode(), flush=True)
                else:
                    print(_readable(delta), flush=True)
        return EXIT_OK

    return _with_client(go, until_signal=True)


def register(folder: Path) -> int:
    async def go(client: BlobflowClient) -> int:
        try:
            reply = await client.register_folder(folder)
        except DefinitionError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return EXIT_INVALID
        if reply.get("ok"):
            for result in reply["results"]:
                state = "changed" if result["changed"] else "unchanged"
                print(f"{result['kind']} {result['id']} v{result['version']} {state}")
            return EXIT_OK
        for error in reply.get("errors", []):
            where = f"{error.get('kind')} {error.get('id')}: {error.get('path')}".rstrip(": ")
            print(f"{where}: {error.get('message')}", file=sys.stderr)
        return EXIT_INVALID

    return _with_client(go)


def dev(data_dir: Path, once: bool, nats_url: str | None, mongodb_url: str | None) -> int:
    options = DevOptions(data_dir, once, nats_url, mongodb_url)

    async def go() -> int:
        stop = _stop_on_signals()
        return await run_dev(options, stop, sys.stdout)

    try:
        return asyncio.run(go())
    except (ConfigError, DefinitionError) as exc:
        print(f"blobflow dev: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _with_client(work: Any, *, until_signal: bool = False) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"blobflow: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def go() -> int:
        nc = await connect_nats(settings)
        try:
            task = asyncio.ensure_future(work(BlobflowClient(nc)))
            if until_signal:
                stop = _stop_on_signals()
                waiter = asyncio.ensure_future(stop.wait())
                await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not task.done():
                    task.cancel()
                    return EXIT_OK
            code: int = await task
            return code
        finally:
            await nc.close()

    return asyncio.run(go())


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _readable(delta: dict[str, Any]) -> str:
    value = orjson.dumps(delta.get("new_value")).decode()
    return (
        f"{delta.get('timestamp')} {delta.get('provider_id')} {delta.get('blob_id')}"
        f" v{delta.get('version')} {delta.get('type')} {delta.get('path')} = {value}"
    )


def _pair(item: str) -> tuple[str, Any]:
    """`k=v` for --metadata; v is JSON when it parses (7, true, [1]), else text."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--metadata takes key=value, got {item!r}")
    try:
        return key, orjson.loads(value)
    except orjson.JSONDecodeError:
        return key, value
